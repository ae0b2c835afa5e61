"""Muon for the hidden matrices, AdamW for everything else: the usual pairing, in optax.

Muon only takes 2-D parameters, and even among those it is meant for hidden layers: biases, the
input and output layers (and embeddings, norms, convolution kernels) go to AdamW. In torch that
is two optimizers stepped together; here it is one transform, ``optax.multi_transform``, routing
each leaf by a label. The script fits a small MLP to a random teacher network and prints the
loss. Usage::

    python examples/muon_with_adamw.py
    python examples/muon_with_adamw.py --steps 500
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import optax

import functional_optreg as fo

LAYERS = ("input", "hidden1", "hidden2", "output")


def init_mlp(key: jax.Array, sizes=(8, 64, 64, 64, 1)) -> dict:
    params = {}
    for name, layer_key, (fan_in, fan_out) in zip(LAYERS, jax.random.split(key, len(LAYERS)), zip(sizes, sizes[1:])):
        params[name] = {
            "kernel": jax.random.normal(layer_key, (fan_in, fan_out)) / jnp.sqrt(fan_in),
            "bias": jnp.zeros(fan_out),
        }
    return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
    for name in LAYERS[:-1]:
        x = jnp.tanh(x @ params[name]["kernel"] + params[name]["bias"])
    return x @ params["output"]["kernel"] + params["output"]["bias"]


def muon_or_adamw(params: dict) -> dict:
    """The label of each leaf: Muon for hidden kernels, AdamW for the rest."""
    return {name: {"kernel": "muon" if name.startswith("hidden") else "adamw", "bias": "adamw"} for name in params}


def make_optimizer() -> optax.GradientTransformation:
    return optax.multi_transform(
        {
            "muon": fo.muon(lr=0.02, weight_decay=0.01, adjust_lr_fn="match_rms_adamw"),
            "adamw": fo.adamw(lr=3e-3, weight_decay=0.01),
        },
        muon_or_adamw,
    )


def train(steps: int = 300, batch: int = 128, seed: int = 0) -> list[float]:
    """Fit the student MLP to a teacher's outputs; returns the loss every 50 steps and the last."""
    teacher_key, student_key, data_key = jax.random.split(jax.random.key(seed), 3)
    teacher = init_mlp(teacher_key)
    params = init_mlp(student_key)
    tx = make_optimizer()
    state = tx.init(params)

    def loss_fn(params, x):
        return jnp.mean((mlp(params, x) - mlp(teacher, x)) ** 2)

    @jax.jit
    def step(params, state, key):
        x = jax.random.normal(key, (batch, 8))
        loss, grads = jax.value_and_grad(loss_fn)(params, x)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for index, key in enumerate(jax.random.split(data_key, steps)):
        params, state, loss = step(params, state, key)
        if index % 50 == 0 or index == steps - 1:
            losses.append(float(loss))
            print(f"step {index:4d}  loss {float(loss):.5f}")
    return losses


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    train(args.steps)


if __name__ == "__main__":
    main()
