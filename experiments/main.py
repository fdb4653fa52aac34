"""Runs one configured experiment: flags -> train_and_evaluate(config, workdir).

  .venv/bin/python -m experiments.main --config=experiments/configs/stn_mnist.py:st_cnn,affine,RTS \
      --workdir=runs/stn/st_cnn_affine_RTS [--config.num_steps=3000 ...]

Rerunning with the same workdir resumes from its last checkpoint (a finished run is only evaluated again).
Wrong input (a config string that does not parse, an unknown ``--config.`` field, an unknown model or transform)
is answered in a line or two before any data is loaded or any folder is created.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from visattn_jax.data import DataUnavailableError
from visattn_jax.train import ConfigError, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path:argument).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, summary and figures go.")
flags.mark_flags_as_required(["config", "workdir"])


def _fields(config, prefix: str = "") -> list[str]:
    """Every settable field of a ConfigDict, nested ones as ``a.b``."""
    names = []
    for key, value in config.items():
        names.append(prefix + key)
        if hasattr(value, "items"):
            names.extend(_fields(value, prefix + key + "."))
    return names


def unknown_field_error(config, overrides: list[str], source: str) -> str | None:
    """A one-line message for the first ``--config.<field>=...`` override that ``config`` does not have."""
    known = set(_fields(config))
    for field in overrides:
        if field not in known:
            close = difflib.get_close_matches(field, sorted(known), n=3)
            hint = (
                f"did you mean {' or '.join(repr(c) for c in close)}?"
                if close
                else f"its fields: {', '.join(sorted(known))}."
            )
            return f"Unknown config field {field!r}: {source} has no such field; {hint}"
    return None


def _preflight(argv: list[str]) -> None:
    """Checks the config string and every ``--config.<field>`` override before absl parses the flags, so that
    wrong input is answered in one line (not a traceback of the config file's parsing) and nothing is loaded
    or created."""
    specs = [a.removeprefix("--config=") for a in argv[1:] if a.startswith("--config=")]
    if not specs:
        return  # absl says the flag is required
    path, _, arg = specs[-1].partition(":")
    if not Path(path).is_file():
        _fail(f"No config file {path!r} (from --config={specs[-1]}); the configs are in experiments/configs/.")
    spec = importlib.util.spec_from_file_location("_visattn_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except ValueError as error:
        _fail(str(error))
    overrides = [a.removeprefix("--config.").split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    message = unknown_field_error(config, overrides, specs[-1])
    if message:
        _fail(message)


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except ConfigError as error:
        _fail(str(error))
    except DataUnavailableError as error:
        print(f"\nThe dataset is not available: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _preflight(sys.argv)
    app.run(main)
