"""VBPR: BPR matrix factorisation with a content (visual) preference term.

Reference: He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit
Feedback", AAAI 2016, eq. (2): x_ui = alpha + beta_u + beta_i + gamma_u . gamma_i
+ theta_u . (E f_i) + beta' . f_i. alpha and beta_u cancel in BPR's pairwise differences and
are left out. The paper's f_i is a 4096-d CNN image feature; here f_i is the concatenation of
all the item's modalities (text, image, audio, ...; in sorted name order), as MMRec does for
its multimodal VBPR. Defaults: 64-d gamma and 64-d theta (MMRec's embedding_size 64 for
each half), Xavier initialisation, L2 on the batch's factors and biases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.models.base import CachedEmbeddingScores
from cadmr.models.bpr import BPRMF
from cadmr.models.layers import (
    bpr_loss,
    check_reg_form,
    distinct_rows,
    embedding_penalty,
    feature_tensor,
    take_rows,
    triplet_rows,
)
from cadmr.models.sampling import TripletBatch


@dataclass(frozen=True)
class VBPRParams:
    """Attributes:
    embedding_size: Dimension of gamma (ID factors) and of theta (content factors) each.
    reg_weight: Weight of the L2 penalty on the batch's user/item factors and item biases
        (lambda_Theta of the paper).
    feature_reg_weight: Weight of the L2 penalty on E and beta' (lambda_E of the paper).
    feature_norm: "l2" scales each modality's feature rows to unit length before they are
        concatenated, so no modality dominates by its raw scale (lfm2k's VGGish audio rows
        have norm ~1,500, its text rows 1); "none" uses the raw features as MMRec does.
    reg_form: "squared" (squared norms per example) or "norm" (MMRec's EmbLoss; see BPR).
    """

    embedding_size: int = 64
    reg_weight: float = 1e-5
    feature_reg_weight: float = 0.0
    feature_norm: Literal["l2", "none"] = "l2"
    reg_form: Literal["squared", "norm"] = "squared"

    def __post_init__(self) -> None:
        if self.embedding_size <= 0 or self.reg_weight < 0 or self.feature_reg_weight < 0:
            raise ValueError("embedding_size must be > 0 and the reg weights >= 0")
        check_reg_form(self.reg_form)
        if self.feature_norm not in ("l2", "none"):
            raise ValueError(f"feature_norm must be 'l2' or 'none', got {self.feature_norm!r}")


class VBPR(CachedEmbeddingScores, BPRMF):
    """BPR-MF's ID factors and sampler plus VBPR's content term (module docstring).

    Scores come from embeddings computed once per round of scoring (``final_embeddings``):
    projecting every item's features at each batch of users cost 36 GFLOP a batch at
    Electronics size (63,001 items x 4,480 feature dims).
    """

    name = "vbpr"
    params_cls = VBPRParams
    needs_features = True
    scores_new_items = True  # through the item's features
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {  # MMRec's VBPR grid
        "reg_weight": (2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    }
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = {
        "reg_weight": (1e-1, 1e-3, 1e-5)
    }

    def __init__(
        self, params: VBPRParams, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)  # gamma_u, gamma_i
        d = params.embedding_size
        n_feat = sum(feature_dims[m] for m in self.modalities)
        self.user_content = nn.Parameter(torch.empty(n_users, d))  # theta_u
        self.projection = nn.Linear(n_feat, d, bias=False)  # E
        self.feature_bias = nn.Linear(n_feat, 1, bias=False)  # beta'
        self.item_bias = nn.Parameter(torch.zeros(n_items))  # beta_i
        nn.init.xavier_uniform_(self.user_content)
        nn.init.xavier_uniform_(self.projection.weight)
        nn.init.zeros_(self.feature_bias.weight)
        self.features: torch.Tensor | None = None

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        blocks = [feature_tensor(features[m], self.params.feature_norm) for m in self.modalities]
        self.features = torch.cat(blocks, dim=1)  # (I, sum d_m)
        # a cold-item split's items never train their ID factor (never a positive, never a
        # negative): they are scored by the content term alone
        self.untrained = None
        if len(guard.cold_items):
            self.untrained = torch.zeros(self.n_items, dtype=torch.bool)
            self.untrained[torch.from_numpy(guard.cold_items)] = True

    def item_terms(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(E f_i (N, d), beta_i + beta'.f_i (N,)) for ``items`` (all items when None)."""
        f = self.features if items is None else take_rows(self.features, items)
        bias = self.item_bias if items is None else take_rows(self.item_bias, items)
        return self.projection(f), bias + self.feature_bias(f).squeeze(1)

    def loss(self, batch: TripletBatch) -> torch.Tensor:
        users, pos, neg = batch.users, batch.pos, batch.neg  # (B,) int64 each
        gu, gp, gn = triplet_rows(self.user_emb, self.item_emb, batch)  # (B, d) each
        tu = take_rows(self.user_content, users)
        distinct, (at_p, at_n) = distinct_rows(pos, neg)  # each item projected once
        content, bias = self.item_terms(distinct)
        content_p, content_n = take_rows(content, at_p), take_rows(content, at_n)
        bias_p, bias_n = take_rows(bias, at_p), take_rows(bias, at_n)
        x_p = bias_p + (gu * gp).sum(1) + (tu * content_p).sum(1)
        x_n = bias_n + (gu * gn).sum(1) + (tu * content_n).sum(1)
        p = self.params
        biases = (take_rows(self.item_bias, pos)[:, None], take_rows(self.item_bias, neg)[:, None])
        reg = embedding_penalty(p.reg_form, gu, tu, gp, gn, *biases)
        loss = bpr_loss(x_p, x_n) + p.reg_weight * reg
        if p.feature_reg_weight > 0:
            e = self.projection.weight.pow(2).sum() + self.feature_bias.weight.pow(2).sum()
            loss = loss + p.feature_reg_weight * e
        return loss

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Users ``[gamma_u, theta_u, 1]`` and items ``[gamma_i, E f_i, beta_i + beta'.f_i]``,
        (U, 2d + 1) and (I, 2d + 1): their dot product is eq. (2) without the cancelled
        terms."""
        content, bias = self.item_terms()
        ids = self.item_emb
        if self.untrained is not None:
            ids = ids.masked_fill(self.untrained.to(ids.device)[:, None], 0.0)
        ones = torch.ones(self.n_users, 1, device=self.device)
        users = torch.cat([self.user_emb, self.user_content, ones], dim=1)
        return users, torch.cat([ids, content, bias[:, None]], dim=1)
