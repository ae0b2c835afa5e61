"""The seed CNN example: idx files, digits data, flax ⇄ torch model agreement, a short training run."""

from __future__ import annotations

import ctypes
import gzip
import os
import struct
import subprocess
import sys
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from bounds import gamma32

import functional_optreg as fo
from examples import train_cnn
from examples.seed_cnn import allocator, convolution, model_flax, model_torch, pooling, side_by_side, weights, xla_cpu
from examples.seed_cnn import data as data_lib
from functional_optreg import verify
from parity import forward_bounds, training_floor


@pytest.fixture(scope="module")
def digits():
    return data_lib.load_digits()


# --- idx files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 5, 4)) * 50).astype(dtype)
    path = tmp_path / f"array.idx{suffix}"
    data_lib.write_idx(path, array)
    back = data_lib.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_read_idx_of_hand_written_bytes(tmp_path):
    """A file built byte by byte from the format's description, independent of write_idx."""
    values = [[1, 2, 3], [250, 0, 7]]
    raw = bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + bytes(sum(values, []))
    (tmp_path / "plain").write_bytes(raw)
    np.testing.assert_array_equal(data_lib.read_idx(tmp_path / "plain"), np.array(values, np.uint8))
    raw16 = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + struct.pack(">hh", -2, 300)
    with gzip.open(tmp_path / "short.gz", "wb") as handle:
        handle.write(raw16)
    np.testing.assert_array_equal(data_lib.read_idx(tmp_path / "short.gz"), np.array([-2, 300], np.int16))


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad_magic").write_bytes(bytes([1, 0, 0x08, 1]) + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="not an idx file"):
        data_lib.read_idx(tmp_path / "bad_magic")
    (tmp_path / "short").write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match="needs 5 data bytes, the file holds 2"):
        data_lib.read_idx(tmp_path / "short")


def test_load_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=6, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=4, dtype=np.uint8),
    }
    for index, (key, stem) in enumerate(data_lib.MNIST_FILES.items()):
        data_lib.write_idx(tmp_path / (stem + (".gz" if index % 2 else "")), arrays[key])
    mnist = data_lib.load_mnist(tmp_path)
    assert mnist.train_images.shape == (6, 28, 28, 1) and mnist.test_images.shape == (4, 28, 28, 1)
    assert mnist.train_images.dtype == np.float32 and mnist.train_labels.dtype == np.int32
    # Two float32 roundings of a pixel p ≤ 255: the loader's p / 255 and this · 255 (no cancellation), so ≤ γ₂·p.
    np.testing.assert_allclose(mnist.train_images[..., 0] * 255, arrays["train_images"], rtol=gamma32(2), atol=0)
    np.testing.assert_array_equal(mnist.test_labels, arrays["test_labels"])
    (tmp_path / "train-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data_lib.load_mnist(tmp_path)


# --- digits ------------------------------------------------------------------------------------


def test_digits_shapes_and_ranges(digits):
    assert len(digits.train_labels) + len(digits.test_labels) == 1797
    assert len(digits.test_labels) == round(0.2 * 1797)
    for images, labels in ((digits.train_images, digits.train_labels), (digits.test_images, digits.test_labels)):
        assert images.shape == (len(labels), 28, 28, 1) and images.dtype == np.float32
        assert labels.dtype == np.int32 and set(np.unique(labels)) == set(range(10))
        assert images.min() >= 0.0 and images.max() <= 1.0
    assert digits.train_images.max() > 0.9
    again = data_lib.load_digits()
    np.testing.assert_array_equal(again.test_images, digits.test_images)


def _bilinear_weight_sums(size, new_size):
    """Per source pixel, the total weight bilinear resizing (half-pixel centres, each output's in-range weights
    normalized to sum to 1, as jax.image.resize) gives it over all outputs, in exact rational arithmetic."""
    sums = [Fraction(0)] * size
    for out in range(new_size):
        centre = (out + Fraction(1, 2)) * Fraction(size, new_size) - Fraction(1, 2)
        weights = [max(Fraction(0), 1 - abs(centre - source)) for source in range(size)]
        sums = [total + weight / sum(weights) for total, weight in zip(sums, weights)]
    return sums


def test_upsample_keeps_constant_images_and_the_mean():
    # Per axis each output has ≤ 2 nonzero weights, normalized by a sum and a quotient (their sum within γ₂ of 1); in
    # either contraction order the two axes add ≤ 4 roundings (a product of two weights or of a partial result and a
    # weight, then ≤ 3 additions; 0.25 scales exactly): ≤ 8 float32 roundings of non-negative terms.
    constant = np.full((2, 8, 8), 0.25)
    np.testing.assert_allclose(data_lib.upsample(constant), 0.25, rtol=gamma32(8), atol=0)
    # 8 → 28 keeps the mean exactly in exact arithmetic (every source pixel's weights sum to 28/8), so what is left is
    # rounding of non-negative terms: per output pixel the float32 cast and ≤ 9 (the 8 above and the product with a
    # pixel that is no power of two), then the float32 mean of 784 of them (γ₇₈₄ in any order), relative to the mean.
    assert _bilinear_weight_sums(8, 28) == [Fraction(28, 8)] * 8
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(1, 8, 8))
    assert abs(data_lib.upsample(image).mean() - image.mean()) <= (gamma32(10) + gamma32(784)) * image.mean()


