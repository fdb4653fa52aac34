"""ImageNet (ILSVRC 2012) ResNets: Goyal et al. 2017's schedule for both ResNet-50 layouts (and any registered
ImageNet network).

One config per cell, chosen by the string after the colon: ``MODEL[,K]``
  MODEL  resnet50 (torchvision "v1.5" layout) | legacy_resnet50 (the Caffe layout of the original ResNet and
         SENet models) | any ImageNet name of visattn_jax.models.list_models()
  K      batch multiplier (default 1): batch 256 x K, lr 0.1 x K (Goyal et al.'s linear scaling rule)
Schedule: SGD momentum 0.9, weight decay 1e-4 on every parameter, 5 epochs of linear warmup, 90 epochs,
lr /10 at epochs 30, 60 and 80; zero-initialised last BN gamma of every residual unit. Mixed precision with
``--config.dtype=bfloat16`` on GPU / TPU.

Data: TFDS ``imagenet2012`` with the two ILSVRC 2012 archives in $TFDS_DATA_DIR/downloads/manual/
(visattn_jax/data/imagenet.py). Not available offline on this project's machines: the pipeline is tested on
TFDS mock data, and benchmarks/input_pipeline.py measures it.

Command (from the repository root, on a machine with the data):
  .venv/bin/python -m experiments.main --config=experiments/configs/imagenet.py:resnet50,4 \
      --workdir=runs/imagenet/resnet50_k4

Expected (% top-1 / top-5 error, single 224 centre crop): Goyal et al. ResNet-50 23.74 (k=1..32, 256 to 8k
batch); SENet Table 2 re-implemented ResNet-50 24.80 / 7.48 (Caffe layout, 3.86 G multiply-adds).
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import base_config


def get_config(arg: str = "resnet50,1") -> ml_collections.ConfigDict:
    parts = arg.split(",")
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"config string must be MODEL[,K], got {arg!r}")
    model = parts[0]
    try:
        k = int(parts[1]) if len(parts) == 2 else 1
    except ValueError:
        raise ValueError(f"K must be a positive integer, got {parts[1]!r}") from None
    if k < 1:
        raise ValueError(f"K must be a positive integer, got {k}")
    import dataclasses

    from visattn_jax.models import create_model, input_size, list_models

    if model not in list_models() or input_size(model) != 224:
        raise ValueError(f"MODEL must be an ImageNet network of visattn_jax.models, got {model!r}")
    # Goyal et al.'s zero-initialised last BN of each residual unit, for the networks that have the field (the
    # ResNet family; the Residual Attention networks have no such option).
    fields = {field.name for field in dataclasses.fields(type(create_model(model)))}
    overrides = {"zero_init_last": True} if "zero_init_last" in fields else {}
    config = base_config(f"{model}_imagenet_k{k}")
    config.dataset = "imagenet2012"
    config.num_classes = 1000
    config.model = model
    config.dtype = "float32"
    config.model_overrides = ml_collections.ConfigDict(overrides)
    config.image_size = 224
    config.mean = (0.485, 0.456, 0.406)
    config.std = (0.229, 0.224, 0.225)
    config.eval_split = "validation"
    config.eval_batch_size = 250
    config.augment = True
    config.label_smoothing = 0.0
    config.ema_decay = 0.0
    config.xla_cpu_fast_conv = True
    config.batch_size = 256 * k
    config.learning_rate = 0.1 * k
    config.optimizer = "momentum"
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.weight_decay_mask = "all"
    config.schedule = "step"
    config.decay_factor = 0.1
    config.decay_steps = 0
    config.num_epochs = 90.0
    config.warmup_epochs = 5.0
    config.decay_epochs = (30.0, 60.0, 80.0)
    config.num_steps = 0  # from num_epochs
    config.log_every = 100
    config.eval_every = 5000
    config.checkpoint_every = 5000
    return config
