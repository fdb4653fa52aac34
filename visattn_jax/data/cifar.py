"""CIFAR-10 (and CIFAR-100 / other small natural-image sets) as uint8 arrays, plus their on-device input ops.

Where the data comes from, in order:

1. TFDS, if ``cifar10`` is already prepared in the data folder (read with ``tfds.data_source``).
2. The offline copy: a folder with ``train.npz`` / ``test.npz`` (``images`` uint8 ``[N, 32, 32, 3]``,
   ``labels`` ``[N]``; the genuine CIFAR-10 in the original order, ``../shared/data/cifar10`` on this
   project's machines), given as ``source_dir`` or ``$VISATTN_CIFAR10_DIR``. Every array's SHA-256 is checked
   against :data:`CIFAR10_SHA256`, so a corrupt or partial file is an error, not a silent wrong result.
3. TFDS's own download and preparation (needs the network and tensorflow).

If none works, :class:`DataUnavailableError` lists both ways to make the data available.

The input ops are pure JAX functions for the training step: :func:`epoch_indices` (sampling without
replacement: one permutation per epoch, drawn from the key), :func:`pad_crop_flip` (the standard CIFAR
augmentation: zero-pad 4, random 32x32 crop, random horizontal flip) and :func:`normalize`.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from visattn_jax.data.mnist import DataUnavailableError, default_data_dir, load_image_dataset

__all__ = [
    "CIFAR10_MEAN",
    "corrupt_labels",
    "CIFAR10_SHA256",
    "CIFAR10_STD",
    "epoch_indices",
    "load_cifar10",
    "load_offline_cifar10",
    "normalize",
    "pad_crop_flip",
]

#: sha256 of each array's contiguous bytes (uint8 images, int64 labels), as published with the offline copy.
CIFAR10_SHA256 = {
    ("train", "images"): "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
    ("train", "labels"): "f5cfe00b0f00968c0cc5ff3b1d2de51b10e33efa277c2986f4e0fa63e58c9f4f",
    ("test", "images"): "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
    ("test", "labels"): "cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb",
}
_SIZES = {"train": 50_000, "test": 10_000}
#: Per-channel mean and standard deviation of the training images in [0, 1] (the published CIFAR-10 values).
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
#: The published per-channel standard deviation of the CIFAR-10 training images in [0, 1].
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)


def load_offline_cifar10(split: str, source_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads ``{split}.npz`` from the offline copy and checks its arrays' SHA-256.

    Returns ``images`` uint8 ``[N, 32, 32, 3]`` and ``labels`` int32 ``[N]``.

    Raises:
      DataUnavailableError: the file is missing, unreadable (corrupt or cut short), or its arrays are not
        the genuine CIFAR-10 (shape, dtype or checksum).
    """
    if split not in _SIZES:
        raise ValueError(f"The offline CIFAR-10 has the splits 'train' and 'test', not {split!r}.")
    path = Path(source_dir) / f"{split}.npz"
    if not path.is_file():
        raise DataUnavailableError(f"The offline CIFAR-10 file {path} does not exist.")
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in ("images", "labels")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise DataUnavailableError(
            f"{path} is not a readable CIFAR-10 archive ({type(error).__name__}: {error}): the file is corrupt or "
            "incomplete; copy it again."
        ) from error
    images, labels = arrays["images"], arrays["labels"]
    n = _SIZES[split]
    if images.shape != (n, 32, 32, 3) or images.dtype != np.uint8 or labels.shape != (n,) or labels.dtype != np.int64:
        raise DataUnavailableError(
            f"{path} holds images {images.dtype} {images.shape} and labels {labels.dtype} {labels.shape}; the "
            f"CIFAR-10 {split} split is uint8 ({n}, 32, 32, 3) and int64 ({n},)."
        )
    for name, array in (("images", images), ("labels", labels)):
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        if digest != CIFAR10_SHA256[split, name]:
            raise DataUnavailableError(
                f"The {split} {name} in {path} have SHA-256 {digest}, not the genuine CIFAR-10's "
                f"{CIFAR10_SHA256[split, name]}: the file is damaged or a different dataset."
            )
    return images, labels.astype(np.int32)


def _tfds_prepared(name: str, data_dir: Path) -> bool:
    """Whether TFDS has prepared ``name`` in ``data_dir`` (any version), checked on disk without TFDS, whose
    probing of a missing dataset logs warnings."""
    return any((data_dir / name).glob("*.*.*/dataset_info.json"))


