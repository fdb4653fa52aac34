"""The accelerator benchmark runs end to end (tiny sizes, on the CPU) and knows the lent devices' peaks."""

from __future__ import annotations

import jax

from experiments.benchmarks import accelerator


def test_peak_bandwidth_by_device_kind():
    assert accelerator.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert accelerator.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert accelerator.peak_bandwidth("TPU v5 lite") == 0.819e12
    assert accelerator.peak_bandwidth("cpu") is None


def test_accelerator_benchmark_smoke(capsys):
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes Python floats and int32 counts
        accelerator.main(["--small", "--repeats", "1"])
    out = capsys.readouterr().out
    for row in ("grid_sample (gather)", "separable (matmul)", "ST-CNN affine", "RAM (gather retina)", "RAM (matmul"):
        assert row in out
