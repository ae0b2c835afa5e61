"""functional-optreg: torch.optim semantics as pure, jittable optax gradient transformations.

Usage: ``import functional_optreg as fo``; every optimizer, penalty, schedule and clipper is a
function returning an ``optax.GradientTransformation``. ``import functional_optreg`` needs only
jax, optax and numpy; torch is imported lazily by :mod:`functional_optreg.verify` and the bridge.
"""

from functional_optreg.averaging import AveragedModelState as AveragedModelState
from functional_optreg.averaging import Averager as Averager
from functional_optreg.averaging import averaged_model as averaged_model
from functional_optreg.averaging import ema as ema
from functional_optreg.averaging import swa as swa
from functional_optreg.averaging import swalr as swalr
from functional_optreg.averaging import update_bn as update_bn
from functional_optreg.checkpoint import load_state as load_state
from functional_optreg.checkpoint import save_state as save_state
from functional_optreg.clipping import ClipGradNormState as ClipGradNormState
from functional_optreg.clipping import clip_grad_norm as clip_grad_norm
from functional_optreg.clipping import clip_grad_value as clip_grad_value
from functional_optreg.groups import is_bias_or_norm as is_bias_or_norm
from functional_optreg.groups import no_decay_on_bias_and_norm as no_decay_on_bias_and_norm
from functional_optreg.groups import param_groups as param_groups
from functional_optreg.hypergrad import unroll as unroll
from functional_optreg.hypergrad import unrolled_loss as unrolled_loss
from functional_optreg.mixed_precision import MixedPrecisionState as MixedPrecisionState
from functional_optreg.mixed_precision import mixed_precision as mixed_precision
from functional_optreg.nonfinite import nonfinite_policy as nonfinite_policy
from functional_optreg.optimizers import AdadeltaState as AdadeltaState
from functional_optreg.optimizers import AdafactorState as AdafactorState
from functional_optreg.optimizers import AdagradState as AdagradState
from functional_optreg.optimizers import AdamaxState as AdamaxState
from functional_optreg.optimizers import AdamState as AdamState
from functional_optreg.optimizers import ASGDState as ASGDState
from functional_optreg.optimizers import EmaMomentumState as EmaMomentumState
from functional_optreg.optimizers import LBFGSSolver as LBFGSSolver
from functional_optreg.optimizers import LBFGSState as LBFGSState
from functional_optreg.optimizers import MuonState as MuonState
from functional_optreg.optimizers import NAdamState as NAdamState
from functional_optreg.optimizers import RAdamState as RAdamState
from functional_optreg.optimizers import RMSpropState as RMSpropState
from functional_optreg.optimizers import RpropState as RpropState
from functional_optreg.optimizers import SGDState as SGDState
from functional_optreg.optimizers import SparseAdamState as SparseAdamState
from functional_optreg.optimizers import adadelta as adadelta
from functional_optreg.optimizers import adafactor as adafactor
from functional_optreg.optimizers import adagrad as adagrad
from functional_optreg.optimizers import adam as adam
from functional_optreg.optimizers import adamax as adamax
from functional_optreg.optimizers import adamw as adamw
from functional_optreg.optimizers import asgd as asgd
from functional_optreg.optimizers import asgd_averaged_params as asgd_averaged_params
from functional_optreg.optimizers import ema_momentum as ema_momentum
from functional_optreg.optimizers import lbfgs as lbfgs
from functional_optreg.optimizers import muon as muon
from functional_optreg.optimizers import nadam as nadam
from functional_optreg.optimizers import radam as radam
from functional_optreg.optimizers import rmsprop as rmsprop
from functional_optreg.optimizers import rprop as rprop
from functional_optreg.optimizers import sgd as sgd
from functional_optreg.optimizers import sparse_adam as sparse_adam
from functional_optreg.penalties import elastic_net_penalty as elastic_net_penalty
from functional_optreg.penalties import l1_penalty as l1_penalty
from functional_optreg.penalties import l1_regularizer as l1_regularizer
from functional_optreg.penalties import l2_penalty as l2_penalty
from functional_optreg.penalties import l2_regularizer as l2_regularizer
from functional_optreg.schedules import ReduceLROnPlateauState as ReduceLROnPlateauState
from functional_optreg.schedules import TorchSchedule as TorchSchedule
from functional_optreg.schedules import chained_scheduler as chained_scheduler
from functional_optreg.schedules import constant_lr as constant_lr
from functional_optreg.schedules import cosine_annealing_lr as cosine_annealing_lr
from functional_optreg.schedules import cosine_annealing_warm_restarts as cosine_annealing_warm_restarts
from functional_optreg.schedules import cyclic_lr as cyclic_lr
from functional_optreg.schedules import cyclic_momentum as cyclic_momentum
from functional_optreg.schedules import exponential_lr as exponential_lr
from functional_optreg.schedules import lambda_lr as lambda_lr
from functional_optreg.schedules import linear_lr as linear_lr
from functional_optreg.schedules import multi_step_lr as multi_step_lr
from functional_optreg.schedules import multiplicative_lr as multiplicative_lr
from functional_optreg.schedules import one_cycle_lr as one_cycle_lr
from functional_optreg.schedules import one_cycle_momentum as one_cycle_momentum
from functional_optreg.schedules import polynomial_lr as polynomial_lr
from functional_optreg.schedules import reduce_lr_on_plateau as reduce_lr_on_plateau
from functional_optreg.schedules import sequential_lr as sequential_lr
from functional_optreg.schedules import set_hyperparams as set_hyperparams
from functional_optreg.schedules import step_lr as step_lr
from functional_optreg.sharding import shard_optimizer_state as shard_optimizer_state
from functional_optreg.sharding import state_shardings as state_shardings
from functional_optreg.sharding import zero_partition_spec as zero_partition_spec
from functional_optreg.torch_bridge import ParamPath as ParamPath
from functional_optreg.torch_bridge import flax_to_module_state_dict as flax_to_module_state_dict
from functional_optreg.torch_bridge import from_torch as from_torch
from functional_optreg.torch_bridge import load_torch_checkpoint as load_torch_checkpoint
from functional_optreg.torch_bridge import module_to_flax as module_to_flax
from functional_optreg.torch_bridge import to_torch_scheduler_state_dict as to_torch_scheduler_state_dict
from functional_optreg.torch_bridge import to_torch_state_dict as to_torch_state_dict

__version__ = "0.1.0"
