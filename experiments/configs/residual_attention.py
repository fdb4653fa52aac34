"""Residual Attention Network on CIFAR-10 / CIFAR-100 (Wang et al. 2017, section 4.1): every cell of its CIFAR
tables as a config. (ImageNet Attention-56 / -92: experiments/configs/imagenet.py:attention56.)

One config per cell, chosen by the string after the colon: ``MODEL[,VARIANT[,BUDGET[,DATASET]]]``
  MODEL    attention56 | attention92 | attention128 | attention164 | attention236 | attention452 (CIFAR
           variants, visattn_jax.residual_attention.CIFAR_ATTENTION) | preact_resnet164 (the noise baseline)
  VARIANT  arl (default: attention residual learning, mixed mask, encoder-decoder) | nal (naive M * T) |
           channel | spatial (mask activations) | local (local-convolution masks) | noise10 | noise30 |
           noise50 | noise70 (that % of training labels replaced, the paper's definition: data/cifar.py)
  BUDGET   paper (default: Nesterov SGD, batch 64, weight decay 1e-4, lr 0.1, /10 at 64k and 96k
           iterations, 160k iterations) | cpu (the same shape compressed to 4 epochs, /10 at 2 and 3: a
           smoke-scale budget for this project's 2 CPU cores; measure a step before planning a longer run) |
           cpuN (N epochs, /10 at N/2 and 3N/4; N may be a fraction: cpu0.5 is 390 steps, the budget of the
           ARL / NAL and attention / ResNet runs in experiments/README.md) | shortN (N epochs of CIFAR's short
           schedule, experiments/configs/cifar.py's SHORT: one epoch of warm-up, then cosine to 0; Nesterov,
           weight decay 5e-4 on kernels; at this batch of 64)
  DATASET  cifar10 (default) | cifar100
Augmentation: pad 4 + random 32x32 crop + flip, per-channel normalisation (as the paper).

Command (from the repository root):
  .venv/bin/python -m experiments.main --config=experiments/configs/residual_attention.py:attention92,arl,paper \
      --workdir=runs/ran/attention92_arl

The paper (% test error, CIFAR-10): Attention-56 5.52, -92 4.99, -128 4.44, -164 4.31, -236 4.14, -452 3.90;
CIFAR-100: Attention-92 21.71, -236 21.16, -452 20.45. ARL vs NAL: 56 5.52 / 5.89, 92 4.99 / 5.35, 128 4.44 /
5.57, 164 4.31 / 7.18. Activations (Attention-56): mixed 5.52, channel 6.24, spatial 6.33. Masks
(Attention-56): encoder-decoder 5.52, local convolutions 6.48. Noisy labels (ResNet-164 / Attention-92, noise
10 / 30 / 50 / 70%): 5.93 / 5.15, 6.61 / 5.79, 8.35 / 7.27, 17.21 / 15.75 (the paper's Table 4).

Ours at ``cpu0.5`` (390 steps, seed 0, 2026-11-28; ``bash experiments/run_table.sh ran``): Attention-56 ARL 52.33 /
NAL 55.65 (seed 1: 48.37 / 54.20), Attention-92 ARL 52.82 / NAL 58.90, pre-activation ResNet-164 56.07 (% test
error; experiments/README.md). At ``short2`` (the CIFAR short schedule over 2 epochs, 1,562 steps of 64,
seeds 0 and 1, 2026-12-07): Attention-56 ARL 26.65 +- 0.08 / NAL 28.06 +- 1.15 (seed 0: 26.59 / 27.25, seed 1:
26.70 / 28.88; Welch t = 1.74, p = 0.33), about 40 minutes a run.
A step of 64 takes about 1.3 s (Attention-56) to 2.7 s (Attention-92: 2.67 s in docs/benchmarks.md,
fast conv, quiet machine) on 2 CPU cores: 8 to 18 minutes a cell at cpu0.5, plus compilation and a 10,000-image
evaluation.
"""

from __future__ import annotations

from experiments.configs.cifar import DATASETS, image_config, is_budget, set_short_budget
from experiments.configs.common import parse_cell

MODELS = {
    **{f"attention{d}": f"cifar_attention{d}" for d in (56, 92, 128, 164, 236, 452)},
    "preact_resnet164": "cifar_preact_resnet164",
}
VARIANTS = {
    "arl": {},
    "nal": {"residual": "nal"},
    "channel": {"activation": "channel"},
    "spatial": {"activation": "spatial"},
    "local": {"mask_structure": "local"},
    **{f"noise{p}": {} for p in (10, 30, 50, 70)},
}


def get_config(arg: str = "attention92,arl,paper"):
    model, variant, budget, dataset = parse_cell(
        arg,
        [
            ("MODEL", MODELS, None),
            ("VARIANT", VARIANTS, "arl"),
            ("BUDGET", is_budget, "paper"),
            ("DATASET", DATASETS, "cifar10"),
        ],
        example="attention92,arl,cpu",
        describe={"BUDGET": "one of paper | cpu | cpuN (N epochs, e.g. cpu2 or cpu0.5) | shortN (e.g. short3)"},
    )
    if model == "preact_resnet164" and not (variant == "arl" or variant.startswith("noise")):
        raise ValueError(f"VARIANT {variant!r} changes the attention module; preact_resnet164 has none.")
    config = image_config(f"{model}_{variant}_{budget}_{dataset}", MODELS[model], dataset)
    config.model_overrides.update(VARIANTS[variant])
    config.label_noise = int(variant[5:]) / 100 if variant.startswith("noise") else 0.0
    config.optimizer = "nesterov"
    config.batch_size = 64
    config.learning_rate = 0.1
    config.weight_decay = 1e-4
    steps_per_epoch = 50_000 // 64  # 781
    if budget == "paper":
        config.num_epochs = 160_000 / steps_per_epoch
        config.decay_epochs = (64_000 / steps_per_epoch, 96_000 / steps_per_epoch)
        config.eval_every = 8000
    elif budget.startswith("short"):
        set_short_budget(config, float(budget.removeprefix("short")))
    else:
        config.num_epochs = float(budget.removeprefix("cpu") or 4)
        config.decay_epochs = (config.num_epochs / 2, config.num_epochs * 3 / 4)
        config.eval_every = 1562
    config.checkpoint_every = 781
    config.num_steps = 0  # from num_epochs
    return config
