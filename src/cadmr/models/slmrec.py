"""SLMRec: per-modality graph convolution with self-supervised auxiliary tasks.

References: Tao, Liu, Xia, Wang, Yang, Hua & Chua, "Self-supervised Learning for Multimedia
Recommendation", IEEE Transactions on Multimedia 2022, and the implementations in MMRec
(``src/models/slmrec.py``, ``src/configs/model/SLMRec.yaml``) and the authors' repository.

Method. There is one graph branch for the item IDs and one per modality m. Every branch
propagates over the same user-item graph (LightGCN, layer mean, symmetric normalisation
without self loops) starting from the shared user ID embeddings and its own item input: the
item ID embeddings, or the modality's features through a dense layer, x_im = W_m f_im + b_m.
The branches' outputs are fused (concatenated, or averaged) and mapped to the final user and
item embeddings by two linear layers (one for users, one for items). The main loss is InfoNCE
between the batch's users and their positive items, cosine similarities over ``temp``, the
other items of the batch being the negatives. The self-supervised loss (weight ``ssl_alpha``,
InfoNCE with ``ssl_temp``) is one of:

* ``FAC`` (fine and coarse, the default): the ID branch's item embedding is matched with each
  modality's in a chain of spaces, finest first: level 1 pairs head(ID) with head(m_1); level
  k pairs chain_k(level k-1's ID side) with head(m_k). The last level has d/2 dimensions when
  there are two modalities or more (MMRec's text level), the others d. As in both reference
  codes, FAC's logits are unnormalised dot products over ``ssl_temp``.
* ``FD`` (feature dropout): two views of the whole propagation with independent dropout
  after every layer; InfoNCE between the two views of the batch's users and of its items.
* ``FM`` (feature masking): two views, each with the item input of one branch (ID or a
  modality, two different ones drawn at random) set to zero; same InfoNCE.
* ``FD+FM``: feature masking with the dropout of FD as well.

Scores are the final user . item embeddings (MMRec's sigmoid on top changes no ranking).

Choices and deviations (also in the report of issue 4):

* N modalities: the code assumes visual + text (or + audio); here any number of named
  modalities forms N + 1 branches (ID first, then modalities in sorted name order, which is
  also FAC's order from finest to coarsest). The branches run as one (U + I, (N + 1) d)
  propagation, identical to N + 1 separate ones since propagation is linear per column.
* Feature scale: each modality's feature rows are L2-normalised before the dense layer, as
  the reference codes do (``feature_norm="none"`` keeps raw features), so lfm2k's audio rows
  (norm ~1,500) enter on the same scale as text.
* ``reg``: MMRec grids ``reg`` but never reads it; both reference codes regularise by Adam
  weight decay 1e-4 on every parameter. Here ``reg`` is that weight decay, written into the
  loss as reg / 2 * (sum of all squared parameters), whose gradient reg * theta is exactly
  what Adam's (coupled) ``weight_decay=reg`` adds; the default 1e-4 reproduces the reference
  setting without a training-config override, and the ``reg`` grid becomes a weight-decay
  grid. (Leave ``train.weight_decay`` at 0, or the two add up.)
* FAC with two modalities uses one chain layer between the levels where MMRec has two (its
  audio level is commented out but its layer kept); an unused layer is not built here.
* Defaults: MMRec's config (64-d, 3 layers, temp 0.2, FAC, dropout 0.3, concat fusion) and,
  for grid parameters, the authors' own configuration (ssl_alpha 0.1, ssl_temp 0.2,
  reg 1e-4). MMRec's grid also searches the learning rate: ``learning_rate`` is a model
  parameter for that (0 = ``train.learning_rate``; the trainer's ``make_optimizer``).
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
    id_embeddings,
    modality_features,
    modality_projections,
    propagate_mean,
    symmetric_spmm,
    take_rows,
)
from cadmr.models.sampling import PairBatch, PairSampler, ShuffledBatches

SSL_TASKS = ("FAC", "FD", "FM", "FD+FM")


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE: row k of ``a`` (B, d) must pick row k of ``b`` (B, d) among all rows
    of ``b``; logits are the dot products over ``temperature`` (normalise first for cosine)."""
    logits = a @ b.T / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def propagate_dropout(
    adj: torch.Tensor, ego: torch.Tensor, n_layers: int, p: float
) -> torch.Tensor:
    """``propagate_mean`` with dropout after every propagation step (SLMRec's FD views):
    mean of E, d(AE), d(A d(AE)), ... (N, d) -> (N, d). ``p = 0`` is ``propagate_mean``."""
    if p == 0.0:
        return propagate_mean(adj, ego, n_layers)
    out = ego
    layer = ego
    for _ in range(n_layers):
        layer = F.dropout(symmetric_spmm(adj, layer), p=p, training=True)
        out = out + layer
    return out / (n_layers + 1)


