"""LightGCN: linear propagation of ID embeddings over the user-item graph.

References: He, Deng, Wang, Li, Zhang & Wang, "LightGCN: Simplifying and Powering Graph
Convolution Network for Recommendation", SIGIR 2020. Defaults as MMRec's LightGCN config
(64-d, Xavier initialisation, layer combination by mean, BPR + L2 on the ego embeddings of the
batch, grid n_layers in 1..4 and reg_weight in 1e-2..1e-6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch

from cadmr.data.leakage import LeakageGuard
from cadmr.models.base import CachedEmbeddingScores
from cadmr.models.bpr import BPRMF
from cadmr.models.layers import (
    bpr_loss,
    check_reg_form,
    checked_bipartite_adjacency,
    distinct_rows,
    embedding_penalty,
    propagate_mean,
    propagate_mean_rows,
    take_rows,
    triplet_rows,
)
from cadmr.models.sampling import TripletBatch


@dataclass(frozen=True)
class LightGCNParams:
    """Attributes:
    embedding_size: Dimension of the ego (layer-0) embeddings.
    n_layers: Number of propagation layers.
    reg_weight: Weight of the L2 penalty on the batch's ego embeddings.
    reg_form: "squared" (squared norms per example, the LightGCN paper's) or "norm"
        (MMRec's EmbLoss; docs/baselines.md).
    """

    embedding_size: int = 64
    n_layers: int = 2
    reg_weight: float = 1e-4
    reg_form: Literal["squared", "norm"] = "squared"

    def __post_init__(self) -> None:
        if self.embedding_size <= 0 or self.n_layers < 0 or self.reg_weight < 0:
            raise ValueError("embedding_size must be > 0, n_layers >= 0 and reg_weight >= 0")
        check_reg_form(self.reg_form)


class LightGCN(CachedEmbeddingScores, BPRMF):
    """BPR-MF's ID embeddings and sampler, scored after graph propagation."""

    name = "lightgcn"
    params_cls = LightGCNParams
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {  # MMRec's LightGCN grid
        "n_layers": (1, 2, 3, 4),
        "reg_weight": (1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
    }
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = {
        "reg_weight": (1e-2, 1e-4, 1e-6)
    }

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        self.adj = checked_bipartite_adjacency(self.train_matrix, guard, "LightGCN")

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        ego = torch.cat([self.user_emb, self.item_emb])  # (U + I, d)
        out = propagate_mean(self.adj, ego, self.params.n_layers)
        return out[: self.n_users], out[self.n_users :]

    def loss(self, batch: TripletBatch) -> torch.Tensor:
        # the propagated embeddings at the batch's nodes only (items after the users)
        rows, at = distinct_rows(batch.users, batch.pos + self.n_users, batch.neg + self.n_users)
        ego = torch.cat([self.user_emb, self.item_emb])  # (U + I, d)
        out = propagate_mean_rows(self.adj, ego, self.params.n_layers, rows)
        u, p, n = (take_rows(out, i) for i in at)
        ranking = bpr_loss((u * p).sum(1), (u * n).sum(1))
        ego_rows = triplet_rows(self.user_emb, self.item_emb, batch)  # the penalty's
        reg = embedding_penalty(self.params.reg_form, *ego_rows)
        return ranking + self.params.reg_weight * reg

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate()
