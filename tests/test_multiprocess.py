"""Multi-host training, for real on one machine: two processes with two CPU devices each (gloo collectives,
``jax.distributed``) train and evaluate as one process with four devices does: the same parameters and the
same evaluation, for an on-device task and for a host stream with per-process evaluation shards of unequal
batch counts (tests/multiprocess_worker.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).parent / "multiprocess_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(num_processes: int, workdir: Path) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")  # libtpu, if installed, stays quiet
    env.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    port = str(_free_port())
    workdir.mkdir(parents=True)
    # Output to files, not pipes: a pipe nobody reads yet fills up and blocks its process, which then never
    # reaches the collective the other process waits in.
    logs = [workdir / f"process{i}.log" for i in range(num_processes)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "w") as out:
            command = [sys.executable, str(WORKER), str(i), str(num_processes), port, str(workdir)]
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env))
    results = []
    for proc, log in zip(procs, logs, strict=True):
        proc.wait(timeout=600)
        output = log.read_text()
        assert proc.returncode == 0, output[-3000:]
        line = [line for line in output.splitlines() if line.startswith("RESULT ")][-1]
        results.append(json.loads(line.removeprefix("RESULT ")))
    return results


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one(tmp_path):
    (single,) = _run(1, tmp_path / "one")
    pair = _run(2, tmp_path / "two")
    assert single["devices"] == 4 and single["processes"] == 1
    assert all(r["devices"] == 4 and r["processes"] == 2 for r in pair)
    for task in ("on_device", "stream"):
        for result in pair:
            # The same evaluation: every test image counted once (20), the same errors; losses to float rounding.
            final, expected = result[task]["final"], single[task]["final"]
            assert final["count"] == expected["count"] == 20, (task, final)
            assert final["error_percent"] == expected["error_percent"], (task, final, expected)
            np.testing.assert_allclose(final["loss"], expected["loss"], rtol=1e-5)
            # The same parameters and BatchNorm statistics after 4 steps (gradients summed in another order).
            for got, want in zip(result[task]["params"], single[task]["params"], strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
