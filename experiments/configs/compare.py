"""The cross-family comparison: spatial, channel, channel-and-spatial, mixed and recurrent hard attention on the
same data at the same budget (no paper runs all four; each compares its mechanism with its own baseline).

One config per cell, chosen by the string after the colon: ``DATASET,MODEL``
  DATASET  cluttered60 (the RAM paper's 60x60 canvases, one digit and 4 pieces of 8x8 clutter) | cifar10
  MODEL    cluttered60: cnn (the STN paper's CNN: conv 9x9, pool, conv 7x7, pool, FC) | st_cnn (the same CNN
           behind an affine spatial transformer, 60 -> 30 as the STN paper's cluttered cell) | ram (LSTM core, 6
           glimpses of 3 scales of 12x12) | se_cnn / cbam_cnn (the CNN with SE / CBAM after each convolution,
           reduction 16: the same size) | ran (digit_attention56: a small Residual Attention network)
           cifar10: resnet20 | se_resnet20 | cbam_resnet20 | st_resnet20 (an affine spatial transformer in front
           of ResNet-20) | attention56 (the CIFAR Attention-56)
Seeds: ``--config.seed=N`` (``bash experiments/run_table.sh compare`` runs every cell with seeds 0, 1, 2 and writes
the table and the figure of experiments/README.md, "Cross-family comparison").

The budgets (2 CPU cores; every model of a dataset gets the same one, stated in the table):
  cluttered60  1,000 steps of batch 128 (128,000 images, 2.1 epochs of MNIST's 60,000 digits; new clutter
               every step), Adam 1e-3 with cosine decay, gradient norm clipped at 5 (ram_mnist.py's CPU recipe,
               which gives RAM 20,000 steps): what 3 seeds of all six networks cost on these cores in about 80
               minutes (seed 2's six runs, mostly alone on the cores: 26 minutes; RAM steps at about 3,600
               images/s here, the CNNs at 490-920, the ST-CNN and the RAN at
               480-580), far from convergence for every model and farthest for RAM, whose
               REINFORCE-trained policy learns slowest per image.
  cifar10      cifar.py's cpu3: He et al.'s schedule compressed to 3 epochs (SGD momentum 0.9, lr 0.1, /10 at
               epochs 1.5 and 2.25, weight decay 1e-4, batch 128, pad-crop-flip augmentation): the budget of the
               3-seed SE comparison of experiments/README.md, far from any network's converged error.

Command (from the repository root):
  .venv/bin/python -m experiments.main --config=experiments/configs/compare.py:cluttered60,se_cnn \
      --workdir=runs/compare/cluttered60_se_cnn_seed0 --config.seed=0
"""

from __future__ import annotations

import ml_collections

from experiments.configs import cifar, ram_mnist
from experiments.configs.common import parse_cell

#: Per dataset: cell model name -> registry name (visattn_jax.models).
MODELS = {
    "cluttered60": {
        "cnn": "stn_cnn",
        "st_cnn": "st_cnn",
        "ram": "ram",
        "se_cnn": "stn_se_cnn",
        "cbam_cnn": "stn_cbam_cnn",
        "ran": "digit_attention56",
    },
    "cifar10": {
        "resnet20": "cifar_resnet20",
        "se_resnet20": "cifar_se_resnet20",
        "cbam_resnet20": "cifar_cbam_resnet20",
        "st_resnet20": "cifar_st_resnet20",
        "attention56": "cifar_attention56",
    },
}
#: The attention each cell's network adds, for the table's second column.
MECHANISMS = {
    "cnn": "none (baseline)",
    "resnet20": "none (baseline)",
    "st_cnn": "spatial: affine transformer",
    "st_resnet20": "spatial: affine transformer",
    "ram": "hard, recurrent: 6 glimpses",
    "se_cnn": "channel: SE",
    "se_resnet20": "channel: SE",
    "cbam_cnn": "channel + spatial: CBAM",
    "cbam_resnet20": "channel + spatial: CBAM",
    "ran": "mixed: soft masks (Residual Attention)",
    "attention56": "mixed: soft masks (Residual Attention)",
}
CLUTTERED_STEPS = 1000
CIFAR_BUDGET = "cpu3"


def get_config(arg: str = "cluttered60,cnn") -> ml_collections.ConfigDict:
    every = sorted({m for models in MODELS.values() for m in models})
    dataset, model = parse_cell(arg, [("DATASET", MODELS, None), ("MODEL", every, None)], example="cluttered60,ram")
    if model not in MODELS[dataset]:
        raise ValueError(f"MODEL of {dataset} must be one of {' | '.join(MODELS[dataset])}; got {model!r} in {arg!r}.")
    if dataset == "cifar10":
        config = cifar.get_config(f"resnet20,{CIFAR_BUDGET}")
        config.name = f"compare_{dataset}_{model}"
        config.model = MODELS[dataset][model]
        config.transform = "affine"
        if model == "st_resnet20":
            # The STN paper trains the localisation network slower than the rest. At the ResNet's SGD rate of 0.1
            # it does not survive: measured, seed 0 sat at chance (loss 2.30) from step 50 on, its transformer
            # having left the image; at 0.01x its loss follows the ResNet's (1.81 at step 50, the ResNet's about 1.8).
            config.lr_scales = ml_collections.ConfigDict({"transformer": 0.01})
        return config
    config = ram_mnist.get_config("cluttered60,ram,6,cpu")
    config.name = f"compare_{dataset}_{model}"
    config.model = MODELS[dataset][model]
    config.core = "lstm"
    config.num_steps = CLUTTERED_STEPS
    config.transform = "affine"
    config.st_output_size = 30  # the STN paper halves the transformer's output for 60x60 cluttered digits
    # The CNNs read the canvas as the ST-CNN's transformer does at its identity initialisation (60 -> 30, the
    # 2x2 average): the CNN is the ST-CNN without the transformer, and SE / CBAM add only their attention.
    config.view_size = 30
    config.num_classes = 10
    # XLA:CPU's fused convolutions (visattn_jax.train.loop.CPU_CONV_OPTIONS; ignored on GPU / TPU): measured
    # 1.2-1.3x faster for the three CNNs, slower for the sampling models and the small RAN (455 against 572
    # images/s), so only the CNNs use them. Speed only: the networks and the data are the same either way.
    config.xla_cpu_fast_conv = model in ("cnn", "se_cnn", "cbam_cnn")
    return config
