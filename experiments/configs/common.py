"""Fields every experiment config shares: data, seeds, devices, logging, and the optimiser budgets."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import ml_collections


def base_config(name: str) -> ml_collections.ConfigDict:
    """Data, seeds, devices and logging defaults; the experiment adds its model (``config.model``, a name of
    ``visattn_jax.models.list_models()``, and that entry's options) and a budget."""
    config = ml_collections.ConfigDict()
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
        raise ValueError(f"BUDGET must be one of cpu | paper; got {budget!r}")
    config.decay_steps = 0
    config.decay_factor = 1.0
    config.update(budgets[budget])


Choices = Collection[str] | Callable[[str], bool]


def parse_cell(
    arg: str,
    fields: Sequence[tuple[str, Choices, str | None]],
    *,
    example: str,
    special: Sequence[str] = (),
    describe: dict[str, str] | None = None,
) -> list[str]:
    """Splits a config string ``A,B[,C]`` into its fields and checks each against its choices.

    Args:
      arg: the string after the config file's colon.
      fields: ``(NAME, choices, default)`` in order: choices a collection of strings or a predicate; default
        None for a required field, else the value an omitted optional field takes.
      example: a valid string, shown in the error.
      special: whole-string names the config also accepts (e.g. ``quickstart``), listed in the error.
      describe: NAME -> how to list a field's choices when they are a predicate (e.g. ``cpu | paper | cpuN``).

    Returns:
      The values of every field, defaults filled in.

    Raises:
      ValueError: one message with the form, every field's valid choices and the special names.
    """
    describe = describe or {}

    def choices_of(name: str, choices: Choices) -> str:
        return describe.get(name) or " | ".join(sorted(choices))  # type: ignore[arg-type]

    required = sum(default is None for _, _, default in fields)
    form = ",".join(name for name, _, default in fields if default is None)
    form += "".join(f"[,{name}" for name, _, default in fields if default is not None)
    form += "]" * (len(fields) - required)
    listing = "; ".join(f"{name}: {choices_of(name, choices)}" for name, choices, _ in fields)
    usage = f"the form is {form} (e.g. {example})" + (f" or one of: {', '.join(special)}" if special else "")
    parts = arg.split(",") if arg else []
    if not required <= len(parts) <= len(fields):
        raise ValueError(f"Config string {arg!r} does not parse: {usage}. {listing}.")
    values = parts + [default for _, _, default in fields[len(parts) :]]
    for (name, choices, _), value in zip(fields, values, strict=True):
        valid = choices(value) if callable(choices) else value in choices
        if not valid:
            wanted = describe.get(name) or f"one of {choices_of(name, choices)}"
            raise ValueError(f"{name} must be {wanted}; got {value!r} in {arg!r} ({usage}).")
    return values  # type: ignore[return-value]
