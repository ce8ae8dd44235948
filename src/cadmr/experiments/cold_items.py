"""New items: every model that can rank an item without interactions, on a cold-item
split (data/cold.py), over seeds, each tuned on validation; content k-NN is the bar.

Two tables: the split's cold items ranked alone (the cold-start literature's setting, and
what model selection uses) and every item ranked (the cold items among the warm ones).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cadmr.atomic import atomic_write_text
from cadmr.data.dataset import Dataset
from cadmr.experiments.compare import compare, parse_label
from cadmr.experiments.tables import summarize, to_csv, to_markdown

COLD_MODELS = ("content_knn", "vbpr", "freedom", "lattice", "dragon", "cadmr")
# searched on the cold split's validation instead of the model's grid: CADMR's item
# dropout and whether fine-tuning may move the autoencoder (docs/cadmr.md: end to end wins
# on every dataset; the best dropout is 0.5 on Scientific and 0.9 on ml100k)
COLD_SEARCH = {
    "cadmr": ["search.cold_dropout=[0.0,0.5,0.9]", "search.finetune_autoencoder=[false,true]"]
}


def cold_items(
    dataset: Dataset,
    spec: str,
    models: Sequence[str] = COLD_MODELS,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    sets: Sequence[str] = (),
    progress: bool = True,
    **compare_args: Any,
) -> dict[str, list[dict[str, Any]]]:
    """label -> results over seeds, each label through ``compare`` (grid, select, root as
    there) with its ``COLD_SEARCH`` added."""
    if not dataset.cold_items:
        raise ValueError(f"{dataset.name} is not a cold-item split")
    runs: dict[str, list[dict[str, Any]]] = {}
    with tqdm(
        total=len(models) * len(seeds), desc=dataset.name, unit="run", disable=not progress
    ) as bar:
        for label in models:
            extra = COLD_SEARCH.get(parse_label(label)[0], [])
            runs |= compare(
                dataset, spec, [label], seeds, sets=[*sets, *extra], bar=bar, **compare_args
            )
    return runs


def write_cold_items(
    out: Path, dataset_name: str, title: str, runs: Mapping[str, Sequence[dict[str, Any]]]
) -> tuple[str, Path]:
    """cold-items.md / .csv / .json (both tables) and cold-items.png (test Recall@20 of
    both rankings per model); returns (the Markdown, the PNG path)."""
    from cadmr.experiments.plots import bar_plot

    # no popularity row: it scores every never-seen item zero, so its order is arbitrary
    cold = summarize({k: [_without_pop(r) for r in rs] for k, rs in runs.items()})
    mixed = summarize(
        {k: [_without_pop(r) | {"test": r["test_mixed"]} for r in rs] for k, rs in runs.items()}
    )
    text = (
        f"{title}\n\n### Cold items ranked alone (test)\n\n{to_markdown(cold)}\n"
        f"### Every item ranked: the cold ones among the warm (test)\n\n{to_markdown(mixed)}"
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cold-items.md", text)
    atomic_write_text(
        out / "cold-items.csv",
        "# cold items ranked alone\n" + to_csv(cold) + "# every item\n" + to_csv(mixed),
    )
    payload = {
        "cold": cold,
        "mixed": mixed,
        "params": {k: [r["params"] for r in rs] for k, rs in runs.items()},
    }
    atomic_write_text(out / "cold-items.json", json.dumps(payload, indent=2))
    series = {
        name: ([r["recall@20"] for r in rows], [r["recall@20_std"] for r in rows])
        for name, rows in (("cold items alone", cold), ("every item", mixed))
    }
    png = bar_plot(
        [r["model"] for r in cold],
        series,
        "test Recall@20",
        f"{dataset_name} (cold-items)",
        out / "cold-items.png",
    )
    return text, png


def _without_pop(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "popularity"}
