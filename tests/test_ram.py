"""RAM: the glimpse sensor's geometry, the episode, the estimator and the hybrid loss's gradient flow."""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import visattn_jax as va
from visattn_jax import ram, reinforce


def _image(h=20, w=24, c=1, seed=0):
    return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


def test_glimpse_at_the_centre_reads_the_centre_pixels():
    image = np.arange(60 * 60, dtype=np.float32).reshape(60, 60, 1)
    patch = np.asarray(ram.glimpse_sensor(image, jnp.zeros(2), size=4, num_scales=1))[0, ..., 0]
    np.testing.assert_array_equal(patch, image[28:32, 28:32, 0])


def test_glimpse_at_the_top_left_corner_is_half_outside():
    image = _image(16, 16) + 1.0
    patch = np.asarray(ram.glimpse_sensor(image, jnp.array([-1.0, -1.0]), size=4, num_scales=1))[0, ..., 0]
    np.testing.assert_allclose(patch[2:, 2:], image[:2, :2, 0], atol=1e-6)
    np.testing.assert_array_equal(patch[:2], 0.0)
    np.testing.assert_array_equal(patch[:, :2], 0.0)


def test_scales_double_in_width():
    """On a linear ramp, bilinear samples at the centres of 2^k-pixel cells equal the cells' means."""
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float32)
    ramp = (3 * xs + 5 * ys)[..., None]
    location = jnp.array([2.0 / 32, 2.0 / 32])  # centre on a pixel corner: pixel 16.5 -> cells align
    patches = np.asarray(ram.glimpse_sensor(ramp, location, size=4, num_scales=3))[..., 0]
    for k in range(3):
        width = 4 * 2**k
        top = 17 - width // 2
        block = ramp[top : top + width, top : top + width, 0].reshape(4, 2**k, 4, 2**k).mean((1, 3))
        np.testing.assert_allclose(patches[k], block, rtol=1e-5)


def test_antialias_averages_every_pixel_of_each_cell():
    image = _image(32, 32, seed=1)
    location = jnp.array([2.0 / 32, 2.0 / 32])
    patches = np.asarray(ram.glimpse_sensor(image, location, size=4, num_scales=3, antialias=True))[..., 0]
    for k in range(3):
        width = 4 * 2**k
        top = 17 - width // 2
        block = image[top : top + width, top : top + width, 0].reshape(4, 2**k, 4, 2**k).mean((1, 3))
        np.testing.assert_allclose(patches[k], block, atol=1e-6)
    plain = np.asarray(ram.glimpse_sensor(image, location, size=4, num_scales=3))[..., 0]
    assert not np.allclose(plain[2], patches[2], atol=1e-3)  # the coarse scale really differs (less aliasing)


def test_glimpse_matches_bilinear_sample_on_the_same_points():
    image = _image(23, 29, 2, seed=2)
    location = jnp.array([0.31, -0.47])
    patches = ram.glimpse_sensor(image, location, size=5, num_scales=2)
    for k in range(2):
        half = 5 * 2**k / np.array([29, 23])
        xs = location[0] + va.base_coords(5) * half[0]
        ys = location[1] + va.base_coords(5) * half[1]
        grid = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1)
        np.testing.assert_allclose(np.asarray(patches[k]), np.asarray(va.bilinear_sample(image, grid)), atol=1e-5)


@pytest.mark.parametrize("antialias", [False, True])
def test_gather_and_matmul_retinas_agree(antialias):
    image = _image(37, 30, 2, seed=4)
    for location in ([0.0, 0.0], [-1.0, 1.0], [0.73, -0.21], [1.4, -2.0], [np.nan, 0.5]):
        kwargs = dict(size=6, num_scales=3, antialias=antialias)
        location = jnp.asarray(location, jnp.float32)
        gather = ram.glimpse_sensor(image, location, method="gather", **kwargs)
        matmul = ram.glimpse_sensor(image, location, method="matmul", **kwargs)
        assert gather.shape == (3, 6, 6, 2)
        np.testing.assert_allclose(np.asarray(gather), np.asarray(matmul), atol=1e-6)


