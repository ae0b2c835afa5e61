"""Unit tests of the torch bridge: what the resume parity suite (parity/test_bridge_resume.py)
does not cover — the spec travelling with the transform, fresh optimizers, checkpoints, and the
errors that name what cannot be converted."""

from __future__ import annotations

import copy
import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.optim import lr_scheduler as L

import functional_optreg as fo
from functional_optreg import torch_bridge, verify
from functional_optreg.optimizers._records import OptimizerRecord

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "port_from_torch.py"


def _params(*shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=generator)) for shape in shapes]


def _step(optimizer, steps=3):
    for _ in range(steps):
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = torch.ones_like(p) * 0.5 + 0.1 * p.detach()
        optimizer.step()


def test_import_does_not_import_torch():
    code = "import sys, functional_optreg, functional_optreg.torch_bridge; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spec_travels_with_the_transform_and_chains():
    optimizer = torch.optim.Adam(_params((2, 3), (3,)), lr=0.01)
    _step(optimizer)
    tx, state = fo.from_torch(optimizer)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    assert tx.spec.optimizer == "Adam"
    assert [group.param_ids for group in tx.spec.groups] == [(0, 1)]
    assert int(state.inner_state.step) == 3
    # It composes like any transform; the spec stays with the transform returned by from_torch.
    chained = optax.chain(tx, optax.scale(1.0))
    params = [jnp.asarray(p.detach().numpy()) for p in optimizer.param_groups[0]["params"]]
    updates, _ = chained.update(params, (state, optax.EmptyState()), params)
    assert len(updates) == 2
    with pytest.raises(TypeError, match="keep a reference to the returned transform"):
        fo.to_torch_state_dict(chained, state)
    assert fo.to_torch_state_dict(tx.spec, state)["param_groups"][0]["lr"] == 0.01


def test_fresh_optimizer_has_no_state_and_round_trips():
    optimizer = torch.optim.SGD(_params((2,)), lr=0.1, momentum=0.9)
    tx, state = fo.from_torch(optimizer)
    assert int(state.inner_state.step) == 0
    assert fo.to_torch_state_dict(tx, state) == optimizer.state_dict()


def test_adagrad_state_exists_before_the_first_step():
    """Torch's Adagrad creates its state in the constructor; the bridge writes it back."""
    optimizer = torch.optim.Adagrad(_params((2, 2)), initial_accumulator_value=0.3)
    tx, state = fo.from_torch(optimizer)
    written = fo.to_torch_state_dict(tx, state)
    expected = optimizer.state_dict()
    assert set(written["state"][0]) == set(expected["state"][0]) == {"step", "sum"}
    assert torch.equal(written["state"][0]["sum"], expected["state"][0]["sum"])
    assert written["state"][0]["step"].item() == 0


def test_state_fields_are_torch_values_in_jax_layout():
    (w,) = _params((3, 2))
    optimizer = torch.optim.Adam([("fc.weight", w)], lr=0.01)
    _step(optimizer)
    tree = {"fc": {"kernel": jnp.asarray(w.detach().numpy().T)}}
    tx, state = fo.from_torch(optimizer, params=(tree, {"fc.weight": fo.ParamPath(("fc", "kernel"), (1, 0))}))
    np.testing.assert_array_equal(state.inner_state.exp_avg["fc"]["kernel"], optimizer.state[w]["exp_avg"].numpy().T)
    back = fo.to_torch_state_dict(tx, state)["state"][0]["exp_avg_sq"]
    assert torch.equal(back, optimizer.state[w]["exp_avg_sq"])


def test_float64_torch_state_without_x64_warns():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))])
    with pytest.warns(UserWarning, match="jax_enable_x64 is off"):
        fo.from_torch(optimizer)
    with jax.enable_x64(True):
        _, state = fo.from_torch(optimizer)
    assert state.inner_state.exp_avg[0].dtype == jnp.float64


