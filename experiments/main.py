"""Runs one configured experiment: flags -> train_and_evaluate(config, workdir).

  .venv/bin/python -m experiments.main --config=experiments/configs/stn_mnist.py:st_cnn,affine,RTS \
      --workdir=runs/stn/st_cnn_affine_RTS [--config.num_steps=3000 ...]

Rerunning with the same workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from visattn_jax.data import DataUnavailableError
from visattn_jax.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path:argument).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, summary and figures go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except DataUnavailableError as error:
        print(f"\nThe dataset is not available: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
