"""Torch and one of our transforms side by side, keeping both optimizers' *state* at every step.

The parity engine compares parameters; these unit tests also compare what torch keeps in
``optimizer.state`` (ASGD's average, NAdam's ``mu_product``, Rprop's step sizes, ...).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from functional_optreg import verify


def side_by_side(case, dtype, steps=60):
    """Run torch and ours from the same start; per step, torch's state, our state and params."""
    with jax.enable_x64(dtype == "float64"):
        leaves, treedef = jax.tree.flatten(case.params())
        leaves = [np.asarray(leaf, dtype) for leaf in leaves]
        gradient = verify.quadratic_gradients(leaves)
        tensors = [torch.tensor(leaf, requires_grad=True) for leaf in leaves]
        optimizer = case.make_torch(tensors)
        scheduler = case.torch_scheduler(optimizer) if case.torch_scheduler else None
        tx = case.make_transform()
        params = treedef.unflatten([jnp.asarray(leaf) for leaf in leaves])
        state = tx.init(params)

        @jax.jit
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        history = []
        for index in range(steps):
            current = [t.detach().numpy().copy() for t in tensors]
            for tensor, grad in zip(tensors, gradient(index, current)):
                tensor.grad = torch.from_numpy(np.array(grad, copy=True))
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            ours_now = [np.asarray(leaf) for leaf in jax.tree.leaves(params)]
            grads = treedef.unflatten([jnp.asarray(g) for g in gradient(index, ours_now)])
            params, state = step(params, state, grads)
            theirs = [
                {key: value.detach().numpy().copy() for key, value in optimizer.state[t].items()} for t in tensors
            ]
            history.append((theirs, jax.tree.map(np.asarray, state), jax.tree.map(np.asarray, params)))
        return history


def run_both(torch_class, ours, kwargs, steps=5):
    """Run ``torch_class`` and ``ours`` in float64 on parameter-independent gradients.

    Returns our state as a dict of NumPy trees, torch's per-parameter state, our final params and
    torch's tensors (keys ``"b"``, a zero bias, and ``"w"``).
    """
    rng = np.random.default_rng(0)
    start = {"b": np.zeros(3), "w": rng.normal(size=(2, 3))}
    grads = [{k: rng.normal(size=v.shape) for k, v in start.items()} for _ in range(steps)]
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    optimizer = torch_class(list(tensors.values()), **kwargs)
    with jax.enable_x64(True):
        tx = ours(**kwargs)
        params = jax.tree.map(jnp.asarray, start)
        state = tx.init(params)
        for g in grads:
            for k, t in tensors.items():
                t.grad = torch.tensor(g[k])
            optimizer.step()
            updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
            params = optax.apply_updates(params, updates)
        ours_state = jax.tree.map(np.asarray, state._asdict())
    return ours_state, {k: optimizer.state[t] for k, t in tensors.items()}, params, tensors
