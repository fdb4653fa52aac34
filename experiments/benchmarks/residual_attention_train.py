"""Training-step throughput of the Residual Attention Networks against a PyTorch implementation of the same network.

Command (run it on a quiet machine, see ../shared/PERF.md):

    .venv/bin/python -m experiments.benchmarks.residual_attention_train [--steps 5] [--threads 2] [--only cifar_attention92]

Networks: CIFAR Attention-92 at batch 64 on 32x32 (the paper's CIFAR batch) and ImageNet Attention-56 at batch 8
on 224x224. The PyTorch network is written below from the same description as ``visattn_jax.residual_attention``
(the Caffe prototxts: pre-activation bottlenecks whose shortcut convolves the pre-activated input, 3x3/2
ceil-mode max pools, align-corners bilinear upsampling to the matching map, skip units, the two-1x1-conv head
without bias, ``(1 + M) * T``); its hyperparameters are read from our registered module, and the parameter
counts of both are printed (equal counts: the same layers). Rows, per network (as in resnet_train): the loop's
training step for the network's experiment config (``residual_attention.py:attention92,arl,paper``: Nesterov,
on-device augmentation; ``imagenet.py:attention56``) with XLA's default CPU options and with
``xla_cpu_fast_conv``, the bare fixed-batch step (fast conv), PyTorch eager, NCHW and channels_last. The ratio
column is images/s over the "torch eager" row, measured in the same run. The tables are also written as JSON
(``--out``, default ``experiments/results/benchmarks/residual_attention_train.json``).
"""

from __future__ import annotations

import argparse

import jax

from experiments.benchmarks.common import (
    add_output_argument,
    import_torch,
    median_seconds,
    parse_only,
    print_throughput,
    torch_training_step,
    write_result,
)
from experiments.benchmarks.resnet_train import jax_rows
from visattn_jax.models import create_model, num_params

# network -> (batch, image size, classes, the experiment config whose training step the loop rows time)
SETTINGS = {
    "cifar_attention92": (64, 32, 10, "residual_attention.py:attention92,arl,paper"),
    "attention56": (8, 224, 1000, "imagenet.py:attention56"),
}


