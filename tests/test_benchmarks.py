"""The accelerator benchmark runs end to end (tiny sizes, on the CPU) and knows the lent devices' peaks."""

from __future__ import annotations

import jax
import pytest

from experiments.benchmarks import accelerator


def test_peak_bandwidth_by_device_kind():
    assert accelerator.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert accelerator.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert accelerator.peak_bandwidth("TPU v5 lite") == 0.819e12
    assert accelerator.peak_bandwidth("cpu") is None


@pytest.mark.slow
def test_accelerator_benchmark_smoke(capsys):
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes Python floats and int32 counts
        accelerator.main(["--small", "--repeats", "1"])
    out = capsys.readouterr().out
    for row in ("grid_sample (gather)", "separable (matmul)", "ST-CNN affine", "RAM (gather retina)", "RAM (matmul"):
        assert row in out


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
