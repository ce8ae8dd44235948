"""BPR-MF: matrix factorisation trained with Bayesian personalised ranking.

References: Rendle, Freudenthaler, Gantner & Schmidt-Thieme, "BPR: Bayesian Personalized
Ranking from Implicit Feedback", UAI 2009. Defaults as MMRec's BPR config (64-d embeddings,
Xavier initialisation, L2 on the batch's embeddings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch

from cadmr.data.leakage import LeakageGuard
from cadmr.models.base import TorchRecommender
from cadmr.models.layers import (
    bpr_loss,
    check_reg_form,
    embedding_penalty,
    id_embeddings,
    triplet_rows,
)
from cadmr.models.sampling import ShuffledBatches, TripletBatch, TripletSampler


@dataclass(frozen=True)
class BPRParams:
    """Attributes:
    embedding_size: Dimension of user and item factors.
    reg_weight: Weight of the L2 penalty on the batch's user/item factors.
    reg_form: "squared" (squared norms per example, the BPR paper's) or "norm" (MMRec's
        EmbLoss: unsquared Frobenius norms over the batch size; docs/baselines.md).
    """

    embedding_size: int = 64
    reg_weight: float = 1e-5
    reg_form: Literal["squared", "norm"] = "squared"

    def __post_init__(self) -> None:
        if self.embedding_size <= 0 or self.reg_weight < 0:
            raise ValueError("embedding_size must be > 0 and reg_weight >= 0")
        check_reg_form(self.reg_form)


class BPRMF(TorchRecommender):
    name = "bpr"
    params_cls = BPRParams
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {  # MMRec's BPR grid
        "reg_weight": (2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    }
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = {
        "reg_weight": (1e-1, 1e-3, 1e-5)
    }

    def __init__(
        self, params: BPRParams, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)
        self.user_emb, self.item_emb = id_embeddings(n_users, n_items, params.embedding_size)

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        self.sampler = TripletSampler(self.train_matrix, guard.cold_items)

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[TripletBatch]:
        return self.sampler.epoch(rng, batch_size)

    def loss(self, batch: TripletBatch) -> torch.Tensor:
        u, p, n = triplet_rows(self.user_emb, self.item_emb, batch)  # (B, d) each
        ranking = bpr_loss((u * p).sum(1), (u * n).sum(1))
        reg = embedding_penalty(self.params.reg_form, u, p, n)
        return ranking + self.params.reg_weight * reg

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.user_emb[self.tensor(users)] @ self.item_emb.T  # (B, n_items)

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.detach()
