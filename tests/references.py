"""Independent references: NumPy for the sampler tests (float64, written from the papers' formulas), and timm
for the networks (imported only by the tests that need it)."""

from __future__ import annotations

import numpy as np


def _unnormalize(coord, size, align_corners):
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


def _pad_coordinate(pix, size, align_corners, padding_mode):
    """Applies a padding mode to pixel coordinates with modular arithmetic (not PyTorch's code path)."""
    if padding_mode == "zeros":
        return pix
    if padding_mode == "border":
        return np.clip(pix, 0, size - 1)
    # Reflection: mirror about the corner-pixel centres (align_corners) or the outer edges.
    if align_corners:
        if size == 1:
            return np.zeros_like(pix)
        lo, hi = 0.0, size - 1.0
    else:
        lo, hi = -0.5, size - 0.5
    period = 2 * (hi - lo)
    t = np.mod(pix - lo, period)
    reflected = np.where(t > hi - lo, period - t, t) + lo
    return np.clip(reflected, 0, size - 1)


def bilinear_reference(image, coords, *, align_corners=False, padding_mode="zeros"):
    """STN eq. 5 evaluated densely: sum over all pixels of U_nm max(0, 1-|x-m|) max(0, 1-|y-n|).

    image [H, W, C], coords [..., 2] (x, y) -> [..., C], float64. Non-finite coordinates give 0.
    """
    image = np.asarray(image, np.float64)
    coords = np.asarray(coords, np.float64)
    h, w, _ = image.shape
    finite = np.all(np.isfinite(coords), axis=-1)
    coords = np.where(finite[..., None], coords, 0.0)
    x = _pad_coordinate(_unnormalize(coords[..., 0], w, align_corners), w, align_corners, padding_mode)
    y = _pad_coordinate(_unnormalize(coords[..., 1], h, align_corners), h, align_corners, padding_mode)
    kx = np.maximum(0, 1 - np.abs(x[..., None] - np.arange(w)))  # [..., W]
    ky = np.maximum(0, 1 - np.abs(y[..., None] - np.arange(h)))  # [..., H]
    out = np.einsum("...n,...m,nmc->...c", ky, kx, image)
    return np.where(finite[..., None], out, 0.0)


def affine_grid_reference(theta, shape, *, align_corners=False):
    """Closed form of affine_grid: theta @ (x, y, 1) over the pixel centres."""
    h, w = shape

    def centres(n):
        if n == 1:
            return np.zeros(1)
        c = np.linspace(-1, 1, n)
        return c if align_corners else c * (n - 1) / n

    xs, ys = np.meshgrid(centres(w), centres(h), indexing="xy")
    points = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    return points @ np.asarray(theta, np.float64).T


def assert_timm_logits_match(name: str, *, size: int = 224, tolerance: float = 1e-4) -> None:
    """Builds timm's ``name`` with random weights and random BatchNorm statistics, imports its state dict into
    our network of the same name, and checks that both give the same logits. Skips without torch / timm."""
    import jax
    import pytest

    from visattn_jax import models, weights

    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                # Random statistics and affine parameters; small gammas keep the residual stream (and so the
                # logits) of order one, so an absolute tolerance of 1e-4 means something.
                module.weight.uniform_(0.2, 0.6)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    variables = weights.from_torch_state_dict(name, {k: v.numpy() for k, v in reference.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    model = models.create_model(name)
    logits = np.asarray(jax.jit(lambda v, images: model.apply(v, images, train=False))(variables, x))
    assert 0.05 < np.abs(expected).max() < 100  # the comparison is of order-one numbers
    np.testing.assert_allclose(logits, expected, rtol=tolerance, atol=tolerance)
