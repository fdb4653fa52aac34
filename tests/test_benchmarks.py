"""The accelerator benchmark runs end to end (tiny sizes, on the CPU) and knows the lent devices' peaks."""

from __future__ import annotations

import json

import jax
import pytest

from experiments.benchmarks import accelerator


def test_peak_bandwidth_by_device_kind():
    assert accelerator.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert accelerator.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert accelerator.peak_bandwidth("TPU v5 lite") == 0.819e12
    assert accelerator.peak_bandwidth("cpu") is None


@pytest.mark.slow
def test_accelerator_benchmark_smoke(capsys, tmp_path):
    out_file = tmp_path / "accelerator.json"
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes Python floats and int32 counts
        accelerator.main(["--small", "--repeats", "1", "--out", str(out_file), "--workdir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    for row in (
        "grid_sample (gather)",
        "separable (matmul)",
        "ST-CNN loop step",
        "RAM loop step",
        "RAM bare step (matmul",
        "se_resnet20",
    ):
        assert row in out
    result = json.loads(out_file.read_text())
    assert set(result["tables"]) == {"sampler", "training_ms", "cifar"}
    assert all(ms > 0 for ms in result["tables"]["training_ms"].values())
    for net in ("resnet20", "se_resnet20"):
        row = result["tables"]["cifar"][net]
        assert row["steps"] == 2 and 0 <= row["test_error_percent"] <= 100 and row["wall_seconds"] > 0
        assert (tmp_path / "runs" / f"{net}_short0.25" / "summary.json").exists()
    assert result["provenance"]["jax"] == jax.__version__


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stn_train", "ram_train"])
def test_training_benchmarks_write_their_table(name, tmp_path, capsys):
    import importlib

    pytest.importorskip("torch")
    module = importlib.import_module(f"experiments.benchmarks.{name}")
    out_file = tmp_path / f"{name}.json"
    with jax.numpy_dtype_promotion("standard"):
        module.main(["--batch_size", "8", "--steps", "1", "--out", str(out_file)])
    printed = capsys.readouterr().out
    (table,) = json.loads(out_file.read_text())["tables"].values()
    assert any("loop step" in row for row in table["rows"])
    for row, values in table["rows"].items():
        assert row in printed
        assert values["images_per_second"] == pytest.approx(8 / (values["ms_per_step"] / 1e3), rel=1e-3)


def test_loop_step_runs_the_loops_own_step(monkeypatch):
    """The benchmarks' loop row is fit's step (make_train_step with the config's EMA and fast-conv fields), run
    from fit's initial state: two calls advance the state by two steps."""
    import numpy as np

    from experiments.benchmarks import common
    from experiments.configs.stn_mnist import get_config
    from visattn_jax.data import distorted_digits
    from visattn_jax.stn import FCN
    from visattn_jax.train import classification_task, loop

    made = []
    real, real_call = loop.make_train_step, loop.TrainStep.__call__
    monkeypatch.setattr(loop, "make_train_step", lambda *a, **k: made.append(k) or real(*a, **k))
    steps = []
    monkeypatch.setattr(
        loop.TrainStep, "__call__", lambda self, state, *a: steps.append(int(state.step)) or real_call(self, state, *a)
    )
    config = get_config("fcn,none,RTS,cpu")
    config.ema_decay = 0.5
    rng = np.random.default_rng(0)
    digits = distorted_digits(
        rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8),
        np.arange(16) % 10,
        np.zeros((1, 28, 28, 1), np.float32),
        np.zeros(1, np.int32),
        distortion="none",
        batch_size=8,
    )
    task = classification_task(FCN(features=(8,)), digits)
    with jax.numpy_dtype_promotion("standard"):
        run = common.loop_step(task, config, fast_conv=False)
        run()
        run()
    assert made == [{"ema_decay": 0.5, "fast_conv": False}]
    assert steps == [0, 1]


def test_write_result_records_the_table_and_its_provenance(tmp_path):
    from experiments.benchmarks.common import print_throughput, write_result

    table = print_throughput({"ours": 0.5, "reference": 1.0}, 10, "reference")
    assert table["rows"]["ours"] == {"ms_per_step": 500.0, "images_per_second": 20.0, "speedup": {"reference": 2.0}}
    path = write_result(tmp_path / "sub" / "x.json", {"t": table}, steps=3)
    record = json.loads(path.read_text())
    assert record["steps"] == 3 and record["tables"]["t"] == table
    assert {"commit", "date", "jax", "flax", "optax"} <= set(record["provenance"])
    assert record["machine"]["devices"] == jax.device_count()
    assert write_result("", {"t": table}) is None


def test_print_throughput_against_several_references(capsys):
    from experiments.benchmarks.common import print_throughput

    rows = {"ours": 0.5, "slow reference": 2.0, "fast reference": 0.25}
    print_throughput(rows, 100, ["slow reference", "fast reference", "not measured"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("x ref1  x ref2")
    assert out[1].split()[-2:] == ["4.00", "0.50"]  # ours: 4x the slow one, half the fast one
    assert out[-2:] == ["x ref1: slow reference", "x ref2: fast reference"]
    print_throughput({"ours": 0.5}, 100, None)
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "-"


def test_torch_batched_retina_crops_what_the_loop_crops():
    """The stronger PyTorch RAM anchor crops exactly what the popular per-sample loop crops (corners included)."""
    torch = pytest.importorskip("torch")
    from experiments.benchmarks.ram_train import torch_retina

    torch.manual_seed(0)
    x = torch.rand(6, 1, 60, 60)
    loc = torch.rand(6, 2) * 2 - 1
    loc[:4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 0.999], [0.0, 0.0]])
    loop, batched = torch_retina(False).foveate(x, loc), torch_retina(True).foveate(x, loc)
    assert loop.shape == (6, 3 * 12 * 12)
    assert torch.equal(loop, batched)


def test_interleaved_timing_runs_the_functions_round_robin():
    import time

    from experiments.benchmarks.common import interleaved_seconds

    calls = []
    fns = {"slow": lambda: (calls.append("slow"), time.sleep(0.004)), "fast": lambda: calls.append("fast")}
    seconds = interleaved_seconds(fns, repeats=5, warmup=2, settle_seconds=0.0, block_seconds=0.0)
    assert calls[:4] == ["slow", "slow", "fast", "fast"]  # warm-up, one function after the other
    assert calls[4:] == ["slow", "slow", "fast", "fast"] * 5  # then per round a block of each: here one
    # untimed call and one timed call
    assert set(seconds) == {"slow", "fast"}
    assert seconds["slow"] >= 0.004 > seconds["fast"]
    calls.clear()
    interleaved_seconds(fns, repeats=2, warmup=1, settle_seconds=0.0, block_seconds=0.02)
    rounds = calls[2:]  # a block is one untimed call and as many as take about 20 ms: ~5 slow ones, many fast ones
    assert rounds[0] == "slow" and 3 <= rounds.index("fast") <= 11 and len(rounds) > 20
