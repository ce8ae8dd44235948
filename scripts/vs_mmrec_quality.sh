#!/usr/bin/env bash
# Issue 23's side-by-side: every baseline trained to early stopping by MMRec's own code and by
# ours at the same hyper-parameters, with ours also run the way MMRec runs it where we deviate
# (raw features: feature_norm=none; MMRec's EmbLoss: reg_form=norm; LATTICE's user-item graph:
# ours was LightGCN's, ui_graph=sym). One table per group.
#
#   scripts/vs_mmrec_quality.sh DATASET "MODALITY [MODALITY]" [OUT_DIR]
#   e.g. scripts/vs_mmrec_quality.sh scientific text; scripts/vs_mmrec_quality.sh lfm2k "text audio"
#
# Needs MMRec's interpreter (../shared/peers/README.md) at ~/mmrec-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=$1
modalities=$2
out=${3:-runs/vs_mmrec/$dataset}
mkdir -p "$out"
py=.venv/bin/python
common=(--mmrec ../shared/peers/mmrec --dataset "$dataset" --modalities $modalities --quality)
raw="raw:params.feature_norm=none"
emb="emb:params.reg_form=norm"
run() {  # NAME ARGS...: one group, its table in OUT/NAME.md, its logs in OUT/NAME/
  local name=$1
  shift
  rm -rf "${out:?}/$name"
  "$py" benchmarks/vs_mmrec.py "${common[@]}" --work "$out/$name" "$@" > "$out/$name.md"
}
run id --models bpr lightgcn --variant "$emb"
run vbpr --models vbpr --variant "$raw" --variant "$emb"
run graph --models freedom bm3 dragon --variant "$raw"
run lattice --models lattice --variant "$raw" --variant "sym:params.ui_graph=sym"
run slmrec --models slmrec
cat "$out"/{id,vbpr,graph,lattice,slmrec}.md
