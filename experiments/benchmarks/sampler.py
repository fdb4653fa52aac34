"""Speed of the sampler (every mode, images and volumes) against map_coordinates, dm-pix and torch's grid_sample,
in one run.

Command (the table in docs/benchmarks.md came from it; ``--against`` adds the 2-D bilinear rows of another version of
``sampling.py``, timed round-robin with ours in the same process: a speed pass's "before"):

    git show 845224f:visattn_jax/sampling.py > /tmp/sampling_845224f.py
    .venv/bin/python -m experiments.benchmarks.sampler --repeats 50 --fastest --against /tmp/sampling_845224f.py

Prints, per size, the median time (with ``--fastest``: the fastest block's) of the forward pass and of
forward+backward (gradients with respect to the images and the grid, i.e. what a spatial transformer needs)
over ``--repeats`` runs after warm-up, the compile excluded, and each variant's ratio to torch's time. torch is timed first; then the JAX variants of
one size are timed round-robin in blocks (``common.interleaved_seconds``), so the slow spells of a
shared machine hit them alike and their comparison (ours against ``map_coordinates``) is fair. torch
(``pip install -e .[reference]``) and dm-pix are optional; their rows are skipped when they are not installed.

Sizes (from the sampler issues): bilinear (a) N=256 28x28x1 -> 28x28, (b) N=64 60x60x1 -> 60x60,
(c) N=32 64x64x64 -> 64x64, (d) N=8 224x224x3 -> 224x224, (e) N=256 60x60x1 images, each read at 3 scales
into 8x8 glimpses (the RAM sensor; here the separable sampler applies); the other modes on (b)'s and (d)'s
shapes: nearest (f) and (g), bicubic (h) and (i); volumes [N, D, H, W, C] under a random 3-D similarity
transform: trilinear (j) N=4 64^3x1 -> 64^3 and (k) N=8 32^3x8 -> 32^3, nearest (l) N=4 64^3x1 -> 64^3.
``map_coordinates`` (orders 0 and 1, no cubic) is timed where its conventions can be made to coincide: zero
padding, with the pixel coordinates ours computes; for nearest it rounds half away from zero where PyTorch and
ours round half to even, which changes only exact half-pixel coordinates (none in these random grids).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.common import (
    add_output_argument,
    import_torch,
    interleaved_seconds,
    median_seconds,
    write_result,
)
from visattn_jax import affine_grid, grid_sample, separable_sample


@dataclasses.dataclass(frozen=True)
class Size:
    name: str
    n: int
    height: int
    width: int
    channels: int
    out_h: int
    out_w: int
    glimpse_scales: int = 0  # > 0: RAM-style glimpses instead of a whole-image affine grid
    mode: str = "bilinear"
    depth: int = 0  # > 0: a volume [N, depth, height, width, C] sampled at [N, depth, out_h, out_w, 3]

    @property
    def label(self) -> str:
        shape = (
            f"{self.depth}x{self.height}x{self.width}x{self.channels}"
            if self.depth
            else (f"{self.height}x{self.width}x{self.channels}")
        )
        return f"({self.name}) {self.mode}, N={self.n}, {shape}"


SIZES = (
    Size("a", 256, 28, 28, 1, 28, 28),
    Size("b", 64, 60, 60, 1, 60, 60),
    Size("c", 32, 64, 64, 64, 64, 64),
    Size("d", 8, 224, 224, 3, 224, 224),
    Size("e", 256, 60, 60, 1, 8, 8, glimpse_scales=3),
    Size("f", 64, 60, 60, 1, 60, 60, mode="nearest"),
    Size("g", 8, 224, 224, 3, 224, 224, mode="nearest"),
    Size("h", 64, 60, 60, 1, 60, 60, mode="bicubic"),
    Size("i", 8, 224, 224, 3, 224, 224, mode="bicubic"),
    Size("j", 4, 64, 64, 1, 64, 64, depth=64),
    Size("k", 8, 32, 32, 8, 32, 32, depth=32),
    Size("l", 4, 64, 64, 1, 64, 64, depth=64, mode="nearest"),
)


def _rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """``[N, 3, 3]`` rotations by ``angle [N]`` about coordinate axis ``axis`` (0: x, 1: y, 2: z)."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    r = np.tile(np.eye(3), (len(angle), 1, 1))
    r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
    return r