@pytest.mark.parametrize("method", ["gather", "matmul"])
def test_batched_jitted_glimpses_equal_a_python_loop(method):
    images = np.stack([_image(18, 22, 1, seed=s) for s in range(3)])
    locations = jnp.array([[0.1, -0.3], [-0.9, 0.95], [0.5, 0.5]])
    sensor = lambda im, loc: ram.glimpse_sensor(im, loc, size=5, num_scales=2, method=method)  # noqa: E731
    batched = jax.jit(jax.vmap(sensor))(images, locations)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(sensor(images[i], locations[i])), atol=1e-6)


def _primitives(fn, *args) -> set[str]:
    """The primitive names in ``fn``'s jaxpr, sub-jaxprs (pjit, custom rules) included."""
    names = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


def test_auto_retina_is_the_matmul_form_on_tpu_and_gathers_elsewhere(monkeypatch):
    """The static choice from the backend (the TPU cost data is in resolve_sensor_method's docstring)."""
    image, location = _image(20, 20, 1, seed=5), jnp.array([0.2, -0.1])
    # A new function for each trace: make_jaxpr caches traces by function (and the choice is made while tracing).
    sensor = lambda: lambda im, loc: ram.glimpse_sensor(im, loc, size=4, num_scales=2)  # noqa: E731
    assert jax.default_backend() == "cpu"
    assert ram.resolve_sensor_method("auto") == "gather" and "gather" in _primitives(sensor(), image, location)
    assert ram.resolve_sensor_method("auto", backend="tpu") == "matmul"
    assert ram.resolve_sensor_method("gather", backend="tpu") == "gather"  # an explicit method is kept
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert ram.resolve_sensor_method("auto") == "matmul"
    assert "gather" not in _primitives(sensor(), image, location)
    np.testing.assert_allclose(
        np.asarray(sensor()(image, location)),
        np.asarray(ram.glimpse_sensor(image, location, size=4, num_scales=2, method="gather")),
        atol=1e-6,
    )


def test_glimpse_bad_input():
    with pytest.raises(ValueError, match=r"method must be one of \['auto', 'gather', 'matmul'\], got 'conv'"):
        ram.glimpse_sensor(_image(), jnp.zeros(2), size=4, num_scales=1, method="conv")
    with pytest.raises(ValueError, match=r"location must be \[2\]"):
        ram.glimpse_sensor(_image(), jnp.zeros((3, 2)), size=4, num_scales=1)
    with pytest.raises(ValueError, match=r"image must be \[H, W, C\]"):
        ram.glimpse_sensor(_image()[..., 0], jnp.zeros(2), size=4, num_scales=1)


def _model_and_params(**kwargs):
    model = ram.RAM(num_glimpses=4, glimpse_size=6, num_scales=2, hidden=32, **kwargs)
    x = jnp.asarray(np.random.default_rng(3).random((8, 24, 24, 1)).astype(np.float32))
    params = model.init(jax.random.PRNGKey(0), x, jax.random.PRNGKey(1))
    return model, params, x


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_episode_shapes_and_determinism(core):
    model, params, x = _model_and_params(core=core)
    out = model.apply(params, x, jax.random.PRNGKey(5))
    assert out["logits"].shape == (8, 10)
    assert out["log_probs"].shape == out["baselines"].shape == (8, 3)
    assert out["locations"].shape == out["means"].shape == (8, 4, 2)
    again = model.apply(params, x, jax.random.PRNGKey(5))
    other = model.apply(params, x, jax.random.PRNGKey(6))
    for name in out:
        np.testing.assert_array_equal(np.asarray(out[name]), np.asarray(again[name]))
    assert not np.allclose(np.asarray(out["locations"]), np.asarray(other["locations"]))


def test_locations_are_clipped_but_log_probs_are_of_the_unclipped_sample():
    model, params, x = _model_and_params(location_std=3.0)
    out = model.apply(params, x, jax.random.PRNGKey(7))
    locations = np.asarray(out["locations"])
    assert np.all(np.abs(locations) <= 1.0)
    assert np.mean(np.abs(locations[:, 1:]) == 1.0) > 0.3  # with std 3 many samples were clipped
    clipped_log_prob = reinforce.gaussian_log_prob(locations[:, 1:], out["means"][:, :-1], 3.0)
    assert not np.allclose(np.asarray(out["log_probs"]), np.asarray(clipped_log_prob))
    assert np.all(np.asarray(out["log_probs"]) <= np.asarray(clipped_log_prob) + 1e-5)  # unclipped: farther


