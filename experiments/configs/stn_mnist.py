"""Spatial Transformer Networks on distorted MNIST: Table 1 of Jaderberg et al. 2015, and cluttered MNIST.

One config per table cell, chosen by the string after the colon: ``MODEL,TRANSFORM,DISTORTION[,BUDGET]``
  MODEL       cnn | fcn | st_cnn | st_fcn
  TRANSFORM   affine | projective | tps | attention   (ignored by cnn / fcn)
  DISTORTION  R | RTS | P | E | TC60  (rotated, rotated-translated-scaled 42x42, projective, elastic,
              translated-cluttered 60x60)
  BUDGET      cpu (default: minutes on 2 CPU cores, Adam + cosine) | paper (SGD lr 0.01, batch 256,
              x0.1 every 50k steps, 150k steps: for a GPU/TPU)
and ``quickstart`` (the README's main job: ST-CNN affine on RTS, about 3 minutes on 2 CPU cores).

Command (from the repository root):
  .venv/bin/python -m experiments.main --config=experiments/configs/stn_mnist.py:st_cnn,affine,RTS \
      --workdir=runs/stn/st_cnn_affine_RTS

Expected (paper, % error): RTS: CNN 0.8, ST-CNN affine 0.5, FCN 5.2, ST-FCN affine 0.8; R: CNN 1.2, ST-CNN
affine 0.7, TPS 0.7. What our CPU-budget runs reached, with commands and wall-clock times, is in
experiments/README.md (and each run's summary.json under experiments/results/stn/).
Setting details (unverified in the paper, our choices): visattn_jax/data/distortions.py.
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import base_config, parse_cell, set_budget

MODELS = ("cnn", "fcn", "st_cnn", "st_fcn")
TRANSFORMS = ("none", "affine", "attention", "projective", "tps")  # none: the baselines (cnn, fcn)
DISTORTIONS = {"R": "rotated", "RTS": "rts", "P": "projective", "E": "elastic", "TC60": "cluttered60"}
# The baselines' names in visattn_jax.models (the spatial transformer classifiers keep theirs).
REGISTRY_NAMES = {"cnn": "stn_cnn", "fcn": "stn_fcn"}
# The paper halves the transformer's output for RTS (42 -> 21) and translated-cluttered (60 -> 30).
ST_OUTPUT = {"rts": 21, "cluttered60": 30}


def get_config(arg: str = "st_cnn,affine,RTS,cpu") -> ml_collections.ConfigDict:
    if arg == "quickstart":
        config = get_config("st_cnn,affine,RTS,cpu")
        config.num_steps = 1500
        config.eval_every = 0
        return config
    fields = [("MODEL", MODELS, None), ("TRANSFORM", TRANSFORMS, None), ("DISTORTION", DISTORTIONS, None)]
    model, transform, distortion, budget = parse_cell(
        arg, [*fields, ("BUDGET", ("cpu", "paper"), "cpu")], example="st_cnn,affine,RTS", special=["quickstart"]
    )
    if model.startswith("st_") and transform == "none":
        raise ValueError(f"TRANSFORM of {model} must be one of {' | '.join(TRANSFORMS[1:])}; got 'none' in {arg!r}.")
    if not model.startswith("st_") and transform != "none":
        raise ValueError(f"TRANSFORM of the baseline {model} must be none; got {transform!r} in {arg!r}.")

    name = f"{model}_{transform}_{distortion}_{budget}" if model.startswith("st_") else f"{model}_{distortion}_{budget}"
    config = base_config(name)
    config.model = REGISTRY_NAMES.get(model, model)
    config.transform = transform
    config.distortion = DISTORTIONS[distortion]
    config.st_output_size = ST_OUTPUT.get(config.distortion, 0)
    config.model_overrides = ml_collections.ConfigDict()

    set_budget(
        config,
        budget,
        cpu=dict(batch_size=128, num_steps=4000, optimizer="adam", learning_rate=1e-3, schedule="cosine"),
        paper=dict(
            batch_size=256,
            num_steps=150_000,
            optimizer="sgd",
            learning_rate=0.01,
            schedule="step",
            decay_steps=50_000,
            decay_factor=0.1,
        ),
    )
    return config
