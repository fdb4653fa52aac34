"""The sampler against independent references, under transformations, and on bad input."""

from __future__ import annotations

import inspect
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from jax.test_util import check_grads

import visattn_jax as va
from tests.references import bilinear_reference

MODES = ("zeros", "border", "reflection")
SHAPES = ((1, 1, 1), (2, 3, 1), (5, 7, 2), (28, 28, 1), (13, 31, 3))
CASES = list(itertools.product(SHAPES, MODES, (False, True)))


def _random(shape, seed, low=0.0, high=1.0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def _coords(seed, n=300, spread=1.6):
    """Coordinates in [-spread, spread]^2 plus far-away and exactly-on-the-edge ones."""
    inside = _random((n, 2), seed, -spread, spread)
    extra = np.array(
        [[-1, -1], [1, 1], [-1, 1], [0, 0], [50.0, -3.0], [-1e6, 0.2], [0.3, 1e7], [1.0001, -1.0001]], np.float32
    )
    return np.concatenate([inside, extra])


def _torch():
    return pytest.importorskip("torch")


# ------------------------------------------------------------------------------------------------------
# Conventions
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,mode,align_corners", CASES)
def test_identity_returns_input_exactly(shape, mode, align_corners):
    image = _random(shape, 0)
    grid = va.affine_grid(jnp.eye(2, 3), shape[:2], align_corners=align_corners)
    out = va.bilinear_sample(image, grid, align_corners=align_corners, padding_mode=mode)
    np.testing.assert_array_equal(np.asarray(out), image)


@pytest.mark.parametrize("align_corners", [False, True])
def test_integer_translation_moves_pixels(align_corners):
    image = _random((6, 9, 1), 1)
    h, w = 6, 9
    step = 2.0 / (w - 1) if align_corners else 2.0 / w  # one pixel in normalised x
    theta = jnp.array([[1.0, 0.0, 2 * step], [0.0, 1.0, 0.0]])  # reads 2 pixels to the right
    out = np.asarray(
        va.bilinear_sample(
            image, va.affine_grid(theta, (h, w), align_corners=align_corners), align_corners=align_corners
        )
    )
    np.testing.assert_allclose(out[:, : w - 2], image[:, 2:], atol=1e-6)
    np.testing.assert_allclose(out[:, w - 2 :], 0.0, atol=1e-6)  # zero padding beyond the edge


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9])
def test_subpixel_translation(align_corners, fraction):
    image = _random((4, 8, 2), 2)
    h, w = 4, 8
    step = 2.0 / (w - 1) if align_corners else 2.0 / w
    theta = jnp.array([[1.0, 0.0, fraction * step], [0.0, 1.0, 0.0]])
    out = np.asarray(
        va.bilinear_sample(
            image, va.affine_grid(theta, (h, w), align_corners=align_corners), align_corners=align_corners
        )
    )
    expected = (1 - fraction) * image[:, :-1] + fraction * image[:, 1:]
    np.testing.assert_allclose(out[:, :-1], expected, atol=1e-5)
    np.testing.assert_allclose(out[:, -1], (1 - fraction) * image[:, -1], atol=1e-5)  # fades into zeros


def test_coordinate_order_is_x_then_y():
    image = np.zeros((3, 5, 1), np.float32)
    image[0, 4, 0] = 1.0  # top-right pixel: row 0, column 4
    out = va.bilinear_sample(image, jnp.array([[1.0, -1.0]]), align_corners=True)  # x = right, y = top
    assert float(out[0, 0]) == 1.0


def test_zero_padding_fades_smoothly():
    """Half a pixel beyond the last centre the value is half the edge value, not a hard cut."""
    image = np.ones((4, 4, 1), np.float32)
    xs = jnp.array([[1.0, 0.0], [1.25, 0.0], [1.5, 0.0]])  # align_corners=False: x=1 is the outer edge
    out = np.asarray(va.bilinear_sample(image, xs))[:, 0]
    np.testing.assert_allclose(out, [0.5, 0.0, 0.0], atol=1e-6)
    inside = np.asarray(va.bilinear_sample(image, jnp.array([[0.75, 0.0], [0.875, 0.0]])))[:, 0]
    np.testing.assert_allclose(inside, [1.0, 0.75], atol=1e-6)


