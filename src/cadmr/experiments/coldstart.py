"""Fig. 2 of the paper: quality as each user's training data shrinks (valid/test unchanged)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cadmr.data.dataset import Dataset
from cadmr.data.split import subsample_per_user
from cadmr.experiments.compare import MG, compare

FRACTIONS = (0.8, 0.6, 0.4, 0.2)
# CADMR and the four best baselines on validation Recall@20 in the compare runs of
# docs/experiments.md (EASE, LATTICE, DRAGON on ml100k; DRAGON, LightGCN, LATTICE on lfm2k)
MODELS = ("cadmr", "ease", "lightgcn", "lattice", "dragon")


def reduced(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``dataset`` with ``fraction`` of each user's training interactions (seeded), named
    ``<name>-train<percent>``; validation and test are unchanged."""
    train = subsample_per_user(dataset.train, fraction, np.random.default_rng(seed))
    return dataset.with_train(train, name=f"{dataset.name}-train{round(fraction * 100)}")


def cold_start(
    dataset: Dataset,
    spec: str,
    models: Sequence[str] = MODELS,
    fractions: Sequence[float] = FRACTIONS,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    grid: str = "published",
    sets: Sequence[str] = (),
    root: str | Path = "runs/experiments/cache",
    progress: bool = True,
    subsample_seed: int = 0,
    retune: bool = False,
) -> dict[float, dict[str, list[dict[str, Any]]]]:
    """fraction -> label -> runs over ``seeds`` on each reduced training set.

    By default each model trains at its configuration selected on the FULL training data
    (``compare``'s first-seed search, read from the cache when ``compare`` ran it): the same
    model with less data, at one run per point. With ``retune``, the first seed searches
    the grid again on each reduced set (its validation split is unchanged) and the other
    seeds train that selection: what a practitioner with only that much data would do.
    """
    bases = list(dict.fromkeys(m.replace(MG, "", 1) for m in models))
    total = len(fractions) * len(models) * len(seeds) + (0 if retune else len(bases))
    with tqdm(
        total=total, desc=f"cold-start on {dataset.name}", unit="run", disable=not progress
    ) as bar:
        kw: dict[str, Any] = {"sets": sets, "root": root, "bar": bar}
        if retune:
            kw.update(grid=grid, select="first")
        else:  # each model's selection on the full training data
            full = compare(dataset, spec, bases, seeds[:1], grid=grid, **kw)
            kw["fixed"] = {label: runs[0]["params"] for label, runs in full.items()}
        return {
            f: compare(reduced(dataset, f, subsample_seed), spec, models, seeds, **kw)
            for f in fractions
        }
