"""Content k-NN: an item's score for a user is its feature similarity to the user's items.

References: the content-based baseline of the item cold-start literature, e.g. Volkovs,
Yu & Poutanen, "DropoutNet: Addressing Cold Start in Recommender Systems", NeurIPS 2017,
and Pazzani & Billsus, "Content-Based Recommendation Systems", The Adaptive Web, 2007.

score(u, i) = sum over the user's training items j of cos(f_i, f_j), where f is the item's
modalities, each centred on the catalogue mean (``center``) and scaled to unit length, then
concatenated and scaled to unit length again (every modality weighs the same). The sum
ranks like the cosine between f_i and the user's profile sum_j f_j. It needs no
interactions of item i, so it ranks items nobody has seen: the bar every learned model must
clear on a cold-item split (``cadmr experiment cold-items``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from cadmr.data.leakage import LeakageGuard
from cadmr.models.base import ClosedFormRecommender
from cadmr.models.layers import item_content, to_torch_sparse


@dataclass(frozen=True)
class ContentKNNParams:
    """Attributes:
    center: Subtract each modality's mean item vector before the cosine. Text encoders'
        vectors share a large common direction, which makes every pair look similar.
    """

    center: bool = True


class ContentKNN(ClosedFormRecommender):
    name = "content_knn"
    params_cls = ContentKNNParams
    needs_features = True
    scores_new_items = True
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {"center": (True, False)}

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        self.features = features

    def fit(self) -> ContentKNN:
        # (I, sum d_m)
        self.item_features = item_content(self.features, self.modalities, self.params.center)
        return self

    def item_vectors(self) -> torch.Tensor:
        return self.item_features

    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        profile = self.item_features[torch.as_tensor(np.asarray(items, dtype=np.int64))]
        return self.item_features @ profile.sum(dim=0)  # (n_items,)

    def score(self, users: np.ndarray) -> torch.Tensor:
        profiles = torch.sparse.mm(to_torch_sparse(self.train_matrix[users]), self.item_features)
        return profiles @ self.item_features.T  # (B, n_items)

    def state(self) -> dict[str, Any]:
        return {"item_features": self.item_features}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.item_features = state["item_features"]
