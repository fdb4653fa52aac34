"""One call on a lent GPU or TPU fills the accelerator table: the sampler, the ST-CNN and RAM training steps.

Command (on the accelerator machine, from the repository root):

    .venv/bin/python -m experiments.benchmarks.accelerator [--repeats 50] [--small]

Prints, for the device JAX finds first:
- the sampler, both formulations: ``grid_sample`` (gathers; the image gradient is their transpose, flat
  scatter-adds) on affine grids, and the separable path (``separable_sample``: two small matmuls per image,
  for axis-aligned crops) on the same sizes' crops; forward and forward+backward milliseconds (median, compile excluded), and the achieved memory
  bandwidth of the forward pass: the bytes it must move at least (read the image and the grid, write the
  output) over its time, beside the device's peak (from its device kind; "-" for kinds not in the table);
- the loop's ST-CNN (affine, RTS 42x42 -> 21x21) and RAM (6 glimpses, 3 scales, 60x60) training steps (the
  configs of ``stn_train`` / ``ram_train``, data generated on device) and RAM's bare step with each retina, at
  the given batch, in images/s.
- one CIFAR-10 training run each of ResNet-20 and SE-ResNet-20 (``cifar.py:<net>,short<N>``, the CIFAR budget of
  experiments/README.md compressed to ``--cifar_epochs`` epochs; 10 by default, sized for about 8 minutes on an
  H100-class GPU together): the loop's images/s and the test error reached on the 10,000 test images, with
  each run's ``summary.json`` in ``--workdir``. The data come through TFDS (or the verified offline copy, see
  ``visattn_jax.data.cifar``); ``--cifar_epochs 0`` skips them.
``--small`` runs tiny sizes (a smoke test for CPUs; the tests run it; the CIFAR runs then train 2 steps on TFDS's
mock data). The tables are also written as JSON (``--out``, default
``experiments/results/benchmarks/accelerator.json``).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import ram_train, stn_train
from experiments.benchmarks.common import add_output_argument, median_seconds, write_result
from experiments.benchmarks.sampler import SIZES, Size, make_inputs
from visattn_jax import grid_sample, separable_sample

# Peak memory bandwidth (bytes/s) by a substring of jax's device_kind, from the vendors' data sheets.
PEAK_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 80GB HBM3": 3.35e12,
    "H100 PCIe": 2.0e12,
    "H100": 3.35e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100": 1.555e12,
    "V100": 0.9e12,
    "L4": 0.3e12,
    "RTX 4090": 1.008e12,
    "RTX 3090": 0.936e12,
    "TPU v6": 1.64e12,
    "TPU v5p": 2.765e12,
    "TPU v5": 0.819e12,  # v5e ("TPU v5 lite")
    "TPU v4": 1.2e12,
    "TPU v3": 0.9e12,
}
# Larger sizes than the CPU benchmark's, where an accelerator is busy: (f) N=64 256x256x64 -> 256x256.
ACCELERATOR_SIZES = (*SIZES[:4], Size("f", 64, 256, 256, 64, 256, 256))
SMALL_SIZES = (Size("a", 4, 16, 16, 1, 16, 16), Size("c", 2, 8, 8, 4, 8, 8))


def peak_bandwidth(device_kind: str) -> float | None:
    """The device's peak memory bandwidth in bytes/s, or None for a kind not in :data:`PEAK_BANDWIDTH`."""
    for key, value in PEAK_BANDWIDTH.items():
        if key.lower() in device_kind.lower():
            return value
    return None


