"""Strict JAX settings for the whole test suite: mistakes in shapes and dtypes raise instead of broadcasting."""

import os

# Four host devices, so the data-parallel tests can compare 1 and N devices (must precede the first jax import).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs the suite in parallel workers (pyproject's addopts: -n 2): on a GPU, each worker takes
    # the memory it needs instead of JAX's default 75% of the device, so that the workers can share it.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import glob  # noqa: E402
import importlib.util  # noqa: E402

if importlib.util.find_spec("libtpu") is not None and not glob.glob("/dev/accel*") + glob.glob("/dev/vfio/[0-9]*"):
    # libtpu installed (the tpu extra, for tests/test_tpu_compile.py) on a host without a TPU: these two keep its
    # start-up from printing errors in every process (the same defaults as experiments/tpu_compile.py).
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # parallel workers and subprocesses load it too

import jax  # noqa: E402
import pytest  # noqa: E402

# VISATTN_REQUIRE_REFERENCES=1 (set by .ci/run) turns every skip into a failure, but for the skips named here:
# a missing reference (torch, timm, SciPy, nbclient) or data folder must not pass silently in CI.
EXPECTED_SKIPS = ("SciPy's mirror mode is undefined for a single pixel",)

# triton (which timm pulls in through torchvision -> torch._dynamo) crashes the process when it is imported
# after TensorFlow (the data tests load TensorFlow through TFDS): import it first when it is installed.
try:
    import triton  # noqa: E402, F401
except ImportError:
    pass

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def x64():
    """Runs a test with float64 enabled (for finite-difference gradient checks)."""
    with jax.enable_x64(True):
        yield


def pytest_collection_modifyitems(config, items):
    """Marks tests that need PyTorch, so a missing torch is a visible skip, not a silent pass."""
    del config
    for item in items:
        if "torch" in item.name:
            item.add_marker(pytest.mark.torch)


@pytest.fixture
def standard_dtype_promotion():
    """optax's schedules mix Python floats and int32 step counts, which strict promotion rejects: tests of
    the training loop run with JAX's standard promotion (our own modules are tested under strict)."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def _fail_forbidden_skip(report) -> None:
    """With VISATTN_REQUIRE_REFERENCES=1, turns a skip whose reason is not in EXPECTED_SKIPS into a failure."""
    if os.environ.get("VISATTN_REQUIRE_REFERENCES") != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(expected in reason for expected in EXPECTED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped, but VISATTN_REQUIRE_REFERENCES=1 forbids it: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test (``pytest.skip``, ``importorskip`` inside it) under the switch."""
    _fail_forbidden_skip((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (``pytest.importorskip`` at module level) under the switch."""
    _fail_forbidden_skip((yield).get_result())
