#!/usr/bin/env bash
# The README's first quickstart command: set everything up, then run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/setup.sh
.venv/bin/python -m experiments.benchmarks.sampler --repeats 10
