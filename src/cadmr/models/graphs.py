"""Sparse graphs the multimodal models build: kNN item graphs from features, top-k
co-occurrence neighbours, degree normalisation (docs/conventions.md: shared math lives once).

Every builder works in row blocks, so no dense N x N matrix is ever formed: peak memory is
O(block x N) for the similarities plus O(N x k) for the result. On Electronics (63,001 items)
a dense item-item matrix would take 15.9 GB; a 10-NN graph built here takes a few MB.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from cadmr.logs import progress

DEFAULT_BLOCK = 1024
# feature kNN results kept per process: a grid search or `experiment compare` builds every
# run's graphs from the same features, which at Electronics size (63,001 x 4,480) is
# minutes of matrix products per build; a result is (N, k) indices and similarities
MEMO_ENTRIES = 8
_memo: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()


def sym_normalize(adj: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` with ``D`` the row sums of ``A`` (float32 CSR).

    For a symmetric ``A`` this is the usual symmetric normalisation (LightGCN, eq. 7); for a
    kNN graph (not symmetric) it is the normalisation LATTICE and FREEDOM apply to theirs.
    Rows that sum to zero stay zero.
    """
    a = sp.csr_matrix(adj, dtype=np.float32)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    d = sp.diags(inv_sqrt)
    out = sp.csr_matrix(d @ a @ d, dtype=np.float32)
    out.sort_indices()
    return out


def sym_normalize_values(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int
) -> torch.Tensor:
    """Differentiable ``D^-1/2 A D^-1/2`` of a COO matrix given as (rows, cols, values), with
    ``D`` the row sums; returns the normalised values (same order). Zero rows stay zero."""
    deg = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, rows, values)
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    return inv_sqrt[rows] * values * inv_sqrt[cols]


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float tensor view of ``x`` (no copy of float32 input: 63k x 4,096 image features are
    1 GB). The dataset's arrays are read-only; the builders only read them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.as_tensor(x)
    return t.float() if not t.is_floating_point() or t.dtype == torch.float64 else t


