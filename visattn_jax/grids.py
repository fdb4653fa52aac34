"""Grid generators: transform parameters -> sampling grids for :mod:`visattn_jax.sampling` (pull).

Every generator returns, for an output of ``shape = (h, w)``, a grid ``[h, w, 2]`` of normalised source
coordinates ``(x, y)``: output pixel ``(i, j)`` reads the input at ``grid[i, j]`` (STN paper, eq. 1:
``(x_s, y_s) = T_theta(x_t, y_t)``). The output pixels' own normalised coordinates are those of
:func:`base_grid`, which follows the same ``align_corners`` convention as the sampler, so the identity
transform returns the input exactly. Generators are pure and unbatched; batch them with ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from visattn_jax.sampling import _compute_dtype

__all__ = [
    "affine_grid",
    "attention_grid",
    "attention_to_affine",
    "base_grid",
    "base_coords",
    "displacement_grid",
    "pixels_to_normalized",
    "projective_grid",
    "tps_control_points",
    "tps_grid",
]


def _check_shape(shape: Sequence[int], rank: int = 2) -> tuple[int, ...]:
    """``shape`` as ints: ``(h, w)`` (rank 2) or ``(d, h, w)`` (rank 3), each positive."""
    if rank == 2 and len(shape) == 3:
        raise ValueError(
            f"shape {tuple(shape)!r} is a volume's (d, h, w): this generator makes 2-D grids; affine_grid and "
            "base_grid also make 3-D ones."
        )
    if len(shape) != rank or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape):
        kind = "a pair of positive ints (h, w)" if rank == 2 else "a triple of positive ints (d, h, w)"
        raise ValueError(f"shape must be {kind}, got {shape!r}.")
    return tuple(int(s) for s in shape)


def _check_params(params: ArrayLike, name: str, expected: tuple[int, ...]) -> jax.Array:
    params = jnp.asarray(params)
    if not jnp.issubdtype(params.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {params.dtype}.")
    if params.shape != expected:
        batch_hint = " (generators are unbatched: use jax.vmap for a batch)" if params.ndim > len(expected) else ""
        raise ValueError(f"{name} must have shape {list(expected)}, got {list(params.shape)}{batch_hint}.")
    return params.astype(_compute_dtype(params.dtype))


def base_coords(size: int, *, align_corners: bool = False) -> np.ndarray:
    """Normalised coordinates of the ``size`` pixel centres along one axis: ``[size]`` float32.

    ``align_corners=True``: ``linspace(-1, 1, size)``; False: the same scaled by ``(size - 1) / size`` (pixel
    centres when -1 and 1 are the outer edges). A single pixel sits at 0. PyTorch's ``affine_grid`` uses these.
    """
    if size <= 1:
        return np.zeros((size,), np.float32)
    coords = np.linspace(-1.0, 1.0, size, dtype=np.float64)
    if not align_corners:
        coords = coords * (size - 1) / size
    return coords.astype(np.float32)


def base_grid(shape: Sequence[int], *, align_corners: bool = False) -> np.ndarray:
    """The identity grid (a NumPy constant): ``[h, w, 2]`` normalised ``(x, y)`` of every output pixel for
    ``shape = (h, w)``, or ``[d, h, w, 3]`` normalised ``(x, y, z)`` of every output voxel for ``(d, h, w)``."""
    if len(shape) == 3:
        d, h, w = _check_shape(shape, rank=3)
        zs, ys, xs = (base_coords(n, align_corners=align_corners) for n in (d, h, w))
        z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
        return np.stack([x, y, z], axis=-1)
    h, w = _check_shape(shape)
    xs = base_coords(w, align_corners=align_corners)
    ys = base_coords(h, align_corners=align_corners)
    return np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1)


def pixels_to_normalized(pixels: ArrayLike, shape: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """Pixel coordinates -> the sampler's normalised ones, for an input of spatial ``shape`` ``(H, W)`` or
    ``(D, H, W)``.

    ``pixels [..., 2]`` or ``[..., 3]`` are ``(x, y[, z])`` in pixels (pixel ``i`` has its centre at ``i``:
    ``x`` indexes W, ``y`` H, ``z`` D); the inverse of the module docstring's mappings:
    ``x = 2 x_pix / (W - 1) - 1`` (``align_corners``; a single pixel maps to 0) or ``(2 x_pix + 1) / W - 1``.
    """
    pixels = jnp.asarray(pixels)
    if not jnp.issubdtype(pixels.dtype, jnp.floating):
        pixels = pixels.astype(jnp.float32)
    sizes = [int(s) for s in shape][::-1]  # coordinate order: W, H[, D]
    if pixels.ndim < 1 or pixels.shape[-1] != len(sizes) or len(sizes) not in (2, 3):
        raise ValueError(
            f"pixels must have shape [..., {len(sizes)}] for an input of spatial shape {tuple(shape)} (2-D: (H, W), "
            f"3-D: (D, H, W)), got {pixels.shape}."
        )
    pixels = pixels.astype(_compute_dtype(pixels.dtype))
    out = []
    for axis, size in enumerate(sizes):
        p = pixels[..., axis]
        if align_corners:
            out.append(jnp.zeros_like(p) if size == 1 else p * (2.0 / (size - 1)) - 1.0)
        else:
            out.append((2.0 * p + 1.0) / size - 1.0)
    return jnp.stack(out, axis=-1)


def displacement_grid(flow: ArrayLike, *, align_corners: bool = False) -> jax.Array:
    """A displacement field in pixels -> a sampling grid: output pixel ``p`` reads the input at ``p + flow[p]``
    (image registration's ``identity + flow``), input and output of the same size.

    Args:
      flow: ``[H, W, 2]`` (``(dx, dy)``) or ``[D, H, W, 3]`` (``(dx, dy, dz)``) in pixels; unbatched
        (``jax.vmap`` for a batch).
    Returns:
      The normalised grid, same shape as ``flow``.
    """
    flow = jnp.asarray(flow)
    if flow.ndim not in (3, 4) or flow.shape[-1] != flow.ndim - 1:
        raise ValueError(
            f"flow must be [H, W, 2] or [D, H, W, 3] (pixels, (dx, dy[, dz]) in the last axis), got {flow.shape}."
        )
    spatial = flow.shape[:-1]
    axes = [jnp.arange(n, dtype=jnp.float32) for n in spatial]
    identity = jnp.stack(jnp.meshgrid(*axes, indexing="ij")[::-1], axis=-1)  # (x, y[, z]) of every pixel
    return pixels_to_normalized(identity + flow, spatial, align_corners=align_corners)


def _apply_linear(matrix: jax.Array, base: jax.Array) -> jax.Array:
    """``matrix @ (x, y, 1)`` (or ``(x, y, z, 1)``) for every point of ``base [..., D]`` -> ``[..., rows]``.

    Written elementwise rather than as a matmul: exact for the identity (so it returns the base grid bit for
    bit) and free of the reduced default matmul precision of TPUs.
    """
    column = lambda j: matrix[:, j].reshape((1,) * (base.ndim - 1) + (-1,))  # noqa: E731
    out = base[..., 0:1] * column(0)
    for j in range(1, base.shape[-1]):  # x * c0 + y * c1 (+ z * c2) + c_last
        out = out + base[..., j : j + 1] * column(j)
    return out + column(base.shape[-1])


def affine_grid(theta: ArrayLike, shape: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """Affine grid (STN eq. 1), the unbatched twin of ``torch.nn.functional.affine_grid``, for images and
    volumes.

    ``grid[i, j] = theta @ (x_j, y_i, 1)`` with ``(x_j, y_i)`` from :func:`base_grid`; for a volume
    ``grid[k, i, j] = theta @ (x_j, y_i, z_k, 1)``.

    Args:
      theta: ``[2, 3]`` (images) or ``[3, 4]`` (volumes) affine matrix mapping output (target) coordinates to
        input (source) coordinates.
      shape: ``(h, w)`` or ``(d, h, w)`` of the output.
      align_corners: see :mod:`visattn_jax.sampling`.

    Returns:
      ``[h, w, 2]`` or ``[d, h, w, 3]`` normalised source coordinates, float32 (or theta's dtype if wider).
    """
    theta = _check_params(theta, "theta", (3, 4) if len(shape) == 3 else (2, 3))
    base = jnp.asarray(base_grid(shape, align_corners=align_corners), theta.dtype)
    return _apply_linear(theta, base)


def attention_to_affine(params: ArrayLike) -> jax.Array:
    """STN "attention" parameters ``[3] = (s, t_x, t_y)`` -> ``[2, 3]`` theta ``[[s, 0, t_x], [0, s, t_y]]``."""
    params = _check_params(params, "params", (3,))
    s, tx, ty = params[0], params[1], params[2]
    zero = jnp.zeros_like(s)
    return jnp.stack([jnp.stack([s, zero, tx]), jnp.stack([zero, s, ty])])


def attention_grid(params: ArrayLike, shape: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """The STN attention transform (isotropic scale + translation, a crop/zoom): ``[h, w, 2]``.

    ``params = (s, t_x, t_y)``; output pixel ``(x, y)`` reads input ``(s x + t_x, s y + t_y)``. The grid is
    separable, so :func:`visattn_jax.separable_sample` with ``x = s * base_coords(w) + t_x`` (and likewise
    ``y``) computes the same samples with matmuls.
    """
    _check_shape(shape)
    return affine_grid(attention_to_affine(params), shape, align_corners=align_corners)


def projective_grid(
    homography: ArrayLike, shape: Sequence[int], *, align_corners: bool = False, eps: float = 1e-6
) -> jax.Array:
    """Projective grid: ``(x_s, y_s) = (u / z, v / z)`` with ``(u, v, z) = H @ (x_t, y_t, 1)``.

    The STN projective transform has 8 parameters: pass ``H`` with ``H[2, 2] = 1`` (the identity is
    ``jnp.eye(3)``). Where ``|z| < eps`` (points mapped to infinity) the divisor is clamped to ``+-eps`` so the
    coordinates stay finite and far outside the image (they sample the padding), never NaN.

    Args:
      homography: ``[3, 3]`` matrix mapping output coordinates to input coordinates.
      shape: ``(h, w)`` of the output.
      align_corners: see :mod:`visattn_jax.sampling`.
      eps: the smallest ``|z|`` used as divisor.

    Returns:
      ``[h, w, 2]`` normalised source coordinates.
    """
    homography = _check_params(homography, "homography", (3, 3))
    _check_shape(shape)
    base = jnp.asarray(base_grid(shape, align_corners=align_corners), homography.dtype)
    uvz = _apply_linear(homography, base)
    z = uvz[..., 2:]
    z = jnp.where(jnp.abs(z) < eps, jnp.where(z < 0, -eps, eps), z)
    return uvz[..., :2] / z


# --------------------------------------------------------------------------------------------------------
# Thin-plate spline (Bookstein 1989; STN section 3.4 and appendix).
# --------------------------------------------------------------------------------------------------------


def tps_control_points(rows: int, cols: int | None = None) -> np.ndarray:
    """Control points on a regular ``rows x cols`` grid spanning ``[-1, 1]^2``: ``[rows * cols, 2]`` (x, y).

    The STN paper uses 16 points (4 x 4).
    """
    cols = rows if cols is None else cols
    if rows < 2 or cols < 2:
        raise ValueError(f"a TPS needs at least a 2 x 2 grid of control points, got {rows} x {cols}.")
    xs = np.linspace(-1.0, 1.0, cols)
    ys = np.linspace(-1.0, 1.0, rows)
    return np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2).astype(np.float32)


def _tps_kernel(squared_distance):
    """Radial basis U(r) = r^2 log r^2, with U(0) = 0 (double where: no NaN gradient at 0)."""
    positive = squared_distance > 0
    safe = jnp.where(positive, squared_distance, 1.0)
    return jnp.where(positive, safe * jnp.log(safe), 0.0)


def _tps_inverse_system(control_points: np.ndarray) -> np.ndarray:
    """Inverse of the TPS system matrix ``[[K, P], [P^T, 0]]``, ``[K + 3, K + 3]`` float64 (a constant)."""
    k = control_points.shape[0]
    cp = control_points.astype(np.float64)
    d2 = ((cp[:, None, :] - cp[None, :, :]) ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(d2 > 0, d2 * np.log(np.where(d2 > 0, d2, 1.0)), 0.0)
    p = np.concatenate([np.ones((k, 1)), cp], axis=1)
    system = np.zeros((k + 3, k + 3))
    system[:k, :k] = kernel
    system[:k, k:] = p
    system[k:, :k] = p.T
    return np.linalg.inv(system)


def tps_grid(
    offsets: ArrayLike,
    shape: Sequence[int],
    *,
    control_points: ArrayLike | None = None,
    align_corners: bool = False,
) -> jax.Array:
    """Thin-plate-spline grid: the smooth warp that moves each control point by its offset.

    The target control points ``p_k`` are fixed (default: a regular grid, :func:`tps_control_points` with
    ``sqrt(K)`` per side); the network predicts ``offsets``, so the source points are ``p_k + offsets_k`` and
    zero offsets give the identity. The spline ``f(q) = a_0 + A q + sum_k w_k U(|q - p_k|)`` interpolates
    ``f(p_k) = p_k + offsets_k`` with minimal bending energy; its coefficients are one matmul with a
    precomputed inverse of the ``[K + 3, K + 3]`` TPS system (a constant, since the target points are fixed).

    Args:
      offsets: ``[K, 2]`` displacements ``(dx, dy)`` of the control points, in normalised units.
      shape: ``(h, w)`` of the output.
      control_points: ``[K, 2]`` target control points ``(x, y)`` (a constant: NumPy or a concrete array).
        Default: a square regular grid, which requires K to be a square number (16 in the paper).
      align_corners: see :mod:`visattn_jax.sampling`.

    Returns:
      ``[h, w, 2]`` normalised source coordinates.
    """
    offsets = jnp.asarray(offsets)
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise ValueError(f"offsets must have shape [K, 2], got {list(offsets.shape)}.")
    k = offsets.shape[0]
    if control_points is None:
        side = int(round(k**0.5))
        if side * side != k:
            raise ValueError(
                f"with the default control points K must be a square number (a side x side grid), got K={k}; "
                "pass control_points for other layouts."
            )
        control_points = tps_control_points(side)
    try:
        control_points = np.asarray(control_points, np.float64)
    except jax.errors.TracerArrayConversionError as error:
        raise TypeError("control_points must be a constant (NumPy array), not a traced value.") from error
    if control_points.shape != (k, 2):
        raise ValueError(f"control_points must have shape [{k}, 2] to match offsets, got {list(control_points.shape)}.")
    offsets = _check_params(offsets, "offsets", (k, 2))
    inverse = jnp.asarray(_tps_inverse_system(control_points), offsets.dtype)
    # A thin-plate spline reproduces affine maps exactly and is linear in its targets, so the spline through
    # p_k + offsets_k is the identity plus the spline through offsets_k: built that way, zero offsets give the
    # base grid exactly (not to float32 rounding).
    targets = jnp.concatenate([offsets, jnp.zeros((3, 2), offsets.dtype)])
    coefficients = jnp.dot(
        inverse, targets, precision=jax.lax.Precision.HIGHEST
    )  # [K + 3, 2]: K radial weights, then (a_0, a_x, a_y) of the displacement

    _check_shape(shape)
    base = jnp.asarray(base_grid(shape, align_corners=align_corners), offsets.dtype).reshape(-1, 2)
    cp = jnp.asarray(control_points, offsets.dtype)
    d2 = jnp.sum((base[:, None, :] - cp[None, :, :]) ** 2, axis=-1)  # [h * w, K]
    features = jnp.concatenate([_tps_kernel(d2), jnp.ones((base.shape[0], 1), offsets.dtype), base], axis=1)
    h, w = _check_shape(shape)
    return (base + jnp.dot(features, coefficients, precision=jax.lax.Precision.HIGHEST)).reshape(h, w, 2)