def test_batches_cover_each_epoch_once():
    batches = list(data_lib.iterate_batches(10, 3, seed=0, epochs=2))
    assert [epoch for epoch, _ in batches] == [0, 0, 0, 1, 1, 1]
    first_epoch = np.concatenate([indices for epoch, indices in batches if epoch == 0])
    assert len(set(first_epoch.tolist())) == 9
    np.testing.assert_array_equal(data_lib.first_batches(10, 3, 0, 4), np.stack([b for _, b in batches[:4]]))
    with pytest.raises(ValueError, match="batch_size"):
        next(data_lib.iterate_batches(10, 11, seed=0))


# --- pooling -----------------------------------------------------------------------------------


def tied_inputs(shape, seed):
    """Small integers (most windows hold ties), plus NaNs and an all -inf window, in float64."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 2, size=shape).astype(np.float64)
    x[0, 0, 0, 0] = x[0, 2, 3, 1] = x[0, 3, 2, 1] = np.nan  # one window with one NaN, one with two
    x[-1, :2, :2, -1] = -np.inf
    return x


@pytest.mark.parametrize("shape", [(3, 8, 8, 5), (2, 7, 9, 3), (2, 28, 28, 4)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_max_pool_matches_torch_with_ties_and_nans(shape, memory_format):
    """Values and gradient bit for bit: ties go to the first maximal element, NaN windows to the last NaN."""
    x = tied_inputs(shape, seed=shape[1])
    cotangent = np.random.default_rng(1).standard_normal((shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
    n, h, w, c = shape
    windows = x[:, : h - h % 2, : w - w % 2].reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    top = np.max(windows, axis=(-2, -1), keepdims=True)
    assert np.mean(np.sum(windows == top, axis=(-2, -1)) > 1) > 0.3  # the tie rule is exercised
    with jax.enable_x64(True):
        values, vjp = jax.vjp(jax.jit(pooling.max_pool_2x2), jnp.asarray(x))
        (grad,) = vjp(jnp.asarray(cotangent))
    theirs = torch.tensor(x.transpose(0, 3, 1, 2)).contiguous(memory_format=memory_format).requires_grad_()
    pooled = torch.nn.functional.max_pool2d(theirs, 2)
    pooled.backward(torch.tensor(cotangent.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(np.asarray(values), pooled.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(np.asarray(grad), theirs.grad.numpy().transpose(0, 2, 3, 1))
    assert np.count_nonzero(np.asarray(grad)) == np.count_nonzero(cotangent)


def test_max_pool_tie_rule_by_hand():
    """One window per case, cotangent 1: the slot that receives it, in torch's row-major scan order."""
    cases = {(1, 1, 1, 1): 0, (0, 2, 2, 0): 1, (0, 0, 3, 3): 2, (np.nan, 1, np.nan, 0): 2, (-np.inf,) * 4: 0}
    for window, slot in cases.items():
        x = jnp.asarray(np.array(window, np.float32).reshape(1, 2, 2, 1))
        grad = jax.grad(lambda a: pooling.max_pool_2x2(a).sum())(x)
        assert grad.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(grad).ravel(), np.eye(4, dtype=np.float32)[slot], err_msg=str(window))


