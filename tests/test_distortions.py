"""The distorted / translated / cluttered MNIST generators: shapes, determinism, geometry, statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visattn_jax import data

SIZES = {
    "none": 28,
    "rotated": 28,
    "rts": 42,
    "projective": 28,
    "elastic": 28,
    "translated60": 60,
    "translated100": 100,
    "cluttered60": 60,
    "cluttered100": 100,
}


def _digits(n=16, seed=0):
    """Blobby synthetic digits: random strokes inside the central 20x20 box, like MNIST's framing."""
    rng = np.random.default_rng(seed)
    digits = np.zeros((n, 28, 28, 1), np.float32)
    for i in range(n):
        for _ in range(6):
            y, x = rng.integers(4, 24, 2)
            digits[i, y - 2 : y + 2, x - 2 : x + 2, 0] = rng.uniform(0.5, 1.0)
    return digits


@pytest.mark.parametrize("name", sorted(data.DISTORTIONS))
def test_shapes_range_and_determinism(name):
    digits = _digits()
    key = jax.random.PRNGKey(0)
    out = data.distort(name, key, digits)
    assert out.shape == (16, SIZES[name], SIZES[name], 1) and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
    np.testing.assert_array_equal(np.asarray(out), np.asarray(data.distort(name, key, digits)))
    if name != "none":
        other = data.distort(name, jax.random.PRNGKey(1), digits)
        assert not np.array_equal(np.asarray(out), np.asarray(other))
    jitted = jax.jit(lambda k, d: data.distort(name, k, d))(key, digits)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(out), atol=1e-5)


def test_rts_keeps_the_whole_digit_inside_the_canvas():
    digits = _digits(64, seed=1)
    digits[0] = 1.0  # a full frame: far too big to fit unscaled after a 45-degree turn; must be shrunk
    digits[1, :, :2] = 1.0  # ink on the frame's edge
    out = np.asarray(data.rts(jax.random.PRNGKey(3), digits))
    ring = np.concatenate([out[:, 0], out[:, -1], out[:, :, 0], out[:, :, -1]], axis=1)
    assert np.all(ring == 0), "ink reached the canvas border"
    assert np.all(out.reshape(64, -1).max(1) > 0.4)  # every digit is there


def test_rts_scale_is_within_range():
    """The ink mass scales with s^2 (s in [0.7, 1.2]) for digits that fit."""
    digits = _digits(64, seed=2)
    out = np.asarray(data.rts(jax.random.PRNGKey(4), digits))
    ratio = out.sum((1, 2, 3)) / digits.sum((1, 2, 3))
    assert np.all(ratio > 0.7**2 * 0.9) and np.all(ratio < 1.2**2 * 1.1)
    assert ratio.min() < 0.75 and ratio.max() > 1.1  # the range is really used


def test_rotation_by_zero_degrees_is_identity():
    digits = _digits()
    out = data.rotated(jax.random.PRNGKey(0), digits, max_degrees=0.0)
    np.testing.assert_array_equal(np.asarray(out), digits)


def _source_grids(monkeypatch, generator, n=400, seed=7, **kwargs):
    """The pull grids ``[n, 28, 28, 2]`` (normalised source x, y per output pixel) a geometric distortion
    samples with: its ``grid_sample`` is replaced by one that returns the grid."""
    from visattn_jax.data import distortions

    monkeypatch.setattr(distortions, "grid_sample", lambda digits, grid: grid)
    return np.asarray(generator(jax.random.PRNGKey(seed), _digits(n), **kwargs), np.float64)


def _pixel_centres(size=28):
    """Normalised (x, y) of the output pixel centres (align_corners=False): ``[size, size, 2]``."""
    t = (2.0 * np.arange(size) + 1.0) / size - 1.0
    x, y = np.meshgrid(t, t)
    return np.stack([x, y], -1)


