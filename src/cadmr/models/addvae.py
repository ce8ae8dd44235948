"""ADDVAE: two disentangled user VAEs, one from ratings and one from item content, aligned.

References: Tran & Lauw, "Aligning Dual Disentangled User Representations from Ratings and
Textual Content", KDD 2022 (official code: github.com/PreferredAI/ADDVAE, ``model.py``,
``main.py``, ``run.sh``); Ma et al., "Learning Disentangled Representations for
Recommendation" (MacridVAE), NeurIPS 2019, for each of the two VAEs.

Each side is a MacridVAE over the user's training row x_u (binary, n_items wide):

- Macro concepts: item i is assigned to one of K concepts by
  c_i = softmax(cos(e_i, m_k) / tau) over K prototypes m_k (a Gumbel-softmax sample, Gumbel
  temperature 1, while training; the plain softmax when scoring).
- Encoder, per concept k: x_k = x_u * c_{:,k} is L2-normalised over items, dropped out, and
  mapped by a shared tanh MLP to (mu_k, logvar_k); mu_k is unit-normalised, and the posterior
  is N(mu_k, (prior_std^2) exp(logvar_k)), sampled while training, its mean when scoring.
  z_k is unit-normalised again after sampling.
- Decoder: log p(i | z) = log sum_k c_ik exp(cos(z_k, e_i) / tau), a softmax over items
  (multinomial likelihood of the training row).
- KL: 0.5 * sum_d (exp(logvar) - logvar - 1) per concept, summed over concepts, averaged over
  users. The mean term of the Gaussian KL is a constant (mu is unit length) and is dropped,
  as in MacridVAE and the official code.

The two sides. The rating side is MacridVAE itself: free item embeddings e_i and a free
first-layer weight row per item. The paper's text side is a MacridVAE over the user's bag of
words (the official code takes a user x word tf-idf matrix built from the texts of the
user's items). Our datasets ship dense item feature vectors instead of vocabularies, so the
content side is a MacridVAE whose units are again the user's items, but every per-item
parameter is replaced by a function of the item's content f_i (all modalities):

- its item embeddings are e^c_i = W_e f_i + b_e (projected features), which drive both its
  concept assignment and its decoder;
- its encoder's first layer maps the concept-weighted, normalised, dropped-out row x_k through
  the content of the items, sum_i x_ki (W_1 f_i) = W_1 (sum_i x_ki f_i): the pooled content
  of the user's items in concept k, projected.

So the content side's user representation is built from the features of the items the user
consumed, and it reconstructs the user's row through item content only. f_i concatenates the
modalities in sorted name order; each modality is first centred (its mean item vector is
subtracted) and its rows scaled to unit L2 norm (``feature_norm="center_l2"``), so every
modality weighs the same whatever its raw scale (lfm2k's audio rows have norm ~1,500, its
text rows 1). Features are fixed inputs; only the projections learn.

Alignment and combination (official ``cmode`` / ``rmode``, defaults from ``run.sh``):

- ``combine="attention"`` (ADDVAE_MI of the code, the run.sh setting): each side's K concept
  vectors attend to the other side's, with CoDA (compositional de-attention, Tay et al. 2019)
  as ``run.sh`` configures it (no 1/sqrt(d) scaling, mean-subtracted L1 gate):
  A = tanh(Q K^T) * sigmoid(N - mean_j N), N_ij = -||q_i - k_j||_1, output A V; or plain
  scaled softmax attention (``attention="softmax"``). The user representation is the sum of
  the two attended sets, z = z_r|c + z_c|r, and BOTH decoders decode it. The alignment term
  is computed between z_r|c and z_c|r.
- ``combine="addition"``: z = z_r + z_c, alignment between z_r and z_c.
- ``combine="separate"`` (ADDVAE_dist with ``alignment="distance"``): each side decodes its
  own z; only the alignment term couples them.
- ``alignment="mutual_info"``: a Jensen-Shannon mutual-information bound per concept: the
  pair (a_k, b_k) of the same user and concept is positive, (a_k, b_j), j != k, negative;
  mean over k of E[softplus(-a_k.b_k)] + E[mean_j softplus(a_k.b_j)].
  ``"distance"``: the mean squared L2 distance between a_k and b_k.

Loss of a batch of users: CE_r + beta_r KL_r + content_weight (CE_c + beta_c KL_c)
+ alignment_weight * alignment, with beta = min(cap, step / anneal_steps) counted in
optimisation steps (the official schedule: 20,000 steps to reach the cap, so on small data
beta stays near 0, as in the official run). Scores are the rating decoder's logits.

Deviations from the official code (besides the content side above): the encoder of each side
reads sparse rows (per-(item, concept) weights fed to ``embedding_bag``) instead of dense
(B, n_items) copies, which is the same computation; the decoder mixes concepts with a
log-sum-exp instead of ``log(sum exp)`` (same value, no overflow); the L2 penalties of the
official ``reg_weights`` (0 in run.sh) are left out (``train.weight_decay`` exists); the
user's rows are used as they are in the training matrix (binary in our datasets).

Memory: a batch of B users holds (K, B, n_items) decoder logits per side; never a dense
users x items matrix.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.models.base import TorchRecommender
from cadmr.models.sampling import ShuffledBatches

_EPS = 1e-12  # the floor F.normalize uses


@dataclass(frozen=True)
class ADDVAEParams:
    """Attributes (official ``main.py`` flag in brackets, default from ``run.sh``):
    n_concepts: K, the number of macro concepts (prototypes) of each side [-ncl 4].
    embedding_size: d, the dimension of each concept's user vector and of item embeddings
        [-dim 64].
    hidden: Hidden layer sizes of each side's tanh encoder MLP [-l "200"].
    dropout: Dropout rate on the encoder input [-dr 0.5].
    tau: Temperature of concept assignment and of the decoder's cosine logits [-tau 0.1].
    prior_std: Standard deviation of the Gaussian prior (the scale of the posterior noise),
        rating side [-std 0.075].
    content_prior_std: The same for the content side [-tstd 0.075].
    anneal_cap: Final KL weight beta of the rating side [-ranneal 0.2].
    content_anneal_cap: Final KL weight of the content side [-tanneal 0.2].
    anneal_steps: Optimisation steps to reach ``anneal_cap`` linearly; 0 uses the cap from
        the first step [-rtast 20000].
    content_anneal_steps: The same for the content side [-ttast 20000].
    content_weight: Weight of the content side's loss, lambda_text [-ldr_text 0.2].
    alignment_weight: Weight of the alignment term, lambda_reg [-ldr_reg 0.2].
    combine: "attention", "addition" or "separate" [-cmode attention; "separate" is the
        code's "regularization"].
    alignment: "mutual_info" or "distance" [-rmode mutual_info].
    attention: "coda" (CoDA as run.sh sets it: -coda 1 -scale 0 -stm 1 -stmn 0) or
        "softmax" (scaled dot-product attention, -coda 0).
    gumbel: Sample concept assignments with Gumbel-softmax while training (official nogb
        False); False uses the softmax throughout.
    feature_norm: "center_l2" (centre each modality, unit-length rows), "l2" (unit-length
        rows only) or "none" (raw features), applied per modality before concatenation.
    """

    n_concepts: int = 4
    embedding_size: int = 64
    hidden: tuple[int, ...] = (200,)
    dropout: float = 0.5
    tau: float = 0.1
    prior_std: float = 0.075
    content_prior_std: float = 0.075
    anneal_cap: float = 0.2
    content_anneal_cap: float = 0.2
    anneal_steps: int = 20000
    content_anneal_steps: int = 20000
    content_weight: float = 0.2
    alignment_weight: float = 0.2
    combine: Literal["attention", "addition", "separate"] = "attention"
    alignment: Literal["mutual_info", "distance"] = "mutual_info"
    attention: Literal["coda", "softmax"] = "coda"
    gumbel: bool = True
    feature_norm: Literal["center_l2", "l2", "none"] = "center_l2"

    def __post_init__(self) -> None:
        if self.n_concepts < 1 or self.embedding_size < 1:
            raise ValueError("n_concepts and embedding_size must be positive")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be non-empty positive sizes, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tau <= 0 or self.prior_std <= 0 or self.content_prior_std <= 0:
            raise ValueError("tau, prior_std and content_prior_std must be > 0")
        nonneg = ("anneal_cap", "content_anneal_cap", "anneal_steps", "content_anneal_steps")
        nonneg += ("content_weight", "alignment_weight")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        choices = {
            "combine": ("attention", "addition", "separate"),
            "alignment": ("mutual_info", "distance"),
            "attention": ("coda", "softmax"),
            "feature_norm": ("center_l2", "l2", "none"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.alignment == "mutual_info" and self.n_concepts < 2:
            raise ValueError("alignment='mutual_info' needs n_concepts >= 2 (its negatives)")


@dataclass(frozen=True)
class UserBatch:
    """Attributes:
    users: (B,) int64 indices of the users (rows of the training matrix) in the batch.
    """

    users: np.ndarray


@dataclass(frozen=True)
class SparseRows:
    """A batch of sparse user rows as flat tensors (CSR order: sorted by row).

    Attributes:
        rows: (nnz,) int64 batch row of each entry.
        cols: (nnz,) int64 item of each entry.
        vals: (nnz,) float32 value of each entry.
        starts: (B,) int64 offset of each row's first entry (CSR indptr without its end).
        n_rows: B.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    starts: torch.Tensor
    n_rows: int

    @classmethod
    def from_csr(cls, m: sp.csr_matrix, device: torch.device | None = None) -> SparseRows:
        """Flatten a (B, n_items) CSR matrix, onto ``device`` (the CPU when None)."""
        indptr = m.indptr.astype(np.int64)
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(indptr))
        arrays = (rows, m.indices.astype(np.int64), m.data.astype(np.float32), indptr[:-1].copy())
        rows_t, cols, vals, starts = (torch.from_numpy(a).to(device or "cpu") for a in arrays)
        return cls(rows=rows_t, cols=cols, vals=vals, starts=starts, n_rows=m.shape[0])


