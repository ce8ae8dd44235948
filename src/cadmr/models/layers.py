"""Shared math of the models: losses, graph operations and kernel layers (STYLE.md)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.models.graphs import sym_normalize


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean of -log sigmoid(pos - neg) (Rendle et al., 2009)."""
    return F.softplus(neg_scores - pos_scores).mean()


def l2_per_example(*embeddings: torch.Tensor) -> torch.Tensor:
    """Sum of squared L2 norms of the given (B, d) embeddings, divided by the batch size
    (MMRec's EmbLoss with norm 2)."""
    batch = embeddings[0].shape[0]
    return sum(e.pow(2).sum() for e in embeddings) / batch


def normalized_bipartite_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """Symmetrically normalised user-item graph D^-1/2 A D^-1/2 of shape (U + I, U + I),
    users first, no self loops (LightGCN, eq. 7). Isolated nodes get zero rows."""
    r = sp.csr_matrix(train, dtype=np.float32)
    return sym_normalize(sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32))


def checked_bipartite_adjacency(
    train: sp.csr_matrix, guard: LeakageGuard, owner: str
) -> torch.Tensor:
    """``normalized_bipartite_adjacency(train)`` passed through the leakage guard (named
    "<owner> adjacency" in its error), as a torch sparse tensor: the graph every LightGCN-style
    model propagates over."""
    adj = normalized_bipartite_adjacency(train)
    return to_torch_sparse(guard.check(adj, f"{owner} adjacency", layout="bipartite"))


def to_torch_sparse(m: sp.spmatrix) -> torch.Tensor:
    """scipy sparse -> torch sparse CSR float32 tensor (fast CPU sparse x dense products)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on mm only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data),
            size=m.shape,
            check_invariants=False,
        )


def propagate_mean(adj: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN propagation: mean of E, AE, A^2E, ..., A^L E. (N, d) -> (N, d)."""
    out = ego
    layer = ego
    for _ in range(n_layers):
        layer = torch.sparse.mm(adj, layer)
        out = out + layer
    return out / (n_layers + 1)


def local_kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """GLocal-K's local kernel k_ij = max(0, 1 - ||u_i - v_j||^2).

    Args:
        u: (n_in, d) input-unit embeddings.
        v: (n_out, d) output-unit embeddings.

    Returns:
        (n_in, n_out) kernel values in [0, 1].
    """
    # 1 - ||u||^2 - ||v||^2 + 2 u.v in one addmm (differentiable at distance 0, unlike cdist);
    # the upper clamp only removes rounding above 1 where the distance is ~0
    base = 1.0 - u.pow(2).sum(1, keepdim=True) - v.pow(2).sum(1)  # (n_in, n_out) broadcast
    return torch.addmm(base, u, v.T, alpha=2.0).clamp_(0.0, 1.0)


class LocalKernelLayer(nn.Module):
    """A dense layer whose weight is sparsified by a learned local kernel (GLocal-K).

    The effective weight is ``W * k`` with ``k = local_kernel(u, v)``: connections between
    input and output units whose embeddings lie further apart than 1 are exactly zero.
    Initialisation: Xavier-uniform ``W``, zero bias, ``u`` and ``v`` ~ N(0, 1e-3^2), so that
    every connection starts with a kernel close to 1 (as in GLocal-K).

    Args:
        n_in: Number of input units.
        n_out: Number of output units.
        kernel_dim: Dimension of the unit embeddings ``u`` and ``v``.
    """

    def __init__(self, n_in: int, n_out: int, kernel_dim: int = 5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.u = nn.Parameter(torch.empty(n_in, kernel_dim))
        self.v = nn.Parameter(torch.empty(n_out, kernel_dim))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.xavier_uniform_(self.weight)
        nn.init.normal_(self.u, std=1e-3)
        nn.init.normal_(self.v, std=1e-3)
        self._shared: torch.Tensor | object | None = None  # see shared_kernels

    def kernel(self) -> torch.Tensor:
        """(n_in, n_out) kernel k (computed once per ``shared_kernels`` block)."""
        if self._shared is not None:
            if self._shared is _EMPTY:
                self._shared = local_kernel(self.u, self.v)
            return self._shared
        return local_kernel(self.u, self.v)

    def effective_weight(self) -> torch.Tensor:
        """(n_in, n_out) weight W * k actually applied."""
        return self.weight * self.kernel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ (W * k) + b``: (B, n_in) dense or torch sparse (CSR/COO) -> (B, n_out)."""
        w = self.effective_weight()
        out = torch.sparse.mm(x, w) if x.layout != torch.strided else x @ w
        return out + self.bias

    def forward_columns(self, x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Only the output units ``cols``: (B, n_in) dense, (C,) int64 -> (B, C), without
        forming the kernel or weight of the other outputs."""
        w = self.weight[:, cols] * local_kernel(self.u, self.v[cols])  # (n_in, C)
        return x @ w + self.bias[cols]

    def penalties(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of W^2, sum of k^2): the terms GLocal-K weighs by lambda_2 and lambda_s."""
        return self.weight.pow(2).sum(), self.kernel().pow(2).sum()


_EMPTY = object()


@contextlib.contextmanager
def shared_kernels(layers: Iterable[LocalKernelLayer]) -> Iterator[None]:
    """Within the block, each layer computes its kernel once and reuses it (forward and
    penalty of one training step share it, and so does autograd); the kernel is the largest
    and slowest intermediate of a step on a real catalogue (I x hidden entries)."""
    layers = list(layers)
    for layer in layers:
        layer._shared = _EMPTY
    try:
        yield
    finally:
        for layer in layers:
            layer._shared = None


def feature_tensor(features: np.ndarray, norm: str = "l2") -> torch.Tensor:
    """A float32 tensor copy of one modality's (I, d) features, its rows scaled to unit L2
    norm when ``norm`` is "l2" (zero rows stay zero), as they are when "none". The models'
    ``feature_norm`` option: modalities come at very different scales (lfm2k's VGGish audio
    rows have norm ~1,500, its MiniLM text rows 1)."""
    x = np.array(features, dtype=np.float32)  # a copy: the dataset's arrays are read-only
    if norm == "l2":
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif norm != "none":
        raise ValueError(f"feature norm must be 'l2' or 'none', got {norm!r}")
    return torch.from_numpy(x)
