"""Fig. 2 of the paper: quality as each user's training data shrinks (valid/test unchanged)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cadmr.data.dataset import Dataset
from cadmr.data.split import subsample_per_user
from cadmr.experiments.compare import compare

FRACTIONS = (0.8, 0.6, 0.4, 0.2)
MODELS = ("cadmr", "ease", "lightgcn", "freedom", "dragon")


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
    tune: bool = True,
    sets: Sequence[str] = (),
    root: str | Path = "runs/experiments/cache",
    progress: bool = True,
    subsample_seed: int = 0,
) -> dict[float, dict[str, list[dict[str, Any]]]]:
    """``compare`` on each reduced training set: fraction -> label -> runs (cached like
    every experiment run, keyed by the reduced data's fingerprint)."""
    return {
        f: compare(
            reduced(dataset, f, subsample_seed), spec, models, seeds, tune, sets, root, progress
        )
        for f in fractions
    }
