"""Mixed attention: the Residual Attention Network (Wang et al., CVPR 2017, arXiv 1704.06904).

An :class:`AttentionModule` has a trunk branch ``T(x)`` (``t`` pre-activation residual units) and a soft
mask branch ``M(x)`` built as the official Caffe models build it (``../shared/PAPERS.md`` sections 3, 3b):

    x -> p units -> ┬-> trunk: t units ------------------------------------------┐
                    └-> mask: [max pool, r units, (skip unit)] x depth (2r units  │
                        at the lowest level) -> [align-corners bilinear upsampling │
                        to the matching map, + skip, r units] -> upsample to T's   │
                        size -> BN-ReLU-1x1-BN-ReLU-1x1 (no bias) -> activation    │
                    H = (1 + M) * T  (attention residual learning; naive: M * T) <-┘
    -> p units

The mask branch starts from the output of the ``p`` pre-processing units, like the trunk. Each max pool is
3x3 / 2 in ceil mode (Caffe's pooling); each upsampling goes to the exact size of the map it is added to
(Caffe's ``Interp`` layer, align-corners), through the library's separable sampler
(:func:`visattn_jax.sampling.interpolation_taps` / :func:`~visattn_jax.sampling.apply_taps`), so any input
size works (224, 225, 32, 40 ...). Mask activations (index i = position, c = channel):

  ``"mixed"``    sigmoid(x_ic)                                   (the paper's f1; default)
  ``"channel"``  x_ic / ||x_i||_2 over channels                   (f2)
  ``"spatial"``  sigmoid((x_ic - mean_c) / std_c) over positions  (f3)

``mask_structure="local"`` replaces the encoder-decoder by three residual units at the input resolution
(the paper's "local convolutions" ablation), followed by the same head. The module sows its mask
(``intermediates/mask``, ``[N, H, W, C]``).

Networks (:class:`ResidualAttentionNet`): Attention-56 / -92 for ImageNet as in the prototxts (stem 7x7/2 conv,
BN, ReLU, 3x3/2 max pool; stages at 56, 28, 14 with 256/512/1024 channels whose masks pool 3, 2, 1 times;
three units of 2048 channels at 7x7; BN-ReLU, average pool, FC), and the CIFAR variants (3x3 stem, stages at
32, 16, 8, 8; see :data:`CIFAR_ATTENTION`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from visattn_jax.resnet import _BN_EPSILON, _BN_MOMENTUM, PreActBottleneck, _ceil_max_pool, _conv_init
from visattn_jax.sampling import apply_taps, interpolation_taps

__all__ = [
    "ACTIVATIONS",
    "CIFAR_ATTENTION",
    "AttentionModule",
    "ResidualAttentionNet",
    "mask_activation",
    "resize_align_corners",
]

#: The soft mask's activations (paper Sec. 3.3, :func:`mask_activation`): ``mixed`` (sigmoid), ``channel`` (L2
#: normalisation over channels at each position), ``spatial`` (standardised over positions per channel, sigmoid).
ACTIVATIONS = ("mixed", "channel", "spatial")
_EPS = 1e-5  # guards the channel norm and the spatial standard deviation against zero


def resize_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize with aligned corners (Caffe's ``Interp``; PyTorch ``align_corners=True``).

    ``[N, H, W, C] -> [N, h, w, C]``: output pixel ``i`` reads input position ``i * (H - 1) / (h - 1)``. Built on
    the library's sampler (two taps per output row and column). Runs under the named scope ``resample``
    (which :func:`visattn_jax.models.multiply_adds` leaves out, as the papers' counts leave out Caffe's
    Interp layers).
    """
    with jax.named_scope("resample"):
        height, width = size
        rows = interpolation_taps(jnp.linspace(-1.0, 1.0, height), x.shape[1], align_corners=True)
        cols = interpolation_taps(jnp.linspace(-1.0, 1.0, width), x.shape[2], align_corners=True)
        return jax.vmap(lambda image: apply_taps(image, rows, cols))(x)


def mask_activation(x: jax.Array, kind: str) -> jax.Array:
    """The paper's mask activations f1 (mixed), f2 (channel), f3 (spatial) of ``[N, H, W, C]`` logits."""
    if kind == "mixed":
        return nn.sigmoid(x)
    if kind == "channel":
        norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True) + _EPS)
        return (x / norm.astype(x.dtype)).astype(x.dtype)
    if kind == "spatial":
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
        std = jnp.sqrt(jnp.var(x32, axis=(1, 2), keepdims=True) + _EPS)
        return nn.sigmoid((x32 - mean) / std).astype(x.dtype)
    raise ValueError(f"Unknown mask activation {kind!r}; choose one of {list(ACTIVATIONS)}.")


