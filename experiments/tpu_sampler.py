"""The sampler's two formulations compiled for a TPU topology on this (CPU) host: what each makes the TPU do.

    .venv/bin/python -m experiments.tpu_sampler [--topology=v5e:2x2] [--out=PATH]

Compiles, for the devices of ``--topology`` (libtpu, the ``tpu`` extra; see ``experiments/tpu_compile.py``) with
the batch split over every chip, the forward pass and the gradient of ``sum(out ** 2)`` (with respect to the
image and the sampling coordinates, what a spatial transformer or a learned retina needs) of:

- the STN path on the sampler benchmark's sizes (a)-(d) (``experiments/benchmarks/sampler.py``), on an
  axis-aligned crop of every image (a random centre and zoom, the attention transform), in both formulations:
  ``grid_sample`` on the crop's 2-D grid (gathers; the image gradient is a scatter-add) and ``separable_sample``
  on its ``x`` / ``y`` vectors (two small matmuls per image: no gather, no scatter). The same numbers either way;
- the RAM retina (``glimpse_sensor``, ``method="gather"`` against ``"matmul"``) at the RAM configs' sizes
  (cluttered60: 60x60, 12x12 patches at 3 scales; cluttered100: 100x100, 4 scales), batch 256.

For each: XLA's flops and bytes accessed per chip (``cost_analysis``), temporaries per chip
(``memory_analysis``), and how many gather, scatter and dot (matmul) operations the compiled HLO runs. Prints a
table and writes it as JSON (default ``experiments/results/tpu/<topology>/sampler.json``). What it proves: what
each formulation compiles to on TPU and the memory traffic and arithmetic XLA accounts for it; it measures no TPU
time, and XLA's cost model prices a gather like any other memory access, which on TPUs it is not (their vector
units read memory in (8, 128) tiles; an element gather runs as a loop of dynamic slices).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# tpu_compile sets libtpu's start-up variables; jax starts no backend before the first compile, after this import.
from experiments import tpu_compile
from experiments.benchmarks.sampler import SIZES
from visattn_jax import grid_sample, separable_sample
from visattn_jax.ram import glimpse_sensor

RESULTS = Path(__file__).resolve().parent / "results" / "tpu"
# (name, canvas side, retina patch side, scales): the RAM configs' cluttered tasks (experiments/configs/ram_mnist.py).
RETINAS = (("cluttered60", 60, 12, 3), ("cluttered100", 100, 12, 4))
RETINA_BATCH = 256
OPS = ("gather", "scatter", "dot", "convolution")


def op_counts(hlo: str) -> dict[str, int]:
    """How many gather, scatter, dot and convolution instructions the compiled HLO holds (inside fusions too)."""
    return {name: len(re.findall(rf"\s{name}\(", hlo)) for name in OPS}


def _crop_grid(xs, ys):
    """The 2-D grid ``[n, h, w, 2]`` of the crops ``xs [n, w]``, ``ys [n, h]`` (``grid[k, i, j] = (x[k, j], y[k, i])``)."""
    x = jnp.broadcast_to(xs[:, None, :], (xs.shape[0], ys.shape[1], xs.shape[1]))
    y = jnp.broadcast_to(ys[:, :, None], x.shape)
    return jnp.stack([x, y], axis=-1)


def _sharded(shape, sharding, dtype=np.float32):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def _compile_both(fn, args) -> dict[str, dict]:
    """Forward and forward+backward of ``fn(*args)`` (``args``: sharded ShapeDtypeStructs) compiled for TPU."""
    forward = jax.jit(fn)
    backward = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=tuple(range(len(args)))))
    rows = {}
    for part, jitted in (("forward", forward), ("forward+backward", backward)):
        compiled, seconds = tpu_compile._compile(jitted, args, f"sampler's {part}")
        cost, memory = tpu_compile._cost(compiled), tpu_compile._memory(compiled)
        rows[part] = {
            "flops": cost["flops"],
            "bytes_accessed": cost["bytes_accessed"],
            "temp_bytes": memory["temp"],
            "ops": op_counts(compiled.as_text()),
            "compile_seconds": round(seconds, 1),
        }
    return rows


def sampler_report(
    topology: str, sizes=SIZES[:4], retinas=RETINAS, retina_batch: int = RETINA_BATCH
) -> dict[str, dict]:
    """``{case: {formulation: {"forward": {...}, "forward+backward": {...}}}}`` for the STN crops on ``sizes``
    (default: the sampler benchmark's (a)-(d)) and the RAM ``retinas``. Traced as for a TPU
    (``visattn_jax.backend.target_backend``): ``grid_sample`` gathers per image, as it does on a TPU host."""
    from visattn_jax.backend import target_backend

    with target_backend("tpu"):
        return _sampler_report(topology, sizes, retinas, retina_batch)


def _sampler_report(topology: str, sizes, retinas, retina_batch: int) -> dict[str, dict]:
    mesh = tpu_compile.tpu_mesh(topology)
    batch = NamedSharding(mesh, PartitionSpec("data"))
    report: dict[str, dict] = {}
    for size in sizes:  # images sampled at their own size
        n = size.n if size.n % mesh.size == 0 else mesh.size * -(-size.n // mesh.size)
        images = _sharded((n, size.height, size.width, size.channels), batch)
        xs, ys = _sharded((n, size.out_w), batch), _sharded((n, size.out_h), batch)
        label = f"({size.name}) crop, N={n}, {size.height}x{size.width}x{size.channels} -> {size.out_h}x{size.out_w}"
        report[label] = {
            "grid_sample (gathers)": _compile_both(
                lambda im, x, y: grid_sample(im, _crop_grid(x, y)), (images, xs, ys)
            ),
            "separable_sample (matmuls)": _compile_both(jax.vmap(separable_sample), (images, xs, ys)),
        }
    for name, side, patch, scales in retinas:
        images = _sharded((retina_batch, side, side, 1), batch)
        locations = _sharded((retina_batch, 2), batch)
        label = f"RAM retina {name}, N={retina_batch}, {side}x{side}x1 -> {scales} x {patch}x{patch}"
        report[label] = {
            f"glimpse_sensor method={method!r}": _compile_both(
                jax.vmap(
                    lambda im, loc, m=method, g=patch, k=scales: glimpse_sensor(im, loc, size=g, num_scales=k, method=m)
                ),
                (images, locations),
            )
            for method in ("gather", "matmul")
        }
    return report


def print_table(report: dict[str, dict], topology: str) -> None:
    print(
        f"Per chip of {topology}; flops and bytes: XLA's cost analysis; ops: gathers, scatters and matrix products "
        "(dot or convolution: TPU HLO writes matmuls as convolutions) in the HLO"
    )
    header = f"{'formulation':<34}{'part':<18}{'MFLOP':>10}{'MB accessed':>13}{'temp MB':>9}  gather scatter matmul"
    for case, formulations in report.items():
        print(f"\n{case}\n{header}")
        for name, parts in formulations.items():
            for part, row in parts.items():
                ops = row["ops"]
                print(
                    f"{name:<34}{part:<18}{row['flops'] / 1e6:>10.2f}{row['bytes_accessed'] / 1e6:>13.2f}"
                    f"{row['temp_bytes'] / 1e6:>9.2f}  {ops['gather']:>6} {ops['scatter']:>7} "
                    f"{ops['dot'] + ops['convolution']:>6}"
                )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="v5e:2x2")
    parser.add_argument(
        "--out", default=None, help="JSON file (default: experiments/results/tpu/<topology>/sampler.json)"
    )
    args = parser.parse_args(argv)
    report = sampler_report(args.topology)
    print_table(report, args.topology)
    out = Path(args.out or RESULTS / args.topology.replace(":", "_") / "sampler.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"topology": args.topology, "provenance": _provenance(), "cases": report}, indent=2) + "\n"
    )
    print(f"\nResult written to {out}.")


def _provenance():
    from visattn_jax.train.loop import provenance

    return provenance()


if __name__ == "__main__":
    main()
