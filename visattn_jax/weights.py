"""PyTorch / timm ``state_dict`` -> Flax variables, checked name by name and shape by shape.

The library's networks name their modules as the PyTorch models do, with list indices joined by ``_``
instead of ``.`` (``layer1.0.downsample.1`` is ``layer1_0/downsample_1``), so one rule maps every tensor:

  ========================================  ==========================================================
  PyTorch                                   Flax
  ========================================  ==========================================================
  ``<m>.weight`` of a conv ``[O, I, kh, kw]``  ``params/<m>/kernel`` ``[kh, kw, I, O]``
  ``<m>.weight`` of a linear ``[O, I]``       ``params/<m>/kernel`` ``[I, O]`` (also from a 1x1 conv)
  ``<m>.bias``                                ``params/<m>/bias``
  ``<m>.weight`` / ``.bias`` of a BatchNorm   ``params/<m>/scale`` / ``bias``
  ``<m>.running_mean`` / ``running_var``      ``batch_stats/<m>/mean`` / ``var``
  ``<m>.num_batches_tracked``                 (not needed; accepted and ignored)
  ========================================  ==========================================================

No torch import is needed: the state dict is a mapping from names to arrays (NumPy arrays, or anything
``np.asarray`` takes, such as CPU torch tensors). Export one with
``{k: v.numpy() for k, v in model.state_dict().items()}``, or load a ``.npz`` / safetensors file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from visattn_jax import models

__all__ = ["StateDictMismatchError", "from_torch_state_dict", "load_state_dict", "to_torch_state_dict", "torch_name"]

_INDEX = re.compile(r"^(.*)_(\d+)$")
_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


class StateDictMismatchError(ValueError):
    """The state dict does not fit the network: lists every missing, unexpected and mis-shaped tensor."""


def torch_name(path: tuple[str, ...]) -> str:
    """The PyTorch state-dict key of a Flax variable path such as ``("params", "layer1_0", "conv1", "kernel")``."""
    collection, *modules, leaf = path
    if (collection, leaf) not in _LEAF:
        raise ValueError(f"No PyTorch counterpart for the variable {'/'.join(path)}.")
    parts = []
    for module in modules:
        match = _INDEX.match(module)
        parts.append(f"{match.group(1)}.{match.group(2)}" if match else module)
    return ".".join([*parts, _LEAF[collection, leaf]])


def _to_flax(array: np.ndarray, flax_shape: tuple[int, ...]) -> np.ndarray | None:
    """Converts a PyTorch tensor to the Flax layout of ``flax_shape``; None when the shapes do not fit."""
    if len(flax_shape) == 4 and array.ndim == 4:
        array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif len(flax_shape) == 2 and array.ndim in (2, 4):
        if array.ndim == 4 and array.shape[2:] != (1, 1):
            return None
        array = array.reshape(array.shape[:2]).T  # [O, I] (or a 1x1 conv) -> [I, O]
    return array if array.shape == tuple(flax_shape) else None


def load_state_dict(template: Any, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Fills the variables of ``template`` (arrays or shape structs, as ``model.init`` / ``jax.eval_shape``
    return them) from ``state_dict``.

    Raises:
      StateDictMismatchError: naming every missing, unexpected and mis-shaped tensor at once.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(template))
    expected = {torch_name(path): path for path in flat}
    modules = {key.rsplit(".", 1)[0] for key in expected}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(
        key
        for key in state_dict
        if key not in expected and not (key.endswith(".num_batches_tracked") and key.rsplit(".", 1)[0] in modules)
    )
    misshaped, out = [], {}
    for key, path in expected.items():
        if key not in state_dict:
            continue
        array = np.asarray(state_dict[key])
        converted = _to_flax(array, tuple(flat[path].shape))
        if converted is None:
            misshaped.append(f"{key}: got {tuple(array.shape)}, the network needs {_torch_shape(flat[path].shape)}")
            continue
        out[path] = jnp.asarray(converted, dtype=flat[path].dtype)
    if missing or unexpected or misshaped:
        lines = [f"The state dict does not fit the network ({len(expected)} tensors expected):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if items:
                lines.append(f"  {len(items)} {title}: " + "; ".join(items))
        raise StateDictMismatchError("\n".join(lines))
    return flax.traverse_util.unflatten_dict(out)


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if len(flax_shape) == 2:
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)


def from_torch_state_dict(name: str, state_dict: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Flax variables (``{"params": ..., "batch_stats": ...}``) of the registered network ``name`` built
    from a PyTorch state dict with that network's key names (timm's, for networks timm has).

    Args:
      name: a name from :func:`visattn_jax.models.list_models` (e.g. ``"resnet50"``).
      state_dict: PyTorch key -> array (NumPy or anything ``np.asarray`` takes).
      **overrides: model fields, e.g. ``num_classes=10`` for a fine-tuned head.

    Raises:
      ValueError: unknown model name.
      StateDictMismatchError: every missing, unexpected and mis-shaped tensor, named.
    """
    model = models.create_model(name, **overrides)
    size = models.input_size(name)
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False))
    return load_state_dict(template, state_dict)


def to_torch_state_dict(variables: Any) -> dict[str, np.ndarray]:
    """Flax variables -> a PyTorch ``state_dict`` of NumPy arrays (the inverse of :func:`load_state_dict`): conv
    kernels ``[kh, kw, I, O]`` -> ``[O, I, kh, kw]``, dense kernels ``[I, O]`` -> ``[O, I]``, BatchNorm
    statistics as ``running_mean`` / ``running_var``. Load it with ``model.load_state_dict({k:
    torch.from_numpy(v) ...}, strict=False)`` (``num_batches_tracked`` is not produced)."""
    out = {}
    for path, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(jax.device_get(variables))).items():
        array = np.asarray(value)
        if path[-1] == "kernel":
            array = array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T
        out[torch_name(path)] = np.array(array, order="C")  # a writable copy (torch.from_numpy wants one)
    return out
