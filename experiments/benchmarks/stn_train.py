"""Training throughput of ST-CNN (affine) on RTS MNIST: visattn_jax against the same network in PyTorch.

Command (the numbers in experiments/README.md came from it):

    .venv/bin/python -m experiments.benchmarks.stn_train

Both sides train the same network (ST-CNN: 2x downsampling, two 5x5 conv layers of 20 filters with max
pooling and FC 50 as localisation net, affine transform to a 21x21 output, then conv 9x9x32 / max-pool /
conv 7x7x32 / max-pool / FC 10) on the same 42x42 batches with Adam, and time one forward + backward + update
step (median over ``--steps`` steps after warm-up). The PyTorch model follows the PyTorch STN tutorial's
structure (``affine_grid`` + ``grid_sample`` in ``forward``), timed eager and compiled with ``torch.compile``
(the default Inductor backend; its row is skipped with the reason if it does not compile). Our rows: the bare
step on the same fixed batch (the like-for-like row), and the loop's step, ``visattn_jax.train.make_train_step``
for the config ``stn_mnist.py:st_cnn,affine,RTS,cpu`` (what ``experiments.main`` and the quickstart run: the RTS
batch generated on device from clean digits every step, the config's Adam and cosine schedule, metrics,
donation). Speed-ups against both PyTorch rows. The table is also written as JSON (``--out``, default
``experiments/results/benchmarks/stn_train.json``).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks.common import (
    add_output_argument,
    import_torch,
    loop_step,
    median_seconds,
    print_throughput,
    write_result,
)
from visattn_jax.data import rts
from visattn_jax.stn import stn_classifier
from visattn_jax.train import build_task

CONFIG = "st_cnn,affine,RTS,cpu"


def bare_step(images: np.ndarray, labels: np.ndarray):
    """A hand-written step on a fixed batch (Adam 1e-3, no data generation, no metrics): what the PyTorch rows do."""
    model = stn_classifier("st_cnn", transform="affine", input_size=42, st_output_size=21)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(images[:1]))
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    @jax.jit
    def step(p, o, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    x_d, labels_d = jnp.asarray(images), jnp.asarray(labels)
    state = {"p": params, "o": opt_state}

    def run():
        state["p"], state["o"], loss = step(state["p"], state["o"], x_d, labels_d)
        loss.block_until_ready()

    return run


def loop_row(batch_size: int):
    """The loop's training step for the config ``CONFIG`` at ``batch_size`` (its task built on zero digits of
    MNIST's shapes: the step's work does not depend on the pixels)."""
    from experiments.configs.stn_mnist import get_config

    config = get_config(CONFIG)
    config.batch_size = batch_size
    return loop_step(
        build_task(config, shapes_only=True).task, config, fast_conv=config.get("xla_cpu_fast_conv", False)
    )


def torch_step(images: np.ndarray, labels: np.ndarray, compile_model: bool = False):
    """One PyTorch training step; ``compile_model``: the model goes through ``torch.compile`` (compiled on the
    first call, which the warm-up steps absorb)."""
    import torch
    from torch import nn

    class STCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.localization = nn.Sequential(
                nn.AvgPool2d(2),
                nn.Conv2d(1, 20, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(20, 20, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(20 * 5 * 5, 50),
                nn.ReLU(),
            )
            self.regression = nn.Linear(50, 6)
            self.regression.weight.data.zero_()
            self.regression.bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))
            self.classifier = nn.Sequential(
                nn.Conv2d(1, 32, 9, padding=4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 7, padding=3),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * 5 * 5, 10),
            )

        def forward(self, x):
            theta = self.regression(self.localization(x)).view(-1, 2, 3)
            grid = nn.functional.affine_grid(theta, [x.shape[0], x.shape[1], 21, 21], align_corners=False)
            return self.classifier(nn.functional.grid_sample(x, grid, align_corners=False))

    model = STCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compile_model else model
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels.astype(np.int64))

    def run():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()

    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (XLA uses all cores)")
    add_output_argument(parser, "stn_train")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (1024, 28, 28, 1)).astype(np.uint8)
    images = np.array(
        rts(jax.random.PRNGKey(0), digits[: args.batch_size].astype(np.float32) / 255.0)
    )  # writable, for torch
    labels = rng.integers(0, 10, args.batch_size).astype(np.int32)

    rows = {
        "visattn_jax bare step (fixed batch)": median_seconds(bare_step(images, labels), args.steps),
        f"visattn_jax loop step (+ RTS generation; {CONFIG})": median_seconds(loop_row(args.batch_size), args.steps),
    }
    references = []
    torch = import_torch(args.threads)
    if torch is not None:
        references.append(f"PyTorch {torch.__version__} (eager)")
        rows[references[-1]] = median_seconds(torch_step(images, labels), args.steps)
        try:
            compiled = median_seconds(torch_step(images, labels, compile_model=True), args.steps)
        except Exception as error:  # noqa: BLE001 (a compiler problem must not lose the other rows)
            print(f"torch.compile row skipped: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
        else:
            references.append(f"PyTorch {torch.__version__} (torch.compile)")
            rows[references[-1]] = compiled
    print(
        f"ST-CNN affine, RTS 42x42 -> 21x21, batch {args.batch_size}, Adam; median of {args.steps} steps; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    table = print_throughput(rows, args.batch_size, references)
    write_result(args.out, {"st_cnn_affine_rts": table}, steps=args.steps, config=f"stn_mnist.py:{CONFIG}")


if __name__ == "__main__":
    main()
