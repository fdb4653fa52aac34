"""``train_and_evaluate(config, workdir)``: the one entry point that runs a configured experiment.

One path for every family: ``config.model`` names a network of the registry (:mod:`visattn_jax.models`: the
STN classifiers, RAM and its baselines, ResNets, SE, CBAM and Residual Attention networks), whose entry gives
its objective and its attention figure; ``config.dataset`` (with ``config.distortion`` for digits) names the
data (:func:`visattn_jax.data.load_data`); :func:`visattn_jax.train.classification_task` joins them and
:func:`visattn_jax.train.fit` trains. Nothing here asks which paper a model comes from: a fifth mechanism is a
module and a registration, not an edit of this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from visattn_jax.data.datasets import ClassificationData, StreamData, input_shape, load_data
from visattn_jax.objectives import Objective
from visattn_jax.train.classification import classification_task
from visattn_jax.train.loop import Task, fit

__all__ = ["BuiltTask", "ConfigError", "build_model", "build_task", "train_and_evaluate"]


class ConfigError(ValueError):
    """A config names something that does not exist (model, dataset, distortion, option, dtype ...); raised
    before any data is loaded or any folder is created. The message names the field and the valid choices."""


class BuiltTask(NamedTuple):
    """What :func:`build_task` makes of a config: the loop's task, the model, its objective, the data (test
    images and labels, how to prepare them) and the model's attention figure function (None if it has none)."""

    task: Task
    model: Any
    objective: Objective
    data: ClassificationData | StreamData
    figure: Any = None


_DTYPES = ("float32", "bfloat16")


def build_model(config, shape: tuple[int, int, int] | None = None):
    """The network ``config.model`` from :mod:`visattn_jax.models`, with its registered options that the config
    sets under the same name (``num_classes``, ``dtype``, ``num_glimpses``, ``transform`` ...; the options
    ``input_size`` and ``in_channels`` get the side and channels of ``shape``, default the config's data's) and
    ``config.model_overrides`` over them.

    Returns ``(model, info)`` (:class:`visattn_jax.models.ModelInfo`). Raises :class:`ConfigError` for an
    unknown model, dtype or override.
    """
    import jax.numpy as jnp

    from visattn_jax.models import create_model, model_info

    try:
        info = model_info(config.model)
        from_data = {"input_size": 0, "in_channels": -1}  # the side and the channels of the images
        options = {name: config[name] for name in info.options if name in config and name not in from_data}
        if any(name in info.options for name in from_data):
            shape = shape or input_shape(config)
            if shape is None:
                raise ValueError(
                    f"The image shape of dataset {config.dataset!r} is known only once it is read: "
                    "pass build_model its shape (build_task does)."
                )
            options.update({name: shape[axis] for name, axis in from_data.items() if name in info.options})
        if "dtype" in options:
            if options["dtype"] not in _DTYPES:
                raise ValueError(f"Unknown dtype {options['dtype']!r}; choose float32 or bfloat16.")
            options["dtype"] = jnp.dtype(options["dtype"])
        model = create_model(config.model, **options, **dict(config.get("model_overrides") or {}))
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error).strip("'\"")) from error
    return model, info


def build_task(config, *, shapes_only: bool = False) -> BuiltTask:
    """The :class:`~visattn_jax.train.loop.Task` of any experiment config, with its model: the one place a
    config becomes something :func:`fit` can train.

    The model is built first (from the data's shape, known without reading it), so a config that names
    something that does not exist fails with :class:`ConfigError` before any data is read. ``shapes_only``
    reads nothing: the training data and test set are zero arrays of the real shapes (``fit`` on them would
    train on zeros; compiling the task's steps, e.g. for a TPU topology, needs only those shapes).
    """

    def model_and_objective(shape):
        model, info = build_model(config, shape)
        return model, info, info.objective(config.get("label_smoothing", 0.0))

    try:
        shape = input_shape(config)  # None: a TFDS set of unknown shape, the model waits for the data
        built = model_and_objective(shape) if shape is not None else None
        data = load_data(config, shapes_only=shapes_only)
        model, info, objective = built or model_and_objective(data.input_shape)
    except ConfigError:
        raise
    except ValueError as error:  # an unknown dataset or distortion, a bad option: one message, before any data
        raise ConfigError(str(error)) from error
    return BuiltTask(classification_task(model, data, objective=objective), model, objective, data, info.figure)


def _figures(built: BuiltTask, state, config, workdir: Path) -> dict[str, str]:
    """The training curve, the misclassified test images and the model's attention figure (process 0 only)."""
    import jax.numpy as jnp

    from visattn_jax.viz import plot_misclassified, plot_training_curve

    data = built.data
    curve = plot_training_curve(workdir / "metrics.jsonl", workdir / "training_curve.png", title=config.name)
    figures = {"figure": str(curve)}
    if isinstance(data, StreamData):
        return figures
    model, objective = built.model, built.objective
    count = min(len(data.test_images), 1000)
    images, labels = data.test_images[:count], data.test_labels[:count]
    inputs = np.asarray(data.prepare(images))

    def predict(params, model_state, x):
        return jnp.argmax(objective.predict(model, params, model_state, x, jax.random.PRNGKey(0)), -1)

    params, model_state = jax.device_get((state.eval_params, state.model_state))
    predictions = np.asarray(jax.jit(predict)(params, model_state, inputs))
    shown = images if images.dtype == np.uint8 else (np.clip(images, 0, 1) * 255).astype(np.uint8)
    plot_misclassified(shown, labels, predictions, workdir / "misclassified.png", class_names=data.class_names)
    if built.figure is not None:
        path = built.figure(
            model,
            {**params, **model_state},
            inputs,
            labels,
            workdir,
            display=images,
            class_names=data.class_names,
            num_classes=config.get("num_classes"),
        )
        if path is not None:
            figures["attention_figure"] = str(path)
    return figures


def train_and_evaluate(config, workdir: str | Path) -> dict[str, Any]:
    """Builds the model, data and task of ``config`` (:func:`build_task`), trains and evaluates them
    (:func:`fit`), writes ``summary.json`` and the figures (training curve, misclassified test images, what the
    model attends to), prints one line. Returns the summary.
    """
    workdir = Path(workdir)
    built = build_task(config)
    state, summary = fit(built.task, config, workdir, progress=config.get("progress", True))
    summary["num_params"] = int(sum(np.size(p) for p in jax.tree_util.tree_leaves(state.params)))
    summary["config"] = config.to_dict()
    if config.get("figure", True) and jax.process_index() == 0:
        summary.update(_figures(built, state, config, workdir))
    if jax.process_index() == 0:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    final = summary["final"]
    rate = summary["train_images_per_second"]
    rate = "throughput unmeasured: fewer than 2 steps" if rate is None else f"{rate:g} train images/s"
    print(
        f"{config.name} on {built.data.description}: test error {final['error_percent']:.2f}% over "
        f"{int(final['count'])} images after {summary['steps']} steps ({rate} on {summary['devices']} "
        f"{summary['platform']} device(s)); results in {workdir}."
    )
    figures = [summary[key] for key in ("figure", "attention_figure") if summary.get(key)]
    if figures:
        print("Figure" + ("s" if len(figures) > 1 else "") + ": " + ", ".join(figures))
    return summary
