"""Compiles an experiment's own training and evaluation steps for a TPU topology, on this (CPU) host.

    .venv/bin/python -m experiments.tpu_compile --config=experiments/configs/cifar.py:resnet20,short40 \
        --topology=v5e:2x2 [--batch_size=N] [--dtype=bfloat16] [--config.<field>=...]

Needs libtpu (``pip install -e '.[tpu]'``, which pins it to the installed jax). ``jax.experimental.topologies``
gives the devices of a TPU topology without a TPU, and ``jit(...).lower(<ShapeDtypeStructs sharded over a mesh of
them>).compile()`` runs XLA's real TPU compiler. What is compiled is what ``fit`` runs: the step of
``visattn_jax.train.make_train_step`` for the task ``build_task`` makes of the config (shapes only: no dataset
file is read), the global batch split over every chip of a 1-D ``("data",)`` mesh, state and training data
replicated, and ``jit(task.eval_fn)`` on one evaluation batch (split over the chips when it divides, replicated
otherwise, as ``fit`` places it).

Prints a table and, as its last line, one JSON object: ``config``, ``topology``, ``devices``, ``device_kind``,
``global_batch``, ``flops_per_example`` (the training step's flops summed over the chips, over the global batch;
XLA's count, which skips padding taps), ``multiply_adds_per_example`` (the forward pass's multiply-adds counted
from its jaxpr, every tap) and ``flops_over_6_macs`` (training is about 3 x 2 x the forward multiply-adds; less
where many taps fall into padding), ``forward_flops_per_example`` (XLA's count for the compiled evaluation step)
and ``flops_over_3_forward`` (training against 3 forward passes: the same rule in XLA's own counting),
``bytes_per_device`` (``argument``, ``output``, ``alias``, ``temp``, ``total`` = argument + output - alias +
temp), ``hbm_per_device`` and its ``hbm_source``, ``fits``, ``collectives`` (counts of each collective in the
compiled training step's HLO), ``compile_seconds``, and the same for the evaluation step under ``eval``. A step
that does not compile for TPU exits 1 with the compiler's message (and ``error`` in the JSON line).

This proves that the steps compile for TPU and what memory and flops they need there; it measures no TPU time.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

# libtpu asks the machine which TPU it is on at start-up; on a host without one these two quiet it (and they
# are only defaults: a TPU VM's own settings win). They must be set before jax starts a backend.
os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compiling needs no exclusive hold on a chip

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402
from ml_collections import config_flags  # noqa: E402

# High-bandwidth memory per device (one JAX device per chip on these generations), from Google Cloud's TPU pages.
HBM_BYTES = {
    "TPU v5 lite": (16 * 2**30, "https://cloud.google.com/tpu/docs/v5e (16 GiB HBM2 per chip)"),
    "TPU v6 lite": (32 * 2**30, "https://cloud.google.com/tpu/docs/v6e (32 GiB HBM per chip)"),
    "TPU v5": (95 * 2**30, "https://cloud.google.com/tpu/docs/v5p (95 GiB HBM2e per chip)"),
    "TPU v4": (32 * 2**30, "https://cloud.google.com/tpu/docs/v4 (32 GiB HBM2 per chip)"),
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


class CompileError(RuntimeError):
    """A step that XLA's TPU compiler rejects; the message is the compiler's."""


def tpu_mesh(topology: str) -> Mesh:
    """A 1-D ``("data",)`` mesh over the devices of a TPU ``topology`` (e.g. ``v5e:2x2``), on any host."""
    from jax.experimental import topologies

    try:
        devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
    except Exception as error:  # noqa: BLE001 (libtpu missing or a topology it does not know: one clear line)
        raise ValueError(f"No TPU topology {topology!r}: {str(error).splitlines()[0][:300]}") from None
    return Mesh(np.asarray(devices), ("data",))


def _abstract(tree: Any, sharding: NamedSharding) -> Any:
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def _collectives(hlo: str) -> dict[str, int]:
    """How many of each collective the compiled HLO runs (an async pair ``*-start`` / ``*-done`` counts once)."""
    counts = {}
    for name in COLLECTIVES:
        counts[name] = len(re.findall(rf"\s{name}(?:-start)?\(", hlo))
    return counts


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4}
_DTYPE_BYTES |= {"f64": 8, "s64": 8, "u64": 8}


def _shape_bytes(shape: str) -> int:
    """Bytes of an HLO result shape such as ``(f32[16,3]{1,0}, bf16[8]{0})`` (every array in it)."""
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape):
        if dtype in _DTYPE_BYTES:
            total += _DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    return total


def collective_details(hlo: str) -> dict[str, dict[str, Any]]:
    """Every collective of a compiled module's HLO with its size and the JAX operation it came from.

    Returns, per kind with at least one: ``count``, ``bytes`` (their results' sizes summed: for an all-reduce the
    data reduced, for an all-gather the gathered result per device) and ``largest``: up to 8
    ``{"bytes", "shape", "op_name"}``, biggest first (``op_name`` from the HLO's metadata: the jitted function's
    path, e.g. ``jit(step)/.../transpose(jvp(...))/conv_general_dilated``). An async ``*-start`` / ``*-done``
    pair counts once (the start's result, which for an all-gather holds its operand and its result, counts
    its last array only)."""
    details: dict[str, dict[str, Any]] = {}
    for line in hlo.splitlines():
        match = re.search(r"=\s*(.+?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(", line)
        if match is None:
            continue
        shape, kind, start = match.groups()
        if start and kind == "all-gather" and shape.startswith("("):
            shape = shape.rsplit(",", 1)[-1]  # (operand, result): the result
        op_name = re.search(r'op_name="([^"]*)"', line)
        entry = details.setdefault(kind, {"count": 0, "bytes": 0, "largest": []})
        size = _shape_bytes(shape)
        entry["count"] += 1
        entry["bytes"] += size
        entry["largest"].append({"bytes": size, "shape": shape.strip()[:120], "op_name": op_name[1] if op_name else ""})
    for entry in details.values():
        entry["largest"] = sorted(entry["largest"], key=lambda e: -e["bytes"])[:8]
    return details


def _memory(compiled) -> dict[str, int]:
    m = compiled.memory_analysis()
    sizes = {
        "argument": int(m.argument_size_in_bytes),
        "output": int(m.output_size_in_bytes),
        "alias": int(m.alias_size_in_bytes),
        "temp": int(m.temp_size_in_bytes),
    }
    sizes["total"] = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
    return sizes


def _cost(compiled) -> dict[str, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per partition
        cost = cost[0] if cost else {}
    return {
        "flops": float(cost.get("flops", float("nan"))),
        "bytes_accessed": float(cost.get("bytes accessed", np.nan)),
    }


def _compile(jitted, args, what: str):
    start = time.perf_counter()
    try:
        compiled = jitted.lower(*args).compile()
    except Exception as error:  # noqa: BLE001 (XLA's errors have no common type; the message is what matters)
        raise CompileError(f"The {what} does not compile for TPU: {str(error)[:2000]}") from None
    return compiled, time.perf_counter() - start


def _macs_per_example(task, state, eval_batch) -> float:
    """Forward multiply-adds of one example, from the jaxpr of the task's evaluation function (scan bodies
    counted once per iteration)."""
    from visattn_jax.models import _jaxpr_macs

    one = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype), eval_batch)
    params = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.eval_params)
    model_state = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.model_state)
    return float(_jaxpr_macs(jax.make_jaxpr(task.eval_fn)(params, model_state, one).jaxpr))


def compile_report(config, topology: str, *, name: str = "") -> dict[str, Any]:
    """Compiles ``config``'s training and evaluation steps for ``topology`` and returns the report (the JSON
    object described in the module docstring). Raises :class:`CompileError` with the compiler's message.

    Traced under ``visattn_jax.backend.target_backend("tpu")``: every choice the library makes from the platform
    (the sampler's per-image gathers, the spatial transformer's sampler, RAM's retina) is the one a TPU host
    makes, so the program compiled is the one a TPU would run."""
    from visattn_jax.backend import target_backend

    with target_backend("tpu"):
        return _compile_report(config, topology, name=name)


def _compile_report(config, topology: str, *, name: str = "") -> dict[str, Any]:
    from visattn_jax.train import build_task, create_train_state, make_train_step, resolve_epochs

    mesh = tpu_mesh(topology)
    if config.get("sensor_method") == "auto":  # the RAM retina a TPU host picks, named in the report
        from visattn_jax.ram import resolve_sensor_method

        config = config.copy_and_resolve_references()
        config.sensor_method = resolve_sensor_method("auto")
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {mesh.size} devices of {topology}.")
    replicated = NamedSharding(mesh, PartitionSpec())
    data_sharding = NamedSharding(mesh, PartitionSpec("data"))
    built = build_task(config, shapes_only=True)
    task = built.task
    resolved = resolve_epochs(config, task.steps_per_epoch)
    key = jax.random.PRNGKey(0)
    state = jax.eval_shape(lambda k: create_train_state(task, resolved, k), key)
    ema_decay = resolved.get("ema_decay", 0.0) or 0.0
    step = make_train_step(task, mesh, ema_decay=ema_decay)
    if task.train_batch is not None:
        inputs = _abstract(task.train_data, replicated)
        eval_batch = jax.tree_util.tree_map(np.asarray, task.eval_batches[0])
    else:  # a host stream: the step is given the global batch (normalised float32 images and labels)
        size = config.image_size
        inputs = {
            "image": jax.ShapeDtypeStruct((config.batch_size, size, size, 3), np.float32, sharding=data_sharding),
            "label": jax.ShapeDtypeStruct((config.batch_size,), np.int32, sharding=data_sharding),
        }
        count = config.get("eval_batch_size", 250)
        eval_batch = {"image": np.zeros((count, size, size, 3), np.float32), "label": np.zeros(count, np.int32)}
    state_in = _abstract(state, replicated)
    key_in = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated)
    train, train_seconds = _compile(step.jitted, (state_in, key_in, inputs), "training step")

    eval_size = jax.tree_util.tree_leaves(eval_batch)[0].shape[0]
    eval_sharding = data_sharding if eval_size % mesh.size == 0 else replicated  # as fit places it
    eval_args = (
        _abstract(state.eval_params, replicated),
        _abstract(state.model_state, replicated),
        _abstract(eval_batch, eval_sharding),
    )
    evaluate, eval_seconds = _compile(jax.jit(task.eval_fn), eval_args, "evaluation step")

    device = mesh.devices.flat[0]
    hbm, source = HBM_BYTES.get(device.device_kind, (None, None))
    memory = _memory(train)
    cost = _cost(train)
    flops_per_example = cost["flops"] * mesh.size / config.batch_size
    macs = _macs_per_example(task, state, eval_batch)
    eval_memory = _memory(evaluate)
    eval_cost = _cost(evaluate)
    forward_flops = eval_cost["flops"] * (mesh.size if eval_sharding is data_sharding else 1) / eval_size
    from visattn_jax.train.loop import provenance

    return {
        "config": name or config.get("name", ""),
        "topology": topology,
        "provenance": provenance(),
        "devices": int(mesh.size),
        "device_kind": device.device_kind,
        "global_batch": int(config.batch_size),
        "per_device_batch": int(config.batch_size // mesh.size),
        "dtype": config.get("dtype", "float32"),
        **({"sensor_method": config.sensor_method} if "sensor_method" in config else {}),
        "flops_per_example": flops_per_example,
        "multiply_adds_per_example": macs,
        "flops_over_6_macs": flops_per_example / (6 * macs) if macs else None,
        "forward_flops_per_example": forward_flops,
        "flops_over_3_forward": flops_per_example / (3 * forward_flops) if forward_flops else None,
        "bytes_accessed_per_device": cost["bytes_accessed"],
        "bytes_per_device": memory,
        "hbm_per_device": hbm,
        "hbm_source": source,
        "fits": None if hbm is None else memory["total"] <= hbm,
        "collectives": _collectives(train.as_text()),
        "collective_details": collective_details(train.as_text()),
        "parameter_bytes": int(
            sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state.params))
        ),
        "compile_seconds": round(train_seconds, 1),
        "eval": {
            "batch": int(eval_size),
            "split_over_devices": eval_sharding is data_sharding,
            "bytes_per_device": eval_memory,
            "fits": None if hbm is None else eval_memory["total"] <= hbm,
            "collectives": _collectives(evaluate.as_text()),
            "compile_seconds": round(eval_seconds, 1),
        },
    }


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def print_report(report: dict[str, Any]) -> None:
    b = report["bytes_per_device"]
    print(
        f"{report['config']} on {report['topology']} ({report['devices']} x {report['device_kind']}), global batch "
        f"{report['global_batch']} ({report['per_device_batch']} per device), {report['dtype']}"
    )
    rows = [
        ("training step, per device", f"arguments {_gib(b['argument'])}, outputs {_gib(b['output'])} "
         f"(aliased {_gib(b['alias'])}), temporaries {_gib(b['temp'])}, total {_gib(b['total'])}"),
        ("HBM per device", f"{_gib(report['hbm_per_device'])} -> fits: {report['fits']}"),
        ("flops per example", f"{report['flops_per_example'] / 1e9:.3f} G (6 x forward multiply-adds: "
         f"{6 * report['multiply_adds_per_example'] / 1e9:.3f} G, ratio {report['flops_over_6_macs']:.3f}; "
         f"3 x XLA's forward: ratio {report['flops_over_3_forward']:.3f})"
         if report["multiply_adds_per_example"] else f"{report['flops_per_example'] / 1e9:.3f} G"),
        ("collectives", ", ".join(f"{k} {v}" for k, v in report["collectives"].items())),
        ("compile", f"{report['compile_seconds']} s (evaluation step {report['eval']['compile_seconds']} s)"),
        ("evaluation step", f"batch {report['eval']['batch']} "
         f"({'split over the devices' if report['eval']['split_over_devices'] else 'replicated: not divisible'}), "
         f"total {_gib(report['eval']['bytes_per_device']['total'])} per device"),
    ]  # fmt: skip
    for label, text in rows:
        print(f"  {label:<28}{text}")


def markdown_table(folder: str | Path) -> str:
    """The table of the reports (docs/tpu.md) (``*.json``, one per cell, as ``experiments/tpu_table.sh`` keeps them) in
    ``folder``: per-chip memory of the training step, whether it fits the chip's HBM, flops per example against
    6 x the forward multiply-adds and the collectives; a failed compile is a row with its error. "Largest batch"
    is an estimate, not a compile: the per-chip batch that fills the HBM if the temporaries grow in proportion
    to the batch and the arguments (state, training data) stay as they are."""
    rows = [
        "| config | global batch (per chip), dtype | training step per chip: total (temporaries) | fits | "
        "largest batch per chip (estimate) | GFLOP per example (x 6 MACs) | all-reduce / all-gather | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(Path(folder).glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except json.JSONDecodeError:  # empty: tpu_table.sh kept no JSON line
            r = {"config": path.stem, "error": "no report (the compile was cut off)"}
        if "cases" in r:  # experiments/tpu_sampler.py's report, kept in the same folder
            continue
        if not r.get("topology") or "error" in r:
            rows.append(
                f"| {r.get('config', path.stem)} | - | {r.get('error', 'no report')[:120]} | - | - | - | - | - |"
            )
            continue
        b, c = r["bytes_per_device"], r["collectives"]
        room = r["hbm_per_device"] - (b["total"] - b["temp"])
        largest = r["per_device_batch"] * room / b["temp"] if b["temp"] > 0 else float("inf")
        # Past 10,000 the temporaries are too small for a linear estimate to mean anything.
        largest = f"{int(largest):,}" if largest <= 10_000 else "> 10,000"
        rows.append(
            f"| {r['config']} | {r['global_batch']} ({r['per_device_batch']}), {r['dtype']} | "
            f"{b['total'] / 2**30:.2f} GiB ({b['temp'] / 2**30:.2f}) | {'yes' if r['fits'] else 'no'} | {largest} | "
            f"{r['flops_per_example'] / 1e9:.3g} ({r['flops_over_6_macs']:.2f}) | "
            f"{c['all-reduce']} / {c['all-gather']} | {r['compile_seconds']:.0f} |"
        )
    return "\n".join(rows)


def _define_flags() -> dict[str, Any]:
    """The command line's flags (defined only when run as a program: experiments.main defines ``--config`` too,
    and absl's flags are global to a process)."""
    config = config_flags.DEFINE_config_file(
        "config", None, "Experiment config file (path:argument).", lock_config=False
    )
    flags.mark_flags_as_required(["config"])
    return {
        "config": config,
        "topology": flags.DEFINE_string("topology", "v5e:2x2", "TPU topology, e.g. v5e:2x2, v6e:2x2, v5p:2x2x1."),
        "batch_size": flags.DEFINE_integer("batch_size", None, "Global batch (default: the config's)."),
        "dtype": flags.DEFINE_string(
            "dtype", None, "Compute dtype for configs with a dtype field (float32 | bfloat16)."
        ),
    }


_FLAGS: dict[str, Any] = {}


def main(argv) -> None:
    del argv
    config = _FLAGS["config"].value
    spec = next((a.removeprefix("--config=") for a in sys.argv if a.startswith("--config=")), "")
    name = f"{Path(spec.partition(':')[0]).name}:{spec.partition(':')[2]}" if spec else config.get("name", "")
    if _FLAGS["batch_size"].value:
        config.batch_size = _FLAGS["batch_size"].value
    if _FLAGS["dtype"].value:
        if "dtype" not in config:
            print(f"error: {name} has no dtype field (its models compute in float32).", file=sys.stderr)
            sys.exit(2)
        config.dtype = _FLAGS["dtype"].value
    try:
        report = compile_report(config, _FLAGS["topology"].value, name=name)
    except (CompileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        print(json.dumps({"config": name, "topology": _FLAGS["topology"].value, "error": str(error)}))
        sys.exit(1)
    print_report(report)
    print(json.dumps(report))


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    app.run(main)
