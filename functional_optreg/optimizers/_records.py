"""One record per torch.optim optimizer: every fact about it that more than one place needs.

The torch bridge (:mod:`functional_optreg.torch_bridge`), the signature and implementation-flag
tests and the parity catalog read these records rather than keeping their own tables, so adding
an optimizer means writing its module under :mod:`functional_optreg.optimizers` and one
:class:`OptimizerRecord` in :data:`RECORDS`.

Torch is named by class name only and resolved when :meth:`OptimizerRecord.torch_class` is
called: importing this module does not import torch.

Example:
  >>> RECORDS["AdamW"].factory_name, RECORDS["AdamW"].fixed["decoupled_weight_decay"]
  ('adamw', True)
  >>> RECORDS["Rprop"].lr_scales_step  # lr only sets Rprop's initial step sizes
  False
  >>> [r.torch_name for r in RECORDS.values() if r.closure]
  ['LBFGS']
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")
"""Torch's arguments that choose a kernel, not the update rule."""


@dataclasses.dataclass(frozen=True)
class OptimizerRecord:
    """One torch.optim class and our counterpart.

    Attributes:
      torch_name: the class name in ``torch.optim``.
      module: our module under ``functional_optreg.optimizers``.
      factory_name: our factory's name in that module (and in ``functional_optreg``).
      flags: the :data:`IMPLEMENTATION_FLAGS` torch's constructor takes; our factory takes the
        same and ignores them (one XLA kernel), rejecting the combinations torch rejects.
      state: torch's per-parameter state keys, in any configuration; our state has a field of
        the same name for each (``None`` where the configuration keeps none).
      own_state: our state's fields that torch has no key for (``step`` where torch keeps no
        count, SGD's ``momentum_buffer_set``, L-BFGS's ring-buffer indices).
      scratch_state: torch's state keys we do not keep (L-BFGS's ``al``, rewritten before read).
      lr_scales_step: given the state, the update is proportional to the lr, so scaling the lr
        (ReduceLROnPlateau) scales the step; false where the lr only seeds a state (Rprop's step
        sizes, ASGD's ``eta``), is relative (Adafactor) or feeds a line search (L-BFGS).
      closure: ``step`` takes a closure that re-evaluates the loss (L-BFGS): ours is a solver
        with ``step(params, state, value_and_grad)``, not a gradient transformation.
      step: how torch stores the update count: ``"tensor"`` (a float tensor ``step``), ``"int"``
        (a Python int) or ``"none"`` (torch keeps no count; ours is derived).
      fixed: constructor arguments implied by the class that our factory does not take, with
        their value (AdamW's ``decoupled_weight_decay=True`` in its param groups).
      eager_state: torch creates the per-parameter state in the constructor (Adagrad).
      permutations: which axis permutations between torch and JAX layouts keep the update
        equivalent: ``"any"`` (elementwise rules), ``"leading"`` (Adafactor factors the last two
        axes) or ``"none"`` (Muon's update depends on the matrix orientation).
      presence: ``(flag, key)`` pairs: our boolean ``flag`` field says whether torch holds the
        per-parameter ``key`` yet (SGD and RMSprop with a settable momentum keep a zero buffer
        until torch would create one); the bridge reads and writes ``key`` only where the flag is
        set.
      structural: numeric hyperparameters that fix the update's structure (Muon's ``ns_steps``,
        a loop count), so a converted optimizer keeps them static: ``fo.set_hyperparams`` cannot
        change them.
      constructor_only: hyperparameters torch takes from the constructor's arguments even where a
        param group sets its own (Adagrad's ``initial_accumulator_value``: its ``__init__`` fills
        every parameter's ``sum`` from the argument, and ``step`` never reads it), so
        :func:`functional_optreg.param_groups` ignores a group's value there as torch does.
    """

    torch_name: str
    module: str
    factory_name: str
    flags: tuple[str, ...]
    state: tuple[str, ...]
    own_state: tuple[str, ...] = ()
    scratch_state: tuple[str, ...] = ()
    lr_scales_step: bool = True
    closure: bool = False
    step: str = "tensor"
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    eager_state: bool = False
    permutations: str = "any"
    presence: tuple[tuple[str, str], ...] = ()
    structural: tuple[str, ...] = ()
    constructor_only: tuple[str, ...] = ()

    @property
    def state_fields(self) -> frozenset[str]:
        """The field names of our state."""
        return frozenset(self.state) | frozenset(self.own_state)

    def load_factory(self) -> Callable[..., Any]:
        """Our factory, imported now; a clear error if its module is not part of this install."""
        name = f"functional_optreg.optimizers.{self.module}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            raise NotImplementedError(
                f"torch.optim.{self.torch_name} cannot be converted yet: {name} "
                f"(functional_optreg.{self.factory_name}) does not exist in this version."
            ) from error
        return getattr(module, self.factory_name)

    def torch_class(self) -> type:
        """``torch.optim.<torch_name>`` (imports torch)."""
        import torch

        return getattr(torch.optim, self.torch_name)


