"""The torch bridge: torch optimizers, schedulers and module weights to functional_optreg and back.

``import functional_optreg.torch_bridge`` does not import torch; each function imports it when
called.

* :func:`from_torch` — a live ``torch.optim`` optimizer (and lr scheduler) → ``(transform,
  state)`` continuing exactly where torch is (``(solver, state)`` for ``LBFGS``), with the
  scheduler stepped per update or per epoch (``steps_per_epoch=``, inferred where torch's update
  count tells) and each group's numeric hyperparameters in the state
  (``fo.set_hyperparams(state, group=g, lr=x)``).
* :func:`to_torch_state_dict` — our state → a dict torch's ``optimizer.load_state_dict``
  accepts; :func:`to_torch_scheduler_state_dict` likewise for the scheduler.
* :func:`load_torch_checkpoint` — read a saved checkpoint with ``torch.load(weights_only=True)``.
* :func:`module_to_flax` / :func:`flax_to_module_state_dict` — ``nn.Module`` weights ↔ flax
  (linen) variables for Linear, Conv1d/2d/3d, BatchNorm, LayerNorm and Embedding;
  :func:`module_to_flax` also returns the parameter mapping that lets :func:`from_torch` move
  the optimizer's moments into flax's layout (:class:`ParamPath`).

The transform returned by :func:`from_torch` is a :class:`TorchTransformation`, an ordinary
``optax.GradientTransformationExtraArgs`` whose ``spec`` (:class:`TorchOptimizerSpec`) says how
to write its state back. Several param groups become ``optax.multi_transform`` with labels
``0, 1, ...`` (the state layout of ``fo.param_groups``).
"""

from functional_optreg.torch_bridge._checkpoint import load_torch_checkpoint as load_torch_checkpoint
from functional_optreg.torch_bridge._convert import from_torch as from_torch
from functional_optreg.torch_bridge._convert import (
    to_torch_scheduler_state_dict as to_torch_scheduler_state_dict,
)
from functional_optreg.torch_bridge._convert import to_torch_state_dict as to_torch_state_dict
from functional_optreg.torch_bridge._layout import ParamPath as ParamPath
from functional_optreg.torch_bridge._modules import flax_to_module_state_dict as flax_to_module_state_dict
from functional_optreg.torch_bridge._modules import module_to_flax as module_to_flax
from functional_optreg.torch_bridge._spec import GroupSpec as GroupSpec
from functional_optreg.torch_bridge._spec import TorchOptimizerSpec as TorchOptimizerSpec
from functional_optreg.torch_bridge._spec import TorchSolver as TorchSolver
from functional_optreg.torch_bridge._spec import TorchTransformation as TorchTransformation
