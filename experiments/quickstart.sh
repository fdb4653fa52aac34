#!/usr/bin/env bash
# The README's first quickstart command: set everything up, then run the main job (an ST-CNN trained on
# rotated-translated-scaled MNIST for a few minutes on a CPU; prints the test error and writes a figure).
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/setup.sh
.venv/bin/python -m experiments.main --config=experiments/configs/stn_mnist.py:quickstart --workdir=runs/quickstart
echo "The figure shows each test input with the sampling grid the transformer learned, and its output."
