"""Files an experiment leaves: Markdown / CSV / JSON tables and PNG figures."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cadmr.atomic import atomic_write_text
from cadmr.experiments.tables import summarize, to_csv, to_markdown

RUN_FIELDS = ("seed", "params", "valid", "test", "best_epoch")


def write_summary(
    stem: Path, title: str, runs: Mapping[str, Sequence[dict[str, Any]]]
) -> tuple[str, list[dict[str, Any]]]:
    """Summarise ``runs`` (label -> results over seeds) into ``stem``.md / .csv / .json;
    returns (the Markdown text, the summary rows)."""
    rows = summarize(runs)
    text = title + "\n\n" + to_markdown(rows)
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stem.with_suffix(".md"), text)
    atomic_write_text(stem.with_suffix(".csv"), to_csv(rows))
    detail = {k: [{f: r[f] for f in RUN_FIELDS} for r in rs] for k, rs in runs.items()}
    payload = {"rows": rows, "runs": detail}
    atomic_write_text(stem.with_suffix(".json"), json.dumps(payload, indent=2))
    return text, rows


def heads_figure(
    rows: Sequence[dict[str, Any]], heads: Sequence[int], title: str, path: Path
) -> Path:
    """Fig. 3: test NDCG@10 (mean +- std over seeds) of the rows "<h> heads"."""
    from cadmr.experiments.plots import line_plot

    by_model = {r["model"]: r for r in rows}
    picked = [by_model[f"{h} heads"] for h in heads]
    series = {"CADMR": ([r["ndcg@10"] for r in picked], [r["ndcg@10_std"] for r in picked])}
    return line_plot(heads, series, "attention heads", "test NDCG@10", title, path)


def _popularity(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in rows if r["model"] == "popularity")


def write_cold_start(
    out: Path,
    dataset_name: str,
    title: str,
    by_fraction: Mapping[float, Mapping[str, Sequence[dict[str, Any]]]],
    models: Sequence[str],
) -> tuple[str, Path]:
    """Fig. 2: a table per training fraction (cold-start.md / .csv / .json) and
    cold-start.png (test NDCG@10 per model and fraction); returns (Markdown, PNG path)."""
    from cadmr.experiments.plots import line_plot

    out.mkdir(parents=True, exist_ok=True)
    tables = {f: summarize(runs) for f, runs in by_fraction.items()}
    parts = [
        f"### {round(f * 100)}% of each user's training data\n\n" + to_markdown(rows)
        for f, rows in tables.items()
    ]
    text = title + "\n\n" + "\n".join(parts)
    atomic_write_text(out / "cold-start.md", text)
    atomic_write_text(
        out / "cold-start.csv", "".join(f"# fraction {f}\n" + to_csv(r) for f, r in tables.items())
    )
    atomic_write_text(
        out / "cold-start.json", json.dumps({str(f): r for f, r in tables.items()}, indent=2)
    )
    series = {}
    for label in models:
        picked = [next(r for r in rows if r["model"] == label) for rows in tables.values()]
        series[label] = ([r["ndcg@10"] for r in picked], [r["ndcg@10_std"] for r in picked])
    png = line_plot(
        [f"{round(f * 100)}%" for f in tables],
        series,
        "share of each user's training interactions kept",
        "test NDCG@10",
        f"{dataset_name}: cold-start",
        out / "cold-start.png",
        references={"popularity": [_popularity(rows)["ndcg@10"] for rows in tables.values()]},
    )
    return text, png