def test_rotation_angles_are_uniform_in_90_degrees_about_the_centre(monkeypatch):
    """R's geometry from its pull grids: each is a pure rotation (orthonormal, det 1) about the image centre
    (no translation), and the angles fill [-90, 90] degrees uniformly (Kolmogorov-Smirnov against U)."""
    import scipy.stats

    grids = _source_grids(monkeypatch, data.rotated)
    q = _pixel_centres().reshape(-1, 2)
    design = np.concatenate([q, np.ones((len(q), 1))], 1)  # source = [q, 1] @ [A^T; t]
    angles = []
    for grid in grids:
        coef, *_ = np.linalg.lstsq(design, grid.reshape(-1, 2), rcond=None)
        linear, shift = coef[:2].T, coef[2]
        np.testing.assert_allclose(linear @ linear.T, np.eye(2), atol=1e-5)
        assert np.linalg.det(linear) > 0
        np.testing.assert_allclose(shift, 0.0, atol=1e-5)
        angles.append(np.degrees(np.arctan2(linear[1, 0], linear[0, 0])))
    angles = np.asarray(angles)
    assert np.all(np.abs(angles) <= 90.0 + 1e-3)
    assert angles.min() < -85.0 and angles.max() > 85.0
    assert scipy.stats.kstest(angles, scipy.stats.uniform(-90.0, 180.0).cdf).pvalue > 1e-3