def _timed(fn, args, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn(*args)`` and of its gradient (w.r.t. every argument) of ``sum(out ** 2)``."""
    forward = jax.jit(fn)
    backward = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=tuple(range(len(args)))))
    return (
        median_seconds(lambda: jax.block_until_ready(forward(*args)), repeats),
        median_seconds(lambda: jax.block_until_ready(backward(*args)), repeats),
    )


def sampler_rows(sizes, repeats: int, peak: float | None) -> dict[str, dict[str, float]]:
    """Prints and returns the sampler's forward and forward + backward ms per size and formulation."""
    table: dict[str, dict[str, float]] = {}
    print(f"\n{'size':<5}{'formulation':<22}{'fwd ms':>10}{'fwd+bwd ms':>12}{'fwd GB/s':>10}{'of peak':>9}")
    for size in sizes:
        images, grid, _ = make_inputs(size)
        images_d, grid_d = jnp.asarray(images), jnp.asarray(grid)
        # An axis-aligned crop of each image (centre and zoom at random) for the separable formulation.
        rng = np.random.default_rng(1)
        centre, half = rng.uniform(-0.3, 0.3, (size.n, 2)), rng.uniform(0.5, 1.0, (size.n, 1))
        xs = jnp.asarray(centre[:, :1] + half * np.linspace(-1, 1, size.out_w)[None], jnp.float32)
        ys = jnp.asarray(centre[:, 1:] + half * np.linspace(-1, 1, size.out_h)[None], jnp.float32)
        rows = {
            "grid_sample (gather)": _timed(grid_sample, (images_d, grid_d), repeats),
            "separable (matmul)": _timed(jax.vmap(separable_sample), (images_d, xs, ys), repeats),
        }
        moved = 4 * (images.size + size.n * size.out_h * size.out_w * (size.channels + 2))
        for name, (fwd, bwd) in rows.items():
            rate = moved / fwd
            share = f"{rate / peak:>8.1%}" if peak else f"{'-':>8}"
            print(f"{size.name:<5}{name:<22}{fwd * 1e3:>10.3f}{bwd * 1e3:>12.3f}{rate / 1e9:>10.1f} {share}")
            table[f"{size.name} {name}"] = {
                "forward_ms": round(fwd * 1e3, 4),
                "forward_backward_ms": round(bwd * 1e3, 4),
            }
    return table


def training_rows(batch: int, repeats: int) -> dict[str, float]:
    """ms per step of the loop's ST-CNN and RAM training steps (their experiment configs) and of RAM's bare step
    with each retina, at ``batch``."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    rows = {
        f"ST-CNN loop step ({stn_train.CONFIG})": median_seconds(stn_train.loop_row(batch), repeats),
        f"RAM loop step ({ram_train.CONFIG})": median_seconds(ram_train.loop_row(batch), repeats),
    }
    canvas = np.zeros((batch, 60, 60, 1), np.float32)
    canvas[:, 16:44, 16:44] = rng.random((batch, 28, 28, 1))
    for method in ("gather", "matmul"):
        rows[f"RAM bare step ({method} retina)"] = median_seconds(ram_train.bare_step(canvas, labels, method), repeats)
    print(f"\nTraining steps, batch {batch}:")
    for name, seconds in rows.items():
        print(f"  {name:<58}{seconds * 1e3:>9.2f} ms/step{batch / seconds:>11,.0f} images/s")
    return {name: round(seconds * 1e3, 4) for name, seconds in rows.items()}


def cifar_rows(epochs: float, workdir: str, small: bool) -> dict[str, dict[str, float]]:
    """Trains ResNet-20 and SE-ResNet-20 on CIFAR-10 at the short budget of ``epochs`` epochs (``small``: 2 steps
    on TFDS mock data) and returns each run's images/s, test error and wall time."""
    import contextlib
    from pathlib import Path

    from experiments.configs import cifar
    from visattn_jax.train.experiment import train_and_evaluate

    if small:  # 64 mock images in batches of 8: a quarter epoch is 2 steps
        epochs = 0.25
    rows = {}
    for net in ("resnet20", "se_resnet20"):
        # small: TFDS's mock data stand in for CIFAR-100 (CIFAR-10 would read the offline copy when there is one)
        config = cifar.get_config(f"{net},short{epochs:g}" + (",cifar100" if small else ""))
        config.progress = False
        config.figure = False
        context = contextlib.nullcontext()
        if small:
            import tensorflow_datasets as tfds

            config.batch_size, config.eval_every, config.checkpoint_every, config.test_limit = 8, 0, 0, 64
            context = tfds.testing.mock_data(num_examples=64)
        with context:
            summary = train_and_evaluate(config, Path(workdir) / f"{net}_short{epochs:g}")
        rows[net] = {
            "epochs": epochs,
            "steps": summary["steps"],
            "train_images_per_second": summary["train_images_per_second"],
            "test_error_percent": round(summary["final"]["error_percent"], 2),
            "wall_seconds": summary["wall_seconds_this_run"],
        }
    print(f"\nCIFAR-10 at the short budget, {epochs:g} epochs:" if not small else "\nCIFAR (mock data, 2 steps):")
    for net, row in rows.items():
        print(
            f"  {net:<14}{row['train_images_per_second'] or 0:>11,.0f} images/s   test error "
            f"{row['test_error_percent']:.2f}% after {row['steps']} steps"
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=256, help="of the ST-CNN and RAM training steps")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke test on a CPU")
    parser.add_argument("--cifar_epochs", type=float, default=10, help="CIFAR runs' epochs (0: no CIFAR runs)")
    parser.add_argument("--workdir", default="runs/accelerator", help="where the CIFAR runs write their results")
    add_output_argument(parser, "accelerator")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    peak = peak_bandwidth(device.device_kind)
    bandwidth = f"peak memory bandwidth {peak / 1e9:,.0f} GB/s" if peak else "peak memory bandwidth unknown"
    print(f"jax {jax.__version__}, {device.platform} device {device.device_kind!r} ({jax.device_count()}), {bandwidth}")
    sampler = sampler_rows(SMALL_SIZES if args.small else ACCELERATOR_SIZES, args.repeats, peak)
    batch = 8 if args.small else args.batch_size
    training = training_rows(batch, args.repeats)
    tables = {"sampler": sampler, "training_ms": training}
    if args.cifar_epochs > 0:
        tables["cifar"] = cifar_rows(args.cifar_epochs, args.workdir, args.small)
    write_result(args.out, tables, batch_size=batch, small=args.small)


if __name__ == "__main__":
    main()
