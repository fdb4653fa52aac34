"""Grid generators against closed forms, PyTorch, and each other."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import visattn_jax as va
from tests.references import affine_grid_reference

SHAPES = ((1, 1), (1, 5), (4, 4), (7, 3), (28, 28))


def _theta(seed):
    return np.random.default_rng(seed).normal(0, 0.6, (2, 3)).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_closed_form(shape, align_corners):
    theta = _theta(0)
    grid = va.affine_grid(theta, shape, align_corners=align_corners)
    assert grid.shape == (*shape, 2)
    np.testing.assert_allclose(
        np.asarray(grid), affine_grid_reference(theta, shape, align_corners=align_corners), atol=1e-6
    )


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_matches_torch(align_corners):
    torch = pytest.importorskip("torch")
    theta = np.stack([_theta(s) for s in range(3)])
    expected = torch.nn.functional.affine_grid(torch.tensor(theta), [3, 1, 6, 9], align_corners=align_corners)
    grid = jax.vmap(lambda t: va.affine_grid(t, (6, 9), align_corners=align_corners))(theta)
    np.testing.assert_allclose(np.asarray(grid), expected.numpy(), atol=1e-6)


def test_base_grid_is_the_identity_affine_grid():
    np.testing.assert_array_equal(np.asarray(va.affine_grid(jnp.eye(2, 3), (5, 6))), va.base_grid((5, 6)))
    np.testing.assert_allclose(va.base_coords(4, align_corners=False), [-0.75, -0.25, 0.25, 0.75], atol=1e-7)
    np.testing.assert_allclose(va.base_coords(3, align_corners=True), [-1, 0, 1])


def test_attention_grid_is_a_scaled_shifted_base_grid():
    params = jnp.array([0.5, 0.2, -0.3])
    grid = va.attention_grid(params, (6, 8))
    base = va.base_grid((6, 8))
    np.testing.assert_allclose(np.asarray(grid), 0.5 * base + np.array([0.2, -0.3]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(va.attention_to_affine(params)), [[0.5, 0, 0.2], [0, 0.5, -0.3]])


def test_attention_grid_sampled_separably_equals_bilinear():
    image = np.random.default_rng(1).random((12, 10, 2)).astype(np.float32)
    s, tx, ty = 0.6, 0.1, -0.25
    grid = va.attention_grid(jnp.array([s, tx, ty]), (5, 7))
    xs = s * va.base_coords(7) + tx
    ys = s * va.base_coords(5) + ty
    np.testing.assert_allclose(
        np.asarray(va.separable_sample(image, xs, ys)), np.asarray(va.bilinear_sample(image, grid)), atol=1e-5
    )


def test_projective_grid_with_affine_homography_equals_affine_grid():
    theta = _theta(2)
    homography = np.concatenate([theta, [[0, 0, 1]]]).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(va.projective_grid(homography, (5, 7))), np.asarray(va.affine_grid(theta, (5, 7))), atol=1e-6
    )


def test_projective_grid_closed_form():
    homography = np.array([[1.1, 0.1, 0.05], [-0.2, 0.9, 0.1], [0.15, -0.1, 1.0]], np.float32)
    points = affine_grid_reference(np.eye(2, 3), (4, 6))[..., :2]
    uvz = np.concatenate([points, np.ones((*points.shape[:-1], 1))], -1) @ homography.T.astype(np.float64)
    expected = uvz[..., :2] / uvz[..., 2:]
    np.testing.assert_allclose(np.asarray(va.projective_grid(homography, (4, 6))), expected, atol=1e-5)


def test_projective_grid_at_infinity_stays_finite():
    homography = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], np.float32)  # z = x: zero along the middle column
    grid = va.projective_grid(homography, (3, 3), align_corners=True)
    assert np.all(np.isfinite(np.asarray(grid)))
    grads = jax.grad(lambda h: jnp.sum(va.projective_grid(h, (3, 3), align_corners=True)))(homography)
    assert np.all(np.isfinite(np.asarray(grads)))


def test_tps_zero_offsets_is_identity():
    """Exactly, as the other three transforms: the grid and the sampled image equal the identity's bit for bit."""
    for align_corners in (False, True):
        grid = va.tps_grid(jnp.zeros((16, 2)), (9, 11), align_corners=align_corners)
        np.testing.assert_array_equal(np.asarray(grid), np.asarray(va.base_grid((9, 11), align_corners=align_corners)))
    image = np.random.default_rng(0).random((9, 11, 3)).astype(np.float32)
    out = va.bilinear_sample(image, va.tps_grid(jnp.zeros((16, 2)), (9, 11)))
    np.testing.assert_array_equal(np.asarray(out), image)


