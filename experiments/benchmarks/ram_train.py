"""Training throughput of RAM (6 glimpses, 60x60 translated MNIST, 3 scales of 12x12) against a PyTorch port.

Command (the numbers in experiments/README.md came from it):

    .venv/bin/python -m experiments.benchmarks.ram_train

The PyTorch side is written here (not copied) with the structure of the popular PyTorch RAM implementation
(kevinzakka/recurrent-visual-attention): the retina pads each image, crops the patches, downsamples coarse
patches with average pooling, and the episode is a Python loop over glimpses; the same networks (glimpse
128/128 -> 256, ReLU RNN core 256, Gaussian location policy, baseline, action) and the same hybrid loss, with
Adam. Two PyTorch retinas: the popular one, which crops every patch in a Python loop over the batch, and the one
a PyTorch user would write for speed, which crops the whole batch with one advanced-indexing gather per scale
(the same integer crops). Both sides take one training step (forward, backward, update) on the same batch;
median over ``--steps`` steps after warm-up; speed-ups against both PyTorch rows. Our rows: the bare step (the
model and ``ram_loss`` with Adam on the fixed batch, gather and matmul retinas: the like-for-like rows) and the
loop's step, ``visattn_jax.train.make_train_step`` for the config ``ram_mnist.py:translated60,ram,6,cpu`` (what
``experiments.main`` runs: each step draws and translates its batch on device, clips the gradient norm at 5,
Adam with the config's schedule, metrics, donation). The table is also written as JSON (``--out``, default
``experiments/results/benchmarks/ram_train.json``).
"""

from __future__ import annotations

import argparse
import functools

import jax
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
from visattn_jax.ram import RAM, ram_loss
from visattn_jax.train import build_task

GLIMPSES, SIZE, SCALES, STD = 6, 12, 3, 0.15


CONFIG = "translated60,ram,6,cpu"


def loop_row(batch_size: int):
    """The loop's training step for the config ``CONFIG`` at ``batch_size`` (its task built on zero digits of
    MNIST's shapes: the step's work does not depend on the pixels)."""
    from experiments.configs.ram_mnist import get_config

    config = get_config(CONFIG)
    config.batch_size = batch_size
    return loop_step(
        build_task(config, shapes_only=True).task, config, fast_conv=config.get("xla_cpu_fast_conv", False)
    )


def bare_step(images: np.ndarray, labels: np.ndarray, sensor_method: str = "gather"):
    model = RAM(
        num_glimpses=GLIMPSES, glimpse_size=SIZE, num_scales=SCALES, location_std=STD, sensor_method=sensor_method
    )
    params = model.init(jax.random.PRNGKey(0), images[:1], jax.random.PRNGKey(1))
    tx = optax.adam(1e-3)
    # As in visattn_jax.train.loop.fit: the step's key is folded in on device and the state is donated.
    state = {"params": params, "opt": tx.init(params), "step": jax.numpy.zeros((), jax.numpy.int32)}
    key = jax.random.PRNGKey(1)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, x, y):
        loss_fn = lambda q: ram_loss(model.apply(q, x, jax.random.fold_in(key, state["step"])), y)  # noqa: E731
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt, "step": state["step"] + 1}, loss

    x, y = jax.numpy.asarray(images), jax.numpy.asarray(labels)
    holder = {"state": state}

    def run():
        holder["state"], loss = step(holder["state"], x, y)
        loss.block_until_ready()

    return run


