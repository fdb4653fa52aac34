"""The cross-family comparison: its models (SE / CBAM CNNs, ST-ResNets, the digit Residual Attention network, the
baselines' identity view), its configs, the attention panels of every mechanism and the report."""

from __future__ import annotations

import json
import math
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import compare_report
from experiments.configs import compare
from visattn_jax import models, stn, train, viz
from visattn_jax.data import input_shape
from visattn_jax.objectives import eval_kwargs, takes_argument

pytestmark = pytest.mark.usefixtures("standard_dtype_promotion")


def _variables(model, shape, key=0):
    images = jnp.zeros((2, *shape))
    if takes_argument(model, "key"):
        return model.init(jax.random.PRNGKey(key), images, jax.random.PRNGKey(1))
    return model.init(jax.random.PRNGKey(key), images, **eval_kwargs(model))


@pytest.mark.parametrize("dataset", list(compare.MODELS))
def test_every_compare_cell_builds_its_registry_model(dataset):
    for cell, name in compare.MODELS[dataset].items():
        config = compare.get_config(f"{dataset},{cell}")
        assert config.model == name and name in models.list_models()
        model, info = train.build_model(config, input_shape(config))
        assert info is models.model_info(name)
        assert compare.MECHANISMS[cell]  # the report's "attention" column names every cell's mechanism
    with pytest.raises(ValueError, match="MODEL of cifar10 must be one of resnet20"):
        compare.get_config("cifar10,ram")
    with pytest.raises(ValueError, match="DATASET must be one of"):
        compare.get_config("svhn,cnn")


def test_attention_cnns_add_exactly_their_modules_parameters():
    """The SE and CBAM CNNs are the STN paper's CNN "of the same size": the CNN's 68,522 parameters (28x28) plus,
    after each of its two 32-channel convolutions, SE's 32 -> 2 -> 32 MLP (2 x 32 + 2 + 2 x 32 + 32 = 162) or
    CBAM's same MLP, 7x7 conv over 2 maps (98) and BatchNorm's scale and offset (2)."""
    plain = models.num_params("stn_cnn")
    assert plain == 68_522
    assert models.num_params("stn_se_cnn") == plain + 2 * 162
    assert models.num_params("stn_cbam_cnn") == plain + 2 * (162 + 98 + 2)
    # The ST-ResNet-20: ResNet-20 plus the ST-CNN localisation net on 32x32x3 (convs 1,520 + 10,020, FC 4x4x20
    # -> 50: 16,050, regression 50 -> 6: 306).
    assert models.num_params("cifar_st_resnet20") == models.num_params("cifar_resnet20") + 1_520 + 10_020 + 16_050 + 306


def test_resample_to_half_the_side_is_the_2x2_average_and_the_cnn_reads_it():
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 2))
    half = stn.Resample(output_shape=(4, 4)).apply({}, x)
    average = x.reshape(3, 4, 2, 4, 2, 2).mean((2, 4))
    np.testing.assert_allclose(half, average, atol=1e-6)
    # A baseline with view_size is the CNN on that view, with the CNN's own parameters (nothing else learned).
    viewed = stn.stn_classifier("cnn", input_size=8, view_size=4)
    variables = viewed.init(jax.random.PRNGKey(1), x)
    plain = stn.CNN()
    np.testing.assert_allclose(
        viewed.apply(variables, x), plain.apply({"params": variables["params"]["classifier"]}, half), atol=1e-5
    )
    chex.assert_trees_all_equal_shapes(
        variables["params"]["classifier"], plain.init(jax.random.PRNGKey(1), half)["params"]
    )
    with pytest.raises(ValueError, match="view_size is for the baselines"):
        stn.stn_classifier("st_cnn", input_size=8, view_size=4)
    with pytest.raises(ValueError, match="view_size must be a positive side"):
        stn.stn_classifier("cnn", input_size=8, view_size=0)


