"""Torch and one of our transforms side by side, keeping both optimizers' *state* at every step.

The parity engine compares parameters; these unit tests also compare what torch keeps in
``optimizer.state`` (ASGD's average, NAdam's ``mu_product``, Rprop's step sizes, ...). Both
runners are recorders on :func:`functional_optreg.verify.run`, the one trajectory engine, and
:func:`assert_close_to_torch` is the parity contract's float64 measure.
"""

from __future__ import annotations

import jax
import numpy as np

from functional_optreg import verify


def side_by_side(case, dtype, steps=60):
    """Run a parity case's torch optimizer and our transform from the same start, on the case's
    gradient stream; per step, ``(torch's state per parameter, our state, our params)`` as NumPy."""
    history = []
    params = case.params()
    verify.run(
        case.make_torch,
        case.make_transform(),
        params,
        case.gradient(params) if case.gradient is not None else None,
        steps=steps,
        dtype=dtype,
        torch_scheduler=case.torch_scheduler,
        after_step=lambda view: history.append(
            (view.torch_state(), view.jax_state(), jax.tree.map(np.asarray, view.params))
        ),
    )
    return history


def run_both(torch_class, ours, kwargs, steps=5):
    """Run ``torch_class(**kwargs)`` and ``ours(**kwargs)`` in float64 on the engine's
    parameter-dependent quadratic gradients, from a zero bias ``"b"`` and a matrix ``"w"``.

    Returns ``(our state as a dict of field -> {"b", "w"} tree, torch's state per name,
    our final params, torch's final params)``, all NumPy.
    """
    rng = np.random.default_rng(0)
    start = {"b": np.zeros(3), "w": rng.normal(size=(2, 3))}
    names = list(start)
    final = verify.run(lambda tensors: torch_class(tensors, **kwargs), ours(**kwargs), start, steps=steps)
    theirs = dict(zip(names, final.torch_state()))
    return (
        final.jax_state()._asdict(),
        theirs,
        jax.tree.map(np.asarray, final.params),
        dict(zip(names, final.torch_leaves())),
    )


def assert_close_to_torch(ours, theirs, what):
    """The float64 contract for one array: ``max|ours − torch| / max|torch| ≤ 1e-12``."""
    error = verify._relative_error(np.asarray(ours), np.asarray(theirs))
    assert error <= verify.FLOAT64_RTOL, f"{what}: relative error {error:.3e}"
