"""Complex parameters: every optimizer torch runs on complex tensors, against torch.

The comparison engine handles real arrays, so each complex parameter travels as its real pairs
(``torch.view_as_real``: a trailing axis of size 2) and both sides rebuild the complex tensor:

* torch: the optimizer is built on ``torch.view_as_complex`` views sharing the pairs' storage,
  so its in-place updates are what the engine reads back; ``step()`` hands it the complex view
  of the pairs' gradient.
* ours: the transform's ``init``/``update`` receive complex arrays (``lax.complex`` of the
  pairs) and its complex updates are split back into pairs.

So the gradient stream, the parameters and the comparison are exactly those of a real case, and
what is tested is how each side treats a complex parameter. ``property_tests`` is off (the generic
tests feed real trees of arbitrary shapes).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import functional_optreg as fo
from parity.case import Case, default_params


def complex_pair_params():
    """:func:`parity.case.default_params` as complex leaves (real part seed 0, imaginary seed 1),
    stored as real pairs; the zero bias stays zero in both halves."""
    real, imag = default_params(0), default_params(1)
    imag["conv"]["bias"] = np.zeros_like(imag["conv"]["bias"])
    return jax.tree.map(lambda re, im: np.stack([re, im], axis=-1), real, imag)


def _to_complex(tree):
    return jax.tree.map(lambda x: jax.lax.complex(x[..., 0], x[..., 1]), tree)


def _to_pairs(tree):
    return jax.tree.map(lambda z: jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1), tree)


def ours_on_complex(factory):
    """Our transform from ``factory(**kwargs)``, run on the complex parameters the pairs encode."""

    def build(**kwargs):
        inner = factory(**kwargs)

        def init(params):
            return inner.init(_to_complex(params))

        def update(updates, state, params=None):
            complex_params = None if params is None else _to_complex(params)
            updates, state = inner.update(_to_complex(updates), state, complex_params)
            return _to_pairs(updates), state

        return optax.GradientTransformation(init, update)

    return build


def _complex_view(pairs):
    """``torch.view_as_complex(pairs)``; a zero-size tensor (whose strides ``view_as_complex``
    refuses) gets an empty complex tensor of the same shape instead: there is nothing to share."""
    if pairs.numel() == 0:
        dtype = torch.complex128 if pairs.dtype == torch.float64 else torch.complex64
        return torch.zeros(pairs.shape[:-1], dtype=dtype)
    return torch.view_as_complex(pairs)


class _OnComplexViews:
    """A torch optimizer stepping complex views of the engine's real-pair tensors."""

    def __init__(self, pairs, optimizer_class, clip_max_norm, **kwargs):
        self._pairs = pairs
        self._complex = [_complex_view(t.detach()).requires_grad_() for t in pairs]
        self.optimizer = optimizer_class(self._complex, **kwargs)
        self._clip_max_norm = clip_max_norm

    def zero_grad(self):
        for pair in self._pairs:
            pair.grad = None
        self.optimizer.zero_grad()

    def step(self):
        for view, pair in zip(self._complex, self._pairs):
            view.grad = _complex_view(pair.grad)
        if self._clip_max_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._complex, self._clip_max_norm)
        self.optimizer.step()


def torch_on_complex(optimizer_class, clip_max_norm=None):
    """Build ``optimizer_class`` on complex views of the pairs (clipping the norm first if asked)."""

    def build(tensors, **kwargs):
        return _OnComplexViews(tensors, optimizer_class, clip_max_norm, **kwargs)

    return build


def _case(name, ours, torch_class, kwargs):
    return Case(
        f"complex/{name}",
        ours_on_complex(ours),
        torch_on_complex(torch_class),
        kwargs,
        params=complex_pair_params,
        property_tests=False,
    )


def _clipped_adam(max_norm):
    return lambda **kwargs: optax.chain(fo.clip_grad_norm(max_norm), fo.adam(**kwargs))


CASES = [
    _case("sgd", fo.sgd, torch.optim.SGD, dict(lr=0.05)),
    _case(
        "sgd_nesterov+weight_decay",
        fo.sgd,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True),
    ),
    _case(
        "sgd_dampening+maximize",
        fo.sgd,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.5, dampening=0.3, maximize=True),
    ),
    _case("adam", fo.adam, torch.optim.Adam, dict(lr=0.01)),
    _case(
        "adam_amsgrad+weight_decay+maximize",
        fo.adam,
        torch.optim.Adam,
        dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True),
    ),
    _case("adamw_amsgrad", fo.adamw, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    _case("adamax", fo.adamax, torch.optim.Adamax, dict(lr=0.02, weight_decay=0.1)),
    _case("adadelta", fo.adadelta, torch.optim.Adadelta, dict(lr=1.0, weight_decay=0.05)),
    _case("adagrad", fo.adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1)),
    _case("asgd", fo.asgd, torch.optim.ASGD, dict(lr=0.02, t0=10, weight_decay=0.05)),
    _case("nadam", fo.nadam, torch.optim.NAdam, dict(lr=0.01, weight_decay=0.1)),
    _case(
        "radam_decoupled",
        fo.radam,
        torch.optim.RAdam,
        dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    ),
    _case("rmsprop", fo.rmsprop, torch.optim.RMSprop, dict(lr=0.005)),
    _case(
        "rmsprop_centered+momentum",
        fo.rmsprop,
        torch.optim.RMSprop,
        dict(lr=0.005, centered=True, momentum=0.5, weight_decay=0.1),
    ),
    Case(
        "complex/clip_grad_norm+adam",
        ours_on_complex(_clipped_adam(0.5)),
        torch_on_complex(torch.optim.Adam, clip_max_norm=0.5),
        dict(lr=0.01),
        params=complex_pair_params,
        property_tests=False,
    ),
    _case(
        "adagrad_initial_accumulator_value",
        fo.adagrad,
        torch.optim.Adagrad,
        dict(lr=0.1, initial_accumulator_value=0.2),
    ),
    _case("rprop", fo.rprop, torch.optim.Rprop, dict(lr=0.02)),
]
