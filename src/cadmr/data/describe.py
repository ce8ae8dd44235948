"""Human-readable summary of a dataset, for ``cadmr data describe``."""

from __future__ import annotations

from collections.abc import Mapping

from cadmr.data.dataset import SPLITS, Dataset


def describe_text(dataset: Dataset) -> str:
    """A multi-line, aligned report of :meth:`Dataset.describe`.

    Counts are right-aligned in one column; text values (modalities, format, path) start at
    the same column. Facts the dataset's ``info`` does not record (e.g. for synthetic data)
    are shown as ``-``.

    Args:
        dataset: The dataset to summarise.

    Returns:
        The report, one fact per line, without a trailing newline.
    """
    d = dataset.describe()
    info = dataset.info
    per_split = d["interactions"]
    assert isinstance(per_split, Mapping)
    modalities = dataset.modalities
    mods = ", ".join(f"{m} ({dim}-d)" for m, dim in modalities.items()) or "none"

    def count(value: object) -> str:
        return f"{value:,}" if isinstance(value, int) else "-"

    sparsity = d["sparsity"]
    assert isinstance(sparsity, float)
    counts: list[tuple[str, str]] = [
        ("users", count(d["users"])),
        ("  with training data", count(d["users_with_train"])),
        ("items", count(d["items"])),
        ("  without training data", count(d["items_without_train"])),
        *((f"interactions {s}", count(per_split[s])) for s in SPLITS),
        ("interactions total", count(d["interactions_total"])),
        ("sparsity", f"{100.0 * sparsity:.4f}%"),
        ("duplicates collapsed", count(info.get("duplicates_collapsed"))),
        ("cold users dropped", count(info.get("cold_users_dropped"))),
        ("cold interactions dropped", count(info.get("cold_interactions_dropped"))),
        *((f"new (cold) items, {s}", count(len(v))) for s, v in dataset.cold_items.items()),
    ]
    texts = [
        ("modalities", mods),
        ("format", str(info.get("format", "-"))),
        ("path", str(info.get("path", "-"))),
    ]

    label_w = max(len(k) for k, _ in counts + texts)
    num_w = max(len(v) for _, v in counts)
    lines = [f"Dataset {dataset.name}"]
    lines += [f"  {k.ljust(label_w)}  {v.rjust(num_w)}" for k, v in counts]
    lines += [f"  {k.ljust(label_w)}  {v}" for k, v in texts]
    return "\n".join(lines)
