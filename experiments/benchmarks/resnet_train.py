"""Training-step throughput of our ResNets against PyTorch on this machine (same network, same batch).

Command (the numbers in docs/benchmarks.md came from it; run it on a quiet machine, see ../shared/PERF.md):

    .venv/bin/python -m experiments.benchmarks.resnet_train [--steps 10] [--threads 2] [--only resnet20,resnet50]
    .venv/bin/python -m experiments.benchmarks.resnet_train --inference [--steps 20]   # SENet's CPU inference figure

Networks: CIFAR ResNet-20 and SE-ResNet-20 at batch 128 on 32x32; ResNet-50 and SE-ResNet-50 (timm's
``seresnet50`` layout) at batch 16 on 224x224. Rows, per network:
  visattn loop step (XLA default)    the training step ``fit`` runs (``visattn_jax.train.make_train_step``) for
                                     the network's experiment config (CIFAR: ``cifar.py:<net>,short40``, whose
                                     step also gathers, pads, crops, flips and normalises its batch on device;
                                     ImageNet: ``imagenet.py:<net>``, given a normalised batch), with that
                                     config's optimiser (Nesterov + decay on kernels / SGD momentum + decay),
                                     schedule, metrics and donation; XLA's default CPU options
  visattn loop step (XLA fast conv)  the same step with ``xla_cpu_fast_conv`` (YNN fusions), what the CIFAR and
                                     ImageNet configs run on CPU
  visattn bare step (fast conv)      a hand-written step on a fixed batch (SGD momentum + weight decay 1e-4, no
                                     augmentation, no metrics): the like-for-like of the PyTorch rows
  torch eager                        the same network in PyTorch (the CIFAR networks: written below, option-A
                                     shortcuts, SE as in visattn_jax.se; ResNet-50 / SE-ResNet-50: timm's
                                     ``resnet50`` / ``seresnet50``, or skipped rows without timm), eager, NCHW,
                                     on a fixed batch, SGD momentum 0.9 + weight decay 1e-4
  torch eager channels_last          the same with ``memory_format=torch.channels_last``
The ratio column is images/s over the "torch eager" row of the same network, measured in the same run. At
the end, SE's cost: each row's SE step time over its plain step time (the SENet paper: +10% on GPU). The tables
are also written as JSON (``--out``, default ``experiments/results/benchmarks/resnet_train.json``, or
``resnet_inference.json`` with ``--inference``) with the command, the machine and the code version.
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
    parse_only,
    print_throughput,
    torch_training_step,
    write_result,
)
from visattn_jax.models import create_model
from visattn_jax.train import build_task
from visattn_jax.train.loop import CPU_CONV_OPTIONS

# network -> (registered name, batch, image size, classes, the experiment config whose training step is timed)
SETTINGS = {
    "resnet20": ("cifar_resnet20", 128, 32, 10, "cifar.py:resnet20,short40"),
    "se_resnet20": ("cifar_se_resnet20", 128, 32, 10, "cifar.py:se_resnet20,short40"),
    "resnet50": ("resnet50", 16, 224, 1000, "imagenet.py:resnet50"),
    "seresnet50": ("seresnet50", 16, 224, 1000, "imagenet.py:seresnet50"),
}
LOOP_ROWS = ("visattn loop step (XLA default)", "visattn loop step (XLA fast conv)")
BARE_ROW = "visattn bare step (fast conv)"


def experiment_config(spec: str, batch: int):
    """The config ``FILE:CELL`` of experiments/configs (e.g. ``cifar.py:resnet20,short40``) at batch ``batch``."""
    import importlib

    file, cell = spec.split(":")
    config = importlib.import_module(f"experiments.configs.{file.removesuffix('.py')}").get_config(cell)
    config.batch_size = batch
    return config


def loop_task(config, batch: int, size: int, classes: int):
    """The task the experiment builds for ``config`` (:func:`visattn_jax.train.build_task`, on zero data of the
    dataset's shapes: the step's work does not depend on the pixels). CIFAR configs make their batch on device
    (gather the epoch's batch, pad, crop, flip, normalise); ImageNet configs are host streams, timed on a fixed
    normalised global batch (the host pipeline's work is not timed). Returns ``(task, batch or None)``."""
    task = build_task(config, shapes_only=True).task
    if task.train_batch is not None:
        return task, None
    rng = np.random.default_rng(1)
    images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    return task, {"image": images, "label": rng.integers(0, classes, batch).astype(np.int32)}


def bare_step(name: str, images: np.ndarray, labels: np.ndarray, *, fast_conv: bool):
    """A hand-written step on a fixed batch (SGD momentum 0.9 + weight decay 1e-4, no augmentation, no metrics,
    no EMA, one device): what the PyTorch rows do, so the like-for-like row against them."""
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
    compiled = lowered.compile(compiler_options=CPU_CONV_OPTIONS if fast_conv else None)
    state = [params, stats, opt_state]

    def run():
        state[0], state[1], state[2], loss = compiled(*state, x, y)
        loss.block_until_ready()

    return run


def jax_rows(name: str, batch: int, size: int, classes: int, steps: int, config_spec: str):
    """Random images and labels for ``name`` and our median seconds per step: the training step of
    ``visattn_jax.train.loop.fit`` for the experiment config ``config_spec`` (its optimiser, schedule, EMA,
    on-device augmentation for CIFAR, metrics, donation, sharding) with XLA's default CPU options and with fast
    conv, and the bare step. Returns ``(images, labels, {row label: seconds})``."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    config = experiment_config(config_spec, batch)
    task, given = loop_task(config, batch, size, classes)
    rows = {}
    for label, fast in zip(LOOP_ROWS, (False, True), strict=True):
        rows[label] = median_seconds(loop_step(task, config, fast_conv=fast, batch=given), steps)
    rows[BARE_ROW] = median_seconds(bare_step(name, images, labels, fast_conv=True), steps)
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
    compiled = forward.lower(variables, x).compile(compiler_options=CPU_CONV_OPTIONS if fast_conv else None)
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


def inference(torch, steps: int) -> dict[str, dict[str, float]]:
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
    return {name: {c: round(t * 1e3, 3) for c, t in row.items()} for name, row in rows.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (median)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {sorted(SETTINGS)}")
    parser.add_argument(
        "--inference", action="store_true", help="per-image inference at 224 instead (SENet's CPU figure)"
    )
    add_output_argument(parser, "resnet_train")
    args = parser.parse_args(argv)
    if args.inference:
        torch = import_torch(args.threads)
        print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__ if torch else '-'}")
        rows = inference(torch, args.steps)
        out = args.out.replace("resnet_train.json", "resnet_inference.json") if args.out else args.out
        write_result(out, {"inference_ms": rows}, steps=args.steps, torch=torch.__version__ if torch else None)
        return
    only = parse_only(parser, args.only, SETTINGS)
    torch = import_torch(args.threads)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__ if torch else '-'}")
    results = {}
    tables = {}
    for net, (name, batch, size, classes, spec) in SETTINGS.items():
        if only and net not in only:
            continue
        images, labels, rows = jax_rows(name, batch, size, classes, args.steps, spec)
        if torch is not None:
            for label, channels_last in (("torch eager", False), ("torch eager channels_last", True)):
                run = torch_step(torch, net, images, labels, channels_last=channels_last)
                if run is None:
                    print(f"timm is not installed: the {label} row of {net} is skipped.")
                    continue
                rows[label] = median_seconds(run, args.steps)
        print(f"\n{net} ({name}), batch {batch} at {size}x{size}, training step (loop rows: {spec}):")
        tables[net] = {"network": name, "config": spec, **print_throughput(rows, batch, "torch eager")}
        results[net] = rows
    for plain, se in (("resnet20", "se_resnet20"), ("resnet50", "seresnet50")):
        if plain in results and se in results:
            print(f"\nSE's cost, {se} step time over {plain}'s:")
            cost = {}
            for row in results[se]:
                if row in results[plain]:
                    cost[row] = round(results[se][row] / results[plain][row], 4)
                    print(f"  {row:<46}{cost[row]:>6.3f}x")
            tables[f"{se}_over_{plain}"] = cost
    write_result(args.out, tables, steps=args.steps, torch=torch.__version__ if torch else None)


if __name__ == "__main__":
    main()
