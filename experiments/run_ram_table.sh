#!/usr/bin/env bash
# Runs the RAM table cells we report on this machine's CPU budget, one after another, and copies each run's
# summary.json to experiments/results/ram/. Usage: bash experiments/run_ram_table.sh [CELL ...]
# (a CELL is a config string such as translated60,ram,6; default: the cells in experiments/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cells=("$@")
if [ ${#cells[@]} -eq 0 ]; then
  cells=(mnist28,ram,6 translated60,ram,6 cluttered60,ram,6 cluttered60,conv,1)
fi
mkdir -p experiments/results/ram
for cell in "${cells[@]}"; do
  name=${cell//,/_}
  start=$(date +%s)
  .venv/bin/python -m experiments.main --config="experiments/configs/ram_mnist.py:$cell" \
      --workdir="runs/ram/$name" --config.progress=False
  echo "$cell: $(( $(date +%s) - start )) s wall-clock"
  cp "runs/ram/$name/summary.json" "experiments/results/ram/$name.json"
done
