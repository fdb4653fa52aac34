"""The classification task: any model of :mod:`visattn_jax.models` on any data of :mod:`visattn_jax.data`.

:func:`classification_task` turns a model, its :class:`~visattn_jax.objectives.Objective` and a dataset
(:class:`~visattn_jax.data.ClassificationData` in memory, or a host :class:`~visattn_jax.data.StreamData`)
into the :class:`~visattn_jax.train.loop.Task` that :func:`~visattn_jax.train.loop.fit` trains. It never asks
which family the model belongs to: the objective says how to train and evaluate it, the data how to draw a
batch. :func:`image_classification_task` and :func:`stream_classification_task` are shorthands for
cross-entropy on natural images from arrays and on a host stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from visattn_jax.data.datasets import ClassificationData, StreamData, natural_images
from visattn_jax.objectives import Objective, cross_entropy_objective
from visattn_jax.train.loop import Task

__all__ = ["classification_task", "image_classification_task", "stream_classification_task"]


def _summarize_error(totals):
    return {
        "error_percent": 100.0 * (1.0 - totals["correct"] / totals["count"]),
        "loss": totals["loss_sum"] / totals["count"],
        "count": totals["count"],
    }


def classification_task(
    model: nn.Module,
    data: ClassificationData | StreamData,
    *,
    objective: Objective | None = None,
    eval_batch_size: int = 1000,
    eval_seed: int = 0,
) -> Task:
    """The :class:`Task` that trains ``model`` with ``objective`` on ``data`` and reports its test error.

    Training: ``data.train_batch`` makes each step's batch on the device (or ``data.train_stream`` yields it),
    ``objective.loss`` scores it in training mode (model state such as BatchNorm statistics is updated).
    Evaluation: ``objective.predict`` on the fixed test set (``data.prepare``-d), summed into the test error,
    the mean cross-entropy and the count; a stochastic model (RAM) draws batch ``b``'s sample from
    ``fold_in(PRNGKey(eval_seed), index of its first image)``, so evaluations are comparable across steps.

    Args:
      model: a Linen module ``[B, S, S, C]`` images -> logits (or RAM's output dict, with its objective).
      data: :func:`visattn_jax.data.load_data`'s result, or one made by :func:`~visattn_jax.data.natural_images`
        / :func:`~visattn_jax.data.distorted_digits` / a :class:`~visattn_jax.data.StreamData`.
      objective: default :func:`~visattn_jax.objectives.cross_entropy_objective` (the registry names each
        model's: :func:`visattn_jax.models.model_info`).
      eval_batch_size: evaluation batch size for in-memory test sets (the last batch may be smaller).
      eval_seed: the evaluation keys of stochastic models.
    """
    objective = cross_entropy_objective() if objective is None else objective
    stream = isinstance(data, StreamData)
    prepare = (lambda images: images) if stream else data.prepare

    def init(key: jax.Array) -> tuple[Any, dict]:
        return objective.init(model, key, jnp.zeros((1, *data.input_shape), jnp.float32))

    def loss_fn(params, model_state, batch, key):
        loss, metrics, logits, model_state = objective.loss(
            model, params, model_state, batch["image"], batch["label"], key
        )
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        return loss, ({**metrics, "accuracy": accuracy}, model_state)

    def eval_fn(params, model_state, batch):
        first = batch["index"][0] if "index" in batch else 0
        key = jax.random.fold_in(jax.random.PRNGKey(eval_seed), first)
        logits = objective.predict(model, params, model_state, prepare(batch["image"]), key).astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        # Per-process evaluation (host pipelines) pads batches: padded rows have mask 0 (Task.eval_per_process).
        weight = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
        return {
            "correct": jnp.sum(weight * (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)),
            "count": jnp.sum(weight),
            "loss_sum": jnp.sum(weight * losses),
        }

    if stream:
        return Task(
            init,
            None,
            loss_fn,
            eval_fn,
            data.eval_batches,
            _summarize_error,
            train_stream=data.train_stream,
            steps_per_epoch=data.steps_per_epoch,
            eval_per_process=True,
        )
    images, labels = data.test_images, data.test_labels
    eval_batches = [
        {
            "image": images[i : i + eval_batch_size],
            "label": np.asarray(labels[i : i + eval_batch_size], np.int32),
            "index": np.arange(i, min(i + eval_batch_size, len(images)), dtype=np.int32),
        }
        for i in range(0, len(images), eval_batch_size)
    ]
    return Task(
        init,
        data.train_batch,
        loss_fn,
        eval_fn,
        eval_batches,
        _summarize_error,
        steps_per_epoch=data.steps_per_epoch,
        train_data=data.train,
    )


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
    """Cross-entropy training of ``model`` on natural images held on the device (CIFAR-style): shorthand for
    :func:`classification_task` on :func:`visattn_jax.data.natural_images` (epochs without replacement,
    pad-crop-flip if ``augment``, per-channel normalisation by ``mean`` / ``std``) with
    :func:`~visattn_jax.objectives.cross_entropy_objective` (``label_smoothing``).

    Args:
      model: Linen module, ``apply(variables, images, train=...)`` -> ``[B, classes]`` logits.
      train_images: uint8 ``[N, H, W, C]``; train_labels: int ``[N]``.
      test_images: uint8 ``[M, H, W, C]``; test_labels: int ``[M]`` (the fixed evaluation set, unaugmented).
      batch_size: the global training batch.
    """
    data = natural_images(
        train_images, train_labels, test_images, test_labels, batch_size=batch_size, mean=mean, std=std, augment=augment
    )
    return classification_task(
        model, data, objective=cross_entropy_objective(label_smoothing), eval_batch_size=eval_batch_size
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
    """Cross-entropy training fed by a host pipeline (ImageNet): shorthand for :func:`classification_task` on a
    :class:`~visattn_jax.data.StreamData` with batches from ``train_stream(start_step)`` (already augmented and
    normalised, e.g. :func:`visattn_jax.data.imagenet.imagenet_stream`) and an evaluation set of normalised
    batches (e.g. :class:`visattn_jax.data.imagenet.ImageNetEval`). Both are this process's share: the stream
    yields its rows of each global batch, the evaluation set its shard (``Task.eval_per_process``).

    Args:
      image_shape: ``(H, W, C)`` of the model's input, for initialisation.
      steps_per_epoch: training steps per pass over the training split (for epoch-based schedules).
    """
    data = StreamData(train_stream, eval_batches, tuple(image_shape), steps_per_epoch, "stream")
    return classification_task(model, data, objective=cross_entropy_objective(label_smoothing))
