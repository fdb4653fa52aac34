"""CIFAR-10 / CIFAR-100 classification with the residual baselines of the SENet and Residual Attention papers.

One config per cell, chosen by the string after the colon: ``MODEL[,BUDGET[,DATASET]]``
  MODEL    resnet20 | resnet32 | resnet44 | resnet56 | resnet110 (He et al. 2015, basic blocks, option-A
           shortcuts) | preact_resnet164 (He et al. 2016, pre-activation bottlenecks); se_<any of these>: the
           same network with SE blocks (SENet, reduction 16); cbam_resnet20 ... cbam_resnet110: with CBAM
           blocks (Woo et al. 2018, reduction 16, 7x7 spatial gate) where SE sits
  BUDGET   paper (default: the papers' schedule: SGD momentum 0.9, batch 128, lr 0.1, weight decay 1e-4,
           /10 at epochs 82 and 123 (32k and 48k iterations), 164 epochs (64k iterations); ResNet-110 and
           -164 warm up linearly for the first epoch instead of He et al.'s 400 iterations at lr 0.01)
           | cpu (the same schedule compressed to 20 epochs, /10 at epochs 10 and 15: what fits in about an
           hour of this project's 2 CPU cores for ResNet-20) | cpuN (N epochs, /10 at N/2 and 3N/4: e.g. cpu3
           for the 3-epoch seed comparisons of experiments/README.md) | shortN (N epochs of a schedule made
           for a small budget, see SHORT below: short30 brought ResNet-20 to 9.44%, short40 to 8.59 / 9.31%)
  DATASET  cifar10 (default) | cifar100
Augmentation: zero-pad 4, random 32x32 crop, horizontal flip; per-channel mean / std normalisation.

Command (from the repository root):
  .venv/bin/python -m experiments.main --config=experiments/configs/cifar.py:resnet20,short30 \
      --workdir=runs/cifar/resnet20_short30
Data: TFDS's cifar10 if prepared, else the offline copy in --config.cifar10_dir (default
$VISATTN_CIFAR10_DIR or ../shared/data/cifar10 beside the repository), else TFDS's download (visattn_jax/data/cifar.py).

Expected (% test error on CIFAR-10, the papers, full schedule): ResNet-20 8.75, -32 7.51, -44 7.17, -56 6.97,
-110 6.43 (6.61 +- 0.16 over 5 runs); pre-activation ResNet-164 5.46; CIFAR-100: ResNet-164 24.33.
SENet (its Table 4, each baseline's schedule): CIFAR-10 ResNet-110 6.37 -> SE 5.21, ResNet-164 5.46 -> 4.39;
CIFAR-100 ResNet-110 26.88 -> 23.85, ResNet-164 24.33 -> 21.31.
CBAM reports no CIFAR numbers; its Table 4 (ImageNet, top-1 / top-5 error, parameters): ResNet-50 24.56 / 7.50
(25.56M), + SE 23.14 / 6.70 (28.09M), + CBAM 22.66 / 6.31 (28.09M; ours: cbam_resnet50, 28,089,624 parameters,
through experiments/configs/imagenet.py:cbam_resnet50). CIFAR ResNet-20 + CBAM: 272,995 parameters (SE: 272,095).
Ours: ResNet-20 at short30 (30 epochs, seed 0, 2026-12-03, commit fa62364): 9.44% test error, 84 minutes on
2 CPU cores at 299 images/s; at short40 (40 epochs): seed 0 (commit 755fc4a) 8.59%, 159 minutes at 212 images/s
on shared cores; seed 1 (commit 5c5b15c) 9.31%, 2.1 hours of training steps at 267 images/s on average. What
every budgeted run reached is in experiments/README.md (summaries in experiments/results/cifar/).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import ml_collections

from experiments.configs.common import base_config, parse_cell

_REPOSITORY = Path(__file__).resolve().parents[2]  # so the default works from any folder (notebooks/ too)
MODELS = {
    "resnet20": "cifar_resnet20",
    "resnet32": "cifar_resnet32",
    "resnet44": "cifar_resnet44",
    "resnet56": "cifar_resnet56",
    "resnet110": "cifar_resnet110",
    "preact_resnet164": "cifar_preact_resnet164",
}
# The same networks with SE blocks (visattn_jax.se, reduction 16) on every residual branch, and the basic-block
# ones with CBAM (visattn_jax.cbam: channel attention from average and max pooling, then a 7x7 spatial gate).
_PLAIN = dict(MODELS)
MODELS.update({f"se_{short}": name.replace("cifar_", "cifar_se_") for short, name in _PLAIN.items()})
MODELS.update({f"cbam_{s}": n.replace("cifar_", "cifar_cbam_") for s, n in _PLAIN.items() if "preact" not in s})
BUDGETS = ("paper", "cpu")
# The short schedule (budget ``shortN``). He et al.'s step schedule spends half its epochs at lr 0.1 and only
# reaches its error after the two decays; compressed to N epochs (``cpuN``) it stops far short (ResNet-20: 13.1%
# after 20 epochs). For a fixed small budget the annealing matters more than the plateau (Li et al., "Budgeted
# training", ICLR 2020: a schedule that decays to zero at the budget's end beats any truncated step schedule), so:
# - one epoch of linear warm-up to lr 0.1, then cosine decay to 0 at the last step (Loshchilov & Hutter 2017);
# - Nesterov momentum 0.9 (the Residual Attention paper's optimiser; not compared here with plain momentum);
# - weight decay 5e-4 on convolution / dense kernels only (not BatchNorm scales and offsets): the value the
#   short CIFAR schedules use (e.g. Zagoruyko & Komodakis' WRN runs; kuangliu/pytorch-cifar), stronger than
#   He et al.'s 1e-4, which a 164-epoch schedule can afford because it trains 5x longer at a high rate;
# - the papers' augmentation (pad 4, crop, flip) and batch 128, unchanged; no label smoothing (the papers
#   trained without it, and the comparisons against them should differ only in the schedule).
SHORT = {
    "optimizer": "nesterov",
    "learning_rate": 0.1,
    "schedule": "cosine",
    "warmup_epochs": 1.0,
    "weight_decay": 5e-4,
    "weight_decay_mask": "kernels",
}
DATASETS = {"cifar10": 10, "cifar100": 100}
PAPER_ERROR = {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43,
               "preact_resnet164": 5.46}  # fmt: skip


def image_config(name: str, model: str, dataset: str) -> ml_collections.ConfigDict:
    """Fields every natural-image config shares (CIFAR-style data on device)."""
    config = base_config(name)
    config.dataset = dataset
    config.num_classes = DATASETS[dataset]
    # The offline copy (train.npz, test.npz), used when TFDS has not prepared cifar10: $VISATTN_CIFAR10_DIR, else
    # shared/data/cifar10 beside the repository (an absolute path, so runs from notebooks/ find it too).
    config.cifar10_dir = os.environ.get("VISATTN_CIFAR10_DIR", str(_REPOSITORY.parent / "shared" / "data" / "cifar10"))
    config.model = model
    config.dtype = "float32"  # "bfloat16": mixed precision (float32 parameters, statistics and loss)
    config.model_overrides = ml_collections.ConfigDict()  # fields of the network, e.g. {"zero_init_last": True}
    config.mean = (0.49139968, 0.48215841, 0.44653091)
    config.std = (0.24703223, 0.24348513, 0.26158784)
    config.augment = True
    config.label_smoothing = 0.0
    config.ema_decay = 0.0
    config.xla_cpu_fast_conv = True  # XLA:CPU's fused convolutions (ignored on GPU / TPU)
    config.optimizer = "momentum"
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.weight_decay_mask = "all"  # He et al. decay every parameter
    config.schedule = "step"
    config.decay_factor = 0.1
    config.decay_steps = 0
    config.warmup_epochs = 0.0
    config.log_every = 50
    config.eval_every = 0
    config.checkpoint_every = 390
    return config


def is_budget(budget: str) -> bool:
    """Whether ``budget`` is ``paper``, ``cpu``, ``cpuN`` or ``shortN`` with N a positive number of epochs
    (``cpu3``, ``cpu0.5``, ``short30``)."""
    if budget in BUDGETS:
        return True
    for prefix in ("cpu", "short"):
        epochs = budget.removeprefix(prefix)
        if budget.startswith(prefix) and re.fullmatch(r"\d+(\.\d+)?", epochs) is not None and float(epochs) > 0:
            return True
    return False


def set_short_budget(config: ml_collections.ConfigDict, epochs: float) -> None:
    """Applies :data:`SHORT` over ``epochs`` epochs of CIFAR's 50,000 images at ``config.batch_size`` (set
    first), evaluating every 5 epochs."""
    config.update(SHORT)
    config.num_epochs = epochs
    config.decay_epochs = ()
    config.eval_every = 5 * (50_000 // config.batch_size)


def get_config(arg: str = "resnet20,paper") -> ml_collections.ConfigDict:
    model, budget, dataset = parse_cell(
        arg,
        [("MODEL", MODELS, None), ("BUDGET", is_budget, "paper"), ("DATASET", DATASETS, "cifar10")],
        example="resnet20,cpu",
        describe={"BUDGET": "one of paper | cpu | cpuN (N epochs, e.g. cpu3 or cpu0.5) | shortN (e.g. short30)"},
    )
    epochs = budget.removeprefix("cpu")
    config = image_config(f"{model}_{budget}_{dataset}", MODELS[model], dataset)
    config.batch_size = 128
    config.learning_rate = 0.1
    if budget == "paper":
        config.num_epochs = 164.0
        config.decay_epochs = (82.0, 123.0)
        config.eval_every = 3900  # every 10 epochs
    elif budget.startswith("short"):
        set_short_budget(config, float(budget.removeprefix("short")))
    else:
        config.num_epochs = float(epochs or 20)
        config.decay_epochs = (config.num_epochs / 2, config.num_epochs * 3 / 4)
        config.eval_every = 780  # every 2 epochs
    if model.removeprefix("se_").removeprefix("cbam_") in ("resnet110", "preact_resnet164"):
        config.warmup_epochs = 1.0
    config.num_steps = 0  # from num_epochs
    return config
