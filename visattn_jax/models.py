"""The model registry: every named network of the library, built by name, and its size and cost.

``create_model(name, **overrides)`` returns an (uninitialised) Flax Linen module; names follow timm wherever
timm has the same network (``resnet50``, ``resnext50_32x4d``; ``legacy_*``-style names for the Caffe layout,
whose plain ResNets timm does not have), and say what they are for the CIFAR networks (``cifar_resnet20``,
``cifar_preact_resnet164``). ``list_models()`` lists them. Every model maps float NHWC images to float32
logits: ``model.apply(variables, images, train=False)``; ``train=True`` with ``mutable=["batch_stats"]``
trains (returns ``(logits, {"batch_stats": ...})``). The digit models of the STN and RAM papers are here too
(``st_cnn``, ``stn_fcn``, ``ram``, ``ram_conv`` ...): the STN classifiers take ``train`` (it reaches an attention
module's BatchNorm, CBAM's, when they have one), RAM and its baselines do not (RAM takes a key).

Each entry (:func:`model_info`) carries what training and reporting need besides the network: its
:class:`~visattn_jax.objectives.Objective` (cross-entropy, or RAM's REINFORCE hybrid), the figure of what its
attention does (:mod:`visattn_jax.viz`: sampling grids, glimpse paths, excitations, masks), and the names of
its construction options that an experiment config may set (``num_glimpses``, ``transform``, ``dtype`` ...).
Adding a family means writing its module and registering its builders here with :func:`register`; nothing in
the training core or the experiment entry point changes.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from visattn_jax import viz
from visattn_jax.cbam import cbam_attention
from visattn_jax.objectives import (
    Objective,
    apply_eval,
    cross_entropy_objective,
    eval_kwargs,
    reinforce_objective,
    takes_argument,
)
from visattn_jax.ram import RAM, ConvBaseline
from visattn_jax.residual_attention import CIFAR_ATTENTION, ResidualAttentionNet
from visattn_jax.resnet import ResNet
from visattn_jax.se import se_attention
from visattn_jax.stn import FCN, ConvLocalization, SpatialTransformer, STClassifier, stn_classifier

__all__ = [
    "ModelInfo",
    "create_model",
    "input_size",
    "list_models",
    "model_info",
    "multiply_adds",
    "num_params",
    "register",
]

#: The construction options of the natural-image networks: the number of classes, the compute dtype and the
#: input channels (which the experiment takes from the data, so an ImageNet-style network reads grey digits).
IMAGE_OPTIONS = ("num_classes", "dtype", "in_channels")


class ModelInfo(NamedTuple):
    """A registry entry: what :func:`create_model` builds and what training and reporting need besides it.

    Attributes:
      builder: ``(**overrides) -> nn.Module``.
      input_size: the image side the network was designed for (224 ImageNet, 32 CIFAR, 28 MNIST digits).
      input_channels: channels of that input (3, or 1 for the digit models).
      objective: ``(label_smoothing=0.0) -> Objective`` (:mod:`visattn_jax.objectives`).
      figure: ``(model, variables, inputs, labels, folder, **kw) -> Path | None``, the figure of what the
        network attends to (:mod:`visattn_jax.viz`), or None.
      options: keyword arguments of ``builder`` that an experiment config may set under the same name
        (``config.num_glimpses`` -> ``num_glimpses=``); ``input_size`` / ``in_channels`` among them mean the
        builder is told the side / the channels of the images it will see (from the data, not the config).
    """

    builder: Callable[..., nn.Module]
    input_size: int
    input_channels: int
    objective: Callable[..., Objective]
    figure: Callable[..., Any] | None
    options: tuple[str, ...]


_REGISTRY: dict[str, ModelInfo] = {}


def register(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    input_size: int,
    input_channels: int = 3,
    objective: Callable[..., Objective] = cross_entropy_objective,
    figure: Callable[..., Any] | None = None,
    options: Sequence[str] = IMAGE_OPTIONS,
) -> None:
    """Registers ``builder(**overrides) -> nn.Module`` as ``name`` (see :class:`ModelInfo` for the rest)."""
    if name in _REGISTRY:
        raise ValueError(f"A model named {name!r} is already registered.")
    _REGISTRY[name] = ModelInfo(builder, input_size, input_channels, objective, figure, tuple(options))


def list_models(pattern: str = "") -> list[str]:
    """The registered model names (sorted) that contain ``pattern``."""
    return sorted(name for name in _REGISTRY if pattern in name)


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``. Raises ValueError for an unknown name (with the closest names)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} visattn_jax.models.list_models() lists all {len(_REGISTRY)}.")
    return _REGISTRY[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """The network registered as ``name``, with field overrides (``num_classes=10``, ``dtype=jnp.bfloat16``,
    ``attention=...``).

    Raises:
      ValueError: unknown name (with the closest names) or an override that is not a field of the model.
    """
    builder = model_info(name).builder
    try:
        return builder(**overrides)
    except TypeError as error:
        raise ValueError(f"Bad override for model {name!r}: {error}") from None


def input_size(name: str) -> int:
    """The image size the network ``name`` was designed for (224 for ImageNet networks, 32 for CIFAR, 28 for
    the digit models)."""
    return model_info(name).input_size


def _input_shape(name: str, batch: int = 1) -> tuple[int, int, int, int]:
    info = model_info(name)
    return (batch, info.input_size, info.input_size, info.input_channels)


def _init_variables(model: nn.Module, images: jax.Array) -> Any:
    """All variables of ``model`` (params and state) for ``images``, initialised as its evaluation mode calls it."""
    key = jax.random.PRNGKey(0)
    kwargs = eval_kwargs(model)
    return model.init(key, images, key, **kwargs) if takes_argument(model, "key") else model.init(key, images, **kwargs)


def _abstract_variables(name: str, batch: int = 1) -> Any:
    model = create_model(name)
    return jax.eval_shape(lambda: _init_variables(model, jnp.zeros(_input_shape(name, batch))))


def num_params(variables: Any) -> int:
    """Number of trainable parameters (the ``params`` collection) in ``variables`` (arrays or shape structs), or
    of a registered network given by name (``num_params("seresnet50")``; nothing is allocated)."""
    if isinstance(variables, str):
        variables = _abstract_variables(variables)
    params = variables.get("params", variables) if isinstance(variables, dict) else variables
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def _jaxpr_macs(jaxpr) -> int:
    """Multiply-adds of the convolutions and matrix products in a jaxpr (recursing into sub-jaxprs)."""
    total = 0
    for eqn in jaxpr.eqns:
        if "resample" in str(eqn.source_info.name_stack):
            continue  # resampling (Caffe's Interp) is not a layer's multiply-adds
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *spatial) dims of the kernel
            kernel = math.prod(rhs[d] for d in spec[1:])  # in features per group x window
            total += math.prod(eqn.outvars[0].aval.shape) * kernel
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _jaxpr_macs(inner)
    return total


def multiply_adds(
    model: nn.Module | str, input_shape: Sequence[int] | None = None, variables: Any = None
) -> dict[str, float]:
    """Multiply-adds of one forward pass (evaluation mode) of ``model`` on a batch of ``input_shape``.

    ``model`` may be a registered name; ``input_shape`` then defaults to one image of its input size. Modules
    that take a key (RAM) are counted for one sampled episode.

    Returns ``{"macs": ..., "xla_macs": ...}``: ``macs`` counts every multiply-add of the convolutions and
    dense layers, padding taps included (the convention of the papers and of fvcore / ptflops), and leaves
    out resampling inside a ``jax.named_scope("resample")`` (bilinear upsampling, like Caffe's Interp layers);
    ``xla_macs`` is half of XLA's cost-analysis FLOP count, which skips taps that fall into the padding and
    adds the elementwise work (BN, ReLU, pooling): both are given so neither is mistaken for the other.
    """
    if isinstance(model, str):
        input_shape = input_shape or _input_shape(model)
        model = create_model(model)
    if input_shape is None:
        raise TypeError("multiply_adds needs input_shape, e.g. (1, 224, 224, 3), for a module.")
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    if variables is None:
        variables = jax.eval_shape(lambda: _init_variables(model, jnp.zeros(x.shape, x.dtype)))

    def forward(variables, images):
        return apply_eval(model, variables, images)

    jaxpr = jax.make_jaxpr(forward)(variables, x)
    cost = jax.jit(forward).lower(variables, x).cost_analysis() or {}
    return {"macs": float(_jaxpr_macs(jaxpr.jaxpr)), "xla_macs": float(cost.get("flops", np.nan)) / 2}


# ----------------------------------------------------------------------------------------------------------
# ResNets (visattn_jax.resnet). Depth -> (block, units per stage).
_IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _imagenet_resnet(depth: int, layout: str, **fixed: Any) -> Callable[..., nn.Module]:
    block, stages = _IMAGENET_DEPTHS[depth]
    return functools.partial(ResNet, stage_sizes=stages, block=block, layout=layout, **fixed)


def _cifar_resnet(depth: int, **overrides: Any) -> nn.Module:
    """He et al. 2015 CIFAR ResNets: 6n+2 layers of basic blocks, 16/32/64 channels, option-A shortcuts."""
    n = (depth - 2) // 6
    return ResNet(
        stage_sizes=(n, n, n),
        block="basic",
        layout="cifar",
        shortcut="A",
        num_classes=overrides.pop("num_classes", 10),
        **overrides,
    )


def _cifar_preact_resnet(depth: int, **overrides: Any) -> nn.Module:
    """He et al. 2016 pre-activation bottleneck ResNets for CIFAR: 9n+2 layers, 64/128/256 output channels."""
    n = (depth - 2) // 9
    return ResNet(
        stage_sizes=(n, n, n),
        block="preact_bottleneck",
        layout="preact",
        num_classes=overrides.pop("num_classes", 10),
        **overrides,
    )


for _depth in _IMAGENET_DEPTHS:
    register(f"resnet{_depth}", _imagenet_resnet(_depth, "torchvision"), input_size=224)
    register(f"legacy_resnet{_depth}", _imagenet_resnet(_depth, "caffe"), input_size=224)
for _depth in (50, 101):
    register(f"resnext{_depth}_32x4d", _imagenet_resnet(_depth, "torchvision", groups=32, base_width=4), input_size=224)
    register(
        f"legacy_resnext{_depth}_32x4d", _imagenet_resnet(_depth, "caffe", groups=32, base_width=4), input_size=224
    )
for _depth in (20, 32, 44, 56, 110):
    register(f"cifar_resnet{_depth}", functools.partial(_cifar_resnet, _depth), input_size=32)
for _depth in (164, 1001):
    register(f"cifar_preact_resnet{_depth}", functools.partial(_cifar_preact_resnet, _depth), input_size=32)


# ----------------------------------------------------------------------------------------------------------
# SE networks (visattn_jax.se): the same ResNets with SE on every residual branch. timm's SE-ResNets round
# the reduction to multiples of 8 and name the block "se"; the Caffe models (timm legacy_*) use C // 16 and
# "se_module".
_TIMM_SE = dict(attention=se_attention(reduction=16, rounding="divisible8"), attention_name="se")
_CAFFE_SE = dict(attention=se_attention(reduction=16, rounding="floor"), attention_name="se_module")


def _with_defaults(builder: Callable[..., nn.Module], **defaults: Any) -> Callable[..., nn.Module]:
    """``builder`` with overridable defaults (``create_model(name, attention=...)`` replaces the SE factory)."""

    def build(**overrides: Any) -> nn.Module:
        return builder(**{**defaults, **overrides})

    return build


def _se_network(builder: Callable[..., nn.Module], **defaults: Any) -> Callable[..., nn.Module]:
    """An SE network's builder: :func:`_with_defaults`, and ``se={field: value}`` sets fields of its
    :class:`~visattn_jax.se.SqueezeExcite` blocks over the network's own (the SENet paper's ablations)."""

    def build(*, se: Any = None, **overrides: Any) -> nn.Module:
        model = _with_defaults(builder, **defaults)(**overrides)
        if se:
            model = model.clone(attention=se_attention(**{**model.attention.keywords, **dict(se)}))
        return model

    return build


_SE_FIGURE = dict(figure=viz.excitation_figure)
for _depth in _IMAGENET_DEPTHS:
    register(
        f"seresnet{_depth}",
        _se_network(_imagenet_resnet(_depth, "torchvision"), **_TIMM_SE),
        input_size=224,
        **_SE_FIGURE,
    )
    _quirk = {"basic_relu_before_attention": True} if _depth < 50 else {}  # see ResNet's docstring
    register(
        f"legacy_seresnet{_depth}",
        _se_network(_imagenet_resnet(_depth, "caffe"), **_CAFFE_SE, **_quirk),
        input_size=224,
        **_SE_FIGURE,
    )
for _depth in (50, 101):
    _resnext = dict(groups=32, base_width=4)
    register(
        f"seresnext{_depth}_32x4d",
        _se_network(_imagenet_resnet(_depth, "torchvision", **_resnext), **_TIMM_SE),
        input_size=224,
        **_SE_FIGURE,
    )
    register(
        f"legacy_seresnext{_depth}_32x4d",
        _se_network(_imagenet_resnet(_depth, "caffe", **_resnext), **_CAFFE_SE),
        input_size=224,
        **_SE_FIGURE,
    )
# SENet-154: 3-8-36-3 bottlenecks with 64 groups of 4 on the 3x3 (the first 1x1 at twice the planes), the
# three-conv stem, 3x3 projection shortcuts in stages 2-4, dropout 0.2 before the classifier.
register(
    "legacy_senet154",
    _se_network(
        _imagenet_resnet(152, "caffe"),
        groups=64,
        base_width=4,
        width_1x1_factor=2.0,
        deep_stem=True,
        downsample_kernel=3,
        dropout=0.2,
        **_CAFFE_SE,
    ),
    input_size=224,
    **_SE_FIGURE,
)
_CIFAR_SE = dict(attention=se_attention(reduction=16, rounding="floor"), attention_name="se")
for _depth in (20, 32, 44, 56, 110):
    register(
        f"cifar_se_resnet{_depth}",
        _se_network(functools.partial(_cifar_resnet, _depth), **_CIFAR_SE),
        input_size=32,
        **_SE_FIGURE,
    )
for _depth in (164, 1001):
    register(
        f"cifar_se_preact_resnet{_depth}",
        _se_network(functools.partial(_cifar_preact_resnet, _depth), **_CIFAR_SE),
        input_size=32,
        **_SE_FIGURE,
    )


# ----------------------------------------------------------------------------------------------------------
# CBAM networks (visattn_jax.cbam): the torchvision-layout ResNets and the CIFAR ResNets with CBAM where SE sits
# (the residual branch, before the addition), as in the CBAM authors' code. ResNet-50 + CBAM: 28,089,624
# parameters (the paper's 28.09M).
_CBAM = dict(attention=cbam_attention(reduction=16), attention_name="cbam")
for _depth in _IMAGENET_DEPTHS:
    register(
        f"cbam_resnet{_depth}",
        _with_defaults(_imagenet_resnet(_depth, "torchvision"), **_CBAM),
        input_size=224,
        figure=viz.excitation_figure,
    )
for _depth in (20, 32, 44, 56, 110):
    register(
        f"cifar_cbam_resnet{_depth}",
        _with_defaults(functools.partial(_cifar_resnet, _depth), **_CBAM),
        input_size=32,
        figure=viz.excitation_figure,
    )


# ----------------------------------------------------------------------------------------------------------
# Spatial transformer networks on natural images: the STN paper's claim that the module drops into any network,
# here a spatial transformer (affine by default; the ST-CNN's localisation net: 2x average pool, two 5x5 convs of
# 20 with max pooling, FC 50, identity-initialised regression) in front of a CIFAR ResNet.
def _st_network(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``builder``'s network behind a spatial transformer: ``transform=`` picks its transform, the rest goes to
    the network."""

    def build(*, transform: str = "affine", **overrides: Any) -> nn.Module:
        transformer = SpatialTransformer(localization=ConvLocalization(), transform=transform)
        return STClassifier(classifier=builder(**overrides), transformer=transformer)

    return build