def test_tensor_hyperparameters_stay_tensors():
    optimizer = torch.optim.Adam(_params((2,)), lr=torch.tensor(0.01))
    _step(optimizer)
    tx, state = fo.from_torch(optimizer)
    lr = fo.to_torch_state_dict(tx, state)["param_groups"][0]["lr"]
    # torch.tensor(0.01) is float32: the decimal rounded once, handed back unchanged, so equal to np.float32(0.01).
    assert isinstance(lr, torch.Tensor) and lr.item() == np.float32(0.01)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensor_lr_is_written_back_in_its_dtype(dtype):
    optimizer = torch.optim.Adam(_params((2,)), lr=torch.tensor(0.01, dtype=dtype))
    _step(optimizer)
    with jax.enable_x64(True):
        tx, state = fo.from_torch(optimizer)
        lr = fo.to_torch_state_dict(tx, state)["param_groups"][0]["lr"]
    assert lr.dtype == dtype and lr.item() == optimizer.param_groups[0]["lr"].item()


@pytest.mark.parametrize(
    "torch_class, kwargs",
    [
        pytest.param(torch.optim.AdamW, dict(weight_decay=0.1, amsgrad=True), id="AdamW"),
        pytest.param(torch.optim.Adam, dict(weight_decay=0.1), id="Adam"),
        pytest.param(torch.optim.ASGD, dict(lambd=1e-2, t0=10), id="ASGD"),
        pytest.param(torch.optim.NAdam, dict(weight_decay=0.1), id="NAdam"),
        pytest.param(torch.optim.NAdam, dict(weight_decay=0.1, decoupled_weight_decay=True), id="NAdam-decoupled"),
        pytest.param(torch.optim.RAdam, dict(weight_decay=0.1, decoupled_weight_decay=True), id="RAdam-decoupled"),
        pytest.param(torch.optim.Adafactor, dict(weight_decay=0.1), id="Adafactor"),
    ],
)
def test_float32_tensor_lr_resumes_in_float32_arithmetic(torch_class, kwargs):
    """``lr=torch.tensor(0.01)`` (float32) with float64 parameters: torch does part of the lr
    arithmetic in float32 (``lr / bias_correction1``, ``1 - lr·λ``, ASGD's ``eta``), and so must
    the converted optimizer. Ours is converted from a fresh torch optimizer and handed torch's
    state again at step 20 (``from_torch`` mid-run); every one of 50 steps meets the float64
    contract. Before the bridge carried the dtype: AdamW 7.0e-7, ASGD 7.9e-9, Adam 1.7e-9, NAdam
    1.6e-9; with the dtype but the bridge's injected (float64 array) weight decay and ``lambd``
    not rounded to float32 as torch rounds a Python float next to a float32 tensor: AdamW 7.0e-7,
    ASGD 7.9e-9."""

    def build(tensors):
        return torch_class(tensors, lr=torch.tensor(0.01), **kwargs)

    def hand_over(step, optimizer, state):
        return fo.from_torch(optimizer)[1] if step == 20 else state

    params = [np.asarray(p.detach().numpy(), np.float64) for p in _params((4, 3), (3,))]
    with jax.enable_x64(True):
        tx, _ = fo.from_torch(build([torch.tensor(p, requires_grad=True) for p in params]))
    report = verify.compare(build, tx, params, steps=50, before_step=hand_over)
    assert report.passed, str(report)


def test_param_names_and_module_lookup():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(optimizer)
    tree = {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}
    mapping = {"weight": fo.ParamPath(("kernel",), (1, 0)), "bias": "bias"}
    with pytest.raises(
        ValueError, match="has no name: the optimizer was not built from named parameters and no module="
    ):
        fo.from_torch(optimizer, params=(tree, mapping))
    copied = copy.deepcopy(model)
    with pytest.raises(
        ValueError, match=r"shape \(2, 3\) in param group 0 is not a parameter of the module given .*deep copy"
    ):
        fo.from_torch(optimizer, params=(tree, mapping), module=copied)
    tx, state = fo.from_torch(optimizer, params=(tree, mapping), module=model)
    np.testing.assert_array_equal(
        state.inner_state.momentum_buffer["bias"], optimizer.state[model.bias]["momentum_buffer"].numpy()
    )