def make_inputs(size: Size, seed: int = 0):
    """Random images and grids: a random similarity transform per image, or 3-scale glimpses."""
    rng = np.random.default_rng(seed)
    images = rng.random((size.n, size.height, size.width, size.channels), dtype=np.float32)
    if size.glimpse_scales:
        # Glimpse k has half-width 2^k * g / H (normalised), centred at a random location in [-1, 1]^2.
        centre = rng.uniform(-1, 1, (size.n, 1, 2)).astype(np.float32)
        base = (np.arange(size.out_w, dtype=np.float32) - (size.out_w - 1) / 2) * 2 / size.width
        xs = centre[:, :, 0, None] + base[None, None, :] * (2.0 ** np.arange(size.glimpse_scales))[None, :, None]
        ys = centre[:, :, 1, None] + base[None, None, :] * (2.0 ** np.arange(size.glimpse_scales))[None, :, None]
        grid = np.stack(np.broadcast_arrays(xs[:, :, None, :], ys[:, :, :, None]), axis=-1)  # [N, S, g, g, 2]
        grid = grid.reshape(size.n, size.glimpse_scales * size.out_h, size.out_w, 2)
        return images, grid.astype(np.float32), (xs.astype(np.float32), ys.astype(np.float32))
    if size.depth:  # a random 3-D similarity: rotations about z and y, a scale and a shift
        rotation = _rotation(2, rng.uniform(-0.5, 0.5, size.n)) @ _rotation(1, rng.uniform(-0.3, 0.3, size.n))
        theta = np.concatenate(
            [rotation * rng.uniform(0.8, 1.2, (size.n, 1, 1)), rng.uniform(-0.2, 0.2, (size.n, 3, 1))], axis=2
        ).astype(np.float32)
        out_shape = (size.depth, size.out_h, size.out_w)
        grid = jax.vmap(lambda t: affine_grid(t, out_shape))(jnp.asarray(theta))
        shape = (size.n, size.depth, size.height, size.width, size.channels)
        return rng.random(shape, dtype=np.float32), np.asarray(grid), None
    angle = rng.uniform(-0.5, 0.5, size.n)
    scale = rng.uniform(0.8, 1.2, size.n)
    shift = rng.uniform(-0.2, 0.2, (size.n, 2))
    theta = np.zeros((size.n, 2, 3), np.float32)
    theta[:, 0, 0] = scale * np.cos(angle)
    theta[:, 0, 1] = -scale * np.sin(angle)
    theta[:, 1, 0] = scale * np.sin(angle)
    theta[:, 1, 1] = scale * np.cos(angle)
    theta[:, :, 2] = shift
    grid = jax.vmap(lambda t: affine_grid(t, (size.out_h, size.out_w)))(jnp.asarray(theta))
    return images, np.asarray(grid), None


