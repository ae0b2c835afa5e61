"""The seed CNN's full training step (forward, backward, update): JAX jit vs torch eager.

    python benchmarks/train_step.py                            # CPU, batch 64 and 256, Adam and SGD(momentum)
    python benchmarks/train_step.py --batches 256 --repeats 21 --optimizers adam
    python benchmarks/train_step.py --platform gpu --batches 256 1024 4096   # what benchmarks/gpu.sh runs

The model and data come from ``examples/seed_cnn`` (``model_flax.train_step`` on the JAX side:
``value_and_grad`` of the NLL loss, ``tx.update``, ``optax.apply_updates``, in one ``jax.jit``;
``SeedCNNTorch`` with the same initial weights, converted by ``weights.load_into_torch``, on the
torch side: ``zero_grad``, forward, ``backward``, ``optimizer.step``, eagerly). Each step sees the
same fixed batch of scikit-learn digits (tiled when the batch is larger than the training set), so
data loading is not timed. Implementations:

  fo         ``model_flax.train_step`` with ``fo.adam`` / ``fo.sgd``
  grad       the same jitted loss and gradient without the update (``fo`` minus ``grad`` is the
             optimizer's share of the step)
  grad flax  ``grad`` with ``flax.linen.max_pool`` in place of the model's pooling (the model
             before issue 17: XLA's ``select-and-scatter`` gradient)
  floor      the step's five convolutions alone, jitted together: conv1 and conv2 forward, conv1's
             weight gradient, conv2's input and weight gradients, at the step's shapes (everything
             else, pooling included, free). ``fo/floor`` is what the rest of the step costs.
  floor+dense  the same plus the dense layers' six matmuls: all of the step's multiply-adds, with
             the element-wise work (bias, ReLU, pooling, loss, update) free
  optax      the same step with optax's recipe for the same algorithm
  torch      torch eager with the optimizer's default implementation on this device (on the CPU:
             the per-tensor for-loop), and ``torch fused`` with ``fused=True``

XLA and host memory: like ``examples/train_cnn.py``, the run first applies the main job's XLA:CPU
setting (``examples/seed_cnn/xla_cpu.py``: convolutions on Eigen, not YNNPACK; ``--plain-xla``
keeps XLA's defaults) and its host-memory setting (``examples/seed_cnn/allocator.py``: glibc's
malloc keeps freed memory and JAX dispatches CPU computations synchronously, so large batches take
no page faults per step; ``--default-malloc`` keeps the defaults). The malloc part is
process-wide, so torch, timed in the same process, runs with it too and gains from it as well. The
``XLA_FLAGS`` and ``host memory`` fields of the output say which ran.

Timing: interleaved rounds in one process, as in ``update_step.py`` (``benchmarks/_harness.py``).
Before timing, every implementation takes two steps from the same weights and the losses of the
second step (after one update) are compared (``agree``: within 1e-4 relative).
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import _harness
import numpy as np

jax = jnp = optax = torch = fo = None


def optimizer_pairs():
    return {
        "adam": (lambda: fo.adam(1e-3), lambda: optax.adam(1e-3), ("Adam", dict(lr=1e-3))),
        "sgd_momentum": (
            lambda: fo.sgd(1e-2, momentum=0.9),
            lambda: optax.sgd(1e-2, momentum=0.9),
            ("SGD", dict(lr=1e-2, momentum=0.9)),
        ),
    }


def batch(size: int):
    """A fixed batch of ``size`` digits images ``(N, 28, 28, 1)`` and labels (random if no scikit-learn)."""
    try:
        from examples.seed_cnn.data import load_digits

        data = load_digits()
        images, labels = data.train_images, data.train_labels
    except ImportError:
        rng = np.random.default_rng(0)
        images = rng.random((1024, 28, 28, 1), dtype=np.float32)
        labels = rng.integers(0, 10, 1024).astype(np.int32)
    reps = -(-size // len(labels))
    return np.tile(images, (reps, 1, 1, 1))[:size].astype(np.float32), np.tile(labels, reps)[:size]


def jax_impl(tx, params0, images, labels, steps: list):
    from examples.seed_cnn import model_flax

    params = jax.tree.map(jnp.array, params0)
    state = tx.init(params)
    x = jnp.asarray(images)
    y = jnp.asarray(labels)
    started = time.perf_counter()
    loss, params, state = model_flax.train_step(tx, params, state, x, y)
    loss.block_until_ready()
    compile_s = time.perf_counter() - started
    box = {"params": jax.tree.map(jnp.array, params0), "state": tx.init(params0), "loss": loss}

    def run():
        params, state = box["params"], box["state"]
        for _ in range(steps[0]):
            loss, params, state = model_flax.train_step(tx, params, state, x, y)
        box.update(params=params, state=state, loss=loss)
        loss.block_until_ready()

    return run, (lambda: float(box["loss"])), compile_s, (lambda: model_flax.train_step._cache_size())


def grad_impl(params0, images, labels, steps: list):
    from examples.seed_cnn import model_flax

    value_and_grad = jax.jit(jax.value_and_grad(model_flax.nll_loss))
    params = jax.tree.map(jnp.array, params0)
    x, y = jnp.asarray(images), jnp.asarray(labels)

    def run():
        for _ in range(steps[0]):
            loss, grads = value_and_grad(params, x, y)
        jax.block_until_ready(grads)

    return run


def floor_impl(params0, images, steps: list, dense: bool = False):
    """The step's convolutions alone (forward, input and weight gradients), one jitted call.

    ``dense=True`` adds the dense layers' matmuls (forward, input and weight gradients): the
    step's floating-point work without the element-wise rest.
    """

    def conv(inputs, kernel):
        return jax.lax.conv_general_dilated(inputs, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def matmul(inputs, kernel):
        return inputs @ kernel

    @jax.jit
    def floor(x, k1, h1, k2, g1, g2, f1, w1, e1, f2, w2, e2):
        (dk1,) = jax.vjp(lambda k: conv(x, k), k1)[1](g1)
        dh1, dk2 = jax.vjp(conv, h1, k2)[1](g2)
        out = [conv(x, k1), conv(h1, k2), dk1, dh1, dk2]
        if dense:
            for inputs, kernel, cotangent in ((f1, w1, e1), (f2, w2, e2)):
                out += [matmul(inputs, kernel), *jax.vjp(matmul, inputs, kernel)[1](cotangent)]
        return out

    rng = np.random.default_rng(0)
    n = len(images)
    x = jnp.asarray(images)
    k1, k2, w1, w2 = (jnp.asarray(params0[layer]["kernel"]) for layer in ("conv1", "conv2", "fc1", "fc2"))
    shapes = ((n, 14, 14, 32), (n, 28, 28, 32), (n, 14, 14, 64), (n, 3136), (n, 128), (n, 128), (n, 10))
    h1, g1, g2, f1, e1, f2, e2 = (jnp.asarray(rng.random(shape, dtype=np.float32)) for shape in shapes)
    args = (x, k1, h1, k2, g1, g2, f1, w1, e1, f2, w2, e2)

    def run():
        for _ in range(steps[0]):
            out = floor(*args)
        jax.block_until_ready(out)

    return run


def flax_pool_grad_impl(params0, images, labels, steps: list):
    """``grad`` with ``flax.linen.max_pool``: the seed CNN's pooling before issue 17."""
    from profile_step import flax_pool_loss

    value_and_grad = jax.jit(jax.value_and_grad(flax_pool_loss))
    params = jax.tree.map(jnp.array, params0)
    x, y = jnp.asarray(images), jnp.asarray(labels)

    def run():
        for _ in range(steps[0]):
            loss, grads = value_and_grad(params, x, y)
        jax.block_until_ready(grads)

    return run