def _fit_homography(q: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The 3x3 homography (H[2, 2] = 1) that maps points q [M, 2] to source [M, 2], by least squares (DLT)."""
    x, y, u, v = q[:, 0], q[:, 1], source[:, 0], source[:, 1]
    zeros, ones = np.zeros_like(x), np.ones_like(x)
    rows = np.concatenate(
        [
            np.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], 1),
            np.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], 1),
        ]
    )
    h, *_ = np.linalg.lstsq(rows, np.concatenate([u, v]), rcond=None)
    return np.append(h, 1.0).reshape(3, 3)


def test_projective_corners_move_by_the_scale_and_gaussian_noise(monkeypatch):
    """P's geometry from its pull grids: each is a homography (fitted exactly); the output frame's corners c
    read the source points c / s + noise. Per image, 1 / s is the mean of c * H(c) over the 8 coordinates (the
    noise averages out); the residuals are the corner noise, N(0, 0.1^2) (7 of 8 degrees of freedom left)."""
    grids = _source_grids(monkeypatch, data.projective)
    q = _pixel_centres().reshape(-1, 2)
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    inverse_scales, residuals = [], []
    for grid in grids:
        h = _fit_homography(q, grid.reshape(-1, 2))
        mapped = np.concatenate([q, np.ones((len(q), 1))], 1) @ h.T
        np.testing.assert_allclose(mapped[:, :2] / mapped[:, 2:], grid.reshape(-1, 2), atol=1e-4)  # a homography
        at_corners = np.concatenate([corners, np.ones((4, 1))], 1) @ h.T
        source = at_corners[:, :2] / at_corners[:, 2:]
        inverse_scale = np.mean(source * corners)
        inverse_scales.append(inverse_scale)
        residuals.append(source - corners * inverse_scale)
    inverse_scales, residuals = np.asarray(inverse_scales), np.concatenate(residuals).ravel()
    # 1 / s for s ~ U[0.75, 1]: in [1, 4/3], mean ln(4/3) / 0.25 = 1.1507; the estimate carries noise 0.1/sqrt(8).
    assert 1.0 - 0.12 < inverse_scales.min() < 1.04 and 4 / 3 - 0.04 < inverse_scales.max() < 4 / 3 + 0.12
    assert abs(inverse_scales.mean() - np.log(4 / 3) / 0.25) < 0.01
    assert abs(residuals.std() - 0.1 * np.sqrt(7 / 8)) < 0.006 and abs(residuals.mean()) < 0.005


def test_elastic_control_points_move_by_1_5_pixels(monkeypatch):
    """E's geometry from its pull grids: the displacement at the 4x4 control points (read off the smooth
    grid by linear interpolation, and extrapolation at the frame's edge) is N(0, 1.5^2) pixels per axis,
    independent between x and y, with no net shift."""
    import scipy.interpolate

    from visattn_jax.grids import tps_control_points

    grids = _source_grids(monkeypatch, data.elastic, n=200)
    t = _pixel_centres()[0, :, 0]
    points = np.asarray(tps_control_points(4), np.float64)  # (x, y)
    displacements = []
    for grid in grids:
        read = scipy.interpolate.RegularGridInterpolator((t, t), grid, bounds_error=False, fill_value=None)
        displacements.append(read(points[:, ::-1]) - points)  # the grid is indexed [y, x]
    pixels = np.concatenate(displacements) * 14.0  # normalised -> pixels: 28 pixels span 2 units
    assert abs(pixels.std() - 1.5) < 0.08 and np.all(np.abs(pixels.mean(0)) < 0.1)
    assert abs(np.corrcoef(pixels[:, 0], pixels[:, 1])[0, 1]) < 0.08


def test_projective_with_no_noise_and_unit_scale_is_identity():
    digits = _digits()
    out = data.projective(jax.random.PRNGKey(0), digits, scale_range=(1.0, 1.0), corner_std=0.0)
    np.testing.assert_allclose(np.asarray(out), digits, atol=1e-5)


def test_elastic_with_no_noise_is_identity():
    out = data.elastic(jax.random.PRNGKey(0), _digits(), sigma_pixels=0.0)
    np.testing.assert_allclose(np.asarray(out), _digits(), atol=1e-5)


@pytest.mark.parametrize("canvas", [60, 100])
def test_translated_places_the_whole_digit_unchanged(canvas):
    digits = _digits(32, seed=5)
    out = np.asarray(data.translated(jax.random.PRNGKey(6), digits, canvas=canvas))
    np.testing.assert_allclose(out.sum((1, 2, 3)), digits.sum((1, 2, 3)), rtol=1e-6)
    positions = []
    for image, digit in zip(out, digits, strict=True):
        ys, xs = np.nonzero(image[..., 0])
        top, left = ys.min() - np.nonzero(digit[..., 0])[0].min(), xs.min() - np.nonzero(digit[..., 0])[1].min()
        np.testing.assert_array_equal(image[top : top + 28, left : left + 28], digit)
        positions.append((top, left))
    positions = np.array(positions)
    assert positions.min() >= 0 and positions.max() <= canvas - 28
    assert len({tuple(p) for p in positions}) > 20  # positions really vary


def test_cluttered_adds_the_requested_number_of_pieces():
    blank = np.zeros((200, 28, 28, 1), np.float32)
    ones = np.ones((5, 28, 28, 1), np.float32)
    single = np.asarray(data.cluttered(jax.random.PRNGKey(7), blank, num_pieces=1, clutter_source=ones))
    np.testing.assert_array_equal(single.sum((1, 2, 3)), 64.0)  # one 8x8 piece, nothing else
    four = np.asarray(data.cluttered(jax.random.PRNGKey(8), blank, num_pieces=4, clutter_source=ones))
    area = four.sum((1, 2, 3))
    assert np.all(area >= 64) and np.all(area <= 256)
    assert np.mean(area) > 200  # overlaps are rare on a 60x60 canvas
    eight = np.asarray(data.cluttered(jax.random.PRNGKey(9), blank[:50], canvas=100, num_pieces=8, clutter_source=ones))
    assert np.mean(eight.sum((1, 2, 3))) > 400


def test_cluttered_keeps_the_digit():
    digits = _digits(8)
    out = np.asarray(data.distort("cluttered60", jax.random.PRNGKey(10), digits))
    assert np.all(out.sum((1, 2, 3)) >= digits.sum((1, 2, 3)) - 1e-4)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: data.rts(jax.random.PRNGKey(0), np.zeros((4, 28, 28))), ValueError, r"\[N, H, W, 1\]"),
        (lambda: data.rotated(jax.random.PRNGKey(0), np.zeros((4, 28, 28, 1), np.uint8)), TypeError, r"/ 255"),
        (
            lambda: data.distort("swirl", jax.random.PRNGKey(0), np.zeros((4, 28, 28, 1))),
            ValueError,
            r"Unknown distortion",
        ),
        (lambda: data.translated(jax.random.PRNGKey(0), np.zeros((4, 28, 28, 1)), canvas=20), ValueError, r"smaller"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_missing_and_corrupt_mnist_files_give_clear_errors(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    with pytest.raises(data.DataUnavailableError, match=r"train-images-idx3-ubyte.gz is missing"):
        data.prepare_mnist(data_dir=tmp_path / "tfds", source_dir=source)
    for name in data.MNIST_FILES:
        (source / name).write_bytes(b"not mnist")
    with pytest.raises(data.DataUnavailableError, match=r"wrong checksum"):
        data.prepare_mnist(data_dir=tmp_path / "tfds", source_dir=source)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnist2'"):
        data.load_image_dataset("mnist2", "train")


def test_mnist_loads_through_tfds_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20):
        images, labels = data.load_image_dataset("mnist", "train")
    assert images.shape == (20, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (20,) and labels.dtype == np.int32 and labels.max() < 10


def test_clutter_comes_from_other_digits():
    """The RAM paper's clutter is cut from *other* digits: an image never gets pieces of its own digit."""
    values = np.array([0.25, 0.5, 1.0], np.float32)
    digits = np.broadcast_to(values[:, None, None, None], (3, 28, 28, 1)).copy()
    for seed in range(20):
        out = np.asarray(data.cluttered(jax.random.PRNGKey(seed), digits, num_pieces=4))
        for i, value in enumerate(values):
            assert np.sum(out[i] == value) <= 28 * 28  # the digit's own pixels, no piece of it elsewhere
    with pytest.raises(ValueError, match="at least 2 digits"):
        data.cluttered(jax.random.PRNGKey(0), digits[:1])


@pytest.mark.slow
def test_reading_prepared_mnist_does_not_import_tensorflow(tmp_path):
    """Preparing MNIST needs TensorFlow once; reading it afterwards must not import it (nor probe GCS)."""
    import subprocess
    import sys
    from pathlib import Path

    source = Path(__file__).parent.parent.parent / "shared" / "data" / "mnist"
    if not (source / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("the offline MNIST files are not beside the repository")
    code = (
        "import sys; from visattn_jax import data; "
        f"x, y = data.load_image_dataset('mnist', 'test', data_dir={str(tmp_path)!r}, source_dir={str(source)!r}); "
        "print(x.shape, 'tensorflow' in sys.modules)"
    )
    for expected in ("(10000, 28, 28, 1)", "(10000, 28, 28, 1) False"):  # the first run prepares, with TF
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().splitlines()[-1].startswith(expected), result.stdout
        for noise in ("OpenCV", "oneDNN", "google_auth", "Google authentication"):  # TF's start-up lines too
            assert noise not in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("name", ["rts", "cluttered60"])
def test_make_test_set_is_fixed_by_the_seed_and_chunked_by_position(name):
    """The fixed test sets: the same seed gives the same images bit for bit; each chunk has its own key (two
    chunks of identical digits come out different), so a longer set extends a shorter one at chunk boundaries
    instead of redrawing it; another seed gives another set."""
    from visattn_jax.data import make_test_set

    digits = (np.tile(_digits(4), (3, 1, 1, 1)) * 255).astype(np.uint8)  # chunks 0, 1, 2 hold the same digits
    full = make_test_set(name, digits, seed=5, chunk=4)
    assert full.shape == (12, SIZES[name], SIZES[name], 1) and full.dtype == np.float32
    np.testing.assert_array_equal(full, make_test_set(name, digits, seed=5, chunk=4))
    np.testing.assert_array_equal(full[:8], make_test_set(name, digits[:8], seed=5, chunk=4))
    assert not np.array_equal(full[:4], full[4:8]) and not np.array_equal(full[4:8], full[8:])
    assert not np.array_equal(full, make_test_set(name, digits, seed=6, chunk=4))
