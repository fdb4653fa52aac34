"""The one data entry point: ``load_data(config)`` for every dataset an experiment can name.

Two kinds of data come out, and the training task (:func:`visattn_jax.train.classification_task`) takes either
without asking which paper it belongs to:

- :class:`ClassificationData`: a training set held on the device and a fixed test set. Made by
  :func:`distorted_digits` (MNIST digits distorted afresh every step: the STN paper's rotated / RTS / projective
  / elastic sets and the RAM paper's translated and cluttered canvases, sampled with replacement as the papers'
  unbounded generators are) or :func:`natural_images` (CIFAR-10 / -100, SVHN: epochs without replacement,
  pad-crop-flip augmentation, per-channel normalisation).
- :class:`StreamData`: a host pipeline (ImageNet, :mod:`visattn_jax.data.imagenet`), each process reading its
  own rows of every global batch and its own shard of the evaluation set.

Any model of :mod:`visattn_jax.models` trains on any of them (an SE network on cluttered MNIST, a spatial
transformer on CIFAR), given the input channels match.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from visattn_jax.data.distortions import distort

__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_SHAPES",
    "ClassificationData",
    "StreamData",
    "distorted_digits",
    "input_shape",
    "load_data",
    "make_test_set",
    "natural_images",
]

#: The class names of CIFAR-10, in label order (for figures).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: Examples per split and image shape of the in-memory datasets (TFDS's counts), for shapes-only builds.
DATASET_SHAPES = {
    "mnist": (60_000, 10_000, (28, 28, 1)),
    "cifar10": (50_000, 10_000, (32, 32, 3)),
    "cifar100": (50_000, 10_000, (32, 32, 3)),
    "svhn_cropped": (73_257, 26_032, (32, 32, 3)),
}


class ClassificationData(NamedTuple):
    """A classification dataset held in memory, with how a training step draws and prepares its batch.

    Attributes:
      train: ``{"image": uint8 [N, H, W, C], "label": int32 [N]}``, host arrays (the task's ``train_data``:
        placed on every device once, an argument of the compiled step).
      test_images: the fixed evaluation images ``[M, S, S, C]``: uint8 natural images, or the float32 distorted
        digits (made once by :func:`make_test_set`).
      test_labels: int32 ``[M]``.
      train_batch: ``(key, step, train) -> {"image": float [B, S, S, C], "label": int32 [B]}``, pure and
        jit-compatible: the model-ready batch of ``step`` (``key`` is the run's data key, the same every step).
      prepare: ``test images -> model inputs`` (normalisation of uint8 images; identity for the digits).
      input_shape: ``(S, S, C)``, what the model reads.
      steps_per_epoch: steps per pass over ``train`` (0 for sampling with replacement, which has no epochs).
      class_names: names of the labels, or None.
      description: how a summary line names the data (``"mnist/rts"``, ``"cifar10"``).
    """

    train: dict[str, np.ndarray]
    test_images: np.ndarray
    test_labels: np.ndarray
    train_batch: Callable[[jax.Array, jax.Array, dict], dict[str, jax.Array]]
    prepare: Callable[[jax.Array], jax.Array]
    input_shape: tuple[int, int, int]
    steps_per_epoch: int
    class_names: tuple[str, ...] | None
    description: str


class StreamData(NamedTuple):
    """A dataset read by a host pipeline, this process's share of it (ImageNet).

    Attributes:
      train_stream: ``start_step -> iterator of {"image", "label"}`` host batches, already augmented and
        normalised (:func:`visattn_jax.data.imagenet.imagenet_stream`), starting at ``start_step``.
      eval_batches: this process's shard of the evaluation set, in normalised batches.
      input_shape: ``(S, S, C)``; steps_per_epoch: steps per pass over the training split.
      description: how a summary line names the data.
    """

    train_stream: Callable[[int], Iterator[dict[str, np.ndarray]]]
    eval_batches: Iterable[dict[str, np.ndarray]]
    input_shape: tuple[int, int, int]
    steps_per_epoch: int
    description: str


def _check_arrays(name: str, images: np.ndarray, labels: np.ndarray, dtype=np.uint8) -> None:
    if images.dtype != dtype or images.ndim != 4:
        raise ValueError(f"{name} must be {np.dtype(dtype).name} [N, H, W, C], got {images.dtype} {images.shape}.")
    if len(images) != len(labels):
        raise ValueError(f"{name} and their labels must have the same length, got {len(images)} and {len(labels)}.")


def make_test_set(distortion: str, images: np.ndarray, *, seed: int, chunk: int = 1000) -> np.ndarray:
    """The fixed test set: ``distortion`` applied to uint8 ``images [N, 28, 28, 1]`` with key ``seed``.

    Chunk ``i`` uses ``fold_in(PRNGKey(seed), i)``, so the result does not depend on the machine's memory.
    Returns float32 ``[N, S, S, 1]`` (host array).
    """
    generate = jax.jit(lambda key, x: distort(distortion, key, x.astype(jnp.float32) / 255.0))
    key = jax.random.PRNGKey(seed)
    parts = [
        np.asarray(generate(jax.random.fold_in(key, i), images[start : start + chunk]))
        for i, start in enumerate(range(0, len(images), chunk))
    ]
    return np.concatenate(parts)


def distorted_digits(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    distortion: str,
    batch_size: int,
) -> ClassificationData:
    """Digits distorted afresh every training step (the STN and RAM papers' generated datasets).

    Every step draws ``batch_size`` digits with replacement from ``fold_in(key, step)`` and distorts them with
    its own key, in [0, 1] (no normalisation, as the papers).

    Args:
      train_images: uint8 ``[N, 28, 28, 1]`` clean training digits; train_labels: int ``[N]``.
      test_images: float ``[M, S, S, 1]``, the fixed, already distorted test set (:func:`make_test_set`);
        test_labels: int ``[M]``.
      distortion: a name in :data:`visattn_jax.data.DISTORTIONS`.
    """
    _check_arrays("train_images", train_images, train_labels)
    _check_arrays("test_images", test_images, test_labels, dtype=np.float32)

    def train_batch(key, step, data):
        # A fresh sample every step (with replacement), distorted anew, from the step's key.
        key = jax.random.split(jax.random.fold_in(key, step))[0]
        k_index, k_distort = jax.random.split(key)
        digits, labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])
        index = jax.random.randint(k_index, (batch_size,), 0, digits.shape[0])
        images = distort(distortion, k_distort, digits[index].astype(jnp.float32) / 255.0)
        return {"image": images, "label": labels[index]}

    return ClassificationData(
        train={"image": train_images, "label": np.asarray(train_labels, np.int32)},
        test_images=test_images,
        test_labels=np.asarray(test_labels, np.int32),
        train_batch=train_batch,
        prepare=lambda images: images,
        input_shape=tuple(test_images.shape[1:]),
        steps_per_epoch=0,
        class_names=None,
        description=f"mnist/{distortion}",
    )


def natural_images(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    batch_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    augment: bool = True,
    class_names: tuple[str, ...] | None = None,
    description: str = "images",
) -> ClassificationData:
    """Natural images held on the device, CIFAR-style.

    Every step takes the next ``batch_size`` examples of the epoch's permutation
    (:func:`visattn_jax.data.cifar.epoch_indices`: epochs without replacement, the order fixed by the run's
    key), pads, crops and flips them (:func:`~visattn_jax.data.cifar.pad_crop_flip`, if ``augment``) and
    normalises them per channel (``mean``, ``std`` of images in [0, 1]); the test images are normalised the
    same way, unaugmented.

    Args:
      train_images: uint8 ``[N, H, W, C]``; train_labels: int ``[N]``.
      test_images: uint8 ``[M, H, W, C]``; test_labels: int ``[M]``.
    """
    from visattn_jax.data.cifar import epoch_indices, normalize, pad_crop_flip

    _check_arrays("train_images", train_images, train_labels)
    _check_arrays("test_images", test_images, test_labels)
    if len(mean) != train_images.shape[-1] or len(std) != train_images.shape[-1]:
        raise ValueError(f"mean and std need one value per channel ({train_images.shape[-1]}), got {mean}, {std}.")
    num_examples = len(train_images)
    if batch_size > num_examples:
        raise ValueError(f"batch_size={batch_size} is larger than the {num_examples} training images.")
    mean, std = tuple(mean), tuple(std)

    def train_batch(key, step, data):
        order_key, augment_key = jax.random.split(key)
        # The order comes from the run's key and the epoch (each epoch a permutation); augmentation per step.
        all_images, all_labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])
        index = epoch_indices(order_key, step, all_images.shape[0], batch_size)
        images = all_images[index]
        if augment:
            images = pad_crop_flip(jax.random.fold_in(augment_key, step), images)
        return {"image": normalize(images, mean, std), "label": all_labels[index]}

    return ClassificationData(
        train={"image": train_images, "label": np.asarray(train_labels, np.int32)},
        test_images=test_images,
        test_labels=np.asarray(test_labels, np.int32),
        train_batch=train_batch,
        prepare=functools.partial(normalize, mean=mean, std=std),
        input_shape=tuple(train_images.shape[1:]),
        steps_per_epoch=num_examples // batch_size,
        class_names=class_names,
        description=description,
    )


def _limit(config, train_x, train_y, test_x, test_y):
    if config.get("train_limit"):
        train_x, train_y = train_x[: config.train_limit], train_y[: config.train_limit]
    if config.get("test_limit"):
        test_x, test_y = test_x[: config.test_limit], test_y[: config.test_limit]
    return train_x, train_y, test_x, test_y


def _placeholder_arrays(config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Zero uint8 images and int32 labels with the shapes of ``config.dataset`` (cut to the config's limits):
    nothing is read, and ``np.zeros`` does not touch the memory until it is written."""
    train, test, shape = DATASET_SHAPES[config.dataset]
    train = min(train, config.get("train_limit") or train)
    test = min(test, config.get("test_limit") or test)
    images = lambda n: np.zeros((n, *shape), np.uint8)  # noqa: E731
    return images(train), np.zeros(train, np.int32), images(test), np.zeros(test, np.int32)


def _read_arrays(config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from visattn_jax.data.cifar import load_cifar10
    from visattn_jax.data.mnist import load_image_dataset

    kwargs = {"data_dir": config.get("data_dir")}
    if config.dataset == "cifar10":
        train = load_cifar10("train", source_dir=config.get("cifar10_dir"), **kwargs)
        test = load_cifar10("test", source_dir=config.get("cifar10_dir"), **kwargs)
    else:
        if config.dataset == "mnist":
            kwargs["source_dir"] = config.get("mnist_dir")
        train = load_image_dataset(config.dataset, "train", **kwargs)
        test = load_image_dataset(config.dataset, "test", **kwargs)
    return _limit(config, *train, *test)


def _imagenet(config, shapes_only: bool) -> StreamData:
    from visattn_jax.data.imagenet import ImageNetEval, imagenet_num_examples, imagenet_stream

    shape = (config.image_size, config.image_size, 3)
    if shapes_only:  # no pipeline (a compile is given its batch), no evaluation set, ILSVRC 2012's size
        return StreamData(lambda start: iter(()), [], shape, 1_281_167 // config.batch_size, config.dataset)
    common = dict(image_size=config.image_size, mean=tuple(config.mean), std=tuple(config.std), name=config.dataset)
    common["data_dir"] = config.get("data_dir")
    stream = functools.partial(imagenet_stream, global_batch_size=config.batch_size, seed=config.seed, **common)
    eval_batches = ImageNetEval(batch_size=config.eval_batch_size, split=config.eval_split, **common)
    num_train = imagenet_num_examples("train", name=config.dataset, data_dir=config.get("data_dir"))
    return StreamData(stream, eval_batches, shape, num_train // config.batch_size, config.dataset)


def input_shape(config) -> tuple[int, int, int] | None:
    """``(S, S, C)``, the shape of what a model will read from ``config``'s data, without reading it; None for
    a TFDS dataset of unknown shape (only reading it tells). Raises ValueError for an unknown distortion."""
    if config.dataset.startswith("imagenet"):
        return (config.image_size, config.image_size, 3)
    if config.dataset == "mnist":
        digit = jax.ShapeDtypeStruct((2, 28, 28, 1), np.float32)  # cluttered needs 2
        size = jax.eval_shape(lambda x: distort(config.get("distortion", "none"), jax.random.PRNGKey(0), x), digit)
        return tuple(size.shape[1:])
    return DATASET_SHAPES[config.dataset][2] if config.dataset in DATASET_SHAPES else None


def load_data(config, *, shapes_only: bool = False) -> ClassificationData | StreamData:
    """The data of an experiment config, whatever the model.

    Reads ``config.dataset``: ``mnist`` (with ``config.distortion``, a name in
    :data:`visattn_jax.data.DISTORTIONS`: ``none``, ``rts``, ``cluttered60`` ...), ``cifar10`` (TFDS, or the
    offline copy in ``config.cifar10_dir``), any other TFDS image classification set (``cifar100``,
    ``svhn_cropped``; needs the network once), or ``imagenet*`` (a host stream). Also: ``batch_size``,
    ``seed``, ``data_dir``, ``mnist_dir``, ``train_limit`` / ``test_limit`` (cut the splits, 0 = all),
    ``test_seed`` (the fixed distorted test set), and for natural images ``mean``, ``std``, ``augment``,
    ``label_noise`` (a fraction of training labels replaced at random, fixed by ``seed``).

    ``shapes_only``: nothing is read; zero arrays of the real shapes stand in (for compiling a step, e.g. for
    a TPU topology).

    Raises:
      ValueError: an unknown dataset or distortion (before anything is read).
    """
    dataset = config.dataset
    batch_size = config.batch_size
    if dataset.startswith("imagenet"):
        return _imagenet(config, shapes_only)
    if shapes_only and dataset not in DATASET_SHAPES:
        raise ValueError(f"No known shapes for dataset {dataset!r}; known: {sorted(DATASET_SHAPES)}.")
    distortion = config.get("distortion", "none")
    if dataset == "mnist":
        if shapes_only:
            train_x, train_y, test_x, test_y = _placeholder_arrays(config)
            test_images = np.zeros((len(test_x), *input_shape(config)), np.float32)
        else:
            train_x, train_y, test_x, test_y = _read_arrays(config)
            test_images = make_test_set(distortion, test_x, seed=config.test_seed)
        return distorted_digits(train_x, train_y, test_images, test_y, distortion=distortion, batch_size=batch_size)
    if distortion != "none":
        raise ValueError(f"distortion {distortion!r} is for MNIST digits; dataset {dataset!r} takes 'none'.")
    if shapes_only:
        train_x, train_y, test_x, test_y = _placeholder_arrays(config)
    else:
        train_x, train_y, test_x, test_y = _read_arrays(config)
        if config.get("label_noise", 0.0):
            from visattn_jax.data.cifar import corrupt_labels

            train_y = corrupt_labels(train_y, config.label_noise, config.num_classes, seed=config.seed)
    return natural_images(
        train_x,
        train_y,
        test_x,
        test_y,
        batch_size=batch_size,
        mean=tuple(config.mean),
        std=tuple(config.std),
        augment=config.get("augment", True),
        class_names=CIFAR10_CLASSES if dataset == "cifar10" else None,
        description=dataset,
    )