def test_st_resnet_starts_as_its_resnet():
    """The transformer is initialised to the identity and samples the input's own pixel centres, so at
    initialisation the ST-ResNet's logits are its ResNet's (the STN paper's drop-in claim, checked exactly)."""
    st = models.create_model("cifar_st_resnet20")
    variables = _variables(st, (32, 32, 3))
    images = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 3))
    resnet = models.create_model("cifar_resnet20")
    inner = {"params": variables["params"]["classifier"], "batch_stats": variables["batch_stats"]["classifier"]}
    np.testing.assert_allclose(
        st.apply(variables, images, train=False), resnet.apply(inner, images, train=False), rtol=1e-5, atol=1e-5
    )


def test_st_resnet_cell_slows_exactly_its_transformer():
    """The ST-ResNet-20 cell's lr_scales names the module its network calls the transformer: one SGD step of its
    optimiser moves the localisation net 0.01x as far as the same config without the scale, the ResNet alike."""
    config = compare.get_config("cifar10,st_resnet20")
    assert dict(config.lr_scales) == {"transformer": 0.01}
    params = _variables(models.create_model(config.model), (32, 32, 3))["params"]
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    plain = config.copy_and_resolve_references()
    del plain.lr_scales
    slow = train.make_optimizer(config)
    fast = train.make_optimizer(plain)
    slow_updates, _ = slow.update(grads, slow.init(params), params)
    fast_updates, _ = fast.update(grads, fast.init(params), params)
    for part, factor in (("transformer", 0.01), ("classifier", 1.0)):
        for a, b in zip(
            jax.tree_util.tree_leaves(slow_updates[part]), jax.tree_util.tree_leaves(fast_updates[part]), strict=True
        ):
            np.testing.assert_allclose(a, factor * b, rtol=1e-6)


def test_train_reaches_the_cbam_batchnorm_inside_the_cnn():
    model = models.create_model("stn_cbam_cnn", input_size=28)
    variables = _variables(model, (28, 28, 1))
    images = jax.random.uniform(jax.random.PRNGKey(3), (4, 28, 28, 1))
    _, state = model.apply(variables, images, train=True, mutable=["batch_stats"])
    moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), state["batch_stats"], variables["batch_stats"])
    assert all(jax.tree_util.tree_leaves(moved))  # both CBAM blocks' spatial BatchNorm statistics updated
    np.testing.assert_array_equal(model.apply(variables, images), model.apply(variables, images, train=False))


@pytest.mark.parametrize(
    "name,options,shape,kind",
    [
        ("stn_cnn", {"input_size": 60, "view_size": 30}, (60, 60, 1), "none"),
        ("st_cnn", {"input_size": 60, "st_output_size": 30}, (60, 60, 1), "grid"),
        ("ram", {"num_glimpses": 3, "glimpse_size": 12, "num_scales": 3}, (60, 60, 1), "glimpses"),
        ("stn_se_cnn", {"input_size": 60, "view_size": 30}, (60, 60, 1), "excitation"),
        ("stn_cbam_cnn", {"input_size": 60, "view_size": 30}, (60, 60, 1), "mask"),
        ("digit_attention56", {}, (60, 60, 1), "mask"),
        ("cifar_st_resnet20", {}, (32, 32, 3), "grid"),
    ],
)
def test_attention_panels_read_each_mechanism(name, options, shape, kind, tmp_path):
    model = models.create_model(name, **options)
    variables = _variables(model, shape)
    images = jax.random.uniform(jax.random.PRNGKey(4), (3, *shape))
    panel = viz.attention_panels(model, variables, images)
    assert panel["kind"] == kind and panel["predictions"].shape == (3,)
    if kind == "grid":  # the transformer's output grid, in [-1, 1] at the identity
        assert panel["grid"].shape[0] == 3 and np.abs(panel["grid"]).max() <= 1.0
    if kind == "glimpses":
        assert panel["locations"].shape == (3, 3, 2) and panel["size"] == 12
    if kind == "mask":  # the finest mask: CBAM's after the first convolution (30x30), the RAN's first stage
        assert panel["mask"].shape == ((3, 30, 30) if name == "stn_cbam_cnn" else (3, 15, 15))
    if kind == "excitation":
        assert panel["excitation"].shape == (3, 32) and 0 <= panel["excitation"].min()
    path = viz.plot_attention_overview(
        np.asarray(images), [(name, panel)], tmp_path / "overview.png", labels=np.zeros(3, int)
    )
    assert path.stat().st_size > 0