# ------------------------------------------------------------------------------------------------------
# Against independent references
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,mode,align_corners", CASES)
def test_matches_numpy_reference(shape, mode, align_corners):
    image = _random(shape, 3)
    coords = _coords(4)
    if mode == "reflection":  # float32 cannot place a reflection of x = 1e7 within a period of a few pixels
        coords = coords[np.all(np.abs(coords) < 1e3, axis=-1)]
    coords = coords[: len(coords) // 4 * 4].reshape(-1, 4, 2)
    out = va.bilinear_sample(image, coords, align_corners=align_corners, padding_mode=mode)
    expected = bilinear_reference(image, coords, align_corners=align_corners, padding_mode=mode)
    assert out.shape == coords.shape[:-1] + (shape[-1],)
    np.testing.assert_allclose(np.asarray(out), expected, atol=2e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "align_corners", [False, pytest.param(True, marks=pytest.mark.slow)]
)  # align_corners=True: slow tier
@pytest.mark.parametrize("channels", [1, 3])  # the sampler combines one channel and several in different forms
def test_coordinates_across_the_border_band_match_the_reference(mode, align_corners, channels):
    """Pixel coordinates swept through the band the sampler clamps to ([-2, size + 1]) and past it, including
    points a hair from every boundary of that band and values near float32's largest."""
    h, w = 5, 6
    image = _random((2, h, w, channels), 30) + 0.5
    marks = np.array([-2.0, -1.0, 0.0, w - 1.0, w, w + 1.0])
    pix = np.concatenate([np.arange(-4.0, w + 3.0, 0.125), (marks[:, None] + [-1e-3, 1e-3]).ravel()])
    scale = (w - 1) / 2 if align_corners else w / 2
    x = (pix - (w - 1) / 2) / scale  # the normalised x of each pixel coordinate
    far = (
        np.array([1e30, -1e30, 3e38, -3e38]) if mode != "reflection" else np.zeros(0)
    )  # (float32 reflection: see above)
    x = np.concatenate([x, far]).astype(np.float32)
    y = _random(x.shape, 31, -1.3, 1.3)
    grid = np.stack([x, y], axis=-1).reshape(2, -1, 1, 2)  # half of the sweep in each image
    sample = lambda im, g: va.grid_sample(im, g, align_corners=align_corners, padding_mode=mode)  # noqa: E731
    out = np.asarray(sample(image, grid))
    for n in range(2):
        expected = bilinear_reference(image[n], grid[n], align_corners=align_corners, padding_mode=mode)
        np.testing.assert_allclose(out[n], expected, atol=2e-5)
    d_images, d_grid = jax.grad(lambda im, g: jnp.sum(sample(im, g) ** 2), argnums=(0, 1))(image, grid)
    assert np.all(np.isfinite(np.asarray(d_images))) and np.all(np.isfinite(np.asarray(d_grid)))
    if mode == "zeros":  # no tap inside the image: no gradient to the coordinate either
        x_pix = np.concatenate([pix, far]).reshape(2, -1)
        outside = (x_pix < -1.01) | (x_pix > w + 0.01)
        np.testing.assert_array_equal(np.asarray(d_grid)[..., 0, 0][outside], 0.0)


# SciPy's boundary modes that equal PyTorch's (and ours) for order-1 interpolation.
_SCIPY_MODES = {
    ("zeros", False): "grid-constant",
    ("zeros", True): "grid-constant",
    ("border", False): "nearest",
    ("border", True): "nearest",
    ("reflection", False): "reflect",
    ("reflection", True): "mirror",
}


@pytest.mark.parametrize("shape,mode,align_corners", CASES)
def test_matches_scipy_map_coordinates(shape, mode, align_corners):
    if mode == "reflection" and align_corners and min(shape[:2]) == 1:
        pytest.skip("SciPy's mirror mode is undefined for a single pixel")
    image = _random(shape, 5).astype(np.float64)
    coords = _random((200, 2), 6, -1.8, 1.8)
    h, w, c = shape
    if align_corners:
        px, py = (coords[:, 0] + 1) / 2 * (w - 1), (coords[:, 1] + 1) / 2 * (h - 1)
    else:
        px, py = ((coords[:, 0] + 1) * w - 1) / 2, ((coords[:, 1] + 1) * h - 1) / 2
    expected = np.stack(
        [
            scipy.ndimage.map_coordinates(image[..., k], [py, px], order=1, mode=_SCIPY_MODES[mode, align_corners])
            for k in range(c)
        ],
        axis=-1,
    )
    out = va.bilinear_sample(image.astype(np.float32), coords, align_corners=align_corners, padding_mode=mode)
    np.testing.assert_allclose(np.asarray(out), expected, atol=2e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_jax_map_coordinates(shape):
    image = _random(shape, 7)
    coords = _random((150, 2), 8, -1.5, 1.5)
    h, w, _ = shape
    px, py = ((coords[:, 0] + 1) * w - 1) / 2, ((coords[:, 1] + 1) * h - 1) / 2
    per_channel = jax.vmap(
        lambda im: jax.scipy.ndimage.map_coordinates(im, [py, px], order=1, mode="constant"), in_axes=2, out_axes=-1
    )
    np.testing.assert_allclose(np.asarray(va.bilinear_sample(image, coords)), np.asarray(per_channel(image)), atol=2e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_matches_torch_grid_sample_values_and_gradients(mode, align_corners):
    torch = _torch()
    images = _random((3, 9, 11, 2), 9)
    grid = _random((3, 7, 5, 2), 10, -1.7, 1.7)
    grid[0, 0, :4] = [[60.0, 0.1], [-1e6, 0.5], [0.2, 1e7], [1.0, -1.0]]  # far outside and on the edge
    cotangent = _random((3, 7, 5, 2), 11, -1, 1)

    images_t = torch.tensor(images.transpose(0, 3, 1, 2), requires_grad=True)
    grid_t = torch.tensor(grid, requires_grad=True)
    out_t = torch.nn.functional.grid_sample(
        images_t, grid_t, mode="bilinear", padding_mode=mode, align_corners=align_corners
    )
    (out_t * torch.tensor(cotangent.transpose(0, 3, 1, 2))).sum().backward()

    def loss(imgs, g):
        out = va.grid_sample(imgs, g, align_corners=align_corners, padding_mode=mode)
        return jnp.sum(out * cotangent), out

    (d_images, d_grid), out = jax.grad(loss, argnums=(0, 1), has_aux=True)(images, grid)
    np.testing.assert_allclose(np.asarray(out), out_t.detach().numpy().transpose(0, 2, 3, 1), atol=2e-5)
    np.testing.assert_allclose(np.asarray(d_images), images_t.grad.numpy().transpose(0, 2, 3, 1), atol=2e-5)
    np.testing.assert_allclose(np.asarray(d_grid), grid_t.grad.numpy(), atol=2e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------------


def _non_integer_coords(shape_hw, n, seed, align_corners, margin=0.1):
    """Normalised coords whose pixel positions are at least ``margin`` away from integers (one-sided there)."""
    h, w = shape_hw
    rng = np.random.default_rng(seed)
    px = rng.integers(-1, w, n) + rng.uniform(margin, 1 - margin, n)  # includes the band within a pixel of the edge
    py = rng.integers(-1, h, n) + rng.uniform(margin, 1 - margin, n)
    if align_corners:
        x, y = px / (w - 1) * 2 - 1, py / (h - 1) * 2 - 1
    else:
        x, y = (2 * px + 1) / w - 1, (2 * py + 1) / h - 1
    return np.stack([x, y], -1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "align_corners", [False, pytest.param(True, marks=pytest.mark.slow)]
)  # align_corners=True: slow tier
def test_gradients_match_finite_differences(x64, mode, align_corners):
    image = _random((5, 6, 2), 12).astype(np.float64)
    coords = _non_integer_coords((5, 6), 40, 13, align_corners)
    if mode != "zeros":
        # Keep away from the clamp/reflection kinks (one-sided there too), still within a pixel of the border.
        coords = np.clip(coords, -0.93, 0.93)
    sample = lambda im, c: va.bilinear_sample(im, c, align_corners=align_corners, padding_mode=mode)  # noqa: E731
    # Forward mode (jvp, and jvp of jvp) and reverse mode (vjp, and vjp of vjp), each against finite differences.
    check_grads(sample, (image, coords), order=2, modes=["fwd", "rev"], eps=1e-4, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels", [1, pytest.param(3, marks=pytest.mark.slow)])  # 1 and several channels: two forms
def test_grid_sample_gradients_match_finite_differences(x64, channels):
    images = _random((2, 5, 4, channels), 14).astype(np.float64)
    grid = np.stack([_non_integer_coords((5, 4), 12, s, False) for s in (15, 16)]).reshape(2, 3, 4, 2)
    check_grads(va.grid_sample, (images, grid), order=2, modes=["fwd", "rev"], eps=1e-4, atol=1e-5, rtol=1e-5)


def _inner(a, b):
    return sum(
        float(jnp.vdot(x, y)) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "align_corners", [False, pytest.param(True, marks=pytest.mark.slow)]
)  # align_corners=True: slow tier
def test_jvp_is_the_transpose_of_the_vjp(x64, channels, mode, align_corners):
    """<v, J u> from forward mode equals <J^T v, u> from reverse mode, for random u, v (image and grid)."""
    images = _random((3, 6, 5, channels), 40, -1, 1).astype(np.float64)
    grid = _random((3, 7, 4, 2), 41, -1.4, 1.4).astype(np.float64)  # inside, across the border and outside
    sample = lambda im, g: va.grid_sample(im, g, align_corners=align_corners, padding_mode=mode)  # noqa: E731
    u = (_random(images.shape, 42, -1, 1).astype(np.float64), _random(grid.shape, 43, -1, 1).astype(np.float64))
    v = _random((3, 7, 4, channels), 44, -1, 1).astype(np.float64)
    out, ju = jax.jvp(sample, (images, grid), u)
    _, vjp = jax.vjp(sample, images, grid)
    np.testing.assert_allclose(_inner(v, ju), _inner(vjp(v), u), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out), np.asarray(sample(images, grid)), rtol=0, atol=0)
    # linearize gives the same tangent map, and forward- and reverse-mode Jacobians agree.
    _, linear = jax.linearize(sample, images, grid)
    np.testing.assert_allclose(np.asarray(linear(*u)), np.asarray(ju), rtol=1e-12, atol=1e-14)
    for argnum in (0, 1):
        forward = jax.jacfwd(sample, argnums=argnum)(images, grid)
        reverse = jax.jacrev(sample, argnums=argnum)(images, grid)
        np.testing.assert_allclose(np.asarray(forward), np.asarray(reverse), rtol=1e-12, atol=1e-14)


@pytest.mark.slow  # 21 s; the default tier checks second order in tests/test_sampling_modes.py
def test_second_derivatives_in_every_mode_agree(x64):
    """hessian (forward over reverse), reverse over reverse and forward over forward: the same numbers, for the
    grid, the image (zero: the sampler is linear in it) and the mixed image-grid block."""
    image = _random((5, 4, 2), 45, -1, 1).astype(np.float64)
    coords = _non_integer_coords((5, 4), 3, 46, False)
    loss = lambda im, c: jnp.sum(jnp.sin(va.bilinear_sample(im, c)))  # noqa: E731
    both = (0, 1)
    fwd_rev = jax.hessian(loss, argnums=both)(image, coords)
    rev_rev = jax.jacrev(jax.jacrev(loss, argnums=both), argnums=both)(image, coords)
    fwd_fwd = jax.jacfwd(jax.jacfwd(loss, argnums=both), argnums=both)(image, coords)
    for other in (rev_rev, fwd_fwd):
        chex.assert_trees_all_close(fwd_rev, other, rtol=1e-10, atol=1e-12)
    # Mixed block d2L/dimage dcoords against a finite difference of the image gradient along the coordinates.
    direction = _random(coords.shape, 47, -1, 1).astype(np.float64)
    grad_image = jax.grad(loss)
    eps = 1e-6
    numeric = (grad_image(image, coords + eps * direction) - grad_image(image, coords - eps * direction)) / (2 * eps)
    mixed = np.einsum("hwcnk,nk->hwc", np.asarray(fwd_rev[0][1]), direction)
    np.testing.assert_allclose(mixed, np.asarray(numeric), rtol=1e-6, atol=1e-8)
    assert np.abs(mixed).max() > 0.1


def test_forward_mode_under_vmap_jit_and_in_low_precision():
    images = _random((4, 6, 7, 3), 48)
    grid = _random((4, 5, 3, 2), 49, -1.3, 1.3)
    t_images, t_grid = _random(images.shape, 50), _random(grid.shape, 51)
    fn = lambda im, g, ti, tg: jax.jvp(va.bilinear_sample, (im, g), (ti, tg))  # noqa: E731
    out, tangent = jax.jit(jax.vmap(fn))(images, grid, t_images, t_grid)
    ref_out, ref_tangent = jax.jvp(va.grid_sample, (images, grid), (t_images, t_grid))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=1e-6)
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(ref_tangent), atol=1e-5)
    low = jnp.asarray(images, jnp.bfloat16)
    out, tangent = jax.jvp(va.grid_sample, (low, grid), (low, jnp.zeros_like(grid)))
    assert out.dtype == tangent.dtype == jnp.bfloat16
    # Linear in the image: the tangent along the image itself is the output.
    np.testing.assert_allclose(np.asarray(tangent, np.float32), np.asarray(out, np.float32), atol=1e-2)


def test_hessian_matches_closed_form(x64):
    """Bilinear interpolation has d2/dx2 = d2/dy2 = 0 and d2/dxdy = v00 - v01 - v10 + v11 (times the scales)."""
    image = _random((4, 5, 1), 17).astype(np.float64)
    px, py = 2.3, 1.6  # pixel coordinates inside the cell with corners (2, 1) .. (3, 2)
    w, h = 5, 4
    point = jnp.array([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1])  # align_corners=False
    hessian = jax.hessian(lambda p: va.bilinear_sample(image, p)[0])(point)
    v = image[..., 0]
    cross = (v[1, 2] - v[1, 3] - v[2, 2] + v[2, 3]) * (w / 2) * (h / 2)
    np.testing.assert_allclose(np.asarray(hessian), [[0.0, cross], [cross, 0.0]], atol=1e-10)


# ------------------------------------------------------------------------------------------------------
# Transformations: vmap, jit, no retracing, dtypes, non-finite input
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_vmap_and_grid_sample_equal_a_python_loop(mode):
    images = _random((4, 6, 7, 3), 18)
    grid = _random((4, 5, 3, 2), 19, -1.3, 1.3)
    loop = np.stack([np.asarray(va.bilinear_sample(images[i], grid[i], padding_mode=mode)) for i in range(4)])
    vmapped = jax.vmap(lambda im, g: va.bilinear_sample(im, g, padding_mode=mode))(images, grid)
    np.testing.assert_allclose(np.asarray(vmapped), loop, atol=1e-6)
    np.testing.assert_allclose(np.asarray(va.grid_sample(images, grid, padding_mode=mode)), loop, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_jit_equals_eager(mode, align_corners):
    image = _random((6, 7, 2), 20)
    coords = _coords(21)
    fn = lambda im, c: va.bilinear_sample(im, c, align_corners=align_corners, padding_mode=mode)  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(image, coords)), np.asarray(fn(image, coords)), atol=1e-6)


def test_no_retracing_for_same_shapes():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(images, grid):
        return jax.grad(lambda im, g: jnp.sum(va.grid_sample(im, g) ** 2), argnums=(0, 1))(images, grid)

    for seed in range(4):
        jax.block_until_ready(step(_random((2, 8, 8, 1), seed), _random((2, 4, 4, 2), seed + 10, -1, 1)))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_images(dtype):
    image = _random((9, 10, 3), 22)
    coords = _random((40, 2), 23, -1.2, 1.2)
    out = va.bilinear_sample(jnp.asarray(image, dtype), coords)
    assert out.dtype == dtype
    expected = bilinear_reference(np.asarray(jnp.asarray(image, dtype).astype(jnp.float32)), coords)
    np.testing.assert_allclose(np.asarray(out.astype(jnp.float32)), expected, atol=1e-2)
    grad = jax.grad(lambda im: jnp.sum(va.bilinear_sample(im, coords).astype(jnp.float32)))(jnp.asarray(image, dtype))
    assert grad.dtype == dtype


@pytest.mark.parametrize("mode", MODES)
def test_non_finite_coordinates_read_zero_with_zero_gradient(mode):
    image = _random((4, 4, 1), 24) + 1.0
    coords = jnp.array([[np.nan, 0.0], [0.0, np.inf], [-np.inf, -np.inf], [0.1, 0.2]], jnp.float32)
    out = va.bilinear_sample(image, coords, padding_mode=mode)
    np.testing.assert_array_equal(np.asarray(out[:3]), 0.0)
    assert float(out[3, 0]) > 0
    d_image, d_coords = jax.grad(lambda im, c: jnp.sum(va.bilinear_sample(im, c, padding_mode=mode)), argnums=(0, 1))(
        image, coords
    )
    assert np.all(np.isfinite(np.asarray(d_image))) and np.all(np.isfinite(np.asarray(d_coords)))
    np.testing.assert_array_equal(np.asarray(d_coords[:3]), 0.0)
    # Forward mode too: a non-finite sample's tangent is 0, whatever the tangents of the image and coordinates.
    sample = lambda im, c: va.bilinear_sample(im, c, padding_mode=mode)  # noqa: E731
    _, tangent = jax.jvp(sample, (image, coords), (jnp.ones_like(image), jnp.ones_like(coords)))
    np.testing.assert_array_equal(np.asarray(tangent[:3]), 0.0)
    assert np.all(np.isfinite(np.asarray(tangent))) and float(tangent[3, 0]) != 0


# ------------------------------------------------------------------------------------------------------
# Separable sampling
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_separable_sample_equals_bilinear_sample(mode, align_corners):
    image = _random((11, 13, 2), 25)
    xs = _random((6,), 26, -1.4, 1.4)
    ys = _random((5,), 27, -1.4, 1.4)
    grid = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1)
    kwargs = dict(align_corners=align_corners, padding_mode=mode)
    expected = va.bilinear_sample(image, grid, **kwargs)
    np.testing.assert_allclose(
        np.asarray(va.separable_sample(image, xs, ys, **kwargs)), np.asarray(expected), atol=1e-5
    )

    def grad_of(fn):
        return jax.grad(lambda im: jnp.sum(fn(im) ** 2))(image)

    separable = grad_of(lambda im: va.separable_sample(im, xs, ys, **kwargs))
    bilinear = grad_of(lambda im: va.bilinear_sample(im, grid, **kwargs))
    np.testing.assert_allclose(np.asarray(separable), np.asarray(bilinear), atol=1e-5)


