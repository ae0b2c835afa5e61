"""clip_grad_norm_ / clip_grad_value_ between backward and step, against chained transforms.

Torch clips ``.grad`` in place after ``backward()`` and before ``optimizer.step()``; the torch
side here is the optimizer wrapped in a small object whose ``step()`` clips first. Our side is
``optax.chain(fo.clip_grad_*(...), fo.<optimizer>(...))``.

``property_tests`` is off: the generic masked-leaves test assumes a per-leaf rule, and the norm
is global (tests/test_clipping.py checks jit, dtypes and inject_hyperparams instead).
"""

import numpy as np
import optax
import torch

import functional_optreg as fo
from functional_optreg import verify
from parity.case import Case


class _ClipThenStep:
    """A torch optimizer whose ``step()`` first clips the gradients of all its parameters."""

    def __init__(self, optimizer, clip):
        self.optimizer = optimizer
        self._clip = clip

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self._clip(params)
        self.optimizer.step()


def _torch_norm_clipped(optimizer_class, **clip_kwargs):
    def build(tensors, **kwargs):
        clip = lambda params: torch.nn.utils.clip_grad_norm_(params, **clip_kwargs)  # noqa: E731
        return _ClipThenStep(optimizer_class(tensors, **kwargs), clip)

    return build


def _torch_value_clipped(optimizer_class, clip_value):
    def build(tensors, **kwargs):
        clip = lambda params: torch.nn.utils.clip_grad_value_(params, clip_value)  # noqa: E731
        return _ClipThenStep(optimizer_class(tensors, **kwargs), clip)

    return build


def _ours_norm_clipped(optimizer, **clip_kwargs):
    return lambda **kwargs: optax.chain(fo.clip_grad_norm(**clip_kwargs), optimizer(**kwargs))


def _ours_value_clipped(optimizer, clip_value):
    return lambda **kwargs: optax.chain(fo.clip_grad_value(clip_value), optimizer(**kwargs))


def _small_gradients(scale):
    """The quadratic stream scaled by ``scale``: total norms near 1e-5, where torch's 1e-6 shows."""

    def build(params):
        base = verify.quadratic_gradients(params)

        def gradient(step, leaves):
            return [(np.asarray(g, np.float64) * scale).astype(g.dtype) for g in base(step, leaves)]

        return gradient

    return build


def _norm_case(name, optimizer, torch_class, clip_kwargs, kwargs, **case_kwargs):
    return Case(
        f"clipping/{name}",
        _ours_norm_clipped(optimizer, **clip_kwargs),
        _torch_norm_clipped(torch_class, **clip_kwargs),
        kwargs,
        property_tests=False,
        **case_kwargs,
    )


SGD, ADAM = torch.optim.SGD, torch.optim.Adam

CASES = [
    _norm_case("norm2+sgd", fo.sgd, SGD, dict(max_norm=1.0), dict(lr=0.05)),
    _norm_case(
        "norm2+sgd_momentum",
        fo.sgd,
        SGD,
        dict(max_norm=2.0, norm_type=2.0),
        dict(lr=0.05, momentum=0.9),
    ),
    _norm_case("norm2+adam", fo.adam, ADAM, dict(max_norm=0.5), dict(lr=0.02)),
    _norm_case("norm2+adamw", fo.adamw, torch.optim.AdamW, dict(max_norm=1.5), dict(lr=0.02, weight_decay=0.1)),
    _norm_case("norm2_never_clips", fo.sgd, SGD, dict(max_norm=100.0), dict(lr=0.05, momentum=0.5)),
    _norm_case(
        "norm2_error_if_nonfinite_finite_grads",
        fo.sgd,
        SGD,
        dict(max_norm=1.0, error_if_nonfinite=True),
        dict(lr=0.05, momentum=0.9),
    ),
    _norm_case(
        "tiny_max_norm_eps_matters+sgd",
        fo.sgd,
        SGD,
        dict(max_norm=1e-5),
        dict(lr=2e5),
        gradient=_small_gradients(1e-6),
    ),
    _norm_case(
        "tiny_max_norm_eps_matters+sgd_momentum",
        fo.sgd,
        SGD,
        dict(max_norm=1e-5),
        dict(lr=2e4, momentum=0.9),
        gradient=_small_gradients(1e-6),
    ),
    _norm_case(
        "norm_inf+sgd_momentum",
        fo.sgd,
        SGD,
        dict(max_norm=1.0, norm_type=float("inf")),
        dict(lr=0.05, momentum=0.9),
    ),
    _norm_case("norm_inf_string+adam", fo.adam, ADAM, dict(max_norm=0.3, norm_type="inf"), dict(lr=0.02)),
    _norm_case("norm1+sgd_momentum", fo.sgd, SGD, dict(max_norm=20.0, norm_type=1), dict(lr=0.05, momentum=0.9)),
    _norm_case("norm1+adam", fo.adam, ADAM, dict(max_norm=5.0, norm_type=1.0), dict(lr=0.02)),
    _norm_case("norm3+adam", fo.adam, ADAM, dict(max_norm=0.8, norm_type=3.0), dict(lr=0.02)),
    _norm_case("norm3+sgd_momentum", fo.sgd, SGD, dict(max_norm=0.8, norm_type=3), dict(lr=0.05, momentum=0.9)),
    _norm_case("norm0.5+sgd_momentum", fo.sgd, SGD, dict(max_norm=3000.0, norm_type=0.5), dict(lr=0.05, momentum=0.9)),
    Case(
        "clipping/value+sgd_momentum",
        _ours_value_clipped(fo.sgd, 0.5),
        _torch_value_clipped(SGD, 0.5),
        dict(lr=0.05, momentum=0.9),
        property_tests=False,
    ),
    Case(
        "clipping/value+adam",
        _ours_value_clipped(fo.adam, 0.2),
        _torch_value_clipped(ADAM, 0.2),
        dict(lr=0.02),
        property_tests=False,
    ),
]
