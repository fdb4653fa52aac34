"""``train_and_evaluate(config, workdir)``: the one entry point that runs a configured experiment."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from visattn_jax.data.distortions import distort
from visattn_jax.data.mnist import load_image_dataset
from visattn_jax.sampling import grid_sample
from visattn_jax.stn import FCN, stn_classifier
from visattn_jax.train.classification import classification_task, cross_entropy_objective, make_test_set, ram_objective
from visattn_jax.train.loop import Task, fit

__all__ = ["BuiltTask", "ConfigError", "build_task", "load_digits", "load_natural_images", "train_and_evaluate"]


class ConfigError(ValueError):
    """A config names something that does not exist (task, model, transform, dtype ...); raised before any data
    is loaded or any folder is created. The message names the field and the valid choices."""


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
            sensor_method=config.get("sensor_method", "auto"),
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

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_natural_images(config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 train / test images and int32 labels of ``config.dataset``: ``cifar10`` through
    :func:`visattn_jax.data.cifar.load_cifar10` (TFDS or the offline copy in ``config.cifar10_dir``), any
    other TFDS image classification set (``cifar100``, ``svhn_cropped``) through TFDS. Cut to
    ``config.train_limit`` / ``config.test_limit`` when set."""
    from visattn_jax.data.cifar import load_cifar10

    kwargs = {"data_dir": config.get("data_dir")}
    if config.dataset == "cifar10":
        train = load_cifar10("train", source_dir=config.get("cifar10_dir"), **kwargs)
        test = load_cifar10("test", source_dir=config.get("cifar10_dir"), **kwargs)
    else:
        train = load_image_dataset(config.dataset, "train", **kwargs)
        test = load_image_dataset(config.dataset, "test", **kwargs)
    (train_x, train_y), (test_x, test_y) = train, test
    if config.get("train_limit"):
        train_x, train_y = train_x[: config.train_limit], train_y[: config.train_limit]
    if config.get("test_limit"):
        test_x, test_y = test_x[: config.test_limit], test_y[: config.test_limit]
    return train_x, train_y, test_x, test_y


def _image_experiment(config, workdir: Path) -> dict[str, Any]:
    """Natural-image classification (CIFAR): a registered network, BatchNorm, epochs, augmentation."""
    import jax.numpy as jnp

    from visattn_jax.viz import plot_misclassified, plot_training_curve

    built = build_task(config)
    model, task, test_x, test_y = built.model, built.task, built.test_images, built.test_labels
    state, summary = fit(task, config, workdir, progress=config.get("progress", True))
    summary["num_params"] = int(sum(np.size(p) for p in jax.tree_util.tree_leaves(state.params)))
    summary["config"] = config.to_dict()
    if config.get("figure", True) and test_x is not None and jax.process_index() == 0:
        plot_training_curve(workdir / "metrics.jsonl", workdir / "training_curve.png", title=config.name)
        variables = jax.device_get({**state.eval_params, **state.model_state})
        predict = jax.jit(lambda v, x: jnp.argmax(task_model_logits(model, v, x, config), -1))
        count = min(len(test_x), 1000)
        predictions = np.asarray(predict(variables, test_x[:count]))
        names = CIFAR10_CLASSES if config.dataset == "cifar10" else None
        plot_misclassified(
            test_x[:count], test_y[:count], predictions, workdir / "misclassified.png", class_names=names
        )
        summary["figure"] = str(workdir / "training_curve.png")
        attention = _attention_figure(model, variables, test_x[:count], test_y[:count], config, workdir)
        if attention is not None:
            summary["attention_figure"] = str(attention)
    return summary


class BuiltTask(NamedTuple):
    """What :func:`build_task` makes of a config: the loop's task, the model, the fixed test images the task
    evaluates on (distorted digits, or uint8 natural images; None for host streams) and their labels, and the
    figure function of the digit tasks (None for the others)."""

    task: Task
    model: Any
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    figure: Callable | None = None


# Examples per split and image shape of the datasets the configs name (TFDS's counts), for shapes-only builds.
DATASET_SHAPES = {
    "mnist": (60_000, 10_000, (28, 28, 1)),
    "cifar10": (50_000, 10_000, (32, 32, 3)),
    "cifar100": (50_000, 10_000, (32, 32, 3)),
    "svhn_cropped": (73_257, 26_032, (32, 32, 3)),
}


