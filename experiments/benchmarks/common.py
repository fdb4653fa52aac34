"""Timing and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls (compiles excluded).

    ``fn`` must block until its result is ready (``jax.block_until_ready``).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_throughput(rows: dict[str, float], batch_size: int, reference: str | None) -> None:
    """Prints ms/step, images/s and the speed-up over the ``reference`` row (if it was measured)."""
    print(f"{'variant':<46}{'ms/step':>10}{'images/s':>11}{'x ref':>8}")
    base = rows.get(reference) if reference else None
    for name, seconds in rows.items():
        speedup = f"{base / seconds:>8.2f}" if base else f"{'-':>8}"
        print(f"{name:<46}{seconds * 1e3:>10.2f}{batch_size / seconds:>11.0f}{speedup}")


def import_torch(threads: int):
    """PyTorch with ``threads`` intra-op threads, or None when it is not installed (its rows are skipped)."""
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed (pip install -e '.[reference]'): its reference rows are skipped.")
        return None
    torch.set_num_threads(threads)
    return torch
