"""Hand a torch training run over to JAX mid-training, and back, checking every step.

A small torch MLP (Linear → LayerNorm → tanh → Linear) trains with ``AdamW`` and a cosine lr
schedule. After ``--torch-steps`` steps, its weights become flax variables
(:func:`functional_optreg.module_to_flax`), its optimizer and scheduler become an optax transform
and state (:func:`functional_optreg.from_torch`, with the moments transposed along with the dense
kernels), and training continues under ``jax.jit`` — while the original torch run continues too,
so each step's agreement can be printed. Then the JAX state goes back to torch
(:func:`functional_optreg.to_torch_state_dict`, :func:`functional_optreg.flax_to_module_state_dict`)
and a fresh torch model, optimizer and scheduler continue from it.

Everything runs in float64, where the parity contract asks for a relative difference of at most
1e-12 at every step. Usage::

    python examples/port_from_torch.py
    python examples/port_from_torch.py --torch-steps 30 --jax-steps 30 --back-steps 10

Exit status 1 if any step disagrees beyond 1e-12.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

import functional_optreg as fo  # noqa: E402

TOLERANCE = 1e-12


class TorchMLP(torch.nn.Module):
    def __init__(self, features: int, hidden: int, outputs: int):
        super().__init__()
        self.fc1 = torch.nn.Linear(features, hidden)
        self.norm = torch.nn.LayerNorm(hidden)
        self.fc2 = torch.nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.fc2(torch.tanh(self.norm(self.fc1(x))))


class FlaxMLP(nn.Module):
    """The same network; submodule names match torch's so the default name mapping applies."""

    hidden: int
    outputs: int

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.hidden, name="fc1")(x)
        x = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name="norm")(x)
        return nn.Dense(self.outputs, name="fc2")(jnp.tanh(x))


def make_data(steps: int, batch: int, features: int, outputs: int, seed: int = 0):
    """A fixed regression problem and one minibatch per step."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(features, outputs))
    batches = []
    for _ in range(steps):
        x = rng.normal(size=(batch, features))
        batches.append((x, np.sin(x @ teacher) + 0.1 * rng.normal(size=(batch, outputs))))
    return batches


def make_torch(model: TorchMLP, total_steps: int):
    optimizer = torch.optim.AdamW(model.named_parameters(), lr=0.02, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return optimizer, scheduler


def torch_step(model, optimizer, scheduler, batch) -> float:
    x, y = (torch.as_tensor(a) for a in batch)
    optimizer.zero_grad()
    loss = torch.mean((model(x) - y) ** 2)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def relative_difference(ours, theirs) -> float:
    """Largest per-leaf ``max|ours − theirs| / max|theirs|``."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        a, b = np.asarray(a), np.asarray(b)
        worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)))
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch-steps", type=int, default=20, help="steps in torch before the hand-over")
    parser.add_argument("--jax-steps", type=int, default=20, help="steps in JAX (next to torch)")
    parser.add_argument("--back-steps", type=int, default=10, help="steps in torch after the hand-back")
    args = parser.parse_args(argv)
    total = args.torch_steps + args.jax_steps + args.back_steps
    features, hidden, outputs = 5, 16, 2
    batches = make_data(total, batch=8, features=features, outputs=outputs)

    torch.manual_seed(0)
    model = TorchMLP(features, hidden, outputs).double()
    optimizer, scheduler = make_torch(model, total)
    print(f"torch: {args.torch_steps} steps of AdamW + CosineAnnealingLR")
    for step in range(args.torch_steps):
        loss = torch_step(model, optimizer, scheduler, batches[step])
    print(f"  loss after step {args.torch_steps}: {loss:.6f}")

    # The hand-over: weights to flax layout; optimizer state and schedule follow them.
    variables, mapping = fo.module_to_flax(model)
    tx, state = fo.from_torch(optimizer, scheduler, params=(variables["params"], mapping))
    params = jax.tree.map(jnp.asarray, variables["params"])
    flax_model = FlaxMLP(hidden, outputs)

    @jax.jit
    def jax_step(params, state, x, y):
        def loss_fn(p):
            return jnp.mean((flax_model.apply({"params": p}, x) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    print(f"JAX continues ({args.jax_steps} steps) next to the torch run:")
    print("  step   loss (torch)      loss (JAX)        max rel. param diff")
    worst = 0.0
    for step in range(args.torch_steps, args.torch_steps + args.jax_steps):
        x, y = batches[step]
        params, state, jax_loss = jax_step(params, state, jnp.asarray(x), jnp.asarray(y))
        torch_loss = torch_step(model, optimizer, scheduler, batches[step])
        difference = relative_difference(params, fo.module_to_flax(model)[0]["params"])
        worst = max(worst, difference)
        print(f"  {step + 1:4d}   {torch_loss:.12f}    {float(jax_loss):.12f}    {difference:.2e}")

    # The hand-back: a fresh torch model, optimizer and scheduler continue from the JAX state.
    resumed = TorchMLP(features, hidden, outputs).double()
    resumed.load_state_dict(fo.flax_to_module_state_dict({"params": params}, resumed))
    resumed_optimizer, resumed_scheduler = make_torch(resumed, total)
    resumed_scheduler.load_state_dict(fo.to_torch_scheduler_state_dict(tx, state))
    resumed_optimizer.load_state_dict(fo.to_torch_state_dict(tx, state))
    print(f"back to torch ({args.back_steps} steps), next to the original run:")
    print("  step   loss (original)   loss (resumed)    max rel. param diff")
    for step in range(args.torch_steps + args.jax_steps, total):
        original_loss = torch_step(model, optimizer, scheduler, batches[step])
        resumed_loss = torch_step(resumed, resumed_optimizer, resumed_scheduler, batches[step])
        difference = relative_difference(
            [p.detach().numpy() for p in resumed.parameters()], [p.detach().numpy() for p in model.parameters()]
        )
        worst = max(worst, difference)
        print(f"  {step + 1:4d}   {original_loss:.12f}    {resumed_loss:.12f}    {difference:.2e}")

    verdict = "PASS" if worst <= TOLERANCE else "FAIL"
    print(f"largest relative difference over all steps: {worst:.2e} (contract: {TOLERANCE:g}) -> {verdict}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
