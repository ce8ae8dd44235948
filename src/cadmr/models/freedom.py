"""FREEDOM: a frozen item-item graph and a degree-pruned user-item graph.

References: Zhou & Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
Multimodal Recommendation", ACM MM 2023; MMRec's FREEDOM (``enoche/MMRec``,
``src/models/freedom.py`` and ``src/configs/model/FREEDOM.yaml``), whose defaults and grid are
used here.

* Item-item graph, built once in ``setup`` and frozen: per modality the binary kNN graph of
  the raw features (cosine, k = ``knn_k``, each item among its own neighbours), normalised
  ``D^-1/2 A D^-1/2``; the modalities' graphs are summed with fixed weights ``a_m``. Item ID
  embeddings are propagated ``n_mm_layers`` times over it and added to the LightGCN item
  embeddings.
* User-item graph, denoised by degree-sensitive edge pruning: every epoch keeps
  ``int((1 - dropout) x |E|)`` training edges, drawn without replacement with probability
  proportional to ``1 / sqrt(d_u d_i)`` (degrees of the full training graph), so edges between
  high-degree nodes are dropped more often; the kept graph is renormalised with its own
  degrees. LightGCN (``n_ui_layers``, mean over layers) runs on it during training and on the
  full graph for scoring. Edges are sampled with the ``rng`` of ``batches`` (exponential keys
  ``E_e / w_e``, the ``n`` smallest: the same distribution as MMRec's sequential
  ``torch.multinomial`` without replacement, in O(|E|)).
* Loss: BPR on the final embeddings + ``reg_weight`` x sum over modalities of BPR between
  the final user embeddings and the projected features ``W_m f_i`` of the batch's items
  (as MMRec: ``reg_weight`` weighs these modality losses; there is no L2 term). MMRec's
  projections have a bias, which cancels in the BPR difference and never gets a gradient;
  it is left out.

Generalisation and deviations (documented choices):

* Modality weights: MMRec's ``mm_image_weight`` (0.1) gives image 0.1 and text 0.9. Here
  the modality named ``primary_modality`` ("text") gets ``primary_weight`` (0.9 = 1 - MMRec's
  ``mm_image_weight``) and the other modalities share ``1 - primary_weight`` equally (lfm2k:
  text 0.9, audio 0.05, whisper 0.05). With one modality, or without the primary one, every
  modality gets 1 / M. With image + text this is exactly MMRec's graph.
* Feature scales: kNN graphs use cosine similarity, which ignores row scale. The projected
  features enter BPR scores directly, so each modality's rows are scaled to unit L2 norm
  before projection (``feature_norm="l2"``); raw lfm2k audio rows (norm ~1,500) would
  otherwise saturate the modality loss. ``"none"`` projects the raw features as MMRec does.
* The raw features are constant inputs (MMRec also fine-tunes them through the modality
  losses), and the projections map to ``embedding_size`` directly (MMRec's ``feat_embed_dim``
  must equal it for the modality BPR anyway).
* MMRec's ``lambda_coeff`` in FREEDOM.yaml is not used by its model and is not a parameter.
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
from cadmr.models.graphs import knn_graph, sym_normalize
from cadmr.models.layers import (
    bpr_loss,
    checked_bipartite_adjacency,
    distinct_rows,
    modality_features,
    modality_projections,
    normalized_bipartite_adjacency,
    propagate_mean,
    sparse_mm,
    take_rows,
    to_torch_sparse,
    triplet_rows,
)
from cadmr.models.sampling import ShuffledBatches, TripletBatch


@dataclass(frozen=True)
class FREEDOMParams:
    """Attributes:
    embedding_size: Dimension of the ID embeddings and of the projected features.
    n_ui_layers: LightGCN layers on the (pruned) user-item graph.
    n_mm_layers: Propagation layers of the item ID embeddings on the item-item graph.
    knn_k: Neighbours per item in every modality's kNN graph.
    dropout: Fraction of the training edges pruned each epoch (0 keeps the full graph).
    reg_weight: Weight of the modality BPR losses.
    primary_modality: Modality whose kNN graph gets ``primary_weight``.
    primary_weight: Weight of the primary modality's graph when there are other modalities;
        they share the rest equally (module docstring). 1 - MMRec's ``mm_image_weight``.
    feature_norm: "l2" scales each modality's feature rows to unit length before projection;
        "none" projects the raw features as MMRec does.
    """

    embedding_size: int = 64
    n_ui_layers: int = 2
    n_mm_layers: int = 1
    knn_k: int = 10
    dropout: float = 0.8
    reg_weight: float = 1e-4
    primary_modality: str = "text"
    primary_weight: float = 0.9
    feature_norm: Literal["l2", "none"] = "l2"

    def __post_init__(self) -> None:
        if self.embedding_size <= 0 or self.knn_k <= 0:
            raise ValueError("embedding_size and knn_k must be > 0")
        if self.n_ui_layers < 0 or self.n_mm_layers < 0:
            raise ValueError("n_ui_layers and n_mm_layers must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.reg_weight < 0:
            raise ValueError(f"reg_weight must be >= 0, got {self.reg_weight}")
        if not 0.0 <= self.primary_weight <= 1.0:
            raise ValueError(f"primary_weight must lie in [0, 1], got {self.primary_weight}")
        if self.feature_norm not in ("l2", "none"):
            raise ValueError(f"feature_norm must be 'l2' or 'none', got {self.feature_norm!r}")


def modality_graph_weights(
    modalities: list[str], primary: str, primary_weight: float
) -> dict[str, float]:
    """Fixed weight of each modality's kNN graph (module docstring); they sum to 1."""
    if len(modalities) == 1 or primary not in modalities:
        return {m: 1.0 / len(modalities) for m in modalities}
    rest = (1.0 - primary_weight) / (len(modalities) - 1)
    return {m: primary_weight if m == primary else rest for m in modalities}


