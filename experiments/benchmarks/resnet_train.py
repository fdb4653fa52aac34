"""Training-step throughput of our ResNets against PyTorch on this machine (same network, same batch).

Command (the numbers in the README came from it; run it on a quiet machine, see ../shared/PERF.md):

    .venv/bin/python -m experiments.benchmarks.resnet_train [--steps 10] [--threads 2] [--only resnet20,resnet50]
    .venv/bin/python -m experiments.benchmarks.resnet_train --inference [--steps 20]   # SENet's CPU inference figure

Networks: CIFAR ResNet-20 and SE-ResNet-20 at batch 128 on 32x32; ResNet-50 and SE-ResNet-50 (timm's
``seresnet50`` layout) at batch 16 on 224x224. Rows, per network:
  visattn (XLA default)       our training step (forward, backward, SGD momentum + weight decay, BatchNorm
                              statistics update) compiled with XLA's default CPU options
  visattn (XLA fast conv)     the same step compiled with ``xla_cpu_fast_conv`` (YNN fusions), the option the
                              CIFAR and ImageNet configs turn on (only ever applied on CPU)
  torch eager                 the same network in PyTorch (the CIFAR networks: written below, option-A
                              shortcuts, SE as in visattn_jax.se; ResNet-50 / SE-ResNet-50: timm's
                              ``resnet50`` / ``seresnet50``, or skipped rows without timm), eager, NCHW
  torch eager channels_last   the same with ``memory_format=torch.channels_last``
The ratio column is images/s over the "torch eager" row of the same network, measured in the same run. At
the end, SE's cost: each framework's SE step time over its plain step time (the SENet paper: +10% on GPU).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks.common import (
    import_torch,
    median_seconds,
    parse_only,
    print_throughput,
    torch_training_step,
)
from visattn_jax.models import create_model
from visattn_jax.train.loop import _CPU_CONV_OPTIONS

SETTINGS = {
    "resnet20": ("cifar_resnet20", 128, 32, 10),
    "se_resnet20": ("cifar_se_resnet20", 128, 32, 10),
    "resnet50": ("resnet50", 16, 224, 1000),
    "seresnet50": ("seresnet50", 16, 224, 1000),
}


def jax_step(name: str, images: np.ndarray, labels: np.ndarray, *, fast_conv: bool):
    model = create_model(name, num_classes=int(labels.max()) + 1 if name.startswith("cifar") else 1000)
    variables = model.init(jax.random.PRNGKey(0), jnp.asarray(images[:1]), train=False)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    opt_state = tx.init(params)

    def loss_fn(p, s, x, y):
        logits, new = model.apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

    def step(p, s, o, x, y):
        (loss, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), s, o, loss

    x, y = jnp.asarray(images), jnp.asarray(labels)
    lowered = jax.jit(step, donate_argnums=(0, 1, 2)).lower(params, stats, opt_state, x, y)
    compiled = lowered.compile(compiler_options=_CPU_CONV_OPTIONS if fast_conv else None)
    state = [params, stats, opt_state]

    def run():
        state[0], state[1], state[2], loss = compiled(*state, x, y)
        loss.block_until_ready()

    return run


def jax_rows(name: str, batch: int, size: int, classes: int, steps: int):
    """Random images and labels for ``name``, and our step's median seconds with XLA's default CPU options and
    with fast conv: ``(images, labels, {row label: seconds})``."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    rows = {}
    for label, fast in (("visattn (XLA default)", False), ("visattn (XLA fast conv)", True)):
        rows[label] = median_seconds(jax_step(name, images, labels, fast_conv=fast), steps)
    return images, labels, rows


