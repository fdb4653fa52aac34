"""The command line answers wrong input in a line or two, before any data is loaded or any folder is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.configs import stn_mnist
from experiments.main import unknown_field_error
from visattn_jax import train

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--config=experiments/configs/stn_mnist.py:quickstart", "--config.foo=1"], "Unknown config field 'foo'"),
        (["--config=experiments/configs/stn_mnist.py:quickstart", "--config.num_step=1"], "did you mean 'num_steps'?"),
        (["--config=experiments/configs/stn_mnist.py:st_cnn,foo,RTS"], "TRANSFORM must be one of affine |"),
        (["--config=experiments/configs/stn_mnist.py:blah"], "or one of: quickstart. MODEL: cnn | fcn"),
        (["--config=experiments/configs/nothere.py:x"], "No config file 'experiments/configs/nothere.py'"),
        (["--config=experiments/configs/cifar.py:resnet20,cpu", "--config.model=resnet21"], "Unknown model"),
    ],
    ids=["unknown_field", "near_miss", "unknown_transform", "unparsable", "missing_file", "unknown_model"],
)
def test_wrong_command_lines_get_one_line(args, expected, tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.main", *args, f"--workdir={workdir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not workdir.exists()


def test_unknown_field_message_lists_fields_without_a_close_match():
    config = stn_mnist.get_config("quickstart")
    message = unknown_field_error(config, ["num_steps", "zzzz"], "stn_mnist.py:quickstart")
    assert message.startswith("Unknown config field 'zzzz'") and "num_steps" in message
    assert unknown_field_error(config, ["num_steps", "model_overrides"], "x") is None


def test_config_errors_come_before_the_data(tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr("visattn_jax.data.datasets._read_arrays", no_data)
    config = stn_mnist.get_config("st_cnn,affine,RTS")
    config.transform = "foo"
    with pytest.raises(train.ConfigError, match="Unknown transform 'foo'"):
        train.train_and_evaluate(config, tmp_path / "run")
    from experiments.configs import cifar

    config = cifar.get_config("resnet20,cpu")
    config.model = "resnet21"
    with pytest.raises(train.ConfigError, match="Unknown model"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
