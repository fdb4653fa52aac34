"""One call on a lent GPU or TPU fills the accelerator table: the sampler, the ST-CNN and RAM training steps.

Command (on the accelerator machine, from the repository root):

    .venv/bin/python -m experiments.benchmarks.accelerator [--repeats 50] [--small]

Prints, for the device JAX finds first:
- the sampler, both formulations: ``grid_sample`` (gathers; the image gradient is their transpose, flat
  scatter-adds) on affine grids, and the separable path (``separable_sample``: two small matmuls per image,
  for axis-aligned crops) on the same sizes' crops; forward and forward+backward milliseconds (median, compile excluded), and the achieved memory
  bandwidth of the forward pass: the bytes it must move at least (read the image and the grid, write the
  output) over its time, beside the device's peak (from its device kind; "-" for kinds not in the table);
- the ST-CNN (affine, RTS 42x42 -> 21x21) and RAM (6 glimpses, 3 scales, 60x60) training steps of
  ``stn_train`` / ``ram_train`` at the given batch, in images/s.
``--small`` runs tiny sizes (a smoke test for CPUs; the tests run it).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import ram_train, stn_train
from experiments.benchmarks.common import median_seconds
from experiments.benchmarks.sampler import SIZES, Size, make_inputs
from visattn_jax import grid_sample, separable_sample
from visattn_jax.data import rts

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


def sampler_rows(sizes, repeats: int, peak: float | None) -> None:
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


def training_rows(batch: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (max(batch, 64), 28, 28, 1)).astype(np.uint8)
    images = np.asarray(rts(jax.random.PRNGKey(0), digits[:batch].astype(np.float32) / 255.0))
    labels = rng.integers(0, 10, batch).astype(np.int32)
    run, _ = stn_train.jax_step(images, labels, digits)
    seconds = median_seconds(run, repeats)
    print(f"\nST-CNN affine (RTS), batch {batch}: {seconds * 1e3:.2f} ms/step, {batch / seconds:,.0f} images/s")
    canvas = np.zeros((batch, 60, 60, 1), np.float32)
    canvas[:, 16:44, 16:44] = rng.random((batch, 28, 28, 1))
    for method in ("gather", "matmul"):
        seconds = median_seconds(ram_train.jax_step(canvas, labels, method), repeats)
        print(f"RAM ({method} retina), batch {batch}: {seconds * 1e3:.2f} ms/step, {batch / seconds:,.0f} images/s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=256, help="of the ST-CNN and RAM training steps")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke test on a CPU")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    peak = peak_bandwidth(device.device_kind)
    bandwidth = f"peak memory bandwidth {peak / 1e9:,.0f} GB/s" if peak else "peak memory bandwidth unknown"
    print(f"jax {jax.__version__}, {device.platform} device {device.device_kind!r} ({jax.device_count()}), {bandwidth}")
    sampler_rows(SMALL_SIZES if args.small else ACCELERATOR_SIZES, args.repeats, peak)
    training_rows(8 if args.small else args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