def torch_cifar_resnet20(torch, se: bool = False):
    from torch import nn
    from torch.nn import functional as F

    class SE(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.fc1 = nn.Conv2d(channels, channels // 16, 1)
            self.fc2 = nn.Conv2d(channels // 16, channels, 1)

        def forward(self, x):
            return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.se = SE(cout) if se else nn.Identity()
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.se(self.bn2(self.conv2(y)))
            shortcut = x
            if self.stride != 1 or self.extra:  # option A: subsample and zero-pad the channels
                shortcut = F.pad(
                    x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.extra // 2, self.extra // 2)
                )
            return F.relu(y + shortcut)

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            blocks, cin = [], 16
            for i, cout in enumerate((16, 32, 64)):
                for j in range(3):
                    blocks.append(Block(cin, cout, 2 if i > 0 and j == 0 else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.blocks(F.relu(self.bn1(self.conv1(x))))
            return self.fc(x.mean((2, 3)))

    return ResNet20()


def torch_step(torch, net: str, images: np.ndarray, labels: np.ndarray, *, channels_last: bool):
    if net in ("resnet20", "se_resnet20"):
        model = torch_cifar_resnet20(torch, se=net.startswith("se_"))
    else:
        try:
            import timm
        except ImportError:
            return None
        model = timm.create_model(net, pretrained=False)
    return torch_training_step(torch, model, images, labels, channels_last=channels_last)


# Per-image inference at 224x224 (batch 1, evaluation mode): the SENet paper's CPU figure is 164 ms (ResNet-50)
# vs 167 ms (SE-ResNet-50). The legacy_* networks are the paper's Caffe layout.
INFERENCE = ("resnet50", "seresnet50", "legacy_resnet50", "legacy_seresnet50")


def jax_inference(name: str, image: np.ndarray, *, fast_conv: bool):
    model = create_model(name)
    variables = model.init(jax.random.PRNGKey(0), jnp.asarray(image), train=False)
    x = jnp.asarray(image)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    compiled = forward.lower(variables, x).compile(compiler_options=_CPU_CONV_OPTIONS if fast_conv else None)
    return lambda: compiled(variables, x).block_until_ready()


def torch_inference(torch, name: str, image: np.ndarray):
    try:
        import timm
    except ImportError:
        return None
    if not timm.is_model(name):  # timm has legacy_seresnet50 but no legacy_resnet50
        return None
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()

    def run():
        with torch.inference_mode():
            model(x)

    return run


def inference(torch, steps: int) -> None:
    image = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    rows: dict[str, dict[str, float]] = {}
    for name in INFERENCE:
        rows[name] = {
            "visattn (XLA default)": median_seconds(jax_inference(name, image, fast_conv=False), steps),
            "visattn (XLA fast conv)": median_seconds(jax_inference(name, image, fast_conv=True), steps),
        }
        run = torch_inference(torch, name, image) if torch is not None else None
        if run is not None:
            rows[name]["timm eager"] = median_seconds(run, steps)
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    print("\nInference, one 224x224 image, ms (the SENet paper, CPU: ResNet-50 164, SE-ResNet-50 167, 1.018x):")
    print(f"  {'network':<20}" + "".join(f"{c:>26}" for c in columns))
    for name, row in rows.items():
        print(f"  {name:<20}" + "".join(f"{row[c] * 1e3:>26.1f}" if c in row else f"{'-':>26}" for c in columns))
    for plain, se in (("resnet50", "seresnet50"), ("legacy_resnet50", "legacy_seresnet50")):
        ratios = "  ".join(
            f"{c} {rows[se][c] / rows[plain][c]:.3f}x" for c in columns if c in rows[se] and c in rows[plain]
        )
        print(f"  {se} / {plain}: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (median)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {sorted(SETTINGS)}")
    parser.add_argument(
        "--inference", action="store_true", help="per-image inference at 224 instead (SENet's CPU figure)"
    )
    args = parser.parse_args()
    if args.inference:
        torch = import_torch(args.threads)
        print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__ if torch else '-'}")
        inference(torch, args.steps)
        return
    only = parse_only(parser, args.only, SETTINGS)
    torch = import_torch(args.threads)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__ if torch else '-'}")
    results = {}
    for net, (name, batch, size, classes) in SETTINGS.items():
        if only and net not in only:
            continue
        images, labels, rows = jax_rows(name, batch, size, classes, args.steps)
        if torch is not None:
            for label, channels_last in (("torch eager", False), ("torch eager channels_last", True)):
                run = torch_step(torch, net, images, labels, channels_last=channels_last)
                if run is None:
                    print(f"timm is not installed: the {label} row of {net} is skipped.")
                    continue
                rows[label] = median_seconds(run, args.steps)
        print(f"\n{net} ({name}), batch {batch} at {size}x{size}, training step:")
        print_throughput(rows, batch, "torch eager")
        results[net] = rows
    for plain, se in (("resnet20", "se_resnet20"), ("resnet50", "seresnet50")):
        if plain in results and se in results:
            print(f"\nSE's cost, {se} step time over {plain}'s:")
            for row in results[se]:
                if row in results[plain]:
                    print(f"  {row:<30}{results[se][row] / results[plain][row]:>6.3f}x")


if __name__ == "__main__":
    main()
