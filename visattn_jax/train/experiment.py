"""``train_and_evaluate(config, workdir)``: the one entry point that runs a configured experiment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from visattn_jax.data.mnist import load_image_dataset
from visattn_jax.sampling import grid_sample
from visattn_jax.stn import FCN, stn_classifier
from visattn_jax.train.classification import classification_task, cross_entropy_objective, make_test_set, ram_objective
from visattn_jax.train.loop import fit

__all__ = ["load_digits", "train_and_evaluate"]


def load_digits(config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test digits (uint8) and labels of ``config.dataset``, cut to ``config.train_limit`` /
    ``config.test_limit`` when those are set (smoke tests and quick runs)."""
    kwargs = {"data_dir": config.get("data_dir"), "source_dir": config.get("mnist_dir")}
    train_x, train_y = load_image_dataset(config.dataset, "train", **kwargs)
    test_x, test_y = load_image_dataset(config.dataset, "test", **kwargs)
    if config.get("train_limit"):
        train_x, train_y = train_x[: config.train_limit], train_y[: config.train_limit]
    if config.get("test_limit"):
        test_x, test_y = test_x[: config.test_limit], test_y[: config.test_limit]
    return train_x, train_y, test_x, test_y


def _stn_figure(model, params, test_images: np.ndarray, path: Path, count: int = 8) -> Path | None:
    from visattn_jax.viz import plot_transformer

    if model.transformer is None:
        return None
    inputs = test_images[:count]
    logits, state = model.apply(params, inputs, mutable=["intermediates"])
    grid = state["intermediates"]["transformer"]["grid"][0]
    # The transformer's output is the sown grid sampled again: no second pass through the localisation net.
    st = model.transformer
    outputs = grid_sample(inputs, grid, align_corners=st.align_corners, padding_mode=st.padding_mode)
    titles = [f"pred {int(p)}" for p in np.argmax(np.asarray(logits), -1)]
    return plot_transformer(inputs, np.asarray(outputs), np.asarray(grid), path, titles=titles)


def _ram_figure(model, params, test_images: np.ndarray, path: Path, count: int = 8) -> Path | None:
    from visattn_jax.viz import plot_glimpses

    if not hasattr(model, "num_glimpses"):
        return None
    inputs = test_images[:count]
    outputs = model.apply(params, inputs, jax.random.PRNGKey(0))
    titles = [f"pred {int(p)}" for p in np.argmax(np.asarray(outputs["logits"]), -1)]
    return plot_glimpses(
        inputs,
        np.asarray(outputs["locations"]),
        path,
        size=model.glimpse_size,
        num_scales=model.num_scales,
        titles=titles,
    )


def _stn_model(config, input_size: int):
    model = stn_classifier(
        config.model,
        transform=config.transform,
        input_size=input_size,
        st_output_size=config.get("st_output_size") or None,
        **config.get("model_overrides", {}),
    )
    return model, cross_entropy_objective, _stn_figure


def _ram_model(config, input_size: int):
    from visattn_jax.ram import RAM, ConvBaseline

    del input_size
    if config.model in ("ram", "ram_random"):
        model = RAM(
            num_glimpses=config.num_glimpses,
            glimpse_size=config.glimpse_size,
            num_scales=config.num_scales,
            antialias=config.antialias,
            core=config.core,
            location_std=config.location_std,
            random_locations=config.model == "ram_random",
            sensor_method=config.get("sensor_method", "gather"),
        )
        return model, ram_objective, _ram_figure
    if config.model == "fc":
        return FCN(features=(256, 256)), cross_entropy_objective, None
    if config.model == "conv":
        return ConvBaseline(), cross_entropy_objective, None
    if config.model == "conv_paper":
        return ConvBaseline.paper(), cross_entropy_objective, None
    raise ValueError(f"Unknown RAM-task model {config.model!r}; choose ram, ram_random, fc, conv or conv_paper.")


_TASKS = {"stn": _stn_model, "ram": _ram_model}


def train_and_evaluate(config, workdir: str | Path) -> dict[str, Any]:
    """Loads data, builds the model and task from ``config``, trains, evaluates, writes summary and figure.

    ``config.task`` selects the experiment family: ``"stn"`` (distorted-MNIST classifiers of the STN paper)
    or ``"ram"`` (RAM and its baselines on MNIST / translated / cluttered MNIST).
    Returns the summary that is also written to ``workdir/summary.json``.
    """
    if config.task not in _TASKS:
        raise ValueError(f"Unknown task {config.task!r}; choose one of {sorted(_TASKS)}.")
    workdir = Path(workdir)
    train_x, train_y, test_x, test_y = load_digits(config)
    test_images = make_test_set(config.distortion, test_x, seed=config.test_seed)
    model, objective, figure_fn = _TASKS[config.task](config, test_images.shape[1])
    task = classification_task(
        model,
        train_images=train_x,
        train_labels=train_y,
        test_images=test_images,
        test_labels=test_y,
        distortion=config.distortion,
        batch_size=config.batch_size,
        objective=objective,
    )
    state, summary = fit(task, config, workdir, progress=config.get("progress", True))
    params = jax.device_get(state.params)
    summary["num_params"] = int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))
    summary["config"] = config.to_dict()
    if config.get("figure", True) and figure_fn is not None:
        figure = figure_fn(model, params, test_images, workdir / f"{config.task}_figure.png")
        summary["figure"] = str(figure) if figure else None
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    final = summary["final"]
    print(
        f"{config.name} on {config.distortion}: test error {final['error_percent']:.2f}% over "
        f"{int(final['count'])} images after {config.num_steps} steps ({summary['train_images_per_second']} "
        f"train images/s on {summary['devices']} {summary['platform']} device(s)); results in {workdir}."
    )
    return summary
