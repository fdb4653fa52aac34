"""Objectives: how a classifier is initialised, trained and asked for its prediction.

Every registered model (:mod:`visattn_jax.models`) names its objective, so the training task
(:func:`visattn_jax.train.classification_task`) and the experiment entry point never ask which family a model
belongs to. Two exist:

- :func:`cross_entropy_objective`: softmax cross-entropy (optionally with label smoothing) of any deterministic
  classifier ``model.apply(variables, images[, train=...]) -> logits``. A model whose ``__call__`` takes
  ``train`` gets ``train=True`` in training and ``train=False`` in evaluation; its non-``params`` collections
  (BatchNorm's ``batch_stats``) are model state, updated by every training step. Dropout draws from the
  step's key. The STN classifiers, ResNets, SE / CBAM networks and Residual Attention networks use it.
- :func:`reinforce_objective`: RAM's hybrid loss (:func:`visattn_jax.ram.ram_loss`: cross-entropy of the
  action network + REINFORCE with a learned baseline) on one sampled episode per image:
  ``model.apply(variables, images, key) -> {"logits", "log_probs", "baselines", ...}``.

An :class:`Objective` is a triple of pure functions of the model; nothing in it is a family switch at run time
(the ``train`` argument is read from the module's signature once, at trace time).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

__all__ = ["Objective", "apply_eval", "cross_entropy_objective", "eval_kwargs", "reinforce_objective", "takes_argument"]

Params = Any
ModelState = Any


class Objective(NamedTuple):
    """How a classification task initialises, trains and evaluates its model.

    Attributes:
      init: ``(model, key, images [1, H, W, C]) -> (params, model_state)``: ``params`` is ``{"params": ...}``,
        ``model_state`` the other collections (``{}`` for models without state).
      loss: ``(model, params, model_state, images, labels, key) -> (loss, metrics, logits, model_state)`` in
        training mode: the scalar to minimise, a dict of scalar metrics, the ``[B, classes]`` logits and the
        updated model state.
      predict: ``(model, params, model_state, images, key) -> logits [B, classes]`` in evaluation mode
        (``key`` drives stochastic models, e.g. RAM's sampled glimpses; deterministic models ignore it).
    """

    init: Callable[[nn.Module, jax.Array, jax.Array], tuple[Params, ModelState]]
    loss: Callable[..., tuple[jax.Array, dict[str, jax.Array], jax.Array, ModelState]]
    predict: Callable[[nn.Module, Params, ModelState, jax.Array, jax.Array], jax.Array]


def takes_argument(model: nn.Module, name: str) -> bool:
    """Whether ``model.__call__`` has a parameter ``name`` (e.g. ``"train"``, ``"key"``); read at trace time."""
    return name in inspect.signature(type(model).__call__).parameters


def eval_kwargs(model: nn.Module) -> dict[str, bool]:
    """``{"train": False}`` for a module whose ``__call__`` takes ``train``, else ``{}``: evaluation-mode keyword
    arguments (initialisation, prediction, counting)."""
    return {"train": False} if takes_argument(model, "train") else {}


def _split(variables: dict) -> tuple[Params, ModelState]:
    return {"params": variables["params"]}, {k: v for k, v in variables.items() if k != "params"}


def apply_eval(model: nn.Module, variables: Any, images: jax.Array, key: jax.Array | None = None) -> Any:
    """``model``'s evaluation-mode output for ``images``: ``train=False`` for modules that take it, a key (default
    ``PRNGKey(0)``) for modules that take one (RAM: its output dict). For counting, compiling and figures of
    any registered model."""
    kwargs = eval_kwargs(model)
    if takes_argument(model, "key"):
        return model.apply(variables, images, jax.random.PRNGKey(0) if key is None else key, **kwargs)
    return model.apply(variables, images, **kwargs)


def cross_entropy_objective(label_smoothing: float = 0.0) -> Objective:
    """Softmax cross-entropy of a deterministic classifier (with ``label_smoothing``, optax's convention: the
    target is ``(1 - s) * one_hot + s / classes``). Logits are cast to float32 before the loss (bfloat16
    networks)."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")

    def init(model, key, images):
        return _split(model.init(key, images, **eval_kwargs(model)))

    def loss(model, params, model_state, images, labels, key):
        variables = {**params, **model_state}
        if takes_argument(model, "train"):
            rngs = {"dropout": key}
            if model_state:
                logits, model_state = model.apply(variables, images, train=True, mutable=list(model_state), rngs=rngs)
            else:
                logits = model.apply(variables, images, train=True, rngs=rngs)
        else:
            logits = model.apply(variables, images)
        logits = logits.astype(jnp.float32)
        if label_smoothing:
            targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32), label_smoothing)
            value = optax.softmax_cross_entropy(logits, targets).mean()
        else:
            value = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return value, {}, logits, model_state

    def predict(model, params, model_state, images, key):
        del key
        return model.apply({**params, **model_state}, images, **eval_kwargs(model)).astype(jnp.float32)

    return Objective(init, loss, predict)


def reinforce_objective(label_smoothing: float = 0.0) -> Objective:
    """RAM's hybrid loss (:func:`visattn_jax.ram.ram_loss`) on one sampled episode per image; evaluation scores
    one sampled trajectory per image, from the key it is given. ``label_smoothing`` must be 0 (the reward is
    the correctness of the hard prediction; a smoothed target has no place in it)."""
    if label_smoothing:
        raise ValueError(f"RAM's hybrid loss has no label smoothing; got label_smoothing={label_smoothing}.")

    def init(model, key, images):
        return _split(model.init(key, images, key))

    def loss(model, params, model_state, images, labels, key):
        from visattn_jax.ram import ram_loss

        outputs = model.apply({**params, **model_state}, images, key)
        value, metrics = ram_loss(outputs, labels)
        return value, metrics, outputs["logits"], model_state

    def predict(model, params, model_state, images, key):
        return model.apply({**params, **model_state}, images, key)["logits"]

    return Objective(init, loss, predict)
