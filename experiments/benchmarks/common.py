"""Timing and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3, settle_seconds: float = 0.25) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after warm-up (compiles excluded): at least
    ``warmup`` calls and at least ``settle_seconds`` of calls (sub-millisecond functions measured first in a
    process ran up to 2x slower over their first ~100 ms on this machine).

    ``fn`` must block until its result is ready (``jax.block_until_ready``).
    """
    start = time.perf_counter()
    calls = 0
    while calls < warmup or time.perf_counter() - start < settle_seconds:
        fn()
        calls += 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_throughput(rows: dict[str, float], batch_size: int, reference: str | Sequence[str] | None) -> None:
    """Prints ms/step, images/s and the speed-up over each ``reference`` row (those that were measured): one
    column ``x ref`` for a single reference, ``x ref1``, ``x ref2`` ... (named below the table) for several."""
    references = [reference] if isinstance(reference, str) else list(reference or [])
    references = [r for r in references if r in rows] or [None]
    names = ["x ref"] if len(references) == 1 else [f"x ref{i + 1}" for i in range(len(references))]
    print(f"{'variant':<46}{'ms/step':>10}{'images/s':>11}" + "".join(f"{n:>8}" for n in names))
    for name, seconds in rows.items():
        speedups = "".join(f"{rows[r] / seconds:>8.2f}" if r else f"{'-':>8}" for r in references)
        print(f"{name:<46}{seconds * 1e3:>10.2f}{batch_size / seconds:>11.0f}{speedups}")
    if len(references) > 1:
        for n, r in zip(names, references, strict=True):
            print(f"{n}: {r}")


def import_torch(threads: int):
    """PyTorch with ``threads`` intra-op threads, or None when it is not installed (its rows are skipped)."""
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed (pip install -e '.[reference]'): its reference rows are skipped.")
        return None
    torch.set_num_threads(threads)
    return torch


def torch_training_step(torch, model, images, labels, *, channels_last: bool) -> Callable[[], None]:
    """One PyTorch training step (SGD momentum 0.9, weight decay 1e-4, cross-entropy) of ``model`` on NHWC float
    ``images`` and int ``labels``, eager, NCHW or channels_last: the reference row of the ResNet and Residual
    Attention benchmarks."""
    import numpy as np

    model.train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
    y = torch.from_numpy(labels.astype(np.int64))

    def run():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return run


def parse_only(parser, value: str, choices) -> list[str]:
    """The names of a ``--only a,b`` option, checked against ``choices`` (an argparse error names the valid ones)."""
    only = [n for n in value.split(",") if n]
    unknown = sorted(set(only) - set(choices))
    if unknown:
        parser.error(f"unknown network(s) {unknown}; choose from {sorted(choices)}")
    return only
