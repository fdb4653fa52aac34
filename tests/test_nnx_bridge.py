"""Flax NNX users adopt the Linen modules through ``flax.nnx.bridge.ToNNX`` without a rewrite: an STN, an
SE-ResNet and RAM, wrapped, give Linen's outputs, BatchNorm updates and gradients for the same variables (the
recipe of docs/nnx.md, which runs these same calls)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

nnx = pytest.importorskip("flax.nnx")

from visattn_jax import models  # noqa: E402
from visattn_jax.ram import RAM  # noqa: E402
from visattn_jax.stn import stn_classifier  # noqa: E402


def to_nnx(linen_module, variables, *args, **kwargs):
    """``linen_module`` as an NNX module holding ``variables`` (e.g. weights trained or imported with Linen)."""
    module = nnx.bridge.ToNNX(linen_module, rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(module, *args, **kwargs)  # creates the variables from the input's shapes
    nnx.update(module, nnx.bridge.variables.linen_vars_to_nnx_attrs(variables))
    return module


def _params(state) -> dict:
    """An NNX parameter State in Linen's layout ({module: {name: array}}): the bridge keeps Linen's names."""
    return nnx.to_pure_dict(state)


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_stn_classifier_through_nnx_equals_linen():
    x = _images((2, 42, 42, 1))
    linen = stn_classifier("st_cnn", transform="affine", input_size=42, st_output_size=21)
    variables = linen.init(jax.random.key(0), x)
    module = to_nnx(linen, variables, x)
    chex.assert_trees_all_equal(module(x), linen.apply(variables, x))

    grads = nnx.grad(lambda m: m(x).sum())(module)
    expected = jax.grad(lambda p: linen.apply({"params": p}, x).sum())(variables["params"])
    chex.assert_trees_all_close(_params(grads), expected, rtol=1e-5, atol=1e-6)


def test_se_resnet_through_nnx_equals_linen_in_both_modes():
    x = _images((4, 32, 32, 3), seed=1)
    linen = models.create_model("cifar_se_resnet20")
    variables = linen.init(jax.random.key(0), x, train=False)
    module = to_nnx(linen, variables, x, train=False)
    chex.assert_trees_all_equal(module(x, train=False), linen.apply(variables, x, train=False))

    # Training mode: the wrapped module updates its BatchStat variables in place, as Linen returns them.
    logits, updates = linen.apply(variables, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_equal(module(x, train=True, mutable=["batch_stats"]), logits)
    chex.assert_trees_all_equal(nnx.to_pure_dict(nnx.state(module, nnx.BatchStat)), updates["batch_stats"])


def test_se_resnet_sgd_step_in_nnx_equals_linen():
    """One optax step from NNX (nnx.Optimizer, nnx.jit) lands on Linen's parameters."""
    x, labels = _images((4, 32, 32, 3), seed=2), jnp.array([0, 1, 2, 3])
    linen = models.create_model("cifar_se_resnet20")
    variables = linen.init(jax.random.key(0), x, train=False)
    tx = optax.sgd(0.1, momentum=0.9)

    def linen_loss(params):
        logits = linen.apply({**variables, "params": params}, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.grad(linen_loss)(variables["params"])
    updates, _ = tx.update(grads, tx.init(variables["params"]), variables["params"])
    expected = optax.apply_updates(variables["params"], updates)

    module = to_nnx(linen, variables, x, train=False)
    optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)

    @nnx.jit
    def step(module, optimizer):
        loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x, train=False), labels).mean()
        optimizer.update(module, nnx.grad(loss)(module))

    step(module, optimizer)
    chex.assert_trees_all_close(_params(nnx.state(module, nnx.Param)), expected, rtol=1e-5, atol=1e-6)


def test_ram_through_nnx_equals_linen_with_an_explicit_key():
    x = _images((2, 60, 60, 1), seed=3)
    linen = RAM(num_glimpses=4, glimpse_size=8, num_scales=2)
    variables = linen.init(jax.random.key(0), x, jax.random.key(1))
    module = to_nnx(linen, variables, x, jax.random.key(1))
    expected = linen.apply(variables, x, jax.random.key(2))  # the policy's key is an argument in both APIs
    chex.assert_trees_all_equal(module(x, jax.random.key(2)), expected)
    chex.assert_trees_all_close(nnx.jit(lambda m, x, key: m(x, key))(module, x, jax.random.key(2)), expected, atol=1e-5)