def test_welch_t_matches_scipy():
    """Against a hand computation: t = d / sqrt(va / na + vb / nb), Welch-Satterthwaite degrees of freedom."""
    a, b = [30.58, 30.91, 30.49], [29.02, 30.55, 29.8]
    result = compare_report.welch(a, b)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3
    assert result.difference == pytest.approx(np.mean(a) - np.mean(b))
    assert result.t == pytest.approx(result.difference / np.sqrt(va + vb))
    assert result.df == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 2))
    assert result.p == pytest.approx(0.181, abs=1e-3)  # t = 1.89 on 2.33 degrees of freedom
    assert all(math.isnan(v) for v in compare_report.welch([1.0], [2.0, 3.0])[1:])
    assert math.isnan(compare_report.welch([1.0, 1.0], [2.0, 2.0]).t)


def test_summarize_pairs_seeded_runs_with_their_counterparts(tmp_path):
    """experiments.results.summarize: seeds in seed order (seed10 after seed2), SE against plain and NAL against
    ARL in the same folder with Welch's t, runs without a counterpart or a second seed stated as such."""
    from experiments.results import summarize

    def write(folder, name, error):
        (tmp_path / folder).mkdir(exist_ok=True)
        summary = {"final": {"error_percent": error}, "config": {"batch_size": 128}, "steps": 10,
                   "wall_seconds_this_run": 60.0, "train_images_per_second": None, "num_params": 1000}  # fmt: skip
        (tmp_path / folder / f"{name}.json").write_text(json.dumps(summary))

    for seed, (plain, se) in enumerate([(9.0, 8.0), (9.5, 8.2), (9.1, 8.1)]):
        write("cifar", f"resnet20_short40_seed{seed}", plain)
        write("cifar", f"se_resnet20_short40_seed{seed}", se)
    write("cifar", "resnet20_short40_seed10", 9.2)
    write("ran", "attention56_arl_short2_seed0", 40.0)
    write("ran", "attention56_nal_short2_seed0", 45.0)
    write("ran", "attention92_nal_short2_seed0", 50.0)  # no ARL run: no pair
    (tmp_path / "compare").mkdir()
    (tmp_path / "compare" / "speed.json").write_text("{}")  # not a run summary: skipped
    text = "\n".join(summarize.tables(tmp_path))
    assert "| cifar/resnet20_short40 | 4 | 9.20 +- 0.22 | 9.00, 9.50, 9.10, 9.20 |" in text
    expected = compare_report.welch([8.0, 8.2, 8.1], [9.0, 9.5, 9.1, 9.2])
    assert expected.t < -5
    assert (
        f"| cifar/se_resnet20_short40 | cifar/resnet20_short40 | 3 / 4 | -1.10 | {expected.t:+.2f} "
        f"({expected.df:.1f}), p = {expected.p:.2f} |" in text
    )
    assert "| ran/attention56_nal_short2 | ran/attention56_arl_short2 | 1 / 1 | +5.00 | n/a" in text
    assert "attention92_nal_short2 | ran/" not in text
    assert summarize.counterpart("cifar/resnet20_short40") is None