def torch_impl(class_name, kwargs, params0, images, labels, platform_name, steps: list, fused: bool):
    from examples.seed_cnn import model_torch, weights

    device = _harness.torch_device(platform_name)
    sync = _harness.torch_sync(platform_name)
    model = weights.load_into_torch(model_torch.SeedCNNTorch(), jax.tree.map(np.asarray, params0)).to(device)
    x = model_torch.to_nchw(images, torch.float32).to(device)
    y = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
    extra = {"fused": True} if fused else {}
    try:
        optimizer = getattr(torch.optim, class_name)(model.parameters(), **kwargs, **extra)
    except (RuntimeError, ValueError):
        return None
    box = {"loss": None}

    def run():
        for _ in range(steps[0]):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.nll_loss(model(x), y)
            loss.backward()
            optimizer.step()
        box["loss"] = loss.detach()
        sync()

    return run, (lambda: float(box["loss"]))


def run_case(name, pair, batch_size, args, platform_name):
    from examples.seed_cnn import model_flax

    ours, reference, (class_name, kwargs) = pair
    params0 = model_flax.init_params(0)
    images, labels = batch(batch_size)
    counts: dict[str, list[int]] = {}  # steps per call of each runner: 1 until calibrated below

    def count(key):
        counts[key] = [1]
        return counts[key]

    runners, losses, compile_s = {}, {}, {}
    run, loss, compile_s["fo"], cache_size = jax_impl(ours(), params0, images, labels, count("fo"))
    runners["fo"], losses["fo"] = run, loss
    run, loss, compile_s["optax"], _ = jax_impl(reference(), params0, images, labels, count("optax"))
    runners["optax"], losses["optax"] = run, loss
    runners["grad"] = grad_impl(params0, images, labels, count("grad"))
    runners["grad_flax"] = flax_pool_grad_impl(params0, images, labels, count("grad_flax"))
    runners["floor"] = floor_impl(params0, images, count("floor"))
    runners["floor_dense"] = floor_impl(params0, images, count("floor_dense"), dense=True)
    for label, fused in (("torch", False), ("torch_fused", True)):
        made = torch_impl(class_name, kwargs, params0, images, labels, platform_name, count(label), fused)
        if made is not None:
            runners[label], losses[label] = made
    # Two steps each from the same weights: the second step's loss (after one update) must agree.
    for run in runners.values():
        run()
        run()
    final = {key: get() for key, get in losses.items()}
    agree = all(abs(value - final["torch"]) <= 1e-4 * abs(final["torch"]) for value in final.values())
    for key, run in runners.items():
        counts[key][0] = _harness.steps_for(run, args.sample_ms / 1e3)
    entries_before = cache_size()
    times = _harness.measure(runners, args.repeats, steps={key: c[0] for key, c in counts.items()})
    update_share = {stat: 1 - times["grad"][stat] / times["fo"][stat] for stat in ("median", "min")}
    row = {
        "optimizer": name,
        "batch": batch_size,
        "steps_per_sample": {key: c[0] for key, c in counts.items()},
        "ms": {key: {stat: value * 1e3 for stat, value in t.items()} for key, t in times.items()},
        "compile_s": compile_s,
        "second_step_loss": final,
        "agree": agree,
        "update_share": update_share,
        "load": _harness.load_now(),
    }
    # train_step is one jitted function shared by every transform (tx is static): its cache must
    # not grow while the already-compiled steps run.
    row["recompiles"] = cache_size() - entries_before
    row["ratios"] = {
        stat: {
            "fo/torch": row["ms"]["fo"][stat] / row["ms"]["torch"][stat],
            "fo/torch_fused": row["ms"]["fo"][stat] / row["ms"]["torch_fused"][stat]
            if "torch_fused" in row["ms"]
            else float("nan"),
            "fo/optax": row["ms"]["fo"][stat] / row["ms"]["optax"][stat],
            "fo/floor": row["ms"]["fo"][stat] / row["ms"]["floor"][stat],
            "fo/floor+dense": row["ms"]["fo"][stat] / row["ms"]["floor_dense"][stat],
            "grad flax/grad": row["ms"]["grad_flax"][stat] / row["ms"]["grad"][stat],
        }
        for stat in ("median", "min")
    }
    return row


