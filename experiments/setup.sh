#!/usr/bin/env bash
# Creates .venv in the repository root and installs visattn_jax with everything the tests, experiments and
# notebooks need. Idempotent: a second run only checks. Set VISATTN_WITH_TORCH=0 to skip PyTorch and timm
# (the `reference` extra: references for comparison tests and benchmarks only, about 5.5 GB; the library and
# the quickstart's main job never import them); VISATTN_WITH_TPU=1 adds libtpu (the `tpu` extra).
# Offline MNIST: if a folder with the four original MNIST .gz files exists at $VISATTN_MNIST_DIR (default
# ../shared/data/mnist beside the repository), they are copied into TFDS's manual folder, where TFDS finds them.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
echo "setup: installing visattn_jax and its test / experiment dependencies into .venv (a minute or two on a fresh machine; seconds when already there)"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,benchmarks,experiments,docs]"
if [ "${VISATTN_WITH_TORCH:-1}" = "1" ]; then
  echo "setup: installing the PyTorch / timm references (torch 2.14.1, torchvision 0.29.1, timm; about 5.5 GB, several minutes on a fresh machine)"
  .venv/bin/python -m pip install --quiet -e ".[reference]" || { echo "setup: torch / timm could not be installed; their comparisons will be skipped (and fail under VISATTN_REQUIRE_REFERENCES=1, as in CI)"; [ "${VISATTN_REQUIRE_REFERENCES:-0}" != "1" ] || exit 1; }
fi
if [ "${VISATTN_WITH_TPU:-0}" = "1" ]; then
  # libtpu (about 140 MB), for compiling the steps for TPU topologies on this host (experiments/tpu_compile.py,
  # tests/test_tpu_compile.py); CI sets VISATTN_WITH_TPU=1. Not by default: without a TPU, libtpu prints start-up
  # warnings in every JAX process unless TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES are set.
  echo "setup: installing libtpu (the tpu extra)"
  .venv/bin/python -m pip install --quiet -e ".[tpu]"
fi
mnist_dir=${VISATTN_MNIST_DIR:-../shared/data/mnist}
manual_dir=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}/downloads/manual
if [ -f "$mnist_dir/train-images-idx3-ubyte.gz" ]; then
  mkdir -p "$manual_dir"
  cp -n "$mnist_dir"/*-ubyte.gz "$manual_dir"/
  echo "setup: MNIST files from $mnist_dir are in $manual_dir"
fi
.venv/bin/python -c "import jax, visattn_jax; print('setup: visattn_jax', visattn_jax.__version__, 'with jax', jax.__version__, 'on', jax.devices()[0].platform)"
echo "setup: done in $(( $(date +%s) - started )) s"
