"""Residual backbones in Flax Linen, with one hook where a block-level attention module plugs in.

One builder, :class:`ResNet`, makes every residual network of the library:

* ImageNet ResNet-18/34/50/101/152 and ResNeXt-50/101 (32x4d) in the two layouts in use
  (``../shared/PAPERS.md`` section 2b):

  - ``layout="torchvision"`` ("v1.5", timm ``resnet50``): a downsampling bottleneck strides on its 3x3 conv;
    the stem's 3x3/2 max pool is padded by 1.
  - ``layout="caffe"`` (the original ResNet / SENet Caffe models, timm ``legacy_*``): a downsampling
    bottleneck strides on its first 1x1 conv (ResNeXt units still stride on the grouped 3x3); the stem's max
    pool is unpadded with ceil mode (112 -> 56); the stem sits in a submodule ``layer0`` and the classifier
    is ``last_linear``, as in those models' state dicts.

* Pre-activation bottleneck units (He et al. 2016, "Identity mappings"): BN-ReLU-conv x 3, the building
  block of the Residual Attention Network and of the CIFAR ResNet-164.
* CIFAR ResNets (He et al. 2015, section 4.2): ``6n+2`` basic-block networks with 16/32/64 channels and the
  parameter-free shortcut "option A" (ResNet-20/32/56/110), and the pre-activation ResNet-164.

The attention hook: ``attention`` is a factory (any callable taking ``name=`` and returning a Linen module,
e.g. ``functools.partial(SqueezeExcite, reduction=16)``) whose module maps a feature map ``[N, H, W, C]`` to
a tensor of the same shape (a module whose ``__call__`` takes ``train`` is given the unit's: CBAM's spatial gate
has a BatchNorm). Every residual unit of the stages in ``attention_stages`` applies it at
``attention_position``:

  ``"residual"``   on the residual branch after its last BN, before the addition (SENet's standard block)
  ``"pre"``        on the residual branch's input, before its first layer (SE-PRE; the identity path keeps
                   the unit's input)
  ``"post"``       after the addition (and the ReLU of post-activation units)
  ``"identity"``   on the identity (shortcut) branch
  ``"after_3x3"``  on the residual branch right after the 3x3 convolution's BN and ReLU

so channel and mixed attention are modules, not copies of the network. Module names mirror the PyTorch
(timm) models' names, with ``layer1.0`` written ``layer1_0``: :mod:`visattn_jax.weights` maps a PyTorch
``state_dict`` onto these variables by that rule alone.

Shapes: images ``[N, H, W, C]`` float (NHWC), logits ``[N, num_classes]`` float32. ``train=True`` uses batch
statistics and updates the ``batch_stats`` collection (``mutable=["batch_stats"]``); ``train=False`` uses the
running averages. Under a data-parallel ``jax.sharding`` mesh the batch statistics are those of the global
batch (the mean is a reduction over the sharded batch axis, so XLA inserts the cross-device sum): 1 and N
devices train the same network.

Mixed precision: ``dtype=jnp.bfloat16`` computes convolutions, BN outputs and the classifier in bfloat16;
parameters stay float32 (``param_dtype``), BatchNorm statistics are computed and kept in float32, and the
logits are returned in float32.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "ATTENTION_POSITIONS",
    "BasicBlock",
    "Bottleneck",
    "PreActBottleneck",
    "ResNet",
]

ModuleDef = Callable[..., nn.Module]
Layout = Literal["torchvision", "caffe", "cifar", "preact"]
#: Where a block-level attention module sits in a residual unit (SENet TPAMI Fig. 5; the module docstring
#: defines each): ``residual`` (the standard SE block), ``pre``, ``post``, ``identity``, ``after_3x3``.
ATTENTION_POSITIONS = ("residual", "pre", "post", "identity", "after_3x3")
LAYOUTS = ("torchvision", "caffe", "cifar", "preact")

# PyTorch's BatchNorm defaults: momentum 0.1 (Flax counts it the other way), eps 1e-5.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
# He (fan-out) initialisation for convolutions, as torchvision and timm initialise ResNets.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _apply_attention(block: nn.Module, position: str, x: jax.Array, train: bool) -> jax.Array:
    """Applies the block's attention module if it has one and it sits at ``position``; a module whose
    ``__call__`` takes ``train`` (one with batch statistics, e.g. CBAM's spatial gate) receives the unit's."""
    if block.attention is None or block.attention_position != position:
        return x
    module = block.attention(name=block.attention_name)
    if "train" in inspect.signature(type(module).__call__).parameters:
        return module(x, train=train)
    return module(x)


class _Unit(nn.Module):
    """Fields every residual unit shares (a base class; not used on its own)."""

    features: int  # the unit's output channels
    strides: int = 1
    groups: int = 1
    width: int = 0  # inner width of a bottleneck (0: features // expansion)
    width_1x1: int = 0  # width of a bottleneck's first 1x1 conv if it differs (SENet-154); 0: ``width``
    stride_in_1x1: bool = False  # the Caffe layout strides on the first 1x1 conv of a bottleneck
    shortcut: Literal["B", "A"] = "B"  # B: 1x1 projection + BN where shapes change; A: subsample + zero-pad
    downsample_kernel: int = 1  # SENet-154 uses a 3x3 projection
    zero_init_last: bool = False  # start the unit as the identity (zero gamma of the last BN)
    relu_before_attention: bool = False  # basic blocks of Cadene's / timm's legacy SE-ResNet-18/34
    attention: ModuleDef | None = None
    attention_position: str = "residual"
    attention_name: str = "attention"
    dtype: Any = jnp.float32

    def _conv(self, features, kernel, strides=1, groups=1, name=None):
        pad = (kernel - 1) // 2
        return nn.Conv(
            features,
            (kernel, kernel),
            strides=(strides, strides),
            padding=((pad, pad), (pad, pad)),
            feature_group_count=groups,
            use_bias=False,
            kernel_init=_conv_init,
            dtype=self.dtype,
            name=name,
        )

    def _bn(self, train: bool, name: str, zero: bool = False):
        return nn.BatchNorm(
            use_running_average=not train,
            momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON,
            scale_init=nn.initializers.zeros if zero else nn.initializers.ones,
            dtype=self.dtype,
            name=name,
        )

    def _shortcut(self, x: jax.Array, train: bool) -> jax.Array:
        if self.strides == 1 and x.shape[-1] == self.features:
            return x
        if self.shortcut == "A":  # He et al. 2015 option A: parameter-free
            x = x[:, :: self.strides, :: self.strides, :]
            extra = self.features - x.shape[-1]
            return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        x = self._conv(self.features, self.downsample_kernel, self.strides, name="downsample_0")(x)
        return self._bn(train, "downsample_1")(x)


class BasicBlock(_Unit):
    """Two 3x3 convolutions (post-activation; stride on the first): ResNet-18/34 and the CIFAR ResNets."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        identity = _apply_attention(self, "identity", self._shortcut(x, train), train)
        y = _apply_attention(self, "pre", x, train)  # SE-PRE: the residual branch's input only
        y = self._conv(self.features, 3, self.strides, name="conv1")(y)
        y = nn.relu(self._bn(train, "bn1")(y))
        y = _apply_attention(self, "after_3x3", y, train)
        y = self._conv(self.features, 3, name="conv2")(y)
        y = self._bn(train, "bn2", zero=self.zero_init_last)(y)
        if self.relu_before_attention:
            y = nn.relu(y)
        y = _apply_attention(self, "residual", y, train)
        return _apply_attention(self, "post", nn.relu(y + identity), train)


class Bottleneck(_Unit):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1 with 4x expansion (post-activation).

    The stride sits on the 3x3 conv (torchvision "v1.5") or, with ``stride_in_1x1``, on the first 1x1 conv
    (the Caffe models); ``width`` is the inner width (ResNeXt-50 32x4d: 128 in the first stage).
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = self.width or self.features // 4
        s1, s3 = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
        identity = _apply_attention(self, "identity", self._shortcut(x, train), train)
        y = _apply_attention(self, "pre", x, train)  # SE-PRE: the residual branch's input only
        y = self._conv(self.width_1x1 or width, 1, s1, name="conv1")(y)
        y = nn.relu(self._bn(train, "bn1")(y))
        y = self._conv(width, 3, s3, groups=self.groups, name="conv2")(y)
        y = nn.relu(self._bn(train, "bn2")(y))
        y = _apply_attention(self, "after_3x3", y, train)
        y = self._conv(self.features, 1, name="conv3")(y)
        y = self._bn(train, "bn3", zero=self.zero_init_last)(y)
        y = _apply_attention(self, "residual", y, train)
        return _apply_attention(self, "post", nn.relu(y + identity), train)


class PreActBottleneck(_Unit):
    """Pre-activation bottleneck (He et al. 2016): BN-ReLU-1x1, BN-ReLU-3x3 (stride), BN-ReLU-1x1.

    Where the shape changes, the shortcut is a 1x1 (strided) convolution of the pre-activated input, as in
    the Residual Attention Network's prototxts; otherwise it is the raw input. No BN follows the shortcut.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = self.width or self.features // 4
        # SE-PRE acts on the residual branch's input; the identity path keeps x (a downsampling unit's shortcut
        # convolves the shared pre-activation, as in the prototxts, so there it sees the recalibrated input).
        branch = _apply_attention(self, "pre", x, train)
        pre = nn.relu(self._bn(train, "bn1")(branch))
        if self.strides == 1 and x.shape[-1] == self.features:
            identity = x
        else:
            identity = self._conv(self.features, 1, self.strides, name="downsample")(pre)
        identity = _apply_attention(self, "identity", identity, train)
        y = self._conv(width, 1, name="conv1")(pre)
        y = nn.relu(self._bn(train, "bn2")(y))
        y = self._conv(width, 3, self.strides, groups=self.groups, name="conv2")(y)
        y = nn.relu(self._bn(train, "bn3")(y))
        y = _apply_attention(self, "after_3x3", y, train)
        y = self._conv(self.features, 1, name="conv3")(y)
        y = _apply_attention(self, "residual", y, train)
        return _apply_attention(self, "post", y + identity, train)


_BLOCKS: dict[str, type[_Unit]] = {"basic": BasicBlock, "bottleneck": Bottleneck, "preact_bottleneck": PreActBottleneck}
_EXPANSION = {"basic": 1, "bottleneck": 4, "preact_bottleneck": 4}


class _CaffeStem(nn.Module):
    """The Caffe models' stem, named ``layer0`` like timm's ``legacy_*`` networks: 7x7/2 conv, BN, ReLU, or
    SENet-154's three 3x3 convs (64, 64, 128)."""

    deep: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        convs = [(64, 3, 2), (64, 3, 1), (128, 3, 1)] if self.deep else [(64, 7, 2)]
        for i, (features, kernel, stride) in enumerate(convs, start=1):
            pad = (kernel - 1) // 2
            x = nn.Conv(
                features,
                (kernel, kernel),
                (stride, stride),
                padding=((pad, pad), (pad, pad)),
                use_bias=False,
                kernel_init=_conv_init,
                dtype=self.dtype,
                name=f"conv{i}",
            )(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                dtype=self.dtype,
                name=f"bn{i}",
            )(x)
            x = nn.relu(x)
        return x


def _ceil_max_pool(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
    """Max pool without padding in ceil mode (PyTorch ``ceil_mode=True``, Caffe's pooling): windows that
    start inside the input but overhang its end are kept. ``[N, H, W, C] -> [N, ceil((H-k)/s)+1, ...]``."""
    pads = []
    for size in x.shape[1:3]:
        out = -(-(size - window) // stride) + 1
        if (out - 1) * stride >= size:  # the last window would start in the padding
            out -= 1
        pads.append((0, max((out - 1) * stride + window - size, 0)))
    return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


class ResNet(nn.Module):
    """A residual network: stem, stages of residual units, global average pool, classifier.

    Attributes:
      stage_sizes: units per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
      block: ``"basic"``, ``"bottleneck"`` or ``"preact_bottleneck"``.
      layout: ``"torchvision"`` / ``"caffe"`` (ImageNet stems, 64 base width; see the module docstring),
        ``"cifar"`` (3x3 stem with ``stem_features`` channels, no pooling, post-activation units) or
        ``"preact"`` (same CIFAR stem as a bare conv; pre-activation units; final BN-ReLU before the pool).
      widths: output channels of each stage's units (default: ``64 * 2**i * expansion``; CIFAR: 16/32/64
        times the expansion).
      groups, base_width: ResNeXt cardinality and width per group (32 and 4 for 32x4d); the inner width of a
        bottleneck is ``planes * base_width / 64 * groups`` (torchvision's rule; the Caffe SE-ResNeXt
        models round ``planes * base_width / 64`` down before multiplying, which gives the same widths here).
      num_classes: size of the classifier (logits).
      shortcut: ``"B"`` (projection where shapes change) or ``"A"`` (the CIFAR paper's zero-padding identity).
      stem_features: channels of the CIFAR stem (16).
      deep_stem: SENet-154's stem of three 3x3 convs (Caffe layout only).
      width_1x1_factor: if set, a bottleneck's first 1x1 conv has ``planes * width_1x1_factor`` channels
        instead of the 3x3's width (SENet-154: 2, with 64 groups of 4 on the 3x3).
      downsample_kernel: 1, or 3 for SENet-154's 3x3 projection shortcuts (Caffe layout, stages 2-4).
      zero_init_last: zero-initialise each unit's last BN scale (timm's default; Goyal et al.).
      basic_relu_before_attention: basic blocks apply a ReLU after their second BN, before the attention
        module and the addition: a quirk of Cadene's SE-ResNet-18/34 (timm ``legacy_seresnet18/34``), kept
        only to load their weights; there is no Caffe release of these two.
      in_channels: channels of the input images (3).
      dropout: dropout rate before the classifier (SENet-154: 0.2); needs an ``rngs={"dropout": key}`` in
        training.
      attention: factory of the block-level attention module (see the module docstring) or None.
      attention_position: where in each unit it applies (:data:`ATTENTION_POSITIONS`).
      attention_stages: the 1-based stages whose units get it (None: all).
      attention_name: the attention module's name in each unit (``"se"`` for timm's SE-ResNets,
        ``"se_module"`` for the legacy ones), so state dicts map by name.
      dtype: computation dtype (``jnp.bfloat16`` for mixed precision); parameters stay float32.
    """

    stage_sizes: Sequence[int]
    block: str = "bottleneck"
    layout: str = "torchvision"
    widths: Sequence[int] | None = None
    groups: int = 1
    base_width: int = 64
    num_classes: int = 1000
    shortcut: Literal["A", "B"] = "B"
    stem_features: int = 16
    deep_stem: bool = False
    width_1x1_factor: float = 0.0
    downsample_kernel: int = 1
    zero_init_last: bool = False
    dropout: float = 0.0
    basic_relu_before_attention: bool = False
    in_channels: int = 3
    attention: ModuleDef | None = None
    attention_position: str = "residual"
    attention_stages: Sequence[int] | None = None
    attention_name: str = "attention"
    dtype: Any = jnp.float32

    def _check(self, x: jax.Array) -> None:
        if self.block not in _BLOCKS:
            raise ValueError(f"Unknown block {self.block!r}; choose one of {sorted(_BLOCKS)}.")
        if self.layout not in LAYOUTS:
            raise ValueError(f"Unknown layout {self.layout!r}; choose one of {list(LAYOUTS)}.")
        if self.attention_position not in ATTENTION_POSITIONS:
            raise ValueError(
                f"Unknown attention_position {self.attention_position!r}; choose one of {list(ATTENTION_POSITIONS)}."
            )
        if self.attention_stages is not None:
            bad = [s for s in self.attention_stages if not 1 <= s <= len(self.stage_sizes)]
            if bad:
                raise ValueError(
                    f"attention_stages {list(self.attention_stages)} names stage(s) {bad}, but the network has "
                    f"stages 1..{len(self.stage_sizes)}."
                )
        if x.ndim != 4:
            raise ValueError(f"images must be [N, H, W, C] (NHWC), got shape {x.shape} (rank {x.ndim}).")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"images must be floating point (normalised), got dtype {x.dtype}.")
        if x.shape[-1] != self.in_channels:
            raise ValueError(
                f"images have {x.shape[-1]} channels (shape {x.shape}), but this network takes {self.in_channels} "
                "(NHWC: channels last)."
            )
        # The smallest input whose last stage still has a pixel: the stem (4x on ImageNet) and the strided stages.
        reduction = (4 if self.layout in ("torchvision", "caffe") else 1) * 2 ** (len(self.stage_sizes) - 1)
        if min(x.shape[1:3]) < reduction:
            raise ValueError(
                f"images of {x.shape[1]}x{x.shape[2]} are too small for this {self.layout} network: it "
                f"downsamples by {reduction} before the pool (at least {reduction}x{reduction} is needed)."
            )

    def _stem(self, x: jax.Array, train: bool) -> jax.Array:
        bn = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, dtype=self.dtype
        )
        if self.layout == "caffe":
            x = _CaffeStem(deep=self.deep_stem, dtype=self.dtype, name="layer0")(x, train)
            return _ceil_max_pool(x)
        if self.layout == "torchvision":
            x = nn.Conv(
                64,
                (7, 7),
                (2, 2),
                padding=((3, 3), (3, 3)),
                use_bias=False,
                kernel_init=_conv_init,
                dtype=self.dtype,
                name="conv1",
            )(x)
            x = nn.relu(bn(name="bn1")(x))
            return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        x = nn.Conv(
            self.stem_features,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=_conv_init,
            dtype=self.dtype,
            name="conv1",
        )(x)
        if self.layout == "cifar":  # post-activation: BN-ReLU after the stem; pre-activation units bring their own
            x = nn.relu(bn(name="bn1")(x))
        return x

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``[N, H, W, C]`` images -> ``[N, num_classes]`` float32 logits."""
        self._check(x)
        x = x.astype(self.dtype)
        expansion = _EXPANSION[self.block]
        imagenet = self.layout in ("torchvision", "caffe")
        if self.widths is not None:
            widths = list(self.widths)
            if len(widths) != len(self.stage_sizes):
                raise ValueError(f"widths {widths} must give one width per stage ({len(self.stage_sizes)} stages).")
        else:
            base = 64 if imagenet else 16
            widths = [base * 2**i * expansion for i in range(len(self.stage_sizes))]
        x = self._stem(x, train)
        block_cls = _BLOCKS[self.block]
        for i, (size, features) in enumerate(zip(self.stage_sizes, widths, strict=True)):
            stage = i + 1
            planes = features // expansion
            width = int(planes * self.base_width / 64) * self.groups if self.block != "basic" else 0
            with_attention = self.attention is not None and (
                self.attention_stages is None or stage in self.attention_stages
            )
            for j in range(size):
                strides = 2 if i > 0 and j == 0 else 1
                x = block_cls(
                    features=features,
                    strides=strides,
                    groups=self.groups,
                    width=width,
                    width_1x1=int(planes * self.width_1x1_factor),
                    stride_in_1x1=self.layout == "caffe" and self.groups == 1,
                    shortcut=self.shortcut,
                    downsample_kernel=self.downsample_kernel if i > 0 else 1,
                    zero_init_last=self.zero_init_last,
                    relu_before_attention=self.basic_relu_before_attention and self.block == "basic",
                    attention=self.attention if with_attention else None,
                    attention_position=self.attention_position,
                    attention_name=self.attention_name,
                    dtype=self.dtype,
                    name=f"layer{stage}_{j}",
                )(x, train)
        if self.layout == "preact":
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                dtype=self.dtype,
                name="bn_final",
            )(x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        if self.dropout:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        head = "last_linear" if self.layout == "caffe" else "fc"
        x = nn.Dense(self.num_classes, dtype=self.dtype, name=head)(x)
        return x.astype(jnp.float32)