@torch.no_grad()
def knn_neighbours(
    features: np.ndarray | torch.Tensor, k: int, block: int = DEFAULT_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most cosine-similar rows of every row, computed in row blocks.

    A row is its own neighbour when it is among its top ``k`` (the item itself, as in
    LATTICE's and FREEDOM's graphs, where ``topk`` over the full similarity row keeps it).
    Zero rows have cosine 0 to everything.

    Args:
        features: (N, d) features.
        k: Neighbours per row; clipped to N.
        block: Rows per similarity block; peak memory is O(block x N).

    Returns:
        (indices (N, k) int64, cosine similarities (N, k) float32), best first.
    """
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    x = F.normalize(_as_tensor(features), dim=1)  # (N, d)
    n = x.shape[0]
    k = min(k, n)
    idx = torch.empty(n, k, dtype=torch.int64, device=x.device)
    sims = torch.empty(n, k, dtype=torch.float32, device=x.device)
    for start in progress(range(0, n, block), desc=f"feature kNN graph ({n} items)"):
        stop = min(start + block, n)
        s, i = torch.topk(x[start:stop] @ x.T, k, dim=1)  # (b, N) -> (b, k)
        sims[start:stop], idx[start:stop] = s.float(), i
    return idx, sims


def memo_knn_neighbours(
    features: np.ndarray | torch.Tensor, k: int, block: int = DEFAULT_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """``knn_neighbours`` of fixed features, computed once per process for the same
    features (by content), ``k`` and device: the static graphs of LATTICE, FREEDOM, DRAGON
    and CADMR's attention candidates are rebuilt by every run of a grid or of `cadmr
    experiment compare` from the same item features. Returns copies (callers may modify
    them). Not for features that change between calls (LATTICE's learned graph)."""
    x = _as_tensor(features)
    # hashed in place (no copy of a 1 GB feature matrix): about a second at Electronics size
    digest = hashlib.blake2b(x.detach().cpu().contiguous().numpy(), digest_size=16)
    key = (digest.hexdigest(), tuple(x.shape), str(x.dtype), str(x.device), int(k))
    if key not in _memo:
        _memo[key] = knn_neighbours(x, k, block)
        if len(_memo) > MEMO_ENTRIES:
            _memo.popitem(last=False)
    _memo.move_to_end(key)
    idx, sims = _memo[key]
    return idx.clone(), sims.clone()


def knn_graph(
    features: np.ndarray | torch.Tensor,
    k: int,
    weighted: bool = False,
    block: int = DEFAULT_BLOCK,
) -> sp.csr_matrix:
    """Sparse (N, N) kNN graph: row i holds its ``k`` most cosine-similar rows.

    Args:
        features: (N, d) features.
        k: Neighbours per row.
        weighted: Keep the cosine similarities as edge weights (LATTICE) instead of 1
            (FREEDOM, DRAGON).
        block: Rows per similarity block.
    """
    idx, sims = (t.cpu() for t in memo_knn_neighbours(features, k, block))
    n, kk = idx.shape
    data = sims.numpy().ravel() if weighted else np.ones(n * kk, dtype=np.float32)
    rows = np.repeat(np.arange(n), kk)
    out = sp.csr_matrix((data, (rows, idx.numpy().ravel())), shape=(n, n), dtype=np.float32)
    out.sort_indices()
    return out


def normalized_knn_tensor(
    features: torch.Tensor, k: int, block: int = DEFAULT_BLOCK
) -> torch.Tensor:
    """LATTICE's learned graph: the cosine kNN graph of ``features`` (N, d), weighted by the
    similarities and normalised ``D^-1/2 A D^-1/2``, as a torch sparse COO (N, N) tensor whose
    values are differentiable w.r.t. ``features`` (the neighbour choice is not: it is a
    top-k). Peak memory O(block x N + N x k)."""
    idx, _ = knn_neighbours(features.detach(), k, block)  # (N, k)
    n, kk = idx.shape
    x = F.normalize(features, dim=1)
    rows = torch.arange(n, device=idx.device).repeat_interleave(kk)
    cols = idx.reshape(-1)
    values = (x[rows] * x[cols]).sum(1)  # (N k,) cosine, with gradient
    values = sym_normalize_values(rows, cols, values, n)
    indices = torch.stack([rows, cols])  # in range by construction
    return torch.sparse_coo_tensor(indices, values, (n, n), check_invariants=False).coalesce()


def _top_candidates(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int, max_table: int = 1 << 26
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries that can be among their row's ``k`` largest counts: those at or above the
    row's k-th largest count, found from a (rows x counts) histogram. At Electronics size a
    block of 4,096 users co-occurs with 48.5 M (user, user) pairs of which 2.0 M survive,
    so sorting them takes 0.5 s instead of 13 s. Counts must be small non-negative integers
    (co-occurrence counts); a table larger than ``max_table`` skips the filter."""
    if len(vals) == 0:
        return rows, cols, vals
    counts = vals.astype(np.int64)
    width = int(counts.max()) + 1
    n_rows = int(rows.max()) + 1
    if n_rows * width > max_table:
        return rows, cols, vals
    hist = np.bincount(rows * width + counts, minlength=n_rows * width).reshape(n_rows, width)
    at_least = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # [r, c]: entries of r with >= c
    threshold = np.where(at_least >= k, np.arange(width), 0).max(axis=1)  # 0: keep the row
    keep = counts >= threshold[rows]
    return rows[keep], cols[keep], vals[keep]


def _rank_order(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_cols: int) -> np.ndarray:
    """Argsort by row, then larger count, then lower column: one sort of a packed int64 key
    where it fits in 63 bits (a three-key ``lexsort`` otherwise)."""
    if len(vals) == 0:
        return np.zeros(0, dtype=np.int64)
    counts = vals.astype(np.int64)
    top = int(counts.max())
    b_col, b_cnt = max(1, n_cols.bit_length()), max(1, top.bit_length())
    if int(rows.max()).bit_length() + b_cnt + b_col > 63:
        return np.lexsort((cols, -vals, rows))
    key = (rows.astype(np.int64) << (b_cnt + b_col)) | ((top - counts) << b_col) | cols
    return np.argsort(key, kind="stable")


def topk_cooccurrence(
    matrix: sp.spmatrix, k: int, block: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of a binary (N, M) matrix, the ``k`` other rows sharing the most columns
    (e.g. users with the most items in common: DRAGON's user-user graph), in row blocks of
    ``matrix[block] @ matrix.T`` (sparse).

    Returns:
        (indices (N, k) int64, counts (N, k) float32), most shared first; rows with fewer
        than ``k`` co-occurring rows are padded with index -1 and count 0. Ties are broken
        by the lower row index.
    """
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)  # binarised below: not the caller's
    m.data[:] = 1.0
    mt = sp.csr_matrix(m.T)
    n = m.shape[0]
    idx = np.full((n, k), -1, dtype=np.int64)
    counts = np.zeros((n, k), dtype=np.float32)
    for start in progress(range(0, n, block), desc=f"co-occurrence graph ({n} rows)"):
        stop = min(start + block, n)
        co = sp.csr_matrix(m[start:stop] @ mt)  # (b, N) sparse
        rows = np.repeat(np.arange(stop - start), np.diff(co.indptr))
        other = co.indices != rows + start  # not one's own neighbour
        rows, cols, vals = _top_candidates(rows[other], co.indices[other], co.data[other], k)
        order = _rank_order(rows, cols, vals, n)  # by row, most shared, lower index
        rows, cols, vals = rows[order], cols[order], vals[order]
        first = np.searchsorted(rows, np.arange(stop - start))  # each row's first entry
        rank = np.arange(len(rows)) - first[rows]  # position within the row
        keep = rank < k
        idx[start + rows[keep], rank[keep]] = cols[keep]
        counts[start + rows[keep], rank[keep]] = vals[keep]
    return idx, counts