_NO_FUSED = ("foreach", "capturable", "differentiable")

RECORDS: Mapping[str, OptimizerRecord] = {
    record.torch_name: record
    for record in (
        OptimizerRecord(
            "SGD",
            "sgd",
            "sgd",
            ("foreach", "fused", "differentiable"),
            state=("momentum_buffer",),
            own_state=("step", "momentum_buffer_set"),
            step="none",
            presence=(("momentum_buffer_set", "momentum_buffer"),),
        ),
        OptimizerRecord(
            "Adam", "adam", "adam", IMPLEMENTATION_FLAGS, state=("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        ),
        OptimizerRecord(
            "AdamW",
            "adam",
            "adamw",
            IMPLEMENTATION_FLAGS,
            state=("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
            fixed={"decoupled_weight_decay": True},
        ),
        OptimizerRecord(
            "RMSprop",
            "rmsprop",
            "rmsprop",
            _NO_FUSED,
            state=("step", "square_avg", "momentum_buffer", "grad_avg"),
            own_state=("momentum_buffer_set",),
            presence=(("momentum_buffer_set", "momentum_buffer"),),
        ),
        OptimizerRecord(
            "Adagrad",
            "adagrad",
            "adagrad",
            ("foreach", "fused", "differentiable"),
            state=("step", "sum"),
            eager_state=True,
            constructor_only=("initial_accumulator_value",),
        ),
        OptimizerRecord("Adadelta", "adadelta", "adadelta", _NO_FUSED, state=("step", "square_avg", "acc_delta")),
        OptimizerRecord("Adamax", "adamax", "adamax", _NO_FUSED, state=("step", "exp_avg", "exp_inf")),
        OptimizerRecord("NAdam", "nadam", "nadam", _NO_FUSED, state=("step", "mu_product", "exp_avg", "exp_avg_sq")),
        OptimizerRecord("RAdam", "radam", "radam", _NO_FUSED, state=("step", "exp_avg", "exp_avg_sq")),
        OptimizerRecord("ASGD", "asgd", "asgd", _NO_FUSED, state=("step", "eta", "mu", "ax"), lr_scales_step=False),
        OptimizerRecord(
            "Rprop", "rprop", "rprop", _NO_FUSED, state=("step", "prev", "step_size"), lr_scales_step=False
        ),
        OptimizerRecord(
            "SparseAdam", "sparse_adam", "sparse_adam", (), state=("step", "exp_avg", "exp_avg_sq"), step="int"
        ),
        OptimizerRecord(
            "Adafactor",
            "adafactor",
            "adafactor",
            ("foreach",),
            state=("step", "row_var", "col_var", "variance"),
            lr_scales_step=False,
            permutations="leading",
        ),
        OptimizerRecord(
            "Muon",
            "muon",
            "muon",
            (),
            state=("momentum_buffer",),
            own_state=("step",),
            step="none",
            permutations="none",
            structural=("ns_steps",),
        ),
        OptimizerRecord(
            "LBFGS",
            "lbfgs",
            "lbfgs",
            (),
            state=(
                "func_evals",
                "n_iter",
                "d",
                "t",
                "old_dirs",
                "old_stps",
                "ro",
                "H_diag",
                "prev_flat_grad",
                "prev_loss",
            ),
            own_state=("step", "num_old", "old_start"),
            scratch_state=("al",),
            lr_scales_step=False,
            closure=True,
            step="none",
        ),
    )
}
"""Every torch.optim optimizer class, by class name."""


def record_of_factory(factory: Callable[..., Any]) -> OptimizerRecord | None:
    """The record whose factory ``factory`` is, or wraps (``optax.inject_hyperparams(fo.adagrad)``
    wraps ``fo.adagrad``); ``None`` for any other callable."""
    target = inspect.unwrap(factory)
    name = getattr(target, "__name__", None)
    for record in RECORDS.values():
        if record.factory_name == name and inspect.unwrap(record.load_factory()) is target:
            return record
    return None
