"""Mean +- std over seeds of test metrics, as Markdown, CSV and JSON (docs/protocol.md: every
table carries a popularity row and the Recall@10 / NDCG@10 ratio, and MRR@10 and catalogue
coverage@20 beside the accuracy columns, so a model that wins by recommending the head shows)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cadmr.markdown import markdown_table

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10", "coverage@20")
SHORT = {"recall": "R", "ndcg": "N", "mrr": "MRR", "coverage": "cov"}


def summarize(
    runs: Mapping[str, Sequence[dict[str, Any]]], metrics: Sequence[str] = METRICS
) -> list[dict[str, Any]]:
    """One row per label: seeds, mean and sample std of each test metric, the R@10/N@10
    ratio of the means and mean seconds per epoch; then the popularity reference row (from
    the first run that carries one). Labels keep their given order. A metric a run did not
    record (results written before it existed) is NaN and shown as "-"."""
    rows: list[dict[str, Any]] = []
    for label, results in runs.items():
        if not results:
            continue
        row: dict[str, Any] = {"model": label, "seeds": sorted(r["seed"] for r in results)}
        for m in metrics:
            values = np.array([r["test"].get(m, np.nan) for r in results], dtype=float)
            row[m] = float(values.mean())
            row[m + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        row["ratio"] = _ratio([r["test"] for r in results])
        row["seconds_per_epoch"] = float(np.mean([r["seconds_per_epoch"] for r in results]))
        rows.append(row)
    ref = next((r for results in runs.values() for r in results if "popularity" in r), None)
    if ref is not None:
        pop = ref["popularity"]
        row = {"model": "popularity", "seeds": []}
        row.update({m: pop.get(m, np.nan) for m in metrics} | {m + "_std": 0.0 for m in metrics})
        row.update(ratio=_ratio([pop]), seconds_per_epoch=0.0)
        rows.append(row)
    return rows


def _ratio(tests: Sequence[Mapping[str, float]]) -> float:
    """Recall@10 / NDCG@10 of the means (docs/protocol.md's leakage fingerprint)."""
    ndcg = np.mean([t["ndcg@10"] for t in tests])
    return float(np.mean([t["recall@10"] for t in tests]) / ndcg) if ndcg else float("nan")


def to_markdown(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = METRICS) -> str:
    """The summary as a Markdown table: mean +- std per metric (std shown with 2+ seeds)."""
    short = [_short(m) for m in metrics]
    body = []
    for r in rows:
        seeds = ",".join(map(str, r["seeds"])) or "-"
        cells = [
            "-"
            if np.isnan(r[m])
            else f"{r[m]:.4f} ± {r[m + '_std']:.4f}"
            if len(r["seeds"]) > 1
            else f"{r[m]:.4f}"
            for m in metrics
        ]
        secs = f"{r['seconds_per_epoch']:.2f}" if r["seeds"] else "-"
        body.append([r["model"], seeds, *cells, f"{r['ratio']:.2f}", secs])
    return markdown_table(["model", "seeds", *short, "R@10/N@10", "s/epoch"], body)


def _short(metric: str) -> str:
    """Column label: "recall@20" -> "R@20", "coverage@20" -> "cov@20"."""
    name, _, k = metric.partition("@")
    return f"{SHORT.get(name, name)}@{k}"


def to_csv(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = METRICS) -> str:
    """The summary as CSV: model, seeds (space separated), then mean and std per metric."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    head = ["model", "seeds"]
    for m in metrics:
        head += [m, m + "_std"]
    writer.writerow([*head, "recall@10/ndcg@10", "seconds_per_epoch"])
    for r in rows:
        cells: list[Any] = [r["model"], " ".join(map(str, r["seeds"]))]
        for m in metrics:
            cells += [f"{r[m]:.6f}", f"{r[m + '_std']:.6f}"]
        writer.writerow([*cells, f"{r['ratio']:.4f}", f"{r['seconds_per_epoch']:.4f}"])
    return buf.getvalue()