def test_max_pool_rejects_other_ranks():
    with pytest.raises(ValueError, match=r"NHWC input with H, W >= 2, got shape \(4, 4\)"):
        pooling.max_pool_2x2(jnp.zeros((4, 4)))


# --- conv1's forward pass ----------------------------------------------------------------------


def test_one_channel_convolution_matches_lax_in_float64():
    rng = np.random.default_rng(4)
    x, kernel = rng.standard_normal((3, 28, 28, 1)), rng.standard_normal((3, 3, 1, 32))
    cotangent = rng.standard_normal((3, 28, 28, 32))

    def lax_conv(a, k):
        return jax.lax.conv_general_dilated(a, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    with jax.enable_x64(True):
        ours, our_vjp = jax.vjp(jax.jit(convolution.conv3x3_one_channel), jnp.asarray(x), jnp.asarray(kernel))
        theirs, their_vjp = jax.vjp(lax_conv, jnp.asarray(x), jnp.asarray(kernel))
        # Nine products and a sum in two orders: each within γ₉·(|x| ⊛ |k|) of the exact value.
        bound = (
            2 * forward_bounds.gamma(9) * np.asarray(lax_conv(jnp.abs(jnp.asarray(x)), jnp.abs(jnp.asarray(kernel))))
        )
        assert np.all(np.abs(np.asarray(ours) - np.asarray(theirs)) <= bound)
        for mine, reference in zip(our_vjp(jnp.asarray(cotangent)), their_vjp(jnp.asarray(cotangent))):
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(reference))  # the same XLA convolution


def test_conv_general_dilated_takes_the_fast_path_only_where_it_applies(monkeypatch):
    calls = []
    monkeypatch.setattr(convolution, "conv3x3_one_channel", lambda x, k: calls.append(x.shape) or x)
    dims = ("NHWC", "HWIO", "NHWC")
    convolution.conv_general_dilated(
        jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 4)), (1, 1), "SAME", dimension_numbers=dims
    )
    assert calls == [(2, 8, 8, 1)]
    others = [
        ((2, 8, 8, 2), (3, 3, 2, 4), (1, 1), "SAME", dims),  # two input channels
        ((2, 8, 8, 1), (5, 5, 1, 4), (1, 1), "SAME", dims),  # 5×5
        ((2, 8, 8, 1), (3, 3, 1, 4), (2, 2), "SAME", dims),  # strided
        ((2, 8, 8, 1), (3, 3, 1, 4), (1, 1), "VALID", dims),
        ((2, 1, 8, 8), (4, 1, 3, 3), (1, 1), "SAME", None),  # NCHW
    ]
    for lhs, rhs, strides, padding, numbers in others:
        out = convolution.conv_general_dilated(
            jnp.ones(lhs), jnp.ones(rhs), strides, padding, dimension_numbers=numbers
        )
        assert out.ndim == 4
    assert calls == [(2, 8, 8, 1)]


# --- XLA:CPU setting ----------------------------------------------------------------------------


def test_prefer_eigen_convolutions_appends_once_and_respects_the_user():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert xla_cpu.prefer_eigen_convolutions(environ)
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {xla_cpu.FLAG}"
    assert not xla_cpu.prefer_eigen_convolutions(environ)
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
    assert (
        not xla_cpu.prefer_eigen_convolutions(mine) and mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
    )
    empty: dict[str, str] = {}
    assert xla_cpu.prefer_eigen_convolutions(empty) and empty["XLA_FLAGS"] == xla_cpu.FLAG


def _stdout_of_fresh_process(code: str, *args: str, env: dict[str, str]) -> str:
    """Run ``code`` with ``args`` in a fresh Python (process-wide settings start clean there); its stdout."""
    run = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_the_flag_moves_convolutions_off_ynnpack_and_keeps_the_dots():
    """In a fresh process (XLA reads the flag once): this jaxlib knows the flag and it does what it says.

    The convolution is conv2's (NHWC, 3×3, 32→64 channels), the one YNNPACK takes by default.
    """
    code = (
        "import jax, jax.numpy as jnp\n"
        "dims = ('NHWC', 'HWIO', 'NHWC')\n"
        "conv = jax.jit(lambda a, k: jax.lax.conv_general_dilated(a, k, (1, 1), 'SAME', dimension_numbers=dims))\n"
        "dot = jax.jit(lambda a, b: a @ b)\n"
        "c = conv.lower(jnp.ones((8, 14, 14, 32)), jnp.ones((3, 3, 32, 64))).compile().as_text()\n"
        "d = dot.lower(jnp.ones((64, 256)), jnp.ones((256, 64))).compile().as_text()\n"
        "print('__ynn_fusion' in c, '__ynn_fusion' in d)\n"
    )
    results = {}
    for name, flags in (("default", ""), ("ours", xla_cpu.FLAG)):
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        results[name] = _stdout_of_fresh_process(code, env=env).split()
    assert results["ours"] == ["False", "True"]
    assert results["default"] == ["True", "True"]  # what the flag changes: if this fails, jaxlib changed its default