def _placeholder_data(config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Zero uint8 images and int32 labels with the shapes of ``config.dataset`` (cut to the config's limits):
    nothing is read, and ``np.zeros`` does not touch the memory until it is written."""
    if config.dataset not in DATASET_SHAPES:
        raise ConfigError(f"No known shapes for dataset {config.dataset!r}; known: {sorted(DATASET_SHAPES)}.")
    train, test, shape = DATASET_SHAPES[config.dataset]
    train = min(train, config.get("train_limit") or train)
    test = min(test, config.get("test_limit") or test)
    images = lambda n: np.zeros((n, *shape), np.uint8)  # noqa: E731
    return images(train), np.zeros(train, np.int32), images(test), np.zeros(test, np.int32)


def _digit_model(config):
    """The model, objective and figure function of a digit config (``config.task`` stn or ram), and its input
    size (the distortion's canvas). Raises :class:`ConfigError` for names that do not exist."""
    try:
        digit = jax.ShapeDtypeStruct((2, 28, 28, 1), np.float32)  # cluttered needs 2
        input_size = jax.eval_shape(lambda x: distort(config.distortion, jax.random.PRNGKey(0), x), digit).shape[1]
        model, objective, figure_fn = _TASKS[config.task](config, input_size)
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from error
    return model, objective, figure_fn, input_size


def build_task(config, *, shapes_only: bool = False) -> BuiltTask:
    """The :class:`~visattn_jax.train.loop.Task` of any experiment config (``config.task``: ``stn``, ``ram`` or
    ``image``), with its model: the one place a config becomes something :func:`fit` can train.

    Loads the config's data (MNIST, CIFAR, TFDS image sets; ImageNet as a host stream), or with
    ``shapes_only`` reads nothing: the task's training data and test set are zero arrays of the real shapes
    (``fit`` on them would train on zeros; compiling the task's steps, e.g. for a TPU topology, needs only
    those shapes). Raises :class:`ConfigError` for a config that names something that does not exist, before
    any data is read.
    """
    if config.task not in (*_TASKS, "image"):
        raise ConfigError(f"Unknown task {config.task!r}; choose one of {sorted((*_TASKS, 'image'))}.")
    if config.task != "image":
        # The model first: a config naming something that does not exist fails before the data loads.
        model, objective, figure_fn, input_size = _digit_model(config)
        if shapes_only:
            train_x, train_y, test_x, test_y = _placeholder_data(config)
            test_images = np.zeros((len(test_x), input_size, input_size, 1), np.float32)
        else:
            train_x, train_y, test_x, test_y = load_digits(config)
            test_images = make_test_set(config.distortion, test_x, seed=config.test_seed)
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
        return BuiltTask(task, model, test_images, test_y, figure_fn)

    from visattn_jax.train.classification import image_classification_task

    model = image_model(config)
    if config.dataset.startswith("imagenet"):
        return BuiltTask(_imagenet_task(config, model, shapes_only=shapes_only), model, None, None)
    if shapes_only:
        train_x, train_y, test_x, test_y = _placeholder_data(config)
    else:
        train_x, train_y, test_x, test_y = load_natural_images(config)
        if config.get("label_noise", 0.0):
            from visattn_jax.data.cifar import corrupt_labels

            train_y = corrupt_labels(train_y, config.label_noise, config.num_classes, seed=config.seed)
    task = image_classification_task(
        model,
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        batch_size=config.batch_size,
        mean=tuple(config.mean),
        std=tuple(config.std),
        augment=config.augment,
        label_smoothing=config.label_smoothing,
    )
    return BuiltTask(task, model, test_x, test_y)


def image_model(config):
    """The network of a natural-image config: ``config.model`` from :mod:`visattn_jax.models` with
    ``config.model_overrides``, ``config.dtype``, and ``config.se`` (SqueezeExcite fields over the network's own
    SE blocks, for the SENet ablations of ``experiments/configs/senet.py``). Raises :class:`ConfigError`."""
    import jax.numpy as jnp

    from visattn_jax.models import create_model
    from visattn_jax.se import se_attention

    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if config.dtype not in dtypes:
        raise ConfigError(f"Unknown dtype {config.dtype!r}; choose float32 or bfloat16.")
    overrides = dict(config.get("model_overrides") or {})
    try:
        model = create_model(config.model, num_classes=config.num_classes, dtype=dtypes[config.dtype], **overrides)
        if config.get("se"):
            if getattr(model, "attention", None) is None:
                raise ValueError(f"config.se needs a network with SE blocks; {config.model} has none.")
            model = model.clone(attention=se_attention(**{**model.attention.keywords, **dict(config.se)}))
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error).strip("'\"")) from error
    return model


def _attention_figure(model, variables, images, labels, config, workdir: Path) -> Path | None:
    """What the trained network's attention does on test images: SE networks get the SENet paper's Fig. 6 (mean
    excitation per channel for four classes at an early, a middle and the last SE block), Residual Attention
    networks their soft masks of each stage over six images. None for networks without either."""
    from visattn_jax.data.cifar import normalize
    from visattn_jax.viz import plot_attention_masks, plot_excitations, sown_values

    x = normalize(images, tuple(config.mean), tuple(config.std))
    names = CIFAR10_CLASSES if config.dataset == "cifar10" else None
    for leaf in ("excitation", "mask"):
        try:
            values = sown_values(model, variables, x[:6] if leaf == "mask" else x, leaf)
        except ValueError:
            continue
        if leaf == "excitation":
            blocks = list(values)
            chosen = [blocks[0], blocks[len(blocks) // 2], blocks[-1]] if len(blocks) >= 3 else blocks
            path = workdir / "excitations.png"
            return plot_excitations(
                {b: values[b] for b in chosen},
                labels,
                path,
                classes=[0, 3, 5, 8][: config.num_classes],
                class_names=names,
            )
        # The last module of each stage ("stage2_0", "stage2_1" -> "stage2_1").
        stages: dict[str, np.ndarray] = {}
        for name, mask in values.items():
            stages[name.split("_")[0]] = mask
        return plot_attention_masks(images[:6], stages, workdir / "attention_masks.png")
    return None


def _imagenet_task(config, model, shapes_only: bool = False):
    """ImageNet through the host tf.data pipeline (visattn_jax.data.imagenet), one shard per process.
    ``shapes_only``: no pipeline (the step is given its batch), no evaluation set, ILSVRC 2012's 1,281,167
    training images for the epochs."""
    import functools

    from visattn_jax.data.imagenet import ImageNetEval, imagenet_num_examples, imagenet_stream
    from visattn_jax.train.classification import stream_classification_task

    if shapes_only:
        return stream_classification_task(
            model,
            train_stream=lambda start: iter(()),
            eval_batches=[],
            image_shape=(config.image_size, config.image_size, 3),
            steps_per_epoch=1_281_167 // config.batch_size,
            label_smoothing=config.label_smoothing,
        )
    common = dict(image_size=config.image_size, mean=tuple(config.mean), std=tuple(config.std), name=config.dataset)
    common["data_dir"] = config.get("data_dir")
    stream = functools.partial(imagenet_stream, global_batch_size=config.batch_size, seed=config.seed, **common)
    eval_batches = ImageNetEval(batch_size=config.eval_batch_size, split=config.eval_split, **common)
    num_train = imagenet_num_examples("train", name=config.dataset, data_dir=config.get("data_dir"))
    return stream_classification_task(
        model,
        train_stream=stream,
        eval_batches=eval_batches,
        image_shape=(config.image_size, config.image_size, 3),
        steps_per_epoch=num_train // config.batch_size,
        label_smoothing=config.label_smoothing,
    )


def task_model_logits(model, variables, images_uint8, config):
    """Logits of ``model`` for uint8 images, normalised as the config's task normalises them."""
    from visattn_jax.data.cifar import normalize

    return model.apply(variables, normalize(images_uint8, tuple(config.mean), tuple(config.std)), train=False)


def train_and_evaluate(config, workdir: str | Path) -> dict[str, Any]:
    """Loads data, builds the model and task from ``config``, trains, evaluates, writes summary and figure.

    ``config.task`` selects the experiment family: ``"stn"`` (distorted-MNIST classifiers of the STN paper),
    ``"ram"`` (RAM and its baselines on MNIST / translated / cluttered MNIST) or ``"image"`` (natural-image
    classification with a registered network: CIFAR-10 / -100).
    Returns the summary that is also written to ``workdir/summary.json``.
    """
    if config.task not in (*_TASKS, "image"):
        raise ConfigError(f"Unknown task {config.task!r}; choose one of {sorted((*_TASKS, 'image'))}.")
    workdir = Path(workdir)
    if config.task == "image":
        summary = _image_experiment(config, workdir)
        _write_summary(workdir, summary)
        final = summary["final"]
        print(
            f"{config.name} on {config.dataset}: test error {final['error_percent']:.2f}% over {int(final['count'])} "
            f"images after {summary['steps']} steps ({_rate(summary)} on "
            f"{summary['devices']} {summary['platform']} device(s)); results in {workdir}."
        )
        _print_figures(summary)
        return summary
    built = build_task(config)
    model, task, test_images, figure_fn = built.model, built.task, built.test_images, built.figure
    state, summary = fit(task, config, workdir, progress=config.get("progress", True))
    params = jax.device_get(state.params)
    summary["num_params"] = int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))
    summary["config"] = config.to_dict()
    if config.get("figure", True) and figure_fn is not None and jax.process_index() == 0:
        figure = figure_fn(model, params, test_images, workdir / f"{config.task}_figure.png")
        summary["figure"] = str(figure) if figure else None
    _write_summary(workdir, summary)
    final = summary["final"]
    print(
        f"{config.name} on {config.distortion}: test error {final['error_percent']:.2f}% over "
        f"{int(final['count'])} images after {config.num_steps} steps ({_rate(summary)} "
        f"on {summary['devices']} {summary['platform']} device(s)); results in {workdir}."
    )
    _print_figures(summary)
    return summary


def _write_summary(workdir: Path, summary: dict[str, Any]) -> None:
    """``summary.json``, written by process 0 only (a multi-host run's processes share the work folder)."""
    if jax.process_index() == 0:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def _rate(summary: dict[str, Any]) -> str:
    rate = summary["train_images_per_second"]
    return "throughput unmeasured: fewer than 2 steps" if rate is None else f"{rate:g} train images/s"


def _print_figures(summary: dict[str, Any]) -> None:
    figures = [summary[key] for key in ("figure", "attention_figure") if summary.get(key)]
    if figures:
        print("Figure" + ("s" if len(figures) > 1 else "") + ": " + ", ".join(figures))
