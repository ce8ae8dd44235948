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

from cadmr.experiments import summarize, to_markdown

ORDER = (
    "cadmr", "cadmr-uniform", "cadmr-no-ca", "kernel_ae", "ease", "cadmr-fwd", "cadmr-in",
    "cadmr-out", "cadmr-tc", "cadmr-in-tc", "cadmr-all-items",
    "cadmr-heads1", "cadmr-heads2", "cadmr-heads8", "cadmr-in-heads1", "cadmr-in-heads2",
    "cadmr-in-heads8", "cadmr-fv", "cadmr-fv-tc", "cadmr-fv-ca-only", "cadmr-fv-heads1",
    "cadmr-fv-heads2", "cadmr-fv-heads8", "cadmr-fv-norm", "cadmr_paper", "cadmr-no-tc",
    "cadmr-frozen", "lightgcn",
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


def table(runs_dir: Path) -> str:
    by_variant = collect(runs_dir)
    if not by_variant:
        raise SystemExit(f"no finished runs under {runs_dir}")
    rest = sorted(set(by_variant) - set(ORDER), key=lambda v: (v.endswith("-e2e"), v))
    names = [v for v in ORDER if v in by_variant] + rest  # end-to-end variants last
    rows = summarize({name: by_variant[name] for name in names})
    return f"{runs_dir.name}: test split, mean ± std over seeds (sample std)\n\n" + to_markdown(
        rows
    )


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n\n".join(table(Path(d)) for d in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
