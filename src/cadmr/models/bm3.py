"""BM3: bootstrapped multimodal latent representations, trained without negatives.

References: Zhou, Zhou, Zhang, Liu, Zhang, Zhang & Miao, "Bootstrap Latent Representations for
Multi-modal Recommendation", WWW 2023 (arXiv 2207.05969), and its reference implementation in
MMRec (``src/models/bm3.py``, ``src/configs/model/BM3.yaml``).

Method. LightGCN (layer mean, no self loops) propagates user and item ID embeddings over the
user-item graph; the item side adds its ego ID embedding as a residual, h_i = mean_l(A^l E)_i
+ e_i. Each modality m has a linear projection of its item features, z_im = W_m f_im + b_m.
A shared linear predictor p(.) produces the online views; the target views are the detached
embeddings with dropout (the paper's latent-embedding dropout, no momentum encoder). For a
batch of observed (u, i) pairs, with cos_loss(a, b) = 1 - mean cos(a, b):

    L = cos_loss(p(h_u), t(h_i)) + cos_loss(p(h_i), t(h_u))                   graph views
      + cl_weight * sum_m [cos_loss(p(z_im), t(h_i)) + cos_loss(p(z_im), t(z_im))]
      + reg_weight * (||H_U||_F + ||H_I||_F) / n_items

where t(x) = dropout(stop_gradient(x)). Scores are p(h_u) . p(h_i) (as MMRec ranks).

Choices and deviations (all documented in the report of issue 4):

* N modalities: the paper has image + text; the modality terms are summed over however many
  named modalities the data has (MMRec sums its two), so 1, 2 or 3 modalities all run. With
  more than two, the sum is scaled by 2 / M (``modality_weight="capped"``), so the feature
  terms never weigh more against the graph terms than MMRec's two do: summed plainly
  (``"sum"``), lfm2k's three modalities held BM3 on a validation plateau (issue 23; 3 seeds,
  patience 20: validation R@20 0.2612 summed, 0.3019 capped, every seed higher).
* Feature scale: ``feature_norm="l2"`` (default) scales each modality's feature rows to unit
  length before the projection, so a modality with huge raw norms (lfm2k audio, ~1,500) does
  not dominate the projection's initial outputs and Adam steps; "none" uses raw features as
  MMRec does.
* Features are fixed inputs; MMRec wraps them in a trainable ``nn.Embedding`` (fine-tuning the
  raw features), which the paper does not describe and which would add an I x sum(d_m)
  parameter. Only the projections learn.
* Only the batch's rows are projected, predicted and dropped out (MMRec computes every item's
  projection each step); the loss is the same in distribution.
* The regulariser is MMRec's EmbLoss: the (unsquared) Frobenius norms of all propagated user
  and item embeddings divided by the number of items, which is what its reg_weight grid was
  tuned for (not the squared per-example L2 of the BPR models).
* Defaults: MMRec's config (64-d, cl_weight 2.0) and, for its grid parameters, the first value
  of each list (n_layers 1, dropout 0.3, reg_weight 0.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.models.base import CachedEmbeddingScores, TorchRecommender
from cadmr.models.layers import (
    checked_bipartite_adjacency,
    distinct_rows,
    id_embeddings,
    modality_features,
    modality_projections,
    propagate_mean,
    take_rows,
)
from cadmr.models.sampling import PairBatch, PairSampler, ShuffledBatches


def cosine_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine similarity of matching rows, (B, d) x (B, d) -> scalar. The target
    is detached: the bootstrap loss never sends gradient into its target view."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


@dataclass(frozen=True)
class BM3Params:
    """Attributes:
    embedding_size: Dimension of the ID embeddings, projections and predictor.
    n_layers: LightGCN propagation layers.
    dropout: Dropout rate that makes the target views from the detached embeddings.
    reg_weight: Weight of the embedding-norm regulariser (MMRec's EmbLoss).
    cl_weight: Weight of the multimodal (feature-view) loss terms.
    feature_norm: "l2" scales each modality's feature rows to unit length; "none" keeps
        the raw features (MMRec).
    modality_weight: "capped" scales the sum of the feature terms by min(1, 2 / M) for M
        modalities (MMRec's weight for its two at most); "sum" sums them plainly.
    """

    embedding_size: int = 64
    n_layers: int = 1
    dropout: float = 0.3
    reg_weight: float = 0.1
    cl_weight: float = 2.0
    feature_norm: Literal["l2", "none"] = "l2"
    modality_weight: Literal["capped", "sum"] = "capped"

    def __post_init__(self) -> None:
        if self.modality_weight not in ("capped", "sum"):
            raise ValueError(
                f"modality_weight must be 'capped' or 'sum', got {self.modality_weight!r}"
            )
        if self.embedding_size <= 0 or self.n_layers < 0:
            raise ValueError("embedding_size must be > 0 and n_layers >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.reg_weight < 0 or self.cl_weight < 0:
            raise ValueError("reg_weight and cl_weight must be >= 0")
        if self.feature_norm not in ("l2", "none"):
            raise ValueError(f"feature_norm must be 'l2' or 'none', got {self.feature_norm!r}")


class BM3(CachedEmbeddingScores, TorchRecommender):
    """LightGCN + per-modality projections, trained by BM3's bootstrap loss (module docstring)."""

    name = "bm3"
    params_cls = BM3Params
    needs_features = True
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "n_layers": (1, 2),
        "reg_weight": (0.1, 0.01),
        "dropout": (0.3, 0.5),
    }

    def __init__(
        self, params: BM3Params, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)
        d = params.embedding_size
        self.user_emb, self.item_emb = id_embeddings(n_users, n_items, d)
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.projections = modality_projections(
            feature_dims, self.modalities, d, init=nn.init.xavier_normal_
        )
        self.features: dict[str, torch.Tensor] = {}

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        self.adj = checked_bipartite_adjacency(self.train_matrix, guard, "BM3")
        self.sampler = PairSampler(self.train_matrix)
        self.features = modality_features(features, self.modalities, self.params.feature_norm)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Online encoder: (users (U, d), items (I, d)); items carry their ID residual."""
        ego = torch.cat([self.user_emb, self.item_emb])  # (U + I, d)
        out = propagate_mean(self.adj, ego, self.params.n_layers)
        return out[: self.n_users], out[self.n_users :] + self.item_emb

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Target view: dropout of the detached embedding (always on, as in training)."""
        return F.dropout(x.detach(), p=self.params.dropout, training=True)

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[PairBatch]:
        return self.sampler.epoch(rng, batch_size)

    def loss(self, batch: PairBatch) -> torch.Tensor:
        p = self.params
        users_all, items_all = self.propagate()  # (U, d), (I, d)
        h_u, h_i = take_rows(users_all, batch.users), take_rows(items_all, batch.items)  # (B, d)
        t_u, t_i = self.target(h_u), self.target(h_i)  # (B, d), no gradient
        graph = cosine_loss(self.predictor(h_u), t_i) + cosine_loss(self.predictor(h_i), t_u)
        feature = h_u.new_zeros(())
        distinct, (at,) = distinct_rows(batch.items)
        for m in self.modalities:
            z = self.projections[m](take_rows(self.features[m], distinct))  # each item once
            z = take_rows(z, at)  # (B, d)
            z_online = self.predictor(z)
            feature = feature + cosine_loss(z_online, t_i) + cosine_loss(z_online, self.target(z))
        if p.modality_weight == "capped":
            feature = feature * min(1.0, 2.0 / len(self.modalities))
        reg = (users_all.norm() + items_all.norm()) / self.n_items
        return graph + p.cl_weight * feature + p.reg_weight * reg

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items = self.propagate()
        return self.predictor(users), self.predictor(items)
