"""Fields every experiment config shares: data, seeds, devices, logging, and the optimiser budgets."""

from __future__ import annotations

import ml_collections


def base_config(task: str, name: str) -> ml_collections.ConfigDict:
    """Data, seeds, devices and logging defaults; the experiment adds its model fields and a budget."""
    config = ml_collections.ConfigDict()
    config.task = task
    config.name = name
    config.dataset = "mnist"
    config.data_dir = ml_collections.config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.mnist_dir = ml_collections.config_dict.placeholder(str)  # folder with the original .gz files (offline)
    config.train_limit = 0  # 0: all
    config.test_limit = 0
    config.test_seed = 1234
    config.seed = 0
    config.num_devices = ml_collections.config_dict.placeholder(int)  # None: all devices
    config.grad_clip_norm = 0.0
    config.weight_decay = 0.0
    config.momentum = 0.9
    config.log_every = 100
    config.eval_every = 2000
    config.checkpoint_every = 1000
    config.figure = True
    config.progress = True
    return config


def set_budget(config: ml_collections.ConfigDict, budget: str, *, cpu: dict, paper: dict) -> None:
    """Sets the optimiser fields for ``budget`` ("cpu": minutes on 2 CPU cores; "paper": the paper's schedule).

    Each dict gives batch_size, num_steps, optimizer, learning_rate, schedule and optionally decay_steps /
    decay_factor (for the "step" schedule).
    """
    budgets = {"cpu": cpu, "paper": paper}
    if budget not in budgets:
        raise ValueError(f"BUDGET must be cpu or paper, got {budget!r}")
    config.decay_steps = 0
    config.decay_factor = 1.0
    config.update(budgets[budget])