@dataclass(frozen=True)
class SLMRecParams:
    """Attributes:
    embedding_size: Dimension of every branch and of the final embeddings.
    n_layers: Propagation layers of every branch.
    temp: Temperature of the main (user-item) InfoNCE loss.
    ssl_task: Self-supervised task: "FAC", "FD", "FM" or "FD+FM" (module docstring).
    ssl_alpha: Weight of the self-supervised loss.
    ssl_temp: Temperature of the self-supervised InfoNCE losses.
    dropout_rate: Dropout of the FD and FD+FM views.
    reg: Weight decay of every parameter, as the loss term reg / 2 * sum of squares.
    fusion: "concat" (the default) or "mean" of the branches before the output layers.
    learning_rate: Adam learning rate of this model; 0 uses ``train.learning_rate``.
    feature_norm: "l2" scales each modality's feature rows to unit length (the reference
        codes); "none" keeps the raw features.
    """

    embedding_size: int = 64
    n_layers: int = 3
    temp: float = 0.2
    ssl_task: Literal["FAC", "FD", "FM", "FD+FM"] = "FAC"
    ssl_alpha: float = 0.1
    ssl_temp: float = 0.2
    dropout_rate: float = 0.3
    reg: float = 1e-4
    fusion: Literal["concat", "mean"] = "concat"
    learning_rate: float = 0.0
    feature_norm: Literal["l2", "none"] = "l2"

    def __post_init__(self) -> None:
        if self.embedding_size < 2 or self.n_layers < 0:
            raise ValueError("embedding_size must be >= 2 and n_layers >= 0")
        if self.temp <= 0 or self.ssl_temp <= 0:
            raise ValueError("temp and ssl_temp must be > 0")
        if self.ssl_alpha < 0 or self.reg < 0 or self.learning_rate < 0:
            raise ValueError("ssl_alpha, reg and learning_rate must be >= 0")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.ssl_task not in SSL_TASKS:
            raise ValueError(f"ssl_task must be one of {SSL_TASKS}, got {self.ssl_task!r}")
        if self.fusion not in ("concat", "mean"):
            raise ValueError(f"fusion must be 'concat' or 'mean', got {self.fusion!r}")
        if self.feature_norm not in ("l2", "none"):
            raise ValueError(f"feature_norm must be 'l2' or 'none', got {self.feature_norm!r}")