def test_mapping_errors_name_the_parameter():
    (w,) = _params((3, 2))
    optimizer = torch.optim.Adam([("w", w)])
    with pytest.raises(ValueError, match="no entry for torch parameter 'w'"):
        fo.from_torch(optimizer, params=({"w": jnp.zeros((3, 2))}, {}))
    with pytest.raises(ValueError, match=r"maps to path \('v',\), which is not a leaf"):
        fo.from_torch(optimizer, params=({"w": jnp.zeros((3, 2))}, {"w": ("v",)}))
    with pytest.raises(ValueError, match=r"the leaf at \('w',\) should have shape \(2, 3\)"):
        fo.from_torch(optimizer, params=({"w": jnp.zeros((3, 2))}, {"w": fo.ParamPath(("w",), (1, 0))}))
    with pytest.raises(ValueError, match=r"leaves of the parameter tree at \[\('extra',\)\]"):
        fo.from_torch(optimizer, params=({"w": jnp.zeros((3, 2)), "extra": jnp.zeros(1)}, {"w": "w"}))


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda ps: torch.optim.Adafactor([("w", ps[0])]),
            "Adafactor cannot follow parameter 0 .'w'. into a layout permuted",
        ),
        (lambda ps: torch.optim.Muon([("w", ps[0])]), "Muon cannot follow parameter 0 .'w'. into a layout permuted"),
    ],
)
def test_orientation_dependent_optimizers_refuse_transposed_layouts(make, message):
    optimizer = make(_params((3, 2)))
    with pytest.raises(ValueError, match=message):
        fo.from_torch(optimizer, params=({"w": jnp.zeros((2, 3))}, {"w": fo.ParamPath(("w",), (1, 0))}))


def test_custom_subclass_is_named():
    class MyAdam(torch.optim.Adam):
        pass

    with pytest.raises(TypeError, match=r"MyAdam is a custom subclass of torch.optim.Adam"):
        fo.from_torch(MyAdam(_params((2,))))


def test_unknown_optimizer_class_is_named():
    class Plain(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.1})

    with pytest.raises(TypeError, match=r"cannot convert .*Plain: from_torch knows the torch.optim classes"):
        fo.from_torch(Plain(_params((2,))))


def test_missing_module_raises_naming_it():
    with pytest.raises(NotImplementedError, match=r"functional_optreg.optimizers.not_written .*does not exist"):
        OptimizerRecord("Future", "not_written", "future", (), ()).load_factory()


def test_unknown_state_key_is_named():
    (p,) = _params((2,))
    optimizer = torch.optim.Adam([p])
    _step(optimizer)
    optimizer.state[p]["my_extra"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"has the key\(s\) \['my_extra'\], which functional_optreg.adam's state"):
        fo.from_torch(optimizer)


def test_unknown_group_hyperparameter_is_named():
    optimizer = torch.optim.SGD(_params((2,)), lr=0.1)
    optimizer.param_groups[0]["warmup"] = 3
    with pytest.raises(ValueError, match="hyperparameter 'warmup', which functional_optreg.sgd does not take"):
        fo.from_torch(optimizer)


def test_partial_state_within_a_group_is_named():
    a, b = _params((2,), (3,))
    optimizer = torch.optim.Adam([("a", a), ("b", b)])
    a.grad = torch.ones_like(a)
    optimizer.step()
    with pytest.raises(ValueError, match=r"state for some parameters of a group but not for parameter 1 \('b'\)"):
        fo.from_torch(optimizer)


def test_different_step_counts_within_a_group_are_named():
    a, b = _params((2,), (3,))
    optimizer = torch.optim.Adam([a, b])
    _step(optimizer, 2)
    optimizer.state[b]["step"] += 1
    with pytest.raises(ValueError, match="different numbers of steps"):
        fo.from_torch(optimizer)


def test_lambda_lr_that_does_not_trace_is_named():
    optimizer = torch.optim.SGD(_params((2,)), lr=0.1)

    def decay(epoch):
        return math.cos(epoch / 10)

    scheduler = L.LambdaLR(optimizer, decay)
    with pytest.raises(ValueError, match=r"LambdaLR lr_lambda .*decay. is not jnp-traceable.*jnp.where"):
        fo.from_torch(optimizer, scheduler)


def test_lr_changed_outside_the_scheduler_is_detected():
    optimizer = torch.optim.SGD(_params((2,)), lr=0.1)
    scheduler = L.StepLR(optimizer, step_size=2)
    _step(optimizer)
    scheduler.step()
    optimizer.param_groups[0]["lr"] = 0.5
    with pytest.raises(ValueError, match="the lr was changed outside this scheduler"):
        fo.from_torch(optimizer, scheduler)