def test_separable_gradients_match_finite_differences(x64):
    image = _random((5, 6, 1), 28).astype(np.float64)
    xs = _non_integer_coords((5, 6), 4, 29, False)[:, 0]
    ys = _non_integer_coords((5, 6), 3, 30, False)[:, 1]
    check_grads(va.separable_sample, (image, xs, ys), order=2, modes=["rev"], eps=1e-4, atol=1e-5, rtol=1e-5)


def test_interpolation_matrix_rows():
    matrix = np.asarray(va.interpolation_matrix(jnp.array([-1.0, 0.0, 0.5, 3.0]), 4, align_corners=True))
    np.testing.assert_allclose(matrix[0], [1, 0, 0, 0])
    np.testing.assert_allclose(matrix[1], [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(matrix[2], [0, 0, 0.75, 0.25])
    np.testing.assert_allclose(matrix[3], [0, 0, 0, 0])  # far outside, zero padding


def test_interpolation_taps_are_the_matrix_in_sparse_form():
    coords = jnp.array([-1.0, 0.0, 0.5, 3.0, 1e30, -1e30, jnp.nan, jnp.inf])
    indices, weights = va.interpolation_taps(coords, 4, align_corners=True)
    assert indices.dtype == jnp.int32 and indices.shape == weights.shape == (8, 2)
    assert np.all((np.asarray(indices) >= 0) & (np.asarray(indices) < 4))  # safe to index with, even far away
    np.testing.assert_allclose(weights[:4], [[1, 0], [0.5, 0.5], [0.75, 0.25], [0, 0]])
    np.testing.assert_array_equal(indices[1:3], [[1, 2], [2, 3]])
    np.testing.assert_array_equal(weights[4:], 0.0)  # far outside and non-finite read nothing
    np.testing.assert_array_equal(
        va.taps_to_matrix(indices, weights, 4), va.interpolation_matrix(coords, 4, align_corners=True)
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_apply_taps_equals_separable_sample(mode, align_corners):
    image = _random((11, 13, 2), 31)
    xs = _random((6,), 32, -1.4, 1.4)
    ys = _random((5,), 33, -1.4, 1.4)
    kwargs = dict(align_corners=align_corners, padding_mode=mode)
    rows, cols = va.interpolation_taps(ys, 11, **kwargs), va.interpolation_taps(xs, 13, **kwargs)
    np.testing.assert_allclose(
        np.asarray(va.apply_taps(image, rows, cols)),
        np.asarray(va.separable_sample(image, xs, ys, **kwargs)),
        atol=1e-6,
    )


def test_apply_taps_equals_dense_operators_with_gradients(x64):
    """Any number of taps: values and gradients (image and weights) equal the dense matrices' (float64)."""
    rng = np.random.default_rng(34)
    image = rng.random((7, 9, 2))
    rows = (jnp.asarray(rng.integers(0, 7, (4, 3)), jnp.int32), jnp.asarray(rng.random((4, 3))))
    cols = (jnp.asarray(rng.integers(0, 9, (5, 4)), jnp.int32), jnp.asarray(rng.random((5, 4))))

    def sparse(im, row_w, col_w):
        return va.apply_taps(im, (rows[0], row_w), (cols[0], col_w))

    def dense(im, row_w, col_w):
        return va.apply_interpolation(im, va.taps_to_matrix(rows[0], row_w, 7), va.taps_to_matrix(cols[0], col_w, 9))

    args = (image, rows[1], cols[1])
    np.testing.assert_allclose(np.asarray(sparse(*args)), np.asarray(dense(*args)), rtol=1e-12)
    weight = jnp.asarray(rng.random((4, 5, 2)))
    grads = [jax.grad(lambda *a, f=f: jnp.sum(weight * f(*a)), argnums=(0, 1, 2))(*args) for f in (sparse, dense)]
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12)
    check_grads(sparse, args, order=1, modes=["rev"])


# ------------------------------------------------------------------------------------------------------
# Bad input and the public API
# ------------------------------------------------------------------------------------------------------


_TAPS = (np.zeros((2, 2), np.int32), np.zeros((2, 2)))


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: va.bilinear_sample(np.zeros((4, 4)), np.zeros((2, 2))), ValueError, r"image must have rank 3"),
        (lambda: va.bilinear_sample(np.zeros((4, 4, 1)), np.zeros((2, 3))), ValueError, r"coords must have shape"),
        (
            lambda: va.bilinear_sample(np.zeros((4, 4, 1)), np.zeros((2, 2), np.int32)),
            TypeError,
            r"coords must have a floating",
        ),
        (
            lambda: va.bilinear_sample(np.zeros((4, 4, 1), np.uint8), np.zeros((2, 2))),
            TypeError,
            r"image must have a floating",
        ),
        (
            lambda: va.bilinear_sample(np.zeros((4, 4, 1)), np.zeros((2, 2)), padding_mode="wrap"),
            ValueError,  # as PyTorch's grid_sample raises for an unknown mode
            r"'wrap' is not supported.*border",
        ),
        (
            lambda: va.bilinear_sample(np.zeros((4, 4, 1)), np.zeros((2, 2)), align_corners=None),
            TypeError,
            r"align_corners",
        ),
        (lambda: va.bilinear_sample(np.zeros((0, 4, 1)), np.zeros((2, 2))), ValueError, r"non-empty"),
        (lambda: va.grid_sample(np.zeros((2, 4, 4, 1)), np.zeros((3, 2, 2, 2))), ValueError, r"same N"),
        (
            lambda: va.grid_sample(np.zeros((4, 4, 1)), np.zeros((4, 2, 2, 2))),
            ValueError,
            r"images must be an image \[N, H, W, C\] or a volume \[N, D, H, W, C\].*rank 3",
        ),
        (lambda: va.separable_sample(np.zeros((4, 4, 1)), np.zeros((2, 2)), np.zeros(3)), ValueError, r"rank 1"),
        (
            lambda: va.apply_taps(np.zeros((4, 4, 1)), (np.zeros((2, 2), np.int32), np.zeros((2, 3))), _TAPS),
            ValueError,
            r"rows must be \(indices \[n, taps\], weights",
        ),
        (
            lambda: va.apply_taps(np.zeros((4, 4, 1)), (np.zeros((2, 2)), np.zeros((2, 2))), (np.zeros((2, 2)),) * 2),
            TypeError,
            r"rows indices must be integers",
        ),
        (lambda: va.interpolation_taps(np.zeros((2, 2)), 4), ValueError, r"coords must have rank 1"),
        (lambda: va.interpolation_taps(np.zeros(2), 0), ValueError, r"size must be a positive int"),
    ],
)
def test_bad_input_raises_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_public_api_options_are_keyword_only():
    for name in va.__all__:
        fn = getattr(va, name)
        if not inspect.isfunction(fn):
            continue
        for param in inspect.signature(fn).parameters.values():
            if param.name in {"align_corners", "padding_mode", "control_points", "eps", "dtype"}:
                assert param.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}({param.name}) must be keyword-only"
