"""LATTICE: item-item latent structures mined from multimodal features.

References: Zhang, Zhu, Liu, Wu, Wang & Wang, "Mining Latent Structures for Multimedia
Recommendation", ACM MM 2021; MMRec's LATTICE (``enoche/MMRec``, ``src/models/lattice.py`` and
``src/configs/model/LATTICE.yaml``), whose defaults and grid are used here.

Per modality m, two kNN item graphs (k = ``knn_k``, every item among its own neighbours, edge
weight = cosine similarity):

* ``S_init^m``, from the raw features, built once in ``setup`` and normalised
  ``D^-1/2 S D^-1/2``; frozen.
* the learned graph, from the projected features ``W_m f_i + b_m``. As in the reference code,
  the learned graphs of all modalities are summed with the modality weights ``alpha`` (a
  softmax over learned logits) *before* being normalised, while the initial graphs are
  normalised per modality and then weighted. The item graph is then
  ``S = lambda * sum_m alpha_m S_init^m + (1 - lambda) * norm(sum_m alpha_m S_learned^m)``.

The learned part is rebuilt from the current projections on the first batch of every epoch;
on that batch the gradient flows through its edge weights into the projections (and through
``alpha`` into the modality logits), on the other batches of the epoch the graph is a
constant. Scoring rebuilds it from the current parameters (as MMRec's ``full_sort_predict``),
so the model state is its parameters only and a checkpoint reproduces its scores exactly.

Item ID embeddings are propagated ``n_layers`` times over ``S``; the result, L2-normalised
per row, is added to the LightGCN item embeddings (``n_ui_layers`` layers, mean over layers).
Loss: BPR on the final embeddings + ``reg_weight`` x 1/2 x their squared L2 norms per example.

Generalisation and deviations (documented choices):

* Any number of modalities: ``alpha`` is a softmax over one logit per modality (MMRec: two,
  image and text). With a single modality the weight is the constant 1 and no logit exists.
* Feature scales: kNN graphs use cosine similarity, which ignores row scale. The projection
  input is scaled to unit L2 rows per modality (``feature_norm="l2"``), so lfm2k's audio rows
  (norm ~1,500) and its text rows (norm 1) enter their projections on the same footing.
* The raw features are constant inputs; MMRec also fine-tunes them (``nn.Embedding`` with
  ``freeze=False``), which here would add I x sum(d_m) parameters for a second-order effect.
* The user-item graph is the reference code's ``D^-1 (A + I)`` (``ui_graph="rw_self"``,
  the default since issue 23's side-by-side: with LightGCN's symmetric ``D^-1/2 A D^-1/2``
  and no self loops, ``"sym"``, the LightGCN backbone the paper names, our LATTICE peaked
  after a few epochs and fell; docs/baselines.md).
* MMRec's grid searches the learning rate; here that is the ``learning_rate`` parameter
  (0 = ``train.learning_rate``), used by this model's optimizer. MMRec's learning-rate decay
  (x0.96 every 50 epochs) is not applied.
* The L2 term is divided by the actual batch length (MMRec: the configured batch size).
* Only the LightGCN backbone is implemented (MMRec's ``cf_model: lightgcn``, its default).
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
from cadmr.models.base import CachedEmbeddingScores
from cadmr.models.bpr import BPRMF
from cadmr.models.graphs import knn_graph, knn_neighbours, sym_normalize, sym_normalize_values
from cadmr.models.layers import (
    bpr_loss,
    checked_bipartite_adjacency,
    l2_per_example,
    learned_graph_mm,
    modality_features,
    modality_projections,
    propagate_mean,
    triplet_rows,
)
from cadmr.models.sampling import ShuffledBatches, TripletBatch


@dataclass(frozen=True)
class LATTICEParams:
    """Attributes:
    embedding_size: Dimension of the user and item ID embeddings.
    feat_embed_dim: Dimension of the projected features the learned graph is built from.
    n_ui_layers: LightGCN layers on the user-item graph (MMRec: ``len(weight_size)`` = 2).
    n_layers: Propagation layers of the item ID embeddings on the item-item graph.
    knn_k: Neighbours per item in every kNN graph.
    lambda_coeff: Weight of the initial (feature) graph; 1 - lambda_coeff goes to the learned
        one.
    reg_weight: Weight of 1/2 x the squared L2 norms of the batch's final embeddings.
    learning_rate: Adam learning rate of this model; 0 uses ``train.learning_rate`` (MMRec
        searches it, so it is a model parameter to be part of ``default_search``).
    feature_norm: "l2" scales each modality's feature rows to unit length before projection;
        "none" projects the raw features as MMRec does.
    ui_graph: The user-item graph: "rw_self", D^-1 (A + I) (MMRec's), or "sym", LightGCN's
        D^-1/2 A D^-1/2 without self loops (module docstring).
    """

    embedding_size: int = 64
    feat_embed_dim: int = 64
    n_ui_layers: int = 2
    n_layers: int = 1
    knn_k: int = 10
    lambda_coeff: float = 0.9
    reg_weight: float = 1e-4
    learning_rate: float = 0.0
    feature_norm: Literal["l2", "none"] = "l2"
    ui_graph: Literal["rw_self", "sym"] = "rw_self"

    def __post_init__(self) -> None:
        if self.ui_graph not in ("rw_self", "sym"):
            raise ValueError(f"ui_graph must be 'rw_self' or 'sym', got {self.ui_graph!r}")
        if self.embedding_size <= 0 or self.feat_embed_dim <= 0 or self.knn_k <= 0:
            raise ValueError("embedding_size, feat_embed_dim and knn_k must be > 0")
        if self.n_ui_layers < 0 or self.n_layers < 0:
            raise ValueError("n_ui_layers and n_layers must be >= 0")
        if not 0.0 <= self.lambda_coeff <= 1.0:
            raise ValueError(f"lambda_coeff must lie in [0, 1], got {self.lambda_coeff}")
        if self.reg_weight < 0 or self.learning_rate < 0:
            raise ValueError("reg_weight and learning_rate must be >= 0")
        if self.feature_norm not in ("l2", "none"):
            raise ValueError(f"feature_norm must be 'l2' or 'none', got {self.feature_norm!r}")


class LATTICE(CachedEmbeddingScores, BPRMF):
    """LightGCN plus a mixed initial/learned item-item graph (module docstring)."""

    name = "lattice"
    params_cls = LATTICEParams
    needs_features = True
    scores_new_items = True  # through the item's features
    # MMRec's grid (hyper_parameters: reg_weight, learning_rate): 4 x 4 = 16 points
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "reg_weight": (0.0, 1e-5, 1e-4, 1e-3),
        "learning_rate": (1e-4, 5e-4, 1e-3, 5e-3),
    }
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = {
        "reg_weight": (0.0, 1e-4, 1e-3)
    }
    # its validation curve peaks within ~10 epochs, dips, and climbs again past epoch ~30
    # (Scientific); patience alone stopped one seed in three inside the dip
    # (docs/experiments.md, Amazon Scientific)
    train_defaults: ClassVar[Mapping[str, Any]] = {"min_epochs": 50}

    def __init__(
        self, params: LATTICEParams, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)  # ID embeddings, Xavier
        self.projections = modality_projections(
            feature_dims, self.modalities, params.feat_embed_dim
        )
        # one logit per modality (MMRec initialises both to 0.5: equal weights)
        self.modal_logits = (
            nn.Parameter(torch.full((len(self.modalities),), 0.5))
            if len(self.modalities) > 1
            else None
        )
        self.features: dict[str, torch.Tensor] = {}
        self._init_graphs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, values)
        self._graph: torch.Tensor | None = None  # item graph of the epoch, detached
        self._rebuild = True

    @classmethod
    def saved_params(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Checkpoints saved before MMRec's graph was the default have no ``ui_graph``: they
        were trained over LightGCN's."""
        return {"ui_graph": "sym", **data}

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        self.adj = checked_bipartite_adjacency(
            self.train_matrix, guard, "LATTICE", self.params.ui_graph
        )
        self.features = modality_features(features, self.modalities, self.params.feature_norm)
        self._init_graphs = []
        for m in self.modalities:
            g = sym_normalize(knn_graph(features[m], self.params.knn_k, weighted=True)).tocoo()
            indices = torch.from_numpy(np.vstack([g.row, g.col]).astype(np.int64))  # (2, I k)
            self._init_graphs.append((indices, torch.from_numpy(g.data)))
        self._graph, self._rebuild = None, True

    def modality_weights(self) -> torch.Tensor:
        """(M,) softmax weights of the modalities, in sorted name order."""
        if self.modal_logits is None:
            return torch.ones(1, device=self.device)
        return torch.softmax(self.modal_logits, dim=0)

    def learned_graph(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised weighted sum of the modalities' learned kNN graphs.

        Args:
            weights: (M,) modality weights.

        Returns:
            (indices (2, M I k) int64, values (M I k,)) of a COO matrix (duplicates add up),
            values differentiable w.r.t. the projections and ``weights``.
        """
        k = self.params.knn_k
        rows, cols, values = [], [], []
        for w, m in zip(weights, self.modalities, strict=True):
            z = self.projections[m](self.features[m])  # (I, d')
            nbr, _ = knn_neighbours(z.detach(), k)  # (I, k), the choice is not differentiable
            kk = nbr.shape[1]
            r = torch.arange(self.n_items, device=nbr.device).repeat_interleave(kk)  # (I k,)
            c = nbr.reshape(-1)
            zn = F.normalize(z, dim=1)
            rows.append(r)
            cols.append(c)
            values.append(w * (zn[r] * zn[c]).sum(1))  # weighted cosine, (I k,)
        r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(values)
        return torch.stack([r, c]), sym_normalize_values(r, c, v, self.n_items)

    def item_graph(self) -> torch.Tensor:
        """The item-item graph ``S`` (module docstring) as a coalesced sparse COO (I, I)
        tensor; its values carry gradients to the projections and the modality logits."""
        lam = self.params.lambda_coeff
        weights = self.modality_weights()  # (M,)
        indices, values = [], []
        for w, (idx, val) in zip(weights, self._init_graphs, strict=True):
            indices.append(idx)
            values.append(lam * w * val)
        if lam < 1.0:
            idx, val = self.learned_graph(weights)
            indices.append(idx)
            values.append((1.0 - lam) * val)
        size = (self.n_items, self.n_items)
        graph = torch.sparse_coo_tensor(
            torch.cat(indices, 1), torch.cat(values), size, check_invariants=False
        )
        return graph.coalesce()  # duplicate (i, j) entries add up

    def propagate(self, item_graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user (U, d), item (I, d)) embeddings given the item graph."""
        ego = torch.cat([self.user_emb, self.item_emb])  # (U + I, d)
        out = propagate_mean(self.adj, ego, self.params.n_ui_layers)
        users, items = out[: self.n_users], out[self.n_users :]
        h = self.item_emb  # (I, d)
        for _ in range(self.params.n_layers):
            h = learned_graph_mm(item_graph, h)
        return users, items + F.normalize(h, dim=1)

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[TripletBatch]:
        self._rebuild = True  # the epoch's first loss rebuilds the learned graph
        return super().batches(rng, batch_size)

    def loss(self, batch: TripletBatch) -> torch.Tensor:
        if self._rebuild or self._graph is None:
            graph = self.item_graph()  # with gradient on this batch only
            self._graph = graph.detach()
            self._rebuild = False
        else:
            graph = self._graph
        users, items = self.propagate(graph)
        u, p, n = triplet_rows(users, items, batch)  # (B, d) each
        ranking = bpr_loss((u * p).sum(1), (u * n).sum(1))
        return ranking + self.params.reg_weight * 0.5 * l2_per_example(u, p, n)

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.item_graph())  # the graph of the current parameters

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self._graph, self._rebuild = None, True