class SLMRec(CachedEmbeddingScores, TorchRecommender):
    """ID + per-modality graph branches, fused, with SLMRec's SSL tasks (module docstring)."""

    name = "slmrec"
    params_cls = SLMRecParams
    needs_features = True
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {  # MMRec's: 320 points
        "learning_rate": (1e-4, 1e-3, 1e-2, 1e-1),
        "ssl_temp": (0.1, 0.2, 0.5, 1.0),
        "ssl_alpha": (0.01, 0.05, 0.1, 0.5, 1.0),
        "reg": (1e-4, 1e-3, 1e-2, 1e-1),
    }
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = {"learning_rate": (1e-4, 1e-3)}

    def __init__(
        self, params: SLMRecParams, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)
        d = params.embedding_size
        n_branches = len(self.modalities) + 1
        self.user_emb, self.item_emb = id_embeddings(n_users, n_items, d)
        self.dense = modality_projections(feature_dims, self.modalities, d)
        fused = d * n_branches if params.fusion == "concat" else d
        self.user_out = nn.Linear(fused, d)
        self.item_out = nn.Linear(fused, d)
        for layer in (*self.dense.values(), self.user_out, self.item_out):
            nn.init.xavier_uniform_(layer.weight)
        if params.ssl_task == "FAC":
            n = len(self.modalities)
            dims = [d] * n
            if n >= 2:
                dims[-1] = d // 2  # the coarsest space
            self.fac_id = nn.Linear(d, dims[0])
            self.fac_chain = nn.ModuleList(nn.Linear(dims[k - 1], dims[k]) for k in range(1, n))
            self.fac_modality = nn.ModuleDict(
                {m: nn.Linear(d, dims[k]) for k, m in enumerate(self.modalities)}
            )
            for layer in (self.fac_id, *self.fac_chain, *self.fac_modality.values()):
                nn.init.xavier_uniform_(layer.weight)
        self.features: dict[str, torch.Tensor] = {}

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        self.adj = checked_bipartite_adjacency(self.train_matrix, guard, "SLMRec")
        self.sampler = PairSampler(self.train_matrix)
        self.features = modality_features(features, self.modalities, self.params.feature_norm)

    # ---- encoder ------------------------------------------------------------------------

    def item_inputs(self, masked: int | None = None) -> list[torch.Tensor]:
        """Each branch's item input, ID first: N + 1 tensors (I, d); branch ``masked`` is
        zero (feature masking)."""
        inputs = [self.item_emb] + [self.dense[m](self.features[m]) for m in self.modalities]
        if masked is not None:
            inputs[masked] = torch.zeros_like(inputs[masked])
        return inputs

    def branches(self, masked: int | None = None, dropout: float = 0.0) -> torch.Tensor:
        """All branches propagated at once: (U + I, (N + 1) d), branch b in columns
        b d .. (b + 1) d - 1, every user row holding the same ego user embedding per branch."""
        inputs = self.item_inputs(masked)
        users = self.user_emb.repeat(1, len(inputs))  # (U, (N + 1) d)
        ego = torch.cat([users, torch.cat(inputs, dim=1)])  # (U + I, (N + 1) d)
        return propagate_dropout(self.adj, ego, self.params.n_layers, dropout)

    def fuse(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, (N + 1) d) branch outputs -> (B, fused dim): concatenation or branch mean."""
        if self.params.fusion == "concat":
            return rows
        d = self.params.embedding_size
        return rows.reshape(rows.shape[0], -1, d).mean(1)

    def final(
        self, out: torch.Tensor, users: torch.Tensor | None, items: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (users (B_u, d), items (B_i, d)) embeddings of the given rows (all if None)."""
        u, i = out[: self.n_users], out[self.n_users :]
        if users is not None:
            u = take_rows(u, users)
        if items is not None:
            i = take_rows(i, items)
        return self.user_out(self.fuse(u)), self.item_out(self.fuse(i))

    # ---- training -----------------------------------------------------------------------

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[PairBatch]:
        return self.sampler.epoch(rng, batch_size)

    def loss(self, batch: PairBatch) -> torch.Tensor:
        p = self.params
        out = self.branches()  # (U + I, (N + 1) d)
        u, i = self.final(out, batch.users, batch.items)  # (B, d) each
        main = info_nce(F.normalize(u, dim=1), F.normalize(i, dim=1), p.temp)
        loss = main + p.ssl_alpha * self.ssl_loss(out, batch)
        if p.reg > 0:  # Adam-style (coupled) weight decay of every parameter
            loss = loss + 0.5 * p.reg * sum(w.pow(2).sum() for w in self.parameters())
        return loss

    def ssl_loss(self, out: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        """The configured self-supervised loss of the batch; ``out`` is ``branches()``."""
        task = self.params.ssl_task
        if task == "FAC":
            return self.fac_loss(out, batch.items)
        if task == "FD":
            return self.two_view_loss(batch, None, None, self.params.dropout_rate)
        # FM / FD+FM: two different branches masked, one in each view
        first, second = torch.randperm(len(self.modalities) + 1)[:2].tolist()
        dropout = self.params.dropout_rate if task == "FD+FM" else 0.0
        return self.two_view_loss(batch, first, second, dropout)

    def fac_loss(self, out: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Fine-and-coarse InfoNCE of the batch's items (module docstring)."""
        d = self.params.embedding_size
        rows = take_rows(out[self.n_users :], items)  # (B, (N + 1) d)
        x = self.fac_id(rows[:, :d])  # (B, dims[0])
        loss = rows.new_zeros(())
        for k, m in enumerate(self.modalities):
            if k > 0:
                x = self.fac_chain[k - 1](x)  # (B, dims[k])
            y = self.fac_modality[m](rows[:, (k + 1) * d : (k + 2) * d])  # (B, dims[k])
            loss = loss + info_nce(x, y, self.params.ssl_temp)
        return loss

    def two_view_loss(
        self, batch: PairBatch, mask_a: int | None, mask_b: int | None, dropout: float
    ) -> torch.Tensor:
        """InfoNCE between two augmented views of the batch's users, plus of its items."""
        ua, ia = self.final(self.branches(mask_a, dropout), batch.users, batch.items)
        ub, ib = self.final(self.branches(mask_b, dropout), batch.users, batch.items)
        t = self.params.ssl_temp
        users = info_nce(F.normalize(ua, dim=1), F.normalize(ub, dim=1), t)
        items = info_nce(F.normalize(ia, dim=1), F.normalize(ib, dim=1), t)
        return users + items

    # ---- scoring ------------------------------------------------------------------------

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.final(self.branches(), None, None)