COLUMNS = (
    f"{'optimizer':<13}{'batch':>6}{'fo ms':>9}{'optax ms':>9}{'torch ms':>9}{'t.fused':>9}{'grad ms':>9}"
    f"{'g.flax':>9}{'floor ms':>9}{'fl+dense':>9}{'fo/torch':>9}{'fo/fused':>9}{'fo/optax':>9}{'fo/floor':>9}"
    f"{'fo/fl+d':>9}{'compile s':>10}"
    f"{'agree':>6}{'recomp':>7}"
)


def format_row(row):
    ms = {key: t["median"] for key, t in row["ms"].items()}
    r = row["ratios"]["median"]
    fused = f"{ms['torch_fused']:>9.2f}" if "torch_fused" in ms else f"{'-':>9}"
    return (
        f"{row['optimizer']:<13}{row['batch']:>6}{ms['fo']:>9.2f}{ms['optax']:>9.2f}{ms['torch']:>9.2f}{fused}"
        f"{ms['grad']:>9.2f}{ms['grad_flax']:>9.2f}{ms['floor']:>9.2f}{ms['floor_dense']:>9.2f}"
        f"{r['fo/torch']:>9.2f}{r['fo/torch_fused']:>9.2f}{r['fo/optax']:>9.2f}{r['fo/floor']:>9.2f}"
        f"{r['fo/floor+dense']:>9.2f}"
        f"{row['compile_s']['fo']:>10.1f}{'yes' if row['agree'] else 'NO':>6}{row['recompiles']:>7}"
    )


