"""Hypergradients against torch's ``differentiable=True`` autograd, float64.

Torch's recipe (as in its own optimizer tests): the optimizer updates non-leaf copies of leaf
tensors in place, every step's gradient is taken with ``create_graph=True`` and assigned to
``.grad``, hyperparameters are tensors that require grad, and the validation loss is
differentiated with respect to them and to the leaves. Where torch's graph is intact its
derivatives are the true ones and ours agree to rounding; where torch cuts the graph (SGD's
first momentum buffer) we check that torch computes exactly the derivative of the cut function
while ours is the true one (verified against finite differences in ``test_hypergrad.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from bounds import leaf_errors
from test_hypergrad import _loss_scale, initial_params, mlp_config, problem_data

import functional_optreg as fo
from functional_optreg import verify

AUTODIFF_RTOL = 1e-12
"""Two exact reverse-mode derivatives of the same float64 computation; measured ≤ 6e-15."""


def torch_cross_entropy(params, x, y):
    # The optimizer updates the parameters in place; autograd saved tensors of the forward for
    # the backward, and an in-place change of a saved tensor is an error. Clones keep those
    # saved tensors intact (the identity does not change any derivative).
    p = {k: v.clone() for k, v in params.items()}
    logits = torch.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return torch.nn.functional.cross_entropy(logits, y)


def torch_hypergradients(optimizer_class, kwargs, tensor_names, steps, default_dtype=torch.float64):
    """``(d val / d hyperparameter for each of tensor_names, d val / d θ₀ as a dict)``.

    ``default_dtype`` is torch's default dtype during the run: it is the dtype of the optimizer's
    ``step`` tensor, which the differentiable path uses in bias corrections (see
    :func:`test_torch_float32_step_in_bias_corrections`).
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        return _torch_hypergradients(optimizer_class, kwargs, tensor_names, steps)
    finally:
        torch.set_default_dtype(previous)


def _torch_hypergradients(optimizer_class, kwargs, tensor_names, steps):
    data = problem_data()
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in data["params"].items()}
    params = {k: leaf.clone() for k, leaf in leaves.items()}
    hyper = {name: torch.tensor(float(kwargs[name]), dtype=torch.float64, requires_grad=True) for name in tensor_names}
    optimizer = optimizer_class(list(params.values()), **{**kwargs, **hyper}, differentiable=True)
    x, y = torch.tensor(data["x"]), torch.tensor(data["y"])
    for t in range(steps):
        loss = torch_cross_entropy(params, x[t], y[t])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        for p, g in zip(params.values(), grads):
            p.grad = g
        optimizer.step()
    val = torch_cross_entropy(params, torch.tensor(data["x_val"]), torch.tensor(data["y_val"]))
    derivatives = torch.autograd.grad(val, [*hyper.values(), *leaves.values()])
    d_hyper = {name: float(d) for name, d in zip(hyper, derivatives)}
    d_params = {k: d.numpy() for k, d in zip(leaves, derivatives[len(hyper) :])}
    return d_hyper, d_params


def jax_hypergradients(make_tx, hyper, steps):
    with jax.enable_x64(True):
        hyperparams = {k: jnp.asarray(float(v)) for k, v in hyper.items()}
        fn = functools.partial(fo.unrolled_loss, **mlp_config(make_tx, steps))
        d_hyper, d_params = jax.jit(jax.grad(fn, argnums=(0, 1)))(hyperparams, initial_params())
        return {k: float(v) for k, v in d_hyper.items()}, jax.tree.map(np.asarray, d_params)


def relative_difference(ours, theirs):
    """Max over entries of |ours − torch| / max |torch|, per hyperparameter and per leaf."""
    return {k: float(np.max(np.abs(np.asarray(ours[k]) - theirs[k])) / np.max(np.abs(theirs[k]))) for k in theirs}


# --- torch's derivative is the true one: ours agree to rounding --------------------------------

AGREEING = {
    # name: (torch class, torch kwargs, hyperparameters torch differentiates, our factory, K)
    "sgd": (torch.optim.SGD, dict(lr=0.2, weight_decay=0.01), ["lr", "weight_decay"], fo.sgd, 10),
    "adam": (torch.optim.Adam, dict(lr=0.02, weight_decay=0.01), ["lr", "weight_decay"], fo.adam, 20),
    "adamw": (torch.optim.AdamW, dict(lr=0.02, weight_decay=0.1), ["lr", "weight_decay"], fo.adamw, 10),
    "rmsprop": (torch.optim.RMSprop, dict(lr=0.005, momentum=0.5, weight_decay=0.01), [], fo.rmsprop, 15),
    "adagrad": (torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.01), [], fo.adagrad, 8),
    "adadelta": (torch.optim.Adadelta, dict(lr=1.0, weight_decay=0.01), [], fo.adadelta, 8),
    # the default beta2 switches RAdam's rectification on at step 6, inside the unroll
    "radam": (torch.optim.RAdam, dict(lr=0.02), ["lr"], fo.radam, 8),
}