for _depth in (20, 32, 44, 56, 110):
    register(
        f"cifar_st_resnet{_depth}",
        _st_network(functools.partial(_cifar_resnet, _depth)),
        input_size=32,
        figure=viz.transformer_figure,
        options=(*IMAGE_OPTIONS, "transform"),
    )


# ----------------------------------------------------------------------------------------------------------
# Residual Attention Networks (visattn_jax.residual_attention). ImageNet: the Caffe prototxts' Attention-56 and
# -92 (31.81M / 6.27 G and 52.47M / 10.53 G multiply-adds); CIFAR: Attention-(36m + 20), see CIFAR_ATTENTION.
register(
    "attention56",
    _with_defaults(ResidualAttentionNet, modules_per_stage=(1, 1, 1)),
    input_size=224,
    figure=viz.mask_figure,
)
register(
    "attention92",
    _with_defaults(ResidualAttentionNet, modules_per_stage=(1, 2, 3)),
    input_size=224,
    figure=viz.mask_figure,
)
for _m, _depth in ((1, 56), (2, 92), (3, 128), (4, 164), (6, 236)):
    register(
        f"cifar_attention{_depth}",
        _with_defaults(ResidualAttentionNet, modules_per_stage=(_m, _m, _m), **CIFAR_ATTENTION),
        input_size=32,
        figure=viz.mask_figure,
    )
