"""Timing and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"


def _warm_up(fn: Callable[[], object], warmup: int, settle_seconds: float) -> float:
    """Calls ``fn`` at least ``warmup`` times and for at least ``settle_seconds``; returns seconds per call."""
    start, calls = time.perf_counter(), 0
    while calls < warmup or time.perf_counter() - start < settle_seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3, settle_seconds: float = 0.25) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after warm-up (compiles excluded): at least
    ``warmup`` calls and at least ``settle_seconds`` of calls (sub-millisecond functions measured first in a
    process ran up to 2x slower over their first ~100 ms on this machine).

    ``fn`` must block until its result is ready (``jax.block_until_ready``).
    """
    _warm_up(fn, warmup, settle_seconds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(
    fns: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 3,
    settle_seconds: float = 0.25,
    block_seconds: float = 0.02,
    statistic: Callable[[list[float]], float] = statistics.median,
) -> dict[str, float]:
    """Wall-clock seconds per call of each ``fns[name]()``, measured round-robin in blocks: round ``r`` times a
    block of consecutive calls of every function in turn, so a slow spell of a shared machine (other tenants,
    frequency changes) falls on all of them alike instead of on whichever ran during it. Returns
    ``statistic`` (the median, or e.g. ``min``: interference only adds time) of the ``repeats`` block means.

    A block is one untimed call and then as many timed calls as take about ``block_seconds`` (at least one;
    estimated from the warm-up), so every function is timed warm, as in a loop, not right after another
    function has evicted its data. Warm-up: ``warmup`` calls and ``settle_seconds`` of calls per function, as
    in :func:`median_seconds`. Every ``fn`` must block until its result is ready.
    """
    block = {
        name: max(1, min(1000, round(block_seconds / _warm_up(fn, warmup, settle_seconds)))) for name, fn in fns.items()
    }
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            fn()  # untimed: the block starts warm (caches, buffers), not right after another function's calls
            start = time.perf_counter()
            for _ in range(block[name]):
                fn()
            times[name].append((time.perf_counter() - start) / block[name])
    return {name: statistic(t) for name, t in times.items()}


def print_throughput(rows: dict[str, float], batch_size: int, reference: str | Sequence[str] | None) -> dict[str, Any]:
    """Prints ms/step, images/s and the speed-up over each ``reference`` row (those that were measured): one
    column ``x ref`` for a single reference, ``x ref1``, ``x ref2`` ... (named below the table) for several.

    Returns the table as data (for :func:`write_result`): ``{"batch_size", "references", "rows": {name:
    {"ms_per_step", "images_per_second", "speedup": {reference: x}}}}``."""
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
    measured = [r for r in references if r]
    return {
        "batch_size": batch_size,
        "references": measured,
        "rows": {
            name: {
                "ms_per_step": round(seconds * 1e3, 4),
                "images_per_second": round(batch_size / seconds, 2),
                "speedup": {r: round(rows[r] / seconds, 4) for r in measured},
            }
            for name, seconds in rows.items()
        },
    }


def add_output_argument(parser, name: str) -> None:
    """``--out PATH``: where the benchmark writes its JSON result (default ``experiments/results/benchmarks/
    <name>.json``, the file the docs' tables cite; ``--out ''`` writes nothing)."""
    parser.add_argument(
        "--out", default=str(RESULTS / f"{name}.json"), help="JSON result file ('' for none; default: %(default)s)"
    )


def write_result(path: str | os.PathLike | None, tables: Mapping[str, Any], **fields: Any) -> Path | None:
    """Writes the benchmark's printed tables as JSON to ``path`` (nothing when it is empty), with the command
    line, the machine (platform, device kind and count, CPU count, the XLA_FLAGS in force) and the provenance
    of :func:`visattn_jax.train.loop.provenance` (commit, date, library versions), plus ``fields``. Returns
    the path written."""
    if not path:
        return None
    import jax

    from visattn_jax.train.loop import provenance

    devices = jax.devices()
    record = {
        "command": " ".join([Path(sys.executable).name, "-m", _module_name(), *sys.argv[1:]]),
        "provenance": provenance(),
        "machine": {
            "platform": devices[0].platform,
            "device_kind": devices[0].device_kind,
            "devices": len(devices),
            "cpu_count": os.cpu_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        **fields,
        "tables": dict(tables),
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"Result written to {out}.")
    return out


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None and spec.name else Path(sys.argv[0]).name


def loop_step(task, config, *, fast_conv: bool, batch: Any = None) -> Callable[[], None]:
    """One call runs one step of the training step :func:`visattn_jax.train.loop.fit` runs for ``task`` under
    ``config`` (:func:`~visattn_jax.train.loop.make_train_step`: the config's optimiser and schedule, parameter
    EMA, the state donated, the batch sharded over all devices, the step's metrics), from the state ``fit``
    would start from; ``batch``: the global batch of a host-stream task (on-device tasks make their own).
    Blocks until the step's metrics are ready."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from visattn_jax.train.loop import create_train_state, make_mesh, make_train_step, resolve_epochs

    config = resolve_epochs(config, task.steps_per_epoch)
    mesh = make_mesh(config.get("num_devices"))
    replicated = NamedSharding(mesh, PartitionSpec())
    init_key, key = jax.random.split(jax.random.PRNGKey(config.seed))
    holder = [jax.device_put(create_train_state(task, config, init_key), replicated)]
    key = jax.device_put(key, replicated)
    step = make_train_step(task, mesh, ema_decay=config.get("ema_decay", 0.0) or 0.0, fast_conv=fast_conv)
    if batch is None:  # as fit places them: the task's training data on every device, or the sharded batch
        inputs = jax.device_put(task.train_data, replicated)
    else:
        inputs = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))

    def run() -> None:
        holder[0], metrics = step(holder[0], key, inputs)
        jax.block_until_ready(metrics)

    return run


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
