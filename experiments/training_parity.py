"""Training parity with PyTorch: ``fit`` trains a CIFAR ResNet, an independent PyTorch twin takes the same steps.

Our side is the loop every experiment runs (:func:`visattn_jax.train.fit` on
:func:`~visattn_jax.train.classification.image_classification_task`, the config's optimiser and schedule through
:func:`~visattn_jax.train.make_optimizer`), logging the loss of every step. The PyTorch side is written here from
the papers, not from our code: a He et al. CIFAR ResNet (option-A shortcuts) in ``torch.nn``, loaded with our
initial weights through :func:`visattn_jax.weights.to_torch_state_dict`, ``torch.optim.SGD`` (Nesterov, coupled
weight decay on the same parameters through parameter groups), the warm-up + cosine or step schedule written out
as a formula, ``torch.nn.BatchNorm2d`` in training mode (momentum 0.1, eps 1e-5) and
``torch.nn.functional.cross_entropy`` (with the config's label smoothing). It trains on the very batches ``fit``
drew: ``task.train_batch(data_key, step, task.train_data)`` with the run's data key (``fit`` splits ``PRNGKey(seed)`` into the
initialisation and data keys), pad-crop-flip augmentation included.

    .venv/bin/python -m experiments.training_parity \
        --config=experiments/configs/cifar.py:resnet20,short1 [--train_limit=N] [--workdir=runs/parity]

prints per-step losses of both sides, the parameters' and BatchNorm statistics' relative differences after the
last step, and as its last line one JSON object. ``tests/test_training_parity.py`` runs the same comparison small.

Conventions, found and stated (the comparison handles each):
- BatchNorm momentum: Flax's 0.9 is PyTorch's 0.1 (the weight of the old running value vs of the new batch);
- BatchNorm running variance: PyTorch stores the *unbiased* batch variance (n / (n - 1)), Flax the biased one
  (both normalise training batches with the biased variance, so the losses are unaffected). With n = batch x
  height x width per channel the ratio is 1 + 1/(n - 1): 2.4e-4 at ResNet-20's last stage (batch 64, 8x8);
  the running variance is compared after dividing PyTorch's by its accumulated factor;
- weight decay: optax's ``add_decayed_weights`` before ``sgd`` is PyTorch SGD's coupled ``weight_decay``
  (added to the gradient before momentum), on kernels only with ``weight_decay_mask="kernels"`` (PyTorch:
  parameter groups by ``ndim > 1``);
- Nesterov: optax's ``trace(nesterov=True)`` (update ``g + m (m t + g)``, the learning rate applied after) is
  PyTorch's (``buf = m buf + g``, step ``g + m buf``), the first step included (PyTorch starts ``buf = g``,
  optax ``t = 0`` then ``m 0 + g``);
- the schedule: optax evaluates the rate at the step count before the update (step 0 of a warm-up has rate
  0), as ``LambdaLR`` does before its first ``scheduler.step()``.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: The first steps whose losses the issue's criterion covers, and the relative tolerance on them.
LOSS_STEPS, LOSS_TOLERANCE = 50, 1e-3


def torch_cifar_resnet(depth: int, num_classes: int = 10):
    """He et al. 2015's CIFAR ResNet (6n + 2 layers, 16/32/64 channels, option-A shortcuts) in ``torch.nn``,
    with the parameter names of :func:`visattn_jax.weights.to_torch_state_dict` (``conv1``, ``bn1``,
    ``layer{s}.{j}.conv1`` ..., ``fc``)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, inputs: int, features: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, features, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(features)
            self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(features)
            self.stride, self.extra = stride, features - inputs

        def forward(self, x):
            identity = x
            if self.stride != 1 or self.extra:  # option A: subsample, zero-pad the new channels on both sides
                identity = nn.functional.pad(
                    x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2)
                )
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + identity)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            inputs = 16
            for stage, features in enumerate((16, 32, 64), start=1):
                blocks = []
                for j in range(n):
                    blocks.append(Block(inputs, features, 2 if stage > 1 and j == 0 else 1))
                    inputs = features
                setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean(dim=(2, 3)))

    if (depth - 2) % 6:
        raise ValueError(f"A CIFAR ResNet has 6n + 2 layers; depth={depth} is not.")
    return Net()


