"""CBAM (Woo et al. 2018): the module against an independent PyTorch implementation of the paper's equations
(eval and training mode), the CBAM networks' sizes against the paper's Table 4, its multiply-adds against a count
by hand, the ResNet hook passing ``train`` to it, and its errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visattn_jax import models
from visattn_jax.cbam import CBAM, cbam_attention


def _count(name):
    size = models.input_size(name)
    variables = jax.eval_shape(lambda: models.create_model(name).init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
    return models.num_params(variables["params"])


# The paper's Table 4 (ImageNet): parameters in millions of ResNet + CBAM; ours exactly, rounded as the paper.
PAPER_MILLIONS = {"cbam_resnet18": 11.78, "cbam_resnet34": 21.96, "cbam_resnet50": 28.09, "cbam_resnet101": 49.33}


@pytest.mark.parametrize("name", sorted(PAPER_MILLIONS))
def test_parameter_counts_equal_the_paper(name):
    assert round(_count(name) / 1e6, 2) == PAPER_MILLIONS[name]


def test_cbam_adds_a_7x7_conv_and_its_bn_per_block_to_se():
    """ResNet-50 + CBAM = SE-ResNet-50 (same MLP widths, with biases) + 16 blocks x (2 x 7 x 7 weights + BN's
    scale and bias); CIFAR ResNet-20 likewise with its 9 blocks."""
    assert _count("cbam_resnet50") == 28_088_024 + 16 * 100 == 28_089_624
    assert _count("cifar_cbam_resnet20") == 272_095 + 9 * 100 == 272_995


def test_multiply_adds_are_se_plus_the_second_mlp_pass_and_the_spatial_conv():
    """Against a count by hand: CBAM runs the shared MLP on two descriptors (SE's MLP multiply-adds once more)
    and a 2 -> 1 channel 7x7 convolution at every position of every block's map."""
    blocks = [(256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3)]  # (channels, map side, blocks)
    second_mlp = sum(n * 2 * c * (c // 16) for c, _, n in blocks)
    spatial = sum(n * side * side * 7 * 7 * 2 for _, side, n in blocks)
    cbam = models.multiply_adds(models.create_model("cbam_resnet50"), (1, 224, 224, 3))["macs"]
    se = models.multiply_adds(models.create_model("seresnet50"), (1, 224, 224, 3))["macs"]
    assert cbam - se == second_mlp + spatial == 3_873_910


def _torch_cbam(x, params, stats, train):
    """CBAM from the paper's equations 2-3 in PyTorch (NCHW), with the authors' BatchNorm after the 7x7
    convolution (PyTorch momentum 0.01): the output and, in training mode, the BN's updated running statistics."""
    import torch
    import torch.nn.functional as F

    t = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
    x = t(x).permute(0, 3, 1, 2)
    w1, b1 = t(params["fc1"]["kernel"]).T, t(params["fc1"]["bias"])
    w2, b2 = t(params["fc2"]["kernel"]).T, t(params["fc2"]["bias"])
    mlp = lambda s: F.linear(F.relu(F.linear(s, w1, b1)), w2, b2)  # noqa: E731
    channel = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    x = x * channel[:, :, None, None]
    pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
    conv = F.conv2d(pooled, t(params["spatial_conv"]["kernel"]).permute(3, 2, 0, 1), padding=3)
    mean, var = t(stats["mean"]).clone(), t(stats["var"]).clone()
    bn = F.batch_norm(
        conv, mean, var, t(params["spatial_bn"]["scale"]), t(params["spatial_bn"]["bias"]), train, 0.01, 1e-5
    )
    out = x * torch.sigmoid(bn)
    return out.permute(0, 2, 3, 1).numpy(), {"mean": mean.numpy(), "var": var.numpy()}


@pytest.mark.parametrize("train", [False, True])
def test_cbam_matches_pytorch_from_the_paper_torch(train):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 9, 11, 32)).astype(np.float32)
    module = CBAM(reduction=8)
    variables = jax.tree_util.tree_map(np.asarray, module.init(jax.random.key(0), x))
    params, stats = variables["params"], dict(variables["batch_stats"]["spatial_bn"])
    # Non-trivial BN parameters and statistics, so every term is tested.
    params["spatial_bn"] = {"scale": np.float32([1.7]), "bias": np.float32([-0.3])}
    stats = {"mean": np.float32([0.2]), "var": np.float32([2.5])}
    params["fc1"]["bias"] = rng.normal(size=4).astype(np.float32)
    variables = {"params": params, "batch_stats": {"spatial_bn": stats}}
    out, updates = module.apply(variables, x, train=train, mutable=["batch_stats", "intermediates"])
    expected, expected_stats = _torch_cbam(x, params, stats, train)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    new = updates["batch_stats"]["spatial_bn"]
    np.testing.assert_allclose(new["mean"], expected_stats["mean"], rtol=1e-5)
    # PyTorch's running variance takes the unbiased batch variance, Flax's the biased one (n = N H W values).
    expected_var = expected_stats["var"]
    if train:
        n = x.shape[0] * x.shape[1] * x.shape[2]
        biased = (expected_var - 0.99 * stats["var"]) / 0.01 * (n - 1) / n
        expected_var = 0.99 * stats["var"] + 0.01 * biased
    np.testing.assert_allclose(new["var"], expected_var, rtol=1e-5)
    sown = updates["intermediates"]
    assert sown["excitation"][0].shape == (3, 32) and sown["mask"][0].shape == (3, 9, 11, 1)


def test_the_resnet_hook_passes_train_to_cbam():
    """Training mode updates the spatial BN's statistics of every block through the hook; evaluation reads them."""
    model = models.create_model("cifar_cbam_resnet20")
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before = variables["batch_stats"]["layer1_0"]["cbam"]["spatial_bn"]["mean"]
    after = updates["batch_stats"]["layer1_0"]["cbam"]["spatial_bn"]["mean"]
    assert not np.allclose(before, after)
    eval_a = model.apply(variables, x, train=False)
    eval_b = model.apply({**variables, **updates}, x, train=False)
    assert not np.allclose(eval_a, eval_b)  # evaluation uses the running statistics


def test_channel_only_cbam_has_no_spatial_parameters():
    x = jnp.ones((2, 4, 4, 16))
    variables = CBAM(use_spatial=False).init(jax.random.key(0), x)
    assert sorted(variables["params"]) == ["fc1", "fc2"] and "batch_stats" not in variables


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\[N, H, W, C\].*\(4, 4, 16\)"):
        CBAM().init(jax.random.key(0), jnp.ones((4, 4, 16)))
    with pytest.raises(ValueError, match="odd kernel_size"):
        CBAM(kernel_size=4).init(jax.random.key(0), jnp.ones((1, 4, 4, 16)))
    with pytest.raises(ValueError, match=r"no field\(s\) \['ratio'\]"):
        cbam_attention(ratio=16)


def test_cbam_under_jit_and_vmap_equals_eager():
    x = jax.random.normal(jax.random.key(2), (2, 3, 6, 6, 16))
    module = CBAM(reduction=4)
    variables = module.init(jax.random.key(0), x[0])
    eager = jnp.stack([module.apply(variables, xi) for xi in x])
    batched = jax.jit(jax.vmap(lambda xi: module.apply(variables, xi)))(x)
    np.testing.assert_allclose(batched, eager, rtol=1e-6, atol=1e-6)
