"""Most-popular baseline: every user gets the items with the most training interactions.

References: the non-personalised reference point of every top-N study, e.g. Cremonesi,
Koren & Turrin, "Performance of recommender algorithms on top-N recommendation tasks",
RecSys 2010.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cadmr.models.base import ClosedFormRecommender


@dataclass(frozen=True)
class PopularityParams:
    """Popularity has no hyper-parameters."""


class Popularity(ClosedFormRecommender):
    name = "pop"
    params_cls = PopularityParams
    personalized = False

    def fit(self) -> Popularity:
        counts = np.asarray(self.train_matrix.sum(axis=0)).ravel()
        self.counts = torch.from_numpy(counts.astype(np.float32))  # (n_items,)
        return self

    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        return self.counts.clone()  # the same ranking for everyone

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.counts.expand(len(users), -1).clone()  # (B, n_items)

    def state(self) -> dict[str, Any]:
        return {"counts": self.counts}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.counts = state["counts"]
