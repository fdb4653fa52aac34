"""Figures for the natural-image experiments, drawn from real (small, untrained) networks' sown values."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from visattn_jax import models, viz
from visattn_jax.residual_attention import AttentionModule


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_excitation_figure_from_an_se_network(tmp_path):
    model = models.create_model("cifar_se_resnet20")
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(1), x)
    _, state = model.apply(variables, x, mutable=["intermediates"])
    blocks = {
        name: state["intermediates"][name]["se"]["excitation"][0] for name in ("layer1_0", "layer2_2", "layer3_2")
    }
    path = viz.plot_excitations(blocks, np.array([0, 0, 1, 1, 2, 2]), tmp_path / "se.png", classes=[0, 1])
    assert _is_png(path)


def test_attention_mask_figure(tmp_path):
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 8))
    module = AttentionModule(8, mask_depth=2)
    _, state = module.apply(module.init(jax.random.PRNGKey(1), x), x, mutable=["intermediates"])
    mask = state["intermediates"]["mask"][0]
    images = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    path = viz.plot_attention_masks(
        images, {"stage 1": np.asarray(mask), "stage 2": np.asarray(mask[:, ::2, ::2])}, tmp_path / "m.png"
    )
    assert _is_png(path)


def test_training_curve_and_misclassified(tmp_path):
    lines = [{"step": s, "loss": 2.0 / s} for s in range(1, 20)] + [{"step": 19, "eval/error_percent": 50.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    assert _is_png(viz.plot_training_curve(tmp_path / "metrics.jsonl", tmp_path / "curve.png"))
    images = np.zeros((5, 8, 8, 3), np.uint8)
    path = viz.plot_misclassified(
        images, np.arange(5), np.array([0, 2, 2, 0, 4]), tmp_path / "wrong.png", class_names=list("abcde")
    )
    assert _is_png(path)


def test_seed_curves_figure_and_its_errors(tmp_path):
    curves = {
        "plain": [(np.arange(1, 5), np.array([30.0, 20, 15, 10])), ([1, 2, 3, 4], [31, 22, 14, 11])],
        "se": [([1, 2, 3, 4], [29.0, 21, 16, 9])],
    }
    assert _is_png(viz.plot_seed_curves(curves, tmp_path / "seeds.png", title="t"))
    with pytest.raises(ValueError, match=r"'se', seed curve 0: x and y must be 1-D of one length; got \(4,\), \(3,\)"):
        viz.plot_seed_curves({"se": [([1, 2, 3, 4], [1, 2, 3])]}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="at least one network with at least one seed curve"):
        viz.plot_seed_curves({"se": []}, tmp_path / "bad.png")


def test_figures_leave_the_notebook_backend_alone(tmp_path):
    """The digit figures once switched matplotlib to Agg, which turned a notebook's inline display off."""
    import matplotlib

    from visattn_jax import affine_grid

    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        images = np.random.default_rng(0).random((2, 28, 28, 1)).astype(np.float32)
        grids = np.broadcast_to(np.asarray(affine_grid(np.eye(2, 3), (14, 14))), (2, 14, 14, 2))
        assert _is_png(viz.plot_transformer(images, images[:, ::2, ::2], grids, tmp_path / "stn.png"))
        locations = np.zeros((2, 3, 2), np.float32)
        assert _is_png(viz.plot_glimpses(images, locations, tmp_path / "ram.png", size=8, num_scales=2))
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