def test_scheduler_errors():
    optimizer = torch.optim.SGD(_params((2,)), lr=0.1)
    other = torch.optim.SGD(_params((2,)), lr=0.1)
    with pytest.raises(ValueError, match="steps another optimizer"):
        fo.from_torch(optimizer, L.StepLR(other, 2))

    class MyStep(L.StepLR):
        pass

    with pytest.raises(TypeError, match=r"cannot convert the lr scheduler .*MyStep"):
        fo.from_torch(optimizer, MyStep(optimizer, 2))
    asgd = torch.optim.ASGD(_params((2,)))
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau .* torch.optim.ASGD"):
        fo.from_torch(asgd, L.ReduceLROnPlateau(asgd))
    restarts = L.CosineAnnealingWarmRestarts(optimizer, T_0=3)
    _step(optimizer, 1)
    restarts.step(0.5)
    with pytest.raises(ValueError, match="stepped with explicit .fractional. epochs"):
        fo.from_torch(optimizer, restarts)
    tx, state = fo.from_torch(torch.optim.SGD(_params((2,)), lr=0.1))
    with pytest.raises(ValueError, match="converted without a scheduler"):
        fo.to_torch_scheduler_state_dict(tx, state)


def test_schedule_continues_from_the_scheduler_epoch():
    """The lr of our next update is torch's group lr; the one after, torch's next."""
    optimizer = torch.optim.SGD(_params((2,)), lr=1.0)
    scheduler = L.MultiStepLR(optimizer, milestones=[4, 6], gamma=0.5)
    for _ in range(4):
        _step(optimizer, 1)
        scheduler.step()
    tx, state = fo.from_torch(optimizer, scheduler, steps_per_epoch=1)
    assert int(state.inner_state.step) == 4
    lrs = []
    params = [jnp.zeros(2)]
    for _ in range(3):
        updates, state = tx.update([jnp.ones(2)], state, params)
        lrs.append(-float(updates[0][0]))
    assert lrs == [0.5, 0.5, 0.25]


def test_checkpoint_helper_reads_state_dicts_and_refuses_code(tmp_path):
    optimizer = torch.optim.Adam(_params((2, 2)), lr=0.01)
    scheduler = L.ExponentialLR(optimizer, 0.9)
    _step(optimizer)
    scheduler.step()
    path = tmp_path / "checkpoint.pt"
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path)
    loaded = fo.load_torch_checkpoint(path)
    fresh = torch.optim.Adam(_params((2, 2)), lr=0.01)
    fresh.load_state_dict(loaded["optimizer"])
    tx, state = fo.from_torch(fresh)
    assert int(state.inner_state.step) == 3

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        fo.load_torch_checkpoint(tmp_path / "evil.pt")


def test_lbfgs_returns_a_solver_with_spec():
    (p,) = _params((3,))
    optimizer = torch.optim.LBFGS([p], lr=0.5, max_iter=3, history_size=2)

    def closure():
        optimizer.zero_grad()
        loss = ((p - 1.0) ** 4).sum()
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    solver, state = fo.from_torch(optimizer)
    assert isinstance(solver, torch_bridge.TorchSolver) and solver.spec.optimizer == "LBFGS"
    assert int(state.num_old) == len(optimizer.state[p]["old_dirs"]) == 2
    written = fo.to_torch_state_dict(solver, state)
    assert written["state"][0]["func_evals"] == optimizer.state[p]["func_evals"]
    fresh = torch.optim.LBFGS([torch.nn.Parameter(p.detach().clone())], lr=0.5, max_iter=3, history_size=2)
    fresh.load_state_dict(written)


def test_port_from_torch_example_passes():
    """The example sets jax_enable_x64 globally, so it runs in its own process."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--torch-steps", "4", "--jax-steps", "4", "--back-steps", "3"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-> PASS" in result.stdout


def test_a_fresh_adagrad_converts_with_update_count_zero():
    """Adagrad creates its state (step 0) in its constructor: that is not a sign it has stepped."""
    with jax.enable_x64(True):
        optimizer = torch.optim.Adagrad([torch.ones(3, dtype=torch.float64, requires_grad=True)], lr=0.1)
        _, state = fo.from_torch(optimizer, update_count=0)
        assert int(state.inner_state.step) == 0


def test_a_tensor_lr_under_a_scheduler_is_refused_by_name():
    """torch's schedulers compute a tensor lr in its dtype, which a converted schedule would not."""
    with jax.enable_x64(True):
        optimizer = torch.optim.Adam([torch.ones(3, dtype=torch.float64, requires_grad=True)], lr=torch.tensor(0.01))
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)
        with pytest.raises(ValueError, match=r"param group 0's lr is a torch.float32 tensor: StepLR"):
            fo.from_torch(optimizer, scheduler, update_count=0)