class AttentionModule(nn.Module):
    """One attention module: ``p`` units, trunk (``t`` units) x soft mask, ``p`` units.

    Attributes:
      features: channels in and out (the trunk's width; bottleneck units of ``features // 4``).
      p, t, r: the paper's hyperparameters (units before and after, trunk units, units per mask level).
      mask_depth: number of max-pool levels in the mask branch (skip connections: ``mask_depth - 1``).
      residual: ``"arl"`` (attention residual learning, ``(1 + M) * T``) or ``"nal"`` (naive, ``M * T``).
      activation: ``"mixed"``, ``"channel"`` or ``"spatial"`` (see :func:`mask_activation`).
      mask_structure: ``"encoder_decoder"`` (the paper) or ``"local"`` (three units, no pooling).
      dtype: computation dtype.
    """

    features: int
    p: int = 1
    t: int = 2
    r: int = 1
    mask_depth: int = 1
    bottom_units: int = 0  # units at the mask's lowest resolution (0: 2r, as the prototxts)
    residual: Literal["arl", "nal"] = "arl"
    activation: Literal["mixed", "channel", "spatial"] = "mixed"
    mask_structure: Literal["encoder_decoder", "local"] = "encoder_decoder"
    dtype: Any = jnp.float32

    def _unit(self, name: str):
        return PreActBottleneck(features=self.features, dtype=self.dtype, name=name)

    def _check(self, x: jax.Array) -> None:
        if x.ndim != 4:
            raise ValueError(f"AttentionModule takes [N, H, W, C] feature maps, got shape {x.shape}.")
        if self.residual not in ("arl", "nal"):
            raise ValueError(f"Unknown residual {self.residual!r}; choose arl ((1 + M) * T) or nal (M * T).")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown mask activation {self.activation!r}; choose one of {list(ACTIVATIONS)}.")
        if self.mask_structure not in ("encoder_decoder", "local"):
            raise ValueError(f"Unknown mask_structure {self.mask_structure!r}; choose encoder_decoder or local.")
        if min(self.p, self.t, self.r) < 0 or self.t < 1 or self.r < 1:
            raise ValueError(f"p >= 0, t >= 1 and r >= 1 are needed, got p={self.p}, t={self.t}, r={self.r}.")
        if self.mask_structure == "encoder_decoder":
            if self.mask_depth < 1:
                raise ValueError(f"mask_depth must be at least 1, got {self.mask_depth}.")
            size = min(x.shape[1:3])
            for _ in range(self.mask_depth):
                if size < 3:
                    raise ValueError(
                        f"A {x.shape[1]}x{x.shape[2]} feature map cannot be max-pooled {self.mask_depth} times "
                        f"(3x3 windows need at least 3 pixels at every level): use a smaller mask_depth."
                    )
                size = -(-(size - 3) // 2) + 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``[N, H, W, C] -> [N, H, W, C]`` with ``C == features``."""
        self._check(x)
        for i in range(self.p):
            x = self._unit(f"pre_{i}")(x, train)
        trunk = x
        for i in range(self.t):
            trunk = self._unit(f"trunk_{i}")(trunk, train)
        m = self._mask(x, train)
        self.sow("intermediates", "mask", m)
        out = (1 + m) * trunk if self.residual == "arl" else m * trunk
        for i in range(self.p):
            out = self._unit(f"post_{i}")(out, train)
        return out

    def _mask(self, x: jax.Array, train: bool) -> jax.Array:
        m = x
        if self.mask_structure == "local":
            for i in range(3):
                m = self._unit(f"mask_local_{i}")(m, train)
        else:
            skips, sizes = [], []
            for level in range(self.mask_depth):
                sizes.append(m.shape[1:3])
                m = _ceil_max_pool(m)
                last = level == self.mask_depth - 1
                for i in range((self.bottom_units or 2 * self.r) if last else self.r):
                    m = self._unit(f"mask_down{level}_{i}")(m, train)
                if not last:
                    skips.append(self._unit(f"mask_skip{level}")(m, train))
            for level in reversed(range(self.mask_depth)):
                m = resize_align_corners(m, sizes[level])
                if level > 0:
                    m = m + skips[level - 1]
                    for i in range(self.r):
                        m = self._unit(f"mask_up{level}_{i}")(m, train)
        for i in (1, 2):
            m = nn.BatchNorm(
                use_running_average=not train,
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                dtype=self.dtype,
                name=f"mask_bn{i}",
            )(m)
            m = nn.relu(m)
            m = nn.Conv(
                self.features, (1, 1), use_bias=False, kernel_init=_conv_init, dtype=self.dtype, name=f"mask_conv{i}"
            )(m)
        return mask_activation(m, self.activation)


#: The CIFAR networks. The paper gives their depth (36m + 20 with {p=1, t=2, r=1}; Attention-452: {p=2, t=4,
#: r=3}, 6 modules per stage) and parameter counts (Attention-92 1.9M, -236 5.1M, -452 8.6M), not their widths.
#: Our choice: ResNet-164's widths (stage outputs 64, 128, 256, bottlenecks of a quarter), a 16-channel 3x3
#: stem, masks that pool down to 4x4 as the ImageNet masks pool down to 7x7 (3, 2, 1 levels at 32, 16, 8), and
#: a last stage of three 256-channel units at 8x8 (the ImageNet networks' three units, neither widened nor
#: strided: a 512-wide stage would add 0.8M parameters to every network). Attention-452's masks keep r = 3
#: units at their lowest level (2r = 6 would give 10.3M). Counts: Attention-92 1.960M (+3.1% over the paper's
#: 1.9M), -236 5.203M (+2.0%), -452 8.630M (+0.4%); tested in tests/test_residual_attention.py. Two
#: alternatives fit the counts closer but change the design: two last-stage units instead of three (1.889M,
#: 5.133M, 8.560M; depth 36m + 17) or identity skips instead of skip units (about 1.91M, 5.05M, 8.47M).
CIFAR_ATTENTION = dict(
    widths=(64, 128, 256, 256),
    mask_depths=(3, 2, 1),
    stem="cifar",
    stem_features=16,
    last_stage_stride=1,
    num_classes=10,
)


class ResidualAttentionNet(nn.Module):
    """Residual Attention Network: stem, three stages of attention modules, a last stage of plain units.

    Attributes:
      modules_per_stage: attention modules in stages 1-3 (Attention-56: (1, 1, 1); -92: (1, 2, 3); CIFAR
        Attention-(36m + 20): (m, m, m)).
      mask_depths: max-pool levels of the masks in stages 1-3 (ImageNet: (3, 2, 1), down to 7x7; CIFAR:
        (3, 2, 1), down to 4x4).
      widths: output channels of stages 1-4 (ImageNet: 256, 512, 1024, 2048).
      stem: ``"imagenet"`` (7x7/2 conv, BN, ReLU, 3x3/2 max pool) or ``"cifar"`` (3x3 conv of
        ``stem_features``).
      p, t, r, residual, activation, mask_structure: see :class:`AttentionModule`.
      bottom_units: units at each mask's lowest resolution (0: 2r, the prototxts).
      last_stage_units: plain units of the last stage (3).
      last_stage_stride: stride of the last stage's first unit (ImageNet: 2, 14 -> 7; CIFAR: 1).
      num_classes: classifier size.
      dtype: computation dtype.
    """

    modules_per_stage: Sequence[int] = (1, 1, 1)
    mask_depths: Sequence[int] = (3, 2, 1)
    widths: Sequence[int] = (256, 512, 1024, 2048)
    stem: Literal["imagenet", "cifar"] = "imagenet"
    stem_features: int = 64
    p: int = 1
    t: int = 2
    r: int = 1
    bottom_units: int = 0
    residual: str = "arl"
    activation: str = "mixed"
    mask_structure: str = "encoder_decoder"
    last_stage_units: int = 3
    last_stage_stride: int = 2
    num_classes: int = 1000
    in_channels: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``[N, H, W, C]`` images -> ``[N, num_classes]`` float32 logits."""
        if x.ndim != 4:
            raise ValueError(f"images must be [N, H, W, C] (NHWC), got shape {x.shape} (rank {x.ndim}).")
        if x.shape[-1] != self.in_channels:
            raise ValueError(
                f"images have {x.shape[-1]} channels (shape {x.shape}), but the network takes {self.in_channels}."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"images must be floating point (normalised), got dtype {x.dtype}.")
        if len(self.modules_per_stage) != 3 or len(self.mask_depths) != 3 or len(self.widths) != 4:
            raise ValueError("modules_per_stage and mask_depths need 3 entries (stages 1-3), widths 4.")
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"Unknown stem {self.stem!r}; choose imagenet or cifar.")
        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = nn.Conv(
                self.stem_features, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                kernel_init=_conv_init, dtype=self.dtype, name="conv1",
            )(x)  # fmt: skip
            x = nn.relu(
                nn.BatchNorm(
                    use_running_average=not train,
                    momentum=_BN_MOMENTUM,
                    epsilon=_BN_EPSILON,
                    dtype=self.dtype,
                    name="bn1",
                )(x)  # fmt: skip
            )
            x = _ceil_max_pool(x)
        else:
            x = nn.Conv(
                self.stem_features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=_conv_init,
                dtype=self.dtype, name="conv1",
            )(x)  # fmt: skip
        for stage in range(3):
            features = self.widths[stage]
            x = PreActBottleneck(features, strides=1 if stage == 0 else 2, dtype=self.dtype, name=f"unit{stage + 1}")(
                x, train
            )
            for j in range(self.modules_per_stage[stage]):
                x = AttentionModule(
                    features,
                    p=self.p,
                    t=self.t,
                    r=self.r,
                    mask_depth=self.mask_depths[stage],
                    bottom_units=self.bottom_units,
                    residual=self.residual,
                    activation=self.activation,
                    mask_structure=self.mask_structure,
                    dtype=self.dtype,
                    name=f"attention{stage + 1}_{j}",
                )(x, train)
        for i in range(self.last_stage_units):
            x = PreActBottleneck(
                self.widths[3], strides=self.last_stage_stride if i == 0 else 1, dtype=self.dtype, name=f"unit4_{i}"
            )(x, train)
        x = nn.BatchNorm(
            use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, dtype=self.dtype,
            name="bn_final",
        )(x)  # fmt: skip
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x).astype(jnp.float32)