MARKDOWN_NOTE = (
    "Median ms per training step over interleaved rounds (minimum in parentheses); ratios likewise. fo/optax: "
    "model_flax.train_step (jitted) with fo.<name> / optax's recipe; torch: eager, default implementation "
    "(CPU: per-tensor loop) and fused=True; JAX grad only: the same jitted loss and gradient without the "
    "update; grad, flax pool: the same with flax.linen.max_pool (the model before issue 17); conv floor: the "
    "step's five convolutions alone (forward, input and weight gradients); conv + dense floor: the same plus "
    "the dense layers' six matmuls."
)


def markdown_rows(rows):
    header = [
        "optimizer",
        "batch",
        "fo ms",
        "optax ms",
        "torch eager ms",
        "torch fused ms",
        "JAX grad only ms",
        "grad, flax pool ms",
        "conv floor ms",
        "conv + dense floor ms",
        "fo/torch",
        "fo/torch fused",
        "fo/optax",
        "fo/floor",
        "fo/(conv + dense floor)",
        "compile s",
        "recompiles",
        "agree",
    ]
    out = []
    for row in rows:
        ms = row["ms"]

        def cell(key):
            return f"{ms[key]['median']:.2f} ({ms[key]['min']:.2f})" if key in ms else "–"

        def ratio(key):
            return f"{row['ratios']['median'][key]:.2f} ({row['ratios']['min'][key]:.2f})"

        out.append(
            [
                row["optimizer"],
                str(row["batch"]),
                cell("fo"),
                cell("optax"),
                cell("torch"),
                cell("torch_fused"),
                cell("grad"),
                cell("grad_flax"),
                cell("floor"),
                cell("floor_dense"),
                ratio("fo/torch"),
                ratio("fo/torch_fused"),
                ratio("fo/optax"),
                ratio("fo/floor"),
                ratio("fo/floor+dense"),
                f"{row['compile_s']['fo']:.1f}",
                str(row["recompiles"]),
                "yes" if row["agree"] else "NO",
            ]
        )
    return header, out


def main(argv=None):
    global jax, jnp, optax, torch, fo
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--platform", choices=["cpu", "gpu"], default=None, help="default: JAX's default backend")
    parser.add_argument("--optimizers", nargs="+", default=None)
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sample-ms", type=float, default=50.0)
    parser.add_argument("--single-core", action="store_true", help="pin to one core and time CPU time")
    _harness.add_main_job_options(parser)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    if args.single_core:
        _harness.pin_to_one_core()
    host_memory = _harness.apply_main_job_settings(args)

    import jax as _jax
    import jax.numpy as _jnp
    import optax as _optax
    import torch as _torch

    jax, jnp, optax, torch = _jax, _jnp, _optax, _torch
    platform_name = _harness.configure(args.platform)
    import functional_optreg as _fo

    fo = _fo
    pairs = optimizer_pairs()
    info = _harness.environment(platform_name)
    info["host memory"] = host_memory
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    print(COLUMNS)
    rows = []
    try:
        for name in args.optimizers or list(pairs):
            for batch_size in args.batches:
                row = run_case(name, pairs[name], batch_size, args, platform_name)
                rows.append(row)
                print(format_row(row), flush=True)
                gc.collect()
    except KeyboardInterrupt:  # gpu.sh's time limit: keep the rows measured so far
        info["interrupted"] = f"after {len(rows)} cases"
        print(f"interrupted after {len(rows)} cases", flush=True)
    info["load average (1, 5, 15 min) at end"] = _harness.load_now()
    print(f"load average at end: {info['load average (1, 5, 15 min) at end']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"environment": info, "rows": rows}, handle, indent=1)
    if args.markdown:
        header, cells = markdown_rows(rows)
        notes = [MARKDOWN_NOTE]
        _harness.append(
            args.markdown,
            _harness.markdown_section(f"Seed CNN training step, {info['device']}", info, header, cells, notes),
        )


if __name__ == "__main__":
    main()