# --- host allocator ------------------------------------------------------------------------------


def test_keep_freed_memory_respects_the_users_malloc_settings():
    assert allocator.user_chooses({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
    assert allocator.user_chooses({"MALLOC_ARENA_MAX": "2"})
    assert not allocator.user_chooses({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F", "PATH": "/bin"})
    # A user's choice wins, and nothing is applied (this process's malloc and dispatch are left alone).
    assert not allocator.keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "0"})


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"), reason="glibc's malloc only")
def test_keep_freed_memory_stops_the_page_faults_of_large_buffers():
    """In fresh processes (the setting is process-wide): a jitted call whose 64 MiB output is freed
    after each call takes a fresh mmap, page faults included, on every call with glibc's defaults,
    and reuses the same pages with the setting (the mechanism of RESULTS.md's batch-256 step).

    With the setting the heap can grow over the first calls before it settles: hence 40 calls
    before counting."""
    code = (
        "import resource, sys\n"
        "from examples.seed_cnn import allocator\n"
        "assert sys.argv[1] == 'default' or allocator.keep_freed_memory()\n"
        "import jax, jax.numpy as jnp\n"
        "double = jax.jit(lambda x: x * 2.0)\n"
        "x = jnp.ones((2**24,), jnp.float32)\n"
        "for _ in range(40): double(x).block_until_ready()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(10): double(x).block_until_ready()\n"
        "print(allocator.describe().split()[0], (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)\n"
    )
    faults = {}
    for name in ("default", "ours"):
        env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
        env.update(JAX_PLATFORMS="cpu", GLIBC_TUNABLES="", PYTHONPATH=os.pathsep.join(sys.path))
        described, count = _stdout_of_fresh_process(code, name, env=env).split()[-2:]
        assert described == {"default": "default", "ours": "keeps"}[name]
        faults[name] = float(count)
    assert faults["default"] > 0, f"no page faults with glibc's defaults: the premise changed ({faults})"
    assert faults["ours"] <= faults["default"] / 10, faults


# --- flax ⇄ torch ------------------------------------------------------------------------------


def random_params(seed):
    """Params of the model's shapes with every leaf random, biases included (init gives zero biases)."""
    shapes = jax.eval_shape(model_flax.SeedCNN().init, jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: rng.normal(scale=1 / np.sqrt(np.prod(leaf.shape[:-1], initial=1)), size=leaf.shape),
        shapes["params"],
    )


def test_weight_layouts_round_trip():
    params = random_params(3)
    state = weights.flax_to_torch(params)
    assert state["conv2.weight"].shape == (64, 32, 3, 3)
    assert state["fc1.weight"].shape == (128, 64 * 7 * 7)
    assert set(state) == set(model_torch.SeedCNNTorch().state_dict())
    back = weights.torch_to_flax(state)
    jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, params))


def _torch_log_probs_and_grads(params, images, labels):
    module = weights.load_into_torch(model_torch.SeedCNNTorch().double(), params)
    log_probs = module(model_torch.to_nchw(images, torch.float64))
    model_torch.nll_loss(log_probs, labels).backward()
    grads = weights.torch_to_flax({name: p.grad for name, p in module.named_parameters()})
    return log_probs.detach().numpy(), grads