def _grad_norms(model, params, x, loss_of_outputs):
    labels = jnp.arange(8) % 10

    def loss(p):
        return loss_of_outputs(model.apply(p, x, jax.random.PRNGKey(9)), labels)

    grads = jax.grad(loss)(params)["params"]
    step = grads["step"]
    groups = {
        "location": step["location"],
        "baseline": step["baseline"],
        "glimpse": step["glimpse"],
        "core": {k: v for k, v in step.items() if k.startswith("core")},
        "action": grads["action"],
    }
    return {
        name: float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree_util.tree_leaves(tree))) for name, tree in groups.items()
    }


def _cross_entropy(out, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out["logits"]), labels[:, None], 1))


def _reward(out, labels):
    return (jnp.argmax(out["logits"], -1) == labels).astype(jnp.float32)


def test_classification_loss_never_reaches_the_location_or_baseline_nets():
    model, params, x = _model_and_params()
    norms = _grad_norms(model, params, x, _cross_entropy)
    assert norms["location"] == 0.0 and norms["baseline"] == 0.0
    assert norms["glimpse"] > 0 and norms["core"] > 0 and norms["action"] > 0


def test_reinforce_reaches_only_the_location_net():
    model, params, x = _model_and_params()
    norms = _grad_norms(
        model,
        params,
        x,
        lambda out, labels: reinforce.reinforce_loss(out["log_probs"], _reward(out, labels) + 0.5, out["baselines"]),
    )
    assert norms["location"] > 0
    assert norms["baseline"] == norms["glimpse"] == norms["core"] == norms["action"] == 0.0


def test_baseline_loss_reaches_only_the_baseline_net():
    model, params, x = _model_and_params()
    norms = _grad_norms(
        model, params, x, lambda out, labels: reinforce.baseline_loss(out["baselines"], _reward(out, labels))
    )
    assert norms["baseline"] > 0
    assert norms["location"] == norms["glimpse"] == norms["core"] == norms["action"] == 0.0


def test_hybrid_loss_gives_the_location_net_exactly_the_reinforce_gradient():
    model, params, x = _model_and_params()
    labels = jnp.arange(8) % 10

    def grads_of(loss_of_outputs):
        return jax.grad(lambda p: loss_of_outputs(model.apply(p, x, jax.random.PRNGKey(9))))(params)

    hybrid = grads_of(lambda out: ram.ram_loss(out, labels)[0])
    policy = grads_of(lambda out: reinforce.reinforce_loss(out["log_probs"], _reward(out, labels), out["baselines"]))
    loc = lambda g: g["params"]["step"]["location"]  # noqa: E731
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), loc(hybrid), loc(policy))
    assert float(jnp.abs(loc(hybrid)["kernel"]).sum()) > 0


def test_random_glimpses_have_no_policy_gradient():
    model, params, x = _model_and_params(random_locations=True)
    out = model.apply(params, x, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(np.asarray(out["log_probs"]), 0.0)
    norms = _grad_norms(model, params, x, lambda out, labels: ram.ram_loss(out, labels)[0])
    assert norms["location"] == 0.0


@pytest.mark.parametrize("baseline", [None, 1.0])
def test_score_function_estimate_matches_the_closed_form(baseline):
    """d/dmu E_{x ~ N(mu, s^2)}[x^2] = 2 mu: the surrogate's gradient agrees within Monte Carlo error."""
    mu, std, n = 0.7, 0.5, 200_000
    key = jax.random.PRNGKey(0)

    def per_sample_surrogates(m):
        x = jax.lax.stop_gradient(m + std * jax.random.normal(key, (n, 1)))
        log_probs = reinforce.gaussian_log_prob(x, m * jnp.ones((n, 1)), std)[:, None]
        rewards = x[:, 0] ** 2
        baselines = None if baseline is None else jnp.full((n, 1), baseline)
        return log_probs, rewards, baselines

    def estimate(m):
        return -reinforce.reinforce_loss(*per_sample_surrogates(m))

    gradient = float(jax.grad(estimate)(mu))
    # Standard error from the per-sample terms: score (x - mu) / s^2 = z / s, times the advantage.
    z = np.asarray(jax.random.normal(key, (n, 1)))[:, 0]
    advantage = np.asarray(per_sample_surrogates(mu)[1]) - (0.0 if baseline is None else baseline)
    stderr = np.std(z / std * advantage) / np.sqrt(n)
    assert abs(gradient - 2 * mu) < 4 * stderr, (gradient, 2 * mu, stderr)


def test_reinforce_loss_bad_shapes():
    with pytest.raises(ValueError, match=r"log_probs must be \[N, T\]"):
        reinforce.reinforce_loss(jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match="baselines must match"):
        reinforce.reinforce_loss(jnp.zeros((4, 2)), jnp.zeros(4), jnp.zeros((4, 3)))


def test_gaussian_log_prob_closed_form():
    value = reinforce.gaussian_log_prob(jnp.array([[1.0, -1.0]]), jnp.zeros((1, 2)), 2.0)
    expected = 2 * (-0.5 * 0.25 - np.log(2.0) - 0.5 * np.log(2 * np.pi))
    np.testing.assert_allclose(np.asarray(value), [expected], rtol=1e-6)


def test_paper_conv_baseline_shape_and_size():
    """One 10x10 stride-5 conv of 8 filters -> 11 x 11 x 8 on 60x60, FC 256, logits: 251,442 parameters."""
    model = ram.ConvBaseline.paper()
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 60, 60, 1)))
    assert model.apply(params, jnp.zeros((3, 60, 60, 1))).shape == (3, 10)
    assert sum(np.size(p) for p in jax.tree_util.tree_leaves(params)) == 808 + 968 * 256 + 256 + 2570