# A small Residual Attention network for 60x60 digit canvases (the cross-family comparison on cluttered MNIST):
# Attention-56's layout (one module per stage, p = 1, t = 2, r = 1, masks pooling 3 / 2 / 1 times) after the
# ImageNet stem (7x7/2 conv, 3x3/2 max pool: 60 -> 15), widths 32 / 64 / 128 / 128 and the last stage at 4x4.
register(
    "digit_attention56",
    _with_defaults(
        ResidualAttentionNet,
        modules_per_stage=(1, 1, 1),
        widths=(16, 32, 64, 64),
        stem_features=16,
        last_stage_stride=1,
        num_classes=10,
        in_channels=1,
    ),
    input_size=60,
    input_channels=1,
    figure=viz.mask_figure,
)
register(
    "cifar_attention452",
    _with_defaults(ResidualAttentionNet, modules_per_stage=(6, 6, 6), p=2, t=4, r=3, bottom_units=3, **CIFAR_ATTENTION),
    input_size=32,
    figure=viz.mask_figure,
)


# ----------------------------------------------------------------------------------------------------------
# The digit models of the STN paper (visattn_jax.stn; Table 1: distorted MNIST) and of the RAM paper
# (visattn_jax.ram; Tables 1-2: MNIST, translated and cluttered canvases). One input channel; their layers
# depend on the canvas, so the builders take the side of the images they will see (``input_size``).
_STN_OPTIONS = ("num_classes", "input_size", "view_size")
register("stn_cnn", functools.partial(stn_classifier, "cnn"), input_size=28, input_channels=1, options=_STN_OPTIONS)
register("stn_fcn", functools.partial(stn_classifier, "fcn"), input_size=28, input_channels=1, options=_STN_OPTIONS)
for _name in ("st_cnn", "st_fcn"):
    register(
        _name,
        functools.partial(stn_classifier, _name),
        input_size=28,
        input_channels=1,
        figure=viz.transformer_figure,
        options=("num_classes", "input_size", "transform", "st_output_size"),
    )