@pytest.mark.parametrize(
    "torch_class, kwargs",
    [
        pytest.param(torch.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1), id="Adam"),
        pytest.param(torch.optim.AdamW, dict(lr=0.01), id="AdamW"),
        pytest.param(torch.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True), id="RMSprop"),
        pytest.param(torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), id="SGD"),
        pytest.param(torch.optim.NAdam, dict(lr=0.01), id="NAdam"),
        pytest.param(torch.optim.ASGD, dict(lr=0.02, t0=2), id="ASGD"),
        pytest.param(torch.optim.Rprop, dict(lr=0.02), id="Rprop"),
    ],
)
def test_complex_parameters_resume_after_the_bridge(torch_class, kwargs):
    """torch steps complex parameters through ``view_as_real``. ``fo.from_torch`` gave its
    injected hyperparameters the parameters' dtype, complex128 (``lr must be a real number ...
    complex128``); they are float64 now. Torch runs 10 steps, then both sides 50 more from the
    converted state, on gradients of the current (complex) parameters; every step meets the
    float64 contract per leaf (max|ours - torch| / max|torch| <= 1e-12)."""
    rng = np.random.default_rng(0)
    shapes = [(3, 2), (4,)]
    start = [rng.normal(size=s) + 1j * rng.normal(size=s) for s in shapes]
    target = [rng.normal(size=s) + 1j * rng.normal(size=s) for s in shapes]

    def gradient(step, leaves):
        return [(1.0 + 0.5j) * (p - t) + 0.1 * np.sin(step) for p, t in zip(leaves, target)]

    tensors = [torch.tensor(p, dtype=torch.complex128, requires_grad=True) for p in start]
    optimizer = torch_class(tensors, **kwargs)

    def torch_step(step):
        for tensor, g in zip(tensors, gradient(step, [t.detach().numpy() for t in tensors])):
            tensor.grad = torch.from_numpy(np.asarray(g, np.complex128))
        optimizer.step()

    for step in range(10):
        torch_step(step)
    with jax.enable_x64(True):
        tx, state = fo.from_torch(optimizer)
        params = [jnp.asarray(t.detach().numpy()) for t in tensors]
        update = jax.jit(tx.update)
        for step in range(10, 60):
            grads = [jnp.asarray(g) for g in gradient(step, [np.asarray(p) for p in params])]
            updates, state = update(grads, state, params)
            params = optax.apply_updates(params, updates)
            torch_step(step)
            for ours, theirs in zip(params, tensors):
                theirs = theirs.detach().numpy()
                assert ours.dtype == jnp.complex128
                error = np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs))
                assert error <= 1e-12, f"step {step}: {error:.2e}"


def _rmsprop_pair(momentum, steps):
    """A float64 torch RMSprop stepped ``steps`` times and its parameters."""
    tensors = [torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)]
    optimizer = torch.optim.RMSprop(tensors, lr=0.01, momentum=momentum)
    for _ in range(steps):
        tensors[0].grad = tensors[0].detach() * 2.0
        optimizer.step()
    return optimizer, tensors


def _step_both(optimizer, tensors, tx, state, steps):
    params = [jnp.asarray(t.detach().numpy()) for t in tensors]
    for _ in range(steps):
        tensors[0].grad = tensors[0].detach() * 2.0
        optimizer.step()
        updates, state = tx.update([p * 2.0 for p in params], state, params)
        params = optax.apply_updates(params, updates)
    _assert_within_contract(params[0], tensors[0])
    return state


def _assert_within_contract(ours, tensor):
    theirs = tensor.detach().numpy()
    assert np.max(np.abs(np.asarray(ours) - theirs)) <= 1e-12 * np.max(np.abs(theirs))


