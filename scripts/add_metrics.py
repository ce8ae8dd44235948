"""Add the metrics a finished run's results predate (MRR@K, coverage@K) from its best.pt.

Usage: python scripts/add_metrics.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR holds a trainer's results.json and best.pt (after a grid search, the selected
trial's trials/NNN/best.pt). That checkpoint, the one best on validation, is evaluated again
on the validation and test splits (and the popularity reference on test). Every metric the
results already hold must come out the same (to 1e-6), or the run is left untouched and
named: the new columns then come from the model the old ones did. Only missing keys are
added; results.json is replaced atomically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cadmr.atomic import atomic_write_text
from cadmr.config import EvalConfig, from_dict
from cadmr.data.sources import resolve_dataset
from cadmr.eval.protocol import evaluate
from cadmr.train.checkpoint import load_model
from cadmr.train.trainer import fitted_popularity

TOLERANCE = 1e-6


def merged(old: dict[str, Any], new: dict[str, float], where: str) -> dict[str, Any]:
    """``old`` with ``new``'s missing keys added; raises when a shared key differs."""
    for key, value in old.items():
        if key in new and abs(float(new[key]) - float(value)) > TOLERANCE:
            raise ValueError(f"{where}: {key} is {new[key]:.6f} now, {value:.6f} recorded")
    return {**old, **{k: v for k, v in new.items() if k not in old}}


def best_checkpoint(run_dir: Path, results: dict[str, Any]) -> Path:
    """The run's best.pt, or the one of the grid trial whose parameters were selected."""
    if (run_dir / "best.pt").exists():
        return run_dir / "best.pt"
    for trial in sorted(run_dir.glob("trials/*/trial.json")):
        if json.loads(trial.read_text()).get("params") == results["params"]:
            return trial.parent / "best.pt"
    raise FileNotFoundError(f"no best.pt in {run_dir} or its selected trial")


def add_metrics(run_dir: Path, datasets: dict[str, Any]) -> bool:
    """True when ``run_dir``'s results gained keys."""
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    spec = results["config"]["dataset"]
    if spec not in datasets:
        datasets[spec] = resolve_dataset(spec)
    dataset = datasets[spec]
    eval_cfg = from_dict(EvalConfig, results["config"]["eval"], "eval")
    model, _ = load_model(best_checkpoint(run_dir, results), dataset)
    updated = dict(results)
    for split in ("valid", "test"):
        fresh = evaluate(model, dataset, split, eval_cfg)
        updated[split] = merged(results[split], fresh, f"{run_dir} {split}")
    if "popularity" in results:
        pop = evaluate(fitted_popularity(dataset), dataset, "test", eval_cfg)
        updated["popularity"] = merged(results["popularity"], pop, f"{run_dir} popularity")
    if updated == results:
        return False
    atomic_write_text(path, json.dumps(updated, indent=2))
    return True


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    datasets: dict[str, Any] = {}
    failed = 0
    for arg in argv:
        run_dir = Path(arg)
        try:
            changed = add_metrics(run_dir, datasets)
            print(f"{run_dir}: {'added' if changed else 'nothing to add'}")
        except (ValueError, FileNotFoundError, KeyError) as e:
            failed += 1
            print(f"{run_dir}: left as it was: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
