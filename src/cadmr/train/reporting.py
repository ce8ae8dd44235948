"""What a run reports: metric lines for the transcript and Markdown tables of results."""

from __future__ import annotations

from typing import Any

from cadmr.config import to_dict
from cadmr.markdown import markdown_table

HEADLINE = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
# results tables add MRR@10 and catalogue coverage@20 (docs/protocol.md)
TABLE_METRICS = (*HEADLINE, "mrr@10", "coverage@20")


def format_metrics(metrics: dict[str, float], keys: tuple[str, ...] = HEADLINE) -> str:
    """``recall@10=0.1234 ...`` for the headline metrics present in ``metrics``."""
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def format_params(params: Any) -> str:
    """``name=value ...`` for every field of a model's parameters."""
    return " ".join(f"{k}={v}" for k, v in to_dict(params).items())


def results_markdown(rows: list[dict[str, Any]], keys: tuple[str, ...] = TABLE_METRICS) -> str:
    """A Markdown table of test metrics with the Recall@10 / NDCG@10 ratio (docs/protocol.md).

    A popularity reference row is added from the first result that carries one, so every
    table shows the floor any personalised model must clear.
    """
    head = ["model", "dataset", "seed", "best epoch", *[f"test {k}" for k in keys]]
    head += ["R@10/N@10", "valid recall@20", "s/epoch"]

    def row(name: str, r: dict[str, Any], epoch: str, valid: str, secs: str) -> list[str]:
        t = r["test"]
        ratio = t["recall@10"] / t["ndcg@10"] if t.get("ndcg@10") else float("nan")
        cells = [name, r["dataset"], str(r["seed"]), epoch]
        # "-" for a metric the results predate
        values = [f"{t[k]:.4f}" if k in t else "-" for k in keys]
        return cells + values + [f"{ratio:.2f}", valid, secs]

    body = [
        row(
            r["model"],
            r,
            str(r["best_epoch"]),
            f"{r['valid'].get('recall@20', float('nan')):.4f}",
            f"{r['seconds_per_epoch']:.2f}",
        )
        for r in rows
    ]
    ref = next((r for r in rows if "popularity" in r), None)
    if ref is not None and not any(r["model"] == "pop" for r in rows):
        pop = {"test": ref["popularity"], "dataset": ref["dataset"], "seed": ref["seed"]}
        body.append(row("pop (reference)", pop, "-", "-", "-"))
    return markdown_table(head, body)


def search_markdown(results: dict[str, Any]) -> str:
    """A Markdown table of a grid search: one row per point (the searched parameters only),
    its best validation metric, best epoch and seconds per epoch; the selected point is
    marked. The test split plays no part in it (it is evaluated once, at the selected point).
    """
    trials = results.get("search", [])
    if not trials:
        return ""
    metric = results["config"]["eval"]["valid_metric"]
    keys = list(results["config"]["search"])
    best = max(range(len(trials)), key=lambda i: trials[i]["valid_" + metric])
    head = [*keys, f"valid {metric}", "best epoch", "s/epoch", "selected"]
    body = [
        [str(t["params"][k]) for k in keys]
        + [f"{t['valid_' + metric]:.4f}", str(t["best_epoch"])]
        + [f"{t['seconds_per_epoch']:.2f}", "*" if i == best else ""]
        for i, t in enumerate(trials)
    ]
    return markdown_table(head, body)