@pytest.mark.parametrize(
    "labels,match",
    [
        (np.zeros((4, 10), np.int32), "argmax them first"),
        (np.zeros(3, np.int32), r"\[N\] = \[4\]"),
        (np.zeros(4), "integer"),
    ],
)
def test_ram_loss_names_wrong_labels(labels, match):
    outputs = {"logits": jnp.zeros((4, 10))}
    with pytest.raises(ValueError, match=match):
        ram.ram_loss(outputs, labels)


def test_ram_loss_value_and_gradients_against_numpy():
    """The hybrid loss on hand-made outputs, against an independent NumPy computation: cross-entropy +
    REINFORCE (reward 1 if correct, minus the baseline, summed over glimpses, averaged over images) + the
    baselines' squared error; and its gradients: -(R - b) / N to each log-probability, 2 (b - R) / (N T) to
    each baseline (the policy term treats the baseline as a constant)."""
    rng = np.random.default_rng(0)
    n, t, c = 6, 3, 4
    logits = rng.normal(size=(n, c)).astype(np.float32)
    labels = np.argmax(logits, -1).astype(np.int32)
    labels[::2] = (labels[::2] + 1) % c  # half right, half wrong
    log_probs = rng.normal(size=(n, t)).astype(np.float32)
    baselines = rng.uniform(size=(n, t)).astype(np.float32)
    outputs = {
        "logits": jnp.asarray(logits),
        "log_probs": jnp.asarray(log_probs),
        "baselines": jnp.asarray(baselines),
        "means": jnp.zeros((n, t, 2)),
    }
    shifted = logits - logits.max(1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    cross_entropy = -log_softmax[np.arange(n), labels].mean()
    reward = (np.argmax(logits, -1) == labels).astype(np.float32)
    policy = -np.mean(np.sum(log_probs * (reward[:, None] - baselines), 1))
    fit = np.mean((baselines - reward[:, None]) ** 2)
    loss, metrics = ram.ram_loss(outputs, jnp.asarray(labels))
    np.testing.assert_allclose(float(loss), cross_entropy + policy + fit, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["cross_entropy"]), cross_entropy, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["reinforce"]), policy, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["baseline_mse"]), fit, rtol=1e-6)
    assert float(metrics["reward"]) == reward.mean() == 0.5

    def total(log_probs, baselines):
        return ram.ram_loss({**outputs, "log_probs": log_probs, "baselines": baselines}, jnp.asarray(labels))[0]

    d_log_probs, d_baselines = jax.grad(total, argnums=(0, 1))(outputs["log_probs"], outputs["baselines"])
    np.testing.assert_allclose(d_log_probs, -(reward[:, None] - baselines) / n, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_baselines, 2 * (baselines - reward[:, None]) / (n * t), rtol=1e-5, atol=1e-7)
