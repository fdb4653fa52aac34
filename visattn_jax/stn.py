"""Spatial Transformer Networks (Jaderberg et al., NIPS 2015) as Flax Linen modules.

A :class:`SpatialTransformer` is a localisation network (any Linen module mapping ``[N, H, W, C]`` to
features ``[N, F]``), a final regression layer to the transform's parameters (initialised to the identity
transform, as in the paper), a grid generator from :mod:`visattn_jax.grids` and the sampler from
:mod:`visattn_jax.sampling`. The classifiers of the paper's distorted-MNIST experiments are built from it:
ST-CNN and ST-FCN, and the plain CNN and FCN baselines.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from visattn_jax.backend import resolve_backend
from visattn_jax.grids import affine_grid, attention_grid, base_coords, projective_grid, tps_grid
from visattn_jax.objectives import takes_argument
from visattn_jax.sampling import grid_sample, separable_sample

#: How a spatial transformer samples: ``"grid_sample"`` (gathers, every transform), ``"separable"`` (two matmuls
#: per image, the axis-aligned ``"attention"`` transform only), ``"auto"`` (separable for attention on TPU).
SAMPLERS = ("auto", "grid_sample", "separable")


def resolve_sampler(sampler: str, transform: str, *, backend: str | None = None) -> str:
    """``"grid_sample"`` or ``"separable"`` for a transformer's ``sampler`` setting: ``"auto"`` is
    ``"separable"`` for the attention transform on TPU (``backend``, default
    :func:`visattn_jax.backend.resolve_backend`) and
    ``"grid_sample"`` otherwise.

    Why: compiled for a v5e chip (``python -m experiments.tpu_sampler``, docs/tpu.md), XLA's cost
    analysis charges a crop of 64 images 60x60 -> 60x60 2,294 MB of memory traffic with ``grid_sample``'s gathers
    and 9 MB with ``separable_sample``'s matmuls (forward; 3,419 against 19 MB with the gradient). On CPUs and
    GPUs the gathers, which read only the pixels they need, stay the default."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}.")
    if sampler == "separable" and transform != "attention":
        raise ValueError(
            f"sampler='separable' samples axis-aligned grids only (transform='attention'), not {transform!r}."
        )
    if sampler != "auto":
        return sampler
    tpu = resolve_backend(backend) == "tpu"
    return "separable" if tpu and transform == "attention" else "grid_sample"


__all__ = [
    "CNN",
    "FCN",
    "TRANSFORMS",
    "Resample",
    "ConvLocalization",
    "FCLocalization",
    "STClassifier",
    "SpatialTransformer",
    "Transform",
    "stn_classifier",
]


@dataclasses.dataclass(frozen=True)
class Transform:
    """A transform family: how many parameters, their identity value, and the grid they generate."""

    num_params: int
    identity: Callable[[], np.ndarray]
    grid: Callable[..., jax.Array]  # (params [num_params], shape (h, w), *, align_corners) -> [h, w, 2]


def _tps_transform(grid_size: int) -> Transform:
    k = grid_size * grid_size
    return Transform(
        num_params=2 * k,
        identity=lambda: np.zeros(2 * k, np.float32),
        grid=lambda p, shape, *, align_corners: tps_grid(p.reshape(k, 2), shape, align_corners=align_corners),
    )


#: The four transforms of the STN paper. TPS uses a 4x4 control grid (16 points) as in the paper.
TRANSFORMS: dict[str, Transform] = {
    "affine": Transform(
        6,
        lambda: np.array([1, 0, 0, 0, 1, 0], np.float32),
        lambda p, shape, *, align_corners: affine_grid(p.reshape(2, 3), shape, align_corners=align_corners),
    ),
    "attention": Transform(3, lambda: np.array([1, 0, 0], np.float32), attention_grid),
    "projective": Transform(
        8,
        lambda: np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32),
        lambda p, shape, *, align_corners: projective_grid(
            jnp.concatenate([p, jnp.ones((1,), p.dtype)]).reshape(3, 3), shape, align_corners=align_corners
        ),
    ),
    "tps": _tps_transform(4),
}