def torch_attention_net(torch, spec):
    """A PyTorch Residual Attention Network with the fields of ``spec`` (a ResidualAttentionNet)."""
    from torch import nn
    from torch.nn import functional as F

    def pool(x):
        return F.max_pool2d(x, 3, 2, ceil_mode=True)

    class Unit(nn.Module):
        """Pre-activation bottleneck; a 1x1 (strided) conv of the pre-activated input where the shape changes."""

        def __init__(self, cin, cout, stride=1):
            super().__init__()
            width = cout // 4
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, width, 1, bias=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(width), nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn3, self.conv3 = nn.BatchNorm2d(width), nn.Conv2d(width, cout, 1, bias=False)
            self.downsample = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

        def forward(self, x):
            pre = F.relu(self.bn1(x))
            identity = x if self.downsample is None else self.downsample(pre)
            y = self.conv2(F.relu(self.bn2(self.conv1(pre))))
            return self.conv3(F.relu(self.bn3(y))) + identity

    def units(c, n):
        return nn.ModuleList(Unit(c, c) for _ in range(n))

    # Module names mirror ours (visattn_jax.weights.torch_name), so our variables load into this network.
    class Attention(nn.Module):
        def __init__(self, c, depth):
            super().__init__()
            self.depth = depth
            self.pre, self.trunk, self.post = units(c, spec.p), units(c, spec.t), units(c, spec.p)
            bottom = spec.bottom_units or 2 * spec.r
            for level in range(depth):
                self.add_module(f"mask_down{level}", units(c, bottom if level == depth - 1 else spec.r))
                if level < depth - 1:
                    self.add_module(f"mask_skip{level}", Unit(c, c))
                if level > 0:
                    self.add_module(f"mask_up{level}", units(c, spec.r))
            self.mask_bn1, self.mask_conv1 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 1, bias=False)
            self.mask_bn2, self.mask_conv2 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 1, bias=False)

        def forward(self, x):
            for unit in self.pre:
                x = unit(x)
            trunk = x
            for unit in self.trunk:
                trunk = unit(trunk)
            m, sizes, skips = x, [], []
            for level in range(self.depth):
                sizes.append(m.shape[-2:])
                m = pool(m)
                for unit in getattr(self, f"mask_down{level}"):
                    m = unit(m)
                if level < self.depth - 1:
                    skips.append(getattr(self, f"mask_skip{level}")(m))
            for level in reversed(range(self.depth)):
                m = F.interpolate(m, size=tuple(sizes[level]), mode="bilinear", align_corners=True)
                if level > 0:
                    m = m + skips[level - 1]
                    for unit in getattr(self, f"mask_up{level}"):
                        m = unit(m)
            m = self.mask_conv1(F.relu(self.mask_bn1(m)))
            m = self.mask_conv2(F.relu(self.mask_bn2(m)))
            out = (1 + torch.sigmoid(m)) * trunk
            for unit in self.post:
                out = unit(out)
            return out

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            s = spec.stem_features
            self.conv1 = (
                nn.Conv2d(3, s, 7, 2, 3, bias=False)
                if spec.stem == "imagenet"
                else nn.Conv2d(3, s, 3, 1, 1, bias=False)
            )
            self.bn1 = nn.BatchNorm2d(s) if spec.stem == "imagenet" else None
            cin = s
            for stage in range(3):
                width = spec.widths[stage]
                self.add_module(f"unit{stage + 1}", Unit(cin, width, 1 if stage == 0 else 2))
                modules = [Attention(width, spec.mask_depths[stage]) for _ in range(spec.modules_per_stage[stage])]
                self.add_module(f"attention{stage + 1}", nn.ModuleList(modules))
                cin = width
            last = []
            for i in range(spec.last_stage_units):
                last.append(Unit(cin, spec.widths[3], spec.last_stage_stride if i == 0 else 1))
                cin = spec.widths[3]
            self.unit4 = nn.ModuleList(last)
            self.bn_final, self.fc = nn.BatchNorm2d(cin), nn.Linear(cin, spec.num_classes)

        def forward(self, x):
            x = self.conv1(x)
            if self.bn1 is not None:
                x = pool(F.relu(self.bn1(x)))
            for stage in range(1, 4):
                x = getattr(self, f"unit{stage}")(x)
                for module in getattr(self, f"attention{stage}"):
                    x = module(x)
            for unit in self.unit4:
                x = unit(x)
            return self.fc(F.relu(self.bn_final(x)).mean((2, 3)))

    return Net()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (median)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {sorted(SETTINGS)}")
    add_output_argument(parser, "residual_attention_train")
    args = parser.parse_args(argv)
    only = parse_only(parser, args.only, SETTINGS)
    torch = import_torch(args.threads)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__ if torch else '-'}")
    tables = {}
    for name, (batch, size, classes, spec) in SETTINGS.items():
        if only and name not in only:
            continue
        images, labels, rows = jax_rows(name, batch, size, classes, args.steps, spec)
        counts = f"parameters: ours {num_params(name):,}"
        if torch is not None:
            model = torch_attention_net(torch, create_model(name))
            counts += f", torch {sum(p.numel() for p in model.parameters()):,}"
            for label, channels_last in (("torch eager", False), ("torch eager channels_last", True)):
                rows[label] = median_seconds(
                    torch_training_step(torch, model, images, labels, channels_last=channels_last), args.steps
                )
        print(f"\n{name}, batch {batch} at {size}x{size}, training step ({counts}; loop rows: {spec}):")
        tables[name] = {"config": spec, "parameters": counts, **print_throughput(rows, batch, "torch eager")}
    write_result(args.out, tables, steps=args.steps, torch=torch.__version__ if torch else None)


if __name__ == "__main__":
    main()
