"""DRAGON: dyadic relations enhanced with homogeneous user-user and item-item graphs.

References: Zhou, Zhou, Zhang, Liu & Miao, "Enhancing Dyadic Relations with Homogeneous Graphs
for Multimodal Recommendation", ECAI 2023; MMRec's ``models/dragon.py`` and
``configs/model/DRAGON.yaml`` (defaults and grid), and the DualGNN user-graph preprocessing
script that the reference loads its user graph from.

Per modality m (any number of named modalities, processed in sorted name order):

1. Items enter as ``MLP_m(f_i^m)`` (Linear d_m -> 4d, leaky ReLU, Linear 4d -> d) and users as
   a free preference vector ``p_u^m`` (d); every row of the (U + I, d) stack is L2-normalised.
2. Heterogeneous graph: the stack is propagated over the symmetrically normalised user-item
   graph and the layers are *summed*, ``x + Ax + A^2 x`` for the reference's two layers.
3. Combination by concatenation: items ``[x_i^1 || ... || x_i^N]`` and users
   ``[w_u1 x_u^1 || ... || w_uN x_u^N]`` with a learned per-user modality weight ``w_u``
   (initialised to a softmax over modalities of a Xavier-normal draw, then a free parameter).
4. Homogeneous graphs, applied after the combination: items add ``S^L`` of their
   representation, with ``S`` a fixed weighted sum of per-modality cosine kNN graphs (binary,
   ``D^-1/2 A D^-1/2``); users add one step over the user-user graph: each user's top
   ``user_k`` users by number of co-interacted training items, weighted by a softmax over
   those counts.
5. Score ``<u, i>``; loss: BPR with log2 (as the reference), plus
   ``reg_weight * (sum_m mean(p_u^m ** 2) over the batch's users + mean(w ** 2))``.

Generalisations from the paper's image + text setting and deviations from MMRec's code:

* N modalities: step 3 concatenates N blocks (user/item vectors of N * d dimensions) and the
  item graph mixes N kNN graphs. The reference's 0.1 image weight becomes: a modality named
  "image" gets ``mm_image_weight`` and the others share ``1 - mm_image_weight`` equally;
  without an "image" modality every modality gets 1 / N; ``modality_weights`` (sorted name
  order) overrides both. A single modality uses its own graph. With one modality the
  reference leaves the user vector unweighted; here its single weight (initialised to 1)
  still scales it, a per-user scale that leaves each user's ranking unchanged.
* Feature scales: the kNN graphs use cosine similarity (scale-free per row). The MLP input
  is, by default (``feature_norm="l2"``), each modality's rows scaled to unit L2 norm, so a
  modality with large raw values (lfm2k's audio rows have norm ~1,500) does not saturate its
  MLP; ``"none"`` feeds the raw features as MMRec does.
* The user-user graph is built in ``setup`` from the training matrix (the reference reads a
  precomputed file) as a sparse (U, U) matrix with at most ``user_k`` entries per row, and is
  applied with one sparse product instead of a per-user gather loop. A user with fewer than
  ``user_k`` co-interacting users gets a softmax over the ones it has (the reference pads the
  list with random repeats, re-drawn every epoch); a user with none gets a zero row, as in the
  reference. Ties in the counts go to the lower user index.
* The reference's unused modules (the trainable copies of the raw features and their
  projections, the item-side modality weights, the extra MLPs and its modality-dropped edge
  lists, which its forward pass never uses) are left out; propagation uses the full graph as
  the reference's forward does.
* MMRec's grid also lists ``aggr_mode: ['add']`` (a single value: the symmetric-normalised sum
  implemented here) and searches ``learning_rate``; the latter is a model parameter here
  (``learning_rate``, 0 = ``train.learning_rate``) so the grid can hold it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.models.base import CachedEmbeddingScores, TorchRecommender
from cadmr.models.graphs import knn_graph, sym_normalize, topk_cooccurrence
from cadmr.models.layers import (
    bpr_loss,
    checked_bipartite_adjacency,
    feature_tensor,
    l2_per_example,
    propagate_mean,
    sparse_mm,
    take_rows,
    to_torch_sparse,
    triplet_rows,
)
from cadmr.models.sampling import ShuffledBatches, TripletBatch, TripletSampler

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class DRAGONParams:
    """Attributes:
    embedding_size: Dimension d of each modality's user/item representation (the combined
        vectors have N * d dimensions for N modalities).
    n_layers: Layers of the heterogeneous user-item propagation (summed with the input).
    n_mm_layers: Products with the item-item graph added to the item representation.
    knn_k: Neighbours per item in each modality's kNN graph.
    user_k: Neighbours per user in the user-user graph.
    mm_image_weight: Weight of an "image" modality's graph in the item-item graph when
        ``modality_weights`` is empty (the others share the rest equally).
    modality_weights: Explicit item-graph weights, one per modality in sorted name order
        (normalised to sum 1); empty uses the rule above.
    reg_weight: Weight of the squared user preferences of the batch and modality weights.
    learning_rate: Adam learning rate; 0 uses ``train.learning_rate`` (MMRec's grid searches
        the learning rate, so it is a parameter here).
    feature_norm: "l2" scales each modality's feature rows to unit length before its MLP;
        "none" feeds the raw features (MMRec).
    """

    embedding_size: int = 64
    n_layers: int = 2
    n_mm_layers: int = 1
    knn_k: int = 10
    user_k: int = 40
    mm_image_weight: float = 0.1
    modality_weights: tuple[float, ...] = ()
    reg_weight: float = 1e-3
    learning_rate: float = 0.0
    feature_norm: Literal["l2", "none"] = "l2"

    def __post_init__(self) -> None:
        if self.embedding_size <= 0 or self.knn_k <= 0 or self.user_k <= 0:
            raise ValueError("embedding_size, knn_k and user_k must be > 0")
        if self.n_layers < 0 or self.n_mm_layers < 0:
            raise ValueError("n_layers and n_mm_layers must be >= 0")
        if not 0.0 <= self.mm_image_weight <= 1.0:
            raise ValueError(f"mm_image_weight must be in [0, 1], got {self.mm_image_weight}")
        if any(w < 0 for w in self.modality_weights) or (
            self.modality_weights and sum(self.modality_weights) <= 0
        ):
            raise ValueError("modality_weights must be >= 0 with a positive sum")
        if self.reg_weight < 0 or self.learning_rate < 0:
            raise ValueError("reg_weight and learning_rate must be >= 0")
        if self.feature_norm not in ("l2", "none"):
            raise ValueError(f"feature_norm must be 'l2' or 'none', got {self.feature_norm!r}")


def item_graph_weights(
    modalities: Sequence[str], image_weight: float, explicit: Sequence[float] = ()
) -> np.ndarray:
    """Weights of the modalities' kNN graphs in the item-item graph, (N,) summing to 1.

    Args:
        modalities: Modality names in the model's (sorted) order.
        image_weight: Weight of a modality named "image" when there are others.
        explicit: One weight per modality (normalised), overriding the rule.

    Raises:
        ValueError: ``explicit`` does not have one weight per modality.
    """
    n = len(modalities)
    if explicit:
        if len(explicit) != n:
            raise ValueError(
                f"modality_weights has {len(explicit)} value(s) for {n} modalities {modalities}"
            )
        w = np.asarray(explicit, dtype=np.float64)
        return w / w.sum()
    if "image" in modalities and n > 1:
        w = np.full(n, (1.0 - image_weight) / (n - 1))
        w[list(modalities).index("image")] = image_weight
        return w
    return np.full(n, 1.0 / n)


def user_graph(train: sp.spmatrix, k: int) -> sp.csr_matrix:
    """DRAGON's user-user graph: row u holds u's (at most) ``k`` users with the most training
    items in common, weighted by a softmax over those counts. (U, U) float32 CSR, rows sum to
    1 (or 0 for a user who shares no item with anyone). No U x U matrix is formed."""
    idx, counts = topk_cooccurrence(train, k)  # (U, k) each, padded with -1 / 0
    valid = idx >= 0
    logits = np.where(valid, counts, -np.inf)
    top = np.where(valid.any(axis=1), logits.max(axis=1), 0.0)  # (U,)
    w = np.where(valid, np.exp(logits - top[:, None]), 0.0)
    totals = w.sum(axis=1, keepdims=True)
    w = np.divide(w, totals, out=np.zeros_like(w), where=totals > 0)
    n = idx.shape[0]
    rows = np.repeat(np.arange(n), idx.shape[1])[valid.ravel()]
    out = sp.csr_matrix(
        (w[valid].astype(np.float32), (rows, idx[valid])), shape=(n, n), dtype=np.float32
    )
    out.sort_indices()
    return out


def item_graph(features: Sequence[np.ndarray], k: int, weights: Sequence[float]) -> sp.csr_matrix:
    """Weighted sum of the modalities' binary cosine kNN graphs, each ``D^-1/2 A D^-1/2``
    normalised, (I, I) float32 CSR with at most ``k`` entries per row per modality."""
    total = None
    for f, w in zip(features, weights, strict=True):
        g = float(w) * sym_normalize(knn_graph(f, k))
        total = g if total is None else total + g
    out = sp.csr_matrix(total, dtype=np.float32)
    out.sort_indices()
    return out


class DRAGON(CachedEmbeddingScores, TorchRecommender):
    """DRAGON with N modalities (module docstring)."""

    name = "dragon"
    params_cls = DRAGONParams
    needs_features = True
    scores_new_items = True  # through the item's features
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "reg_weight": (0.1, 0.01, 0.001, 0.0001, 0.00001),
        "learning_rate": (0.1, 0.01, 0.001, 0.0001, 0.00001),
    }
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = {
        "reg_weight": (1e-4, 1e-3, 1e-2)
    }

    def __init__(
        self, params: DRAGONParams, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)
        d = params.embedding_size
        n_mod = len(self.modalities)
        self.graph_weights = item_graph_weights(
            self.modalities, params.mm_image_weight, params.modality_weights
        )
        self.preferences = nn.ParameterList(
            [nn.Parameter(torch.empty(n_users, d)) for _ in self.modalities]
        )
        for p in self.preferences:
            nn.init.xavier_normal_(p)
        self.mlps = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(feature_dims[m], 4 * d), nn.LeakyReLU(), nn.Linear(4 * d, d)
                )
                for m in self.modalities
            ]
        )
        # per-user modality weights: softmax of a Xavier-normal draw, then learned freely
        self.user_weights = nn.Parameter(
            torch.softmax(nn.init.xavier_normal_(torch.empty(n_users, n_mod)), dim=1)
        )
        self.features: list[torch.Tensor] = []

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        self.sampler = TripletSampler(self.train_matrix, guard.cold_items)
        self.adj = checked_bipartite_adjacency(self.train_matrix, guard, "DRAGON")
        # derived from the training matrix checked in Recommender.setup
        self.user_adj = to_torch_sparse(user_graph(self.train_matrix, self.params.user_k))
        raw = [features[m] for m in self.modalities]  # (I, d_m) each, checked by the Dataset
        self.item_adj = to_torch_sparse(item_graph(raw, self.params.knn_k, self.graph_weights))
        self.features = [feature_tensor(f, self.params.feature_norm) for f in raw]

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (users (U, N d), items (I, N d)) after both graphs."""
        n_users, n_layers = self.n_users, self.params.n_layers
        users, items = [], []
        for j, (pref, mlp, f) in enumerate(
            zip(self.preferences, self.mlps, self.features, strict=True)
        ):
            x = F.normalize(torch.cat([pref, mlp(f)]), dim=1)  # (U + I, d)
            # the reference sums the layers: the mean times (L + 1)
            x = propagate_mean(self.adj, x, n_layers) * (n_layers + 1)  # (U + I, d)
            users.append(self.user_weights[:, j : j + 1] * x[:n_users])  # (U, d)
            items.append(x[n_users:])  # (I, d)
        u = torch.cat(users, dim=1)  # (U, N d)
        i = torch.cat(items, dim=1)  # (I, N d)
        h = i
        for _ in range(self.params.n_mm_layers):
            h = sparse_mm(self.item_adj, h)  # (I, N d)
        return u + sparse_mm(self.user_adj, u), i + h

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[TripletBatch]:
        return self.sampler.epoch(rng, batch_size)

    def loss(self, batch: TripletBatch) -> torch.Tensor:
        users, items = self.representations()
        u, p, n = triplet_rows(users, items, batch)  # (B, N d)
        ranking = bpr_loss((u * p).sum(1), (u * n).sum(1)) / _LN2  # -mean log2 sigmoid
        d = self.params.embedding_size
        # mean of the squared entries = per-example sum / d
        reg = sum(l2_per_example(take_rows(pref, batch.users)) for pref in self.preferences) / d
        reg = reg + self.user_weights.pow(2).mean()
        return ranking + self.params.reg_weight * reg

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.representations()