class SpatialTransformer(nn.Module):
    """Localisation net -> transform parameters -> sampling grid -> bilinear sampler (STN section 3).

    Attributes:
      localization: Linen module ``[N, H, W, C] -> [N, F]`` (e.g. :class:`ConvLocalization`).
      transform: ``"affine"``, ``"attention"``, ``"projective"`` or ``"tps"`` (16 control points).
      output_shape: ``(h, w)`` of the output; default: the input's size.
      align_corners: the sampler's convention (see :mod:`visattn_jax.sampling`).
      padding_mode: what samples outside the input read.
      sampler: ``"auto"``, ``"grid_sample"`` or ``"separable"`` (:func:`resolve_sampler`: the attention
        transform's crop as two matmuls on TPU; the same numbers up to float rounding).

    Returns ``[N, h, w, C]``. The transform parameters ``[N, P]`` and the grid ``[N, h, w, 2]`` are sown into
    the ``"intermediates"`` collection (``theta``, ``grid``) for figures and inspection.
    """

    localization: nn.Module
    transform: str = "affine"
    output_shape: Sequence[int] | None = None
    align_corners: bool = False
    padding_mode: str = "zeros"
    sampler: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"Unknown transform {self.transform!r}; choose one of {sorted(TRANSFORMS)}.")
        sampler = resolve_sampler(self.sampler, self.transform)
        if x.ndim != 4:
            raise ValueError(f"SpatialTransformer expects [N, H, W, C] images, got shape {x.shape}.")
        spec = TRANSFORMS[self.transform]
        features = self.localization(x)
        if features.ndim != 2 or features.shape[0] != x.shape[0]:
            raise ValueError(f"the localization net must return [N, F] features, got shape {features.shape}.")
        # Zero weights and identity bias: the transformer starts as the identity (the paper's initialisation).
        identity = spec.identity()
        theta = nn.Dense(
            spec.num_params,
            kernel_init=nn.initializers.zeros,
            bias_init=lambda *_: jnp.asarray(identity),
            name="regression",
        )(features)
        shape = tuple(self.output_shape) if self.output_shape is not None else x.shape[1:3]
        grid = jax.vmap(functools.partial(spec.grid, shape=shape, align_corners=self.align_corners))(theta)
        self.sow("intermediates", "theta", theta)
        self.sow("intermediates", "grid", grid)
        if sampler == "separable":  # the attention grid's columns and rows: x = s * base + t_x, y = s * base + t_y
            s, tx, ty = (theta[:, k, None] for k in range(3))
            xs = s * jnp.asarray(base_coords(shape[1], align_corners=self.align_corners))[None] + tx  # [N, w]
            ys = s * jnp.asarray(base_coords(shape[0], align_corners=self.align_corners))[None] + ty  # [N, h]
            sample = functools.partial(
                separable_sample, align_corners=self.align_corners, padding_mode=self.padding_mode
            )
            return jax.vmap(sample)(x, xs.astype(x.dtype), ys.astype(x.dtype))
        return grid_sample(x, grid.astype(x.dtype), align_corners=self.align_corners, padding_mode=self.padding_mode)


class Resample(nn.Module):
    """A spatial transformer frozen at the identity: the input resampled (bilinear, the same sampler) to
    ``output_shape``, with no localisation net and nothing learned. For half the side it is exactly the 2x2
    average. It gives a baseline classifier the view an ST classifier's transformer starts from, so the two
    differ only in the transformer (``stn_classifier(..., view_size=)``)."""

    output_shape: Sequence[int]
    align_corners: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"Resample expects [N, H, W, C] images, got shape {x.shape}.")
        shape = tuple(self.output_shape)
        identity = jnp.asarray(TRANSFORMS["affine"].identity(), x.dtype)
        grid = affine_grid(identity.reshape(2, 3), shape, align_corners=self.align_corners)
        grid = jnp.broadcast_to(grid, (x.shape[0], *grid.shape))
        return grid_sample(x, grid, align_corners=self.align_corners)


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


class FCLocalization(nn.Module):
    """The ST-FCN localisation net: fully connected ReLU layers (with the regression layer, 3 FC layers)."""

    features: Sequence[int] = (32, 32)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _flatten(x)
        for width in self.features:
            x = nn.relu(nn.Dense(width)(x))
        return x