class FREEDOM(CachedEmbeddingScores, BPRMF):
    """LightGCN on a degree-pruned user-item graph plus a frozen item-item graph."""

    name = "freedom"
    params_cls = FREEDOMParams
    needs_features = True
    scores_new_items = True  # through the item's features
    # MMRec's grid (hyper_parameters: dropout, reg_weight): 2 x 4 = 8 points
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "dropout": (0.8, 0.9),
        "reg_weight": (0.0, 1e-5, 1e-4, 1e-3),
    }
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = {
        "reg_weight": (0.0, 1e-4, 1e-3)
    }

    def __init__(
        self, params: FREEDOMParams, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)  # ID embeddings, Xavier
        # no bias: it cancels in the modality BPR difference (MMRec's gets no gradient)
        self.projections = modality_projections(
            feature_dims, self.modalities, params.embedding_size, bias=False
        )
        self.features: dict[str, torch.Tensor] = {}

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        p = self.params
        self.adj = checked_bipartite_adjacency(self.train_matrix, guard, "FREEDOM")
        self.train_adj = self.adj  # the pruned graph of the current epoch
        coo = self.train_matrix.tocoo()
        self.edge_users = coo.row.astype(np.int64)  # (E,)
        self.edge_items = coo.col.astype(np.int64)  # (E,)
        d_u = np.asarray(self.train_matrix.sum(axis=1)).ravel()  # (U,)
        d_i = np.asarray(self.train_matrix.sum(axis=0)).ravel()  # (I,)
        self.edge_weights = 1.0 / np.sqrt(d_u[self.edge_users] * d_i[self.edge_items])  # (E,)

        weights = modality_graph_weights(self.modalities, p.primary_modality, p.primary_weight)
        graph = sp.csr_matrix((self.n_items, self.n_items), dtype=np.float32)
        for m in self.modalities:
            graph = graph + weights[m] * sym_normalize(knn_graph(features[m], p.knn_k))
        self.features = modality_features(features, self.modalities, p.feature_norm)
        self.item_adj = to_torch_sparse(graph)  # (I, I) sparse, frozen

    def sample_edges(self, rng: np.random.Generator) -> np.ndarray:
        """Indices (into the training edges) kept by degree-sensitive pruning, sorted.

        ``int((1 - dropout) x E)`` edges (at least one), without replacement, each draw
        proportional to ``1 / sqrt(d_u d_i)``: the edges with the smallest keys
        ``Exp(1) / w_e`` (Efraimidis & Spirakis, 2006).
        """
        n_edges = len(self.edge_weights)
        n_keep = max(1, int(n_edges * (1.0 - self.params.dropout)))
        if n_keep >= n_edges:
            return np.arange(n_edges)
        keys = rng.exponential(size=n_edges) / self.edge_weights  # (E,)
        return np.sort(np.argpartition(keys, n_keep - 1)[:n_keep])

    def pruned_adjacency(self, rng: np.random.Generator) -> torch.Tensor:
        """The normalised (U + I, U + I) graph of the edges ``sample_edges`` keeps."""
        keep = self.sample_edges(rng)
        kept = sp.csr_matrix(
            (np.ones(len(keep), dtype=np.float32), (self.edge_users[keep], self.edge_items[keep])),
            shape=(self.n_users, self.n_items),
        )
        return to_torch_sparse(normalized_bipartite_adjacency(kept), self.device)

    def propagate(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user (U, d), item (I, d)) embeddings over user-item graph ``adj``."""
        h = self.item_emb  # (I, d)
        for _ in range(self.params.n_mm_layers):
            h = sparse_mm(self.item_adj, h)
        ego = torch.cat([self.user_emb, self.item_emb])  # (U + I, d)
        out = propagate_mean(adj, ego, self.params.n_ui_layers)
        return out[: self.n_users], out[self.n_users :] + h

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[TripletBatch]:
        # the pruned graph is drawn first, so an epoch's draws depend on the rng state only
        self.train_adj = self.pruned_adjacency(rng) if self.params.dropout > 0 else self.adj
        return super().batches(rng, batch_size)

    def loss(self, batch: TripletBatch) -> torch.Tensor:
        users, items = self.propagate(self.train_adj)
        u, p, n = triplet_rows(users, items, batch)  # (B, d) each
        loss = bpr_loss((u * p).sum(1), (u * n).sum(1))
        if self.params.reg_weight > 0:
            modal = 0.0
            distinct, (at_p, at_n) = distinct_rows(batch.pos, batch.neg)
            for m in self.modalities:
                z = self.projections[m](take_rows(self.features[m], distinct))  # each item once
                fp, fn = take_rows(z, at_p), take_rows(z, at_n)  # (B, d) each
                modal = modal + bpr_loss((u * fp).sum(1), (u * fn).sum(1))
            loss = loss + self.params.reg_weight * modal
        return loss

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.adj)  # the full graph: pruning is a training device
