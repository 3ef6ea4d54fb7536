#!/usr/bin/env bash
# Run every seed 002 study, one at a time, into one storage; prints each study's wall time.
# Usage: docs/seeds/run_seed002.sh [STORAGE_URL]   (default sqlite:///seed002.db)
# Then: python docs/seeds/make_seed002.py STORAGE_URL   (figures and tables for docs/seeds/seed002.md)
set -euo pipefail
# One torch thread: the networks are tiny, and on a shared 2-core machine a second intra-op thread
# made a 5-epoch fit 3x slower (41 s against 14 s), not faster.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
STORAGE=${1:-sqlite:///seed002.db}
AUTOML=${AUTOML:-automl-nn}

run() {  # run NAME ARGS...: one search, its wall time in seconds
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  $AUTOML search "$@" --storage "$STORAGE" > /dev/null
  end=$(date +%s.%N)
  printf '%s\t%.1f s\n' "$name" "$(echo "$end - $start" | bc)"
}

for study in width-sin width-polynomial width-abs depth activations losses initializers \
             regularization batch-size; do
  run "seed002-$study" "studies/seed002-$study.yaml"
done
# Class imbalance: 1:1 to 1:99 (imbalance = 1/ratio), without and with oversampling.
for ratio in 1 2 5 10 20 50 100; do
  imbalance=$(echo "scale=6; 1/$ratio" | bc)
  run "seed002-imbalance-$ratio" studies/seed002-imbalance.yaml \
      --data-option "imbalance=$imbalance" --study-name "seed002-imbalance-$ratio"
  run "seed002-imbalance-$ratio-oversampled" studies/seed002-imbalance.yaml \
      --data-option "imbalance=$imbalance" --oversample --study-name "seed002-imbalance-$ratio-oversampled"
done
