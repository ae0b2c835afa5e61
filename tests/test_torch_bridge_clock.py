"""from_torch follows the loop: per-update and per-epoch schedulers, the true update count.

Each test runs a torch loop, converts it with ``fo.from_torch`` and runs the JAX continuation
next to the uninterrupted torch run (float64, gradients that depend on the parameters), so a
scheduler stepped at the wrong rate shows up as a diverging trajectory. The hand-back
(``to_torch_state_dict`` / ``to_torch_scheduler_state_dict``) is compared with torch's own state
dicts, mid-epoch included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import relative_error
from torch.optim import lr_scheduler as L

import functional_optreg as fo

RTOL = 1e-12
"""The float64 parity bound of docs/parity.md: each step within 1e-12 relative."""


def _grad(p):
    """A gradient that depends on the parameters (torch tensor or JAX array alike)."""
    return 0.1 * p**3 + 0.5 * p - 0.2


def _torch_loop(optimizer, scheduler, updates, steps_per_epoch, start=0):
    """``updates`` optimizer steps from update ``start``; the scheduler steps every
    ``steps_per_epoch`` updates (at the end of each epoch)."""
    for count in range(start, start + updates):
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = _grad(p.detach()).clone()
        optimizer.step()
        if scheduler is not None and (count + 1) % steps_per_epoch == 0:
            scheduler.step()


def _side_by_side(optimizer, scheduler, tx, state, updates, steps_per_epoch, start, float32=False):
    """The JAX continuation next to torch; per-step relative errors of all parameters (in
    float32, each step is also checked with ``torch.testing.assert_close``'s defaults)."""
    tensors = [p for group in optimizer.param_groups for p in group["params"]]
    params = [jnp.asarray(p.detach().numpy()) for p in tensors]

    @jax.jit
    def step(params, state):
        updates_, state = tx.update([_grad(p) for p in params], state, params)
        return optax.apply_updates(params, updates_), state

    errors = []
    for count in range(start, start + updates):
        params, state = step(params, state)
        _torch_loop(optimizer, scheduler, 1, steps_per_epoch, start=count)
        errors.append(max(relative_error(ours, p.detach().numpy()) for ours, p in zip(params, tensors)))
        if float32:
            for ours, p in zip(params, tensors):
                torch.testing.assert_close(torch.tensor(np.asarray(ours)), p.detach())
    return errors, state


def _tensors(*shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=generator, dtype=torch.float64)) for shape in shapes]


def test_issue_reproducer_per_epoch_step_lr_on_sgd():
    """SGD(lr 0.1) + StepLR(1, 0.5): 4 updates, scheduler.step(), from_torch, 4 more updates."""
    (w,) = [torch.nn.Parameter(torch.ones(2))]
    optimizer = torch.optim.SGD([w], lr=0.1)
    scheduler = L.StepLR(optimizer, 1, 0.5)
    _torch_loop(optimizer, scheduler, 4, steps_per_epoch=4)
    with pytest.raises(ValueError, match=r"SGD keeps no update count.*steps_per_epoch=1.*update_count="):
        fo.from_torch(optimizer, scheduler)
    tx, state = fo.from_torch(optimizer, scheduler, steps_per_epoch=4)
    assert int(state.inner_state.step) == 4
    _side_by_side(optimizer, scheduler, tx, state, 4, 4, start=4, float32=True)
    # The lr stays torch's 0.05 (the assumption "one scheduler step per update" gave 0.025, ...).
    assert float(tx.spec.scheduler.lr[0](1)) == np.float32(0.05)  # fl32(0.1)·0.5 = fl32(0.05)


def _per_epoch_case(make, epochs_before, epochs_after, steps_per_epoch, *, mid=0, explicit=False):
    """Run ``epochs_before`` epochs (+ ``mid`` updates) in torch, convert (telling from_torch the
    rate only if ``explicit``), continue in JAX next to torch, hand back."""
    with jax.enable_x64(True):
        optimizer, scheduler = make(_tensors((3, 2), (2,)))
        before = epochs_before * steps_per_epoch + mid
        _torch_loop(optimizer, scheduler, before, steps_per_epoch)
        tx, state = fo.from_torch(optimizer, scheduler, steps_per_epoch=steps_per_epoch if explicit else None)
        assert tx.spec.scheduler.steps_per_epoch == steps_per_epoch
        assert int(_step_of(state)) == before
        errors, state = _side_by_side(
            optimizer, scheduler, tx, state, epochs_after * steps_per_epoch, steps_per_epoch, before
        )
        assert max(errors) <= RTOL, errors
        _compare_state_dicts(fo.to_torch_state_dict(tx, state), optimizer.state_dict())
        _compare_state_dicts(fo.to_torch_scheduler_state_dict(tx, state), scheduler.state_dict())
        return errors


def _step_of(state):
    return optax.tree.get(state, "step")