def test_summarize_figures_draw_each_seed_of_each_compared_pair(tmp_path, monkeypatch):
    """experiments.results.summarize --figures: a run's curve is its history then its final evaluation (once), in
    epochs; a pair is drawn only where every run of both sides was evaluated before its end."""
    from experiments.results import summarize

    def write(folder, name, history, final, steps=40):
        (tmp_path / folder).mkdir(exist_ok=True)
        summary = {"final": {"error_percent": final}, "steps": steps, "steps_per_epoch": 10,
                   "history": [{"step": s, "error_percent": e} for s, e in history]}  # fmt: skip
        (tmp_path / folder / f"{name}.json").write_text(json.dumps(summary))

    write("cifar", "resnet20_short40_seed0", [(20, 20.0)], 10.0)
    write("cifar", "resnet20_short40_seed1", [(20, 22.0), (40, 12.0)], 12.0)  # final already in the history
    write("cifar", "se_resnet20_short40_seed0", [(20, 21.0)], 11.0)
    write("ran", "attention56_arl_short2_seed0", [], 40.0)  # evaluated only at the end: no figure
    write("ran", "attention56_nal_short2_seed0", [], 45.0)
    assert summarize.curve(json.loads((tmp_path / "cifar" / "resnet20_short40_seed1.json").read_text())) == (
        [2.0, 4.0],
        [22.0, 12.0],
    )
    drawn = {}

    def fake_plot(curves, path, **kwargs):
        drawn[path] = curves
        return path

    monkeypatch.setattr(viz, "plot_seed_curves", fake_plot)
    assert summarize.figures(tmp_path) == [tmp_path / "cifar" / "se_resnet20_short40_seeds.png"]
    assert list(drawn.values())[0] == {
        "resnet20_short40: 11.00 +- 1.41 (2 seeds)": [([2.0, 4.0], [20.0, 10.0]), ([2.0, 4.0], [22.0, 12.0])],
        "se_resnet20_short40: 11.00 (1 seed)": [([2.0, 4.0], [21.0, 11.0])],
    }


def test_compare_report_tables_and_figure_from_runs(tmp_path):
    """Two cells trained one step on mock data, through experiments.main's path; the report reads their
    summaries (a second seed copied from the first) and checkpoints and writes the table and the figure."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    out.mkdir()
    with tfds.testing.mock_data(num_examples=64):
        for cell in ("cnn", "cbam_cnn"):
            config = compare.get_config(f"cluttered60,{cell}")
            config.update(num_steps=1, batch_size=8, train_limit=64, test_limit=16, log_every=1, eval_every=0)
            config.update(checkpoint_every=1, progress=False, figure=False)
            train.train_and_evaluate(config, runs / f"cluttered60_{cell}_seed0")
            for seed in (0, 1):
                shutil.copy(
                    runs / f"cluttered60_{cell}_seed0" / "summary.json", out / f"cluttered60_{cell}_seed{seed}.json"
                )
        (out / "speed.json").write_text(json.dumps({"cluttered60": {"cnn": 123.4}}))  # as --speed writes it
        compare_report.main([f"--runs={runs}", f"--out={out}"])
    text = (out / "tables.md").read_text()
    assert "| cnn | none (baseline) |" in text and "| cbam_cnn | channel + spatial: CBAM |" in text
    # On the 30x30 view the CNN has its 28x28 size (7x7x32 features into the classifier layer after two poolings).
    assert "| 68,522 |" in text and "| 69,046 |" in text
    assert "Budget: 1 steps of batch 8" in text
    # The measured speed where there is one, else the runs' own (none: a 1-step run times no step).
    assert "| 13.6 M | 123 |" in text and "| 13.7 M | - |" in text
    assert (out / "cluttered60_attention.png").stat().st_size > 0
    summary = json.loads((out / "cluttered60_cnn_seed0.json").read_text())
    assert summary["steps"] == 1
    # --datasets leaves another dataset's figure alone (and still writes every table); a wrong name is an error.
    (out / "cluttered60_attention.png").unlink()
    (out / "tables.md").unlink()
    compare_report.main([f"--runs={runs}", f"--out={out}", "--datasets=cifar10"])
    assert not (out / "cluttered60_attention.png").exists() and "| cnn |" in (out / "tables.md").read_text()
    with pytest.raises(SystemExit):
        compare_report.main([f"--out={out}", "--datasets=cifar100"])