# The STN paper's CNN with channel or channel-and-spatial attention after each convolution (stn.CNN's hook): the
# SE and CBAM CNNs "of the same size" of the cross-family comparison (reduction 16: 32 -> 2 -> 32 channels).
for _name, _attention in (("stn_se_cnn", se_attention(reduction=16)), ("stn_cbam_cnn", cbam_attention(reduction=16))):
    register(
        _name,
        functools.partial(stn_classifier, "cnn", attention=_attention),
        input_size=28,
        input_channels=1,
        figure=viz.excitation_figure,
        options=_STN_OPTIONS,
    )
_RAM_OPTIONS = ("num_glimpses", "glimpse_size", "num_scales", "antialias", "core", "location_std", "sensor_method")


for _name, _random in (("ram", False), ("ram_random", True)):
    register(
        _name,
        functools.partial(RAM, random_locations=_random),
        input_size=60,
        input_channels=1,
        objective=reinforce_objective,
        figure=viz.glimpse_figure,
        options=("num_classes", *_RAM_OPTIONS),
    )
# The RAM paper's baselines: 2 x 256 fully connected, and convolutional ones (ConvBaseline's docstring).
register(
    "ram_fc", functools.partial(FCN, features=(256, 256)), input_size=60, input_channels=1, options=("num_classes",)
)
register("ram_conv", ConvBaseline, input_size=60, input_channels=1, options=("num_classes",))
register("ram_conv_paper", ConvBaseline.paper, input_size=60, input_channels=1, options=("num_classes",))
