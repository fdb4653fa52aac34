"""Channel and spatial attention in sequence: CBAM (Woo, Park, Lee, Kweon, ECCV 2018, arXiv 1807.06521).

:class:`CBAM` refines any ``[N, H, W, C]`` feature map in two steps (paper eq. 1, Fig. 2):

* **channel attention** (eq. 2): ``Mc = sigmoid(MLP(avgpool(F)) + MLP(maxpool(F)))``, one MLP ``C -> C/r ->
  C`` (ReLU between, biases, as in the authors' code) shared by the two pooled descriptors; ``F' = Mc * F``;
* **spatial attention** (eq. 3): ``Ms = sigmoid(BN(conv7x7([max_c(F'), mean_c(F')])))``: the channel-wise max
  and mean of ``F'`` stacked as two maps, one 7x7 convolution to one map (no bias), BatchNorm (the authors'
  code; momentum 0.01 in PyTorch's convention, eps 1e-5), sigmoid; ``F'' = Ms * F'``.

In a ResNet, CBAM sits where SE does, on the residual branch before the addition (paper Fig. 3): the library's
ResNets take it through their attention hook (:func:`cbam_attention`; :mod:`visattn_jax.models` registers
``cbam_resnet18`` ... ``cbam_resnet152`` and ``cifar_cbam_resnet20`` ...). The parameter count of ResNet-50 +
CBAM is the paper's 28.09M (its Table 4): SE-ResNet-50's 28,088,024 plus 100 per block (98 conv weights and the
BN's scale and bias) for 16 blocks, 28,089,624. Both attention maps are sown (``mutable=["intermediates"]``):
``excitation`` ``[N, C]`` (the channel gate, as SE's) and ``mask`` ``[N, H, W, 1]`` (the spatial gate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visattn_jax.se import checked_partial

__all__ = ["CBAM", "cbam_attention"]

# The authors' code: BatchNorm2d(momentum=0.01, eps=1e-5) after the spatial convolution. Flax counts the
# momentum the other way (the weight of the old running average).
_SPATIAL_BN_MOMENTUM = 0.99
_SPATIAL_BN_EPSILON = 1e-5


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention.

    Attributes:
      reduction: ratio r of the channel MLP's bottleneck (16 in the paper); hidden width ``max(C // r, 1)``.
      kernel_size: the spatial attention's convolution size (7 in the paper; its Table 2 compares 3).
      use_spatial: False drops the spatial step (channel attention with average and max pooling only, the
        paper's Table 1 rows).
      dtype: computation dtype.
    """

    reduction: int = 16
    kernel_size: int = 7
    use_spatial: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``[N, H, W, C]`` -> ``[N, H, W, C]``; ``train`` selects batch statistics for the spatial BN."""
        if x.ndim != 4:
            raise ValueError(f"CBAM takes [N, H, W, C] feature maps, got shape {x.shape}.")
        if self.reduction < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(
                f"CBAM needs reduction >= 1 and an odd kernel_size, got {self.reduction} and {self.kernel_size}."
            )
        channels = x.shape[-1]
        hidden = max(channels // self.reduction, 1)
        fc1 = nn.Dense(hidden, dtype=self.dtype, name="fc1")
        fc2 = nn.Dense(channels, dtype=self.dtype, name="fc2")
        mlp = lambda s: fc2(nn.relu(fc1(s)))  # noqa: E731 (one MLP, applied to both descriptors)
        average = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)
        gate = nn.sigmoid(mlp(average) + mlp(jnp.max(x, axis=(1, 2))))  # [N, C]
        self.sow("intermediates", "excitation", gate)
        x = x * gate[:, None, None, :].astype(x.dtype)
        if not self.use_spatial:
            return x
        pooled = jnp.concatenate(
            [jnp.max(x, axis=-1, keepdims=True), jnp.mean(x.astype(jnp.float32), -1, keepdims=True).astype(x.dtype)],
            axis=-1,
        )  # [N, H, W, 2]: max, then mean (the authors' order)
        pad = self.kernel_size // 2
        logits = nn.Conv(
            1, (self.kernel_size, self.kernel_size), padding=((pad, pad), (pad, pad)), use_bias=False,
            dtype=self.dtype, name="spatial_conv",
        )(pooled)  # fmt: skip
        logits = nn.BatchNorm(
            use_running_average=not train,
            momentum=_SPATIAL_BN_MOMENTUM,
            epsilon=_SPATIAL_BN_EPSILON,
            dtype=self.dtype,
            name="spatial_bn",
        )(logits)
        mask = nn.sigmoid(logits)  # [N, H, W, 1]
        self.sow("intermediates", "mask", mask)
        return x * mask.astype(x.dtype)


def cbam_attention(**fields: Any) -> Callable[..., nn.Module]:
    """A factory for the ResNet hook: ``cbam_attention(reduction=16)(name="cbam")`` is a :class:`CBAM`.

    Raises:
      ValueError: a field that :class:`CBAM` does not have.
    """
    return checked_partial(CBAM, fields)
