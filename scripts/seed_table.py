"""Mean +- std over seeds of the test metrics of finished runs, as a Markdown table.

Usage: python scripts/seed_table.py RUNS_DIR [RUNS_DIR ...]

RUNS_DIR holds one folder per run named ``<variant>-seed<N>`` with the trainer's
results.json (scripts/cadmr_table.sh writes them). Each row is one variant; the popularity
reference row comes from the same runs. Every number is a test-split number of a run whose
epochs and hyper-parameters were chosen on validation.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
ORDER = (
    "cadmr", "cadmr-no-tc", "cadmr-no-ca", "cadmr-frozen", "kernel_ae", "ease", "lightgcn",
    "bpr", "vbpr", "lattice", "freedom", "freedom+mg", "dragon", "dragon+mg", "bm3", "slmrec",
    "addvae", "pop",
)  # fmt: skip


def collect(runs_dir: Path) -> dict[str, list[dict]]:
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(runs_dir.glob("*-seed*/results.json")):
        match = re.fullmatch(r"(.+)-seed(\d+)", path.parent.name)
        if match:
            by_variant[match.group(1)].append(json.loads(path.read_text()))
    return by_variant


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _ratio(tests: list[dict]) -> float:
    """Recall@10 / NDCG@10 of the means (PROTOCOL.md's leakage fingerprint)."""
    return float(np.mean([t["recall@10"] for t in tests]) / np.mean([t["ndcg@10"] for t in tests]))


def table(runs_dir: Path) -> str:
    by_variant = collect(runs_dir)
    if not by_variant:
        raise SystemExit(f"no finished runs under {runs_dir}")
    names = [v for v in ORDER if v in by_variant] + sorted(set(by_variant) - set(ORDER))
    lines = [
        f"{runs_dir.name}: test split, mean ± std over seeds (sample std)",
        "",
        "| model | seeds | "
        + " | ".join(m.replace("recall", "R").replace("ndcg", "N") for m in METRICS)
        + " | R@10/N@10 | s/epoch |",
        "|---|---|" + "---|" * (len(METRICS) + 2),
    ]
    for name in names:
        runs = by_variant[name]
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        cells = [fmt([r["test"][m] for r in runs]) for m in METRICS]
        speed = np.mean([r["seconds_per_epoch"] for r in runs])
        ratio = _ratio([r["test"] for r in runs])
        lines.append(
            f"| {name} | {seeds} | " + " | ".join(cells) + f" | {ratio:.2f} | {speed:.2f} |"
        )
    pop = next(iter(by_variant.values()))[0]["popularity"]
    lines.append(
        "| popularity | - | "
        + " | ".join(f"{pop[m]:.4f}" for m in METRICS)
        + f" | {_ratio([pop]):.2f} | - |"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n\n".join(table(Path(d)) for d in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
