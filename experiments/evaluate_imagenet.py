"""Evaluates PyTorch / timm weights in our networks on the ImageNet validation set (single centre crop).

  .venv/bin/python -m experiments.evaluate_imagenet --model=seresnet50 --weights=seresnet50.npz \
      [--image_size=224 --resize_size=256 --batch_size=250 --limit=0]

``--weights`` is a state dict with the PyTorch model's key names: a ``.npz`` (``np.savez(path, **{k:
v.numpy() for k, v in model.state_dict().items()})``), a ``.safetensors`` file (timm's hub format; needs the
``safetensors`` package) or a ``.pth`` / ``.bin`` file (needs torch). timm's pretrained models use their own
preprocessing (``timm.data.resolve_data_config(model=...)``: e.g. ``seresnet50.ra2_in1k`` was evaluated at
288 px, crop 0.95): pass its ``--image_size`` / ``--resize_size`` (= image_size / crop_pct) and ``--mean`` /
``--std`` to compare with its published accuracy. Needs ``imagenet2012`` prepared by TFDS
(visattn_jax/data/imagenet.py). Prints top-1 / top-5 error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "A name from visattn_jax.models.list_models().")
_WEIGHTS = flags.DEFINE_string("weights", None, "State dict file: .npz, .safetensors, .pth or .bin.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Centre crop size.")
_RESIZE_SIZE = flags.DEFINE_integer("resize_size", 256, "Shorter side before the crop.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 250, "Evaluation batch size.")
_MEAN = flags.DEFINE_list("mean", ["0.485", "0.456", "0.406"], "Per-channel mean of images in [0, 1].")
_STD = flags.DEFINE_list("std", ["0.229", "0.224", "0.225"], "Per-channel standard deviation.")
_SPLIT = flags.DEFINE_string("split", "validation", "TFDS split.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder (default $TFDS_DATA_DIR or ~/tensorflow_datasets).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Evaluate only the first LIMIT batches (0: all).")
flags.mark_flags_as_required(["model", "weights"])


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A state dict file as name -> NumPy array (``.npz``, ``.safetensors``, ``.pth`` / ``.bin``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}.")
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return {k: archive[k] for k in archive.files}
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    if path.suffix in (".pth", ".pt", ".bin"):
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
    raise ValueError(f"Unknown weights format {path.suffix!r}: use .npz, .safetensors, .pth or .bin.")


def evaluate(model_name: str, variables, batches) -> dict[str, float]:
    """Top-1 / top-5 error (%) of ``variables`` in the network ``model_name`` over ``batches`` of normalised
    ``{"image": [B, S, S, 3], "label": [B]}``."""
    import jax
    import jax.numpy as jnp

    from visattn_jax.models import create_model

    model = create_model(model_name)

    @jax.jit
    def counts(variables, images, labels):
        logits = model.apply(variables, images, train=False)
        top5 = jax.lax.top_k(logits, 5)[1]
        return jnp.sum(top5[:, 0] == labels), jnp.sum(jnp.any(top5 == labels[:, None], axis=-1))

    top1 = top5 = total = 0
    for batch in batches:
        c1, c5 = counts(variables, batch["image"], batch["label"])
        top1, top5, total = top1 + int(c1), top5 + int(c5), total + len(batch["label"])
    if total == 0:
        raise ValueError("The evaluation set is empty.")
    return {"top1_error": 100 * (1 - top1 / total), "top5_error": 100 * (1 - top5 / total), "count": total}


def main(argv) -> None:
    del argv
    import itertools

    from visattn_jax.data import DataUnavailableError
    from visattn_jax.data.imagenet import ImageNetEval
    from visattn_jax.weights import from_torch_state_dict

    variables = from_torch_state_dict(_MODEL.value, load_state_dict(_WEIGHTS.value))
    batches = ImageNetEval(
        batch_size=_BATCH_SIZE.value,
        split=_SPLIT.value,
        image_size=_IMAGE_SIZE.value,
        resize_size=_RESIZE_SIZE.value,
        mean=tuple(map(float, _MEAN.value)),
        std=tuple(map(float, _STD.value)),
        data_dir=_DATA_DIR.value,
    )
    try:
        result = evaluate(_MODEL.value, variables, itertools.islice(batches, _LIMIT.value or None))
    except DataUnavailableError as error:
        print(f"\nImageNet is not available: {error}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{_MODEL.value} with {_WEIGHTS.value}: top-1 error {result['top1_error']:.2f}%, top-5 error "
        f"{result['top5_error']:.2f}% over {result['count']} images ({_IMAGE_SIZE.value} px centre crop of "
        f"{_RESIZE_SIZE.value})."
    )


if __name__ == "__main__":
    app.run(main)
