"""The training core: configs end to end on mock data, exact resume, multi-device equivalence, failures."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from experiments.configs import ram_mnist, stn_mnist
from visattn_jax import models, train

pytestmark = pytest.mark.usefixtures("standard_dtype_promotion")

ALL_CELLS = [
    f"{model},{transform},{distortion},{budget}"
    for model, transforms in (
        ("cnn", ["none"]),
        ("fcn", ["none"]),
        ("st_cnn", ["affine", "projective", "tps"]),
        ("st_fcn", ["affine", "projective", "tps"]),
    )
    for transform in transforms
    for distortion in stn_mnist.DISTORTIONS
    for budget in ("cpu", "paper")
]
# One training step end to end for a subset that covers every model, transform and distortion once.
SMOKE_CELLS = [
    "cnn,none,R",
    "fcn,none,RTS",
    "st_cnn,affine,P",
    "st_fcn,projective,E",
    "st_cnn,tps,TC60",
    "st_cnn,attention,RTS",
    "quickstart",
]


def _smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config.num_steps = 1
    config.batch_size = 8
    config.train_limit = 64
    config.test_limit = 16
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 0
    config.progress = False
    return config


RAM_CELLS = [
    f"{task},{model},{glimpses},{budget}"
    for task in ram_mnist.TASKS
    for model, glimpses in (
        ("ram", 4),
        ("ram", 6),
        ("ram", 8),
        ("ram_random", 6),
        ("fc", 1),
        ("conv", 1),
        ("conv_paper", 1),
    )
    for budget in ("cpu", "paper")
]
RAM_SMOKE_CELLS = [
    "mnist28,ram,2",
    "translated60,ram_random,2",
    "cluttered60,fc,1",
    "cluttered100,conv,1",
    "cluttered60,conv_paper,1",
    "cluttered60,ram,3",
]


@pytest.mark.parametrize("cell", RAM_CELLS)
def test_every_ram_config_builds(cell):
    config = ram_mnist.get_config(cell)
    assert config.num_steps > 0 and config.batch_size % 4 == 0
    assert config.model in models.list_models()  # every cell's model is a registry name


@pytest.mark.parametrize("cell", ALL_CELLS + ["quickstart"])
def test_every_config_builds(cell):
    config = stn_mnist.get_config(cell)
    assert config.num_steps > 0 and config.batch_size % 4 == 0
    model, _ = train.build_model(config)
    assert (model.transformer is not None) == config.model.startswith("st_")


# The default run keeps one cell of each kind (the quickstart's ST-CNN, a RAM episode, a conv baseline on
# clutter); every other cell runs in the slow tier (``-m slow``).
FAST_SMOKE_CELLS = {"quickstart", "mnist28,ram,2", "cluttered60,conv_paper,1"}


def _smoke_params(cells):
    return [
        pytest.param(configs, cell, marks=() if cell in FAST_SMOKE_CELLS else pytest.mark.slow)
        for configs, cell in cells
    ]


@pytest.mark.parametrize(
    "configs,cell",
    _smoke_params([(stn_mnist, cell) for cell in SMOKE_CELLS] + [(ram_mnist, cell) for cell in RAM_SMOKE_CELLS]),
    ids=lambda x: x if isinstance(x, str) else x.__name__.rsplit(".", 1)[-1],
)
def test_config_trains_one_step_on_mock_data(configs, cell, tmp_path):
    config = _smoke(configs.get_config(cell))
    with tfds.testing.mock_data(num_examples=64):
        summary = train.train_and_evaluate(config, tmp_path)
    assert summary["final"]["count"] == 16
    assert 0.0 <= summary["final"]["error_percent"] <= 100.0
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 1
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") >= 2
    # Every run draws its training curve and misclassified images; the attention figure is the model's own.
    assert (tmp_path / "training_curve.png").exists() and (tmp_path / "misclassified.png").exists()
    figure = {"st_cnn": "stn_figure.png", "st_fcn": "stn_figure.png", "ram": "ram_figure.png"}
    figure["ram_random"] = "ram_figure.png"
    expected = figure.get(config.model)
    assert summary.get("attention_figure") == (str(tmp_path / expected) if expected else None)
    assert (tmp_path / "stn_figure.png").exists() == (expected == "stn_figure.png")


@pytest.mark.parametrize(
    "config_file,cell,model,figure",
    [
        # An SE network and a CBAM network on the RAM paper's cluttered canvases; RAM on CIFAR-100's images.
        (ram_mnist, "cluttered60,conv,1", "cifar_se_resnet20", "excitations.png"),
        (ram_mnist, "cluttered60,conv,1", "cifar_cbam_resnet20", "excitations.png"),
        pytest.param("cifar", "resnet20,cpu3,cifar100", "ram", "ram_figure.png", marks=pytest.mark.slow),
        # A spatial transformer classifier on natural images, and a Residual Attention network on digits.
        ("cifar", "resnet20,cpu3,cifar100", "st_cnn", "stn_figure.png"),
        pytest.param(stn_mnist, "cnn,none,RTS", "cifar_attention56", "attention_masks.png", marks=pytest.mark.slow),
    ],
    ids=["se_on_cluttered", "cbam_on_cluttered", "ram_on_cifar100", "st_cnn_on_cifar100", "attention56_on_rts"],
)
def test_any_registered_model_trains_on_any_dataset(config_file, cell, model, figure, tmp_path):
    """One path from config to run: swapping ``config.model`` is all it takes to train another family on another
    family's data (no entry-point branch knows either); the model's own objective and figure come along."""
    if config_file == "cifar":
        from experiments.configs import cifar as config_file
    config = _smoke(config_file.get_config(cell))
    config.model = model
    for field in ("num_epochs", "warmup_epochs"):
        if field in config:
            config[field] = 0.0
    if "decay_epochs" in config:
        config.decay_epochs = ()
    config.cifar10_dir = None
    with tfds.testing.mock_data(num_examples=64):
        summary = train.train_and_evaluate(config, tmp_path)
    assert summary["final"]["count"] == 16 and summary["steps"] == 1
    assert summary["attention_figure"] == str(tmp_path / figure)
    assert (tmp_path / figure).exists() and (tmp_path / "misclassified.png").exists()


def test_a_config_error_names_the_model_option_or_the_dataset(tmp_path):
    """Options a model does not take are a clear error, and so is a distortion on natural images."""
    config = _smoke(stn_mnist.get_config("cnn,none,RTS"))
    config.model_overrides = ml_collections.ConfigDict({"se": {"reduction": 4}})
    with pytest.raises(train.ConfigError, match="Bad override for model 'stn_cnn'"):
        train.build_task(config, shapes_only=True)
    from experiments.configs import cifar

    config = cifar.get_config("resnet20,cpu")
    config.distortion = "rts"
    with pytest.raises(train.ConfigError, match="distortion 'rts' is for MNIST digits"):
        train.build_task(config, shapes_only=True)
    config = _smoke(ram_mnist.get_config("cluttered60,ram,2"))
    config.label_smoothing = 0.1
    with pytest.raises(train.ConfigError, match="RAM's hybrid loss has no label smoothing"):
        train.build_task(config, shapes_only=True)
    config.label_smoothing = 0.0
    config.model = "ram_fcn"
    with pytest.raises(train.ConfigError, match="Unknown model 'ram_fcn'.*ram_fc"):
        train.build_task(config, shapes_only=True)


def _toy_task(batch_size=8, nan_at=None, trace_guard=False):
    """A tiny linear classifier on random data: fast to compile, enough to test the loop."""
    rng = np.random.default_rng(0)
    data_x = jnp.asarray(rng.normal(size=(64, 5)).astype(np.float32))
    data_y = jnp.asarray(rng.integers(0, 3, 64).astype(np.int32))

    def init(key):
        return {"w": jax.random.normal(key, (5, 3)) * 0.1, "b": jnp.zeros(3)}, {}

    def train_batch(key, step, data):
        index = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, 64)
        return {"x": data["x"][index], "y": data["y"][index]}

    def loss_fn(params, model_state, batch, key):
        noise = jax.random.normal(key, ()) * 1e-3  # uses the key: resume must reproduce it too
        logits = batch["x"] @ params["w"] + params["b"][None]
        loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], 1)) + noise
        if nan_at is not None:
            loss = loss * jnp.where(params["b"][0] > nan_at, jnp.nan, 1.0)
        return loss, ({}, model_state)

    if trace_guard:
        loss_fn = chex.assert_max_traces(loss_fn, n=1)

    def eval_fn(params, model_state, batch):
        logits = batch["x"] @ params["w"] + params["b"][None]
        return {
            "correct": jnp.sum((jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32)),
            "count": jnp.asarray(batch["y"].shape[0], jnp.float32),
        }

    # The second evaluation batch (6) does not divide over 4 devices: it must be replicated, not fail.
    batches = [
        {"x": np.asarray(data_x[:32]), "y": np.asarray(data_y[:32])},
        {"x": np.asarray(data_x[32:38]), "y": np.asarray(data_y[32:38])},
    ]
    summarize = lambda t: {"accuracy": t["correct"] / t["count"]}  # noqa: E731
    return train.Task(init, train_batch, loss_fn, eval_fn, batches, summarize, train_data={"x": data_x, "y": data_y})


def _config(num_steps, **overrides):
    config = ml_collections.ConfigDict(
        dict(
            seed=0,
            num_steps=num_steps,
            batch_size=8,
            log_every=1,
            eval_every=0,
            checkpoint_every=0,
            num_devices=None,
            optimizer="momentum",
            learning_rate=0.1,
            momentum=0.9,
            schedule="constant",
            decay_steps=0,
            decay_factor=1.0,
            grad_clip_norm=0.0,
            weight_decay=0.0,
        )
    )
    config.update(overrides)
    return config


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    full, _ = train.fit(_toy_task(), _config(6), tmp_path / "full", progress=False)
    train.fit(_toy_task(), _config(3, checkpoint_every=3), tmp_path / "split", progress=False)  # "interrupted"
    resumed, summary = train.fit(_toy_task(), _config(6), tmp_path / "split", progress=False)
    assert summary["steps_this_run"] == 3
    assert int(resumed.step) == 6
    chex.assert_trees_all_equal(jax.device_get(full.params), jax.device_get(resumed.params))
    chex.assert_trees_all_equal(jax.device_get(full.opt_state), jax.device_get(resumed.opt_state))


def test_data_parallel_matches_a_single_device(tmp_path):
    assert jax.device_count() == 4, "tests/conftest.py asks XLA for 4 host devices"
    one, _ = train.fit(_toy_task(), _config(5, num_devices=1), tmp_path / "one", progress=False)
    four, summary = train.fit(_toy_task(), _config(5, num_devices=4), tmp_path / "four", progress=False)
    assert summary["devices"] == 4
    chex.assert_trees_all_close(jax.device_get(one.params), jax.device_get(four.params), atol=1e-6)
    assert len(four.params["w"].sharding.device_set) == 4  # replicated over the mesh


def test_stn_step_is_the_same_on_one_and_four_devices(tmp_path):
    config = _smoke(stn_mnist.get_config("st_cnn,affine,RTS"))
    config.num_steps, config.figure = 2, False
    results = []
    for devices in (1, 4):
        config.num_devices = devices
        with tfds.testing.mock_data(num_examples=64):
            results.append(train.train_and_evaluate(config, tmp_path / str(devices))["final"]["loss"])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4)


def test_no_recompilation_across_steps(tmp_path):
    train.fit(_toy_task(trace_guard=True), _config(5), tmp_path, progress=False)


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    with pytest.raises(FloatingPointError, match=r"diverged at step"):
        train.fit(_toy_task(nan_at=-1.0), _config(3), tmp_path, progress=False)


def test_batch_must_divide_over_devices(tmp_path):
    with pytest.raises(ValueError, match=r"divisible by the 4 devices"):
        train.fit(_toy_task(batch_size=6), _config(1, batch_size=6), tmp_path, progress=False)


def test_step_schedule_decays_by_the_factor():
    config = _config(30, optimizer="sgd", schedule="step", decay_steps=10, decay_factor=0.1, learning_rate=1.0)
    tx = train.make_optimizer(config)
    params = {"p": jnp.zeros(())}
    state = tx.init(params)
    steps = []
    for _ in range(25):
        updates, state = tx.update({"p": jnp.ones(())}, state, params)
        steps.append(-float(updates["p"]))
    np.testing.assert_allclose(steps[0], 1.0)
    np.testing.assert_allclose(steps[10], 0.1, rtol=1e-6)
    np.testing.assert_allclose(steps[20], 0.01, rtol=1e-6)


def test_unknown_optimizer_and_schedule():
    with pytest.raises(ValueError, match="Unknown optimizer"):
        train.make_optimizer(_config(1, optimizer="lion"))
    with pytest.raises(ValueError, match="Unknown schedule"):
        train.make_optimizer(_config(1, schedule="warmup"))


def test_restore_params_returns_the_final_parameters(tmp_path):
    state, _ = train.fit(_toy_task(), _config(3), tmp_path, progress=False)
    chex.assert_trees_all_equal(train.restore_params(tmp_path), jax.device_get(state.params))
    with pytest.raises(FileNotFoundError, match="No checkpoints"):
        train.restore_params(tmp_path / "elsewhere")


def _logged_steps(workdir):
    return [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_rerunning_a_finished_run_keeps_its_record(tmp_path):
    _, first = train.fit(_toy_task(), _config(4), tmp_path, progress=False)
    (tmp_path / "summary.json").write_text(json.dumps(first))  # as train_and_evaluate writes it
    log = (tmp_path / "metrics.jsonl").read_text()
    _, again = train.fit(_toy_task(), _config(4), tmp_path, progress=False)
    assert first["train_images_per_second"] is not None
    for key in ("final", "history", "steps", "steps_this_run", "wall_seconds_this_run", "train_images_per_second"):
        assert again[key] == first[key], key
    assert (tmp_path / "metrics.jsonl").read_text() == log  # no second final evaluation appended


def test_resume_logs_each_step_once_and_keeps_the_history(tmp_path):
    import shutil

    config = _config(4, checkpoint_every=2, eval_every=1)
    train.fit(_toy_task(), config, tmp_path, progress=False)
    shutil.rmtree(tmp_path / "checkpoints" / "4")  # as if the process died after logging steps 3 and 4 ...
    with open(tmp_path / "metrics.jsonl", "a") as log:
        log.write('{"step": 5, "loss": 0.1')  # ... in the middle of a line
    _, summary = train.fit(_toy_task(), _config(5, checkpoint_every=2, eval_every=1), tmp_path, progress=False)
    assert summary["steps_this_run"] == 3
    steps = _logged_steps(tmp_path)
    assert steps == sorted(steps) and steps.count(3) == 2 and steps.count(4) == 2  # train line + evaluation
    assert [h["step"] for h in summary["history"]] == [1, 2, 3, 4]  # the first run's evaluations kept


def _tensorboard_points(workdir, tag):
    """(step, value) of every scalar ``tag`` in the work folder's event files, read as TensorBoard reads them
    (TFRecord framing: length, its CRC, the Event proto, its CRC)."""
    import struct

    from tensorboardX.proto import event_pb2

    points = []
    for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            points += [(event.step, value.simple_value) for value in event.summary.value if value.tag == tag]
    return points


def test_resume_writes_each_step_once_to_tensorboard(tmp_path):
    """The steps repeated after a resume are not drawn twice: the event files hold each logged step once, with
    the values of metrics.jsonl (the first run's points up to the checkpoint, then the resumed run's)."""
    import shutil

    train.fit(_toy_task(), _config(4, checkpoint_every=2), tmp_path, progress=False)
    shutil.rmtree(tmp_path / "checkpoints" / "4")  # as if the process died after logging steps 3 and 4
    assert [step for step, _ in _tensorboard_points(tmp_path, "loss")] == [1, 2, 3, 4]
    train.fit(_toy_task(), _config(5, checkpoint_every=2), tmp_path, progress=False)
    points = _tensorboard_points(tmp_path, "loss")
    assert [step for step, _ in points] == [1, 2, 3, 4, 5]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    expected = [(record["step"], record["loss"]) for record in logged if "loss" in record]
    np.testing.assert_allclose(points, expected, rtol=1e-6)


def test_an_empty_test_set_is_a_clear_error(tmp_path):
    task = _toy_task()._replace(eval_batches=[])
    with pytest.raises(ValueError, match="no evaluation batches"):
        train.fit(task, _config(1), tmp_path, progress=False)


def test_throughput_excludes_compilation_and_needs_two_steps(tmp_path):
    _, one = train.fit(_toy_task(), _config(1), tmp_path / "one", progress=False)
    _, three = train.fit(_toy_task(), _config(3, log_every=3), tmp_path / "three", progress=False)
    assert one["train_images_per_second"] is None
    assert three["train_images_per_second"] > 0


def test_gradient_clipping_scales_the_gradient_before_weight_decay():
    """grad_clip_norm clips the global norm of the gradient alone (then the coupled decay is added): a
    gradient of norm 10 clipped to 1 plus 0.1 * params; a gradient under the threshold passes unchanged."""
    config = _config(1, optimizer="sgd", learning_rate=1.0, grad_clip_norm=1.0, weight_decay=0.1)
    tx = train.make_optimizer(config)
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    state = tx.init(params)
    big = {"a": jnp.array([6.0, 0.0]), "b": jnp.array(8.0)}  # global norm 10
    updates, state = tx.update(big, state, params)
    np.testing.assert_allclose(updates["a"], -(np.array([0.6, 0.0]) + 0.1 * np.array([1.0, 2.0])), rtol=1e-6)
    np.testing.assert_allclose(updates["b"], -(0.8 + 0.3), rtol=1e-6)
    small = {"a": jnp.array([0.3, 0.0]), "b": jnp.array(0.4)}  # norm 0.5
    updates, _ = tx.update(small, state, params)
    np.testing.assert_allclose(updates["a"], -(np.array([0.3, 0.0]) + 0.1 * np.array([1.0, 2.0])), rtol=1e-6)


def test_fit_clips_gradients_and_logs_the_norm_before_clipping(tmp_path):
    """Through the loop: with a threshold far below the gradient norm, one SGD step moves the parameters by
    exactly lr * threshold (global norm), and the logged grad_norm is the unclipped one."""
    init, _ = _toy_task().init(jax.random.split(jax.random.PRNGKey(0))[0])
    state, _ = train.fit(_toy_task(), _config(1, optimizer="sgd", grad_clip_norm=1e-3), tmp_path, progress=False)
    moved = float(optax.tree.norm(jax.tree_util.tree_map(jnp.subtract, jax.device_get(state.params), init)))
    np.testing.assert_allclose(moved, 0.1 * 1e-3, rtol=1e-4)
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["grad_norm"]
    assert logged > 0.05  # the toy problem's gradient at initialisation, far above the threshold


def test_ema_is_the_exact_exponential_average_of_the_parameter_path(tmp_path):
    """ema_0 = the initial parameters, ema_t = d * ema_{t-1} + (1 - d) * params_t: rebuilt from the
    parameters after 1, 2, 3 and 4 steps of separate (deterministic) runs, the loop's EMA after 4 steps
    matches; and evaluation uses it."""
    decay = 0.6
    path = [jax.device_get(_toy_task().init(jax.random.split(jax.random.PRNGKey(0))[0])[0])]
    for steps in range(1, 5):
        state, _ = train.fit(_toy_task(), _config(steps), tmp_path / str(steps), progress=False)
        path.append(jax.device_get(state.params))
    state, _ = train.fit(_toy_task(), _config(4, ema_decay=decay), tmp_path / "ema", progress=False)
    chex.assert_trees_all_close(jax.device_get(state.params), path[-1], rtol=1e-6)  # EMA does not change training
    expected = path[0]
    for params in path[1:]:
        expected = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, expected, params)
    chex.assert_trees_all_close(jax.device_get(state.ema_params), expected, rtol=1e-5, atol=1e-7)
    assert state.eval_params is state.ema_params


def test_summary_records_the_code_version_date_and_libraries(tmp_path):
    """Provenance: each invocation's commit (git describe), UTC date and library versions, kept across a
    resume (two invocations, the second starting from the checkpoint at step 2)."""
    from importlib import metadata

    train.fit(_toy_task(), _config(2, checkpoint_every=2), tmp_path, progress=False)
    _, summary = train.fit(_toy_task(), _config(4), tmp_path, progress=False)
    record = summary["provenance"]
    assert record["jax"] == jax.__version__ and record["optax"] == metadata.version("optax")
    assert record["flax"] == metadata.version("flax") and record["python"]
    assert record["date"].endswith("+00:00") and record["date"][:2] == "20"
    assert record["commit"] is None or len(record["commit"]) >= 7  # None only outside a git checkout
    assert [r["start_step"] for r in summary["invocations"]] == [0, 2]
    json.dumps(summary)  # serialisable as summary.json


def test_the_digit_models_are_in_the_registry_with_their_known_sizes():
    """The STN and RAM papers' models by name, at their registered canvases (28x28 STN digits, 60x60 RAM canvases):
    the counts the experiments README reports (CNN 68,522 and FCN 68,182 on 28x28; RAM 209,677 with an 8x8
    one-scale retina; the RAM paper's conv baseline 251,442 and ours 3,741,322 on 60x60)."""
    counts = {"stn_cnn": 68_522, "stn_fcn": 68_182, "ram": 209_677, "ram_conv_paper": 251_442, "ram_conv": 3_741_322}
    for name, count in counts.items():
        assert models.num_params(name) == count, name
    assert models.model_info("ram").objective().loss.__qualname__.startswith("reinforce_objective")
    assert models.model_info("st_cnn").figure.__name__ == "transformer_figure"
    assert models.model_info("stn_cnn").figure is None