def test_tps_interpolates_the_control_points():
    """With align_corners=True a 4x4 output grid lands exactly on the 4x4 control points."""
    offsets = np.random.default_rng(3).normal(0, 0.1, (16, 2)).astype(np.float32)
    grid = va.tps_grid(offsets, (4, 4), align_corners=True)
    expected = va.tps_control_points(4) + offsets
    np.testing.assert_allclose(np.asarray(grid).reshape(16, 2), expected, atol=1e-5)


def test_tps_reproduces_affine_maps():
    """A TPS whose control points move affinely is that affine map everywhere (no bending)."""
    theta = np.array([[0.9, -0.2, 0.1], [0.15, 1.1, -0.05]], np.float32)
    points = va.tps_control_points(4)
    offsets = points @ theta[:, :2].T + theta[:, 2] - points
    np.testing.assert_allclose(
        np.asarray(va.tps_grid(offsets, (6, 5))), np.asarray(va.affine_grid(theta, (6, 5))), atol=1e-5
    )


def test_tps_custom_control_points_and_gradients(x64):
    points = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1], [0.2, 0.1]], np.float64)
    offsets = np.random.default_rng(4).normal(0, 0.1, (5, 2))
    grid_fn = lambda o: va.tps_grid(o, (3, 4), control_points=points)  # noqa: E731
    assert grid_fn(offsets).shape == (3, 4, 2)
    check_grads(grid_fn, (offsets,), order=2, modes=["rev"], eps=1e-5)


def test_generators_are_differentiable_through_the_sampler(x64):
    image = np.random.default_rng(5).random((6, 7, 1))
    theta = np.array([[0.83, 0.11, 0.07], [-0.09, 0.91, 0.04]])
    loss = lambda t: jnp.sum(va.bilinear_sample(image, va.affine_grid(t, (5, 5))) ** 2)  # noqa: E731
    check_grads(loss, (theta,), order=1, modes=["rev"], eps=1e-5)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: va.affine_grid(np.zeros((3, 3), np.float32), (4, 4)), ValueError, r"theta must have shape \[2, 3\]"),
        (lambda: va.affine_grid(np.zeros((5, 2, 3), np.float32), (4, 4)), ValueError, r"jax.vmap"),
        (lambda: va.affine_grid(np.zeros((2, 3), np.int32), (4, 4)), TypeError, r"floating"),
        (lambda: va.affine_grid(np.zeros((2, 3), np.float32), (4, 0)), ValueError, r"pair of positive ints"),
        (lambda: va.affine_grid(np.zeros((2, 3), np.float32), (4,)), ValueError, r"pair of positive ints"),
        (lambda: va.attention_grid(np.zeros((4,), np.float32), (4, 4)), ValueError, r"params must have shape \[3\]"),
        (lambda: va.projective_grid(np.zeros((2, 3), np.float32), (4, 4)), ValueError, r"homography"),
        (lambda: va.tps_grid(np.zeros((15, 2), np.float32), (4, 4)), ValueError, r"square number"),
        (lambda: va.tps_grid(np.zeros((16, 3), np.float32), (4, 4)), ValueError, r"offsets must have shape"),
        (
            lambda: va.tps_grid(np.zeros((4, 2), np.float32), (4, 4), control_points=np.zeros((5, 2))),
            ValueError,
            r"control_points must have shape \[4, 2\]",
        ),
        (lambda: va.tps_control_points(1), ValueError, r"at least a 2 x 2"),
    ],
)
def test_bad_input_raises_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