def learning_rate(config, step: int) -> float:
    """The rate of ``step`` written out from the config (independently of optax): linear warm-up from 0 over
    ``warmup_steps``, then cosine to 0 at ``num_steps``, a step schedule (x ``decay_factor`` at each of
    ``decay_boundaries``) or a constant."""
    base, warmup = config.learning_rate, config.get("warmup_steps", 0) or 0
    if step < warmup:
        return base * step / warmup
    if config.schedule == "cosine":
        span = max(config.num_steps - warmup, 1)
        return base * 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))
    if config.schedule == "step":
        return base * config.decay_factor ** sum(step >= b for b in config.get("decay_boundaries") or ())
    if config.schedule == "constant":
        return base
    raise ValueError(f"No PyTorch twin for schedule {config.schedule!r}.")


def _check_supported(config) -> None:
    if not config.model.startswith("cifar_resnet"):
        raise ValueError(f"The PyTorch twin is a plain CIFAR ResNet; config.model={config.model!r} is not one.")
    if config.optimizer not in ("sgd", "momentum", "nesterov"):
        raise ValueError(f"No PyTorch twin for optimizer {config.optimizer!r} (sgd, momentum or nesterov).")
    if (
        config.get("ema_decay")
        or config.get("dtype", "float32") != "float32"
        or dict(config.get("model_overrides") or {})
    ):
        raise ValueError("The parity run needs float32, no parameter EMA and no model_overrides.")


def compare(
    config, train_images: np.ndarray, train_labels: np.ndarray, workdir: str | Path, *, sensitivity: bool = True
) -> dict[str, Any]:
    """Trains ``config`` (a CIFAR config, e.g. ``cifar.py:resnet20,short1``) with ``fit`` on the given uint8
    ``[N, H, W, 3]`` images and int labels, and the PyTorch twin on the same batches.

    With ``sensitivity``, the twin trains a second time from the same weights perturbed by 1e-7 (relative, about
    one float32 rounding): how far two float32 runs of *one* implementation drift apart on this trajectory. A
    network of ReLUs and BatchNorm at a useful learning rate is chaotic (a rounding difference flips a ReLU,
    which changes the next gradient, ...), so no two float32 implementations can agree to 1e-3 over many steps;
    the JAX-PyTorch difference is measured against that floor.

    Returns per-step losses of each run and, after the last step, per-tensor relative differences of the
    *changes* from the initial values: ``|(a_T - a_0) - (b_T - b_0)| / |b_T - b_0|`` (norms over each tensor),
    for the parameters and the BatchNorm statistics.
    """
    from visattn_jax.train import fit
    from visattn_jax.train.classification import image_classification_task
    from visattn_jax.train.experiment import build_model
    from visattn_jax.train.loop import resolve_epochs
    from visattn_jax.weights import to_torch_state_dict

    _check_supported(config)
    task = image_classification_task(
        build_model(config)[0],
        train_images=train_images,
        train_labels=train_labels,
        test_images=train_images[:8],
        test_labels=train_labels[:8],
        batch_size=config.batch_size,
        mean=tuple(config.mean),
        std=tuple(config.std),
        augment=config.augment,
        label_smoothing=config.label_smoothing,
    )
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.log_every, config.eval_every, config.checkpoint_every = 1, 0, 0
    resolved = resolve_epochs(config, task.steps_per_epoch)

    # What fit does with the seed: PRNGKey(seed) -> (initialisation key, data key).
    init_key, data_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params, model_state = task.init(init_key)
    initial = to_torch_state_dict({**params, **model_state})  # NumPy copies: fit donates its own buffers
    state, _ = fit(task, config, workdir, progress=False)
    records = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    jax_losses = [record["loss"] for record in records if "loss" in record]
    ours = to_torch_state_dict(jax.device_get({**state.params, **state.model_state}))

    # The batches fit trained on, computed as its step computes them: jitted, with the training data as an
    # argument. (Eager op-by-op evaluation rounds the normalisation differently, by 1 ulp, which on this chaotic
    # trajectory is itself a perturbation.)
    make_batch, train_data = jax.jit(task.train_batch), jax.device_put(task.train_data)

    def batch(step: int):
        return jax.device_get(make_batch(data_key, jnp.asarray(step, jnp.int32), train_data))

    torch_losses, theirs = _train_torch(config, resolved, initial, batch)
    result = {
        "config": config.name,
        "steps": resolved.num_steps,
        "batch_size": config.batch_size,
        "train_images": len(train_images),
        "image_size": list(train_images.shape[1:3]),
        "augment": bool(config.augment),
        "jax_losses": jax_losses,
        "torch_losses": torch_losses,
        **_differences("jax_vs_torch", jax_losses, torch_losses, ours, theirs, initial),
    }
    if sensitivity:
        perturbed_losses, perturbed = _train_torch(config, resolved, initial, batch, perturb=1e-7)
        result["torch_perturbed_losses"] = perturbed_losses
        result.update(
            _differences("torch_vs_perturbed_torch", perturbed_losses, torch_losses, perturbed, theirs, initial)
        )
    return result