def kl_weight(step: int, cap: float, total_steps: int) -> float:
    """Linear KL annealing: min(cap, step / total_steps), or ``cap`` when total_steps is 0."""
    return cap if total_steps <= 0 else min(cap, step / total_steps)


def concept_log_assignment(
    items: torch.Tensor, prototypes: torch.Tensor, tau: float, sample: bool
) -> torch.Tensor:
    """Log of each item's concept distribution, (I, K).

    Args:
        items: (I, d) unit-length item embeddings.
        prototypes: (K, d) unit-length concept prototypes.
        tau: Temperature of the cosine logits.
        sample: Add Gumbel(0, 1) noise (a Gumbel-softmax sample at temperature 1, drawn from
            torch's global generator) instead of the plain softmax.
    """
    logits = items @ prototypes.T / tau  # (I, K)
    if sample:
        logits = logits - torch.empty_like(logits).exponential_().log()  # + Gumbel noise
    return F.log_softmax(logits, dim=1)


def macrid_kl(logvar: torch.Tensor) -> torch.Tensor:
    """KL(q || prior) of MacridVAE up to the constant mean term: (B, K, d) -> scalar.

    0.5 * sum_d (exp(logvar) - logvar - 1), summed over concepts, averaged over users; zero
    when the posterior's scale equals the prior's (logvar = 0)."""
    return 0.5 * (logvar.exp() - logvar - 1.0).sum(dim=(1, 2)).mean()