def load_sampler(path: str):
    """A ``sampling.py`` file (e.g. another commit's: ``git show REV:visattn_jax/sampling.py > /tmp/old.py``) as a
    module of its own (it imports nothing from the package), to time beside the installed one in one process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sampler_under_comparison", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jax_variants(size: Size, images, grid, axes, against=None):
    """name -> (forward fn, forward+backward fn), each taking (images, grid_or_axes) device arrays. ``against``:
    another version of the sampler module (:func:`load_sampler`), timed as ``visattn (--against)``."""

    def ours(imgs, g):
        return grid_sample(imgs, g, mode=size.mode)

    def map_coords(imgs, g):
        # map_coordinates takes pixel coordinates in array-axis order ((z,) y, x); align_corners=False mapping,
        # zeros padding; order 0 for nearest, 1 for (tri)linear.
        spatial = imgs.shape[1:-1]
        pixels = [((g[..., k] + 1) * spatial[-1 - k] - 1) / 2 for k in range(len(spatial))][::-1]
        order = 0 if size.mode == "nearest" else 1
        one = lambda im, *p: jax.scipy.ndimage.map_coordinates(im, list(p), order=order, mode="constant")  # noqa: E731
        per_channel = jax.vmap(one, in_axes=(-1,) + (None,) * len(spatial), out_axes=-1)
        return jax.vmap(per_channel)(imgs, *pixels)

    variants = {"visattn grid_sample": (ours, grid)}
    if against is not None and size.mode == "bilinear" and not size.depth:  # what every version has
        variants["visattn (--against)"] = (lambda imgs, g: against.grid_sample(imgs, g), grid)
    if size.mode != "bicubic":
        variants["map_coordinates"] = (map_coords, grid)
    try:
        import dm_pix
    except ImportError:
        dm_pix = None
    if dm_pix is not None and size.mode == "bilinear" and not size.depth:

        def pix(imgs, g):
            # dm-pix clamps at the border (no zero padding): same work, slightly different edge semantics.
            h, w = imgs.shape[1:3]
            px = ((g[..., 0] + 1) * w - 1) / 2
            py = ((g[..., 1] + 1) * h - 1) / 2

            def one(im, y, x):
                coords = jnp.stack([y.ravel(), x.ravel()])
                per_c = jax.vmap(lambda c: dm_pix.flat_nd_linear_interpolate(c, coords), in_axes=2, out_axes=-1)
                return per_c(im).reshape(*y.shape, im.shape[-1])

            return jax.vmap(one)(imgs, py, px)

        variants["dm-pix"] = (pix, grid)
    if axes is not None:
        xs, ys = axes

        def separable(imgs, axes_):
            xs_, ys_ = axes_
            per_scale = jax.vmap(separable_sample, in_axes=(None, 0, 0))  # scales
            out = jax.vmap(per_scale)(imgs, xs_, ys_)  # [N, S, g, g, C]
            return out.reshape(imgs.shape[0], -1, *out.shape[3:])

        variants["visattn separable_sample"] = (separable, (xs, ys))

    compiled = {}
    for name, (fn, arg) in variants.items():
        fwd = jax.jit(fn)
        loss = lambda imgs, a, fn=fn: jnp.sum(fn(imgs, a) ** 2)  # noqa: E731
        bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
        imgs_d = jnp.asarray(images)
        arg_d = jax.tree_util.tree_map(jnp.asarray, arg)
        compiled[name] = (
            lambda fwd=fwd, i=imgs_d, a=arg_d: jax.block_until_ready(fwd(i, a)),
            lambda bwd=bwd, i=imgs_d, a=arg_d: jax.block_until_ready(bwd(i, a)),
        )
    return compiled


def _torch_variant(size: Size, images, grid):
    try:
        import torch
    except ImportError:
        return None
    channels_first = (0, images.ndim - 1, *range(1, images.ndim - 1))  # NHWC -> NCHW, NDHWC -> NCDHW
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(channels_first)))
    g = torch.from_numpy(np.ascontiguousarray(grid))
    sample = lambda x_, g_: torch.nn.functional.grid_sample(  # noqa: E731
        x_, g_, mode=size.mode, padding_mode="zeros", align_corners=False
    )

    def fwd():
        with torch.no_grad():
            return sample(x, g)

    def fwd_bwd():
        xr = x.detach().requires_grad_(True)
        gr = g.detach().requires_grad_(True)
        (sample(xr, gr) ** 2).sum().backward()
        return xr.grad, gr.grad

    return fwd, fwd_bwd


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--sizes", default="".join(size.name for size in SIZES), help="which sizes to run, e.g. 'ab' (default: all)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (XLA uses all cores)")
    parser.add_argument(
        "--fastest",
        action="store_true",
        help="report each variant's fastest block of calls instead of the median (steadier on a busy machine)",
    )
    parser.add_argument(
        "--against",
        default=None,
        help="another sampling.py to time beside this one, round-robin in the same process (a speed pass's before)",
    )
    add_output_argument(parser, "sampler")
    args = parser.parse_args(argv)
    torch = import_torch(args.threads)
    against = load_sampler(args.against) if args.against else None
    torch_version = torch.__version__ if torch is not None else "not installed"
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch_version}; "
        f"{'fastest block' if args.fastest else 'median'} of {args.repeats}, milliseconds per call; "
        "ratio = time / torch time (lower is better)"
    )
    header = f"{'size':<5}{'variant':<26}{'fwd ms':>9}{'fwd+bwd ms':>12}{'fwd ratio':>11}{'f+b ratio':>11}"
    print(header)
    print("-" * len(header))
    tables = {}
    for size in SIZES:
        if size.name not in args.sizes:
            continue
        images, grid, axes = make_inputs(size)
        rows = {}
        torch_fns = _torch_variant(size, images, grid)
        if torch_fns is not None:
            # torch first and on its own: in a round-robin, whatever ran right after torch's calls was slower
            # (our forward at (a): 2.3-2.7 ms against 0.9-1.1 ms), presumably torch's OpenMP threads still
            # spinning on the two cores after each call.
            time_torch = (
                (lambda f: interleaved_seconds({0: f}, args.repeats, statistic=min)[0])
                if args.fastest
                else (lambda f: median_seconds(f, args.repeats))
            )
            rows["torch grid_sample"] = tuple(time_torch(f) for f in torch_fns)
        # The JAX variants of a size are timed round-robin, forward and fwd+bwd alike (the first warm-up also
        # outlasts torch's spinning threads).
        variants = _jax_variants(size, images, grid, axes, against)
        calls = {(name, part): fn for name, fns in variants.items() for part, fn in enumerate(fns)}
        seconds = interleaved_seconds(calls, args.repeats, statistic=min if args.fastest else statistics.median)
        rows.update({name: (seconds[name, 0], seconds[name, 1]) for name in variants})
        ref = rows.get("torch grid_sample")
        for name, (fwd, bwd) in rows.items():
            ratio = (f"{fwd / ref[0]:>11.2f}{bwd / ref[1]:>11.2f}") if ref else f"{'-':>11}{'-':>11}"
            print(f"{size.name:<5}{name:<26}{fwd * 1e3:>9.3f}{bwd * 1e3:>12.3f}{ratio}")
        print(f"     {size.label}")
        tables[size.name] = {
            name: {"forward_ms": round(fwd * 1e3, 4), "forward_backward_ms": round(bwd * 1e3, 4)}
            for name, (fwd, bwd) in rows.items()
        }
    write_result(
        args.out,
        tables,
        repeats=args.repeats,
        statistic="fastest block" if args.fastest else "median",
        torch=torch_version,
        sizes={size.name: repr(size) for size in SIZES if size.name in args.sizes},
        against=args.against,
    )


if __name__ == "__main__":
    main()
