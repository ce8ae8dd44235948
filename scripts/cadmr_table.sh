#!/usr/bin/env bash
# CADMR, its ablations, the autoencoder alone and two references on one dataset, over seeds;
# every choice (epochs, EASE's lambda) made on validation. Usage:
#   [AE_SETS="--set params.pos_weight=3"] scripts/cadmr_table.sh DATASET [SEED ...]
# (default seeds 0 1 2). AE_SETS goes to the autoencoder-based runs (cadmr*, kernel_ae):
# the positive weight chosen for the dataset on validation (docs/cadmr.md).
# then: .venv/bin/python scripts/seed_table.py runs/table/DATASET
# Runs are resumable: finished runs (results.json present) are skipped.
# The autoencoder-based runs use patience 5 and at most 60 epochs per phase (the 2-core
# budget); LightGCN keeps its defaults (patience 20, up to 1000 epochs), so the reference is
# not starved.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=$1; shift
seeds=("${@:-0 1 2}")
common=(--quiet --set train.patience=5 --set train.epochs=60 --set train.num_threads=1)
declare -A variants=(
  [cadmr]=""
  [cadmr-no-tc]="--set params.tc_weight=0"
  [cadmr-no-ca]="--set params.use_attention=false"
  [cadmr-frozen]="--set params.finetune_autoencoder=false"
  [kernel_ae]=""
  [ease]=""
  [lightgcn]="--set train.patience=20 --set train.epochs=1000"
)
for seed in ${seeds[@]}; do
  for v in cadmr cadmr-no-tc cadmr-no-ca cadmr-frozen kernel_ae ease lightgcn; do
    out=runs/table/$dataset/$v-seed$seed
    [[ -f $out/results.json ]] && continue
    model=${v%%-*}
    ae=""
    [[ $model == cadmr || $model == kernel_ae ]] && ae=${AE_SETS:-}
    cmd=train
    [[ $model == ease ]] && cmd=tune  # EASE's lambda grid, chosen on validation
    # shellcheck disable=SC2086
    .venv/bin/cadmr $cmd -m "$model" -d "$dataset" --seed "$seed" --out "$out" \
      "${common[@]}" ${variants[$v]} $ae > /dev/null
    echo "$(date +%T) $dataset $v seed $seed done"
  done
done
