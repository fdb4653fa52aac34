"""Every grid_sample mode and dimension (nearest, bicubic, trilinear and nearest volumes) against PyTorch,
SciPy and their own derivatives, and the edge cases other samplers get wrong."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from jax.test_util import check_grads

import visattn_jax as va

PADDINGS = ("zeros", "border", "reflection")
CASES = [
    (dims, mode, padding, align)
    for dims, mode, padding, align in itertools.product((2, 3), va.INTERPOLATION_MODES, PADDINGS, (False, True))
    if not (dims == 3 and mode == "bicubic")
]
IMAGE = {2: (2, 7, 9, 3), 3: (2, 5, 6, 7, 2)}
GRID = {2: (2, 4, 5, 2), 3: (2, 3, 4, 5, 3)}
TO_TORCH = {2: (0, 3, 1, 2), 3: (0, 4, 1, 2, 3)}
FROM_TORCH = {2: (0, 2, 3, 1), 3: (0, 2, 3, 4, 1)}


def _random(shape, seed, low=0.0, high=1.0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def _grid(dims, seed, spread=1.4):
    """A random grid with two far-away points (beyond float32's reflection accuracy for -1e6 and 1e7 only in
    the last digits, which both samplers compute alike)."""
    grid = _random(GRID[dims], seed, -spread, spread)
    far = np.array([60.0, -1e6, 1e7, 1.0, -1.0, 0.3], np.float32)[: 2 * dims].reshape(2, dims)
    grid.reshape(grid.shape[0], -1, dims)[0, :2] = far  # a view: writes into grid
    return grid


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("dims,mode,padding,align_corners", CASES)
def test_every_mode_matches_torch_values_and_gradients_torch(dims, mode, padding, align_corners):
    torch = _torch()
    images, grid = _random(IMAGE[dims], 1), _grid(dims, 2)
    cotangent = _random(GRID[dims][:-1] + (IMAGE[dims][-1],), 3, -1, 1)
    images_t = torch.tensor(images.transpose(TO_TORCH[dims]), requires_grad=True)
    grid_t = torch.tensor(grid, requires_grad=True)
    out_t = torch.nn.functional.grid_sample(
        images_t, grid_t, mode=mode, padding_mode=padding, align_corners=align_corners
    )
    (out_t * torch.tensor(cotangent.transpose(TO_TORCH[dims]))).sum().backward()

    def loss(x, g):
        out = va.grid_sample(x, g, mode=mode, padding_mode=padding, align_corners=align_corners)
        return jnp.sum(out * cotangent), out

    (d_images, d_grid), out = jax.grad(loss, argnums=(0, 1), has_aux=True)(images, grid)
    tolerance = 2e-4 if mode == "bicubic" else 1e-4
    np.testing.assert_allclose(out, out_t.detach().numpy().transpose(FROM_TORCH[dims]), atol=tolerance)
    np.testing.assert_allclose(d_images, images_t.grad.numpy().transpose(FROM_TORCH[dims]), atol=tolerance)
    np.testing.assert_allclose(d_grid, grid_t.grad.numpy(), atol=tolerance, rtol=tolerance)
    if mode == "nearest":
        assert not np.any(np.asarray(d_grid))


@pytest.mark.parametrize("align_corners", [False, True])
def test_volume_affine_grid_matches_torch(align_corners):
    torch = _torch()
    theta = _random((2, 3, 4), 4, -1, 1)
    ours = jax.vmap(lambda t: va.affine_grid(t, (3, 4, 5), align_corners=align_corners))(theta)
    theirs = torch.nn.functional.affine_grid(torch.tensor(theta), (2, 1, 3, 4, 5), align_corners=align_corners)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)
    assert ours.shape == (2, 3, 4, 5, 3)


@pytest.mark.parametrize("dims,mode,padding,align_corners", CASES)
def test_identity_returns_the_input_bit_for_bit(dims, mode, padding, align_corners):
    images = _random((1, *IMAGE[dims][1:]), 5)
    theta = np.eye(dims, dims + 1, dtype=np.float32)
    grid = va.affine_grid(theta, images.shape[1:-1], align_corners=align_corners)[None]
    out = va.grid_sample(images, grid, mode=mode, padding_mode=padding, align_corners=align_corners)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize(
    "dims,mode,padding",
    # every mode in the default tier with zero padding (and volumes' border), the other paddings in the slow tier
    [
        (d, m, p) if p == "zeros" or (d == 3 and p == "border") else pytest.param(d, m, p, marks=pytest.mark.slow)
        for d, m, p, a in CASES
        if a
    ],
)
def test_non_finite_coordinates_read_zero_with_zero_gradients(dims, mode, padding):
    images = _random((1, *IMAGE[dims][1:]), 6)
    grid = _random((1, 6, dims), 7, -0.9, 0.9)
    grid[0, 0, 0], grid[0, 1, -1], grid[0, 2, :] = np.nan, np.inf, -np.inf
    f = lambda x, g: va.grid_sample(x, g, mode=mode, padding_mode=padding)  # noqa: E731
    out = np.asarray(f(images, grid))
    assert np.all(out[0, :3] == 0) and np.all(np.isfinite(out))
    d_images, d_grid = jax.grad(lambda x, g: jnp.sum(f(x, g)), argnums=(0, 1))(images, grid)
    assert np.all(np.isfinite(d_images)) and np.all(np.isfinite(d_grid))
    assert not np.any(np.asarray(d_grid)[0, :3])
    tangent = jax.jvp(f, (images, grid), (np.ones_like(images), np.ones_like(grid)))[1]
    assert not np.any(np.asarray(tangent)[0, :3]) and np.all(np.isfinite(tangent))


@pytest.mark.parametrize(
    "dims,mode", [(2, "bilinear"), (2, "nearest"), (2, "bicubic"), (3, "nearest"), (3, "bilinear")]
)
def test_inf_and_nan_pixels_under_zero_weight_taps_stay_out(dims, mode):
    """PyTorch returns NaN when a tap of weight 0 holds inf (0 * inf); here such a tap contributes nothing. 2-D
    bilinear runs three forward forms by channel count (1; 2 to 8, a zero border; more): each is checked."""
    for channels in (1, 3, 16) if (dims, mode) == (2, "bilinear") else (IMAGE[dims][-1],):
        _check_zero_weight_taps(dims, mode, channels)


def _check_zero_weight_taps(dims, mode, channels):
    images = _random((1, *IMAGE[dims][1:-1], channels), 8)
    images[0, ..., 0, :] = np.inf  # the first column (x = 0) ...
    images[0, ..., -1, :] = np.nan  # ... and the last
    # Samples at integer pixel coordinates x = 2 (weights 0 at the columns beside it) and outside the image
    # with zero padding (every tap's weight 0).
    width = images.shape[-2]
    x = (2 + 0.5) * 2 / width - 1  # pixel 2's centre (align_corners=False)
    points = np.array([[x] + [0.1] * (dims - 1), [-3.0] + [0.1] * (dims - 1)], np.float32)[None]
    f = lambda g: va.grid_sample(images, g, mode=mode)  # noqa: E731
    out = np.asarray(f(points))
    assert np.all(np.isfinite(out)) and np.all(out[0, 1] == 0)
    assert np.all(np.isfinite(jax.grad(lambda g: jnp.sum(f(g)))(points)))


def _coords_off_kinks(dims, seed, n=20):
    """Normalised (align_corners=True) coordinates at least 0.15 pixels from any integer pixel coordinate."""
    sizes = IMAGE[dims][1:-1][::-1]  # (W, H[, D]) in coordinate order
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, np.array(sizes) - 1, (n, dims)) + rng.uniform(0.15, 0.85, (n, dims))
    return pixels / (np.array(sizes) - 1) * 2 - 1


@pytest.mark.parametrize(
    "dims,mode,padding",
    [
        pytest.param(2, "bicubic", "zeros", marks=pytest.mark.slow),  # 18 s: the default keeps reflection
        (2, "bicubic", "reflection"),
        pytest.param(3, "bilinear", "border", marks=pytest.mark.slow),
    ],
)
def test_derivatives_to_second_order_match_finite_differences(x64, dims, mode, padding):
    images = _random(IMAGE[dims][1:], 9, dtype=np.float64)
    coords = _coords_off_kinks(dims, 10).astype(np.float64)
    f = lambda x, g: va.sample(x, g, mode=mode, padding_mode=padding, align_corners=True)  # noqa: E731
    check_grads(f, (images, coords), order=2, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims,mode", [(2, "bicubic"), (2, "nearest"), (3, "bilinear"), (3, "nearest")])
def test_jvp_is_the_transpose_of_the_vjp(dims, mode):
    images, grid = _random(IMAGE[dims], 11), _grid(dims, 12, spread=1.1)
    f = lambda x, g: va.grid_sample(x, g, mode=mode, padding_mode="reflection")  # noqa: E731
    tangents = (_random(images.shape, 13, -1, 1), _random(grid.shape, 14, -1, 1))
    out, vjp = jax.vjp(f, images, grid)
    cotangent = _random(out.shape, 15, -1, 1)
    forward = jax.jvp(f, (images, grid), tangents)[1]
    backward = vjp(cotangent)
    lhs = float(jnp.sum(forward * cotangent))
    rhs = sum(float(jnp.sum(b * t)) for b, t in zip(backward, tangents, strict=True))
    assert lhs == pytest.approx(rhs, rel=1e-4, abs=1e-4)


def test_nearest_image_gradient_counts_the_reads():
    """Nearest sampling's image gradient is the number of samples that read each pixel."""
    images = _random((1, 4, 5, 1), 16)
    grid = _random((1, 30, 2), 17, -0.95, 0.95)
    d_images = jax.grad(lambda x: jnp.sum(va.grid_sample(x, grid, mode="nearest", align_corners=True)))(images)
    pixels = np.round((grid[0] + 1) / 2 * (np.array([5, 4]) - 1)).astype(int)
    counts = np.zeros((4, 5))
    np.add.at(counts, (pixels[:, 1], pixels[:, 0]), 1)
    np.testing.assert_array_equal(np.asarray(d_images)[0, :, :, 0], counts)