def _compare_state_dicts(ours, theirs, where="state"):
    if isinstance(theirs, torch.Tensor):
        # Per tensor against its largest value (the contract's measure): a momentum or average
        # element crossing 0 is a difference of O(leaf) terms, not measured against itself.
        error = relative_error(ours, theirs.numpy())
        assert error <= RTOL, f"{where}: {error:.2e}"
    elif isinstance(theirs, dict):
        assert set(ours) == set(theirs), f"{where}: {sorted(map(str, ours))} != {sorted(map(str, theirs))}"
        for key in theirs:
            _compare_state_dicts(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs)):
            _compare_state_dicts(a, b, f"{where}[{index}]")
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=RTOL, abs=0), where
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def _mnist(tensors):
    """pytorch/examples mnist: Adadelta(lr=1.0) + StepLR(step_size=1, gamma=0.7) per epoch."""
    optimizer = torch.optim.Adadelta(tensors, lr=1.0)
    return optimizer, L.StepLR(optimizer, step_size=1, gamma=0.7)


def _imagenet(tensors):
    """pytorch/examples imagenet: SGD(0.1, momentum 0.9, wd 1e-4) + StepLR(30, 0.1) per epoch
    (step_size 2 here, so that the decay happens within the run)."""
    optimizer = torch.optim.SGD(tensors, lr=0.1, momentum=0.9, weight_decay=1e-4)
    return optimizer, L.StepLR(optimizer, step_size=2, gamma=0.1)


def test_per_epoch_rate_is_inferred_from_the_update_count():
    """Adadelta keeps the count: 3 epochs of 4 updates, last_epoch 3 → 4 updates per epoch."""
    _per_epoch_case(_mnist, epochs_before=3, epochs_after=8, steps_per_epoch=4)


def test_per_epoch_sgd_with_steps_per_epoch_carries_the_true_count():
    _per_epoch_case(_imagenet, epochs_before=3, epochs_after=8, steps_per_epoch=4, explicit=True)


def test_mid_epoch_hand_over_with_explicit_rate():
    """10 updates at 4 per epoch: the next scheduler step comes after 2 more updates."""
    _per_epoch_case(_mnist, epochs_before=2, epochs_after=8, steps_per_epoch=4, mid=2, explicit=True)


def test_update_count_for_sgd_without_scheduler():
    with jax.enable_x64(True):
        optimizer = torch.optim.SGD(_tensors((2,)), lr=0.1, momentum=0.9)
        _torch_loop(optimizer, None, 8, 1)
        assert int(fo.from_torch(optimizer, update_count=8)[1].inner_state.step) == 8
        # Without it torch's state tells only that the first step (buffer = gradient) is over.
        assert int(fo.from_torch(optimizer)[1].inner_state.step) == 1
        with pytest.raises(ValueError, match="update_count=0, but torch.optim.SGD holds state"):
            fo.from_torch(optimizer, update_count=0)


@pytest.mark.parametrize(
    ("updates", "epochs", "kwargs", "message"),
    [
        (0, 0, {}, r"last_epoch=0 \(nothing has run yet\).*steps_per_epoch=1"),
        (3, 0, {}, r"3 update\(s\) fit the first epoch of any length"),
        (4, 1, {}, r"an epoch of any of 3\.\.4 updates fits"),
        (2, 3, {}, r"no number of updates per epoch fits"),
        (4, 4, {"update_count": 5}, r"update_count=5, but torch.optim.Adam's param group 0 has taken 4"),
        (4, 4, {"steps_per_epoch": 0}, r"steps_per_epoch must be None or a positive integer, got 0"),
        (4, 4, {"update_count": -1}, r"update_count must be None or a non-negative integer"),
    ],
)
def test_ambiguous_or_inconsistent_clocks_are_refused(updates, epochs, kwargs, message):
    optimizer = torch.optim.Adam(_tensors((2,)), lr=0.1)
    scheduler = L.ExponentialLR(optimizer, 0.9)
    _torch_loop(optimizer, None, updates, 1)
    for _ in range(epochs):
        scheduler.step()
    with jax.enable_x64(True), pytest.raises(ValueError, match=message):
        fo.from_torch(optimizer, scheduler, **kwargs)


def test_steps_per_epoch_needs_a_scheduler():
    optimizer = torch.optim.Adam(_tensors((2,)), lr=0.1)
    with jax.enable_x64(True), pytest.raises(ValueError, match="no scheduler was given"):
        fo.from_torch(optimizer, steps_per_epoch=4)


def test_per_update_rate_is_inferred_when_counts_agree():
    """Adam stepped with its scheduler after every update: last_epoch == count, as before."""
    with jax.enable_x64(True):
        optimizer = torch.optim.Adam(_tensors((3,), (2,)), lr=0.05)
        scheduler = L.CosineAnnealingLR(optimizer, T_max=20)
        _torch_loop(optimizer, scheduler, 10, 1)
        tx, state = fo.from_torch(optimizer, scheduler)
        assert tx.spec.scheduler.steps_per_epoch == 1
        errors, _ = _side_by_side(optimizer, scheduler, tx, state, 30, 1, 10)
        assert max(errors) <= RTOL, errors
