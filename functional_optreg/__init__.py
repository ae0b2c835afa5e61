"""functional-optreg: torch.optim semantics as pure, jittable optax gradient transformations.

Usage: ``import functional_optreg as fo``; every optimizer, penalty, schedule and clipper is a
function returning an ``optax.GradientTransformation``. ``import functional_optreg`` needs only
jax, optax and numpy; torch is imported lazily by :mod:`functional_optreg.verify` and the bridge.
"""

from functional_optreg.optimizers import AdamState as AdamState
from functional_optreg.optimizers import EmaMomentumState as EmaMomentumState
from functional_optreg.optimizers import SGDState as SGDState
from functional_optreg.optimizers import adam as adam
from functional_optreg.optimizers import adamw as adamw
from functional_optreg.optimizers import ema_momentum as ema_momentum
from functional_optreg.optimizers import sgd as sgd
from functional_optreg.penalties import elastic_net_penalty as elastic_net_penalty
from functional_optreg.penalties import l1_penalty as l1_penalty
from functional_optreg.penalties import l1_regularizer as l1_regularizer
from functional_optreg.penalties import l2_penalty as l2_penalty
from functional_optreg.penalties import l2_regularizer as l2_regularizer

__version__ = "0.1.0"