def _train_torch(config, resolved, initial: dict[str, np.ndarray], batch, perturb: float = 0.0):
    """The PyTorch twin trained from ``initial`` (times ``1 + perturb * normal noise``) on ``batch(step)`` for
    ``resolved.num_steps`` steps. Returns the per-step losses and the final state dict (running variances made
    biased, Flax's convention: see the module docstring)."""
    import torch

    net = torch_cifar_resnet(int(config.model.removeprefix("cifar_resnet")), config.num_classes)
    noise = np.random.default_rng(0)
    start = {
        k: torch.from_numpy((v * (1 + perturb * noise.standard_normal(v.shape)) if perturb else v).astype(np.float32))
        for k, v in initial.items()
    }
    missing, unexpected = net.load_state_dict(start, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise RuntimeError(f"The PyTorch twin's names differ: missing {missing}, unexpected {unexpected}.")
    decay = config.get("weight_decay", 0.0) or 0.0
    kernels_only = config.get("weight_decay_mask", "all") == "kernels"
    groups = [
        {"params": [p for p in net.parameters() if p.ndim > 1], "weight_decay": decay},
        {"params": [p for p in net.parameters() if p.ndim <= 1], "weight_decay": 0.0 if kernels_only else decay},
    ]
    momentum = 0.0 if config.optimizer == "sgd" else config.momentum
    optimizer = torch.optim.SGD(
        groups, lr=config.learning_rate, momentum=momentum, nesterov=config.optimizer == "nesterov"
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate(resolved, step) / config.learning_rate
    )
    factors = {}  # n / (n - 1) of each BatchNorm, n = its input's size per channel
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_pre_hook(
                lambda module, inputs, name=name: factors.__setitem__(
                    name, (n := inputs[0].numel() // inputs[0].shape[1]) / (n - 1)
                )
            )
    net.train()
    losses = []
    for step in range(resolved.num_steps):
        data = batch(step)
        images = torch.from_numpy(np.ascontiguousarray(data["image"].transpose(0, 3, 1, 2)))
        labels = torch.from_numpy(np.asarray(data["label"], np.int64))
        loss = torch.nn.functional.cross_entropy(net(images), labels, label_smoothing=config.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        if config.get("grad_clip_norm", 0.0) > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip_norm)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    final = {}
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        value = value.detach().numpy().copy()
        if key.endswith("running_var"):
            value = _biased_running_variance(value, factors[key.removesuffix(".running_var")], resolved)
        final[key] = value
    return losses, final


def _differences(label: str, losses, reference_losses, final, reference_final, initial) -> dict[str, Any]:
    """Loss and state differences of one run against a reference run (see :func:`compare`)."""
    a, b = np.asarray(losses), np.asarray(reference_losses)
    relative = np.abs(a - b) / np.abs(b)
    first = min(LOSS_STEPS, len(relative))
    over = np.nonzero(relative > LOSS_TOLERANCE)[0]
    changes = {}
    for key, value in reference_final.items():
        moved = value - initial[key]
        changes[key] = float(np.linalg.norm((final[key] - initial[key]) - moved) / max(np.linalg.norm(moved), 1e-30))
    return {
        label: {
            "max_relative_loss_difference_first_steps": float(relative[:first].max()),
            "loss_steps_checked": first,
            "first_step_over_tolerance": int(over[0]) if len(over) else None,
            "max_relative_loss_difference": float(relative.max()),
            "max_relative_parameter_change_difference": max(v for k, v in changes.items() if "running" not in k),
            "max_relative_statistics_change_difference": max(v for k, v in changes.items() if "running" in k),
            "relative_change_differences": changes,
        }
    }


def _biased_running_variance(torch_running_var: np.ndarray, factor: float, config) -> np.ndarray:
    """PyTorch's running variance with every update's unbiased batch variance made biased again: running var
    after T steps is ``0.9^T v0 + sum_t 0.1 0.9^(T-1-t) factor s_t`` with ``v0 = 1``, so
    ``(v - 0.9^T) / factor + 0.9^T`` is the biased one."""
    decay = 0.9**config.num_steps
    return (torch_running_var - decay) / factor + decay


def _table(result: dict[str, Any]) -> str:
    perturbed = result.get("torch_perturbed_losses")
    header = f"{'step':>5} {'fit (JAX)':>12} {'PyTorch':>12} {'rel. diff':>10}"
    lines = [header + (f" {'PyTorch, w(1+1e-7 n)':>21} {'rel. diff':>10}" if perturbed else "")]
    for step, (a, b) in enumerate(zip(result["jax_losses"], result["torch_losses"], strict=True)):
        if step < 10 or step % 25 == 0 or step == result["steps"] - 1:
            line = f"{step:>5} {a:>12.6f} {b:>12.6f} {abs(a - b) / abs(b):>10.2e}"
            if perturbed:
                line += f" {perturbed[step]:>21.6f} {abs(perturbed[step] - b) / abs(b):>10.2e}"
            lines.append(line)
    for label in ("jax_vs_torch", "torch_vs_perturbed_torch"):
        if label not in result:
            continue
        d = result[label]
        lines.append(
            f"{label}: loss rel. diff. max {d['max_relative_loss_difference_first_steps']:.2e} over the first "
            f"{d['loss_steps_checked']} steps, {d['max_relative_loss_difference']:.2e} over all {result['steps']}; "
            f"first step over {LOSS_TOLERANCE:g}: {d['first_step_over_tolerance']}; after the last step the changes "
            f"of the parameters differ by {d['max_relative_parameter_change_difference']:.2e}, of the BatchNorm "
            f"statistics by {d['max_relative_statistics_change_difference']:.2e} (relative, worst tensor)"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from absl import flags, logging

    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    from visattn_jax.data import load_data

    config = flags.FLAGS.config
    data = load_data(config)
    train_x, train_y = data.train["image"], data.train["label"]
    if _LIMIT.value:
        train_x, train_y = train_x[: _LIMIT.value], train_y[: _LIMIT.value]
    workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="parity_")
    if Path(workdir, "checkpoints").exists():
        sys.exit(f"{workdir} holds a run already: the comparison needs a fresh work folder.")
    result = compare(config, train_x, train_y, workdir)
    print(_table(result))
    for label in ("jax_vs_torch", "torch_vs_perturbed_torch"):
        result.get(label, {}).pop("relative_change_differences", None)
    print(json.dumps(result))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "A CIFAR ResNet config (path:argument).", lock_config=True)
    _LIMIT = flags.DEFINE_integer("train_limit", 0, "Use the first N training images (0: all).")
    _WORKDIR = flags.DEFINE_string("workdir", None, "A fresh folder for fit's run (default: a temporary one).")
    flags.mark_flags_as_required(["config"])
    app.run(main)