def torch_retina(batched_crops: bool):
    """The PyTorch port's retina: ``foveate(x [B, 1, H, W], loc [B, 2]) -> [B, SCALES * SIZE * SIZE]``.

    ``batched_crops=False``: per-sample crops in a Python loop, as in the popular implementation; ``True``: the
    same integer crops of the whole batch with one advanced-indexing gather per scale.
    """
    import torch
    from torch.nn import functional as F

    class Retina:
        """Crops ``SCALES`` patches of growing size around ``loc`` and pools them to ``SIZE`` x ``SIZE``."""

        def foveate(self, x, loc):
            phis = []
            size = SIZE
            for _ in range(SCALES):
                phis.append(self.extract_patch(x, loc, size))
                size *= 2
            for i in range(1, len(phis)):
                k = phis[i].shape[-1] // SIZE
                phis[i] = F.avg_pool2d(phis[i], k)
            return torch.cat(phis, 1).view(x.shape[0], -1)

        def extract_patch(self, x, loc, size):
            b, c, h, w = x.shape
            start = (0.5 * ((loc + 1.0) * torch.tensor([w, h]))).long()
            x = F.pad(x, (size // 2, size // 2, size // 2, size // 2))
            if batched_crops:  # rows / columns of every crop, one gather: [B, C, size, size]
                offsets = torch.arange(size)
                rows = (start[:, 1, None] + offsets)[:, None, :, None]
                cols = (start[:, 0, None] + offsets)[:, None, None, :]
                return x[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
            patches = []
            for i in range(b):
                patches.append(x[i, :, start[i, 1] : start[i, 1] + size, start[i, 0] : start[i, 0] + size])
            return torch.stack(patches)

    return Retina()


def torch_step(images: np.ndarray, labels: np.ndarray, batched_crops: bool = False):
    """One PyTorch training step; ``batched_crops``: the retina crops the batch with one gather per scale
    instead of a Python loop over the samples."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Network(nn.Module):
        def __init__(self):
            super().__init__()
            self.retina = torch_retina(batched_crops)
            self.what = nn.Linear(SCALES * SIZE * SIZE, 128)
            self.where = nn.Linear(2, 128)
            self.what_out = nn.Linear(128, 256)
            self.where_out = nn.Linear(128, 256)
            self.core_h = nn.Linear(256, 256)
            self.core_g = nn.Linear(256, 256)
            self.location = nn.Linear(256, 2)
            self.baseline = nn.Linear(256, 1)
            self.action = nn.Linear(256, 10)

        def forward(self, x):
            b = x.shape[0]
            loc = torch.empty(b, 2).uniform_(-1, 1)
            h = torch.zeros(b, 256)
            log_pis, baselines = [], []
            for t in range(GLIMPSES):
                phi = self.retina.foveate(x, loc)
                g = F.relu(self.what_out(F.relu(self.what(phi))) + self.where_out(F.relu(self.where(loc))))
                h = F.relu(self.core_h(h) + self.core_g(g))
                mu = torch.tanh(self.location(h.detach()))
                sample = (mu + STD * torch.randn_like(mu)).detach()
                baseline = self.baseline(h.detach()).squeeze(1)
                if t < GLIMPSES - 1:
                    log_pis.append(torch.distributions.Normal(mu, STD).log_prob(sample).sum(1))
                    baselines.append(baseline)
                loc = torch.clamp(sample, -1, 1)
            return self.action(h), torch.stack(log_pis, 1), torch.stack(baselines, 1)

    model = Network()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels.astype(np.int64))

    def run():
        optimizer.zero_grad()
        logits, log_pi, baselines = model(x)
        reward = (logits.argmax(1) == y).float()
        advantage = (reward[:, None] - baselines).detach()
        loss = (
            F.cross_entropy(logits, y)
            + F.mse_loss(baselines, reward[:, None].expand_as(baselines))
            - (log_pi * advantage).sum(1).mean()
        )
        loss.backward()
        optimizer.step()

    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (XLA uses all cores)")
    add_output_argument(parser, "ram_train")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    images = np.zeros((args.batch_size, 60, 60, 1), np.float32)
    for i in range(args.batch_size):  # a bright 28x28 square somewhere: the content does not matter for speed
        top, left = rng.integers(0, 33, 2)
        images[i, top : top + 28, left : left + 28] = rng.random((28, 28, 1))
    labels = rng.integers(0, 10, args.batch_size).astype(np.int32)

    rows = {
        f"visattn_jax RAM bare step ({method} retina)": median_seconds(bare_step(images, labels, method), args.steps)
        for method in ("gather", "matmul")
    }
    rows[f"visattn_jax RAM loop step (+ translation, clipping; {CONFIG})"] = median_seconds(
        loop_row(args.batch_size), args.steps
    )
    references = []
    torch = import_torch(args.threads)
    if torch is not None:
        for batched, label in ((False, "per-sample crop loop"), (True, "batched crops")):
            references.append(f"PyTorch {torch.__version__} ({label})")
            rows[references[-1]] = median_seconds(torch_step(images, labels, batched), args.steps)
    print(
        f"RAM, 60x60 translated, {GLIMPSES} glimpses of {SCALES} x {SIZE}x{SIZE}, batch {args.batch_size}, Adam; "
        f"median of {args.steps} steps; jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    table = print_throughput(rows, args.batch_size, references)
    write_result(args.out, {"ram_translated60": table}, steps=args.steps, config=f"ram_mnist.py:{CONFIG}")


if __name__ == "__main__":
    main()
