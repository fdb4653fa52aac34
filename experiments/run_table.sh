#!/usr/bin/env bash
# Runs table cells of one experiment config, one after another, on this machine's CPU budget, and copies each
# run's summary.json to experiments/results/<experiment>/.
# Usage: bash experiments/run_table.sh stn|ram|cifar|senet|ran|compare [CELL[@SEED] ...]  (a CELL is a config string such as
# st_cnn,affine,RTS; @SEED sets --config.seed and adds _seedSEED to the run's name; default: the cells reported in
# experiments/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
experiment=${1:?usage: run_table.sh stn|ram|cifar|senet|ran|compare [CELL[@SEED] ...]}
shift
case "$experiment" in
  stn) config=stn_mnist.py; defaults=(st_cnn,affine,RTS cnn,none,RTS st_cnn,tps,RTS fcn,none,RTS st_fcn,affine,RTS
                                      cnn,none,R st_cnn,affine,R st_cnn,tps,R) ;;
  ram) config=ram_mnist.py; defaults=(mnist28,ram,6 translated60,ram,6 cluttered60,ram,6 cluttered60,conv,1
                                      cluttered60,conv_paper,1 mnist28,fc,1 mnist28,ram_random,6) ;;
  cifar) config=cifar.py; defaults=(resnet20,cpu resnet20,cpu3@0 se_resnet20,cpu3@0 resnet20,cpu3@1 se_resnet20,cpu3@1
                                    resnet20,cpu3@2 se_resnet20,cpu3@2) ;;
  senet) config=senet.py; defaults=(se_pre,cifar,cpu3@0 se_identity,cifar,cpu3@0) ;;
  ran) config=residual_attention.py; defaults=(attention56,arl,cpu0.5@0 attention56,nal,cpu0.5@0
                                               attention92,arl,cpu0.5@0 attention92,nal,cpu0.5@0
                                               preact_resnet164,arl,cpu0.5@0) ;;
  compare) config=compare.py; defaults=()
           for seed in 0 1 2; do
             for cell in cluttered60,{cnn,st_cnn,ram,se_cnn,cbam_cnn,ran} cifar10,{resnet20,se_resnet20,cbam_resnet20,st_resnet20}; do
               defaults+=("$cell@$seed")
             done
           done ;;
  *) echo "unknown experiment $experiment (stn, ram, cifar, senet, ran or compare)" >&2; exit 2 ;;
esac
cells=("$@")
[ ${#cells[@]} -gt 0 ] || cells=("${defaults[@]}")
mkdir -p "experiments/results/$experiment"
for item in "${cells[@]}"; do
  cell=${item%@*}
  name=${cell//,/_}
  seed=()
  if [[ $item == *@* ]]; then
    seed=(--config.seed="${item##*@}")
    name="${name}_seed${item##*@}"
  fi
  start=$(date +%s)
  .venv/bin/python -m experiments.main --config="experiments/configs/$config:$cell" \
      --workdir="runs/$experiment/$name" --config.progress=False "${seed[@]}"
  echo "$cell: $(( $(date +%s) - start )) s wall-clock"
  cp "runs/$experiment/$name/summary.json" "experiments/results/$experiment/$name.json"
  [ "$experiment" != compare ] || continue  # its figure is one for all models (experiments.compare_report)
  # The attention figures (SE excitations, attention masks) of every run; the others only for single runs.
  for figure in "runs/$experiment/$name"/*.png; do
    if [[ $name != *_seed* || $figure == *excitations.png || $figure == *attention_masks.png ]]; then
      cp "$figure" "experiments/results/$experiment/${name}_$(basename "$figure")"
    fi
  done
done
if [ "$experiment" = compare ]; then
  # Speeds and figures again for the datasets these cells belong to (the other datasets' stay as measured).
  datasets=$(for item in "${cells[@]}"; do echo "${item%%,*}"; done | sort -u | paste -sd,)
  .venv/bin/python -m experiments.compare_report --speed --datasets="$datasets"
fi
