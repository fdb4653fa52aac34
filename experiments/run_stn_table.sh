#!/usr/bin/env bash
# Runs the STN Table 1 cells we report on this machine's CPU budget, one after another, and copies each
# run's summary.json to experiments/results/stn/. Usage: bash experiments/run_stn_table.sh [CELL ...]
# (a CELL is a config string such as st_cnn,affine,RTS; default: the cells in experiments/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cells=("$@")
if [ ${#cells[@]} -eq 0 ]; then
  cells=(st_cnn,affine,RTS cnn,none,RTS st_cnn,tps,RTS fcn,none,RTS st_fcn,affine,RTS cnn,none,R st_cnn,affine,R st_cnn,tps,R)
fi
mkdir -p experiments/results/stn
for cell in "${cells[@]}"; do
  name=${cell//,/_}
  start=$(date +%s)
  .venv/bin/python -m experiments.main --config="experiments/configs/stn_mnist.py:$cell" \
      --workdir="runs/stn/$name" --config.progress=False
  echo "$cell: $(( $(date +%s) - start )) s wall-clock"
  cp "runs/stn/$name/summary.json" "experiments/results/stn/$name.json"
done