@pytest.mark.parametrize("name", list(AGREEING))
def test_hypergradients_agree_with_torch_differentiable(name):
    torch_class, kwargs, tensor_names, factory, steps = AGREEING[name]
    theirs_h, theirs_p = torch_hypergradients(torch_class, kwargs, tensor_names, steps)
    constants = {k: v for k, v in kwargs.items() if k not in tensor_names}
    ours_h, ours_p = jax_hypergradients(
        lambda h: factory(**h, **constants), {k: kwargs[k] for k in tensor_names}, steps
    )
    errors = {
        **relative_difference(ours_h, {k: np.asarray(v) for k, v in theirs_h.items()}),
        **relative_difference(ours_p, theirs_p),
    }
    assert max(errors.values()) < AUTODIFF_RTOL, errors


def test_torch_float32_step_in_bias_corrections():
    """Torch's differentiable path computes Adam's ``1 − beta**step`` from the ``step`` tensor,
    whose dtype is torch's default dtype, not the parameters' (its non-differentiable path uses
    a Python float). With the default float32 the bias corrections are off by e_t relative at
    step t (computed below as torch computes them), so float64 hypergradients are off far
    beyond rounding; with the default float64 they agree with ours to rounding (the test above)."""
    torch_class, kwargs, tensor_names, factory, steps = AGREEING["adam"]
    theirs_h, theirs_p = torch_hypergradients(torch_class, kwargs, tensor_names, steps, default_dtype=torch.float32)
    ours_h, ours_p = jax_hypergradients(lambda h: factory(**h), {k: kwargs[k] for k in tensor_names}, steps)
    errors = {
        **relative_difference(ours_h, {k: np.asarray(v) for k, v in theirs_h.items()}),
        **relative_difference(ours_p, theirs_p),
    }
    # The step t update lr·m̂/√v̂ = lr·m·√bc2/(bc1·√v) is off by e_t = |Δbc1|/bc1 + ½|Δbc2|/bc2
    # relative (bc = 1 − βᵗ in float32, as torch's 0-d step tensor gives it). A derivative of the
    # final loss sums the steps' contributions, each off by its e_t, so it is off by ≤ Σ e_t of
    # their magnitudes; every e_t here is ≥ 3e-6, so the error is not float64 rounding either.
    per_step = [
        sum(
            weight * abs(float(1 - beta ** torch.tensor(float(t), dtype=torch.float32)) / (1 - beta**t) - 1)
            for beta, weight in ((0.9, 1.0), (0.999, 0.5))
        )
        for t in range(1, steps + 1)
    ]
    assert 1e3 * AUTODIFF_RTOL < min(errors.values()) and max(errors.values()) <= sum(per_step), (errors, per_step)


# --- torch cuts the graph at SGD's first momentum buffer ------------------------------------------


def sgd_momentum_with_torch_cut(lr, momentum, weight_decay, nesterov):
    """SGD with momentum (dampening 0) whose first buffer is a constant for autodiff.

    Torch stores the first buffer as ``grad.detach().clone()``; this is the function whose
    derivative torch's ``differentiable=True`` computes. Same values as ``fo.sgd``.
    """

    def init(params):
        return jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params)

    def update(grads, state, params):
        step, buffers = state

        def leaf(g, p, buf):
            d_p = g + weight_decay * p
            buf = jnp.where(step == 0, jax.lax.stop_gradient(d_p), momentum * buf + d_p)
            return -lr * (d_p + momentum * buf if nesterov else buf), buf

        treedef = jax.tree.structure(grads)
        leaves = [leaf(*args) for args in zip(*(treedef.flatten_up_to(t) for t in (grads, params, buffers)))]
        updates = treedef.unflatten([update for update, _ in leaves])
        buffers = treedef.unflatten([buf for _, buf in leaves])
        return updates, (step + 1, buffers)

    return optax.GradientTransformation(init, update)


