"""Data for the seed CNN: scikit-learn's digits upsampled to 28×28, or MNIST from idx files.

Images are ``float32`` arrays in NHWC layout, ``(N, 28, 28, 1)``, scaled to ``[0, 1]``; labels
are ``int32``. The torch side transposes each batch to NCHW itself.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from collections.abc import Iterator

import numpy as np

IMAGE_SIZE = 28
NUM_CLASSES = 10

# The idx format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the number of
# dimensions, then each dimension as a big-endian uint32, then the data, big-endian, row-major.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split; images ``(N, 28, 28, 1)`` float32 in [0, 1], labels ``(N,)`` int32."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __str__(self) -> str:
        return f"{self.name}: {len(self.train_labels)} train / {len(self.test_labels)} test images"


def _open(path: str | os.PathLike):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed, by its ``.gz`` suffix) into a NumPy array.

    The array has the file's shape and its element type in native byte order.

    Raises:
      ValueError: the header is not an idx header, or the data does not match the dimensions.
    """
    with _open(path) as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{os.fspath(path)!r} is not an idx file (header {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{os.fspath(path)!r}: truncated idx header ({ndim} dimensions expected)")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise ValueError(
            f"{os.fspath(path)!r}: shape {shape} needs {expected} data bytes, the file holds {len(raw) - header_size}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an idx file (gzip-compressed if ``path`` ends in ``.gz``)."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _IDX_CODES:
        raise ValueError(f"idx cannot store dtype {array.dtype}")
    header = bytes([0, 0, _IDX_CODES[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_IDX_DTYPES[_IDX_CODES[native]]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(payload)


def _find_mnist_file(directory: str | os.PathLike, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {os.fspath(directory)!r}")


def load_mnist(directory: str | os.PathLike) -> Dataset:
    """MNIST's four idx files from ``directory`` (plain or ``.gz``), pixels scaled to [0, 1]."""
    arrays = {key: read_idx(_find_mnist_file(directory, stem)) for key, stem in MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or labels.shape != images.shape[:1]:
            raise ValueError(
                f"MNIST {split} files have images {images.shape} and labels {labels.shape}; "
                f"expected (N, {IMAGE_SIZE}, {IMAGE_SIZE}) and (N,)"
            )
    return Dataset(
        name="MNIST",
        train_images=(arrays["train_images"][..., None] / np.float32(255)).astype(np.float32),
        train_labels=arrays["train_labels"].astype(np.int32),
        test_images=(arrays["test_images"][..., None] / np.float32(255)).astype(np.float32),
        test_labels=arrays["test_labels"].astype(np.int32),
    )


def upsample(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Bilinear resize of ``(N, h, w)`` images to ``(N, size, size)`` (float32, clipped to [0, 1])."""
    import jax
    import jax.numpy as jnp

    images = jnp.asarray(images, jnp.float32)
    resized = jax.image.resize(images, (images.shape[0], size, size), method="bilinear")
    return np.clip(np.asarray(resized), 0.0, 1.0)


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 images, no download), upsampled to 28×28.

    Pixels (0..16) are scaled to [0, 1] before the bilinear resize, which is done once here. The
    train/test split is a permutation drawn from ``split_seed``.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = upsample(bunch.images / 16.0)[..., None]
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(split_seed).permutation(len(labels))
    num_test = int(round(test_fraction * len(labels)))
    test, train = order[:num_test], order[num_test:]
    return Dataset("digits (sklearn, 8x8 upsampled to 28x28)", images[train], labels[train], images[test], labels[test])


def iterate_batches(
    num_examples: int, batch_size: int, seed: int, epochs: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(epoch, indices)`` for each batch: a fresh permutation per epoch from ``(seed, epoch)``.

    The last partial batch of each epoch is dropped, so every batch has ``batch_size`` examples
    and the jitted step compiles once. ``epochs=None`` runs forever.
    """
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch_size (={batch_size}) must be between 1 and the number of examples (={num_examples})")
    epoch = 0
    while epochs is None or epoch < epochs:
        order = np.random.default_rng([seed, epoch]).permutation(num_examples)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            yield epoch, order[start : start + batch_size]
        epoch += 1


def first_batches(num_examples: int, batch_size: int, seed: int, count: int) -> np.ndarray:
    """The index arrays of the first ``count`` batches of :func:`iterate_batches`, ``(count, batch_size)``."""
    batches = iterate_batches(num_examples, batch_size, seed)
    indices = [next(batches)[1] for _ in range(count)]
    return np.stack(indices) if indices else np.zeros((0, batch_size), np.int64)