class ConvLocalization(nn.Module):
    """The ST-CNN localisation net: 2x downsampling, two 5x5 conv layers (20 filters) with max pooling, FC."""

    filters: int = 20
    hidden: int = 50
    downsample: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.downsample > 1:
            # Average pooling (flax's avg_pool divides by an int, which strict dtype promotion rejects).
            window = (self.downsample, self.downsample)
            x = nn.pool(x, 0.0, jax.lax.add, window, window, "VALID") / float(self.downsample**2)
        for _ in range(2):
            x = nn.relu(nn.Conv(self.filters, (5, 5))(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return nn.relu(nn.Dense(self.hidden)(_flatten(x)))


class CNN(nn.Module):
    """The paper's CNN classifier: conv 9x9 -> max-pool 2 -> conv 7x7 -> max-pool 2 -> FC -> class logits.

    Attributes:
      num_classes: classifier size.
      filters: channels of the two convolutions.
      attention: None, or a factory (``name=`` -> Linen module ``[N, H, W, C] -> [N, H, W, C]``) applied after
        each convolution's ReLU, before its pooling: the same hook as the ResNets' (:mod:`visattn_jax.resnet`),
        so an SE or CBAM CNN is this CNN with ``attention=se_attention(...)`` / ``cbam_attention(...)``
        (registered as ``stn_se_cnn`` / ``stn_cbam_cnn``). A module whose ``__call__`` takes ``train`` (CBAM's
        BatchNorm) receives the network's.
    """

    num_classes: int = 10
    filters: Sequence[int] = (32, 32)
    attention: Callable[..., nn.Module] | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, (width, size) in enumerate(zip(self.filters, (9, 7), strict=True)):
            x = nn.relu(nn.Conv(width, (size, size))(x))
            if self.attention is not None:
                x = _call(self.attention(name=f"attention{i + 1}"), x, train)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(self.num_classes)(_flatten(x))


def _call(module: nn.Module, x: jax.Array, train: bool) -> jax.Array:
    """``module(x)``, with ``train=`` when its ``__call__`` takes it (BatchNorm inside)."""
    if takes_argument(module, "train"):
        return module(x, train=train)
    return module(x)


class FCN(nn.Module):
    """The paper's FCN classifier: fully connected ReLU layers -> class logits."""

    num_classes: int = 10
    features: Sequence[int] = (128, 128)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _flatten(x)
        for width in self.features:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


class STClassifier(nn.Module):
    """An optional spatial transformer in front of a classifier: ``logits = classifier(st(x))``.

    Attributes:
      classifier: Linen module ``[N, h, w, C] -> [N, num_classes]``.
      transformer: a :class:`SpatialTransformer`, or None for the plain baseline.
    """

    classifier: nn.Module
    transformer: nn.Module | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``[N, H, W, C]`` -> ``[N, num_classes]``; ``train`` reaches a classifier that takes it (a ResNet's
        BatchNorm, CBAM's)."""
        if jnp.ndim(x) != 4:
            raise ValueError(
                f"STClassifier expects images [N, H, W, C], got shape {jnp.shape(x)}; add the channel axis "
                "(x[..., None]) to a batch of grey images [N, H, W]."
            )
        if self.transformer is not None:
            x = self.transformer(x)
        return _call(self.classifier, x, train)


def fcn_features_matching_cnn(size: int, num_classes: int = 10, channels: int = 1) -> tuple[int, int]:
    """Widths ``(w, w)`` of the two hidden layers that give the FCN classifier about as many parameters as the
    CNN classifier on the same ``size x size`` input (the STN paper keeps its models "about the same" size):
    the largest ``w`` with ``w^2 + (D + 2 + num_classes) w + num_classes <= P_CNN``, ``D = size^2 * channels``.
    E.g. 28x28: CNN 68,522 -> (78, 78), FCN 68,182; 42x42: CNN 84,842 -> (46, 46), FCN 83,822.
    """
    cnn = CNN(num_classes=num_classes)
    shapes = jax.eval_shape(lambda: cnn.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels))))
    budget = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))
    d = size * size * channels
    b = d + 2 + num_classes
    width = int((-b + math.sqrt(b * b + 4 * (budget - num_classes))) // 2)
    return (max(width, 1), max(width, 1))


def stn_classifier(
    model: str,
    *,
    transform: str = "affine",
    input_size: int = 28,
    st_output_size: int | None = None,
    view_size: int | None = None,
    num_classes: int = 10,
    **overrides: Any,
) -> STClassifier:
    """Builds the paper's distorted-MNIST models by name.

    Args:
      model: ``"cnn"``, ``"fcn"``, ``"st_cnn"`` or ``"st_fcn"``.
      transform: the ST transform (ignored by the baselines).
      input_size: side of the (square) input images.
      st_output_size: side of the transformer's output (the paper halves it for RTS and cluttered MNIST);
        default: ``input_size``.
      view_size: baselines only: the classifier reads the input resampled to this side (:class:`Resample`,
        the identity transform's view: for ``st_output_size = input_size / 2``, a CNN that differs from the
        ST-CNN only in the transformer); default: the input as it is.
      num_classes: number of classes.
      **overrides: fields of the classifier (``filters=`` for CNNs, ``features=`` for FCNs; default FCN widths:
        :func:`fcn_features_matching_cnn`, as many parameters as the CNN on the same input).

    Returns:
      An :class:`STClassifier`.
    """
    builders = {"cnn": CNN, "fcn": FCN, "st_cnn": CNN, "st_fcn": FCN}
    if model not in builders:
        raise ValueError(f"Unknown model {model!r}; choose one of {sorted(builders)}.")
    if model.startswith("st_") and transform not in TRANSFORMS:
        raise ValueError(f"Unknown transform {transform!r}; choose one of {sorted(TRANSFORMS)}.")
    if view_size is not None and model.startswith("st_"):
        raise ValueError(f"view_size is for the baselines (cnn, fcn); {model} sets its view with st_output_size.")
    if view_size is not None and not 0 < view_size:
        raise ValueError(f"view_size must be a positive side in pixels, got {view_size}.")
    size = (st_output_size or input_size) if model.startswith("st_") else (view_size or input_size)
    if model.endswith("fcn") and "features" not in overrides:
        overrides["features"] = fcn_features_matching_cnn(size, num_classes)
    classifier = builders[model](num_classes=num_classes, **overrides)
    transformer = None
    if model.startswith("st_"):
        localization = ConvLocalization() if model == "st_cnn" else FCLocalization()
        transformer = SpatialTransformer(localization=localization, transform=transform, output_shape=(size, size))
    elif view_size is not None:
        transformer = Resample(output_shape=(size, size))
    return STClassifier(classifier=classifier, transformer=transformer)
