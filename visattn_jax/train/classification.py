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

__all__ = ["Objective", "classification_task", "cross_entropy_objective", "make_test_set", "ram_objective"]


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
      train_images: uint8 ``[N, 28, 28, 1]`` clean training digits (kept on device, distorted per step).
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
    digits = jnp.asarray(train_images)
    labels = jnp.asarray(train_labels, jnp.int32)
    sample_shape = test_images.shape[1:]

    def init(key: jax.Array) -> Any:
        dummy = jnp.zeros((1, *sample_shape), jnp.float32)
        return objective.init(model, key, dummy)

    def train_batch(key: jax.Array) -> dict[str, jax.Array]:
        k_index, k_distort = jax.random.split(key)
        index = jax.random.randint(k_index, (batch_size,), 0, digits.shape[0])
        images = distort(distortion, k_distort, digits[index].astype(jnp.float32) / 255.0)
        return {"image": images, "label": labels[index]}

    def loss_fn(params, batch, key):
        loss, metrics, logits = objective.loss(model, params, batch["image"], batch["label"], key)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        return loss, {**metrics, "accuracy": accuracy}

    def eval_fn(params, batch):
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

    return Task(init, train_batch, loss_fn, eval_fn, eval_batches, summarize)
