"""Training throughput of ST-CNN (affine) on RTS MNIST: visattn_jax against the same network in PyTorch.

Command (the numbers in experiments/README.md came from it):

    .venv/bin/python -m experiments.benchmarks.stn_train

Both sides train the same network (ST-CNN: 2x downsampling, two 5x5 conv layers of 20 filters with max
pooling and FC 50 as localisation net, affine transform to a 21x21 output, then conv 9x9x32 / max-pool /
conv 7x7x32 / max-pool / FC 10) on the same 42x42 batches with Adam, and time one forward + backward + update
step (median over ``--steps`` steps after warm-up). The PyTorch model follows the PyTorch STN tutorial's
structure (``affine_grid`` + ``grid_sample`` in ``forward``), timed eager and compiled with ``torch.compile``
(the default Inductor backend; its row is skipped with the reason if it does not compile). A third row of ours
times the full training step, which also generates the RTS batch on device from clean digits (what
``experiments.main`` runs). Speed-ups against both PyTorch rows.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks.common import import_torch, median_seconds, print_throughput
from visattn_jax.data import rts
from visattn_jax.stn import stn_classifier


def jax_step(images: np.ndarray, labels: np.ndarray, digits: np.ndarray):
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

    @jax.jit
    def step_with_data(p, o, key):
        k1, k2 = jax.random.split(key)
        index = jax.random.randint(k1, (images.shape[0],), 0, digits.shape[0])
        x = rts(k2, digits_d[index].astype(jnp.float32) / 255.0)
        return step(p, o, x, labels_d)

    x_d, labels_d, digits_d = jnp.asarray(images), jnp.asarray(labels), jnp.asarray(digits)
    state = {"p": params, "o": opt_state}

    def run():
        state["p"], state["o"], loss = step(state["p"], state["o"], x_d, labels_d)
        loss.block_until_ready()

    counter = [0]

    def run_with_data():
        counter[0] += 1
        state["p"], state["o"], loss = step_with_data(state["p"], state["o"], jax.random.PRNGKey(counter[0]))
        loss.block_until_ready()

    return run, run_with_data


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
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (1024, 28, 28, 1)).astype(np.uint8)
    images = np.asarray(rts(jax.random.PRNGKey(0), digits[: args.batch_size].astype(np.float32) / 255.0))
    labels = rng.integers(0, 10, args.batch_size).astype(np.int32)

    rows = {}
    run, run_with_data = jax_step(images, labels, digits)
    rows["visattn_jax (jit)"] = median_seconds(run, args.steps)
    rows["visattn_jax (jit) + RTS generation"] = median_seconds(run_with_data, args.steps)
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
    print_throughput(rows, args.batch_size, references)


if __name__ == "__main__":
    main()
