"""Where the time goes with many small parameter arrays, and what closes the gap to torch's fused Adam.

    python benchmarks/many_leaves.py                       # 2M parameters in 400 arrays, Adam
    python benchmarks/many_leaves.py --single-core         # CPU time on one pinned core (load-robust)
    python benchmarks/many_leaves.py --params 2e6 --leaves 400 --scan 10

Variants, all the same Adam step on the same 2M parameters (``update_step.py``'s leaf shapes):

  per-leaf           ``fo.adam``, one jitted donated step per call (what ``update_step.py`` times)
  optax per-leaf     ``optax.adam``, likewise
  dispatch only      a jitted step with the same arrays in and out that does no work: the cost of
                     passing 400 params, 400 grads and 801 state arrays through ``jit`` and back
  optax.flatten      ``optax.flatten(fo.adam)``: 3 state arrays instead of 801, one kernel per
                     state field; the state layout changes (flat vectors), so the torch bridge's
                     per-parameter state mapping does not apply to it
  N steps per call   ``fo.adam`` on the 400 arrays, ``--scan`` steps inside one jitted
                     ``lax.scan`` (as a training loop that scans over micro-batches would): the
                     per-call dispatch is paid once per N steps
  flat params        ``fo.adam`` on the same parameters kept as one flat array (e.g. with
                     ``jax.flatten_util.ravel_pytree`` around the model's apply function)
  torch fused        ``torch.optim.Adam(fused=True)`` on the 400 tensors (the target), and on one
                     flat tensor; ``torch foreach`` on the 400 tensors

Printed: median (min) milliseconds per step and the ratio to torch fused on the 400 tensors.
"""

from __future__ import annotations

import argparse
import json
import math

import _harness
import update_step as us


def scan_impl(tx, shapes, device, steps_per_call: int, calls: int):
    jax, jnp, optax = us.jax, us.jnp, us.optax
    params = [jax.device_put(jnp.full(shape, 0.5, jnp.float32), device) for shape in shapes]
    grads = [jax.device_put(jnp.full(shape, 0.01, jnp.float32), device) for shape in shapes]
    state = jax.jit(tx.init)(params)

    def many_steps(params, state, grads):
        def body(carry, _):
            params, state = carry
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(body, (params, state), None, length=steps_per_call)[0]

    jitted = jax.jit(many_steps, donate_argnums=(0, 1))
    box = [params, state]

    def run():
        params, state = box
        for _ in range(calls):
            params, state = jitted(params, state, grads)
        box[0], box[1] = params, state
        params[0].block_until_ready()

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--platform", choices=["cpu", "gpu"], default=None)
    parser.add_argument("--params", type=float, default=2e6)
    parser.add_argument("--leaves", type=int, default=400)
    parser.add_argument("--scan", type=int, default=10, help="steps per call for the scanned variant")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--single-core", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    platform_name = us.setup(args.platform, args.single_core)
    jax, jnp, optax, fo = us.jax, us.jnp, us.optax, us.fo
    device = jax.devices()[0]
    shapes = us.leaf_shapes(int(args.params), args.leaves)
    total = sum(math.prod(shape) for shape in shapes)
    steps = args.scan  # every variant runs this many steps per sample

    def no_work(tx):
        def update(grads, state, params=None):
            return jax.tree.map(lambda g: jnp.zeros((), g.dtype), grads), state

        return optax.GradientTransformation(tx.init, update)

    runners = {
        "per-leaf": us.jax_impl(fo.adam(1e-3), shapes, device, steps).run,
        "optax per-leaf": us.jax_impl(optax.adam(1e-3), shapes, device, steps).run,
        "dispatch only": us.jax_impl(no_work(fo.adam(1e-3)), shapes, device, steps).run,
        "optax.flatten": us.jax_impl(optax.flatten(fo.adam(1e-3)), shapes, device, steps).run,
        f"{args.scan} steps per call": scan_impl(fo.adam(1e-3), shapes, device, args.scan, 1),
        "flat params": us.jax_impl(fo.adam(1e-3), [(total,)], device, steps).run,
    }
    for label, leaf_shapes, mode in (
        ("torch fused", shapes, "fused"),
        ("torch foreach", shapes, "foreach"),
        ("torch fused, flat tensor", [(total,)], "fused"),
    ):
        made = us.torch_impl("Adam", dict(lr=1e-3), leaf_shapes, mode, platform_name, steps)
        if made is not None:
            runners[label] = made[0]
    info = _harness.environment(platform_name)
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    times = _harness.measure(runners, args.repeats, steps=steps)
    info["load average (1, 5, 15 min) at end"] = _harness.load_now()
    target = times["torch fused"]
    rows = []
    print(f"Adam, {total / 1e6:.1f}M parameters in {args.leaves} arrays; ms per step, median (min); / torch fused")
    for name, t in times.items():
        ratio = (t["median"] / target["median"], t["min"] / target["min"])
        rows.append([name, f"{t['median'] * 1e3:.2f} ({t['min'] * 1e3:.2f})", f"{ratio[0]:.2f} ({ratio[1]:.2f})"])
        print(f"{name:<26}{rows[-1][1]:>18}{rows[-1][2]:>14}")
    print(f"load average at end: {info['load average (1, 5, 15 min) at end']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"environment": info, "params": total, "leaves": args.leaves, "times": times}, handle, indent=1)
    if args.markdown:
        _harness.append(
            args.markdown,
            _harness.markdown_section(
                f"Many small arrays: Adam, {total / 1e6:.1f}M parameters in {args.leaves} arrays, {info['device']}",
                info,
                ["variant", "ms per step, median (min)", f"/ torch fused ({args.leaves} tensors)"],
                rows,
                [],
            ),
        )


if __name__ == "__main__":
    main()