@pytest.mark.parametrize("steps", [0, 3])
def test_bridged_rmsprop_momentum_is_settable_like_torchs_param_group(steps):
    """torch creates RMSprop's ``momentum_buffer`` at the first step only (if momentum > 0 then).
    The bridge used to keep momentum static (``set_hyperparams`` raised KeyError); now it is
    settable, the state says whether torch's buffer exists, and ``to_torch_state_dict`` writes the
    buffer only where it does."""
    with jax.enable_x64(True):
        optimizer, tensors = _rmsprop_pair(0.9, steps)
        tx, state = fo.from_torch(optimizer)
        assert bool(state.inner_state.momentum_buffer_set) == (steps > 0)
        optimizer.param_groups[0]["momentum"] = 0.5
        state = _step_both(optimizer, tensors, tx, fo.set_hyperparams(state, momentum=0.5), 4)
        optimizer.param_groups[0]["momentum"] = 0.0
        state = _step_both(optimizer, tensors, tx, fo.set_hyperparams(state, momentum=0.0), 4)
        written = fo.to_torch_state_dict(tx, state)
        assert written["param_groups"][0]["momentum"] == 0.0
        _assert_within_contract(written["state"][0]["momentum_buffer"], optimizer.state[tensors[0]]["momentum_buffer"])


def test_bridged_rmsprop_without_a_buffer_refuses_momentum_like_torch():
    """A torch RMSprop that stepped without momentum has no buffer: torch's next step with
    momentum raises KeyError, ours (set on the converted state) a ValueError saying why. Before
    the first step momentum may still be switched on, as in torch."""
    with jax.enable_x64(True):
        optimizer, tensors = _rmsprop_pair(0.0, 2)
        tx, state = fo.from_torch(optimizer)
        assert not bool(state.inner_state.momentum_buffer_set)
        assert "momentum_buffer" not in fo.to_torch_state_dict(tx, state)["state"][0]
        params = [jnp.asarray(tensors[0].detach().numpy())]
        with pytest.raises(ValueError, match="KeyError: 'momentum_buffer'"):
            tx.update(params, fo.set_hyperparams(state, momentum=0.9), params)
        with pytest.raises(KeyError, match="'centered' is not a settable hyperparameter"):
            fo.set_hyperparams(state, centered=True)

        fresh, fresh_tensors = _rmsprop_pair(0.0, 0)
        tx, state = fo.from_torch(fresh)
        fresh.param_groups[0]["momentum"] = 0.9
        state = _step_both(fresh, fresh_tensors, tx, fo.set_hyperparams(state, momentum=0.9), 5)
        assert bool(state.inner_state.momentum_buffer_set)


@pytest.mark.parametrize(
    "torch_class, kwargs",
    [
        pytest.param(torch.optim.AdamW, dict(weight_decay=0.1), id="AdamW"),
        pytest.param(torch.optim.ASGD, dict(lambd=1e-2, t0=10), id="ASGD"),
        pytest.param(torch.optim.NAdam, dict(weight_decay=0.1), id="NAdam"),
    ],
)
def test_a_float32_tensor_lr_stays_settable_and_float32(torch_class, kwargs):
    """``fo.set_hyperparams(state, lr=x)`` on a converted ``lr=torch.tensor(0.01)`` is torch's
    ``param_groups[0]["lr"].fill_(x)``: the lr stays a float32 tensor, and so does torch's
    arithmetic with it. The bridge held it as a static numpy.float32 (``'lr' is not a settable
    hyperparameter``). 50 float64 steps, the lr set at step 20 and 35, within the contract."""

    def build(tensors):
        return torch_class(tensors, lr=torch.tensor(0.01), **kwargs)

    def set_lr(step, optimizer, state):
        if step in (20, 35):
            optimizer.param_groups[0]["lr"].fill_(0.01 * step / 40)
            return fo.set_hyperparams(state, lr=0.01 * step / 40)
        return state

    params = [np.asarray(p.detach().numpy(), np.float64) for p in _params((4, 3), (3,))]
    with jax.enable_x64(True):
        tx, state = fo.from_torch(build([torch.tensor(p, requires_grad=True) for p in params]))
        assert state.hyperparams["lr"].dtype == jnp.float32
    report = verify.compare(build, tx, params, steps=50, before_step=set_lr)
    assert report.passed, str(report)
