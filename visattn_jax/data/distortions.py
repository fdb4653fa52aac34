"""The papers' distorted, translated and cluttered MNIST variants, as pure seeded JAX functions.

Every generator takes ``key`` first and a batch of clean digits ``[N, 28, 28, 1]`` (float, ink in ``[0, 1]``)
and returns the distorted batch ``[N, S, S, 1]`` in the same dtype. They run on device inside a jitted step, so
training data is fresh every step; a fixed key gives the same test set on every machine (up to float rounding
of the backend). The geometric ones pull through :func:`visattn_jax.grid_sample` with zero padding.

Settings follow PAPERS.md. The STN appendix details are unverified there; the choices made are:

* ``rotated`` (R): rotation uniform in +-90 degrees about the centre, 28x28.
* ``rts`` (RTS): rotation +-45 degrees, scale uniform in [0.7, 1.2], placed uniformly at random such that the
  whole digit (its ink, not the empty 28x28 frame) stays inside the 42x42 canvas (the outermost pixel ring
  stays empty); a digit that would not fit even centred has its scale reduced until it does.
* ``projective`` (P): scale uniform in [0.75, 1.0], then each corner of the (normalised) frame moved by
  Gaussian noise with std 0.1 (a homography through the four corners), 28x28.
* ``elastic`` (E): a thin-plate spline through a 4x4 control grid whose points move by Gaussian noise with
  std 1.5 pixels, 28x28.
* ``translated``: the 28x28 digit at a uniformly random integer position fully inside a 60x60 / 100x100 canvas.
* ``cluttered``: ``translated`` plus ``num_pieces`` random 8x8 crops of other digits at random positions
  (4 for 60x60, 8 for 100x100), combined with ``max`` so values stay in [0, 1]. The RAM paper's setting.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from visattn_jax.grids import affine_grid, projective_grid, tps_control_points, tps_grid
from visattn_jax.sampling import grid_sample

__all__ = [
    "DISTORTIONS",
    "cluttered",
    "distort",
    "elastic",
    "projective",
    "rotated",
    "rts",
    "translated",
]

_DIGIT = 28


def _check_digits(digits: ArrayLike) -> jax.Array:
    digits = jnp.asarray(digits)
    if digits.ndim != 4 or digits.shape[-1] != 1:
        raise ValueError(f"digits must have shape [N, H, W, 1] (a batch of grey images), got {digits.shape}.")
    if not jnp.issubdtype(digits.dtype, jnp.floating):
        raise TypeError(f"digits must be floating with ink in [0, 1], got {digits.dtype}; use images / 255.")
    return digits


def _rotation(angle: jax.Array) -> jax.Array:
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])])


def rotated(key: jax.Array, digits: ArrayLike, *, max_degrees: float = 90.0) -> jax.Array:
    """R: each digit rotated by an angle uniform in ``[-max_degrees, max_degrees]``. ``[N, 28, 28, 1]``."""
    digits = _check_digits(digits)
    angles = jax.random.uniform(key, (digits.shape[0],), minval=-1.0, maxval=1.0) * np.deg2rad(max_degrees)
    h, w = digits.shape[1:3]

    def theta(angle):
        # Pull: output point p reads R^-1 p; normalised x and y have the same pixel scale for square images.
        return jnp.concatenate([_rotation(-angle), jnp.zeros((2, 1))], axis=1)

    grid = jax.vmap(lambda a: affine_grid(theta(a), (h, w)))(angles)
    return grid_sample(digits, grid)


def _ink_radius(digit: jax.Array) -> jax.Array:
    """The radius (pixels, from the frame centre) of the disc that holds all of a [H, W, 1] digit's ink.

    Measured to the corner of each inked pixel's bilinear footprint (one pixel either way of its centre), so
    the interpolated digit lies inside the disc too.
    """
    h, w = digit.shape[:2]
    ys, xs = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    reach = np.sqrt((np.abs(xs) + 1.0) ** 2 + (np.abs(ys) + 1.0) ** 2).astype(np.float32)
    return jnp.max(jnp.where(digit[..., 0] > 0, reach, 0.0))


def rts(
    key: jax.Array,
    digits: ArrayLike,
    *,
    canvas: int = 42,
    max_degrees: float = 45.0,
    scale_range: tuple[float, float] = (0.7, 1.2),
) -> jax.Array:
    """RTS: rotated, scaled and placed at a random position with the whole digit inside the canvas.

    Returns ``[N, canvas, canvas, 1]``.
    """
    digits = _check_digits(digits)
    n, h, _ = digits.shape[:3]
    k_angle, k_scale, k_shift = jax.random.split(key, 3)
    angles = jax.random.uniform(k_angle, (n,), minval=-1.0, maxval=1.0) * np.deg2rad(max_degrees)
    scales = jax.random.uniform(k_scale, (n,), minval=scale_range[0], maxval=scale_range[1])
    radius = jax.vmap(_ink_radius)(digits)  # pixels, in the digit's frame
    half = canvas / 2.0
    # The ink stays within r * s of the digit's centre for any rotation; it must end before the centres of
    # the canvas's outermost pixels. Shrink the rare digit that would not fit even centred.
    inner = half - 0.5
    scales = jnp.minimum(scales, inner / jnp.maximum(radius, 1.0))
    room = jnp.maximum(inner - radius * scales, 0.0)  # how far (pixels) the centre may move
    shifts = jax.random.uniform(k_shift, (n, 2), minval=-1.0, maxval=1.0) * room[:, None]

    def theta(angle, scale, shift):
        # Canvas pixel offset u (from the centre) reads digit offset R^-1 (u - t) / s; in normalised units
        # u = half * x_canvas and digit offset = (h / 2) * x_digit.
        inverse = _rotation(-angle) / scale
        linear = inverse * (half / (h / 2.0))
        offset = -(inverse @ shift) / (h / 2.0)
        return jnp.concatenate([linear, offset[:, None]], axis=1)

    grid = jax.vmap(lambda a, s, t: affine_grid(theta(a, s, t), (canvas, canvas)))(angles, scales, shifts)
    return grid_sample(digits, grid)


def _homography_from_corners(target: jax.Array, source: jax.Array) -> jax.Array:
    """The 3x3 homography H (H[2, 2] = 1) mapping 4 target points [4, 2] onto 4 source points [4, 2]."""
    x, y = target[:, 0], target[:, 1]
    u, v = source[:, 0], source[:, 1]
    zeros, ones = jnp.zeros_like(x), jnp.ones_like(x)
    rows_u = jnp.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], axis=1)
    rows_v = jnp.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], axis=1)
    system = jnp.concatenate([rows_u, rows_v])
    h = jnp.linalg.solve(system, jnp.concatenate([u, v]))
    return jnp.concatenate([h, jnp.ones((1,), h.dtype)]).reshape(3, 3)


def projective(
    key: jax.Array,
    digits: ArrayLike,
    *,
    scale_range: tuple[float, float] = (0.75, 1.0),
    corner_std: float = 0.1,
) -> jax.Array:
    """P: a random scale, then the four corners perturbed by Gaussian noise (normalised units). ``[N, 28, 28, 1]``."""
    digits = _check_digits(digits)
    n, h, w = digits.shape[:3]
    k_scale, k_noise = jax.random.split(key)
    scales = jax.random.uniform(k_scale, (n,), minval=scale_range[0], maxval=scale_range[1])
    noise = jax.random.normal(k_noise, (n, 4, 2)) * corner_std
    corners = jnp.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])

    def grid(scale, corner_noise):
        # Output corner c shows the digit's corner c / s moved by noise: a zoom in by 1/s, then the warp.
        homography = _homography_from_corners(corners, corners / scale + corner_noise)
        return projective_grid(homography, (h, w))

    return grid_sample(digits, jax.vmap(grid)(scales, noise))


def elastic(key: jax.Array, digits: ArrayLike, *, sigma_pixels: float = 1.5, grid_size: int = 4) -> jax.Array:
    """E: a TPS through a ``grid_size`` x ``grid_size`` control grid moved by N(0, sigma_pixels^2). ``[N, 28, 28, 1]``."""
    digits = _check_digits(digits)
    n, h, w = digits.shape[:3]
    k = grid_size * grid_size
    sigma = sigma_pixels * 2.0 / np.array([[[w, h]]], np.float32)  # pixels -> normalised units, [1, 1, 2]
    offsets = jax.random.normal(key, (n, k, 2)) * sigma
    points = tps_control_points(grid_size)
    grid = jax.vmap(lambda o: tps_grid(o, (h, w), control_points=points))(offsets)
    return grid_sample(digits, grid)


def _paste(canvas: jax.Array, patch: jax.Array, top: jax.Array, left: jax.Array) -> jax.Array:
    """Max-combines ``patch`` into ``canvas`` at integer (top, left) (both [H, W, C])."""
    window = jax.lax.dynamic_slice(canvas, (top, left, 0), patch.shape)
    return jax.lax.dynamic_update_slice(canvas, jnp.maximum(window, patch), (top, left, 0))


def translated(key: jax.Array, digits: ArrayLike, *, canvas: int = 60) -> jax.Array:
    """The digit, unchanged, at a uniformly random integer position fully inside the canvas."""
    digits = _check_digits(digits)
    n, h, w, c = digits.shape
    if canvas < max(h, w):
        raise ValueError(f"canvas={canvas} is smaller than the digits ({h}x{w}).")
    positions = jax.random.randint(key, (n, 2), 0, jnp.array([[canvas - h + 1, canvas - w + 1]]))
    empty = jnp.zeros((canvas, canvas, c), digits.dtype)
    return jax.vmap(lambda d, p: _paste(empty, d, p[0], p[1]))(digits, positions)


def cluttered(
    key: jax.Array,
    digits: ArrayLike,
    *,
    canvas: int = 60,
    num_pieces: int = 4,
    piece_size: int = 8,
    clutter_source: ArrayLike | None = None,
) -> jax.Array:
    """Translated digits plus ``num_pieces`` random ``piece_size`` crops of other digits at random places.

    Args:
      key: PRNG key.
      digits: ``[N, 28, 28, 1]`` the digits to classify.
      canvas: output size.
      num_pieces: clutter pieces per image (RAM: 4 on 60x60, 8 on 100x100).
      piece_size: side of each square clutter piece.
      clutter_source: ``[M, 28, 28, 1]`` digits to crop clutter from (default: the batch itself; each image
        takes its pieces from randomly chosen *other* digits of it, as the RAM paper says, so ``N >= 2``).

    Returns:
      ``[N, canvas, canvas, 1]``.
    """
    digits = _check_digits(digits)
    source = digits if clutter_source is None else _check_digits(clutter_source)
    n, h, w, _ = digits.shape
    if canvas < piece_size:
        raise ValueError(f"canvas={canvas} is smaller than piece_size={piece_size}.")
    k_digit, k_which, k_crop, k_place = jax.random.split(key, 4)
    out = translated(k_digit, digits, canvas=canvas)
    if clutter_source is None:
        if n < 2:
            raise ValueError(
                "cluttered: the clutter comes from the other digits of the batch, so it needs at least 2 digits; "
                "pass clutter_source to clutter a single one."
            )
        # A uniform choice among the n - 1 other digits: draw from [0, n - 1) and skip the image's own index.
        which = jax.random.randint(k_which, (n, num_pieces), 0, n - 1)
        which = which + (which >= jnp.arange(n)[:, None]).astype(which.dtype)
    else:
        which = jax.random.randint(k_which, (n, num_pieces), 0, source.shape[0])
    crops = jax.random.randint(k_crop, (n, num_pieces, 2), 0, jnp.array([[[h - piece_size + 1, w - piece_size + 1]]]))
    places = jax.random.randint(k_place, (n, num_pieces, 2), 0, canvas - piece_size + 1)

    def add_clutter(image, which_, crops_, places_):
        def one(img, args):
            index, crop, place = args
            piece = jax.lax.dynamic_slice(source[index], (crop[0], crop[1], 0), (piece_size, piece_size, 1))
            return _paste(img, piece, place[0], place[1]), None

        return jax.lax.scan(one, image, (which_, crops_, places_))[0]

    return jax.vmap(add_clutter)(out, which, crops, places)


#: name -> generator with the papers' settings; output size in the name where it varies.
DISTORTIONS: dict[str, Callable[..., jax.Array]] = {
    "none": lambda key, digits: _check_digits(digits),
    "rotated": rotated,
    "rts": rts,
    "projective": projective,
    "elastic": elastic,
    "translated60": functools.partial(translated, canvas=60),
    "translated100": functools.partial(translated, canvas=100),
    "cluttered60": functools.partial(cluttered, canvas=60, num_pieces=4),
    "cluttered100": functools.partial(cluttered, canvas=100, num_pieces=8),
}


def distort(name: str, key: jax.Array, digits: ArrayLike) -> jax.Array:
    """Applies the named distortion (a key of :data:`DISTORTIONS`) with the papers' settings."""
    if name not in DISTORTIONS:
        raise ValueError(f"Unknown distortion {name!r}; choose one of {sorted(DISTORTIONS)}.")
    return DISTORTIONS[name](key, digits)
