"""Which derivatives of grid sampling exist, measured: PyTorch's ``grid_sample`` against ours, per mode and dimension.

    .venv/bin/python -m experiments.derivative_table   (needs the reference extra: torch)

For each mode (bilinear / trilinear, nearest, bicubic) and dimension (images, volumes) it tries, on a small
float64 case:
- PyTorch reverse-over-reverse: ``torch.autograd.gradgradcheck`` of ``grid_sample`` with respect to the input
  and the grid (True: the check passes);
- PyTorch forward mode: ``torch.func.jvp`` (True: it returns; the error's type otherwise);
- ours: ``jax.test_util.check_grads(order=2, modes=("fwd", "rev"))`` of :func:`visattn_jax.grid_sample`
  (forward and reverse mode to second order, against finite differences).

It prints a Markdown table, docs/conventions.md's (``tests/test_sampling_modes.py`` checks that the page shows what
this script prints, so the claim cannot go stale).
"""

from __future__ import annotations

import numpy as np

CASES = (("bilinear", 2), ("nearest", 2), ("bicubic", 2), ("bilinear", 3), ("nearest", 3))


def _inputs(dims: int):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (1, 2, 5, 6) if dims == 2 else (1, 2, 4, 5, 6))  # torch layout
    # Pixel coordinates 0.2-0.8 away from integers (align_corners=True), where every mode is smooth.
    sizes = np.array(images.shape[2:][::-1])
    pixels = rng.integers(0, sizes - 1, (3, dims)) + rng.uniform(0.2, 0.8, (3, dims))
    grid = (pixels / (sizes - 1) * 2 - 1).reshape((1, 3) + (1,) * (dims - 1) + (dims,))
    return images, grid


def torch_support(mode: str, dims: int) -> tuple[str, str]:
    """(reverse-over-reverse, forward mode) of torch's grid_sample: "yes" or the failure's name."""
    import warnings

    import torch

    images, grid = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in _inputs(dims))

    def f(x, g):
        return torch.nn.functional.grid_sample(x, g, mode=mode, padding_mode="zeros", align_corners=True)

    with warnings.catch_warnings():  # torch's deprecation notices are not answers (pytest makes warnings errors)
        warnings.simplefilter("ignore")
        try:
            reverse = "yes" if torch.autograd.gradgradcheck(f, (images, grid)) else "fails the check"
        except Exception as error:  # noqa: BLE001 (the table reports which error)
            reverse = f"no ({type(error).__name__})"
        try:
            torch.func.jvp(f, (images.detach(), grid.detach()), (torch.ones_like(images), torch.ones_like(grid)))
            forward = "yes"
        except Exception as error:  # noqa: BLE001
            forward = f"no ({type(error).__name__})"
    return reverse, forward


def our_support(mode: str, dims: int) -> str:
    """ "yes" when forward and reverse mode to second order agree with finite differences (nearest: its
    coordinate derivative is 0 by definition, so the check is on the image only)."""
    import jax
    from jax.test_util import check_grads

    import visattn_jax as va

    with jax.enable_x64(True):
        images, grid = _inputs(dims)
        images = np.moveaxis(images, 1, -1)
        f = lambda x, g: va.grid_sample(x, g, mode=mode, align_corners=True)  # noqa: E731
        try:
            if mode == "nearest":
                check_grads(lambda x: f(x, grid), (images,), order=2, modes=("fwd", "rev"))
            else:
                check_grads(f, (images, grid), order=2, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)
        except AssertionError as error:
            return f"no ({str(error).splitlines()[0][:40]})"
    return "yes"


def table() -> str:
    lines = [
        "| mode | input | PyTorch reverse-over-reverse | PyTorch forward mode | visattn_jax forward and reverse, 2nd order |",
        "|---|---|---|---|---|",
    ]
    for mode, dims in CASES:
        reverse, forward = torch_support(mode, dims)
        name = "trilinear" if (mode, dims) == ("bilinear", 3) else mode
        lines.append(
            f"| {name} | {'image' if dims == 2 else 'volume'} | {reverse} | {forward} | {our_support(mode, dims)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import torch

    print(f"torch {torch.__version__}")
    print(table())
