r"""``torch.optim.lr_scheduler`` as pure, jittable schedules of the update count.

Every torch scheduler becomes a factory named after its class (``StepLR`` → :func:`step_lr`)
returning a :class:`TorchSchedule`: call it with the 0-based update count and it returns the lr of
that update. Give it to an optimizer as ``lr``::

    schedule = fo.cosine_annealing_lr(0.1, T_max=90, steps_per_epoch=len(loader))
    tx = fo.sgd(lr=schedule, momentum=0.9)

Conventions:

* ``lr`` (the first argument) is the optimizer's base lr, which torch's schedulers read from the
  optimizer; ``CyclicLR`` / ``OneCycleLR`` take their own lr boundaries instead, as in torch.
* ``schedule(0)`` is the lr torch's optimizer uses for its first step after the scheduler is
  constructed; ``schedule(c)`` the lr after ``c`` calls of ``scheduler.step()``.
* ``steps_per_epoch=k`` steps the schedule once per epoch of ``k`` updates: update ``c`` uses
  torch's lr at epoch ``c // k`` (``scheduler.step()`` once per epoch).
* ``cycle_momentum``: torch's ``CyclicLR`` / ``OneCycleLR`` also rewrite the optimizer's momentum
  (Adam: ``beta1``). :func:`cyclic_momentum` / :func:`one_cycle_momentum` take the same
  arguments and return that schedule, for ``fo.sgd(momentum=...)`` or ``fo.adam(betas=(m, b2))``.
* ``ReduceLROnPlateau`` depends on a metric, so it is a transform, :func:`reduce_lr_on_plateau`,
  chained after the optimizer and fed the metric as ``update(..., value=metric)``.

Reading and setting hyperparameters between steps (torch's ``param_groups[i]["lr"]``): wrap the
optimizer in ``optax.inject_hyperparams``; the numeric hyperparameters then live in the state,
where a jitted step reads them as data, so changing them does not recompile
(:mod:`functional_optreg.hyperparams`)::

    tx = optax.inject_hyperparams(fo.adam)(lr=1e-3)
    state = tx.init(params)
    fo.get_hyperparams(state)                   # read: [g["lr"] for g in param_groups]
    state = fo.set_hyperparams(state, lr=1e-4)  # write, keeping dtype: no retrace

With a schedule as the injected ``lr``, ``state.hyperparams["lr"]`` is the lr of the most recent
update (at init, of the first) and the next update's lr is ``schedule(state.count)``
(``optax.tree.get`` finds "lr" twice there: in ``hyperparams`` and in ``hyperparams_states``).
"""

from functional_optreg.schedules._base import TorchSchedule as TorchSchedule
from functional_optreg.schedules._basic import constant_lr as constant_lr
from functional_optreg.schedules._basic import exponential_lr as exponential_lr
from functional_optreg.schedules._basic import linear_lr as linear_lr
from functional_optreg.schedules._basic import multi_step_lr as multi_step_lr
from functional_optreg.schedules._basic import polynomial_lr as polynomial_lr
from functional_optreg.schedules._basic import step_lr as step_lr
from functional_optreg.schedules._composite import chained_scheduler as chained_scheduler
from functional_optreg.schedules._composite import sequential_lr as sequential_lr
from functional_optreg.schedules._cosine import cosine_annealing_lr as cosine_annealing_lr
from functional_optreg.schedules._cosine import (
    cosine_annealing_warm_restarts as cosine_annealing_warm_restarts,
)
from functional_optreg.schedules._cyclic import cyclic_lr as cyclic_lr
from functional_optreg.schedules._cyclic import cyclic_momentum as cyclic_momentum
from functional_optreg.schedules._lambda import lambda_lr as lambda_lr
from functional_optreg.schedules._lambda import multiplicative_lr as multiplicative_lr
from functional_optreg.schedules._one_cycle import one_cycle_lr as one_cycle_lr
from functional_optreg.schedules._one_cycle import one_cycle_momentum as one_cycle_momentum
from functional_optreg.schedules._swa import swalr as swalr
from functional_optreg.schedules.plateau import ReduceLROnPlateauState as ReduceLROnPlateauState
from functional_optreg.schedules.plateau import reduce_lr_on_plateau as reduce_lr_on_plateau
