"""Image classification on distorted digits: the task behind the STN experiments (and the RAM baselines)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from visattn_jax.data.distortions import distort
from visattn_jax.train.loop import Task

__all__ = [
    "Objective",
    "classification_task",
    "cross_entropy_objective",
    "image_classification_task",
    "make_test_set",
    "ram_objective",
    "stream_classification_task",
]


class Objective(NamedTuple):
    """How a classification task initialises and scores its model.

    Attributes:
      loss: ``(model, params, images, labels, key) -> (loss, metrics, logits)``.
      init: ``(model, key, images) -> params``.
    """

    loss: Callable[[nn.Module, Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, dict, jax.Array]]
    init: Callable[[nn.Module, jax.Array, jax.Array], Any]


def _cross_entropy_loss(model, params, images, labels, key):
    del key
    logits = model.apply(params, images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {}, logits


def _ram_loss(model, params, images, labels, key):
    from visattn_jax.ram import ram_loss

    outputs = model.apply(params, images, key)
    loss, metrics = ram_loss(outputs, labels)
    return loss, metrics, outputs["logits"]


#: Softmax cross-entropy of a deterministic classifier ``model.apply(params, images) -> logits``.
cross_entropy_objective = Objective(_cross_entropy_loss, lambda model, key, images: model.init(key, images))
#: RAM's hybrid loss (:func:`visattn_jax.ram.ram_loss`) for one sampled episode per image;
#: ``model.apply(params, images, key)``.
ram_objective = Objective(_ram_loss, lambda model, key, images: model.init(key, images, key))


def make_test_set(distortion: str, images: np.ndarray, *, seed: int, chunk: int = 1000) -> np.ndarray:
    """The fixed test set: ``distortion`` applied to uint8 ``images [N, 28, 28, 1]`` with key ``seed``.

    Chunk ``i`` uses ``fold_in(PRNGKey(seed), i)``, so the result does not depend on the machine's memory.
    Returns float32 ``[N, S, S, 1]`` (host array).
    """
    generate = jax.jit(lambda key, x: distort(distortion, key, x.astype(jnp.float32) / 255.0))
    key = jax.random.PRNGKey(seed)
    parts = [
        np.asarray(generate(jax.random.fold_in(key, i), images[start : start + chunk]))
        for i, start in enumerate(range(0, len(images), chunk))
    ]
    return np.concatenate(parts)


def classification_task(
    model: nn.Module,
    *,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    distortion: str,
    batch_size: int,
    eval_batch_size: int = 1000,
    objective: Objective = cross_entropy_objective,
    eval_seed: int = 0,
) -> Task:
    """A :class:`Task` that trains ``model`` on freshly distorted digits every step.

    Args:
      model: Linen module ``[B, S, S, 1] -> [B, classes]`` logits.
      train_images: uint8 ``[N, 28, 28, 1]`` clean training digits (the task's ``train_data``: ``fit``
        places them on every device once; each step distorts its own sample).
      train_labels: int ``[N]``.
      test_images: float ``[M, S, S, 1]`` the fixed, already distorted test set (:func:`make_test_set`).
      test_labels: int ``[M]``.
      distortion: name in :data:`visattn_jax.data.DISTORTIONS`.
      batch_size: training batch size.
      eval_batch_size: evaluation batch size (the last batch may be smaller).
      objective: the model's loss and initialisation (default: cross-entropy; :data:`ram_objective` for RAM,
        whose ``model.apply`` also takes a key).
      eval_seed: stochastic models are evaluated with one sample per image from keys derived from this seed
        (fixed, so evaluations are comparable).
    """
    if train_images.dtype != np.uint8 or train_images.ndim != 4:
        raise ValueError(f"train_images must be uint8 [N, H, W, C], got {train_images.dtype} {train_images.shape}.")
    if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
        raise ValueError("images and labels must have the same length.")
    train_data = {"image": train_images, "label": np.asarray(train_labels, np.int32)}
    sample_shape = test_images.shape[1:]

    def init(key: jax.Array) -> tuple[Any, dict]:
        dummy = jnp.zeros((1, *sample_shape), jnp.float32)
        return objective.init(model, key, dummy), {}

    def train_batch(key: jax.Array, step: jax.Array, data: dict[str, jax.Array]) -> dict[str, jax.Array]:
        # A fresh sample every step (with replacement), distorted anew, from the step's key.
        key = jax.random.split(jax.random.fold_in(key, step))[0]
        k_index, k_distort = jax.random.split(key)
        digits, labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])
        index = jax.random.randint(k_index, (batch_size,), 0, digits.shape[0])
        images = distort(distortion, k_distort, digits[index].astype(jnp.float32) / 255.0)
        return {"image": images, "label": labels[index]}

    def loss_fn(params, model_state, batch, key):
        loss, metrics, logits = objective.loss(model, params, batch["image"], batch["label"], key)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        return loss, ({**metrics, "accuracy": accuracy}, model_state)

    def eval_fn(params, model_state, batch):
        del model_state
        key = jax.random.fold_in(jax.random.PRNGKey(eval_seed), batch["index"][0])
        _, _, logits = objective.loss(model, params, batch["image"], batch["label"], key)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        return {
            "correct": correct,
            "count": jnp.asarray(batch["label"].shape[0], jnp.float32),
            "loss_sum": jnp.sum(losses),
        }

    eval_batches = [
        {
            "image": test_images[i : i + eval_batch_size],
            "label": np.asarray(test_labels[i : i + eval_batch_size], np.int32),
            "index": np.arange(i, min(i + eval_batch_size, len(test_images)), dtype=np.int32),
        }
        for i in range(0, len(test_images), eval_batch_size)
    ]

    def summarize(totals):
        return {
            "error_percent": 100.0 * (1.0 - totals["correct"] / totals["count"]),
            "loss": totals["loss_sum"] / totals["count"],
            "count": totals["count"],
        }

    return Task(init, train_batch, loss_fn, eval_fn, eval_batches, summarize, train_data=train_data)


def _summarize_error(totals):
    return {
        "error_percent": 100.0 * (1.0 - totals["correct"] / totals["count"]),
        "loss": totals["loss_sum"] / totals["count"],
        "count": totals["count"],
    }


def _stateful_classifier(model: nn.Module, image_shape: tuple[int, ...], label_smoothing: float, preprocess):
    """init / loss_fn / eval_fn of a classifier whose non-``params`` variables (BatchNorm's ``batch_stats``)
    are model state: updated by every training step, used (running averages) by evaluation. Dropout, if the
    model has any, draws from the step's key. ``preprocess`` maps an evaluation batch's images to the model's
    input."""

    def init(key):
        variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        return {"params": variables["params"]}, {k: v for k, v in variables.items() if k != "params"}

    def loss_fn(params, model_state, batch, key):
        variables = {**params, **model_state}
        rngs = {"dropout": key}
        if model_state:
            logits, model_state = model.apply(
                variables, batch["image"], train=True, mutable=list(model_state), rngs=rngs
            )
        else:
            logits = model.apply(variables, batch["image"], train=True, rngs=rngs)
        logits = logits.astype(jnp.float32)
        targets = jax.nn.one_hot(batch["label"], logits.shape[-1], dtype=jnp.float32)
        if label_smoothing:
            targets = optax.smooth_labels(targets, label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        return loss, ({"accuracy": accuracy}, model_state)

    def eval_fn(params, model_state, batch):
        logits = model.apply({**params, **model_state}, preprocess(batch["image"]), train=False)
        logits = logits.astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        # Per-process evaluation (host pipelines) pads batches: padded rows have mask 0 (Task.eval_per_process).
        weight = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
        return {
            "correct": jnp.sum(weight * (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)),
            "count": jnp.sum(weight),
            "loss_sum": jnp.sum(weight * losses),
        }

    return init, loss_fn, eval_fn


def image_classification_task(
    model: nn.Module,
    *,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    batch_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    augment: bool = True,
    label_smoothing: float = 0.0,
    eval_batch_size: int = 1000,
) -> Task:
    """A :class:`Task` for natural images held on device: CIFAR-style training of models with BatchNorm.

    Every step takes the next ``batch_size`` examples of the epoch's permutation
    (:func:`visattn_jax.data.cifar.epoch_indices`: epochs without replacement, the order fixed by the run's
    key), pads, crops and flips them (:func:`~visattn_jax.data.cifar.pad_crop_flip`, if ``augment``), normalises
    them per channel and trains with softmax cross-entropy (with ``label_smoothing``). BatchNorm statistics
    are the task's model state.

    Args:
      model: Linen module, ``apply(variables, images, train=...)`` -> ``[B, classes]`` logits.
      train_images: uint8 ``[N, H, W, C]``; train_labels: int ``[N]``.
      test_images: uint8 ``[M, H, W, C]``; test_labels: int ``[M]`` (the fixed evaluation set, unaugmented).
      batch_size: the global training batch.
      mean, std: per-channel normalisation of images in [0, 1].
    """
    from visattn_jax.data.cifar import epoch_indices, normalize, pad_crop_flip

    for name, images in (("train_images", train_images), ("test_images", test_images)):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"{name} must be uint8 [N, H, W, C], got {images.dtype} {images.shape}.")
    if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
        raise ValueError("images and labels must have the same length.")
    if len(mean) != train_images.shape[-1] or len(std) != train_images.shape[-1]:
        raise ValueError(f"mean and std need one value per channel ({train_images.shape[-1]}), got {mean}, {std}.")
    num_examples = len(train_images)
    if batch_size > num_examples:
        raise ValueError(f"batch_size={batch_size} is larger than the {num_examples} training images.")
    train_data = {"image": train_images, "label": np.asarray(train_labels, np.int32)}

    def train_batch(key, step, data):
        order_key, augment_key = jax.random.split(key)
        # The order comes from the run's key and the epoch (each epoch a permutation); augmentation per step.
        all_images, all_labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])
        index = epoch_indices(order_key, step, all_images.shape[0], batch_size)
        images = all_images[index]
        if augment:
            images = pad_crop_flip(jax.random.fold_in(augment_key, step), images)
        return {"image": normalize(images, mean, std), "label": all_labels[index]}

    init, loss_fn, eval_fn = _stateful_classifier(
        model, train_images.shape[1:], label_smoothing, lambda images: normalize(images, mean, std)
    )
    eval_batches = [
        {
            "image": test_images[i : i + eval_batch_size],
            "label": np.asarray(test_labels[i : i + eval_batch_size], np.int32),
        }
        for i in range(0, len(test_images), eval_batch_size)
    ]
    return Task(
        init,
        train_batch,
        loss_fn,
        eval_fn,
        eval_batches,
        _summarize_error,
        steps_per_epoch=num_examples // batch_size,
        train_data=train_data,
    )


def stream_classification_task(
    model: nn.Module,
    *,
    train_stream: Callable[[int], Any],
    eval_batches: Any,
    image_shape: tuple[int, int, int],
    steps_per_epoch: int,
    label_smoothing: float = 0.0,
) -> Task:
    """A :class:`Task` fed by a host pipeline (ImageNet): the same classifier loss as
    :func:`image_classification_task`, with batches from ``train_stream(start_step)`` (already augmented and
    normalised, e.g. :func:`visattn_jax.data.imagenet.imagenet_stream`) and an evaluation set of normalised
    batches (e.g. :class:`visattn_jax.data.imagenet.ImageNetEval`). Both are this process's share: the stream
    yields its rows of each global batch, the evaluation set its shard (``Task.eval_per_process``).

    Args:
      image_shape: ``(H, W, C)`` of the model's input, for initialisation.
      steps_per_epoch: training steps per pass over the training split (for epoch-based schedules).
    """
    init, loss_fn, eval_fn = _stateful_classifier(model, image_shape, label_smoothing, lambda images: images)
    return Task(
        init,
        None,
        loss_fn,
        eval_fn,
        eval_batches,
        _summarize_error,
        train_stream=train_stream,
        steps_per_epoch=steps_per_epoch,
        eval_per_process=True,
    )