# elements of one (K, B, items) block of the fused decoder: 1 MiB of float32, so a block's
# logits, their log-sum-exp and, in backward, the concept posteriors stay in cache
MIXTURE_BLOCK_ELEMENTS = 1 << 18


class _MixtureLogits(torch.autograd.Function):
    """``log sum_k exp(z_k . e_i / tau + log_c_ik)`` over item blocks, never forming the
    (K, B, I) logits.

    Composed from torch ops, the decoder wrote the K concept logits of every (user, item)
    and walked them some ten times (scale, add, log-sum-exp, and each op's backward): at
    Electronics size 516 MB per decoder and step, two decoders, which made the elementwise
    passes, not the products, most of an ADDVAE step. Here forward and backward walk the
    items in blocks of ``MIXTURE_BLOCK_ELEMENTS`` (K, B, items) entries, and backward
    recomputes a block's logits (one more product) instead of storing them. The gradient
    of ``out[b, i]`` with respect to the logit of concept k is the concept posterior
    ``p_kbi = exp(logit_kbi - out_bi)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: torch.Tensor, items: torch.Tensor, log_c: torch.Tensor, tau: float
    ) -> torch.Tensor:
        zt = z.detach().transpose(0, 1).contiguous()  # (K, B, d)
        scaled = items.detach() / tau  # (I, d)
        log_ct = log_c.detach().T.contiguous()  # (K, I)
        out = zt.new_empty(zt.shape[1], scaled.shape[0])  # (B, I)
        for i, j, logits in _mixture_blocks(zt, scaled, log_ct):
            torch.logsumexp(logits, dim=0, out=out[:, i:j])
        ctx.save_for_backward(zt, scaled, log_ct, out)
        ctx.tau = tau
        return out

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        zt, scaled, log_ct, out = ctx.saved_tensors
        n_concepts, _, dim = zt.shape
        d_zt = torch.zeros_like(zt)  # (K, B, d)
        d_scaled = torch.empty_like(scaled)  # (I, d)
        d_log_ct = torch.empty_like(log_ct)  # (K, I)
        for i, j, logits in _mixture_blocks(zt, scaled, log_ct):
            # a_kbi = grad_bi * p_kbi: the gradient of logit_kbi
            a = logits.sub_(out[None, :, i:j]).exp_().mul_(grad[None, :, i:j])
            d_zt.baddbmm_(a, scaled[i:j].expand(n_concepts, -1, -1))
            # sum_k a_k^T z_k as one product over the (K * B) rows
            torch.mm(a.reshape(-1, j - i).T, zt.reshape(-1, dim), out=d_scaled[i:j])
            torch.sum(a, dim=1, out=d_log_ct[:, i:j])
        return d_zt.transpose(0, 1), d_scaled / ctx.tau, d_log_ct.T, None


def _mixture_blocks(
    zt: torch.Tensor, scaled: torch.Tensor, log_ct: torch.Tensor
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(start, stop, concept logits (K, B, stop - start)) of the items by column blocks."""
    n_concepts, n_users, _ = zt.shape
    cols = max(1, MIXTURE_BLOCK_ELEMENTS // max(1, n_concepts * n_users))
    for i in range(0, scaled.shape[0], cols):
        j = min(i + cols, scaled.shape[0])
        logits = torch.baddbmm(log_ct[:, None, i:j], zt, scaled[i:j].T.expand(n_concepts, -1, -1))
        yield i, j, logits


def mixture_logits(
    z: torch.Tensor, items: torch.Tensor, log_c: torch.Tensor, tau: float
) -> torch.Tensor:
    """MacridVAE decoder: log sum_k c_ik exp(z_k . e_i / tau) -> (B, I), computed over item
    blocks (``_MixtureLogits``).

    Args:
        z: (B, K, d) user concept vectors.
        items: (I, d) unit-length item embeddings.
        log_c: (I, K) log concept assignments.
        tau: Temperature.
    """
    return _MixtureLogits.apply(z, items, log_c, float(tau))


def sparse_multinomial_nll(logits: torch.Tensor, rows: SparseRows) -> torch.Tensor:
    """-sum_i x_ui log softmax(logits_u)_i averaged over the B users, with x given sparse."""
    log_p = F.log_softmax(logits, dim=1)  # (B, I)
    return -(log_p[rows.rows, rows.cols] * rows.vals).sum() / logits.shape[0]


def jsd_mutual_info_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Negative Jensen-Shannon MI bound between matching concepts of ``a`` and ``b``.

    (B, K, d) each, K >= 2. For concept k, (a_k, b_k) is the positive pair and (a_k, b_j),
    j != k, of the same user the negatives: mean over k and users of
    softplus(-a_k . b_k) + mean_{j != k} softplus(a_k . b_j). Lower means better aligned."""
    k = a.shape[1]
    scores = a @ b.transpose(1, 2)  # (B, K, K)
    eye = torch.eye(k, dtype=torch.bool, device=a.device)
    positive = F.softplus(-scores.diagonal(dim1=1, dim2=2))  # (B, K)
    negative = F.softplus(scores).masked_fill(eye, 0.0).sum(dim=2) / (k - 1)  # (B, K)
    return (positive + negative).mean()


def squared_distance_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over users and concepts of ||a_k - b_k||^2: (B, K, d) each -> scalar."""
    return (a - b).pow(2).sum(dim=2).mean()


def coda_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Compositional de-attention (Tay et al., 2019) as the official run.sh configures it.

    tanh(Q K^T) gates each pair by affinity (no 1/sqrt(d) scaling), times
    sigmoid(N - mean_j N) with N_ij = -||q_i - k_j||_1; the result weights V (no softmax).

    Args:
        q: (B, K, d) queries. k: (B, K, d) keys. v: (B, K, d) values.

    Returns:
        (B, K, d).
    """
    affinity = torch.tanh(q @ k.transpose(1, 2))  # (B, K, K)
    neg_l1 = -torch.cdist(q, k, p=1.0)  # (B, K, K)
    gate = torch.sigmoid(neg_l1 - neg_l1.mean(dim=2, keepdim=True))
    return (affinity * gate) @ v


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention over the K concepts: (B, K, d) each -> (B, K, d)."""
    weights = torch.softmax(q @ k.transpose(1, 2) / q.shape[2] ** 0.5, dim=2)  # (B, K, K)
    return weights @ v


@dataclass
class SideOutput:
    """What one side's encoder produced for a batch.

    Attributes:
        z: (B, K, d) user concept vectors (sampled and normalised, or the means).
        logvar: (B, K, d) posterior log-variances relative to the prior's.
        items: (I, d) unit-length item embeddings used.
        log_c: (I, K) log concept assignments used (the same in encoder and decoder).
    """

    z: torch.Tensor
    logvar: torch.Tensor
    items: torch.Tensor
    log_c: torch.Tensor


class ConceptVAE(nn.Module):
    """One MacridVAE side. With ``feature_dim`` 0 every item has free parameters (rating
    side); otherwise the item embeddings and the encoder's first layer are projections of
    the item features given to ``forward`` (content side; module docstring).

    Args:
        n_items: Number of items (the width of the user rows).
        feature_dim: Dimension of the item features, or 0 for free item parameters.
        hidden: Hidden sizes of the encoder MLP.
        dim: d, the concept vector and item embedding dimension.
        n_concepts: K.
        tau: Temperature.
        dropout: Input dropout rate.
        prior_std: Scale of the posterior noise (the prior's standard deviation).
        gumbel: Sample concept assignments with Gumbel noise while training.
    """

    def __init__(
        self,
        n_items: int,
        feature_dim: int,
        hidden: tuple[int, ...],
        dim: int,
        n_concepts: int,
        tau: float,
        dropout: float,
        prior_std: float,
        gumbel: bool = True,
    ) -> None:
        super().__init__()
        self.dim, self.tau, self.dropout, self.prior_std = dim, tau, dropout, prior_std
        self.n_concepts, self.gumbel = n_concepts, gumbel
        if feature_dim == 0:
            self.item_emb = nn.Parameter(torch.empty(n_items, dim))
            self.first_weight = nn.Parameter(torch.empty(n_items, hidden[0]))  # W_1 rows
            nn.init.xavier_normal_(self.item_emb)
            nn.init.xavier_normal_(self.first_weight)  # same std as nn.Linear(n_items, hidden)
            self.item_proj: nn.Linear | None = None
            self.first_proj: nn.Linear | None = None
        else:
            self.item_proj = _linear(feature_dim, dim)
            self.first_proj = _linear(feature_dim, hidden[0], bias=False)
        self.first_bias = nn.Parameter(torch.empty(hidden[0]).normal_(std=0.01))
        sizes = (*hidden, 2 * dim)
        rest: list[nn.Module] = []
        for d_in, d_out in itertools.pairwise(sizes):
            rest += [nn.Tanh(), _linear(d_in, d_out)]
        self.rest = nn.Sequential(*rest)
        self.prototypes = nn.Parameter(torch.empty(n_concepts, dim))
        nn.init.xavier_normal_(self.prototypes)

    def item_embeddings(self, features: torch.Tensor | None) -> torch.Tensor:
        """(I, d) unit-length item embeddings (free, or projected ``features`` (I, F))."""
        e = self.item_emb if self.item_proj is None else self.item_proj(features)
        return F.normalize(e, dim=1)

    def assignments(
        self, features: torch.Tensor | None, sample: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(items (I, d), log concept assignments (I, K)) of the current parameters."""
        items = self.item_embeddings(features)
        protos = F.normalize(self.prototypes, dim=1)  # (K, d)
        return items, concept_log_assignment(items, protos, self.tau, sample)

    def first_layer(
        self, rows: SparseRows, weights: torch.Tensor, features: torch.Tensor | None
    ) -> torch.Tensor:
        """sum_i w_bki T_i for each (user, concept): weights (nnz, K) -> (B, K, hidden[0]),
        with T the free first-layer rows or the projected item features."""
        n, k = rows.cols.shape[0], self.n_concepts
        # one bag per (concept, user): the user's entries, repeated for each concept
        idx = rows.cols.repeat(k)  # (K * nnz,)
        concepts = torch.arange(k, device=rows.starts.device)
        offsets = (rows.starts[None, :] + n * concepts[:, None]).reshape(-1)  # (K*B,)
        table = self.first_weight if self.first_proj is None else features
        pooled = F.embedding_bag(
            idx, table, offsets, mode="sum", per_sample_weights=weights.T.reshape(-1)
        )  # (K * B, T)
        if self.first_proj is not None:
            pooled = self.first_proj(pooled)
        out = pooled.view(k, rows.n_rows, -1).transpose(0, 1)  # (B, K, hidden[0])
        return out + self.first_bias

    def forward(
        self,
        rows: SparseRows,
        features: torch.Tensor | None,
        stochastic: bool,
        assigned: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> SideOutput:
        """Encode a batch of user rows.

        Args:
            rows: The users' sparse rows.
            features: (I, F) item features (content side) or None.
            stochastic: Training mode: Gumbel concept samples, dropout and posterior noise
                (torch's global generator). False gives the deterministic posterior means.
            assigned: Precomputed ``assignments(features, sample=False)`` (scoring cache).
        """
        if assigned is None:
            assigned = self.assignments(features, stochastic and self.gumbel)
        items, log_c = assigned
        c = log_c.exp()  # (I, K)
        w = rows.vals[:, None] * c[rows.cols]  # (nnz, K) x_u * c_k at the user's items
        sq = w.new_zeros(rows.n_rows, self.n_concepts).index_add_(0, rows.rows, w.pow(2))
        w = w / sq.sqrt().clamp_min(_EPS)[rows.rows]  # each (user, concept) row unit length
        w = F.dropout(w, self.dropout, training=stochastic)
        h = self.rest(self.first_layer(rows, w, features))  # (B, K, 2d)
        mu = F.normalize(h[..., : self.dim], dim=2)
        logvar = -h[..., self.dim :]
        if stochastic:
            noise = torch.randn_like(mu) * self.prior_std * (0.5 * logvar).exp()
            z = F.normalize(mu + noise, dim=2)
        else:
            z = mu
        return SideOutput(z=z, logvar=logvar, items=items, log_c=log_c)


def _linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    """Linear layer initialised as the official code: Xavier-normal weight, N(0, 0.01^2) bias."""
    layer = nn.Linear(d_in, d_out, bias=bias)
    nn.init.xavier_normal_(layer.weight)
    if bias:
        nn.init.normal_(layer.bias, std=0.01)
    return layer


def item_content_matrix(
    features: Mapping[str, np.ndarray], modalities: list[str], norm: str
) -> np.ndarray:
    """(I, sum d_m) float32: each modality centred and/or row-normalised, then concatenated
    in the order of ``modalities``."""
    blocks = []
    for m in modalities:
        b = np.asarray(features[m], dtype=np.float32)
        if norm == "center_l2":
            b = b - b.mean(axis=0, keepdims=True)
        if norm in ("center_l2", "l2"):
            b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), _EPS)
        blocks.append(b)
    return np.concatenate(blocks, axis=1)


class ADDVAE(TorchRecommender):
    """Rating and content disentangled VAEs over user rows, aligned (module docstring)."""

    name = "addvae"
    train_defaults: ClassVar[Mapping[str, Any]] = {"batch_size": 512}  # the official run.sh
    params_cls = ADDVAEParams
    needs_features = True
    # 12 points: K around run.sh's 4, and both weights at run.sh's and main.py's defaults
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "n_concepts": (4, 8),
        "content_weight": (0.2, 1.0),
        "alignment_weight": (0.1, 0.2, 0.5),
    }
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = {
        "alignment_weight": (0.1, 0.2, 0.5)
    }

    def __init__(
        self, params: ADDVAEParams, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)
        p = params
        n_feat = sum(feature_dims[m] for m in self.modalities)
        common = {
            "n_items": n_items,
            "hidden": tuple(p.hidden),
            "dim": p.embedding_size,
            "n_concepts": p.n_concepts,
            "tau": p.tau,
            "dropout": p.dropout,
            "gumbel": p.gumbel,
        }
        self.rating = ConceptVAE(feature_dim=0, prior_std=p.prior_std, **common)
        self.content = ConceptVAE(feature_dim=n_feat, prior_std=p.content_prior_std, **common)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))  # annealing counter
        self.features: torch.Tensor | None = None  # (I, F) item content
        self.rows: sp.csr_matrix | None = None  # (U, I) training rows
        # scoring cache: each side's (items (I, d), log concept assignments (I, K))
        self._cache: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        rows = sp.csr_matrix(self.train_matrix, dtype=np.float32)
        rows.sort_indices()
        self.rows = guard.check(rows, "ADDVAE input")
        content = item_content_matrix(features, self.modalities, self.params.feature_norm)
        self.features = torch.from_numpy(content)
        self._cache = None

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[UserBatch]:
        self._cache = None  # parameters will change
        return ShuffledBatches(self.n_users, batch_size, rng, UserBatch)

    def user_rows(self, users: np.ndarray) -> SparseRows:
        """The training rows of ``users`` (B,) as flat sparse tensors."""
        return SparseRows.from_csr(self.rows[np.asarray(users, dtype=np.int64)], self.device)

    def combine(
        self, rating: torch.Tensor, content: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z for the rating decoder, z for the content decoder, aligned pair a, b), each
        (B, K, d), from the two sides' concept vectors (module docstring)."""
        mode = self.params.combine
        if mode == "separate":
            return rating, content, rating, content
        if mode == "addition":
            z = rating + content
            return z, z, rating, content
        attend = coda_attention if self.params.attention == "coda" else softmax_attention
        content_given_rating = attend(rating, content, content)
        rating_given_content = attend(content, rating, rating)
        z = rating_given_content + content_given_rating
        return z, z, rating_given_content, content_given_rating

    def alignment_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The alignment term between the pair (B, K, d) each (``params.alignment``)."""
        if self.params.alignment == "mutual_info":
            return jsd_mutual_info_loss(a, b)
        return squared_distance_loss(a, b)

    def loss(self, batch: UserBatch) -> torch.Tensor:
        p = self.params
        self._cache = None
        stochastic = self.training
        if stochastic and torch.is_grad_enabled():
            self.step += 1
        step = int(self.step)
        rows = self.user_rows(batch.users)
        r = self.rating(rows, None, stochastic)
        c = self.content(rows, self.features, stochastic)
        z_r, z_c, a, b = self.combine(r.z, c.z)
        rating_loss = sparse_multinomial_nll(
            mixture_logits(z_r, r.items, r.log_c, p.tau), rows
        ) + kl_weight(step, p.anneal_cap, p.anneal_steps) * macrid_kl(r.logvar)
        content_loss = sparse_multinomial_nll(
            mixture_logits(z_c, c.items, c.log_c, p.tau), rows
        ) + kl_weight(step, p.content_anneal_cap, p.content_anneal_steps) * macrid_kl(c.logvar)
        total = rating_loss + p.content_weight * content_loss
        if p.alignment_weight > 0:
            total = total + p.alignment_weight * self.alignment_loss(a, b)
        return total

    @torch.no_grad()
    def prepare_scoring(self) -> None:
        """Cache both sides' item embeddings and concept assignments (deterministic)."""
        self._cache = (
            self.rating.assignments(None, sample=False),
            self.content.assignments(self.features, sample=False),
        )

    @torch.no_grad()
    def score(self, users: np.ndarray) -> torch.Tensor:
        """Rating-decoder logits of every item for ``users`` (B,) -> (B, n_items), from the
        posterior means and softmax concept assignments (deterministic in any mode)."""
        if self._cache is None:
            self.prepare_scoring()
        rows = self.user_rows(users)
        rating_assigned, content_assigned = self._cache
        r = self.rating(rows, None, stochastic=False, assigned=rating_assigned)
        z = r.z  # (B, K, d)
        if self.params.combine != "separate":
            c = self.content(rows, self.features, stochastic=False, assigned=content_assigned)
            z = self.combine(r.z, c.z)[0]
        return mixture_logits(z, r.items, r.log_c, self.params.tau).float()

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self._cache = None
