"""The leakage audit: how far a planted leak inflates the metrics, next to the honest numbers
and a control that must fall to popularity.

DIAGNOSTIC ONLY. ``leaked_run`` deliberately trains a model whose input and target hold the
validation and test interactions (train + valid + test), then ranks with only the honest
training items masked: the most likely way an autoencoder recommender reports 4-5x the
honest numbers. It bypasses the leakage guard on purpose and exists nowhere else; its
results are written apart from every honest run (``<cache>/<dataset>/LEAKED/``).

The control: the honest model ranked against test labels shuffled across users (each user
gets another user's test items, minus any the user already has in train or valid). A model
that learned the users can do no better there than popularity.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cadmr.atomic import atomic_write_text
from cadmr.config import RunConfig
from cadmr.data.dataset import Dataset
from cadmr.data.leakage import LeakageGuard
from cadmr.eval.protocol import evaluate
from cadmr.experiments.cache import run_key
from cadmr.experiments.compare import compare
from cadmr.markdown import markdown_table
from cadmr.models import TorchRecommender
from cadmr.train import load_model, resolve_run_config
from cadmr.train.checkpoint import load_checkpoint
from cadmr.train.trainer import build_model, fit_trial, fitted_popularity


class _NoGuard(LeakageGuard):
    """A guard that checks nothing: the audit's planted leak must reach the model."""

    def __init__(self) -> None:  # no held-out pairs to remember
        self.cold_items = np.empty(0, dtype=np.int64)

    def check(self, matrix: Any, what: str, layout: str = "user_item") -> Any:
        return matrix


def leaked_matrix(dataset: Dataset) -> sp.csr_matrix:
    """train + valid + test as one binary matrix: the leak the audit plants."""
    m = sp.csr_matrix(dataset.train + dataset.valid + dataset.test, dtype=np.float32)
    m.data[:] = 1.0
    return m


def leaked_run(config: RunConfig, dataset: Dataset, out_dir: str | Path) -> dict[str, Any]:
    """DIAGNOSTIC: train ``config`` (one configuration, early-stopped on the leaked
    validation) with valid + test in the model's input and target, and evaluate valid and test
    masking only the honest training items. Cached in ``out_dir``."""
    out_dir = Path(out_dir)
    done = out_dir / "results.json"
    if done.exists():
        return json.loads(done.read_text())
    leak = leaked_matrix(dataset)
    model = build_model(config, config.params, dataset)
    honest_setup = model.setup

    def leaky_setup(train: Any, features: Any, guard: Any) -> None:
        honest_setup(leak, features, _NoGuard())

    model.setup = leaky_setup  # type: ignore[method-assign]
    summary = fit_trial(
        config, config.params, dataset, out_dir, resume=out_dir.exists(), log=lambda _: None,
        model=model,
    )  # fmt: skip
    ck = load_checkpoint(summary["checkpoint"])
    if isinstance(model, TorchRecommender):
        model.start_phase(ck.get("phase") or model.phases()[-1])
    model.load_state(ck["model_state"])
    results = {
        "model": config.model,
        "seed": config.seed,
        "params": summary["params"],
        "valid": summary["valid"],
        "test": evaluate(model, dataset, "test", config.eval),
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "diagnostic": "LEAKED: valid and test interactions were in the model's input/target",
    }
    atomic_write_text(done, json.dumps(results, indent=2))
    return results


def shuffled_test(dataset: Dataset, seed: int = 0) -> Dataset:
    """``dataset`` whose test rows are moved to other users (a random permutation of users),
    minus the pairs the receiving user has in train or valid."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(dataset.n_users)
    test = sp.csr_matrix(dataset.test[perm], dtype=np.float32)  # user u gets perm[u]'s items
    seen = sp.csr_matrix(dataset.train + dataset.valid, dtype=np.float32)
    test = test - test.multiply(seen)
    test.eliminate_zeros()
    return Dataset.build(
        f"{dataset.name}-shuffled-test",
        {"train": dataset.train, "valid": dataset.valid, "test": test},
        dataset.features,
    )


def leakage_audit(
    dataset: Dataset,
    spec: str,
    models: Sequence[str] = ("cadmr", "ease"),
    seeds: Sequence[int] = (0,),
    *,
    grid: str = "none",
    select: str = "each",
    sets: Sequence[str] = (),
    root: str | Path = "runs/experiments/cache",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Per model and seed: honest test metrics (the cached compare run), the leaked run's,
    the honest model on shuffled test labels, and popularity on both test splits.

    Returns:
        Rows ``{"model", "condition", "seed", "test"}``; condition is "honest",
        "LEAKED (diagnostic)" or "shuffled test labels (control)"; popularity rows have model
        "popularity".
    """
    honest = compare(
        dataset, spec, models, seeds, grid=grid, select=select, sets=sets, root=root,
        progress=progress,
    )  # fmt: skip
    control = shuffled_test(dataset)
    pop = fitted_popularity(dataset)
    rows = [
        {"model": "popularity", "condition": "honest", "seed": "-",
         "test": evaluate(pop, dataset, "test")},
        {"model": "popularity", "condition": "shuffled test labels (control)", "seed": "-",
         "test": evaluate(pop, control, "test")},
    ]  # fmt: skip
    for label, runs in honest.items():
        for r in runs:
            config = resolve_run_config(
                r["model"], spec, sets=sets, seed=r["seed"],
                extra={"params": r["params"], "search": {}, "train": {"progress": False}},
            )  # fmt: skip
            key = run_key(config, dataset)
            leaked = leaked_run(
                config, dataset, Path(root) / dataset.name / "LEAKED" / f"{label}-{key}"
            )
            model, _ = load_model(r["checkpoint"], dataset)  # same train as the control's
            shuffled = evaluate(model, control, "test", config.eval)
            for condition, test in (
                ("honest", r["test"]),
                ("LEAKED (diagnostic)", leaked["test"]),
                ("shuffled test labels (control)", shuffled),
            ):
                row = {"model": label, "condition": condition, "seed": r["seed"], "test": test}
                rows.append(row)
    return rows


def audit_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The audit as one Markdown table, with R@10/N@10 and NDCG@10 relative to honest."""
    honest = {
        (r["model"], r["seed"]): r["test"]["ndcg@10"] for r in rows if r["condition"] == "honest"
    }
    head = ["model", "seed", "condition", "R@10", "R@20", "N@10", "N@20", "R@10/N@10"]
    body = []
    for r in rows:
        t = r["test"]
        ratio = t["recall@10"] / t["ndcg@10"] if t["ndcg@10"] else float("nan")
        base = honest.get((r["model"], r["seed"]))
        rel = f"{t['ndcg@10'] / base:.2f}x" if base else "-"
        cells = [f"{t[m]:.4f}" for m in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")]
        body.append([r["model"], r["seed"], r["condition"], *cells, f"{ratio:.2f}", rel])
    return markdown_table([*head, "N@10 / honest"], body)


def write_audit(out: Path, dataset_name: str, rows: Sequence[dict[str, Any]]) -> str:
    """leakage-audit.md / .json in ``out``, labelled a diagnostic; returns the Markdown."""
    text = (
        f"{dataset_name} leakage audit. DIAGNOSTIC: the LEAKED rows trained with the valid and "
        "test interactions in the model's input and target (never a result). The control "
        "ranks the honest model against test labels shuffled across users; it should fall "
        "to popularity's level.\n\n" + audit_markdown(rows)
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "leakage-audit.md", text)
    atomic_write_text(out / "leakage-audit.json", json.dumps(list(rows), indent=2, default=str))
    return text
