"""The seed CNN's convolutions one by one: XLA:CPU (as jitted) against torch's CPU kernels.

    python benchmarks/conv_ops.py --batch 64 --single-core
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \\
        python benchmarks/conv_ops.py --batch 256 --single-core          # Eigen, the main job's setting

Ops, at the step's shapes (NHWC on the JAX side, NCHW on torch's, float32):

  conv1 forward / weight grad     1 → 32 channels, 28×28, 3×3, padding 1
  conv2 forward / input grad      32 → 64 channels, 14×14
  conv2 input + weight grads      both of conv2's gradients in one call (``jax.vjp``; torch's
                                  ``aten.convolution_backward`` with both outputs)

plus alternative forms on the JAX side: the weight gradients as one im2col matmul and as nine
shifted matmuls, the forward passes as im2col matmuls (checked against the convolution before
timing). torch's conv1 backward is timed without the input gradient, as in the training step.
Interleaved rounds (``_harness.measure``); median (min) ms per call.
"""

from __future__ import annotations

import argparse

import _harness
import numpy as np

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--single-core", action="store_true", help="pin to one core and time CPU time")
    args = parser.parse_args(argv)
    if args.single_core:
        _harness.pin_to_one_core()
    import jax
    import jax.numpy as jnp
    import torch

    platform_name = _harness.configure("cpu")
    info = _harness.environment(platform_name)

    def conv(a, k):
        return jax.lax.conv_general_dilated(a, k, (1, 1), "SAME", dimension_numbers=DIMENSIONS)

    def shifted(a):
        h, w = a.shape[1:3]
        padded = jnp.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]

    def im2col(a):
        return jnp.concatenate(shifted(a), axis=-1).reshape(-1, 9 * a.shape[-1])

    def forward_im2col(a, k):
        return (im2col(a) @ k.reshape(-1, k.shape[-1])).reshape(a.shape[:3] + (k.shape[-1],))

    def weight_grad_im2col(a, g):
        return (im2col(a).T @ g.reshape(-1, g.shape[-1])).reshape(3, 3, a.shape[-1], g.shape[-1])

    def weight_grad_shifted(a, g):
        flat = g.reshape(-1, g.shape[-1])
        taps = [tap.reshape(-1, a.shape[-1]).T @ flat for tap in shifted(a)]
        return jnp.stack(taps).reshape(3, 3, a.shape[-1], g.shape[-1])

    rng = np.random.default_rng(0)
    ops, checks = {}, []
    for name, (size, c_in, c_out) in {"conv1": (28, 1, 32), "conv2": (14, 32, 64)}.items():
        a = rng.standard_normal((args.batch, size, size, c_in), dtype=np.float32)
        k = rng.standard_normal((3, 3, c_in, c_out), dtype=np.float32)
        g = rng.standard_normal((args.batch, size, size, c_out), dtype=np.float32)
        ja, jk, jg = jnp.asarray(a), jnp.asarray(k), jnp.asarray(g)
        forward = jax.jit(conv)
        weight_grad = jax.jit(lambda a, k, g: jax.vjp(lambda kk: conv(a, kk), k)[1](g)[0])
        ops[f"{name} forward"] = (forward, (ja, jk))
        ops[f"{name} forward, im2col matmul"] = (jax.jit(forward_im2col), (ja, jk))
        ops[f"{name} weight grad"] = (weight_grad, (ja, jk, jg))
        ops[f"{name} weight grad, im2col matmul"] = (jax.jit(lambda a, k, g: weight_grad_im2col(a, g)), (ja, jk, jg))
        ops[f"{name} weight grad, 9 shifted matmuls"] = (
            jax.jit(lambda a, k, g: weight_grad_shifted(a, g)),
            (ja, jk, jg),
        )
        checks += [(f"{name} forward", f"{name} forward, im2col matmul")]
        checks += [
            (f"{name} weight grad", f"{name} weight grad, {form}") for form in ("im2col matmul", "9 shifted matmuls")
        ]
        if name == "conv2":
            ops["conv2 input grad"] = (
                jax.jit(lambda a, k, g: jax.vjp(lambda aa: conv(aa, k), a)[1](g)[0]),
                (ja, jk, jg),
            )
            ops["conv2 input + weight grads"] = (jax.jit(lambda a, k, g: jax.vjp(conv, a, k)[1](g)), (ja, jk, jg))
        ta = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
        tk = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        tg = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 3, 1, 2)))
        mask = [name == "conv2", True, False]
        ops[f"torch {name} forward"] = (lambda ta=ta, tk=tk: torch.nn.functional.conv2d(ta, tk, padding=1), ())
        ops[f"torch {name} backward ({'input + weight' if mask[0] else 'weight'} grads)"] = (
            lambda ta=ta, tk=tk, tg=tg, m=mask: torch.ops.aten.convolution_backward(
                tg, ta, tk, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, m
            ),
            (),
        )
    for reference, other in checks:
        (f, f_args), (h, h_args) = ops[reference], ops[other]
        scale = float(np.max(np.abs(np.asarray(f(*f_args)))))
        np.testing.assert_allclose(np.asarray(h(*h_args)), np.asarray(f(*f_args)), atol=1e-4 * scale, err_msg=other)
    runners = {name: (lambda f=f, a=a: jax.block_until_ready(f(*a))) for name, (f, a) in ops.items()}
    times = _harness.measure(runners, args.repeats)
    print("; ".join(f"{key}: {value}" for key, value in info.items()))
    print(f"batch {args.batch}; load average at end {_harness.load_now()}")
    for name, t in times.items():
        print(f"{name:<40}{t['median'] * 1e3:>9.2f} ({t['min'] * 1e3:.2f}) ms")


if __name__ == "__main__":
    main()
