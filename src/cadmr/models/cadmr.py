"""CADMR: cross-attention and disentangled learning over a local-kernel item autoencoder.

Reference: Khalafaoui, Abdelkader, Maddouri & Kalousis, "CADMR: Cross-Attention and
Disentangled Learning for Multimodal Recommender Systems" (sections 3-4), with the decisions of
docs/CADMR.md (in ../shared/docs) and of docs/cadmr.md (this project's validation evidence).

Pieces, with the paper's equations (I items, U users, modality m with d_m-dim features):

- Autoencoder: the GLocal-K local-kernel item autoencoder of ``kernel_ae`` (this class
  subclasses it), items x users, reconstructing each item's row of R.
- Extractor per modality, eq. (1): LayerNorm -> Linear -> act -> dropout -> Linear -> act ->
  dropout, giving h_m (I, modality_dim). Any number of named modalities.
- Disentanglement, eq. (2): a total-correlation penalty on each h_m (models/disentangle.py).
- Fusion, eq. (3): h_f = act(Linear(LayerNorm([h_m1; h_m2; ...]))), (I, latent_dim = l).
- Cross-attention, eq. (4), with ``attention_values="features"`` (the paper): Q = R W_q
  (item rows of R projected to l), K = h_f W_k, V = h_f W_v; softmax(Q K^T / sqrt(l /
  heads)) V per head over ALL I items, heads concatenated; with ``value_skip`` each item's
  own value V_i is added to its attention output; a feed-forward (linear) layer maps that
  back to U. With ``attention_values="ratings"`` (default, not in the paper): the query
  adds the item's own fused features (Q = R W_q + h_f W_o), each item attends over its
  ``attention_neighbours`` nearest items by features (each candidate's logit biased by
  its content similarity / ``prior_temperature``), and the values are those items'
  training rows of R, summed over heads with one learned gate per head (zero at the
  start); the FFN maps the item's own V_i to U. The refined rows R + FFN(...) [+ the
  attended rows] (``refine="residual"``, FFN zero-initialised so fine-tuning starts at the
  pretrained model) or without R (``"replace"``) are the autoencoder's input. With
  ``neighbour_output`` W > 0 (rating values over candidates) the attended rows also reach
  the autoencoder's output: W x the heads' mean of the attended rows, each user's entries
  divided by the user's training count, is added to the reconstruction.

Training has two phases (the trainer runs them in order, models/base.py ``phases``):

1. ``pretrain``: the autoencoder on R exactly as ``kernel_ae`` (same initial weights for the
   same seed, same loss, same optimizer), early-stopped on validation; alongside it, the
   extractors learn ``extractor_objective`` + tc_weight * TC on the batch's items:
   ``align`` predicts the autoencoder's (detached) item code from h_f, ``reconstruct``
   reconstructs each modality's layer-normalised features from h_m, ``none`` uses TC only.
   These losses do not reach the autoencoder, so the pretraining phase IS the autoencoder alone.
2. ``finetune``: the multimodal path (extractors, fusion, attention, FFN) on
   L = MSE (or, with ``finetune_loss="ranking"``, an in-batch softmax over items per
   user) + penalties + tc_weight * sum_m TC(h_m), with the extractors run on all items each
   step (keys and values cover the whole catalogue); the autoencoder stays frozen unless
   ``finetune_autoencoder`` (the paper: end to end). Query and residual rows are corrupted
   with one draw, as the autoencoder's input is (``input_dropout``).

The defaults are this project's, chosen on validation (docs/cadmr.md); ``CADMRPaperParams``
(model ``cadmr_paper``) holds the paper's. Ablations (paper Table 3 / Fig. 3):
``tc_weight=0.5`` (with the paper's DRL; ours has none), ``use_attention=False`` (without CA:
each item's own fused representation, V_i, goes through the FFN instead of the attention
output), ``value_skip=False`` (the attention output alone, as the paper), ``heads``
(1, 2, 4, 8), ``attention_values="features"`` with ``attention_neighbours=0`` (the paper's
attention).

Memory: feature-valued attention is computed per block of query items with torch's
scaled_dot_product_attention (B x I scores per head for a block of B items), never I x I;
rating-valued attention scores B x k per head; rankings stream item blocks
(``item_block``), never a dense users x items matrix.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.errors import CadmrValueError
from cadmr.models.disentangle import TC_ESTIMATORS
from cadmr.models.graphs import memo_knn_neighbours
from cadmr.models.kernel_ae import ItemBatch, KernelAE, KernelAEParams, paper_adam
from cadmr.models.layers import (
    item_content,
    shared_kernels,
    sparse_mm,
    take_rows,
    to_torch_sparse,
)
from cadmr.models.sampling import ShuffledBatches

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@dataclass(frozen=True)
class CADMRParams(KernelAEParams):
    """The autoencoder's settings (``KernelAEParams``) plus:

    Attributes:
        latent_dim: l, the dimension of fused item representations, queries, keys, values.
        modality_dim: Output dimension D of each modality's extractor (h_m).
        extractor_hidden: Hidden width of each extractor (eq. (1)'s inner layer).
        activation: f and g of eqs. (1) and (3): gelu, relu, tanh or sigmoid.
        dropout: Dropout after each extractor sub-layer (paper: 0.2).
        heads: Attention heads (paper: 4); must divide ``latent_dim``.
        attention_norm: LayerNorm on the projected queries and keys (not in the paper). It
            makes the weights peaked (largest 3.6/I on Scientific against 1.2/I), but not
            toward co-occurring or similar items, and validation is level (docs/cadmr.md).
        tc_weight: lambda of eq. (5) (paper: 0.5). Default 0: the TC term fills the codes
            with noise and cost 2.6 % test Recall@20 on lfm2k (docs/cadmr.md).
        tc_estimator: "gaussian" (closed-form TC) or "decorrelation" (models/disentangle.py).
        use_attention: False is the "without CA" ablation (module docstring).
        value_skip: Add each item's own value vector V_i to its attention output before
            the FFN (not in the paper; the residual around attention of a transformer
            block). Without it the FFN's input was nearly the same for every item
            (docs/cadmr.md, "The value skip"). Feature values only: with rating values
            the FFN's input is V_i.
        refine: "residual" (R + FFN(CA)) or "replace" (FFN(CA)) as the autoencoder's input.
        extractor_objective: What the extractors learn while the autoencoder pretrains:
            "align", "reconstruct" or "none" (module docstring).
        finetune_learning_rate: Adam's learning rate in the fine-tuning phase
            (0 = ``train.learning_rate``).
        finetune_autoencoder: Fine-tune the autoencoder end to end with the rest (the
            paper, ``cadmr_paper``). The default False freezes the pretrained autoencoder
            and trains only the multimodal path: higher validation Recall@20 on Scientific
            and lfm2k, 5-17 % less time per fine-tuning epoch (docs/cadmr.md).
        finetune_batch_size: Item rows per fine-tuning step (0 = ``train.batch_size``).
            Each step runs the extractors over the whole catalogue, so on a large catalogue
            larger fine-tuning batches cost far less per epoch (benchmarks/cadmr_epoch.py).
        attention_values: What the attention's values carry. "ratings" (default, not in
            the paper): the attended items' training rating rows, added to the item's own
            row (one learned gate per head, zero at the start of fine-tuning); the query
            adds the item's own fused features to its rating row, and the FFN maps the
            item's own value V_i to U. "features" (the paper): V = h_f W_v, through the FFN.
            On Scientific "ratings" with 10 neighbours raised validation Recall@20 on every
            seed (docs/cadmr.md, "Attention over the item's neighbours").
        attention_neighbours: With "ratings" values, the keys an item attends over: its
            ``attention_neighbours`` nearest other items by features (cosine of the
            centred, L2-normalised features, modalities averaged); 0 = every other item.
        neighbour_output: With "ratings" values and ``attention_neighbours`` > 0: the
            weight W with which the attended rows are also added to the autoencoder's
            reconstruction, not only to its input. Item i's row gains W x the heads' mean
            of sum_j a_h,ij R_j, each user's entries divided by the user's number of
            training interactions: a user's own interactions with an item's content
            neighbours reach its score directly (content k-NN inside the model), as a
            share of their history. A fixed weight, not a learned gate: the squared error
            fits a gate 3-6x smaller than what ranks best. 0 = the input only (as before).
            6 is within 0.0003 / 0.0011 validation R@20 of the best weight on Scientific
            (4) / lfm2k (12) and costs ml100k 0.003, inside its seed spread
            (docs/cadmr.md, "The attended rows at the output"). No effect otherwise.
        neighbour_input: With "ratings" values: add the attended rows (gated) to the
            autoencoder's input. False keeps them at the output only (needs
            ``neighbour_output`` > 0), an ablation: with the output path on, the input
            path changes validation Recall@20 by at most 0.0021 (seeds 0-2 of Scientific,
            ml100k and lfm2k; docs/cadmr.md), so the default keeps the design every other
            table was validated with.
        prior_temperature: With ``attention_neighbours`` > 0: each candidate j's attention
            logit gains cos(i, j) / ``prior_temperature``, the content similarity that chose
            the candidates (``feature_neighbours``), so the attention starts at content
            k-NN's weighting (closer items weigh more) rather than uniform, and fine-tuning
            learns around it. With the fixed weights softmax(cos / 0.1) the output path of
            the trained autoencoders gained validation Recall@20 +0.011 on every seed of
            Scientific, and was level on lfm2k (-0.0005) and ml100k (-0.0001)
            (docs/cadmr.md, "A content prior on the attention"). 0 = no prior (the default
            on a cold-item split, where the prior was lower on validation).
        neighbour_reverse: With the output path: item i's reconstruction also gains the
            rows of the items that have i among their candidates, weighted by their
            attention on i (the attention matrix A used both ways: W x (A + A^T) / 2
            instead of W x A). Validation Recall@20 rose on every seed of Scientific
            (+0.0058) and lfm2k (+0.0008) and was level on ml100k (+0.0004; docs/cadmr.md,
            "Both directions"). False = one way, the default before. No effect without
            the output path.
        finetune_loss: The data part of the fine-tuning loss. "reconstruction" (default,
            the paper's): the autoencoder's loss (``loss``) on the refined output.
            "ranking": for each user with an interaction among the batch's items, a
            softmax over those items of the refined scores / ``ranking_temperature``, and
            the log-likelihood of the user's items among them (an in-batch sampled
            softmax: the batch's other items are the negatives), the ranking a user sees
            at test time (docs/cadmr.md, "A ranking loss for fine-tuning").
        ranking_temperature: The softmax temperature of ``finetune_loss="ranking"``: the
            reconstruction's scores lie near [0, 1], so 1 leaves the softmax nearly flat.
        cold_dropout: Share of each fine-tuning batch's items whose whole rating row
            (query and residual) is dropped, so the multimodal path learns to place an item
            from its features alone, as it must for an item nobody has interacted with
            (DropoutNet's item dropout, Volkovs et al., NeurIPS 2017). 0 keeps ordinary
            training; the cold-item experiment chooses it on validation (docs/cadmr.md).
    """

    latent_dim: int = 64
    modality_dim: int = 64
    extractor_hidden: int = 256
    activation: Literal["gelu", "relu", "tanh", "sigmoid"] = "gelu"
    dropout: float = 0.2
    heads: int = 4
    attention_norm: bool = False
    tc_weight: float = 0.0
    tc_estimator: Literal["gaussian", "decorrelation"] = "gaussian"
    use_attention: bool = True
    refine: Literal["residual", "replace"] = "residual"
    extractor_objective: Literal["align", "reconstruct", "none"] = "align"
    finetune_learning_rate: float = 0.0
    finetune_autoencoder: bool = False
    finetune_batch_size: int = 0
    value_skip: bool = True
    cold_dropout: float = 0.0
    finetune_loss: Literal["reconstruction", "ranking"] = "reconstruction"
    ranking_temperature: float = 0.1
    attention_values: Literal["features", "ratings"] = "ratings"
    attention_neighbours: int = 10
    neighbour_output: float = 6.0
    neighbour_input: bool = True
    neighbour_reverse: bool = True
    prior_temperature: float = 0.1

    @property
    def rows_reach_output(self) -> bool:
        """The attended rows are set to reach the reconstruction: rating values over
        candidates, with ``neighbour_output`` > 0 (the model's ``output_path`` when the
        attention is on)."""
        return (
            self.attention_values == "ratings"
            and self.attention_neighbours > 0
            and self.neighbour_output > 0
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention_neighbours < 0:
            raise ValueError(f"attention_neighbours must be >= 0, got {self.attention_neighbours}")
        if self.neighbour_output < 0:
            raise ValueError(f"neighbour_output must be >= 0, got {self.neighbour_output}")
        if self.attention_neighbours and self.attention_values != "ratings":
            raise ValueError(
                "attention_neighbours applies to attention_values='ratings'; set it to 0 "
                "with 'features' (the paper's attention spans every item)"
            )
        if not self.neighbour_input and not self.rows_reach_output:
            raise ValueError(
                "neighbour_input=false leaves the attended rows nowhere unless they reach the "
                "output (attention_values='ratings', attention_neighbours > 0, "
                "neighbour_output > 0)"
            )
        if self.prior_temperature < 0:
            raise ValueError(f"prior_temperature must be >= 0, got {self.prior_temperature}")
        if self.ranking_temperature <= 0:
            raise ValueError(f"ranking_temperature must be > 0, got {self.ranking_temperature}")
        if not 0.0 <= self.cold_dropout < 1.0:
            raise ValueError(f"cold_dropout must be in [0, 1), got {self.cold_dropout}")
        if self.global_kernel:
            raise ValueError(
                "global_kernel is an option of kernel_ae; CADMR's fine-tuning phase is its "
                "cross-attention (docs/cadmr.md)"
            )
        for name in ("latent_dim", "modality_dim", "extractor_hidden", "heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.latent_dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide latent_dim ({self.latent_dim})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tc_weight < 0 or self.finetune_learning_rate < 0 or self.finetune_batch_size < 0:
            raise ValueError(
                "tc_weight, finetune_learning_rate and finetune_batch_size must be >= 0"
            )
        choices = {
            "activation": ACTIVATIONS,
            "tc_estimator": TC_ESTIMATORS,
            "refine": ("residual", "replace"),
            "extractor_objective": ("align", "reconstruct", "none"),
            "attention_values": ("features", "ratings"),
            "finetune_loss": ("reconstruction", "ranking"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {sorted(allowed)}, got {getattr(self, name)!r}"
                )


class ModalityExtractor(nn.Sequential):
    """Eq. (1): LayerNorm -> Linear -> g -> dropout -> Linear -> f -> dropout."""

    def __init__(self, d_in: int, hidden: int, d_out: int, activation: str, dropout: float):
        act = ACTIVATIONS[activation]
        super().__init__(
            nn.LayerNorm(d_in),
            nn.Linear(d_in, hidden),
            act(),
            nn.Dropout(dropout),
            nn.Linear(hidden, d_out),
            act(),
            nn.Dropout(dropout),
        )
        self._normalized: tuple[torch.Tensor, int, torch.Tensor] | None = None

    def _apply(self, fn: Any, recurse: bool = True):  # type: ignore[override]
        self._normalized = None  # keyed by the input tensor, which moves with the model
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d_in) -> (N, d_out). On constant features (no gradient wanted for ``x``) the
        LayerNorm's affine map is folded into the first Linear, ``(x_hat * g + b) W^T + c =
        x_hat (W * g)^T + (W b + c)``, so backward needs only the weight-side product and no
        (N, d_in) input gradient: with 4,096-d image features that product was a fifth of a
        fine-tuning step. Same function and parameters either way. The parameter-free part,
        ``x_hat``, is kept for the last input seen (fine-tuning passes the same full feature
        matrix every step; one copy of it in memory)."""
        norm, first = self[0], self[1]
        if x.requires_grad:
            return super().forward(x)
        cached = self._normalized
        if cached is not None and cached[0] is x and cached[1] == x._version:
            x_hat = cached[2]
        else:
            x_hat = F.layer_norm(x, norm.normalized_shape, eps=norm.eps)
            self._normalized = (x, x._version, x_hat)
        h = F.linear(
            x_hat, first.weight * norm.weight, torch.addmv(first.bias, first.weight, norm.bias)
        )
        for layer in list(self)[2:]:
            h = layer(h)
        return h


class Fusion(nn.Sequential):
    """Eq. (3): f(W LayerNorm([h_1; ...; h_M]) + b)."""

    def __init__(self, d_in: int, d_out: int, activation: str):
        super().__init__(nn.LayerNorm(d_in), nn.Linear(d_in, d_out), ACTIVATIONS[activation]())


class RatingCrossAttention(nn.Module):
    """Eq. (4): queries from item rows of R, keys and values from fused item features.

    Args:
        n_users: Width of the rating rows (U).
        dim: l, the query/key/value dimension (all heads together).
        heads: Number of heads; each has dimension l / heads.
        norm: LayerNorm on the projected queries and keys.
        rated: The values are rating rows (``attention_values="ratings"``): the query also
            reads the item's own fused features (``query_own``), and each head's mix of
            rows enters through a gate (``gates``, zero so that fine-tuning starts at the
            pretrained model).
    """

    def __init__(
        self, n_users: int, dim: int, heads: int, norm: bool = False, rated: bool = False
    ) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.empty(n_users, dim))
        self.query_bias = nn.Parameter(torch.zeros(dim))
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.query)
        self.query_norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.key_norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.query_own = nn.Linear(dim, dim, bias=False) if rated else None
        self.gates = nn.Parameter(torch.zeros(heads)) if rated else None

    def project_query(self, rows: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        """Q = R_rows W_q + b, plus own W_o for rating-valued attention (optionally
        layer-normalised): rows (B, U) sparse or dense, own (B, l) -> (B, l)."""
        out = sparse_mm(rows, self.query) if rows.layout != torch.strided else rows @ self.query
        if self.query_own is not None:
            out = out + self.query_own(own)
        return self.query_norm(out + self.query_bias)

    def project_key(self, fused: torch.Tensor) -> torch.Tensor:
        """K = h_f W_k + b (optionally layer-normalised): (I, l) -> (I, l)."""
        return self.key_norm(self.key(fused))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(N, l) -> (heads, N, l / heads)."""
        return x.view(x.shape[0], self.heads, -1).transpose(0, 1)

    def forward(self, rows: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """Attention output for the query rows: rows (B, U), fused (I, l) -> (B, l)."""
        q = self._split(self.project_query(rows))
        k, v = self._split(self.project_key(fused)), self._split(self.value(fused))
        # 4-d inputs (batch of one): torch's fused CPU attention kernel takes them, 3-d ones
        # fall back to materialising the (heads, B, I) scores (5x slower at B = 1,024)
        out = F.scaled_dot_product_attention(q[None], k[None], v[None])[0]  # (heads, B, l / h)
        return out.transpose(0, 1).reshape(rows.shape[0], -1)

    def weights(self, rows: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """Attention probabilities (heads, B, I): each (head, query) row sums to 1."""
        q = self._split(self.project_query(rows))
        k = self._split(self.project_key(fused))
        return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)

    def candidate_weights(
        self,
        rows: torch.Tensor,
        own: torch.Tensor,
        fused: torch.Tensor,
        items: torch.Tensor,
        candidates: torch.Tensor | None,
        prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rating-valued attention probabilities of the query ``items`` over their
        ``candidates`` (B, k) item indices: (heads, B, k); over every item but the query
        item itself, (heads, B, I), when ``candidates`` is None. ``prior`` (B, k), with
        candidates, is added to every head's scaled logits."""
        q = self._split(self.project_query(rows, own))  # (h, B, d)
        keys = self.project_key(fused)
        if candidates is None:
            scores = q @ self._split(keys).transpose(1, 2)  # (h, B, I)
            scores[:, torch.arange(len(items)), items] = float("-inf")
        else:
            keys = take_rows(keys, candidates)  # (B, k, h d)
            keys = keys.view(*candidates.shape, self.heads, -1)  # (B, k, h, d)
            scores = torch.einsum("hbd,bkhd->hbk", q, keys)
        scores = scores / math.sqrt(q.shape[-1])
        if prior is not None:
            scores = scores + prior
        return torch.softmax(scores, dim=-1)


@dataclass(frozen=True)
class Explanation:
    """What CADMR attended to for one item or for one user's recommendations.

    Attributes:
        subject: "item I" or "user U".
        recommended: The user's top items with scores ([] for an item explanation).
        attended: (item, attention weight averaged over heads and queries), strongest first.
        modalities: Modality -> share of the occlusion effect (sums to 1, or all 0 when no
            modality moves anything): how much the item's refined row (item) or the
            recommended scores (user) move when that modality's features are replaced by
            their catalogue mean.
        uniform: The weight every key would get under uniform attention: 1 / the number
            of items one query attends over.
    """

    subject: str
    recommended: list[tuple[int, float]]
    attended: list[tuple[int, float]]
    modalities: dict[str, float]
    uniform: float = 0.0


class CADMR(KernelAE):
    """CADMR (module docstring). Needs at least one item modality."""

    name = "cadmr"
    params_cls = CADMRParams
    needs_features = True
    # on a cold-item split: the point of the cold grid that won validation on ml100k and
    # lfm2k and tied on Scientific (0.6160 against no dropout's 0.6164; docs/cadmr.md)
    # on a cold-item split the output path goes one way: both ways was lower on the cold
    # validation items of Scientific, ml100k and lfm2k (docs/cadmr.md, "New items")
    # and its attention starts uniform: the content prior was lower on the cold validation
    # items of Scientific (0.6103 against 0.6134) and lfm2k (0.7780 against 0.7788;
    # docs/cadmr.md, "A content prior on the attention")
    cold_defaults: ClassVar[Mapping[str, Any]] = {
        "cold_dropout": 0.5,
        "finetune_autoencoder": True,
        "neighbour_reverse": False,
        "prior_temperature": 0.0,
    }
    scoring_block = 512  # query items per attention block when scoring (B x I x heads floats)

    def __init__(
        self, params: CADMRParams, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)  # the autoencoder first
        p = params
        self.extractors = nn.ModuleDict(
            {
                m: ModalityExtractor(
                    feature_dims[m], p.extractor_hidden, p.modality_dim, p.activation, p.dropout
                )
                for m in self.modalities
            }
        )
        self.fusion = Fusion(p.modality_dim * len(self.modalities), p.latent_dim, p.activation)
        if p.extractor_objective == "align":
            self.align_head = nn.Linear(p.latent_dim, p.hidden[-1])
        elif p.extractor_objective == "reconstruct":
            self.reconstruct_heads = nn.ModuleDict(
                {m: nn.Linear(p.modality_dim, feature_dims[m]) for m in self.modalities}
            )
        self.attention = RatingCrossAttention(
            n_users, p.latent_dim, p.heads, p.attention_norm, self.rated_attention
        )
        self.ffn = nn.Linear(p.latent_dim, n_users)
        if p.refine == "residual":  # fine-tuning starts exactly at the pretrained model
            nn.init.zeros_(self.ffn.weight)
            nn.init.zeros_(self.ffn.bias)
        self.features: dict[str, torch.Tensor] = {}
        self.query_rows: sp.csr_matrix | None = None
        self._fused: torch.Tensor | None = None  # (n_items, l) cache for scoring
        self._query_scaled = False
        # rating-valued attention: (n_items, k) candidate keys, R^T as the values, and
        # with prior_temperature the (n_items, k) logit bias cos(i, j) / temperature
        self.candidates: torch.Tensor | None = None
        self._prior: torch.Tensor | None = None
        # with neighbour_reverse: (candidate slots sorted by the item they point at, the
        # start of each item's run in them), built in setup
        self._reverse: tuple[np.ndarray, np.ndarray] | None = None
        self._ratings_t: torch.Tensor | None = None
        # neighbour_output: R with each user's entries divided by the user's training
        # count, items x users (training) and users x items (scoring), and the
        # (n_items, n_items) output weights built for scoring
        self._share_rows: sp.csr_matrix | None = None
        self._user_share_rows: sp.csr_matrix | None = None
        self._output_mix: sp.csr_matrix | None = None
        # prepare_scoring's every_attention: (heads, I, k) over each item's candidates
        self._attended: torch.Tensor | None = None

    @property
    def rated_attention(self) -> bool:
        """The attention's values are rating rows (``attention_values="ratings"``)."""
        return self.params.use_attention and self.params.attention_values == "ratings"

    @property
    def output_path(self) -> bool:
        """The attended rows also reach the reconstruction (``neighbour_output`` > 0 with
        rating values over candidates)."""
        return self.params.use_attention and self.params.rows_reach_output

    @property
    def output_weights(self) -> torch.Tensor:
        """The output path's fixed weight per head: W / heads each (W x the heads' mean)."""
        h = self.params.heads
        return torch.full((h,), self.params.neighbour_output / h, device=self.device)

    # ----------------------------------------------------------------- set-up and phases

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        missing = sorted(set(self.modalities) - set(features))
        if missing:
            raise ValueError(f"cadmr was built for modalities {self.modalities}; missing {missing}")
        for m in self.modalities:
            if features[m].shape != (self.n_items, self.feature_dims[m]):
                raise ValueError(
                    f"{m} features have shape {features[m].shape}, expected "
                    f"{(self.n_items, self.feature_dims[m])}"
                )
        with warnings.catch_warnings():  # read-only arrays: the model never writes to them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.features = {
                m: torch.as_tensor(np.asarray(features[m], dtype=np.float32))
                for m in self.modalities
            }
        if self.params.input_init == "active" and not self._query_scaled:
            # the queries read the same sparse rows as the first layer: the same scale
            with torch.no_grad():
                q = self.attention.query
                q.mul_(self.encoder[0].weight.std() / q.std())
            self._query_scaled = True
        # the cross-attention queries are the autoencoder's input rows (scaled as
        # input_norm says); checked under their own name so a leak reports which use it
        # reached. The attended values are the rows of R itself (item_user).
        self.query_rows = guard.check(
            self.input_matrix, "CADMR cross-attention query", layout="item_user"
        )
        self._ratings_t = None
        self._share_rows = self._user_share_rows = None
        if self.output_path:
            counts = np.asarray(self.item_user.sum(axis=0), dtype=np.float32).ravel()
            scale = sp.diags(1.0 / np.maximum(counts, 1.0)).astype(np.float32)
            self._share_rows = sp.csr_matrix(self.item_user @ scale)
            self._user_share_rows = self._share_rows.T.tocsr()
        self._prior = None
        if self.rated_attention and self.params.attention_neighbours:
            self.candidates, similarity = self.feature_neighbours(self.params.attention_neighbours)
            if self.params.prior_temperature > 0:
                self._prior = similarity / self.params.prior_temperature
        self._reverse = None
        if self.output_path and self.params.neighbour_reverse:
            # the candidate slots (flat j * k + s) pointing at each item, grouped by item
            flat = self.candidates.reshape(-1).cpu().numpy()
            counts = np.bincount(flat, minlength=self.n_items)
            self._reverse = (
                np.argsort(flat, kind="stable"),
                np.concatenate([[0], np.cumsum(counts)]),
            )

    def feature_neighbours(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item's ``k`` nearest other items by features and their similarities:
        (n_items, k) int64 and float32, by the cosine of ``item_content`` (the mean of the
        per-modality cosines of the centred features; content k-NN's similarity)."""
        k = min(k, self.n_items - 1)
        index, similarity = memo_knn_neighbours(item_content(self.features, self.modalities), k + 1)
        other = index != torch.arange(self.n_items)[:, None]
        keep = other & (other.cumsum(dim=1) <= k)  # the first k that are not the item
        shape = (self.n_items, k)
        return index[keep].view(shape).to(self.device), similarity[keep].view(shape).to(self.device)

    def phases(self) -> tuple[str, ...]:
        return ("pretrain", "finetune")

    def start_phase(self, phase: str) -> None:
        super().start_phase(phase)
        self._fused = self._attended = self._output_mix = None

    def make_optimizer(self, tc: Any) -> torch.optim.Optimizer:
        lr = tc.learning_rate
        if self.phase == "finetune" and self.params.finetune_learning_rate > 0:
            lr = self.params.finetune_learning_rate
        params = self.parameters()
        if self.phase == "finetune" and not self.params.finetune_autoencoder:
            frozen = {id(p) for layer in self.kernel_layers() for p in layer.parameters()}
            params = [p for p in self.parameters() if id(p) not in frozen]
        return paper_adam(params, lr, tc.weight_decay)

    # ----------------------------------------------------------------- the multimodal path

    def modality_codes(
        self, items: np.ndarray | None = None, features: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """h_m of eq. (1) per modality, (N, modality_dim); all items when ``items`` is None."""
        features = self.features if features is None else features
        index = None if items is None else self.tensor(np.asarray(items, dtype=np.int64))
        return {
            m: self.extractors[m](features[m] if index is None else take_rows(features[m], index))
            for m in self.modalities
        }

    def fuse(self, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """h_f of eq. (3): (N, latent_dim)."""
        return self.fusion(torch.cat([codes[m] for m in self.modalities], dim=1))

    def total_correlation(self, codes: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sum over modalities of the TC penalty of h_m (eq. (2), sign per docs/CADMR.md)."""
        estimator = TC_ESTIMATORS[self.params.tc_estimator]
        zero = torch.zeros((), device=self.device)
        return sum((estimator(codes[m]) for m in self.modalities), zero)

    def context(
        self, items: np.ndarray, fused: torch.Tensor, rows: sp.csr_matrix | None = None
    ) -> torch.Tensor:
        """What the FFN maps back to U for ``items``: the cross-attention output over all
        items, or (without CA) the item's own value vector; (B, latent_dim). ``rows`` are
        the query rows (default: the items' rows of R)."""
        index = self.tensor(np.asarray(items, dtype=np.int64))
        if not self.params.use_attention or self.rated_attention:
            return self.attention.value(take_rows(fused, index))
        rows = self.query_rows[items] if rows is None else rows
        out = self.attention(to_torch_sparse(rows, self.device), fused)
        if self.params.value_skip:
            out = out + self.attention.value(take_rows(fused, index))
        return out

    @classmethod
    def can_score_new_items(cls, params: Any) -> bool:
        """An item without interactions still has its own value vector V_i (its features)
        with ``value_skip`` or without attention; the paper's attention output alone is the
        same for every such item (an empty query attends uniformly)."""
        return params.value_skip or not params.use_attention or params.attention_values == "ratings"

    @classmethod
    def saved_params(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Checkpoints saved before rating-valued attention was the default have no
        ``attention_values``: they were trained with the paper's feature values."""
        data = super().saved_params(data)
        if "attention_values" not in data:
            data.update(attention_values="features", attention_neighbours=0)
        # ... and before the output path: the attended rows went to the input only
        data.setdefault("neighbour_output", 0.0)
        data.setdefault("neighbour_reverse", False)  # ... and one way only
        data.setdefault("prior_temperature", 0.0)  # ... and without the content prior
        return data

    def rating_rows(self, items: np.ndarray, corrupt: bool = False) -> sp.csr_matrix:
        """``kernel_ae``'s rows, and while fine-tuning with ``cold_dropout`` q, each row
        dropped whole with probability q (the item then looks new)."""
        rows = super().rating_rows(items, corrupt)
        q = self.params.cold_dropout
        if not (corrupt and self.training and q > 0 and self.phase == "finetune"):
            return rows
        keep = (torch.rand(rows.shape[0], generator=self._noise) >= q).numpy()
        out = sp.csr_matrix(sp.diags(keep.astype(np.float32)) @ rows)
        out.eliminate_zeros()
        return out

    def refine(
        self,
        items: np.ndarray,
        fused: torch.Tensor,
        corrupt: bool = False,
        rows: sp.csr_matrix | None = None,
        attended: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """The autoencoder's fine-tuning input for ``items``: (B, n_users) dense. With
        ``corrupt``, the rows of R are corrupted as ``rating_rows`` says, one draw for both
        the query and the residual (a held-out user is absent from both at test time).
        ``rows`` (those rows) and ``attended`` (``_rated_attention`` of them) are computed
        when not given."""
        rows = self.rating_rows(items, corrupt) if rows is None else rows
        delta = self.ffn(self.context(items, fused, rows))
        if self.rated_attention and self.params.neighbour_input:
            if attended is None:
                attended = self._rated_attention(items, rows, fused)
            delta = delta + self.neighbour_rows(*attended, self.attention.gates, self.item_user)
        if self.params.refine == "replace":
            return delta
        # R + delta, adding R's nonzeros into delta: the same sums as the dense R + delta
        # without two more (B, n_users) matrices (394 MB each for 512 Electronics items)
        rows = rows.tocoo()
        index = (self.tensor(rows.row.astype(np.int64)), self.tensor(rows.col.astype(np.int64)))
        return delta.index_put_(index, self.tensor(rows.data).to(delta.dtype), accumulate=True)

    def _rated_attention(
        self, items: np.ndarray, rows: sp.csr_matrix, fused: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rating-valued attention of ``items`` (query rows ``rows``) over their candidates:
        (probabilities (heads, B, k), candidates (B, k)), or over every item (heads, B, I)
        and None without ``attention_neighbours``."""
        index = self.tensor(np.asarray(items, dtype=np.int64))
        candidates = None if self.candidates is None else self.candidates[index]
        prior = None if self._prior is None else self._prior[index]
        a = self.attention.candidate_weights(
            to_torch_sparse(rows, self.device),
            take_rows(fused, index),
            fused,
            index,
            candidates,
            prior,
        )
        return a, candidates

    def rated_weights(
        self, items: np.ndarray, rows: sp.csr_matrix, fused: torch.Tensor
    ) -> torch.Tensor:
        """Rating-valued attention probabilities of ``items`` over all items, (heads, B, I):
        zero outside each item's candidates."""
        a, candidates = self._rated_attention(items, rows, fused)
        if candidates is None:
            return a
        full = a.new_zeros(a.shape[0], len(candidates), self.n_items)
        return full.scatter(2, candidates.expand(a.shape[0], -1, -1), a)

    def neighbour_rows(
        self,
        a: torch.Tensor,
        candidates: torch.Tensor | None,
        gates: torch.Tensor,
        values: sp.csr_matrix,
    ) -> torch.Tensor:
        """Rating-valued attention output for the probabilities ``a`` over ``candidates``
        (``_rated_attention``): sum over heads of gates_h x the attended items' rows of
        ``values`` (items x users: R, or its per-user shares), (B, n_users). With
        candidates, the sum runs over the candidates' non-zeros only (O(B k row length),
        not O(nnz(R) B) as a product with R would); without, ``values`` must be R."""
        mix = torch.einsum("h,hbk->bk", gates, a)
        if candidates is None:
            if self._ratings_t is None:
                self._ratings_t = to_torch_sparse(self.item_user.T.tocsr(), self.device)
            return sparse_mm(self._ratings_t, mix.T).T
        owners = np.repeat(np.arange(len(candidates)), candidates.shape[1])
        sources = candidates.reshape(-1).cpu().numpy()
        return self._weighted_rows(owners, sources, mix.reshape(-1), values, len(candidates))

    def _weighted_rows(
        self,
        owners: np.ndarray,
        sources: np.ndarray,
        weights: torch.Tensor,
        values: sp.csr_matrix,
        n_out: int,
    ) -> torch.Tensor:
        """(n_out, n_users): row owners[e] gains weights[e] x row sources[e] of ``values``
        for every entry e, over the rows' non-zeros only."""
        rows = values[sources]  # (entries, U)
        per_entry = np.repeat(np.arange(len(sources)), np.diff(rows.indptr))
        data = self.tensor(rows.data).to(weights.dtype)
        weight = take_rows(weights, self.tensor(per_entry)) * data
        # entry (owner, user) of the flattened (n_out, U) output; index_add_ sums in the
        # same order as index_put_(accumulate=True) and its backward is a row gather
        flat = self.tensor(owners[per_entry].astype(np.int64) * self.n_users + rows.indices)
        out = weights.new_zeros(n_out * self.n_users)
        return out.index_add_(0, flat, weight).view(n_out, self.n_users)

    # ----------------------------------------------------------------- training

    def loss(self, batch: ItemBatch) -> torch.Tensor:
        with shared_kernels(self.kernel_layers()):
            return self._loss(batch)

    def _loss(self, batch: ItemBatch) -> torch.Tensor:
        if self.phase == "pretrain":
            return self._pretrain_loss(batch.items)
        codes = self.modality_codes()  # all items: keys and values span the catalogue
        out = self.refined_output(batch.items, self.fuse(codes), corrupt=True)
        target = self.target_rows(batch.items)
        if self.params.finetune_loss == "ranking":
            loss = in_batch_softmax(out, target, self.params.ranking_temperature)
        else:
            loss = self.reconstruction_loss(out, target)
        loss = loss + self.penalty()
        if self.params.tc_weight > 0:
            loss = loss + self.params.tc_weight * self.total_correlation(codes)
        return loss

    def _pretrain_loss(self, items: np.ndarray) -> torch.Tensor:
        """Autoencoder loss (exactly kernel_ae's) + the extractors' objective and TC."""
        p = self.params
        code = self.encode(to_torch_sparse(self.rating_rows(items, corrupt=True), self.device))
        loss = (
            self.reconstruction_loss(self.decoder(code), self.target_rows(items)) + self.penalty()
        )
        codes = self.modality_codes(items)
        if p.extractor_objective == "align":
            loss = loss + F.mse_loss(self.align_head(self.fuse(codes)), code.detach())
        elif p.extractor_objective == "reconstruct":
            rows = self.tensor(items)
            for m in self.modalities:
                target = F.layer_norm(take_rows(self.features[m], rows), (self.feature_dims[m],))
                loss = loss + F.mse_loss(self.reconstruct_heads[m](codes[m]), target)
        if p.tc_weight > 0 and len(items) > 1:
            loss = loss + p.tc_weight * self.total_correlation(codes)
        return loss

    def refined_output(
        self, items: np.ndarray, fused: torch.Tensor, corrupt: bool = False
    ) -> torch.Tensor:
        """The fine-tuned reconstruction of ``items``' rows, (B, n_users): the autoencoder
        over the refined rows, plus W x the heads' mean of the attended rows' per-user
        shares when ``neighbour_output`` is W > 0 (one attention draw for both)."""
        rows = self.rating_rows(items, corrupt)
        attended = self._rated_attention(items, rows, fused) if self.rated_attention else None
        out = self(self.refine(items, fused, rows=rows, attended=attended))
        if not self.output_path:
            return out
        forward = self.neighbour_rows(*attended, self.output_weights, self._share_rows)
        if self._reverse is None:
            return out + forward
        every = np.arange(self.n_items)
        a, _ = self._rated_attention(every, self.query_rows, fused)  # (heads, I, k)
        mix = torch.einsum("h,hik->ik", self.output_weights, a)
        return out + 0.5 * (forward + self.reverse_rows(np.asarray(items), mix))

    def reverse_rows(self, items: np.ndarray, mix: torch.Tensor) -> torch.Tensor:
        """(B, n_users): for each of ``items``, the sum over the items j that have it among
        their candidates of mix[j, slot] x j's row of per-user shares (``mix``: (I, k), the
        output path's weights of every item over its candidates)."""
        assert self._reverse is not None and self._share_rows is not None
        order, indptr = self._reverse
        starts, counts = indptr[items], indptr[items + 1] - indptr[items]
        owners = np.repeat(np.arange(len(items)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        flat = order[np.repeat(starts, counts) + np.arange(counts.sum()) - first]  # j * k + s
        weights = take_rows(mix.reshape(-1), self.tensor(flat))
        return self._weighted_rows(
            owners, flat // mix.shape[1], weights, self._share_rows, len(items)
        )

    # ----------------------------------------------------------------- scoring

    def input_rows(self, items: np.ndarray, corrupt: bool = False) -> torch.Tensor:
        if self.phase == "finetune":
            if self._fused is None:
                self._fused = self.fuse(self.modality_codes())
            attended = None
            if self._attended is not None and not corrupt:  # prepare_scoring's, sliced
                assert self.candidates is not None
                index = self.tensor(np.asarray(items, dtype=np.int64))
                attended = (self._attended[:, index], self.candidates[index])
            return self.refine(items, self._fused, corrupt, attended=attended)
        return super().input_rows(items, corrupt)

    @torch.no_grad()
    def prepare_scoring(self) -> None:
        self._fused = self._attended = self._output_mix = None
        if self.phase == "finetune":
            self._fused = self.fuse(self.modality_codes())
            if self.candidates is not None:
                # once for both readers: the refined input rows and the output path
                self._attended = self.every_attention(self._fused)
        super().prepare_scoring()
        if self._attended is not None and self.output_path:
            self._output_mix = self.output_mix(self._attended)

    @torch.no_grad()
    def every_attention(self, fused: torch.Tensor) -> torch.Tensor:
        """Every item's rating-valued attention probabilities over its ``candidates``,
        queried with its uncorrupted training row, in blocks: (heads, I, k)."""
        step = self.scoring_block
        blocks = []
        for start in range(0, self.n_items, step):
            items = np.arange(start, min(start + step, self.n_items))
            blocks.append(self._rated_attention(items, self.query_rows[items], fused)[0])
        return torch.cat(blocks, dim=1)

    @torch.no_grad()
    def output_mix(self, attended: torch.Tensor) -> sp.csr_matrix:
        """(n_items, n_items) weights M of the output path: score(u, i) gains
        sum_j M_ij R_uj / n_u; row i holds W x item i's attention over its candidates (the
        heads' mean of ``attended``, ``every_attention``'s (heads, I, k)); with
        ``neighbour_reverse``, (M + M^T) / 2."""
        assert self.candidates is not None
        w = torch.einsum("h,hik->ik", self.output_weights, attended).cpu().numpy()
        c = self.candidates.cpu().numpy()
        rows = np.repeat(np.arange(self.n_items), c.shape[1])
        mix = sp.csr_matrix((w.ravel(), (rows, c.ravel())), shape=(self.n_items, self.n_items))
        return mix if self._reverse is None else sp.csr_matrix((mix + mix.T) * 0.5)

    @torch.no_grad()
    def score_block(self, users: np.ndarray, start: int, stop: int) -> torch.Tensor:
        """The autoencoder's reconstruction (``kernel_ae``), plus the output path's
        sum_j M_ij R_uj / n_u for the block's items i when ``neighbour_output``."""
        out = super().score_block(users, start, stop)  # prepares scoring, mix included
        if self.output_path and self.phase == "finetune":
            extra = self._output_mix[start:stop] @ self._user_share_rows[users].T  # (items, B)
            out = out + self.tensor(extra.T.toarray()).to(out.dtype)
        return out

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[ItemBatch]:
        self._fused = self._attended = self._output_mix = None  # parameters will change
        if self.phase == "finetune" and self.params.finetune_batch_size:
            batch_size = self.params.finetune_batch_size
        return super().batches(rng, batch_size)

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self._fused = self._attended = self._output_mix = None

    # ----------------------------------------------------------------- explanations

    def _require_finetuned(self) -> None:
        if self.phase != "finetune":
            raise CadmrValueError(
                "explanations need a fine-tuned CADMR (a best.pt, not best-pretrain.pt)"
            )
        if not self.params.use_attention:
            raise CadmrValueError(
                "this CADMR was trained without cross-attention; nothing to explain"
            )

    @torch.no_grad()
    def attention_weights(self, items: np.ndarray) -> torch.Tensor:
        """Attention probabilities of the query items over all items: (heads, B, n_items)."""
        self._require_finetuned()
        was_training = self.training
        self.eval()
        try:
            fused = self.fuse(self.modality_codes())
            items = np.asarray(items, dtype=np.int64)
            if self.rated_attention:
                return self.rated_weights(items, self.query_rows[items], fused)
            rows = to_torch_sparse(self.query_rows[items], self.device)
            return self.attention.weights(rows, fused)
        finally:
            self.train(was_training)

    def _occluded(self, m: str) -> dict[str, torch.Tensor]:
        """Features with modality ``m`` replaced by its catalogue mean for every item."""
        feats = dict(self.features)
        feats[m] = feats[m].mean(dim=0, keepdim=True).expand_as(feats[m])
        return feats

    @staticmethod
    def _shares(effects: Mapping[str, float]) -> dict[str, float]:
        """Effects normalised to sum to 1; all 0 when no modality has any effect (e.g. a
        fine-tuning phase that kept the pretrained model, whose FFN is still zero)."""
        total = sum(effects.values())
        return {m: (e / total if total > 0 else 0.0) for m, e in effects.items()}

    @staticmethod
    def _top(weights: torch.Tensor, top: int) -> list[tuple[int, float]]:
        values, index = torch.topk(weights, min(top, weights.numel()))
        return [(int(i), float(v)) for i, v in zip(index, values, strict=True)]

    @torch.no_grad()
    def explain_item(self, item: int, top: int = 10) -> Explanation:
        """Items the cross-attention of ``item``'s row attended to most (mean over heads),
        and each modality's share of the occlusion effect on its reconstructed row (every
        user's score of the item, through the input path and the output path alike)."""
        self._check_item(item)
        items = np.array([item])
        weights = self.attention_weights(items).mean(dim=0)[0]  # (n_items,)
        return Explanation(
            f"item {item}",
            [],
            self._top(weights, top),
            self._attention_occlusion(items),
            1 / self.attention_span,
        )

    @torch.no_grad()
    def explain_user(self, user: int, k: int = 10, top: int = 10) -> Explanation:
        """The user's top-``k`` recommendations, the items their rows attended to most
        (mean over heads and over the recommended items), and each modality's share of the
        occlusion effect on the user's scores of those items."""
        recs, scores = self.recommend(np.array([user]), k=k)
        items = recs[0][recs[0] >= 0]
        if len(items) == 0:
            raise CadmrValueError(f"user {user} has no unseen item to recommend")
        weights = self.attention_weights(items).mean(dim=(0, 1))  # (n_items,)
        return Explanation(
            f"user {user}",
            [(int(i), float(s)) for i, s in zip(items, scores[0], strict=False)],
            self._top(weights, top),
            self._score_occlusion(user, items),
            1 / self.attention_span,
        )

    @property
    def attention_span(self) -> int:
        """How many items one query attends over."""
        if not self.rated_attention:
            return self.n_items
        return self.n_items - 1 if self.candidates is None else self.candidates.shape[1]

    def _check_item(self, item: int) -> None:
        if not 0 <= item < self.n_items:
            raise IndexError(f"item {item} is not in 0..{self.n_items - 1}")

    def _attention_occlusion(self, items: np.ndarray) -> dict[str, float]:
        """Shares of the effect on ``items``' reconstructed rows (mean L2 over the rows)."""
        return self._occlusion(items, lambda change: change.norm(dim=1).mean())

    def _score_occlusion(self, user: int, items: np.ndarray) -> dict[str, float]:
        """Shares of the effect on ``user``'s scores of ``items`` (mean absolute change)."""
        cols = self.tensor([user])
        return self._occlusion(items, lambda change: change[:, cols].abs().mean())

    def _occlusion(
        self, items: np.ndarray, effect: Callable[[torch.Tensor], torch.Tensor]
    ) -> dict[str, float]:
        """Each modality's share of ``effect`` of the change in ``items``' reconstruction,
        (B, n_users), when that modality is replaced by its catalogue mean."""
        self.eval()

        def output(features: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
            return self.refined_output(items, self.fuse(self.modality_codes(features=features)))

        base = output(None)
        return self._shares(
            {m: float(effect(base - output(self._occluded(m)))) for m in self.modalities}
        )


def in_batch_softmax(out: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the observed entries of ``target`` (B items x U users) of
    -log softmax over the B items of ``out / temperature``, per user (column): each user's
    items ranked against the batch's other items. Users without an item in the batch add
    nothing; 0 (with a gradient) when nobody has one."""
    users = torch.nonzero(target.sum(dim=0)).squeeze(1)
    if len(users) == 0:
        return out.sum() * 0.0
    target = target[:, users]
    log_p = F.log_softmax(out[:, users] / temperature, dim=0)
    return -(target * log_p).sum() / target.sum()


@dataclass(frozen=True)
class CADMRPaperParams(CADMRParams):
    """CADMR as the paper and GLocal-K write it, with the settings this project used before
    its study of sparse data (docs/cadmr.md, the settings table at the top): GLocal-K's
    sigmoid units, Xavier initialisation, lambda_2 = 20, the rows of R as they are and no
    input corruption, the paper's lambda = 0.5 on the total correlation, the attention
    output alone as the FFN's input, and end-to-end fine-tuning.
    """

    pos_weight: float = 10.0
    lambda_2: float = 20.0
    lambda_scale: Literal["fixed", "items"] = "fixed"
    input_dropout: float = 0.0
    input_norm: Literal["none", "l2"] = "none"
    input_init: Literal["xavier", "active"] = "xavier"
    hidden_activation: Literal["sigmoid", "centered_sigmoid", "tanh"] = "sigmoid"
    tc_weight: float = 0.5
    value_skip: bool = False
    finetune_autoencoder: bool = True
    attention_values: Literal["features", "ratings"] = "features"
    attention_neighbours: int = 0
    prior_temperature: float = 0.0


class CADMRPaper(CADMR):
    """``cadmr_paper``: CADMR with the paper's settings (``CADMRPaperParams``); the same
    model class, so every option of ``cadmr`` applies to it too."""

    name = "cadmr_paper"
    summary = (
        "CADMR with the paper's settings: GLocal-K's sigmoid autoencoder, TC 0.5, no denoising."
    )
    params_cls = CADMRPaperParams
    cold_defaults: ClassVar[Mapping[str, Any]] = {}  # the paper's settings, unchanged
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "pos_weight": (3.0, 10.0, 30.0, 100.0, 300.0)
    }
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = None  # the same five
