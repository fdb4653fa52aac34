"""Differentiable bilinear sampling: the one sampler every part of visattn_jax runs on.

Conventions (stated once here, used everywhere in the package)
----------------------------------------------------------------
* **Pull direction.** A sampling grid says, for every *output* pixel, where in the *input* image it reads
  from (output -> input), exactly like ``torch.nn.functional.grid_sample`` and the STN paper's
  ``T_theta(G)`` (Jaderberg et al. 2015, eq. 1).
* **Layout.** Images are channels-last: one image is ``[H, W, C]``, a batch is ``[N, H, W, C]``.
* **Coordinate order.** The last axis of a grid is ``(x, y)``: ``coords[..., 0]`` is x along the width axis,
  ``coords[..., 1]`` is y along the height axis (PyTorch's order). ``(-1, -1)`` is the top-left.
* **Normalisation.** Coordinates are normalised to ``[-1, 1]`` per axis. With ``align_corners=True``,
  -1 and +1 are the *centres* of the corner pixels: ``x_pix = (x + 1) / 2 * (W - 1)``. With
  ``align_corners=False`` (the default, as in PyTorch >= 1.3) they are the *outer edges* of the corner pixels:
  ``x_pix = ((x + 1) * W - 1) / 2``. Pixel ``i`` has its centre at pixel coordinate ``i``.
* **Padding.** What a sample outside the image reads (``padding_mode``):
  ``"zeros"``: each of the four bilinear taps that falls outside reads 0, so values fade smoothly to 0 over
  the last pixel; ``"border"``: the pixel coordinate is clamped to ``[0, size - 1]`` (the edge value
  repeats, zero gradient with respect to the coordinate outside); ``"reflection"``: the coordinate is
  reflected at the image border (at the corner-pixel centres if ``align_corners`` else at the outer edges),
  then clamped. These are PyTorch's definitions, so results match ``grid_sample(mode="bilinear")``.
  (Reflecting a float32 coordinate millions of pixels away is only as exact as float32 there.)
* **Non-finite coordinates.** A sample whose x or y is NaN or +-inf reads 0 (all four of its taps have
  weight 0), in every padding mode, and passes a zero gradient and tangent to its coordinates and to the
  image. (PyTorch also returns 0 there.)
* **Differentiability.** With respect to the image and the coordinates, in forward and reverse mode, to any
  order (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``, ``jax.grad``, ``jax.hessian``). The four-tap
  combination has a custom JVP that is linear in the tangents, so reverse mode is its transpose: flat
  scatter-adds for the image gradient, the gathered corner values reused for the coordinate gradient.
  Sub-gradients at integer pixel coordinates are one-sided (the STN paper, eq. 6-7).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from visattn_jax.backend import resolve_backend

#: How a tap outside the image reads (PyTorch's ``padding_mode``): 0, the nearest border pixel, or the
#: image reflected at its border (``align_corners`` decides at which edge).
PaddingMode = Literal["zeros", "border", "reflection"]
#: PyTorch's ``grid_sample`` ``mode``: 2 x 2 taps (2 x 2 x 2 on volumes), 1 tap, or 4 x 4 taps (images only).
InterpolationMode = Literal["bilinear", "nearest", "bicubic"]
#: PyTorch's ``grid_sample`` modes. ``"bilinear"`` on a volume is trilinear (PyTorch's name for it too).
INTERPOLATION_MODES = ("bilinear", "nearest", "bicubic")

__all__ = [
    "INTERPOLATION_MODES",
    "InterpolationMode",
    "PaddingMode",
    "apply_interpolation",
    "apply_taps",
    "bilinear_sample",
    "grid_push",
    "grid_sample",
    "interpolation_matrix",
    "interpolation_taps",
    "sample",
    "separable_sample",
    "taps_to_matrix",
]


# --------------------------------------------------------------------------------------------------------
# Coordinate handling: normalised -> pixel coordinates, and the padding modes as index-fixing functions.
# --------------------------------------------------------------------------------------------------------


def _unnormalize(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
    """Normalised [-1, 1] coordinate -> pixel coordinate (pixel i has its centre at i).

    One multiply-add: ``x * (size - 1) / 2 + (size - 1) / 2`` (align_corners) or ``x * size / 2 + (size - 1) / 2``,
    the module docstring's mappings with the constants folded (PyTorch evaluates ``((x + 1) * size - 1) / 2``;
    the two differ by float rounding, a few ulp).
    """
    scale = 0.5 * (size - 1) if align_corners else 0.5 * size
    return coord * scale + 0.5 * (size - 1)


def _clip(coord: jax.Array, size: int) -> jax.Array:
    """Clamps to ``[0, size - 1]`` with zero gradient on and beyond the bounds (as PyTorch's clip_coordinates)."""
    low = jnp.zeros((), coord.dtype)
    high = jnp.asarray(size - 1, coord.dtype)
    return jnp.where(coord <= low, low, jnp.where(coord >= high, high, coord))


def _reflect(coord: jax.Array, twice_low: int, twice_high: int) -> jax.Array:
    """Reflects ``coord`` into ``[twice_low / 2, twice_high / 2]`` (PyTorch's ``reflect_coordinates``)."""
    if twice_low == twice_high:
        return jnp.zeros_like(coord)
    low = twice_low / 2.0
    span = (twice_high - twice_low) / 2.0
    coord = jnp.abs(coord - low)
    extra = jnp.fmod(coord, span)
    flips = jnp.floor(coord / span)
    return jnp.where(jnp.fmod(flips, 2.0) == 0.0, extra + low, span - extra + low)


def _fix_border(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
    del align_corners
    return _clip(coord, size)


def _fix_reflection(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
    if align_corners:
        coord = _reflect(coord, 0, 2 * (size - 1))
    else:
        coord = _reflect(coord, -1, 2 * size - 1)
    return _clip(coord, size)


# Padding modes are pure index-fixing functions (pixel coordinate -> pixel coordinate), chosen statically.
_PADDING_FIXERS: dict[str, Callable[[jax.Array, int, bool], jax.Array]] = {
    "zeros": lambda coord, size, align_corners: coord,
    "border": _fix_border,
    "reflection": _fix_reflection,
}


def _check_padding_mode(padding_mode: str) -> None:
    if padding_mode not in _PADDING_FIXERS:
        raise ValueError(f"padding_mode={padding_mode!r} is not supported; choose one of {sorted(_PADDING_FIXERS)}.")


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _snap_to_zero(fraction: jax.Array, tolerance: float) -> jax.Array:
    """``fraction`` with values at or below ``tolerance`` set to 0, and a gradient of 1 everywhere (straight-through)."""
    return jnp.where(fraction > tolerance, fraction, jnp.zeros((), fraction.dtype))


@_snap_to_zero.defjvp
def _snap_to_zero_jvp(tolerance, primals, tangents):
    return _snap_to_zero(primals[0], tolerance), tangents[0]


def _split_pixel(pix: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Pixel coordinate -> ``(lower, fraction)``: the integer pixel at or left of it (as a float) and the
    distance to it in ``[0, 1)``, with coordinates within float rounding error of an integer snapped onto it.

    Normalised pixel centres are not exact in floating point (e.g. ``((x + 1) * W - 1) / 2`` gives
    ``j + 1e-7`` or ``j - 1e-7``), which would blend a sliver of the neighbour into the identity transform.
    The snap moves the value by at most ``4 * eps * (size + 1)`` pixels and changes nothing of the gradient
    (straight-through: d fraction / d pix = 1), so the identity and integer translations return the pixels
    exactly while transforms stay differentiable. It costs two element-wise operations beyond the floor (an
    add and a select; the sampler's fused loop runs them once per sample and axis, where each operation shows
    at small channel counts: experiments/benchmarks/sampler.py).
    """
    tolerance = 4 * float(jnp.finfo(pix.dtype).eps) * (size + 1)
    lower = jnp.floor(pix + tolerance)
    return lower, _snap_to_zero(pix - lower, tolerance)  # pix - lower is in [-tolerance, 1 - tolerance)


def _source_pixel(coord: jax.Array, size: int, align_corners: bool, padding_mode: str) -> jax.Array:
    """Normalised coordinate along one axis -> padded pixel coordinate along that axis."""
    return _PADDING_FIXERS[padding_mode](_unnormalize(coord, size, align_corners), size, align_corners)


def _axis_taps(
    coord: jax.Array, size: int, align_corners: bool, padding_mode: str, dtype
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The two linear-interpolation taps of normalised coordinates ``coord`` ``[...]`` along one axis.

    Returns ``(lower, upper, lower_weight, upper_weight)``: uint32 pixel indices ``upper = lower + 1`` and their
    weights in ``dtype``. A tap outside ``[0, size)`` has weight 0 and an index that may lie outside the axis
    by up to two pixels (as uint32, "-1" reads 2**32 - 1): index with ``mode="clip"`` or clamp it. A
    non-finite coordinate gives two zero weights (and zero gradients) in every padding mode.

    Zero padding costs no separate non-finite test: the pixel coordinate is clamped into ``[-2, size + 1]``
    by two selects whose comparisons are false for NaN, so NaN and +-inf land outside the image, where both
    taps are invalid; the clamp also keeps the integer cast in range. Border and reflection padding would
    move a non-finite coordinate back into the image, so there it is replaced by -2 first (double where: no
    NaN in any gradient). Validity is one unsigned comparison per tap (-2 and -1 wrap to huge values).
    """
    if padding_mode == "zeros":
        pix = _unnormalize(coord, size, align_corners)
        low, high = jnp.asarray(-2, pix.dtype), jnp.asarray(size + 1, pix.dtype)
        pix = jnp.where(pix > low, jnp.where(pix < high, pix, high), low)
    else:
        finite = jnp.isfinite(coord)
        pix = _source_pixel(jnp.where(finite, coord, 0.0), size, align_corners, padding_mode)
        pix = jnp.where(finite, pix, jnp.asarray(-2, pix.dtype))
    lower, fraction = _split_pixel(pix, size)
    fraction = fraction.astype(dtype)
    lower = lower.astype(jnp.int32).astype(jnp.uint32)
    upper = lower + jnp.uint32(1)
    zero = jnp.zeros((), dtype)
    lower_weight = jnp.where(lower < size, 1 - fraction, zero)
    upper_weight = jnp.where(upper < size, fraction, zero)
    return lower, upper, lower_weight, upper_weight


def _compute_dtype(dtype) -> jnp.dtype:
    """At least float32: bfloat16/float16 inputs are interpolated in float32, float64 stays float64.

    (Not ``jnp.promote_types``, which refuses mixed widths under strict dtype promotion.)
    """
    return jnp.dtype(jnp.float32) if jnp.finfo(dtype).bits < 32 else jnp.dtype(dtype)


# --------------------------------------------------------------------------------------------------------
# Input validation: clear errors that name the argument, raised at trace time.
# --------------------------------------------------------------------------------------------------------


def _as_float_array(x: ArrayLike, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype (float32, bfloat16, ...), got {x.dtype}; "
            f"cast it first, e.g. {name}.astype(jnp.float32)."
        )
    return x


def _check_image(image: jax.Array, name: str = "image", rank: int = 3) -> None:
    layout = "[H, W, C]" if rank == 3 else "[N, H, W, C]"
    if image.ndim != rank:
        raise ValueError(f"{name} must have rank {rank} ({layout}, channels last), got shape {image.shape}.")
    h, w = image.shape[-3], image.shape[-2]
    if h < 1 or w < 1:
        raise ValueError(f"{name} must have a non-empty height and width, got shape {image.shape}.")


def _check_coords(coords: jax.Array, name: str = "coords") -> None:
    if coords.ndim < 1 or coords.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [..., 2] with (x, y) in the last axis, got shape {coords.shape}.")


def _check_align_corners(align_corners) -> None:
    if not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"align_corners must be a Python bool, got {align_corners!r}.")


# --------------------------------------------------------------------------------------------------------
# The sampler.
# --------------------------------------------------------------------------------------------------------


def _tap_values(images: jax.Array, batch, rows: tuple, cols: tuple, dtype) -> list[list[jax.Array]]:
    """The corner pixels ``taps[a][b] = images[batch, rows[a], cols[b]]`` (``[..., C]`` each, in ``dtype``).

    Gathers with (batch, row, column) indices into ``[N, H, W, C]``: on XLA:CPU these ran faster than the same
    gathers from the flattened ``[N H W, C]`` array. Indices outside the image (taps of weight 0) are clamped
    by the gather itself (``mode="clip"``: XLA's gather clamps, so it costs nothing); uint32 indices skip JAX's
    negative-index wrap-around.
    """
    return [[images.at[batch, r, c].get(mode="clip").astype(dtype) for c in cols] for r in rows]


def _weighted(weight: jax.Array, values: jax.Array) -> jax.Array:
    """``weight[..., None] * values``, and 0 wherever the weight is 0, whatever ``values`` holds there.

    A tap of weight 0 (clamped from outside the image, or the neighbour of an integer coordinate) may read an
    inf or NaN pixel that has no part in the sample, and ``0 * inf`` is NaN (PyTorch's behaviour). The select
    reads the weight only: each gathered value is used once, so XLA keeps the gathers and the arithmetic in one
    fused loop (a test of the value itself, ``isfinite``, split them and made the forward pass 3x slower at
    one channel).
    """
    return jnp.where((weight != 0)[..., None], weight[..., None] * values, jnp.zeros((), values.dtype))


def _bilinear(wy: tuple, wx: tuple, taps) -> jax.Array:
    """``sum_ab wy[a] wx[b] taps[a][b]`` over the taps of non-zero weight: ``[...]`` weights, ``[..., C]`` taps.

    With one channel as ``wy0 (wx0 t00 + wx1 t01) + wy1 (wx0 t10 + wx1 t11)`` (6 multiplies instead of 8: the
    sampler's fused loop is bound by its element-wise operations at one channel); with several channels the
    four corner weights are formed once per sample and each channel costs 4 multiplies. Every product is
    :func:`_weighted`: a zero weight contributes 0 even against an inf or NaN tap.
    """
    if taps[0][0].shape[-1] == 1:
        rows = [_weighted(wx[0], t[0]) + _weighted(wx[1], t[1]) for t in taps]
        return _weighted(wy[0], rows[0]) + _weighted(wy[1], rows[1])
    return sum(_weighted(wy[a] * wx[b], taps[a][b]) for a in range(2) for b in range(2))


def _linear_in_weights(wy: tuple, wx: tuple, taps) -> jax.Array:
    """``sum_ab wy[a][..., None] * wx[b][..., None] * taps[a][b]`` as plain products, for the tangents: a select
    on a tangent is not linear (it cannot be transposed), so the taps passed here must already be finite
    wherever their weight is 0 (:func:`_finite_where_unused`). One channel in 6 multiplies, as :func:`_bilinear`."""
    if taps[0][0].shape[-1] == 1:
        rows = [wx[0][..., None] * t[0] + wx[1][..., None] * t[1] for t in taps]
        return wy[0][..., None] * rows[0] + wy[1][..., None] * rows[1]
    return sum((wy[a] * wx[b])[..., None] * taps[a][b] for a in range(2) for b in range(2))


def _finite_unless_used(used: jax.Array, value: jax.Array) -> jax.Array:
    """``value [..., C]`` with a non-finite entry read as 0 where the tap is not ``used`` (``[...]``: its weight
    is 0). Such a tap still enters the coordinate derivative at an integer coordinate (its weight's derivative is
    not 0), so only a non-finite value is dropped there, not the tap. For the derivatives only: the test of the
    value splits XLA:CPU's fused gather loop (see :func:`_weighted`)."""
    return jnp.where(used[..., None] | jnp.isfinite(value), value, jnp.zeros((), value.dtype))


def _finite_where_unused(taps, wy: tuple, wx: tuple) -> list[list[jax.Array]]:
    """The 2 x 2 taps through :func:`_finite_unless_used` (a tap is used where both its weights are non-zero)."""
    return [[_finite_unless_used((wy[a] != 0) & (wx[b] != 0), taps[a][b]) for b in range(2)] for a in range(2)]


def _tangent_of_image(d_images: jax.Array, batch, rows: tuple, cols: tuple, wy: tuple, wx: tuple) -> jax.Array:
    """``sum_ab wy[a] wx[b] d_images[batch, rows[a], cols[b]]``, written so that its transpose is fast.

    This is the sampler's only term that is linear in the image, so reverse mode runs its transpose: the image
    gradient, a scatter-add. Flat row indices into ``[N H W, C]`` make that a flat scatter (a batched one, the
    transpose of (batch, row, column) gathers, was slower on CPU in the sampler's first pass). With one
    channel, four gathers (whose four scatters XLA merges into one) were the fastest form measured; with
    several channels, one gather of the four stacked taps, whose transpose is one scatter of ``[..., 4, C]``
    windows. The alternatives measured (one concatenated gather, a scan over the taps, stacked scalar gathers)
    were slower; docs/benchmarks.md has the figures. Indices outside the image (weight 0) are
    clamped here, so every scatter lands inside its own image. The flat index is int32, not uint32: with
    uint32, XLA:CPU fused the whole index computation into the scatter's index copy, whose layout change made
    it 4x slower (benchmark size (d), image gradient: 12.6 ms against 3.4 ms, jax.profiler per fusion).
    """
    n, height, width, channels = d_images.shape
    flat = d_images.reshape(n * height * width, channels)
    rows = [jnp.minimum(r, jnp.uint32(height - 1)).astype(jnp.int32) for r in rows]
    cols = [jnp.minimum(c, jnp.uint32(width - 1)).astype(jnp.int32) for c in cols]
    batch = jnp.asarray(batch).astype(jnp.int32)
    index = [(batch * height + r) * width + c for r in rows for c in cols]
    weight = [wy[a] * wx[b] for a in range(2) for b in range(2)]
    dtype = weight[0].dtype
    if channels == 1:
        flat = flat[:, 0]  # [N H W]: the scatter's result then reshapes to the image without a copy
        taps = [flat.at[i].get(mode="promise_in_bounds").astype(dtype) for i in index]
        return sum(w * t for w, t in zip(weight, taps, strict=True))[..., None]
    index = jnp.stack(jnp.broadcast_arrays(*index), axis=-1)  # [..., 4]
    taps = flat.at[index].get(mode="promise_in_bounds").astype(dtype)  # [..., 4, C]
    return jnp.sum(jnp.stack(weight, axis=-1)[..., None] * taps, axis=-2)


#: Up to this many channels, the forward pass reads zero-weight taps from a zero border instead of selecting their
#: products away (measured on 2 cores, 2026-12-07: faster from 2 to 8 channels; at 1 channel the select form
#: vectorises, from 16 the copy of the image costs more than the select).
_PAD_MAX_CHANNELS = 8


@jax.custom_jvp
def _combine_taps(images: jax.Array, batch, rows: tuple, cols: tuple, wy: tuple, wx: tuple) -> jax.Array:
    """``sum_ab wy[a] wx[b] images[batch, rows[a], cols[b]]``: the bilinear combination of the 2 x 2 taps.

    ``images`` ``[N, H, W, C]``; ``batch`` uint32 broadcastable to the sample shape ``[...]``; ``rows``,
    ``cols`` pairs of uint32 ``[...]`` indices (outside the image only where their weight is 0); ``wy``,
    ``wx`` pairs of float ``[...]`` per-axis weights. Returns ``[..., C]`` in the weights' dtype.

    A custom JVP (linear in the image tangent and in the weight tangents), so that every JAX transformation
    works: forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) evaluates it, and reverse mode
    transposes it (:func:`_tangent_of_image`: flat scatters for the image gradient, the corner values
    reused for the coordinate gradient).
    """
    _, height, width, channels = images.shape
    if 1 < channels <= _PAD_MAX_CHANNELS:
        # A zero row and column that every tap of weight 0 reads, so the combination needs no select: a select on
        # [..., C] products with a few channels kept XLA:CPU's loop from vectorising (224x224x3: 2.2-2.6x the
        # time of the plain products, against 0.9-1.2x for this form, which pays for copying the image once).
        padded = jnp.pad(images, ((0, 0), (0, 1), (0, 1), (0, 0)))
        rows = tuple(jnp.where(w != 0, r, jnp.uint32(height)) for w, r in zip(wy, rows, strict=True))
        cols = tuple(jnp.where(w != 0, c, jnp.uint32(width)) for w, c in zip(wx, cols, strict=True))
        return _linear_in_weights(wy, wx, _tap_values(padded, batch, rows, cols, wy[0].dtype))
    return _bilinear(wy, wx, _tap_values(images, batch, rows, cols, wy[0].dtype))


@partial(_combine_taps.defjvp, symbolic_zeros=True)
def _combine_taps_jvp(primals, tangents):
    images, batch, rows, cols, wy, wx = primals
    d_images, _, _, _, d_wy, d_wx = tangents
    taps = _tap_values(images, batch, rows, cols, wy[0].dtype)
    terms = []
    if not isinstance(d_images, SymbolicZero):
        terms.append(_tangent_of_image(d_images, batch, rows, cols, wy, wx))
    # Product rule over the per-axis weights: d(wy wx) = dwy wx + wy dwx.
    d_wy, d_wx = _instantiate_pair(d_wy, wy), _instantiate_pair(d_wx, wx)
    if d_wy is None and d_wx is None:
        out = _bilinear(wy, wx, taps)
    else:  # the same value from the taps the tangents need (so a derivative of ``out`` keeps them too)
        taps = _finite_where_unused(taps, wy, wx)
        out = _linear_in_weights(wy, wx, taps)
    if d_wy is not None:
        terms.append(_linear_in_weights(d_wy, wx, taps))
    if d_wx is not None:
        terms.append(_linear_in_weights(wy, d_wx, taps))
    return out, sum(terms) if terms else jnp.zeros_like(out)


def _instantiate_pair(tangents: tuple, primals: tuple) -> tuple | None:
    """None if both tangents of a weight pair are symbolic zeros (skip the term), else the pair with a symbolic
    zero replaced by a zero array."""
    if all(isinstance(t, SymbolicZero) for t in tangents):
        return None
    return tuple(
        jnp.zeros_like(p) if isinstance(t, SymbolicZero) else t for t, p in zip(tangents, primals, strict=True)
    )


def _sample(
    images: jax.Array,
    batch: jax.Array,
    coords: jax.Array,
    align_corners: bool,
    padding_mode: str,
    ctype,
) -> jax.Array:
    """Bilinear samples of ``images`` ``[N, H, W, C]`` at normalised ``coords`` ``[..., 2]``.

    ``batch`` (uint32, broadcastable to ``coords.shape[:-1]``) says which image each sample reads, so a batch
    is sampled as one set of gathers (and its image gradient is one set of flat scatters, not a vmap of
    them). Returns ``[..., C]`` in ``ctype``.
    """
    _, height, width, _ = images.shape
    coords = coords.astype(_compute_dtype(coords.dtype))
    # Per-axis taps and weights (zero for a tap outside the image or a non-finite coordinate); the bilinear
    # weights are their products, so a non-finite x zeroes the sample whatever y is.
    ix0, ix1, wx0, wx1 = _axis_taps(coords[..., 0], width, align_corners, padding_mode, ctype)
    iy0, iy1, wy0, wy1 = _axis_taps(coords[..., 1], height, align_corners, padding_mode, ctype)
    return _combine_taps(images, batch, (iy0, iy1), (ix0, ix1), (wy0, wy1), (wx0, wx1))


def bilinear_sample(
    image: ArrayLike,
    coords: ArrayLike,
    *,
    align_corners: bool = False,
    padding_mode: PaddingMode = "zeros",
) -> jax.Array:
    """Samples one image at arbitrary normalised coordinates with bilinear interpolation (pull).

    For every coordinate ``(x, y)`` in ``coords`` the output is the bilinear interpolation of ``image`` at that
    point (STN paper, eq. 5): ``sum_nm U_nm max(0, 1 - |x_pix - m|) max(0, 1 - |y_pix - n|)``. The conventions
    (coordinate order, the two ``align_corners`` mappings, padding modes, non-finite coordinates) are in this
    module's docstring; they are PyTorch's, so this is ``grid_sample(mode="bilinear")`` for a single image.

    Differentiable with respect to both arguments in every mode and to any order: ``jax.grad``, ``jax.vjp``,
    ``jax.jacrev``, ``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``, ``jax.hessian``. Batch it with
    ``jax.vmap``, or use :func:`grid_sample`, which is faster for a batch.

    Args:
      image: ``[H, W, C]`` floating image (float32, bfloat16, float16, float64). Channels last.
      coords: ``[..., 2]`` floating coordinates in ``[-1, 1]`` (values outside are allowed), ``(x, y)`` order.
      align_corners: if True, -1 and 1 are the centres of the corner pixels, else their outer edges.
      padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``: what samples outside the image read.

    Returns:
      ``[..., C]`` samples, in ``image``'s dtype (interpolated in at least float32).

    Example:
      >>> import jax.numpy as jnp
      >>> image = jnp.arange(6.0).reshape(2, 3, 1)
      >>> bilinear_sample(image, jnp.array([[0.0, 0.0]]), align_corners=True)  # the centre
      Array([[2.5]], dtype=float32)
    """
    image = _as_float_array(image, "image")
    coords = _as_float_array(coords, "coords")
    _check_image(image)
    _check_coords(coords)
    _check_align_corners(align_corners)
    _check_padding_mode(padding_mode)
    ctype = _compute_dtype(image.dtype)
    out = _sample(image[None], jnp.zeros((), jnp.uint32), coords, align_corners, padding_mode, ctype)
    return out.astype(image.dtype)


def grid_sample(
    images: ArrayLike,
    grid: ArrayLike,
    *,
    mode: InterpolationMode = "bilinear",
    align_corners: bool = False,
    padding_mode: PaddingMode = "zeros",
) -> jax.Array:
    """Batched sampling, the channels-last twin of ``torch.nn.functional.grid_sample``, in all its modes and
    dimensions.

    Images ``[N, H, W, C]`` with a grid ``[N, h, w, 2]`` (``(x, y)``), or volumes ``[N, D, H, W, C]`` with a grid
    ``[N, d, h, w, 3]`` (``(x, y, z)``, PyTorch's order); ``mode`` is ``"bilinear"`` (trilinear on volumes),
    ``"nearest"`` or ``"bicubic"`` (images only), with PyTorch's definitions (see :func:`sample`).
    ``grid_sample(images, grid)[n] == sample(images[n], grid[n])``. A PyTorch user converts with
    ``images = x.permute(0, 2, 3, 1)`` (volumes: ``(0, 2, 3, 4, 1)``) and the inverse on the output; ``grid``
    is the same array in both. 2-D bilinear sampling runs the tuned four-tap path of :func:`bilinear_sample`.
    On CPUs the batch is sampled as one flat array (not a ``vmap``), which makes the image gradient one set of
    scatters instead of a batched scatter: faster on one device. On GPUs and TPUs
    (:func:`visattn_jax.backend.resolve_backend`) each image is sampled by its own gathers (a ``vmap``: gathers
    with a batch dimension), which XLA's partitioner keeps on the chip that holds the image when the batch is
    sharded; the flat form made a data-parallel step gather every chip's images to every chip (compiled for
    v5e: 4 all-gathers of the ST-CNN step's feature maps, none per image). Both give the same numbers.

    Args:
      images: ``[N, H, W, C]`` or ``[N, D, H, W, C]`` floating.
      grid: ``[N, ..., 2]`` or ``[N, ..., 3]`` normalised coordinates (usually ``[N, h, w, 2]`` /
        ``[N, d, h, w, 3]``).
      mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
      align_corners: see :func:`bilinear_sample`.
      padding_mode: see :func:`bilinear_sample`.

    Returns:
      ``[N, ..., C]`` samples in ``images``' dtype.
    """
    images = _as_float_array(images, "images")
    grid = _as_float_array(grid, "grid")
    _check_sample_args(images, grid, mode, align_corners, padding_mode, batched=True)
    if grid.ndim < 2 or grid.shape[0] != images.shape[0]:
        raise ValueError(
            f"grid must have shape [N, ..., {grid.shape[-1]}] with the same N as images {images.shape}, got "
            f"{grid.shape}."
        )
    n = images.shape[0]
    ctype = _compute_dtype(images.dtype)
    if images.ndim == 4 and mode == "bilinear":  # the tuned 2-D bilinear core, uint32 indices
        index_type = jnp.uint32
        core = partial(_sample, align_corners=align_corners, padding_mode=padding_mode, ctype=ctype)
    else:
        index_type = jnp.int32
        core = partial(_sample_nd, mode=mode, align_corners=align_corners, padding_mode=padding_mode, ctype=ctype)
    if resolve_backend() == "cpu":  # one flat set of gathers over the batch
        batch = jnp.arange(n, dtype=index_type).reshape((n,) + (1,) * (grid.ndim - 2))
        out = core(images, batch, grid)
    else:  # per image: gathers with a batch dimension, which a sharded batch keeps on its own chip
        out = jax.vmap(lambda image, coords: core(image[None], jnp.zeros((), index_type), coords))(images, grid)
    return out.astype(images.dtype)


# --------------------------------------------------------------------------------------------------------
# Every mode and dimension: nearest, bicubic (2-D) and trilinear / nearest volumes, on one tap-product core.
# --------------------------------------------------------------------------------------------------------

#: The cubic convolution's parameter (Keys 1981), PyTorch's value for ``mode="bicubic"`` (OpenCV's too).
BICUBIC_A = -0.75


def _torch_unnormalize(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
    """Normalised -> pixel coordinate in PyTorch's own arithmetic (``((x + 1) * size - 1) / 2`` or
    ``(x + 1) / 2 * (size - 1)``), so that nearest sampling rounds exactly where PyTorch rounds (a few ulp
    decide a half-pixel coordinate)."""
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


def _cubic_weights(t: jax.Array) -> tuple[jax.Array, ...]:
    """The four cubic-convolution weights of taps ``floor - 1 .. floor + 2`` at fraction ``t`` in ``[0, 1)``
    (PyTorch's ``get_cubic_upsample_coefficients``). At ``t = 0`` they are exactly ``(0, 1, 0, 0)``."""
    a = BICUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


def _fix_tap(index: jax.Array, size: int, align_corners: bool, padding_mode: str) -> tuple[jax.Array, jax.Array]:
    """A float tap index (an integer value, possibly outside the axis) -> ``(int32 index in [0, size), valid)``:
    border / reflection padding move it into the axis (per tap, as PyTorch's bicubic does), zero padding marks
    it invalid (it reads 0)."""
    if padding_mode != "zeros":
        index = _PADDING_FIXERS[padding_mode](index, size, align_corners)
    valid = (index >= 0) & (index <= size - 1)
    return jnp.clip(index, 0, size - 1).astype(jnp.int32), valid


def _axis_taps_nd(
    coord: jax.Array, size: int, mode: str, align_corners: bool, padding_mode: str, dtype
) -> list[tuple[jax.Array, jax.Array]]:
    """The taps of normalised ``coord [...]`` along one axis: a list of ``(int32 index, weight)``, each
    ``[...]``, the index inside the axis and the weight 0 for a tap that reads 0 (outside with zero padding,
    or a non-finite coordinate). ``nearest``: one tap (PyTorch: pad the coordinate, then round half to
    even); ``bilinear``: two (:func:`_axis_taps`); ``bicubic``: four, padded one by one."""
    if mode == "bilinear":
        lower, upper, w0, w1 = _axis_taps(coord, size, align_corners, padding_mode, dtype)
        high = jnp.uint32(size - 1)
        return [(jnp.minimum(lower, high).astype(jnp.int32), w0), (jnp.minimum(upper, high).astype(jnp.int32), w1)]
    finite = jnp.isfinite(coord)
    coord = jnp.where(finite, coord, jnp.zeros((), coord.dtype))
    pix = _torch_unnormalize(coord, size, align_corners)
    if mode == "nearest":
        if padding_mode != "zeros":
            pix = _PADDING_FIXERS[padding_mode](pix, size, align_corners)
        pix = jnp.clip(pix, -1.0, float(size))  # keeps the integer cast in range; outside stays outside
        index, valid = _fix_tap(jnp.round(pix), size, align_corners, "zeros")  # round: half to even
        return [(index, jnp.where(valid & finite, 1.0, 0.0).astype(dtype))]
    # Bicubic: PyTorch takes the taps around the raw pixel coordinate and pads each tap's index.
    if padding_mode == "zeros":  # beyond these every tap is outside; the clamp keeps floor and casts in range
        pix = jnp.where(pix > -3.0, jnp.where(pix < size + 2.0, pix, size + 2.0), -3.0)
    lower, t = _split_pixel(pix, size)
    weights = _cubic_weights(t.astype(dtype))
    taps = []
    for k, weight in zip((-1, 0, 1, 2), weights, strict=True):
        index, valid = _fix_tap(lower + k, size, align_corners, padding_mode)
        taps.append((index, jnp.where(valid & finite, weight, jnp.zeros((), dtype))))
    return taps


def _gather_taps(images: jax.Array, batch: jax.Array, indices: tuple, dtype) -> list[jax.Array]:
    """``images[batch, *index]`` (``[..., C]``, in ``dtype``) for each tap's index tuple (in the image)."""
    return [images.at[(batch, *index)].get(mode="promise_in_bounds").astype(dtype) for index in indices]


@jax.custom_jvp
def _combine_nd(images: jax.Array, batch: jax.Array, indices: tuple, weights: tuple) -> jax.Array:
    """``sum_t weights[t] * images[batch, *indices[t]]``: ``images [N, *spatial, C]``, int32 ``batch`` and
    ``indices[t]`` (one ``[...]`` array per spatial axis, inside the image), ``weights[t] [...]``. Returns
    ``[..., C]`` in the weights' dtype; a tap of weight 0 contributes 0 whatever the image holds there.

    A custom JVP for the same reason as the 2-D path's: the weight tangents need each tap's value, also where
    the weight is 0 (at an integer coordinate), with only a non-finite value there dropped; a test of the
    value in the forward pass itself would split XLA's fused gather loop (measured 10x slower for bicubic),
    so the primal reads the weights only and the value test runs in the derivative alone."""
    values = _gather_taps(images, batch, indices, weights[0].dtype)
    return sum(_weighted(w, v) for w, v in zip(weights, values, strict=True))


@partial(_combine_nd.defjvp, symbolic_zeros=True)
def _combine_nd_jvp(primals, tangents):
    images, batch, indices, weights = primals
    d_images, _, _, d_weights = tangents
    dtype = weights[0].dtype
    values = _gather_taps(images, batch, indices, dtype)
    terms = []
    if not isinstance(d_images, SymbolicZero):  # linear in the image: reverse mode transposes it to scatter-adds
        d_values = _gather_taps(d_images, batch, indices, dtype)
        terms.append(sum(w[..., None] * d for w, d in zip(weights, d_values, strict=True)))
    if (d_weights := _instantiate_pair(d_weights, weights)) is None:
        out = sum(_weighted(w, v) for w, v in zip(weights, values, strict=True))
    else:
        values = [_finite_unless_used(w != 0, v) for w, v in zip(weights, values, strict=True)]
        out = sum(w[..., None] * v for w, v in zip(weights, values, strict=True))
        terms.append(sum(d[..., None] * v for d, v in zip(d_weights, values, strict=True)))
    return out, sum(terms) if terms else jnp.zeros_like(out)


def _sample_nd(
    images: jax.Array, batch: jax.Array, coords: jax.Array, mode: str, align_corners: bool, padding_mode: str, ctype
) -> jax.Array:
    """Samples ``images [N, *spatial, C]`` (1 to 3 spatial axes) at normalised ``coords [..., D]`` (``(x, y, z)``
    order: the last spatial axis first) in ``mode``: ``sum over tap combinations of prod(weights) *
    images[batch, taps]`` (:func:`_combine_nd`). The tap indices are integers, so coordinates get gradients
    through the weights only, as in PyTorch (nearest's weights are constants: a zero coordinate gradient); the
    image gradient is the gathers' transpose, scatter-adds. A tap of weight 0 contributes 0 even where the image
    holds inf or NaN (PyTorch's 0 * inf gives NaN there). Returns ``[..., C]`` in ``ctype``."""
    spatial = images.shape[1:-1]
    coords = coords.astype(_compute_dtype(coords.dtype))
    # Taps per spatial axis, in the image's axis order (z, y, x): coordinate component D - 1 - axis.
    axes = [
        _axis_taps_nd(coords[..., len(spatial) - 1 - axis], size, mode, align_corners, padding_mode, ctype)
        for axis, size in enumerate(spatial)
    ]
    indices, weights = [], []
    for combination in itertools.product(*axes):
        weight = combination[0][1]
        for _, w in combination[1:]:
            weight = weight * w
        indices.append(tuple(index for index, _ in combination))
        weights.append(weight)
    return _combine_nd(images, jnp.asarray(batch).astype(jnp.int32), tuple(indices), tuple(weights))


def _check_mode(mode: str, spatial_dims: int) -> None:
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"mode={mode!r} is not supported; choose one of {list(INTERPOLATION_MODES)}.")
    if mode == "bicubic" and spatial_dims == 3:
        raise ValueError(
            "mode='bicubic' samples images only, not volumes (PyTorch has no tricubic either); use 'bilinear' "
            "(trilinear) or 'nearest' for [N, D, H, W, C] input."
        )


def _check_sample_args(image: jax.Array, coords: jax.Array, mode: str, align_corners, padding_mode: str, batched: bool):
    """Rank, coordinate width and option checks shared by :func:`sample` and :func:`grid_sample`."""
    extra = 1 if batched else 0
    name = "images" if batched else "image"
    layouts = {2: "[N, H, W, C]", 3: "[N, D, H, W, C]"} if batched else {2: "[H, W, C]", 3: "[D, H, W, C]"}
    spatial_dims = image.ndim - 1 - extra
    if spatial_dims not in layouts:
        raise ValueError(
            f"{name} must be an image {layouts[2]} or a volume {layouts[3]} (channels last), got shape "
            f"{image.shape} (rank {image.ndim})."
        )
    if any(size < 1 for size in image.shape[extra:-1]):
        raise ValueError(f"{name} must have non-empty spatial axes, got shape {image.shape}.")
    order = "(x, y)" if spatial_dims == 2 else "(x, y, z)"
    coord_name = "grid" if batched else "coords"
    if coords.ndim < 1 or coords.shape[-1] != spatial_dims:
        raise ValueError(
            f"{coord_name} must have shape [..., {spatial_dims}] with {order} in the last axis for a {spatial_dims}-D "
            f"{name} of shape {image.shape}, got shape {coords.shape}."
        )
    _check_mode(mode, spatial_dims)
    _check_align_corners(align_corners)
    _check_padding_mode(padding_mode)
    return spatial_dims


def sample(
    image: ArrayLike,
    coords: ArrayLike,
    *,
    mode: InterpolationMode = "bilinear",
    align_corners: bool = False,
    padding_mode: PaddingMode = "zeros",
) -> jax.Array:
    """Samples one image ``[H, W, C]`` at ``coords [..., 2]`` or one volume ``[D, H, W, C]`` at
    ``coords [..., 3]`` (``(x, y, z)``: x along W, y along H, z along D; PyTorch's order), in any mode.

    ``mode``: ``"bilinear"`` (trilinear on a volume; on an image this is :func:`bilinear_sample`),
    ``"nearest"`` (PyTorch's: the padded pixel coordinate rounded half to even; zero coordinate gradient) or
    ``"bicubic"`` (images only: the cubic convolution with A = -0.75 over 4 x 4 taps, each tap's index padded
    by ``padding_mode``, zero padding reading 0). Conventions (``align_corners``, padding, non-finite
    coordinates reading 0 with zero gradients) are the module docstring's, for every axis. Differentiable to
    any order in forward and reverse mode; the unbatched twin of :func:`grid_sample`.

    Args:
      image: ``[H, W, C]`` or ``[D, H, W, C]`` floating, channels last.
      coords: ``[..., 2]`` or ``[..., 3]`` normalised coordinates.

    Returns:
      ``[..., C]`` samples in ``image``'s dtype (computed in at least float32).

    Example:
      >>> import jax.numpy as jnp
      >>> volume = jnp.arange(8.0).reshape(2, 2, 2, 1)  # [D, H, W, C]
      >>> sample(volume, jnp.zeros((1, 3)), align_corners=True)  # the centre: the mean of the 8 voxels
      Array([[3.5]], dtype=float32)
    """
    image = _as_float_array(image, "image")
    coords = _as_float_array(coords, "coords")
    spatial_dims = _check_sample_args(image, coords, mode, align_corners, padding_mode, batched=False)
    if spatial_dims == 2 and mode == "bilinear":
        return bilinear_sample(image, coords, align_corners=align_corners, padding_mode=padding_mode)
    ctype = _compute_dtype(image.dtype)
    out = _sample_nd(image[None], jnp.zeros((), jnp.int32), coords, mode, align_corners, padding_mode, ctype)
    return out.astype(image.dtype)


def grid_push(
    values: ArrayLike,
    grid: ArrayLike,
    shape: tuple[int, ...],
    *,
    mode: InterpolationMode = "bilinear",
    align_corners: bool = False,
    padding_mode: PaddingMode = "zeros",
) -> jax.Array:
    """The adjoint of :func:`grid_sample` (push, splat): every value is added into the pixels its grid point
    reads, with the interpolation weights, so ``<grid_push(u, grid, shape), v> == <u, grid_sample(v, grid)>``.

    It is the image gradient of sampling, as a function: splatting for forward warps, density maps and
    scatter-based rendering. Linear in ``values``, differentiable in both arguments.

    Args:
      values: ``[N, ..., C]`` floating, one value per grid point.
      grid: ``[N, ..., 2]`` or ``[N, ..., 3]`` normalised coordinates (``values.shape[:-1] == grid.shape[:-1]``).
      shape: the spatial shape of the result, ``(H, W)`` or ``(D, H, W)``.
      mode, align_corners, padding_mode: as :func:`grid_sample` (with border / reflection padding a value
        outside lands on the pixels its padded taps read).

    Returns:
      ``[N, *shape, C]`` in ``values``' dtype (accumulated in at least float32).
    """
    values = _as_float_array(values, "values")
    grid = _as_float_array(grid, "grid")
    shape = tuple(int(size) for size in shape)
    if len(shape) != grid.shape[-1] or len(shape) not in (2, 3):
        raise ValueError(
            f"shape must be (H, W) for a grid [..., 2] or (D, H, W) for a grid [..., 3]; got shape {shape} and a "
            f"grid of shape {grid.shape}."
        )
    if values.shape[:-1] != grid.shape[:-1]:
        raise ValueError(
            f"values must have one [C] vector per grid point: values {values.shape} and grid {grid.shape} must "
            "agree in all but their last axis."
        )
    ctype = _compute_dtype(values.dtype)
    zeros = jnp.zeros((values.shape[0], *shape, values.shape[-1]), ctype)
    _, transpose = jax.vjp(
        lambda images: grid_sample(images, grid, mode=mode, align_corners=align_corners, padding_mode=padding_mode),
        zeros,
    )
    return transpose(values.astype(ctype))[0].astype(values.dtype)


# --------------------------------------------------------------------------------------------------------
# Separable grids: interpolation matrices and two matmuls.
# --------------------------------------------------------------------------------------------------------


def interpolation_taps(
    coords: ArrayLike,
    size: int,
    *,
    mode: InterpolationMode = "bilinear",
    align_corners: bool = False,
    padding_mode: PaddingMode = "zeros",
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """The 1-D interpolation operator of ``mode`` along one axis, as taps: 1 per sample (nearest), 2 (linear)
    or 4 (cubic).

    Sample ``i`` (normalised coordinate ``coords[i]``) reads ``sum_t weights[i, t] * signal[indices[i, t]]``
    from the ``size`` pixels of one axis, with the module's conventions and :func:`sample`'s definition of each
    mode along that axis (every mode is a tensor product of its 1-D taps, so two of these operators give
    :func:`sample` on an axis-aligned grid). A tap outside the image (zero padding) or of a non-finite
    coordinate has weight 0 and an index clamped into ``[0, size)``, so indexing with ``indices`` never goes
    out of bounds; with border / reflection padding, bicubic taps are padded one by one, so two taps of a
    sample may name the same pixel. The sparse form of :func:`interpolation_matrix`; see :func:`apply_taps`.

    Args:
      coords: ``[n]`` normalised coordinates along one axis.
      size: the number of pixels along that axis.
      mode: ``"bilinear"`` (linear along the axis), ``"nearest"`` or ``"bicubic"`` (cubic convolution, A = -0.75).
      align_corners, padding_mode: see :func:`bilinear_sample`.
      dtype: the weights' dtype.

    Returns:
      ``(indices [n, T] int32, weights [n, T])`` with ``T`` = 1, 2 or 4; the weights of a sample inside the
      image sum to 1.
    """
    coords = _as_float_array(coords, "coords")
    if coords.ndim != 1:
        raise ValueError(f"coords must have rank 1 ([n]), got shape {coords.shape}.")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}.")
    _check_mode(mode, 1)
    _check_align_corners(align_corners)
    _check_padding_mode(padding_mode)
    coords = coords.astype(_compute_dtype(coords.dtype))
    taps = _axis_taps_nd(coords, size, mode, align_corners, padding_mode, coords.dtype)
    indices = jnp.stack([index for index, _ in taps], axis=-1)
    return indices, jnp.stack([weight for _, weight in taps], axis=-1).astype(dtype)


def interpolation_matrix(
    coords: ArrayLike,
    size: int,
    *,
    mode: InterpolationMode = "bilinear",
    align_corners: bool = False,
    padding_mode: PaddingMode = "zeros",
    dtype=jnp.float32,
) -> jax.Array:
    """The 1-D interpolation operator of ``mode`` (linear by default) as a dense matrix.

    Row ``i`` holds the weights with which sample ``i`` (normalised coordinate ``coords[i]``) reads the
    ``size`` pixels of one axis, with the module's conventions. ``matrix @ signal`` interpolates a 1-D
    signal; two of them sample an image on an axis-aligned grid (:func:`separable_sample`). The dense form
    of :func:`interpolation_taps`.

    Args:
      coords: ``[n]`` normalised coordinates along one axis.
      size: the number of pixels along that axis.
      mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"`` (see :func:`interpolation_taps`).
      align_corners, padding_mode: see :func:`bilinear_sample`.
      dtype: the matrix's dtype.

    Returns:
      ``[n, size]`` matrix with at most 1 / 2 / 4 non-zeros per row, rows summing to 1 inside the image.
    """
    taps = interpolation_taps(
        coords, size, mode=mode, align_corners=align_corners, padding_mode=padding_mode, dtype=dtype
    )
    return taps_to_matrix(*taps, size)


def taps_to_matrix(indices: ArrayLike, weights: ArrayLike, size: int) -> jax.Array:
    """Dense ``[n, size]`` operator of taps ``indices [n, T]`` (in ``[0, size)``) with ``weights [n, T]``."""
    indices, weights = jnp.asarray(indices), jnp.asarray(weights)
    columns = jnp.arange(size, dtype=indices.dtype)[None, None, :]
    zero = jnp.zeros((), weights.dtype)
    return jnp.sum(jnp.where(indices[:, :, None] == columns, weights[:, :, None], zero), axis=1)


def separable_sample(
    image: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    *,
    mode: InterpolationMode = "bilinear",
    align_corners: bool = False,
    padding_mode: PaddingMode = "zeros",
) -> jax.Array:
    """Samples one image on the axis-aligned grid ``x`` (columns) times ``y`` (rows) with two matmuls.

    Numerically the same as ``sample(image, coords, mode=mode)`` with ``coords[i, j] = (x[j], y[i])``, but
    computed as ``Ry @ image @ Rx^T`` with :func:`interpolation_matrix` operators, so no gather and no
    scatter: fast forward and backward on CPU, and it runs on the matrix units of TPUs and GPUs. Suited to
    crops / zooms (the STN attention transform) and resizes. :func:`apply_taps` does the same with gathers
    (the RAM retina). Unlike :func:`sample`, an inf or NaN pixel spreads through the matmul to the whole
    output row and column (``0 * inf``).

    Args:
      image: ``[H, W, C]`` floating image.
      x: ``[w]`` normalised x coordinates of the output columns.
      y: ``[h]`` normalised y coordinates of the output rows.
      mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``, as :func:`sample`.
      align_corners, padding_mode: see :func:`bilinear_sample`.

    Returns:
      ``[h, w, C]`` in ``image``'s dtype.
    """
    image = _as_float_array(image, "image")
    _check_image(image)
    height, width, _ = image.shape
    ctype = _compute_dtype(image.dtype)
    kwargs = dict(mode=mode, align_corners=align_corners, padding_mode=padding_mode, dtype=ctype)
    rows = interpolation_matrix(y, height, **kwargs)  # [h, H]
    cols = interpolation_matrix(x, width, **kwargs)  # [w, W]
    return apply_interpolation(image, rows, cols)


def apply_interpolation(image: ArrayLike, rows: ArrayLike, cols: ArrayLike) -> jax.Array:
    """``rows @ image @ cols^T`` per channel: ``[h, H] x [H, W, C] x [w, W] -> [h, w, C]`` in image's dtype.

    The separable resampling step behind :func:`separable_sample`; any ``[h, H]`` / ``[w, W]`` operators
    work (e.g. area-averaging ones, see :func:`visattn_jax.ram.glimpse_sensor`).
    """
    image = _as_float_array(image, "image")
    _check_image(image)
    rows, cols = jnp.asarray(rows), jnp.asarray(cols)
    if rows.ndim != 2 or rows.shape[1] != image.shape[0] or cols.ndim != 2 or cols.shape[1] != image.shape[1]:
        raise ValueError(
            f"rows must be [h, {image.shape[0]}] and cols [w, {image.shape[1]}] for image {image.shape}, "
            f"got {rows.shape} and {cols.shape}."
        )
    ctype = _compute_dtype(image.dtype)
    out = jnp.einsum(
        "hy,yxc,wx->hwc",
        rows.astype(ctype),
        image.astype(ctype),
        cols.astype(ctype),
        precision=jax.lax.Precision.HIGHEST,
    )
    return out.astype(image.dtype)


def apply_taps(image: ArrayLike, rows: tuple[ArrayLike, ArrayLike], cols: tuple[ArrayLike, ArrayLike]) -> jax.Array:
    """The separable resampling step with sparse operators: gathers instead of matmuls.

    ``out[i, j] = sum_{s, t} rows_w[i, s] * cols_w[j, t] * image[rows_i[i, s], cols_i[j, t]]``: the same as
    :func:`apply_interpolation` with the dense matrices the taps describe, but reading only the pixels the
    taps name (cheaper when the output is much smaller than the image, e.g. glimpses). Any number of taps
    per sample works (e.g. area averaging, see :func:`visattn_jax.ram.glimpse_sensor`).

    Args:
      image: ``[H, W, C]``.
      rows: ``(indices [h, S] int in [0, H), weights [h, S])`` (:func:`interpolation_taps`).
      cols: ``(indices [w, T] int in [0, W), weights [w, T])``.

    Returns:
      ``[h, w, C]`` in ``image``'s dtype.
    """
    image = _as_float_array(image, "image")
    _check_image(image)
    (row_idx, row_w), (col_idx, col_w) = (tuple(map(jnp.asarray, op)) for op in (rows, cols))
    for name, idx, w in (("rows", row_idx, row_w), ("cols", col_idx, col_w)):
        if idx.ndim != 2 or w.shape != idx.shape:
            raise ValueError(f"{name} must be (indices [n, taps], weights [n, taps]), got {idx.shape} and {w.shape}.")
        if not jnp.issubdtype(idx.dtype, jnp.integer):
            raise TypeError(f"{name} indices must be integers, got {idx.dtype}.")
    ctype = _compute_dtype(image.dtype)
    highest = jax.lax.Precision.HIGHEST  # full float32 on every backend (no TF32 / bfloat16 passes)
    lines = jnp.einsum("hs,hswc->hwc", row_w.astype(ctype), image.astype(ctype)[row_idx], precision=highest)
    out = jnp.einsum("wt,hwtc->hwc", col_w.astype(ctype), lines[:, col_idx], precision=highest)
    return out.astype(image.dtype)
