"""Channel attention: Squeeze-and-Excitation (Hu, Shen, Sun, CVPR 2018 / TPAMI 2019, arXiv 1709.01507).

:class:`SqueezeExcite` works on any ``[N, H, W, C]`` feature map: squeeze (global average, or max, pooling
over the positions) -> excitation (FC ``C -> C/r``, ReLU, FC ``C/r -> C``, gate) -> scale (each channel
multiplied by its gate). The FCs are 1x1 convolutions with biases, as in the released models (so PyTorch
state dicts load unchanged); ``use_bias=False`` gives the TPAMI ablations' bias-free FCs. The excitation
vector ``[N, C]`` is sown as ``intermediates/excitation`` for analyses (``mutable=["intermediates"]``).

SE networks are the library's ResNets with SE plugged into the residual-unit hook of
:class:`visattn_jax.resnet.ResNet` (``attention=SqueezeExcite-factory``): the standard SE block sits on the
residual branch after its last BN, before the addition; the TPAMI integration variants are the hook's other
positions (``"pre"``, ``"post"``, ``"identity"``, ``"after_3x3"``), and ``attention_stages`` puts SE in
chosen stages only. :func:`se_attention` makes the factory.

Reduction rounding: the original Caffe models (timm ``legacy_*``) use ``C // r`` (``rounding="floor"``);
timm's SE-ResNets use ``make_divisible(C / r, 8)`` (``rounding="divisible8"``), which differs only for
64-channel stages (8 instead of 4): SE-ResNet-18 has 11,779,624 parameters one way and 11,778,592 the other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["GATES", "SQUEEZES", "SqueezeExcite", "reduced_channels", "se_attention"]

#: The squeeze operators of :class:`SqueezeExcite`: global average pooling (the paper's), max pooling, none.
SQUEEZES = ("avg", "max", "none")
#: The excitation's gates (SENet TPAMI Table 12): name -> elementwise function.
GATES: dict[str, Callable[[jax.Array], jax.Array]] = {"sigmoid": nn.sigmoid, "tanh": jnp.tanh, "relu": nn.relu}


def reduced_channels(channels: int, reduction: int, rounding: str = "floor") -> int:
    """Width of the excitation's bottleneck: ``channels // reduction`` ("floor", the Caffe models) or timm's
    ``make_divisible(channels / reduction, 8)`` ("divisible8": round to a multiple of 8, at least 8)."""
    if reduction < 1:
        raise ValueError(f"reduction must be a positive integer, got {reduction}.")
    if rounding == "floor":
        width = channels // reduction
    elif rounding == "divisible8":
        width = max(8, int(channels / reduction + 4) // 8 * 8)
    else:
        raise ValueError(f"Unknown rounding {rounding!r}; choose floor or divisible8.")
    if width < 1:
        raise ValueError(
            f"reduction={reduction} is larger than the {channels} channels of the feature map: the excitation "
            "would have no units. Use a smaller reduction."
        )
    return width


class SqueezeExcite(nn.Module):
    """The SE block: ``x * gate(FC2(ReLU(FC1(squeeze(x)))))``.

    Attributes:
      reduction: ratio r of the excitation's bottleneck (16 in the paper).
      rounding: ``"floor"`` (``C // r``) or ``"divisible8"`` (timm's rounding); see :func:`reduced_channels`.
      squeeze: ``"avg"`` (the paper), ``"max"`` (the TPAMI ablation) or ``"none"`` (NoSqueeze: the FCs
        become 1x1 convolutions applied at every position, so the gate varies over space).
      gate: ``"sigmoid"`` (the paper), ``"tanh"`` or ``"relu"`` (the TPAMI ablation).
      use_bias: biases in the two FCs (the released models: True; the TPAMI ablations: False).
      dtype: computation dtype.
    """

    reduction: int = 16
    rounding: Literal["floor", "divisible8"] = "floor"
    squeeze: Literal["avg", "max", "none"] = "avg"
    gate: Literal["sigmoid", "tanh", "relu"] = "sigmoid"
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[N, H, W, C]`` -> ``[N, H, W, C]``."""
        if x.ndim != 4:
            raise ValueError(f"SqueezeExcite takes [N, H, W, C] feature maps, got shape {x.shape}.")
        if self.squeeze not in SQUEEZES:
            raise ValueError(f"Unknown squeeze {self.squeeze!r}; choose one of {list(SQUEEZES)}.")
        if self.gate not in GATES:
            raise ValueError(f"Unknown gate {self.gate!r}; choose one of {sorted(GATES)}.")
        channels = x.shape[-1]
        hidden = reduced_channels(channels, self.reduction, self.rounding)
        if self.squeeze == "avg":
            s = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
        elif self.squeeze == "max":
            s = jnp.max(x, axis=(1, 2), keepdims=True)
        else:
            s = x
        conv = functools.partial(nn.Conv, kernel_size=(1, 1), use_bias=self.use_bias, dtype=self.dtype)
        e = conv(hidden, name="fc1")(s)
        e = conv(channels, name="fc2")(nn.relu(e))
        e = GATES[self.gate](e)
        self.sow("intermediates", "excitation", e[:, 0, 0, :] if self.squeeze != "none" else e)
        return x * e.astype(x.dtype)


def se_attention(**fields: Any) -> Callable[..., nn.Module]:
    """A factory for the ResNet hook: ``se_attention(reduction=16)(name="se")`` is a :class:`SqueezeExcite`.

    Raises:
      ValueError: a field that :class:`SqueezeExcite` does not have.
    """
    return checked_partial(SqueezeExcite, fields)


def checked_partial(module: type[nn.Module], fields: dict[str, Any]) -> Callable[..., nn.Module]:
    """``functools.partial(module, **fields)`` after checking that each field exists (the attention factories'
    shared check: a misspelt field fails here, not at initialisation deep inside a network)."""
    known = set(module.__dataclass_fields__) - {"parent", "name"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{module.__name__} has no field(s) {unknown}; its fields are {sorted(known)}.")
    return functools.partial(module, **fields)
