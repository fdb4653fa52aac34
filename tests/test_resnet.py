"""Residual backbones: exact sizes against timm's published counts, layouts, the attention hook, weight import."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.references import assert_timm_logits_match
from visattn_jax import models, weights
from visattn_jax.resnet import ATTENTION_POSITIONS, ResNet

# timm 1.0.31 parameter counts (1000 classes): ../shared/PAPERS.md section 2b and the issue.
TIMM_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x4d": 44_177_704,
}
# He et al. 2015 / 2016: CIFAR ResNet-20 0.27M, -56 0.85M, -110 1.7M; pre-activation ResNet-164 1.7M.
CIFAR_COUNTS = {
    "cifar_resnet20": 269_722,
    "cifar_resnet56": 853_018,
    "cifar_resnet110": 1_727_962,
    "cifar_preact_resnet164": 1_703_258,
}


def _variables(model, size, channels=3):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels))))


@pytest.mark.parametrize("name", sorted(TIMM_COUNTS))
def test_parameter_counts_equal_timm(name):
    assert models.num_params(_variables(models.create_model(name), 224)) == TIMM_COUNTS[name]
    # The Caffe layout moves strides and pooling, not parameters.
    legacy = models.create_model(f"legacy_{name}")
    assert models.num_params(_variables(legacy, 224)) == TIMM_COUNTS[name]


@pytest.mark.parametrize("name", sorted(CIFAR_COUNTS))
def test_cifar_parameter_counts(name):
    count = models.num_params(_variables(models.create_model(name), 32))
    assert count == CIFAR_COUNTS[name]


@pytest.mark.parametrize(
    "name,giga",
    # Multiply-adds at 224x224: ResNet-50 4.1 G (v1.5), 3.86 G in the Caffe layout (SENet Table 2's 3.86
    # "GFLOPs"); ResNet-18 1.8 G; ResNeXt-50 4.2 G (the ResNeXt paper's 4.2e9 FLOPs).
    [("resnet50", 4.09), ("legacy_resnet50", 3.86), ("resnet18", 1.81), ("resnext50_32x4d", 4.23)],
)
def test_multiply_adds(name, giga):
    cost = models.multiply_adds(models.create_model(name), (1, 224, 224, 3))
    assert cost["macs"] / 1e9 == pytest.approx(giga, abs=0.005)
    # XLA's count skips padding taps and adds elementwise work: close, but not the same convention.
    assert cost["xla_macs"] / 1e9 == pytest.approx(giga, rel=0.1)


def test_cifar_resnet20_multiply_adds():
    cost = models.multiply_adds(models.create_model("cifar_resnet20"), (1, 32, 32, 3))
    assert cost["macs"] / 1e6 == pytest.approx(40.55, abs=0.01)  # the commonly quoted 41 M


@pytest.mark.parametrize(
    "layout,size,expected",
    # The torchvision stem pads its max pool (112 -> 56); the Caffe stem pools in ceil mode without padding
    # (112 -> 56). They differ on odd maps: a 225 input gives 113 after the conv, pooled to 56 (ceil) or 57.
    [("torchvision", 224, 56), ("caffe", 224, 56), ("caffe", 225, 56), ("torchvision", 225, 57), ("caffe", 227, 57)],
)
def test_stem_resolution(layout, size, expected):
    model = ResNet((1, 1, 1, 1), block="basic", layout=layout, num_classes=3)
    x = jnp.zeros((1, size, size, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    _, state = model.apply(
        variables, x, capture_intermediates=lambda m, _: m.name == "layer1_0", mutable=["intermediates"]
    )
    assert state["intermediates"]["layer1_0"]["__call__"][0].shape[1] == expected


@pytest.mark.parametrize("size", [5, 6, 7, 8, 112, 113, 114])
def test_ceil_max_pool_equals_torch(size):
    torch = pytest.importorskip("torch")
    from visattn_jax.resnet import _ceil_max_pool

    x = np.random.default_rng(size).normal(size=(2, size, size + 1, 3)).astype(np.float32)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), 3, 2, ceil_mode=True)
    np.testing.assert_array_equal(_ceil_max_pool(jnp.asarray(x)), expected.permute(0, 2, 3, 1).numpy())


def test_caffe_layout_strides_on_first_1x1():
    model = models.create_model("legacy_resnet50", num_classes=4)
    variables = _variables(model, 64)
    # Same kernels as the torchvision layout; the stride moved. Check the feature map sizes directly.
    x = jnp.zeros((1, 64, 64, 3))
    params = model.init(jax.random.PRNGKey(0), x)
    for name, stride_conv in (("legacy_resnet50", "conv1"), ("resnet50", "conv2")):
        m = models.create_model(name, num_classes=4)
        _, state = m.apply(
            params if name.startswith("legacy") else m.init(jax.random.PRNGKey(0), x),
            x,
            capture_intermediates=lambda mod, _: mod.name in ("conv1", "conv2"),
            mutable=["intermediates"],
        )
        block = state["intermediates"]["layer2_0"]
        assert block[stride_conv]["__call__"][0].shape[1] == 8  # 16 -> 8 at this conv
    assert "layer0" in variables["params"] and "last_linear" in variables["params"]


class _Doubler(nn.Module):
    """A stand-in attention module: multiplies by a learnable per-channel gate (starts at 2)."""

    @nn.compact
    def __call__(self, x):
        gate = self.param("gate", lambda k, s: jnp.full(s, 2.0), (x.shape[-1],))
        self.sow("intermediates", "seen", x.shape)
        return x * gate[None, None, None, :]


@pytest.mark.parametrize("position", ATTENTION_POSITIONS)
@pytest.mark.parametrize(
    "block,layout",
    [
        ("basic", "cifar"),  # every position on the basic block in the default tier, the bottlenecks in the slow one
        pytest.param("bottleneck", "torchvision", marks=pytest.mark.slow),
        pytest.param("preact_bottleneck", "preact", marks=pytest.mark.slow),
    ],
)
def test_attention_hook_positions(position, block, layout):
    model = ResNet((1, 2), block=block, layout=layout, widths=(16, 32) if block == "basic" else (64, 128),
                   num_classes=3, attention=_Doubler, attention_position=position, attention_stages=(2,))  # fmt: skip
    plain = model.clone(attention=None)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    # Only stage 2's units have the module; removing the gates gives the plain network's parameters.
    params = variables["params"]
    assert "attention" not in params["layer1_0"]
    assert set(params["layer2_0"]["attention"]) == {"gate"} and "attention" in params["layer2_1"]
    stripped = {**variables, "params": jax.tree_util.tree_map(lambda a: a, params)}
    for unit in ("layer2_0", "layer2_1"):
        stripped["params"][unit] = {k: v for k, v in params[unit].items() if k != "attention"}
    assert jax.tree_util.tree_structure(stripped) == jax.tree_util.tree_structure(plain.init(jax.random.PRNGKey(0), x))
    # A gate of 1 everywhere is the identity: the network equals the plain one.
    ones = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.ones_like(a) if any(getattr(k, "key", None) == "gate" for k in p) else a, variables
    )
    np.testing.assert_allclose(model.apply(ones, x), plain.apply(stripped, x), rtol=1e-5, atol=1e-5)
    # A gate of 2 changes the output, so the module really sits in the computation.
    assert not np.allclose(model.apply(variables, x), plain.apply(stripped, x), atol=1e-4)


def test_train_mode_updates_batch_stats_and_eval_uses_them():
    model = models.create_model("cifar_resnet20")
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3)) * 3 + 1
    variables = model.init(jax.random.PRNGKey(0), x)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (4, 10) and logits.dtype == jnp.float32
    before = variables["batch_stats"]["bn1"]["mean"]
    after = updates["batch_stats"]["bn1"]["mean"]
    assert not np.allclose(before, after)
    # Evaluation is deterministic and per-example (running statistics, not the batch's).
    full = model.apply(variables, x, train=False)
    np.testing.assert_allclose(model.apply(variables, x[:1], train=False), full[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("standard_dtype_promotion")  # Flax's BatchNorm mixes bf16 inputs with f32 statistics
def test_bfloat16_computes_in_bf16_with_float32_params():
    model = models.create_model("cifar_resnet20", dtype=jnp.bfloat16)
    x = jnp.ones((2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x))(variables))
    assert "conv_general_dilated" in jaxpr and "bf16[2,32,32,16]" in jaxpr
    logits, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.dtype == jnp.float32
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(state))


def test_registry_names_and_errors():
    names = models.list_models()
    for name in (
        "resnet18",
        "resnet50",
        "resnext50_32x4d",
        "legacy_resnet50",
        "cifar_resnet20",
        "cifar_preact_resnet164",
    ):
        assert name in names
    assert models.list_models("cifar_") == [n for n in names if "cifar_" in n]
    with pytest.raises(ValueError, match="Unknown model 'resnet51'.*resnet50"):
        models.create_model("resnet51")
    with pytest.raises(ValueError, match="Bad override for model 'resnet50'"):
        models.create_model("resnet50", colour="blue")


@pytest.mark.parametrize(
    "kwargs,shape,match",
    [
        ({"layout": "nchw"}, (1, 32, 32, 3), "Unknown layout 'nchw'"),
        ({"block": "wide"}, (1, 32, 32, 3), "Unknown block 'wide'"),
        ({"attention_position": "middle"}, (1, 32, 32, 3), "Unknown attention_position 'middle'"),
        ({"attention_stages": (4,)}, (1, 32, 32, 3), r"stage\(s\) \[4\].*stages 1..3"),
        ({}, (32, 32, 3), r"must be \[N, H, W, C\].*rank 3"),
        ({}, (1, 3, 32, 32), "32 channels.*takes 3"),
        ({}, (1, 2, 2, 3), "too small"),
    ],
)
def test_bad_configuration_and_input(kwargs, shape, match):
    model = ResNet((1, 1, 1), **{"block": "basic", "layout": "cifar", "num_classes": 3, **kwargs})
    with pytest.raises(ValueError, match=match):
        model.init(jax.random.PRNGKey(0), jnp.zeros(shape))


def test_integer_images_rejected():
    model = models.create_model("cifar_resnet20")
    with pytest.raises(TypeError, match="floating point"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))


def test_wrong_image_size_for_initialised_network():
    model = models.create_model("cifar_resnet20")
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="1 channels"):
        model.apply(variables, jnp.zeros((1, 32, 32, 1)))


# ----------------------------------------------------------------------------------------------------------
# Weight import


def _random_state_dict(name, seed=0):
    """A state dict with the network's keys and random values (no torch needed): built from our own template."""
    model = models.create_model(name)
    template = _variables(model, models.input_size(name))
    rng = np.random.default_rng(seed)
    flat = {}
    import flax

    for path, leaf in flax.traverse_util.flatten_dict(template).items():
        shape = weights._torch_shape(leaf.shape)
        flat[weights.torch_name(path)] = rng.normal(size=shape).astype(np.float32)
    return flat


