#!/usr/bin/env bash
# Compiles each family's paper-scale training and evaluation steps for TPU topologies on this host
# (experiments/tpu_compile.py, libtpu from the tpu extra) and keeps each report's JSON line in
# experiments/results/tpu/<topology>/<name>.json (and the printed tables in .txt beside them).
# Usage: bash experiments/tpu_table.sh TOPOLOGY [CONFIG_FILE:CELL[@BATCH[@DTYPE]] ...]  (default: the cells below)
set -uo pipefail
cd "$(dirname "$0")/.."
topology=${1:?usage: tpu_table.sh TOPOLOGY [CONFIG_FILE:CELL[@BATCH[@DTYPE]] ...]}
shift
defaults=(
  stn_mnist.py:st_cnn,affine,RTS,paper
  ram_mnist.py:cluttered60,ram,8,paper
  ram_mnist.py:cluttered100,ram,8,paper
  cifar.py:resnet110,paper
  cifar.py:se_resnet110,paper
  residual_attention.py:attention92,arl,paper
  imagenet.py:resnet50@256@bfloat16
  imagenet.py:seresnet50@256@bfloat16
  imagenet.py:legacy_senet154@256@bfloat16
  imagenet.py:attention56@256@bfloat16
  imagenet.py:attention92@256@bfloat16
)
cells=("$@")
[ ${#cells[@]} -gt 0 ] || cells=("${defaults[@]}")
out="experiments/results/tpu/${topology//:/_}"
mkdir -p "$out"
status=0
for item in "${cells[@]}"; do
  IFS=@ read -r spec batch dtype <<< "$item"
  name=$(echo "${spec%.py:*}_${spec#*:}${batch:+_b$batch}${dtype:+_$dtype}" | tr ',' '_')
  args=(--config="experiments/configs/$spec" --topology="$topology")
  [ -n "${batch:-}" ] && args+=(--batch_size="$batch")
  [ -n "${dtype:-}" ] && args+=(--dtype="$dtype")
  start=$(date +%s)
  .venv/bin/python -m experiments.tpu_compile "${args[@]}" > "$out/$name.txt" 2> "$out/$name.log"
  code=$?
  tail -n 1 "$out/$name.txt" > "$out/$name.json"
  if [ $code -ne 0 ]; then
    status=1
    if ! grep -q '^{' "$out/$name.json"; then
      # The process died without its report (e.g. libtpu crashing inside the compiler): keep why, for the table.
      reason=$(grep -m 1 -E 'Fatal Python error|Error' "$out/$name.log" | cut -c1-100 | tr -d '"\\')
      printf '{"config": "%s", "error": "process exited with %s: %s"}\n' "$spec" "$code" "${reason:-no message}" > "$out/$name.json"
    fi
  fi
  grep -v '^{' "$out/$name.txt"
  echo "  ($(( $(date +%s) - start )) s wall-clock)"
done
# The table of every report in the folder (docs/tpu.md).
.venv/bin/python -c "from experiments.tpu_compile import markdown_table; print(markdown_table('$out'))"
exit $status
