#!/usr/bin/env bash
# The GPU check of train.device=cuda, prepared for a session that is lent a GPU machine
# (this project's: one H200, a CUDA build of torch with pytest, NumPy, SciPy, numba,
# pandas, PyYAML, tqdm and matplotlib in its python3; device/KINDS.md lists the image's
# packages). From the repository root, through the device tool:
#
#   run(command="bash scripts/gpu_check.sh", timeout_s=540)
#
# No install: the source tree runs as it is. It writes, under $OUT (or runs/gpu_check):
#   machine.txt        torch, CUDA and the GPUs it sees
#   tests.log          the model contract on the GPU, train.device's tests, and the
#                      two-rank NCCL test (skipped unless there are 2 GPUs)
#   elec_cadmr.json    one whole Electronics-size CADMR epoch at its paper batch of 64 on
#                      the GPU: seconds per phase, evaluation seconds, peak GPU memory
# Each step has its own time limit, so a hang in one still leaves the others' results.
# DEVICE, DATASET and PYTHON override the GPU, the Electronics-size data and python3 (a smoke
# run on a CPU: DEVICE=cpu DATASET=synthetic-tiny PYTHON=.venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DATASET=${DATASET:-synthetic-elec}

$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])' | tee "$OUT/machine.txt"

timeout 240 $PY -m pytest -q -p no:cacheprovider -k "gpu or device or ranks" \
  tests/models/test_contract.py tests/train/test_device.py tests/train/test_distributed.py \
  2>&1 | tee "$OUT/tests.log"

RUN=$(mktemp -d)  # the checkpoints (about 2 GB) stay on the machine
timeout 240 $PY -m cadmr.cli train -m cadmr -d "$DATASET" --quiet --out "$RUN/elec" \
  --set train.epochs=1 --set train.device="$DEVICE" --set train.num_threads=0
$PY - "$RUN/elec/results.json" <<'PYEOF' | tee "$OUT/elec_cadmr.json"
import json, sys
r = json.load(open(sys.argv[1]))
keep = ("model", "dataset", "device", "gpu_peak_gib", "seconds_per_epoch", "eval_seconds")
out = {k: r.get(k) for k in keep}
out["phases"] = [
    {k: p[k] for k in ("phase", "seconds_per_epoch", "eval_seconds")} for p in r.get("phases", [])
]
out["test"] = {k: r["test"][k] for k in ("recall@20", "ndcg@10")}
print(json.dumps(out, indent=2))
PYEOF