def test_flax_and_torch_agree_in_float64(digits):
    """Forward and backward within the bounds the operands' scale gives two summation orders
    (parity/forward_bounds.py: the network run on absolute weights and images)."""
    images, labels = digits.train_images[:8].astype(np.float64), digits.train_labels[:8]
    with jax.enable_x64(True):
        params = model_flax.cast_params(random_params(1), np.float64)
        ours = np.asarray(model_flax.log_probs(params, images))
        our_grads = jax.jit(jax.grad(model_flax.nll_loss))(params, images, labels)
        theirs, torch_grads = _torch_log_probs_and_grads(params, images, labels)
        tensors = jax.tree.map(lambda a: torch.tensor(np.asarray(a)), params)
        functional = model_torch.functional_forward(tensors, model_torch.to_nchw(images, torch.float64)).numpy()
        bounds = forward_bounds.seed_cnn_bounds(params, images, labels, theirs)
        changed = {**params, "fc2": {**params["fc2"], "bias": params["fc2"]["bias"] * (1 + 1e-6)}}
        shifted, _ = _torch_log_probs_and_grads(changed, images, labels)
    assert np.all(np.abs(ours - theirs) <= bounds.log_probs)
    assert np.all(np.abs(functional - ours) <= bounds.log_probs)
    assert np.any(np.abs(shifted - theirs) > bounds.log_probs)  # a bias off by 1e-6 is a difference
    for layer in torch_grads:
        for name in ("kernel", "bias"):
            error = np.abs(np.asarray(our_grads[layer][name]) - torch_grads[layer][name])
            assert np.all(error <= bounds.grads[layer][name]), f"{layer}.{name}"


def torch_adam(parameters):
    return torch.optim.Adam(parameters, lr=1e-3, weight_decay=5e-4)


@pytest.mark.slow  # parity/test_seed_cnn.py proves 100 float64 steps of this job in every run
def test_loss_parity_over_a_few_float64_steps(digits):
    """Three Adam steps on each side's own gradients: the first loss within the forward bound
    (both sides at the same weights), every step within the contract or 100 × torch's own floor
    (parity/training_floor.py; the contract assumes identical gradients, these differ by rounding)."""
    batches = data_lib.first_batches(len(digits.train_labels), 8, seed=0, count=3)
    params = model_flax.init_params(0)
    report = side_by_side.run_loss_parity(
        params,
        digits,
        batches,
        train_cnn.make_optimizer(1e-3, 5e-4),
        torch_adam,
        dtype="float64",
    )
    images, labels = digits.train_images[batches[0]].astype(np.float64), digits.train_labels[batches[0]]
    with jax.enable_x64(True):
        wide = model_flax.cast_params(params, np.float64)
        log_probs = np.asarray(model_flax.log_probs(wide, images))
        bound = forward_bounds.seed_cnn_bounds(wide, images, labels, log_probs).loss
    assert report.abs_diffs[0] <= bound, (report.abs_diffs[0], bound)
    errors = np.maximum(report.param_errors, report.rel_diffs)
    pair = side_by_side.loss_pair(digits, batches)
    verdict = training_floor.judge_errors(errors, "float64", torch_adam, params, pair)
    assert verdict.passed, f"{verdict.reason}\n{report}"


def test_loss_pair_drives_the_comparison_engine(digits):
    batches = data_lib.first_batches(len(digits.train_labels), 8, seed=1, count=2)
    params, pair = model_flax.init_params(0), side_by_side.loss_pair(digits, batches)
    report = verify.compare(torch_adam, fo.adam(lr=1e-3, weight_decay=5e-4), params, pair, steps=2, dtype="float64")
    verdict = training_floor.judge(report, torch_adam, params, pair)
    assert verdict.passed, f"{verdict.reason}\n{report}"


# --- training ----------------------------------------------------------------------------------


def test_short_training_run_lowers_the_loss(digits):
    result = train_cnn.train(digits, epochs=1, batch_size=32, max_steps=15, progress=False)
    assert len(result.losses) == 15
    assert result.losses[-5:].mean() < 0.8 * result.losses[:5].mean()
    assert len(result.epoch_accuracies) == 1 and 0.0 <= result.test_accuracy <= 1.0


def test_main_runs_parity_and_plots(digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_lib, "load_digits", lambda: digits)
    plot = tmp_path / "curves.png"
    # Batch 32, as in the run above, so the compiled step is reused.
    status = train_cnn.main(["--epochs", "1", "--batch-size", "32", "--parity-steps", "2", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert status == 0
    assert "parity [float32, 2 steps" in out and "-> PASS" in out
    assert "final test accuracy" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