@pytest.mark.parametrize("nesterov", [False, True])
def test_torch_sgd_momentum_cuts_the_first_buffer(nesterov):
    """Torch's d/dweight_decay and d/dθ₀ are those of the cut function; ours are the true ones.

    lr is not affected (the first buffer does not depend on lr). Without nesterov, torch cannot
    differentiate lr at all over several steps (see ``test_torch_differentiable_limits``).
    """
    steps, lr, momentum, weight_decay = 10, 0.2, 0.9, 0.01
    tensor_names = ["lr", "weight_decay"] if nesterov else ["weight_decay"]
    kwargs = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    theirs_h, theirs_p = torch_hypergradients(torch.optim.SGD, kwargs, tensor_names, steps)
    theirs = {**{k: np.asarray(v) for k, v in theirs_h.items()}, **theirs_p}
    hyper = dict(lr=lr, weight_decay=weight_decay)

    def flat(result):
        return {**result[0], **result[1]}

    true = flat(jax_hypergradients(lambda h: fo.sgd(**h, momentum=momentum, nesterov=nesterov), hyper, steps))
    cut = flat(
        jax_hypergradients(
            lambda h: sgd_momentum_with_torch_cut(**h, momentum=momentum, nesterov=nesterov), hyper, steps
        )
    )
    with jax.enable_x64(True):
        config = mlp_config(None, steps)
        hyper_arrays = {k: jnp.asarray(v) for k, v in hyper.items()}
        finals = [
            fo.unroll(make(hyper_arrays), initial_params(), config["loss_fn"], config["batches"])[0]
            for make in (
                lambda h: fo.sgd(**h, momentum=momentum, nesterov=nesterov),
                lambda h: sgd_momentum_with_torch_cut(**h, momentum=momentum, nesterov=nesterov),
            )
        ]
        # Same values, possibly in another order: the contract's per-leaf measure for the final
        # params, and the validation losses (lse − z_y, cancelling) within what that moves them.
        assert max(leaf_errors(finals[1], finals[0])) <= verify.FLOAT64_RTOL
        losses = [float(config["val_loss_fn"](final)) for final in finals]
        data = problem_data()
        assert abs(losses[1] - losses[0]) <= _loss_scale(jax.tree.map(np.asarray, finals[0]), data["x_val"])

    to_cut = relative_difference(cut, theirs)
    assert max(to_cut.values()) < AUTODIFF_RTOL, to_cut
    to_true = relative_difference(true, theirs)
    if nesterov:
        assert to_true.pop("lr") < AUTODIFF_RTOL
    assert min(to_true.values()) > 1e-3, to_true  # every other derivative visibly differs


# --- where torch's differentiable mode cannot give a derivative ------------------------------------

LIMITS = {
    # name: (torch class, kwargs, tensor hyperparameters, exception, message)
    "rmsprop_lr": (torch.optim.RMSprop, dict(lr=0.005), ["lr"], TypeError, "must be Number, not Tensor"),
    "rmsprop_weight_decay": (
        torch.optim.RMSprop,
        dict(lr=0.005, weight_decay=0.01),
        ["weight_decay"],
        TypeError,
        "must be Number, not Tensor",
    ),
    "adagrad_lr": (torch.optim.Adagrad, dict(lr=0.1), ["lr"], TypeError, "must be Number, not Tensor"),
    "sgd_momentum_lr": (
        torch.optim.SGD,
        dict(lr=0.2, momentum=0.9),
        ["lr"],
        RuntimeError,
        "modified by an inplace operation",
    ),
    "rmsprop_centered": (
        torch.optim.RMSprop,
        dict(lr=0.005, centered=True),
        [],
        RuntimeError,
        "modified by an inplace operation",
    ),
    "adam_amsgrad": (
        torch.optim.Adam,
        dict(lr=0.02, amsgrad=True),
        [],
        RuntimeError,
        "modified by an inplace operation",
    ),
    "adadelta_lr": (torch.optim.Adadelta, dict(lr=1.0), ["lr"], TypeError, "must be Number, not Tensor"),
    "adamax_lr": (torch.optim.Adamax, dict(lr=0.02), ["lr"], TypeError, "must be Number, not Tensor"),
    "adamax": (torch.optim.Adamax, dict(lr=0.02), [], RuntimeError, "modified by an inplace operation"),
    "nadam_lr": (torch.optim.NAdam, dict(lr=0.02), ["lr"], RuntimeError, "modified by an inplace operation"),
    # ASGD reads its step size with .item(): lr is not in the graph at all
    "asgd_lr": (torch.optim.ASGD, dict(lr=0.1), ["lr"], RuntimeError, "not have been used in the graph"),
    "rprop_lr": (torch.optim.Rprop, dict(lr=0.01), ["lr"], TypeError, "must be Number, not Tensor"),
    "rprop": (torch.optim.Rprop, dict(lr=0.01), [], RuntimeError, "modified by an inplace operation"),
}


@pytest.mark.parametrize("name", list(LIMITS))
def test_torch_differentiable_limits(name):
    """Configurations whose hypergradient torch 2.13 cannot compute over several steps (ours can:
    every one of them is checked against finite differences in ``test_hypergrad.py``)."""
    torch_class, kwargs, tensor_names, exception, message = LIMITS[name]
    with pytest.raises(exception, match=message):
        torch_hypergradients(torch_class, kwargs, tensor_names, steps=3)
