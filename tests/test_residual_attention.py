"""Residual Attention Network: the prototxts' sizes, the module's formulas and activations against NumPy, mask
geometry for odd and even inputs, gradient flow into both branches, the CIFAR counts, and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visattn_jax import models, weights
from visattn_jax.residual_attention import AttentionModule, mask_activation, resize_align_corners


def _count(model, size):
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
    return models.num_params(variables)


@pytest.mark.parametrize(
    "name,params,giga",
    # Counted from the official Caffe prototxts (../shared/PAPERS.md 3b): 31.81M / 6.27 G and 52.47M / 10.53 G.
    [("attention56", 31_810_728, 6.27), ("attention92", 52_466_344, 10.53)],
)
def test_imagenet_networks_match_the_prototxts(name, params, giga):
    model = models.create_model(name)
    assert _count(model, 224) == params
    assert round(params / 1e6, 2) == {"attention56": 31.81, "attention92": 52.47}[name]
    macs = models.multiply_adds(model, (1, 224, 224, 3))["macs"]
    assert round(macs / 1e9, 2) == giga


def test_the_papers_printed_counts_are_explained():
    # Attention-56: the paper's 31.9M is our count plus BatchNorm's running statistics (31.88M).
    model = models.create_model("attention56")
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
    stats = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(variables["batch_stats"]))
    assert round((31_810_728 + stats) / 1e6, 1) == 31.9
    # Attention-92: the paper's 51.3M is one 1024-channel residual unit (1,117,184 parameters) below the
    # prototxt's 52.47M.
    unit = 1024 * 256 + 256 * 256 * 9 + 256 * 1024 + 2 * (1024 + 256 + 256)
    assert round((52_466_344 - unit) / 1e6, 1) == 51.3


@pytest.mark.parametrize(
    "name,paper,tolerance",
    # The paper: Attention-92 1.9M, -236 5.1M, -452 8.6M. Our widths (see CIFAR_ATTENTION) give 1.960M,
    # 5.203M, 8.630M: +3.1%, +2.0% (2.02) and +0.4% over the paper's rounded figures. The goal is 2%:
    # Attention-92 misses it (see CIFAR_ATTENTION for the choice and the alternatives).
    [("cifar_attention92", 1.9, 0.032), ("cifar_attention236", 5.1, 0.021), ("cifar_attention452", 8.6, 0.005)],
)
def test_cifar_counts_near_the_paper(name, paper, tolerance):
    count = _count(models.create_model(name), 32)
    assert count / 1e6 == pytest.approx(paper, rel=tolerance)


def test_cifar_depths_follow_36m_plus_20():
    # Trunk-path layers: stem conv + 6 plain units (3 convs each) + FC + 3 x (p + t + p) units per module.
    for name, m, p, t in [
        ("cifar_attention56", 1, 1, 2),
        ("cifar_attention164", 4, 1, 2),
        ("cifar_attention452", 6, 2, 4),
    ]:
        model = models.create_model(name)
        assert model.modules_per_stage == (m, m, m) and (model.p, model.t) == (p, t)
        depth = 1 + 3 * (3 + model.last_stage_units) + 1 + 3 * 3 * m * (2 * p + t)
        assert depth == int(name.removeprefix("cifar_attention"))


def _module_and_input(**kwargs):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 32))
    module = AttentionModule(32, p=0, mask_depth=2, **kwargs)
    return module, module.init(jax.random.PRNGKey(0), x), x


def _trunk_and_mask(module, variables, x):
    out, state = module.apply(
        variables, x, capture_intermediates=lambda m, _: m.name == "trunk_1", mutable=["intermediates"]
    )
    return out, state["intermediates"]["trunk_1"]["__call__"][0], state["intermediates"]["mask"][0]


@pytest.mark.parametrize("residual", ["arl", "nal"])
def test_attention_residual_learning_formulas(residual):
    module, variables, x = _module_and_input(residual=residual)
    out, trunk, mask = _trunk_and_mask(module, variables, x)
    expected = (1 + mask) * trunk if residual == "arl" else mask * trunk
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert mask.shape == trunk.shape and bool(jnp.all((mask >= 0) & (mask <= 1)))


def test_arl_with_a_zero_mask_is_the_trunk():
    module, variables, x = _module_and_input(activation="channel")
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    params["mask_conv2"] = {"kernel": jnp.zeros_like(params["mask_conv2"]["kernel"])}  # mask logits 0 -> M = 0
    out, trunk, mask = _trunk_and_mask(module, {**variables, "params": params}, x)
    assert float(jnp.abs(mask).max()) == 0.0
    np.testing.assert_array_equal(out, trunk)


def test_mask_activations_against_numpy():
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(mask_activation(jnp.asarray(x), "mixed"), sigmoid(x), rtol=1e-5)
    norm = np.sqrt((x**2).sum(-1, keepdims=True))
    np.testing.assert_allclose(mask_activation(jnp.asarray(x), "channel"), x / norm, rtol=1e-4)
    standard = (x - x.mean((1, 2), keepdims=True)) / x.std((1, 2), keepdims=True)
    np.testing.assert_allclose(mask_activation(jnp.asarray(x), "spatial"), sigmoid(standard), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown mask activation 'softmax'"):
        mask_activation(jnp.asarray(x), "softmax")


@pytest.mark.parametrize("size,depth", [(56, 3), (57, 3), (28, 2), (32, 3), (40, 3), (14, 1), (15, 1), (8, 2)])
def test_mask_matches_the_trunk_size_for_odd_and_even_maps(size, depth):
    x = jnp.ones((1, size, size + 3, 16))
    module = AttentionModule(16, mask_depth=depth)
    # Shapes only: traced abstractly (jax.eval_shape), nothing compiled or run.
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    out, state = jax.eval_shape(lambda v, x: module.apply(v, x, mutable=["intermediates"]), variables, x)
    assert out.shape == x.shape and state["intermediates"]["mask"][0].shape == x.shape


@pytest.mark.parametrize("size", [224, 225])
def test_imagenet_network_runs_at_odd_and_even_sizes(size):
    model = models.create_model("attention56", num_classes=5)
    shapes = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
    assert shapes[0].shape == (1, 5)


def test_resize_align_corners_against_numpy():
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    out = np.asarray(resize_align_corners(jnp.asarray(x), (9, 4)))

    def axis_weights(n_out, n_in):
        pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
        w = np.zeros((n_out, n_in))
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        np.add.at(w, (np.arange(n_out), lo), 1 - (pos - lo))
        np.add.at(w, (np.arange(n_out), hi), pos - lo)
        return w

    expected = np.einsum("oh,nhwc,pw->nopc", axis_weights(9, 5), x, axis_weights(4, 7))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 0, 0], x[:, 0, 0], rtol=1e-6)  # corners are aligned
    np.testing.assert_allclose(out[:, -1, -1], x[:, -1, -1], rtol=1e-6)


def test_resize_align_corners_equals_torch_interpolate_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(2, 7, 7, 4)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), size=(14, 13), mode="bilinear", align_corners=True
    )
    np.testing.assert_allclose(
        resize_align_corners(jnp.asarray(x), (14, 13)), expected.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6
    )


def test_gradients_reach_both_branches():
    module, variables, x = _module_and_input()

    def loss(params):
        return jnp.sum(module.apply({**variables, "params": params}, x) ** 2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for branch in ("trunk_0", "mask_down0_0", "mask_skip0", "mask_up1_0", "mask_conv1", "mask_conv2"):
        assert float(jnp.abs(jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(grads[branch])])).max()) > 0


def test_local_convolution_masks_and_activation_variants_run():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 16, 16, 32))
    for kwargs in ({"mask_structure": "local"}, {"activation": "spatial"}, {"activation": "channel"}):
        module = AttentionModule(32, **kwargs)
        out, state = module.init_with_output(jax.random.PRNGKey(0), x)
        assert out.shape == x.shape
    local = AttentionModule(32, mask_structure="local").init(jax.random.PRNGKey(0), x)["params"]
    assert {"mask_local_0", "mask_local_1", "mask_local_2"} <= set(local) and "mask_down0_0" not in local


@pytest.mark.parametrize(
    "kwargs,shape,match",
    [
        ({"mask_depth": 3}, (1, 8, 8, 16), "cannot be max-pooled 3 times"),
        ({"activation": "softmax"}, (1, 8, 8, 16), "Unknown mask activation 'softmax'"),
        ({"residual": "add"}, (1, 8, 8, 16), "Unknown residual 'add'"),
        ({"mask_structure": "unet"}, (1, 8, 8, 16), "Unknown mask_structure 'unet'"),
        ({}, (8, 8, 16), r"\[N, H, W, C\]"),
    ],
)
def test_bad_module_configuration(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        AttentionModule(16, **kwargs).init(jax.random.PRNGKey(0), jnp.zeros(shape))


@pytest.mark.slow
def test_cifar_attention_trains_one_step():
    model = models.create_model("cifar_attention56")
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x)

    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[:, 0])

    grads = jax.grad(loss)(variables["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    with pytest.raises(ValueError, match="1 channels"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))


def _assert_torch_port_matches(names: tuple[str, ...], sizes: tuple[int, ...]) -> None:
    """The PyTorch Residual Attention Network of the benchmark (written from the prototxts' description, its
    hyperparameters read from our module) has exactly our parameters for each of ``names`` and, given our
    weights and BatchNorm statistics, CIFAR Attention-56's logits at each input size of ``sizes``."""
    torch = pytest.importorskip("torch")
    from experiments.benchmarks.residual_attention_train import torch_attention_net

    for name in names:
        net = torch_attention_net(torch, models.create_model(name))
        assert sum(p.numel() for p in net.parameters()) == models.num_params(name)
    model = models.create_model("cifar_attention56")
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 40, 40, 3)))  # compiled: eager is slow
    rng = np.random.default_rng(0)
    # Random BatchNorm scales, shifts and statistics, so that no layer is the identity.
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: (
            v
            if path[-1].key in ("kernel",)
            else jnp.asarray(
                rng.uniform(0.5, 1.5, v.shape) if path[-1].key in ("scale", "var") else rng.normal(0, 0.1, v.shape),
                v.dtype,
            )
        ),
        variables,
    )
    net = torch_attention_net(torch, model).eval()
    missing, unexpected = net.load_state_dict(
        {k: torch.from_numpy(v) for k, v in weights.to_torch_state_dict(variables).items()}, strict=False
    )
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    for size in sizes:
        x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
        ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x))
        with torch.no_grad():
            theirs = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=1e-4)


def test_benchmark_torch_network_is_an_independent_port_torch():
    """The default run's port check: CIFAR Attention-56's parameters, and its logits at an odd size."""
    _assert_torch_port_matches(("cifar_attention56",), (33,))


@pytest.mark.slow
def test_benchmark_torch_network_is_an_independent_port_at_every_size_torch():
    """The full port check: CIFAR Attention-92 and ImageNet Attention-56 parameter counts, even and odd sizes."""
    _assert_torch_port_matches(("cifar_attention92", "attention56"), (40, 33))
