"""The backend that visattn_jax tailors its static choices to, and how to aim them at another one.

Some formulations are chosen when a function is traced, from the platform it will run on: the batched
sampler's gathers (:func:`visattn_jax.grid_sample`: one flat gather over the batch on CPUs, where it is fastest
on one device, and per-image gathers on GPUs and TPUs, which a data-parallel step can split over its chips
without gathering the batch to each of them), the spatial transformer's sampler
(:func:`visattn_jax.stn.resolve_sampler`) and RAM's retina (:func:`visattn_jax.ram.resolve_sensor_method`).
They read :func:`resolve_backend`: ``jax.default_backend()``, unless code runs inside
``with target_backend("tpu"):``, which makes them resolve as on that platform. That is how
``experiments/tpu_compile.py`` compiles, on a CPU host, exactly the program a TPU host would trace. The choice
is static (made at trace time, never in a compiled step), and every formulation gives the same numbers up to
float rounding.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import jax

__all__ = ["resolve_backend", "target_backend"]

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("visattn_jax_target_backend", default=None)


def resolve_backend(backend: str | None = None) -> str:
    """The platform name static choices are made for: ``backend`` if given, else the one set by
    :func:`target_backend`, else ``jax.default_backend()`` (``"cpu"``, ``"gpu"``, ``"tpu"``)."""
    return backend or _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def target_backend(backend: str) -> Iterator[None]:
    """Within the block, visattn_jax's backend-dependent choices resolve as on ``backend`` (``"cpu"``, ``"gpu"``
    or ``"tpu"``). For tracing and compiling for a platform this process does not run on (a TPU topology from a
    CPU host); a function traced inside keeps its choice when it runs. ``jax.jit`` caches a trace per function
    and shapes, not per this setting: trace functions made inside the block (a function traced before it keeps
    the formulation of that first trace).

    >>> import jax.numpy as jnp
    >>> from visattn_jax.backend import resolve_backend, target_backend
    >>> with target_backend("tpu"):
    ...     resolve_backend()
    'tpu'
    """
    if backend not in ("cpu", "gpu", "tpu"):
        raise ValueError(f"backend must be 'cpu', 'gpu' or 'tpu', got {backend!r}.")
    token = _TARGET.set(backend)
    try:
        yield
    finally:
        _TARGET.reset(token)
