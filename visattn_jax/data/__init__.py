"""Datasets (TFDS) and the papers' distorted / translated / cluttered MNIST generators."""

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
    "DISTORTIONS",
    "MNIST_FILES",
    "DataUnavailableError",
    "cluttered",
    "default_data_dir",
    "distort",
    "elastic",
    "load_image_dataset",
    "prepare_mnist",
    "projective",
    "rotated",
    "rts",
    "translated",
]
