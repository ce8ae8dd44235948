"""One whole training epoch per model, through the CLI a user runs, with peak memory.

Usage:
    python benchmarks/full_epoch.py [--dataset synthetic-elec] [--models bpr lightgcn ...] \
        [--threads 2] [--limit-gib 24] [--progress] [--set train.batch_size=4096 ...]

For each model, ``cadmr train -m MODEL -d DATASET --set train.epochs=1`` runs in its own
process with the model's default parameters: it sets the model up, trains one full epoch
(per phase, for CADMR), ranks every validation user against every item, then every test
user, and writes its checkpoint. The table reports the trainer's own seconds per epoch and
per evaluation (``results.json``), the process's wall time and peak resident memory (its
own VmHWM, so each row is that model's process alone), whether that peak stays within
``--limit-gib``, and the test Recall@20 after one epoch (a sanity value, not a result). The
first line states the machine: cores, torch threads, measured fp32 matmul GFLOP/s and memory GB/s.
Nothing is extrapolated here; ``model_epoch.py`` gives quick extrapolated timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_line

from cadmr.models import MODELS

# runs the CLI and, on exit, writes its own peak resident memory in GiB
# (``_machine.peak_rss_gib``: VmHWM, not ru_maxrss from wait4, which would floor it at the
# parent's peak at fork time) to the file named by its first argument; the second is the
# folder of ``_machine``
_CLI_WITH_PEAK = """
import atexit, sys
peak_file, benchmarks = sys.argv.pop(1), sys.argv.pop(1)
sys.path.insert(0, benchmarks)
from _machine import peak_rss_gib
def _peak():
    with open(peak_file, "w") as f:
        f.write(repr(peak_rss_gib()))
atexit.register(_peak)
from cadmr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _own_peak_gib(peak_file: Path, fallback_kib: int) -> float:
    """The child's own peak from ``peak_file``, else (it died before writing it) its
    ``ru_maxrss`` in KiB, an upper bound."""
    text = peak_file.read_text().strip() if peak_file.exists() else ""
    return float(text) if text else fallback_kib / 2**20


def run(model: str, dataset: str, threads: int, extra: list[str], progress: bool) -> dict:
    """One ``cadmr train`` process. With ``progress`` its progress bars and epoch lines go to
    this process's stderr; otherwise its stderr goes to a file (read for the error line),
    never a pipe, which a long run's output could fill while this process waits."""
    with tempfile.TemporaryDirectory(prefix=f"full-epoch-{model}-") as tmp:
        out, peak_file, log = Path(tmp) / "run", Path(tmp) / "peak", Path(tmp) / "stderr"
        here = str(Path(__file__).resolve().parent)
        cmd = [sys.executable, "-c", _CLI_WITH_PEAK, str(peak_file), here, "train", "-m", model]
        cmd += ["-d", dataset, "--set", "train.epochs=1", "--set", f"train.num_threads={threads}"]
        for setting in extra:
            cmd += ["--set", setting]
        cmd += ["--out", str(out)] + ([] if progress else ["--quiet"])
        t0 = time.perf_counter()
        with open(log, "wb") as err_file:
            stdout = sys.stderr if progress else subprocess.DEVNULL
            stderr = None if progress else err_file
            proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        peak = _own_peak_gib(peak_file, usage.ru_maxrss)
        row = {"model": model, "wall_s": wall, "peak_gib": peak, "exit": code}
        if code != 0:
            lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
            row["error"] = (lines or ["see its output above"])[-1]
            return row
        results = json.loads((out / "results.json").read_text())
    phases = results.get("phases") or [results]
    row["epoch_s"] = " + ".join(f"{p['seconds_per_epoch']:.1f}" for p in phases)
    row["eval_s"] = results["eval_seconds"]
    row["recall20"] = results["test"]["recall@20"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic-elec")
    parser.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--limit-gib", type=float, default=24.0)
    parser.add_argument(
        "--progress", action="store_true", help="show each run's progress bars on stderr"
    )
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], help="extra setting for every run"
    )
    args = parser.parse_args()

    print(machine_line(args.threads))
    print()
    print(
        f"| dataset | model | s/epoch (per phase) | eval s (valid) | wall s | peak RSS GiB | "
        f"within {args.limit_gib:g} GiB | test R@20 after 1 epoch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        r = run(model, args.dataset, args.threads, args.extra, args.progress)
        within = "yes" if r["peak_gib"] <= args.limit_gib else "**no**"
        if r["exit"] != 0:
            print(
                f"| {args.dataset} | {model} | failed (exit {r['exit']}: {r['error']}) | | "
                f"{r['wall_s']:.0f} | {r['peak_gib']:.2f} | {within} | |",
                flush=True,
            )
            continue
        print(
            f"| {args.dataset} | {model} | {r['epoch_s']} | {r['eval_s']:.1f} | "
            f"{r['wall_s']:.0f} | {r['peak_gib']:.2f} | {within} | {r['recall20']:.4f} |",
            flush=True,
        )
    if args.extra:
        print(f"\nsettings: {' '.join(args.extra)}")


if __name__ == "__main__":
    main()
