"""SENet's ImageNet tables (Hu et al., CVPR 2018; TPAMI 2019) as configs, at ImageNet or CIFAR scale.

One config per cell, chosen by the string after the colon: ``CELL[,SCALE[,BUDGET]]``
  CELL   Table 2 networks (the paper's Caffe layout, visattn_jax.models' legacy_* names): resnet50 | seresnet50 |
         resnet101 | seresnet101 | resnet152 | seresnet152 | resnext50 | seresnext50;
         TPAMI ablations of SE-ResNet-50 (FC biases off, as in those runs; everything else as seresnet50):
         reduction ratio r2 | r4 | r8 | r16 (the reference cell: avg squeeze, sigmoid, all stages, standard
         position) | r32; squeeze_max; excite_tanh | excite_relu; stage2 | stage3 | stage4 (SE in that stage
         only; the paper numbers stages 2-5, our ResNet stages 1-4); se_pre | se_post | se_identity | se_3x3
         (integration: before the unit, after the addition, on the identity branch, after the 3x3 conv);
         nosqueeze (1x1 convolutions in place of pooling + FCs)
  SCALE  imagenet (default: SENet's schedule: SGD momentum 0.9, batch 1024, lr 0.6, /10 every 30 epochs,
         100 epochs, weight decay 1e-4, 224 crops) | cifar (the same cell on CIFAR-10 with ResNet-20 /
         SE-ResNet-20 instead of the 50-layer networks, and experiments/configs/cifar.py's schedules: the
         TPAMI ablation at a scale that fits this project's CPUs; CIFAR stages 1-3 stand for stages 2-4)
  BUDGET cifar only: paper | cpu | cpuN, as in experiments/configs/cifar.py (default cpu)

Command (from the repository root):
  .venv/bin/python -m experiments.main --config=experiments/configs/senet.py:se_pre,cifar,cpu3 \
      --workdir=runs/senet/se_pre_cifar_cpu3

The papers (% top-1 / top-5 error, ImageNet, single 224 crop).
Table 2 (re-implemented, batch 1024): ResNet-50 24.80 / 7.48 -> SE 23.29 / 6.62; ResNet-101 23.17 / 6.52 ->
22.38 / 6.07; ResNet-152 22.42 / 6.34 -> 21.57 / 5.73; ResNeXt-50 22.11 / 5.90 -> 21.10 / 5.49.
TPAMI ablations (ResNet-50 23.30 / 6.55 in that regime): r = 2, 4, 8, 16, 32: 22.29 / 6.00 (45.7M), 22.25 / 6.09
(35.7M), 22.26 / 5.99 (30.7M), 22.28 / 6.03 (28.1M), 22.72 / 6.20 (26.9M); squeeze max 22.57 / 6.09 (avg
22.28); excitation tanh 23.00 / 6.38, ReLU 23.47 / 6.98 (sigmoid 22.28); one stage only: stage 2 23.03, stage 3
23.04, stage 4 22.68 (all 22.28); SE-PRE 22.23 / 6.00, SE-POST 22.78 / 6.35, SE-Identity 22.20 / 6.15 (standard
22.28 / 6.03); SE after the 3x3 22.48 / 6.02 (25.8M); NoSqueeze 22.93 / 6.39.
What our CIFAR-scale runs reached is in experiments/README.md (summaries in experiments/results/senet/).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import cifar, imagenet
from experiments.configs.common import parse_cell

TABLE2 = {
    "resnet50": "legacy_resnet50",
    "seresnet50": "legacy_seresnet50",
    "resnet101": "legacy_resnet101",
    "seresnet101": "legacy_seresnet101",
    "resnet152": "legacy_resnet152",
    "seresnet152": "legacy_seresnet152",
    "resnext50": "legacy_resnext50_32x4d",
    "seresnext50": "legacy_seresnext50_32x4d",
}
_NO_BIAS = {"use_bias": False}
# Ablation cell -> (fields of SqueezeExcite, fields of the ResNet's attention hook).
ABLATIONS: dict[str, tuple[dict, dict]] = {
    **{f"r{r}": ({**_NO_BIAS, "reduction": r}, {}) for r in (2, 4, 8, 16, 32)},
    "squeeze_max": ({**_NO_BIAS, "squeeze": "max"}, {}),
    "excite_tanh": ({**_NO_BIAS, "gate": "tanh"}, {}),
    "excite_relu": ({**_NO_BIAS, "gate": "relu"}, {}),
    **{f"stage{s}": (dict(_NO_BIAS), {"attention_stages": (s - 1,)}) for s in (2, 3, 4)},
    "se_pre": (dict(_NO_BIAS), {"attention_position": "pre"}),
    "se_post": (dict(_NO_BIAS), {"attention_position": "post"}),
    "se_identity": (dict(_NO_BIAS), {"attention_position": "identity"}),
    "se_3x3": (dict(_NO_BIAS), {"attention_position": "after_3x3"}),
    "nosqueeze": ({**_NO_BIAS, "squeeze": "none"}, {}),
}
CELLS = (*TABLE2, *ABLATIONS)
SCALES = ("imagenet", "cifar")


def get_config(arg: str = "seresnet50,imagenet") -> ml_collections.ConfigDict:
    cell, scale, budget = parse_cell(
        arg,
        [("CELL", CELLS, None), ("SCALE", SCALES, "imagenet"), ("BUDGET", cifar.is_budget, "cpu")],
        example="se_pre,cifar,cpu3",
        describe={"BUDGET": "one of paper | cpu | cpuN | shortN (CIFAR scale only)"},
    )
    if scale == "imagenet" and arg.count(",") == 2:
        raise ValueError(f"BUDGET is for the cifar scale only; ImageNet cells use SENet's schedule, got {arg!r}.")
    se, hook = ABLATIONS.get(cell, ({}, {}))
    if scale == "cifar":
        # The 50-layer cells become the CIFAR ResNet-20 (plain) or SE-ResNet-20 (SE, the ablation applied). The
        # paper's stage s (2-4) is our 1-based stage s - 1 at both scales.
        plain = cell in TABLE2 and not cell.startswith("se")
        config = cifar.get_config(f"{'resnet20' if plain else 'se_resnet20'},{budget}")
    else:
        config = imagenet.get_config(f"{TABLE2.get(cell, 'legacy_seresnet50')},4")  # batch 1024
        config.learning_rate = 0.6
        config.warmup_epochs = 0.0
        config.num_epochs = 100.0
        config.decay_epochs = (30.0, 60.0, 90.0)
        config.model_overrides = ml_collections.ConfigDict()  # SENet did not zero-init the last BN
    config.name = f"senet_{cell}_{scale}" + (f"_{budget}" if scale == "cifar" else "")
    if se:  # fields of visattn_jax.se.SqueezeExcite over the network's own (the SE networks' `se` override)
        config.model_overrides.se = ml_collections.ConfigDict(se)
    for key, value in hook.items():
        config.model_overrides[key] = value
    return config
