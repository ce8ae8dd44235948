"""Shared math of the models: losses and graph operations (written once, STYLE.md)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F


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
    a = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    d = sp.diags(inv_sqrt)
    out = sp.csr_matrix(d @ a @ d, dtype=np.float32)
    out.sort_indices()
    return out


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
