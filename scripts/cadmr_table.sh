#!/usr/bin/env bash
# CADMR, its ablations, the paper's CADMR, the autoencoder alone and the references on one
# dataset, over seeds; every choice made on validation (docs/cadmr.md). Usage:
#   scripts/cadmr_table.sh DATASET [SEED ...]        (default seeds 0 1 2)
#   .venv/bin/python scripts/seed_table.py runs/table/DATASET
#
# 1. `cadmr tune -m kernel_ae` on the first seed picks the width, the positive weight and
#    lambda_2 from the model's grid (tables tuned before 2026-12-07 searched no width);
#    every autoencoder-based run of every seed uses them (CADMR's pretraining phase IS the
#    autoencoder, so its best values are CADMR's too).
#    `cadmr_paper` picks its own positive weight from the same values, with the paper's
#    settings otherwise.
# 2. Each seed trains: kernel_ae; cadmr (our defaults: rating-valued attention over each
#    item's 10 nearest items by features, the attended rows added to the autoencoder's
#    input and, as shares of each user's history, to its output, with the attention
#    matrix used both ways there); cadmr-fwd (the output path one way: our default before
#    neighbour_reverse); cadmr-in (the attended rows to the input only: our default before
#    the output path); cadmr-out (the attended rows to the output only); cadmr-tc (the
#    paper's TC weight 0.5);
#    cadmr-uniform (no content prior: the attention starts uniform over the candidates,
#    our default before prior_temperature);
#    cadmr-no-ca (without cross-attention: each item's own value vector); cadmr-all-items
#    (rating-valued attention over every item); cadmr-fv (feature-valued attention over
#    every item plus the item's own value: our default before rating values);
#    cadmr-fv-ca-only (the paper's attention: feature values, the attention output alone);
#    cadmr_paper; ease (its lambda grid); lightgcn and, where the data has features,
#    freedom (defaults). HEADS="1 2 8" adds cadmr-headsH runs for the first seed;
#    SKIP="lightgcn freedom ..." leaves those runs out (e.g. references already measured).
# Every run early-stops on validation with the trainer's defaults (patience 20). Finished
# runs (results.json present) are skipped. One thread per run: start two datasets at once.
set -euo pipefail
cd "$(dirname "$0")/.."
# the team's datasets beside the checkout, unless CADMR_DATA_DIR names another folder
export CADMR_DATA_DIR=${CADMR_DATA_DIR:-$(cd .. && pwd)/shared/data}
dataset=$1; shift
seeds=("${@:-0 1 2}")
read -r -a seeds <<< "${seeds[*]}"
root=runs/table/$dataset
common=(--quiet --set train.num_threads=1)
chosen() {  # `--set` arguments for the parameters a tune run selected on validation
  .venv/bin/python -c "
import json, sys
params = json.load(open(sys.argv[1]))['params']
print(' '.join(f'--set params.{k}={json.dumps(params[k], separators=(\",\", \":\"))}'
               for k in sys.argv[2:]))" "$@"
}

# kernel_ae searches its grid (default_search: width x positive weight x lambda_2);
# cadmr_paper the positive weight only, at GLocal-K's lambda_2
[[ -f $root/tune-kernel_ae/results.json ]] || .venv/bin/cadmr tune -m kernel_ae -d "$dataset" \
  --seed "${seeds[0]}" --out "$root/tune-kernel_ae" --resume "${common[@]}" > /dev/null
skipped() { [[ " ${SKIP:-} " == *" $1 "* ]]; }
skipped cadmr_paper || [[ -f $root/tune-cadmr_paper/results.json ]] || .venv/bin/cadmr tune \
  -m cadmr_paper -d "$dataset" --seed "${seeds[0]}" --out "$root/tune-cadmr_paper" --resume \
  "${common[@]}" --set 'search.pos_weight=[3.0,10.0,30.0,100.0,300.0]' > /dev/null
ours=$(chosen "$root/tune-kernel_ae/results.json" hidden pos_weight lambda_2)
paper=""
skipped cadmr_paper || paper=$(chosen "$root/tune-cadmr_paper/results.json" pos_weight)
echo "$(date +%T) $dataset: ours $ours; paper's settings $paper"

declare -A variants=(
  [kernel_ae]="kernel_ae $ours"
  [cadmr]="cadmr $ours"
  [cadmr-in]="cadmr $ours --set params.neighbour_output=0"
  [cadmr-out]="cadmr $ours --set params.neighbour_input=false"
  [cadmr-fwd]="cadmr $ours --set params.neighbour_reverse=false"
  [cadmr-tc]="cadmr $ours --set params.tc_weight=0.5"
  [cadmr-uniform]="cadmr $ours --set params.prior_temperature=0"
  [cadmr-no-ca]="cadmr $ours --set params.use_attention=false"
  [cadmr-all-items]="cadmr $ours --set params.attention_neighbours=0"
  [cadmr-fv]="cadmr $ours --set params.attention_values=features --set params.attention_neighbours=0"
  [cadmr-fv-ca-only]="cadmr $ours --set params.attention_values=features \
    --set params.attention_neighbours=0 --set params.value_skip=false"
  [cadmr_paper]="cadmr_paper $paper"
  [lightgcn]="lightgcn"
  [freedom]="freedom"
)
has_features=$(.venv/bin/python -c "
import sys
from cadmr.data.sources import resolve_dataset
print(int(bool(resolve_dataset(sys.argv[1]).features)))" "$dataset")
for seed in "${seeds[@]}"; do
  names=(kernel_ae lightgcn)
  (( has_features )) && names+=(cadmr cadmr-uniform cadmr-fwd cadmr-in cadmr-out cadmr-tc cadmr-no-ca
    cadmr-all-items cadmr-fv cadmr-fv-ca-only cadmr_paper freedom)
  for v in "${names[@]}"; do
    out=$root/$v-seed$seed
    [[ -f $out/results.json ]] || skipped "$v" && continue
    # shellcheck disable=SC2086
    .venv/bin/cadmr train -m ${variants[$v]} -d "$dataset" --seed "$seed" --out "$out" \
      "${common[@]}" > /dev/null
    echo "$(date +%T) $dataset $v seed $seed done"
  done
  out=$root/ease-seed$seed
  [[ -f $out/results.json ]] || .venv/bin/cadmr tune -m ease -d "$dataset" --seed "$seed" \
    --out "$out" "${common[@]}" > /dev/null
done
if (( has_features )); then
  for heads in ${HEADS:-}; do
    out=$root/cadmr-heads$heads-seed${seeds[0]}
    [[ -f $out/results.json ]] && continue
    # shellcheck disable=SC2086
    .venv/bin/cadmr train -m cadmr $ours -d "$dataset" --seed "${seeds[0]}" --out "$out" \
      "${common[@]}" --set params.heads="$heads" > /dev/null
    echo "$(date +%T) $dataset cadmr heads $heads done"
  done
fi
