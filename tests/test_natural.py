"""The natural-image core: CIFAR-10 data (TFDS or the offline copy), on-device input ops, BatchNorm state in the
training loop (resume, data parallel, mixed precision, EMA), schedules in epochs, ImageNet's host pipeline."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from experiments.configs import cifar, imagenet
from visattn_jax import train
from visattn_jax.data import DataUnavailableError
from visattn_jax.data import cifar as cifar_data
from visattn_jax.resnet import ResNet
from visattn_jax.train.classification import image_classification_task, stream_classification_task

pytestmark = pytest.mark.usefixtures("standard_dtype_promotion")
SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 files


def _write_npz(path, images, labels):
    np.savez(path, images=images, labels=labels)


def test_offline_loader_rejects_wrong_arrays(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 10_000).astype(np.int64)
    _write_npz(tmp_path / "test.npz", images, labels)
    with pytest.raises(DataUnavailableError, match="test images .* have SHA-256 .* not the genuine CIFAR-10"):
        cifar_data.load_offline_cifar10("test", tmp_path)
    _write_npz(tmp_path / "test.npz", images[:100], labels[:100])
    with pytest.raises(DataUnavailableError, match=r"uint8 \(10000, 32, 32, 3\)"):
        cifar_data.load_offline_cifar10("test", tmp_path)


def test_offline_loader_reports_missing_and_truncated_files(tmp_path):
    with pytest.raises(DataUnavailableError, match="train.npz does not exist"):
        cifar_data.load_offline_cifar10("train", tmp_path)
    _write_npz(tmp_path / "test.npz", np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int64))
    data = (tmp_path / "test.npz").read_bytes()
    (tmp_path / "test.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataUnavailableError, match="corrupt or incomplete"):
        cifar_data.load_offline_cifar10("test", tmp_path)
    with pytest.raises(ValueError, match="'train' and 'test'"):
        cifar_data.load_offline_cifar10("validation", tmp_path)


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="the offline CIFAR-10 copy is not beside the repository")
def test_genuine_offline_cifar10_test_split():
    images, labels = cifar_data.load_offline_cifar10("test", SHARED_CIFAR)
    assert images.shape == (10_000, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels[0] == 3  # the first test image is a cat
    assert np.bincount(labels).tolist() == [1000] * 10


def test_load_cifar10_through_tfds_mock(tmp_path, monkeypatch):
    monkeypatch.delenv("VISATTN_CIFAR10_DIR", raising=False)
    with tfds.testing.mock_data(num_examples=12):
        images, labels = cifar_data.load_cifar10("train", data_dir=tmp_path)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int32


def test_load_cifar10_error_lists_both_options(tmp_path, monkeypatch):
    def unavailable(*args, **kwargs):
        raise DataUnavailableError("no network")

    monkeypatch.setattr(cifar_data, "load_image_dataset", unavailable)
    monkeypatch.setattr(cifar_data, "_tfds_prepared", lambda name, data_dir: False)
    with pytest.raises(DataUnavailableError, match=r"(?s)TFDS download it.*cifar10_dir.*given: .*nowhere.*no network"):
        cifar_data.load_cifar10("test", data_dir=tmp_path, source_dir=tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------------------
# On-device input ops


def test_each_epoch_is_a_permutation_and_fixed_by_the_key():
    key = jax.random.PRNGKey(3)
    n, batch = 50, 8  # 6 steps per epoch; 2 examples left out each epoch
    steps = jax.jit(jax.vmap(lambda s: cifar_data.epoch_indices(key, s, n, batch)))(jnp.arange(12))
    for epoch in range(2):
        seen = np.asarray(steps[6 * epoch : 6 * epoch + 6]).ravel()
        assert len(set(seen.tolist())) == 48 and seen.max() < n  # no repeats inside an epoch
    assert not np.array_equal(steps[:6], steps[6:])  # a new order each epoch
    again = cifar_data.epoch_indices(key, jnp.asarray(7), n, batch)
    np.testing.assert_array_equal(again, steps[7])
    other = cifar_data.epoch_indices(jax.random.PRNGKey(4), jnp.asarray(7), n, batch)
    assert not np.array_equal(other, steps[7])
    with pytest.raises(ValueError, match="larger than the 5 examples"):
        cifar_data.epoch_indices(key, 0, 5, 8)


def test_pad_crop_flip_geometry():
    h = w = 8
    images = (jnp.arange(h * w, dtype=jnp.int32).reshape(1, h, w, 1) + 1).repeat(64, axis=0)  # unique, nonzero
    out = np.asarray(cifar_data.pad_crop_flip(jax.random.PRNGKey(0), images, padding=2))
    padded = np.pad(np.asarray(images[0, ..., 0]), 2)
    flips = 0
    for crop in out[..., 0]:
        matches = [
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            if np.array_equal(
                crop, (padded[dy : dy + h, dx : dx + w])[:, ::-1] if flip else padded[dy : dy + h, dx : dx + w]
            )
        ]
        assert len(matches) == 1  # every output is exactly one shifted window, maybe mirrored
        flips += matches[0][2]
    assert 16 < flips < 48  # flipped about half the time
    np.testing.assert_array_equal(out, cifar_data.pad_crop_flip(jax.random.PRNGKey(0), images, padding=2))
    same = cifar_data.pad_crop_flip(jax.random.PRNGKey(0), images, padding=0, flip=False)
    np.testing.assert_array_equal(same, images)


def test_normalize_per_channel():
    images = jnp.asarray([[[[0, 255, 51]]]], jnp.uint8)
    out = cifar_data.normalize(images, (0.5, 0.5, 0.2), (0.5, 0.25, 0.1))
    np.testing.assert_allclose(out[0, 0, 0], [-1.0, 2.0, 0.0], atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# BatchNorm models in the loop


def _tiny_model(**kw):
    return ResNet(
        (1, 1), **{"block": "basic", "layout": "cifar", "widths": (8, 16), "num_classes": 10, "stem_features": 8, **kw}
    )


def _tiny_task(n=64, model=None, **kw):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int32)
    return image_classification_task(
        model or _tiny_model(),
        train_images=images,
        train_labels=labels,
        test_images=images[:20],
        test_labels=labels[:20],
        batch_size=16,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        eval_batch_size=8,
        **kw,
    )


def _config(**overrides):
    config = ml_collections.ConfigDict(
        dict(
            seed=0, num_steps=4, batch_size=16, log_every=1, eval_every=0, checkpoint_every=0, num_devices=None,
            optimizer="nesterov", learning_rate=0.1, momentum=0.9, schedule="constant", decay_steps=0,
            decay_factor=1.0, grad_clip_norm=0.0, weight_decay=1e-4, weight_decay_mask="kernels", ema_decay=0.0,
        )
    )  # fmt: skip
    config.update(overrides)
    return config


def test_training_updates_batch_statistics(tmp_path):
    task = _tiny_task()
    params, state = task.init(jax.random.PRNGKey(0))
    trained, summary = train.fit(task, _config(), tmp_path, progress=False)
    assert summary["steps_per_epoch"] == 4
    before = state["batch_stats"]["bn1"]["mean"]
    after = jax.device_get(trained.model_state["batch_stats"]["bn1"]["mean"])
    assert not np.allclose(before, after)
    assert summary["final"]["count"] == 20


def test_resume_restores_batch_statistics_and_data_order(tmp_path):
    full, _ = train.fit(_tiny_task(), _config(num_steps=6), tmp_path / "full", progress=False)
    train.fit(_tiny_task(), _config(num_steps=3, checkpoint_every=3), tmp_path / "split", progress=False)
    resumed, summary = train.fit(_tiny_task(), _config(num_steps=6), tmp_path / "split", progress=False)
    assert summary["steps_this_run"] == 3
    chex.assert_trees_all_equal(jax.device_get(full.params), jax.device_get(resumed.params))
    chex.assert_trees_all_equal(jax.device_get(full.model_state), jax.device_get(resumed.model_state))


def test_batch_norm_uses_the_global_batch_on_four_devices(tmp_path):
    assert jax.device_count() == 4
    one, _ = train.fit(_tiny_task(), _config(num_devices=1), tmp_path / "one", progress=False)
    four, _ = train.fit(_tiny_task(), _config(num_devices=4), tmp_path / "four", progress=False)
    # Per-device statistics (4 examples each) would differ from the 16-example batch's: these agree.
    chex.assert_trees_all_close(jax.device_get(one.model_state), jax.device_get(four.model_state), atol=1e-5)
    chex.assert_trees_all_close(jax.device_get(one.params), jax.device_get(four.params), atol=1e-5)


def test_bfloat16_trains(tmp_path):
    config = _config(num_steps=40, learning_rate=0.1, weight_decay=0.0)
    curves = {}
    for name, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
        task = _tiny_task(n=32, model=_tiny_model(dtype=dtype), augment=False)
        state, _ = train.fit(task, config, tmp_path / name, progress=False)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()[:-1]
        curves[name] = np.asarray([json.loads(line)["loss"] for line in lines])
    bf16 = curves["bf16"]
    assert np.mean(bf16[-5:]) < 0.5 * np.mean(bf16[:5])  # memorises 32 images
    np.testing.assert_allclose(bf16[0], curves["f32"][0], rtol=0.02)  # the same network, at bf16 precision
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(state.params))
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(state.model_state))


def test_ema_parameters_are_tracked_and_evaluated(tmp_path):
    state, _ = train.fit(_tiny_task(), _config(ema_decay=0.5), tmp_path, progress=False)
    ema, params = jax.device_get(state.ema_params), jax.device_get(state.params)
    init = jax.device_get(_tiny_task().init(jax.random.split(jax.random.PRNGKey(0))[0])[0])
    # After 4 steps with decay 0.5, the EMA sits between the initial and the final parameters.
    kernel = ("params", "layer1_0", "conv1", "kernel")
    pick = lambda tree: functools.reduce(lambda t, k: t[k], kernel, tree)  # noqa: E731
    assert not np.allclose(pick(ema), pick(params))
    assert np.abs(pick(ema) - pick(params)).mean() < np.abs(pick(init) - pick(params)).mean()
    assert state.eval_params is state.ema_params


def test_label_smoothing_loss_value():
    task = _tiny_task(label_smoothing=0.1)
    params, model_state = task.init(jax.random.PRNGKey(0))
    batch = task.train_batch(jax.random.PRNGKey(0), jnp.asarray(0), task.train_data)
    loss, _ = task.loss_fn(params, model_state, batch, jax.random.PRNGKey(1))
    logits, _ = _tiny_model().apply({**params, **model_state}, batch["image"], train=True, mutable=["batch_stats"])
    targets = 0.9 * jax.nn.one_hot(batch["label"], 10) + 0.01
    expected = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), -1))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_weight_decay_mask_skips_batch_norm_and_biases():
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 2))}, "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)}}
    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    for mask, decayed in (("kernels", {"kernel"}), ("all", {"kernel", "scale", "bias"})):
        tx = train.make_optimizer(_config(optimizer="sgd", learning_rate=1.0, weight_decay=0.1, weight_decay_mask=mask))
        updates, _ = tx.update(grads, tx.init(params), params)
        for path, update in jax.tree_util.tree_leaves_with_path(updates):
            expected = -0.1 if path[-1].key in decayed else 0.0
            np.testing.assert_allclose(update, expected)
    with pytest.raises(ValueError, match="Unknown weight_decay_mask"):
        train.make_optimizer(_config(weight_decay_mask="bn"))


def test_lr_scales_slow_only_the_named_module():
    """lr_scales={"transformer": 0.01}: the parameters inside any module of that name move 0.01x as far under
    Nesterov momentum with coupled weight decay, over two steps (so the momentum trace is scaled too); the rest
    move as without it. An unknown module name and a negative factor are clear errors."""
    params = {
        "transformer": {"localization": {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}},
        "classifier": {"transformer": {"kernel": jnp.full((2, 2), 2.0)}, "head": {"kernel": jnp.ones((2, 2))}},
    }
    grads = jax.tree_util.tree_map(lambda p: 0.5 * jnp.ones_like(p), params)
    options = dict(optimizer="nesterov", momentum=0.9, learning_rate=0.1, weight_decay=1e-3)

    def two_steps(config):
        tx = train.make_optimizer(config)
        state = tx.init(params)
        first, state = tx.update(grads, state, params)
        second, _ = tx.update(grads, state, params)
        return jax.tree_util.tree_map(jnp.add, first, second)

    plain = two_steps(_config(**options))
    scaled = two_steps(_config(**options, lr_scales={"transformer": 0.01}))
    for (path, slow), fast in zip(
        jax.tree_util.tree_leaves_with_path(scaled), jax.tree_util.tree_leaves(plain), strict=True
    ):
        factor = 0.01 if any(getattr(k, "key", None) == "transformer" for k in path) else 1.0
        np.testing.assert_allclose(slow, factor * fast, rtol=1e-6)
        assert float(jnp.abs(fast).min()) > 0
    with pytest.raises(ValueError, match="no parameter lives inside a module of that name.*classifier, transformer"):
        train.make_optimizer(_config(**options, lr_scales={"localisation": 0.1})).init(params)
    with pytest.raises(ValueError, match="must be a number >= 0"):
        train.make_optimizer(_config(**options, lr_scales={"transformer": -1.0}))


def test_epochs_become_steps_with_warmup_and_step_decay():
    config = _config(num_epochs=10.0, warmup_epochs=1.0, decay_epochs=(5.0, 8.0), schedule="step", decay_factor=0.1)
    resolved = train.resolve_epochs(config, steps_per_epoch=100)
    assert resolved.num_steps == 1000 and resolved.warmup_steps == 100
    assert list(resolved.decay_boundaries) == [500, 800]
    assert "decay_boundaries" not in config  # the caller's config is not modified
    schedule = train.make_schedule(resolved)
    np.testing.assert_allclose([schedule(s) for s in (0, 50, 100, 499, 500, 799, 800, 999)],
                               [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)  # fmt: skip
    cosine = train.make_schedule(
        train.resolve_epochs(_config(num_epochs=10.0, warmup_epochs=1.0, schedule="cosine"), 100)
    )
    np.testing.assert_allclose([cosine(0), cosine(100), cosine(550), cosine(1000)], [0.0, 0.1, 0.05, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="in epochs, but the task has no epochs"):
        train.resolve_epochs(_config(num_epochs=2.0), 0)


def test_task_rejects_bad_arrays():
    images = np.zeros((8, 16, 16, 3), np.uint8)
    kwargs = dict(train_labels=np.zeros(8), test_images=images, test_labels=np.zeros(8), batch_size=4)
    with pytest.raises(ValueError, match="train_images must be uint8"):
        image_classification_task(
            _tiny_model(), train_images=images.astype(np.float32), mean=(0,) * 3, std=(1,) * 3, **kwargs
        )
    with pytest.raises(ValueError, match="one value per channel"):
        image_classification_task(_tiny_model(), train_images=images, mean=(0.5,), std=(1.0,), **kwargs)
    with pytest.raises(ValueError, match="larger than the 8 training images"):
        image_classification_task(
            _tiny_model(), train_images=images, mean=(0,) * 3, std=(1,) * 3, **{**kwargs, "batch_size": 16}
        )


# ----------------------------------------------------------------------------------------------------------
# Configs end to end


@pytest.mark.parametrize("cell", [f"{m},{b},{d}" for m in cifar.MODELS for b in cifar.BUDGETS for d in cifar.DATASETS])
def test_every_cifar_config_builds(cell):
    config = cifar.get_config(cell)
    steps = train.resolve_epochs(config, 50_000 // config.batch_size)
    # 390 steps per epoch: the paper schedule is 63,960 steps (He et al.'s 64k), the CPU budget 7,800.
    assert steps.num_steps == {"paper": 63_960, "cpu": 7_800}[cell.split(",")[1]]
    assert list(steps.decay_boundaries) == ([31_980, 47_970] if "paper" in cell else [3_900, 5_850])
    assert config.model.startswith("cifar_se_") == cell.startswith("se_")
    assert config.model.startswith("cifar_cbam_") == cell.startswith("cbam_")


def test_cifar_config_errors():
    with pytest.raises(ValueError, match="MODEL must be one of"):
        cifar.get_config("resnet21")
    for bad in ("gpu", "cpu0", "cpux"):
        with pytest.raises(ValueError, match="BUDGET must be one of"):
            cifar.get_config(f"resnet20,{bad}")


def test_cifar_cpu_n_budget():
    config = cifar.get_config("se_resnet20,cpu3")
    steps = train.resolve_epochs(config, 390)
    assert steps.num_steps == 1170 and list(steps.decay_boundaries) == [585, 878]  # 2.25 epochs = 877.5 steps
    assert cifar.get_config("resnet20,cpu20").num_epochs == cifar.get_config("resnet20,cpu").num_epochs


def test_cifar_short_budget_is_warm_up_then_cosine_to_zero():
    """short30: 11,700 steps; the rate rises linearly over the first epoch (390 steps) to 0.1, follows a
    cosine to 0 at the last step; Nesterov, decay 5e-4 on kernels only. Also for the deep networks (no extra
    warm-up) and through senet.py's CIFAR cells."""
    config = train.resolve_epochs(cifar.get_config("resnet110,short30"), 390)
    assert (config.num_steps, config.warmup_steps, config.optimizer) == (11700, 390, "nesterov")
    assert (config.weight_decay, config.weight_decay_mask) == (5e-4, "kernels")
    schedule = train.make_schedule(config)
    rates = [float(schedule(step)) for step in (0, 195, 390, 390 + 5655, 11700)]
    np.testing.assert_allclose(rates, [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-6)
    assert cifar.get_config("resnet20,short12.5").num_epochs == 12.5
    from experiments.configs import residual_attention, senet

    assert senet.get_config("r16,cifar,short30").schedule == "cosine"
    ran = train.resolve_epochs(residual_attention.get_config("attention56,nal,short3"), 781)  # batch 64
    assert (ran.num_steps, ran.warmup_steps, ran.schedule, ran.eval_every) == (2343, 781, "cosine", 3905)


@pytest.mark.parametrize(
    "configs,cell",
    [
        pytest.param(cifar, "resnet20,cpu", marks=pytest.mark.slow),
        (cifar, "se_resnet20,paper,cifar100"),  # the default run's one: SE blocks, CIFAR-100 through TFDS's mock
        pytest.param("ran", "attention56,noise30,cpu", marks=pytest.mark.slow),
        pytest.param("senet", "se_identity,cifar,cpu", marks=pytest.mark.slow),
    ],
    ids=["resnet20", "se_resnet20_cifar100", "attention56_noise30", "senet_se_identity"],
)
def test_cifar_config_trains_one_step_on_mock_data(configs, cell, tmp_path):
    if configs == "ran":
        from experiments.configs import residual_attention as configs
    if configs == "senet":
        from experiments.configs import senet as configs
    config = configs.get_config(cell)
    config.num_epochs, config.decay_epochs, config.warmup_epochs = 0.0, (), 0.0
    config.num_steps, config.batch_size, config.log_every, config.eval_every = 1, 8, 1, 0
    config.checkpoint_every, config.progress, config.test_limit = 0, False, 16
    config.cifar10_dir = None  # TFDS (mocked), not the offline copy
    with tfds.testing.mock_data(num_examples=32):
        summary = train.train_and_evaluate(config, tmp_path)
    assert summary["final"]["count"] == 16
    assert (tmp_path / "training_curve.png").exists() and (tmp_path / "misclassified.png").exists()
    # What the attention does: SE networks draw their excitations, attention networks their masks.
    expected = {"resnet20": None, "se_resnet20": "excitations.png", "attention56": "attention_masks.png"}
    expected["se_identity"] = "excitations.png"
    expected = expected[cell.split(",")[0]]
    if expected is None:
        assert "attention_figure" not in summary
    else:
        assert summary["attention_figure"] == str(tmp_path / expected)
        assert (tmp_path / expected).read_bytes()[:4] == b"\x89PNG"


def test_imagenet_configs_build():
    for cell in ("resnet50", "legacy_resnet50,4", "resnext50_32x4d,2"):
        config = imagenet.get_config(cell)
        resolved = train.resolve_epochs(config, 1_281_167 // config.batch_size)
        assert resolved.warmup_steps == 5 * (1_281_167 // config.batch_size)
    assert imagenet.get_config("resnet50,4").learning_rate == pytest.approx(0.4)
    with pytest.raises(ValueError, match="ImageNet network"):
        imagenet.get_config("cifar_resnet20")
    with pytest.raises(ValueError, match="K must be a positive integer"):
        imagenet.get_config("resnet50,x")


def test_every_imagenet_network_builds_from_its_config():
    """The config's model overrides are fields of every ImageNet network (Attention-56 / -92 once failed here:
    the ResNets' zero_init_last is not a field of the Residual Attention networks)."""
    from visattn_jax.models import create_model, input_size, list_models

    for name in (n for n in list_models() if input_size(n) == 224):
        config = imagenet.get_config(name)
        create_model(config.model, **config.model_overrides)  # raises ValueError on a bad override
        assert config.model_overrides.get("zero_init_last", False) == (not name.startswith("attention")), name


# ----------------------------------------------------------------------------------------------------------
# ImageNet host pipeline (TFDS mock data)


def test_imagenet_stream_shapes_and_resume(tmp_path):
    from visattn_jax.data.imagenet import ImageNetEval, imagenet_stream

    with tfds.testing.mock_data(num_examples=24):
        stream = imagenet_stream(0, global_batch_size=4, image_size=32, data_dir=tmp_path, shuffle_buffer=8)
        batches = [next(stream) for _ in range(4)]
        resumed = next(imagenet_stream(2, global_batch_size=4, image_size=32, data_dir=tmp_path, shuffle_buffer=8))
        evaluation = list(ImageNetEval(batch_size=10, image_size=32, resize_size=36, data_dir=tmp_path))
    assert batches[0]["image"].shape == (4, 32, 32, 3) and batches[0]["image"].dtype == np.float32
    assert batches[0]["label"].dtype == np.int32
    assert -2.2 < batches[0]["image"].min() and batches[0]["image"].max() < 2.7  # normalised
    np.testing.assert_array_equal(resumed["image"], batches[2]["image"])  # same examples, same augmentation
    assert [b["image"].shape[0] for b in evaluation] == [10, 10, 4]
    assert evaluation[0]["image"].shape[1:] == (32, 32, 3)
    with pytest.raises(ValueError, match="resize_size=16 must be at least"):
        ImageNetEval(batch_size=4, image_size=32, resize_size=16)


def test_stream_task_trains_through_the_one_loop(tmp_path):
    from visattn_jax.data.imagenet import ImageNetEval, imagenet_stream

    with tfds.testing.mock_data(num_examples=16):
        common = dict(image_size=16, data_dir=tmp_path / "data")
        task = stream_classification_task(
            _tiny_model(num_classes=1000),
            train_stream=functools.partial(imagenet_stream, global_batch_size=8, shuffle_buffer=4, **common),
            eval_batches=ImageNetEval(batch_size=8, resize_size=18, **common),
            image_shape=(16, 16, 3),
            steps_per_epoch=2,
            label_smoothing=0.1,
        )
        state, summary = train.fit(task, _config(num_steps=3, batch_size=8), tmp_path / "run", progress=False)
    assert int(state.step) == 3 and summary["final"]["count"] == 16


def test_task_needs_one_data_source(tmp_path):
    task = _tiny_task()._replace(train_stream=lambda start: iter(()))
    with pytest.raises(ValueError, match="exactly one of train_batch"):
        train.fit(task, _config(), tmp_path, progress=False)


def test_optax_incremental_update_matches_ema_definition():
    # The loop's EMA is optax.incremental_update(new, ema, 1 - decay) = decay * ema + (1 - decay) * new.
    np.testing.assert_allclose(optax.incremental_update(jnp.ones(()), jnp.zeros(()), 0.25), 0.25)


def test_label_noise_follows_the_papers_definition():
    labels = np.repeat(np.arange(10), 2000)
    noisy = cifar_data.corrupt_labels(labels, 0.3, 10, seed=0)
    changed = noisy != labels
    assert abs(changed.mean() - 0.3) < 0.015
    # A changed label goes to each of the 9 other classes about equally often.
    counts = np.bincount((noisy[changed] - labels[changed]) % 10, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].mean()
    np.testing.assert_array_equal(noisy, cifar_data.corrupt_labels(labels, 0.3, 10, seed=0))
    np.testing.assert_array_equal(cifar_data.corrupt_labels(labels, 0.0, 10, seed=0), labels)
    with pytest.raises(ValueError, match="noise must be a fraction"):
        cifar_data.corrupt_labels(labels, 30, 10, seed=0)


def test_residual_attention_configs():
    from experiments.configs import residual_attention as ran

    for model in ran.MODELS:
        for variant in ran.VARIANTS:
            if model == "preact_resnet164" and not (variant == "arl" or variant.startswith("noise")):
                with pytest.raises(ValueError, match="has none"):
                    ran.get_config(f"{model},{variant}")
                continue
            config = ran.get_config(f"{model},{variant}")
            resolved = train.resolve_epochs(config, 50_000 // 64)
            assert resolved.num_steps == 160_000 and list(resolved.decay_boundaries) == [64_000, 96_000]
    assert ran.get_config("attention92,noise30").label_noise == pytest.approx(0.3)
    assert ran.get_config("attention56,nal").model_overrides.residual == "nal"
    with pytest.raises(ValueError, match="VARIANT must be one of"):
        ran.get_config("attention56,mixed")
    # The CPU budgets: cpu is 4 epochs, cpuN any positive number of epochs with the same shape.
    for budget, steps, boundaries in [("cpu", 3124, [1562, 2343]), ("cpu0.5", 390, [195, 293])]:
        resolved = train.resolve_epochs(ran.get_config(f"attention56,nal,{budget}"), 50_000 // 64)
        assert resolved.num_steps == steps and list(resolved.decay_boundaries) == boundaries
    for bad in ("cpu0", "cpu-1", "cpu.5", "cpux"):
        with pytest.raises(ValueError, match="BUDGET must be one of"):
            ran.get_config(f"attention56,arl,{bad}")


def test_senet_cells_build_with_the_papers_sizes():
    """Every SENet cell builds at both scales; the TPAMI reduction-ratio cells have the paper's sizes (45.7M,
    35.7M, 30.7M, 28.1M, 26.9M: FC biases off, our counts within 0.15M of the paper's rounding)."""
    from experiments.configs import senet
    from visattn_jax.models import num_params
    from visattn_jax.train.experiment import build_model

    def count(config, size):
        model = build_model(config)[0]
        shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
        return num_params(shapes)

    paper = {"r2": 45.7e6, "r4": 35.7e6, "r8": 30.7e6, "r16": 28.1e6, "r32": 26.9e6, "se_3x3": 25.8e6}
    for cell, expected in paper.items():
        assert abs(count(senet.get_config(f"{cell},imagenet"), 224) - expected) < 0.15e6, cell
    config = senet.get_config("seresnet152")
    assert config.batch_size == 1024 and config.learning_rate == 0.6 and config.num_epochs == 100
    assert list(config.decay_epochs) == [30.0, 60.0, 90.0] and config.model == "legacy_seresnet152"
    for cell in senet.CELLS:
        if cell != "r32":  # 16 // 32 = 0 units: a clear error at CIFAR scale (tested in test_se)
            assert count(senet.get_config(f"{cell},cifar,cpu3"), 32) > 0
    with pytest.raises(ValueError, match="BUDGET is for the cifar scale only"):
        senet.get_config("r8,imagenet,cpu")
    with pytest.raises(ValueError, match="CELL must be one of"):
        senet.get_config("r3")


def test_reported_error_equals_an_independent_count_over_a_ragged_last_batch(tmp_path):
    """fit's test error against a count made here: the trained variables applied to all 19 test images at
    once (normalised by hand), argmax against the labels. The evaluation batches are 8, 8 and 3 images on 4
    devices, so the last one cannot be split and is replicated: it must be counted once, not dropped or
    counted per device."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 64).astype(np.int32)
    model = _tiny_model()
    task = image_classification_task(
        model, train_images=images, train_labels=labels, test_images=images[:19], test_labels=labels[:19],
        batch_size=16, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), eval_batch_size=8,
    )  # fmt: skip
    assert [len(b["label"]) for b in task.eval_batches] == [8, 8, 3]
    state, summary = train.fit(task, _config(num_steps=6, num_devices=4), tmp_path, progress=False)
    x = (images[:19].astype(np.float32) / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.25, 0.2, 0.3])
    variables = jax.device_get({**state.eval_params, **state.model_state})
    logits = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32), train=False))
    wrong = int(np.sum(np.argmax(logits, -1) != labels[:19]))
    assert summary["final"]["count"] == 19
    np.testing.assert_allclose(summary["final"]["error_percent"], 100.0 * wrong / 19, atol=1e-4)
    assert 0 < wrong < 19  # a count that could go either way
