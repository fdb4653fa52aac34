"""Datasets (TFDS) and the papers' distorted / translated / cluttered MNIST generators."""

from visattn_jax.data.datasets import (
    CIFAR10_CLASSES,
    ClassificationData,
    StreamData,
    distorted_digits,
    input_shape,
    load_data,
    make_test_set,
    natural_images,
)
from visattn_jax.data.distortions import (
    DISTORTIONS,
    cluttered,
    distort,
    elastic,
    projective,
    rotated,
    rts,
    translated,
)
from visattn_jax.data.mnist import (
    MNIST_FILES,
    DataUnavailableError,
    default_data_dir,
    load_image_dataset,
    prepare_mnist,
)

__all__ = [
    "CIFAR10_CLASSES",
    "ClassificationData",
    "DISTORTIONS",
    "MNIST_FILES",
    "DataUnavailableError",
    "StreamData",
    "cluttered",
    "default_data_dir",
    "distort",
    "distorted_digits",
    "elastic",
    "input_shape",
    "load_data",
    "load_image_dataset",
    "make_test_set",
    "natural_images",
    "prepare_mnist",
    "projective",
    "rotated",
    "rts",
    "translated",
]