@pytest.mark.parametrize("order,mode", [(0, "nearest"), (1, "bilinear")])
def test_volumes_match_scipy_map_coordinates(order, mode):
    """SciPy's mode="nearest" is border padding; its pixel coordinates are align_corners=True's."""
    volume = _random((5, 6, 7), 18)
    coords = _coords_off_kinks(3, 19, n=40)  # (x, y, z)
    sizes = np.array([7, 6, 5])
    pixels = (coords + 1) / 2 * (sizes - 1)
    keep = np.abs(pixels - np.floor(pixels) - 0.5) > 0.05  # off the half-pixels, where rounding rules differ
    coords, pixels = coords[keep.all(-1)], pixels[keep.all(-1)]
    ours = va.sample(volume[..., None], coords.astype(np.float32), mode=mode, padding_mode="border", align_corners=True)
    theirs = scipy.ndimage.map_coordinates(volume, pixels[:, ::-1].T, order=order, mode="nearest")
    np.testing.assert_allclose(np.asarray(ours)[:, 0], theirs, atol=1e-5)


def test_sample_is_grid_sample_per_item_and_survives_vmap_jit_and_bfloat16():
    images, grid = _random(IMAGE[3], 20), _grid(3, 21, spread=1.1)
    batched = va.grid_sample(images, grid, mode="nearest")
    mapped = jax.jit(jax.vmap(lambda x, g: va.sample(x, g, mode="nearest")))(images, grid)
    np.testing.assert_array_equal(batched, mapped)
    low = va.grid_sample(images.astype(jnp.bfloat16), grid.astype(jnp.bfloat16), mode="bilinear")
    assert low.dtype == jnp.bfloat16
    reference = va.grid_sample(images, np.asarray(grid.astype(jnp.bfloat16), np.float32), mode="bilinear")
    np.testing.assert_allclose(np.asarray(low, np.float32), reference, atol=2e-2)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: va.grid_sample(np.zeros((1, 4, 4, 4, 1)), np.zeros((1, 2, 2, 2, 3)), mode="bicubic"), "tricubic"),
        (lambda: va.grid_sample(np.zeros((1, 4, 4, 1)), np.zeros((1, 2, 2, 2)), mode="cubic"), "mode='cubic'"),
        (lambda: va.grid_sample(np.zeros((1, 4, 4, 4, 1)), np.zeros((1, 2, 2, 2)), mode="nearest"), r"\[\.\.\., 3\]"),
        (lambda: va.grid_sample(np.zeros((1, 4, 4, 1)), np.zeros((1, 2, 2, 3))), r"\[\.\.\., 2\] with \(x, y\)"),
        (lambda: va.grid_sample(np.zeros((1, 2, 4, 4, 4, 1)), np.zeros((1, 2, 3))), "rank 6"),
        (lambda: va.sample(np.zeros((4, 4, 4, 1)), np.zeros((2, 3)), padding_mode="wrap"), "padding_mode='wrap'"),
        (lambda: va.affine_grid(np.eye(2, 3), (2, 3, 4)), r"must have shape \[3, 4\]"),
        (lambda: va.affine_grid(np.eye(3, 4), (2, 3, 0)), "triple of positive ints"),
        (lambda: va.projective_grid(np.eye(3), (2, 3, 4)), "volume"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
def test_readme_derivative_table_is_what_the_script_measures_torch():
    """The docs' table (docs/conventions.md) of which derivatives exist (PyTorch vs ours) is the script's output, so it cannot go
    stale when torch changes."""
    _torch()
    from pathlib import Path

    from experiments.derivative_table import table

    readme = (Path(__file__).parents[1] / "docs" / "conventions.md").read_text()
    measured = table()
    assert measured in readme, measured
    assert all(line.endswith("| yes |") for line in measured.splitlines()[2:])


@pytest.mark.parametrize("dims,mode,padding", [(d, m, p) for d, m, p, a in CASES if not a])
def test_grid_push_is_the_exact_adjoint_of_grid_sample(dims, mode, padding):
    images, grid = _random(IMAGE[dims], 22), _grid(dims, 23, spread=1.2)
    values = _random(GRID[dims][:-1] + (IMAGE[dims][-1],), 24, -1, 1)
    pushed = va.grid_push(values, grid, IMAGE[dims][1:-1], mode=mode, padding_mode=padding)
    sampled = va.grid_sample(images, grid, mode=mode, padding_mode=padding)
    assert pushed.shape == images.shape
    assert float(jnp.sum(pushed * images)) == pytest.approx(float(jnp.sum(values * sampled)), rel=1e-5, abs=1e-5)


def test_grid_push_splats_with_the_bilinear_weights():
    grid = np.array([[[[0.0, 0.0]]]], np.float32)  # the centre of a 2x2 image (align_corners=False): 4 x 1/4
    pushed = va.grid_push(np.ones((1, 1, 1, 1), np.float32), grid, (2, 2))
    np.testing.assert_allclose(np.asarray(pushed)[0, :, :, 0], np.full((2, 2), 0.25))
    d_grid = jax.grad(lambda g: jnp.sum(va.grid_push(np.ones((1, 1, 1, 1)), g, (2, 2))[0, 0, 1]))(grid)
    assert np.all(np.isfinite(d_grid)) and np.any(np.asarray(d_grid))
    with pytest.raises(ValueError, match=r"shape must be \(H, W\)"):
        va.grid_push(np.ones((1, 1, 1, 1)), grid, (2, 2, 2))


@pytest.mark.parametrize("align_corners", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_pixel_grids_and_displacement_fields(align_corners):
    images = _random((1, 5, 6, 2), 25)
    pixels = np.array([[[2.0, 3.0], [0.0, 0.0], [5.0, 4.0]]], np.float32)  # (x, y) pixel centres
    grid = va.pixels_to_normalized(pixels, (5, 6), align_corners=align_corners)
    out = va.grid_sample(images, grid[None], align_corners=align_corners)
    np.testing.assert_allclose(out[0, 0], images[0, [3, 0, 4], [2, 0, 5]], atol=1e-6)
    # A zero flow is the identity (bit for bit), a flow of +1 in x reads the right neighbour.
    zero = va.displacement_grid(np.zeros((5, 6, 2), np.float32), align_corners=align_corners)
    np.testing.assert_array_equal(va.grid_sample(images, zero[None], align_corners=align_corners), images)
    shift = va.displacement_grid(
        np.broadcast_to(np.array([1.0, 0.0], np.float32), (5, 6, 2)), align_corners=align_corners
    )
    moved = va.grid_sample(images, shift[None], align_corners=align_corners, padding_mode="border")
    np.testing.assert_allclose(moved[0, :, :-1], images[0, :, 1:], atol=1e-6)
    volume = _random((1, 3, 4, 5, 1), 26)
    still = va.displacement_grid(np.zeros((3, 4, 5, 3), np.float32), align_corners=align_corners)
    np.testing.assert_array_equal(va.grid_sample(volume, still[None], align_corners=align_corners), volume)
    with pytest.raises(ValueError, match=r"\[H, W, 2\] or \[D, H, W, 3\]"):
        va.displacement_grid(np.zeros((5, 6, 3)))


@pytest.mark.parametrize("mode", ["nearest", "bicubic"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align_corners", [False, True])
def test_separable_operators_in_every_mode_equal_sample_on_their_grid(mode, padding, align_corners):
    """Every mode is a tensor product of 1-D taps: two operators (dense or taps) sample an axis-aligned grid
    exactly as ``sample`` does, values and image gradient, the far-outside points included."""
    image = _random((7, 9, 2), 12)
    xs = np.array([-1.7, -1.0, -0.93, -0.31, 0.0, 0.12, 0.58, 0.99, 1.4], np.float32)
    ys = np.array([1.9, 0.77, 0.05, -0.44, -1.2], np.float32)
    coords = np.stack(np.meshgrid(xs, ys), axis=-1)  # [h, w, 2], coords[i, j] = (xs[j], ys[i])
    kwargs = dict(mode=mode, padding_mode=padding, align_corners=align_corners)
    expected = va.sample(image, coords, **kwargs)
    rows = va.interpolation_taps(ys, 7, **kwargs)
    cols = va.interpolation_taps(xs, 9, **kwargs)
    assert rows[0].shape == (5, {"nearest": 1, "bicubic": 4}[mode]) and rows[0].dtype == jnp.int32
    if padding != "zeros":  # every tap is padded into the image: a partition of unity everywhere
        np.testing.assert_allclose(np.asarray(cols[1]).sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(va.taps_to_matrix(*cols, 9), va.interpolation_matrix(xs, 9, **kwargs))
    cotangent = _random(expected.shape, 13, -1, 1)
    grad = lambda f: jax.grad(lambda im: jnp.sum(f(im) * cotangent))(image)  # noqa: E731
    expected_grad = grad(lambda im: va.sample(im, coords, **kwargs))
    for separable in (
        lambda im: va.separable_sample(im, xs, ys, **kwargs),
        lambda im: va.apply_taps(im, rows, cols),
    ):
        np.testing.assert_allclose(separable(image), expected, atol=2e-6)
        np.testing.assert_allclose(grad(separable), expected_grad, atol=2e-6)


def test_separable_operators_name_a_bad_mode():
    with pytest.raises(ValueError, match=r"mode='cubic' is not supported"):
        va.interpolation_taps(np.zeros(3), 4, mode="cubic")
    with pytest.raises(ValueError, match=r"mode='cubic' is not supported"):
        va.separable_sample(np.zeros((4, 4, 1)), np.zeros(2), np.zeros(2), mode="cubic")


@pytest.mark.parametrize(
    "dims,mode", [(2, "bilinear"), (2, "nearest"), (2, "bicubic"), (3, "bilinear"), (3, "nearest")]
)
def test_per_image_gathers_give_the_flat_formulations_numbers(dims, mode):
    """On GPU / TPU grid_sample gathers per image (a vmap, so a sharded batch stays on its chips), on CPU as one
    flat batch: the same values and gradients, bit for bit here, and the per-image form really is traced for a
    TPU target (gathers with a batch dimension)."""
    from visattn_jax.backend import resolve_backend, target_backend

    rng = np.random.default_rng(dims)
    x = jnp.asarray(rng.normal(size=(3, *(4,) * (dims - 2), 5, 6, 2)).astype(np.float32))
    g = jnp.asarray(rng.uniform(-1.2, 1.2, size=(3, *(2,) * (dims - 2), 4, 5, dims)).astype(np.float32))

    def run():  # fresh functions per formulation: jit caches a trace per function
        def f(x, g):
            return va.grid_sample(x, g, mode=mode, padding_mode="reflection")

        grad = jax.grad(lambda x, g: jnp.sum(jnp.sin(f(x, g))), (0, 1))
        return jax.jit(f)(x, g), jax.jit(grad)(x, g), jax.jit(f).lower(x, g).as_text()

    flat, flat_grads, flat_hlo = run()
    with target_backend("tpu"):
        assert resolve_backend() == "tpu"
        per_image, grads, hlo = run()
    assert resolve_backend() == jax.default_backend()
    assert "operand_batching_dims = [0]" in hlo and "operand_batching_dims = [0]" not in flat_hlo
    np.testing.assert_array_equal(per_image, flat)
    for a, b in zip(grads, flat_grads, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="backend must be 'cpu', 'gpu' or 'tpu', got 'tpv'"):
        with target_backend("tpv"):
            pass
