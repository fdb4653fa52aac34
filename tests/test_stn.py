"""Spatial transformer modules and the paper's classifiers."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visattn_jax import stn


def _images(n=4, size=28, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 1)).astype(np.float32)


@pytest.mark.parametrize("transform", sorted(stn.TRANSFORMS))
# The identity comes from the regression layer, whatever the localisation net: the convolutional one (slower to
# run) in the slow tier.
@pytest.mark.parametrize(
    "localization", [stn.FCLocalization(), pytest.param(stn.ConvLocalization(), marks=pytest.mark.slow)]
)
def test_transformer_starts_as_the_identity(transform, localization):
    module = stn.SpatialTransformer(localization=localization, transform=transform)
    x = _images()
    params = module.init(jax.random.PRNGKey(0), x)
    out, state = module.apply(params, x, mutable=["intermediates"])
    if transform == "tps":  # the TPS system is solved in float32: identity up to rounding
        np.testing.assert_allclose(np.asarray(out), x, atol=1e-4)
    else:
        np.testing.assert_array_equal(np.asarray(out), x)
    theta = state["intermediates"]["theta"][0]
    assert theta.shape == (4, stn.TRANSFORMS[transform].num_params)
    np.testing.assert_allclose(np.asarray(theta), np.tile(stn.TRANSFORMS[transform].identity(), (4, 1)))
    assert state["intermediates"]["grid"][0].shape == (4, 28, 28, 2)


def test_output_shape_and_gradients_reach_the_regression_layer():
    module = stn.SpatialTransformer(localization=stn.ConvLocalization(), transform="affine", output_shape=(21, 21))
    x = _images(size=42)
    params = module.init(jax.random.PRNGKey(0), x)
    assert module.apply(params, x).shape == (4, 21, 21, 1)
    grads = jax.grad(lambda p: jnp.sum(module.apply(p, x) * np.linspace(0, 1, 21)[None, None, :, None]))(params)
    assert float(jnp.abs(grads["params"]["regression"]["kernel"]).sum()) > 0


@pytest.mark.parametrize("align_corners", [False, True])
def test_separable_attention_sampler_equals_grid_sample(align_corners, monkeypatch):
    """The attention transform's crop as two matmuls (the "auto" choice on TPU): the same output and parameter
    gradients as grid_sample's gathers, away from the identity (a zoom and a shift), and no gather in the jaxpr."""
    x = _images(n=3, size=30, seed=2)

    def module(sampler):
        return stn.SpatialTransformer(
            localization=stn.FCLocalization(), transform="attention", output_shape=(12, 14),
            align_corners=align_corners, sampler=sampler,
        )  # fmt: skip

    params = jax.tree_util.tree_map(np.asarray, module("grid_sample").init(jax.random.PRNGKey(0), x))
    regression = params["params"]["regression"]
    regression["bias"] = np.array([0.55, 0.2, -0.15], np.float32)  # zoom in, shift
    regression["kernel"] = 0.01 * np.random.default_rng(1).standard_normal(regression["kernel"].shape, np.float32)
    loss = lambda p, m: jnp.sum(m.apply(p, x) * np.linspace(-1, 1, 14)[None, None, :, None])  # noqa: E731
    reference = module("grid_sample").apply(params, x)
    np.testing.assert_allclose(module("separable").apply(params, x), reference, atol=2e-6)
    g_sep = jax.grad(loss)(params, module("separable"))
    g_ref = jax.grad(loss)(params, module("grid_sample"))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5), g_sep, g_ref)
    assert stn.resolve_sampler("auto", "attention") == "grid_sample"  # this CPU
    assert stn.resolve_sampler("auto", "attention", backend="tpu") == "separable"
    assert stn.resolve_sampler("auto", "affine", backend="tpu") == "grid_sample"
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    jaxpr = str(jax.make_jaxpr(lambda p: module("auto").apply(p, x))(params))
    assert "gather" not in jaxpr and "dot_general" in jaxpr


def test_sampler_choice_errors():
    with pytest.raises(ValueError, match=r"sampler must be one of \['auto', 'grid_sample', 'separable'\]"):
        stn.resolve_sampler("matmul", "affine")
    with pytest.raises(ValueError, match=r"axis-aligned grids only \(transform='attention'\), not 'affine'"):
        stn.SpatialTransformer(localization=stn.FCLocalization(), sampler="separable").init(
            jax.random.PRNGKey(0), _images()
        )


@pytest.mark.parametrize("model", ["cnn", "fcn", "st_cnn", "st_fcn"])
@pytest.mark.parametrize("size,st_out", [(28, None), (42, 21), (60, 30)])
def test_classifiers_build_and_have_comparable_sizes(model, size, st_out):
    net = stn.stn_classifier(model, transform="affine", input_size=size, st_output_size=st_out)
    x = _images(2, size)
    params = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)  # shapes and counts only: nothing compiled
    assert jax.eval_shape(net.apply, params, x).shape == (2, 10)
    count = sum(p.size for p in jax.tree_util.tree_leaves(params))
    assert 5e4 < count < 5e5, f"{model} at {size}px has {count} parameters"


class _BadLocalization(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x  # not [N, F]


@pytest.mark.parametrize(
    "build,x,error,match",
    [
        (
            lambda: stn.SpatialTransformer(localization=stn.FCLocalization(), transform="swirl"),
            _images(),
            ValueError,
            r"Unknown transform 'swirl'",
        ),
        (
            lambda: stn.SpatialTransformer(localization=stn.FCLocalization()),
            _images()[0],
            ValueError,
            r"\[N, H, W, C\]",
        ),
        (lambda: stn.SpatialTransformer(localization=_BadLocalization()), _images(), ValueError, r"\[N, F\] features"),
    ],
)
def test_bad_input(build, x, error, match):
    with pytest.raises(error, match=match):
        build().init(jax.random.PRNGKey(0), x)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"Unknown model 'resnet'"):
        stn.stn_classifier("resnet")


@pytest.mark.parametrize("model", ["cnn", "fcn", "st_cnn", "st_fcn"])
def test_classifiers_name_a_batch_without_channels(model):
    """A grey batch [B, H, W] once failed deep inside Flax (cnn) or was silently accepted (fcn)."""
    classifier = stn.stn_classifier(model, input_size=28)
    with pytest.raises(ValueError, match=r"\[N, H, W, C\], got shape \(2, 28, 28\).*x\[\.\.\., None\]"):
        classifier.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28)))


def test_unknown_transform_is_caught_when_the_model_is_built():
    with pytest.raises(ValueError, match=r"Unknown transform 'foo'"):
        stn.stn_classifier("st_cnn", transform="foo")


@pytest.mark.parametrize("size,cnn_params,fcn_params", [(28, 68_522, 68_182), (42, 84_842, 83_822)])
def test_fcn_baseline_is_about_the_cnn_size(size, cnn_params, fcn_params):
    """The STN paper keeps its models "about the same" size: the FCN's widths follow the input."""

    def count(model):
        shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 1))))
        return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))

    assert count(stn.stn_classifier("cnn", input_size=size)) == cnn_params
    assert count(stn.stn_classifier("fcn", input_size=size)) == fcn_params
    # The next width up would exceed the CNN's count: the largest that fits.
    w = stn.fcn_features_matching_cnn(size)[0] + 1
    assert size * size * w + w + w * w + w + w * 10 + 10 > cnn_params
    if size == 42:  # the former fixed 2 x 128 was about three times the CNN's size there
        assert count(stn.stn_classifier("fcn", input_size=size, features=(128, 128))) > 2 * cnn_params