def test_state_dict_round_trip_without_torch():
    sd = _random_state_dict("cifar_resnet20")
    sd["bn1.num_batches_tracked"] = np.array(5)
    variables = weights.from_torch_state_dict("cifar_resnet20", sd)
    assert variables["params"]["layer2_0"]["conv1"]["kernel"].shape == (3, 3, 16, 32)
    np.testing.assert_array_equal(
        variables["params"]["layer2_0"]["conv1"]["kernel"], sd["layer2.0.conv1.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], sd["fc.weight"].T)
    np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["var"], sd["bn1.running_var"])
    # And back: to_torch_state_dict is the inverse (every key, layout and value).
    back = weights.to_torch_state_dict(variables)
    assert set(back) == set(sd) - {"bn1.num_batches_tracked"}
    for key, value in back.items():
        np.testing.assert_array_equal(value, sd[key])


def test_state_dict_errors_name_every_tensor():
    sd = _random_state_dict("cifar_resnet20")
    del sd["layer1.0.conv1.weight"], sd["bn1.running_mean"]
    sd["layer9.0.conv1.weight"] = np.zeros((1,))
    sd["fc.weight"] = np.zeros((5, 64), np.float32)
    with pytest.raises(weights.StateDictMismatchError) as error:
        weights.from_torch_state_dict("cifar_resnet20", sd)
    message = str(error.value)
    assert "2 missing: bn1.running_mean; layer1.0.conv1.weight" in message
    assert "1 unexpected: layer9.0.conv1.weight" in message
    assert "fc.weight: got (5, 64), the network needs (10, 64)" in message


def test_unknown_model_for_import():
    with pytest.raises(ValueError, match="Unknown model"):
        weights.from_torch_state_dict("resnet5", {})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_timm_logits_after_import_torch(name):
    assert_timm_logits_match(name)


def test_timm_logits_at_64_pixels_torch():
    """The default run's stand-in for the 224-pixel comparisons above (slow tier): the same weight import and
    logits check for ResNet-50 at 64x64 (every layer, every stride, a 2x2 final map)."""
    assert_timm_logits_match("resnet50", size=64)


@pytest.mark.parametrize("block", ["basic", "bottleneck", "preact_bottleneck"])
def test_pre_position_leaves_the_identity_path_alone(block):
    """SE-PRE recalibrates the residual branch's input only: with a gate of 0 there, the branch sees zeros and the
    output still passes x through the identity (d out / d x is 0 or 1 per element, and often 1)."""

    class Zero(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x * 0.0

    from visattn_jax.resnet import _BLOCKS

    width = 16 if block == "basic" else 64
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, width))
    block_module = _BLOCKS[block](features=width, attention=Zero, attention_position="pre")
    block_vars = block_module.init(jax.random.PRNGKey(2), x)
    tangent = jax.random.normal(jax.random.PRNGKey(3), x.shape)
    _, out_dot = jax.jvp(lambda v: block_module.apply(block_vars, v), (x,), (tangent,))
    ratio = np.asarray(out_dot / tangent)
    assert np.all(np.isclose(ratio, 0.0, atol=1e-5) | np.isclose(ratio, 1.0, atol=1e-5))
    assert np.mean(np.isclose(ratio, 1.0, atol=1e-5)) > 0.2