def load_cifar10(
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 ``split`` ("train" or "test") as uint8 ``[N, 32, 32, 3]`` images and int32 ``[N]`` labels.

    Tries, in order: TFDS's prepared ``cifar10``; the offline copy in ``source_dir`` (default
    ``$VISATTN_CIFAR10_DIR``); TFDS's download. See the module docstring.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    source_dir = source_dir if source_dir is not None else os.environ.get("VISATTN_CIFAR10_DIR")
    if _tfds_prepared("cifar10", data_dir):
        return load_image_dataset("cifar10", split, data_dir=data_dir)
    if source_dir is not None and Path(source_dir).is_dir():
        return load_offline_cifar10(split, source_dir)
    try:
        return load_image_dataset("cifar10", split, data_dir=data_dir)
    except DataUnavailableError as error:
        raise DataUnavailableError(
            f"CIFAR-10 is not available. Either (1) let TFDS download it (needs the network and tensorflow: "
            f"pip install -e '.[data]'; it is stored in {data_dir}), or (2) point --config.cifar10_dir (or "
            f"$VISATTN_CIFAR10_DIR) at a folder with the offline train.npz and test.npz"
            f"{f' (given: {source_dir}, which does not exist)' if source_dir else ''}.\nTFDS said: {error}"
        ) from error


def epoch_indices(key: jax.Array, step: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """The example indices of training ``step``: sampling without replacement, a new permutation per epoch.

    Epoch ``e = step // (num_examples // batch_size)`` uses ``permutation(fold_in(key, e))``; the step takes
    its next ``batch_size`` entries (the last ``num_examples % batch_size`` examples of each permutation are
    left out of that epoch). Pure: the data order depends only on ``key`` and ``step``, so a resumed run sees
    the same batches. Returns int32 ``[batch_size]``.
    """
    steps_per_epoch = num_examples // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the {num_examples} examples.")
    epoch, position = jnp.divmod(step, steps_per_epoch)
    order = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
    return jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size).astype(jnp.int32)


def pad_crop_flip(key: jax.Array, images: jax.Array, *, padding: int = 4, flip: bool = True) -> jax.Array:
    """Zero-pads each image by ``padding``, crops a random window of the original size, flips it left-right
    with probability 1/2 (He et al. 2015's CIFAR augmentation).

    Args:
      key: PRNG key.
      images: ``[N, H, W, C]`` (any dtype; zeros are padded, so pad after normalising to pad with the mean).
    Returns:
      ``[N, H, W, C]``, same dtype.
    """
    n, h, w, c = images.shape
    k_y, k_x, k_flip = jax.random.split(key, 3)
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ys = jax.random.randint(k_y, (n,), 0, 2 * padding + 1)
    xs = jax.random.randint(k_x, (n,), 0, 2 * padding + 1)
    zero = jnp.zeros((), ys.dtype)
    crops = jax.vmap(lambda image, y, x: jax.lax.dynamic_slice(image, (y, x, zero), (h, w, c)))(padded, ys, xs)
    if not flip:
        return crops
    flips = jax.random.bernoulli(k_flip, 0.5, (n,))
    return jnp.where(flips[:, None, None, None], crops[:, :, ::-1, :], crops)


def normalize(images: jax.Array, mean=CIFAR10_MEAN, std=CIFAR10_STD, dtype=jnp.float32) -> jax.Array:
    """uint8 ``[..., C]`` images -> ``(x / 255 - mean) / std`` per channel, in ``dtype``."""
    x = images.astype(jnp.float32) / 255.0
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return ((x - mean.reshape((1,) * (x.ndim - 1) + (-1,))) / std.reshape((1,) * (x.ndim - 1) + (-1,))).astype(dtype)


def corrupt_labels(labels: np.ndarray, noise: float, num_classes: int, *, seed: int) -> np.ndarray:
    """Label noise as the Residual Attention paper defines it (section 4.1): each label is kept with
    probability ``1 - noise`` and otherwise replaced by one of the *other* ``num_classes - 1`` classes, uniformly
    (the confusion matrix has ``1 - noise`` on its diagonal and ``noise / (num_classes - 1)`` elsewhere).

    Deterministic for a ``seed`` (drawn once, on the host; the noisy labels stay fixed for the whole run).
    Returns int32 ``[N]``.
    """
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a fraction in [0, 1], got {noise}.")
    labels = np.asarray(labels, np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}].")
    rng = np.random.default_rng(seed)
    flip = rng.random(labels.shape) < noise
    shift = rng.integers(1, num_classes, labels.shape)  # 1 .. K-1: never the true class
    return np.where(flip, (labels + shift) % num_classes, labels).astype(np.int32)
