"""The optimizer records hold what torch does: state keys, step counts and whether the lr scales the step.

Each fact of :data:`functional_optreg.optimizers._records.RECORDS` that the bridge relies on is
checked against torch itself, in float64, on a loss whose gradient depends on the parameters:

* ``state`` / ``scratch_state``: the keys torch's state holds after two steps of the richest
  configuration (every optional buffer on) are exactly these; our state's fields are
  ``state`` plus ``own_state``;
* ``step``: how torch stores the count (``"tensor"``, ``"int"``, none);
* ``lr_scales_step``: after two steps, the same optimizer with its lr doubled takes a step
  exactly twice as long (to rounding) when the record says so, and a step that is not when it
  says not;
* ``presence`` / ``structural``: flags among our own fields for keys among torch's, and
  arguments our factory takes;

and each record has parity cases (:func:`parity.catalog.uncovered_optimizers`).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from functional_optreg.optimizers._records import RECORDS
from parity.catalog import all_cases, uncovered_optimizers

RICHEST = {
    "SGD": dict(momentum=0.9, weight_decay=0.1),
    "Adam": dict(amsgrad=True, weight_decay=0.1),
    "AdamW": dict(amsgrad=True),
    "RMSprop": dict(momentum=0.9, centered=True, weight_decay=0.1),
    "Adagrad": dict(lr_decay=0.1, weight_decay=0.1),
    "Adadelta": dict(weight_decay=0.1),
    "Adamax": dict(weight_decay=0.1),
    "NAdam": dict(weight_decay=0.1),
    "RAdam": dict(weight_decay=0.1),
    "ASGD": dict(weight_decay=0.1),
    "Rprop": dict(),
    "SparseAdam": dict(),
    "Adafactor": dict(lr=1.0),
    "Muon": dict(),
    "LBFGS": dict(max_iter=3),
}
"""Per class, a configuration that keeps every optional buffer; Adafactor's lr is above
``1/√t`` (its relative step caps it there, which is why the lr does not scale its step); L-BFGS
stops after two inner iterations (``max_eval = ⌊5·3/4⌋ = 3`` evaluations) so that the third step
has two, the second from a point that depends on the lr."""

SHAPES = {"Muon": [(4, 3), (3, 2)]}
"""Muon takes matrices only; the others get a matrix (Adafactor's factored rows and columns)
and a vector (its unfactored variance)."""


def _tensors(name):
    rng = np.random.default_rng(0)
    return [torch.tensor(rng.normal(size=shape), requires_grad=True) for shape in SHAPES.get(name, [(4, 3), (3,)])]


def _closure(optimizer, tensors, sparse):
    targets = [torch.full_like(t, 0.5) for t in tensors]

    def closure():
        optimizer.zero_grad()
        loss = sum(torch.sum((1.0 + t * t) * (t - target) ** 2) for t, target in zip(tensors, targets))
        loss.backward()
        if sparse:
            for t in tensors:
                t.grad = t.grad.to_sparse()
        return loss

    return closure


def _stepped(record, steps=2):
    tensors = _tensors(record.torch_name)
    optimizer = record.torch_class()(tensors, **RICHEST[record.torch_name])
    closure = _closure(optimizer, tensors, sparse=record.torch_name == "SparseAdam")
    for _ in range(steps):
        optimizer.step(closure)
    return optimizer, tensors


def _next_step(record, lr_factor):
    """The third step (all elements, flat) after two with the configured lr, with the lr times ``lr_factor``."""
    optimizer, tensors = _stepped(record)
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * lr_factor
    before = [t.detach().clone() for t in tensors]
    optimizer.step(_closure(optimizer, tensors, sparse=record.torch_name == "SparseAdam"))
    return np.concatenate([np.ravel((t.detach() - b).numpy()) for t, b in zip(tensors, before)]), tensors


def test_every_record_has_a_configuration():
    assert set(RICHEST) == set(RECORDS)


@pytest.mark.parametrize("record", RECORDS.values(), ids=lambda record: record.torch_name)
def test_state_keys_are_torchs(record):
    optimizer, tensors = _stepped(record)
    keys = set().union(*(optimizer.state[t].keys() for t in tensors))
    assert keys == set(record.state) | set(record.scratch_state)
    steps = [optimizer.state[t].get("step") for t in tensors if optimizer.state[t]]
    kind = {type(None): "none", int: "int", torch.Tensor: "tensor"}[type(steps[0])]
    assert kind == record.step


@pytest.mark.parametrize("record", RECORDS.values(), ids=lambda record: record.torch_name)
def test_our_state_fields_are_the_records(record):
    kwargs = {key: value for key, value in RICHEST[record.torch_name].items()}
    with jax.enable_x64(True):
        params = [jnp.asarray(t.detach().numpy()) for t in _tensors(record.torch_name)]
        state = record.load_factory()(**kwargs).init(params)
    assert set(state._fields) == record.state_fields
    assert set(record.state).isdisjoint(record.own_state)


@pytest.mark.parametrize("record", RECORDS.values(), ids=lambda record: record.torch_name)
def test_lr_scales_the_step_as_recorded(record):
    """Doubling the lr doubles every element of the step, or not, as the record says.

    Doubling a float is exact, so a rule proportional to the lr scales its products exactly;
    what does not scale are the roundings where the lr meets other terms additively: the new
    value ``θ + Δ`` (``≤ 2⁻⁵³·|θ|``) and factors such as AdamW's ``θ·(1 − lr·λ)`` (the same
    size), a few per side. With ``|θ| ≤ 3`` here, ``1e-14 ≈ 11·2⁻⁵³·3`` allows about ten such
    roundings, and the rules that do not scale miss it by orders of magnitude (ASGD's ``eta``
    by ``~λ·lr·t``, Rprop's and Adafactor's by a factor of two).
    """
    single, tensors = _next_step(record, 1.0)
    double, _ = _next_step(record, 2.0)
    assert np.max(np.abs(single)) > 1e-6
    assert max(float(t.detach().abs().max()) for t in tensors) <= 3.0
    proportional = np.max(np.abs(double - 2.0 * single)) <= 1e-14
    assert proportional == record.lr_scales_step


def test_every_optimizer_has_parity_cases():
    cases = all_cases()
    assert uncovered_optimizers(cases) == []
    without_adam = [case for case in cases if case.family != "adam"]
    assert uncovered_optimizers(without_adam) == ["adam"]


@pytest.mark.parametrize("record", RECORDS.values(), ids=lambda record: record.torch_name)
def test_presence_flags_and_structural_hyperparameters_are_our_factorys(record):
    """``presence`` pairs one of our own boolean fields with one of torch's keys; ``structural``
    names arguments of the factory (the bridge keeps them static)."""
    accepted = inspect.signature(record.load_factory()).parameters
    assert set(record.structural) <= set(accepted)
    for flag, key in record.presence:
        assert flag in record.own_state and key in record.state
        # A JAX-scalar momentum (inject_hyperparams, fo.from_torch) keeps the flag, false at init.
        state = record.load_factory()(momentum=jnp.asarray(0.9)).init([jnp.zeros(3)])
        assert getattr(state, flag).dtype == jnp.bool_ and not bool(getattr(state, flag))
