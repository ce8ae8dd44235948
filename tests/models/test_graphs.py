"""Shared sparse graph builders: known answers against dense computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cadmr.models.graphs as graphs
from cadmr.models.graphs import (
    knn_graph,
    knn_neighbours,
    memo_knn_neighbours,
    normalized_knn_tensor,
    sym_normalize,
    topk_cooccurrence,
)
from cadmr.models.layers import normalized_bipartite_adjacency


def _dense_cosine(x: np.ndarray) -> np.ndarray:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


@pytest.mark.parametrize("block", [1, 3, 7, 100])
def test_knn_matches_dense_topk_for_any_block(block):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 5)).astype(np.float32)
    idx, sims = knn_neighbours(x, 4, block=block)
    dense = _dense_cosine(x)
    for i in range(23):
        expected = np.sort(dense[i])[::-1][:4]
        np.testing.assert_allclose(sims[i].numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(dense[i, idx[i].numpy()], expected, atol=1e-5)
    assert (idx[:, 0].numpy() == np.arange(23)).all()  # each row is its own nearest


def test_memo_computes_each_features_neighbours_once(monkeypatch):
    """The same features (by content, not identity) and k: computed once, equal to
    knn_neighbours, returned as copies; other features or another k: computed again."""
    calls = []
    real = graphs.knn_neighbours
    monkeypatch.setattr(
        graphs, "knn_neighbours", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    monkeypatch.setattr(graphs, "_memo", type(graphs._memo)())
    rng = np.random.default_rng(2)
    x = rng.normal(size=(17, 4)).astype(np.float32)
    first = memo_knn_neighbours(x, 3)
    first[0][:] = -1  # the caller's copy, not the memo's
    again = memo_knn_neighbours(x.copy(), 3, block=5)
    want = real(x, 3)
    assert len(calls) == 1
    torch.testing.assert_close(again[0], want[0])
    torch.testing.assert_close(again[1], want[1])
    memo_knn_neighbours(x, 4)
    y = x.copy()
    y[0, 0] += 1.0
    memo_knn_neighbours(y, 3)
    assert len(calls) == 3
    for _ in range(graphs.MEMO_ENTRIES + 2):  # bounded: the oldest entries go
        memo_knn_neighbours(rng.normal(size=(5, 2)).astype(np.float32), 2)
    assert len(graphs._memo) == graphs.MEMO_ENTRIES


def test_knn_graph_is_sparse_with_k_entries_per_row_and_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 6))
    g = knn_graph(x, 5)
    assert sp.issparse(g) and g.shape == (30, 30)
    assert (np.diff(g.indptr) == 5).all() and set(np.unique(g.data)) == {1.0}
    w = knn_graph(x, 5, weighted=True)
    dense = _dense_cosine(x)
    r, c = w.nonzero()
    np.testing.assert_allclose(np.asarray(w[r, c]).ravel(), dense[r, c], atol=1e-5)


def test_knn_clips_k_and_rejects_zero():
    assert knn_neighbours(np.eye(3), 10)[0].shape == (3, 3)
    with pytest.raises(ValueError, match="k must be > 0"):
        knn_neighbours(np.eye(3), 0)


def test_sym_normalize_known_answer():
    a = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    n = sym_normalize(a).toarray()
    d = np.array([2.0, 1.0, 0.0])
    inv = np.divide(1.0, np.sqrt(d), out=np.zeros_like(d), where=d > 0)
    np.testing.assert_allclose(n, inv[:, None] * a.toarray() * inv[None, :], atol=1e-7)


def test_bipartite_adjacency_is_symmetric_normalised():
    r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))
    a = normalized_bipartite_adjacency(r).toarray()
    np.testing.assert_allclose(a, a.T)
    assert a[0, 2] == pytest.approx(1 / np.sqrt(2 * 1))  # user 0 (deg 2) - item 0 (deg 1)
    assert a[0, 3] == pytest.approx(1 / np.sqrt(2 * 2))  # user 0 - item 1 (deg 2)


def test_normalized_knn_tensor_values_and_gradient():
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.normal(size=(12, 4)), dtype=torch.float32, requires_grad=True)
    g = normalized_knn_tensor(x, 3, block=5)
    expected = sym_normalize(knn_graph(x.detach(), 3, weighted=True)).toarray()
    np.testing.assert_allclose(g.to_dense().detach().numpy(), expected, atol=1e-5)
    torch.sparse.mm(g, torch.ones(12, 2)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("block", [1, 2, 50])
def test_topk_cooccurrence_known_answer(block):
    # users 0 and 1 share 2 items, 0 and 2 share 1, user 3 shares nothing
    m = sp.csr_matrix(
        np.array(
            [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=np.float32
        )
    )
    m.data *= 3.0  # counts do not depend on the values, and the input is left as it was
    m.data.flags.writeable = False
    idx, counts = topk_cooccurrence(m, 2, block=block)
    assert set(m.data) == {3.0}
    np.testing.assert_array_equal(idx, [[1, 2], [0, -1], [0, -1], [-1, -1]])
    np.testing.assert_array_equal(counts, [[2, 1], [2, 0], [1, 0], [0, 0]])


def test_topk_cooccurrence_matches_dense():
    m = sp.random(40, 25, density=0.2, random_state=4, format="csr")
    idx, counts = topk_cooccurrence(m, 3, block=7)
    b = (m.toarray() > 0).astype(np.float32)
    co = b @ b.T
    np.fill_diagonal(co, 0)
    for u in range(40):
        expected = np.sort(co[u])[::-1][:3]
        np.testing.assert_array_equal(counts[u], expected)
        valid = idx[u] >= 0
        np.testing.assert_array_equal(co[u, idx[u][valid]], counts[u][valid])


@pytest.mark.parametrize("filtered", [True, False])
def test_topk_cooccurrence_breaks_ties_by_lower_index(monkeypatch, filtered):
    import cadmr.models.graphs as graphs

    if not filtered:  # the candidate filter off: every co-occurring pair is sorted
        monkeypatch.setattr(
            graphs, "_top_candidates", lambda rows, cols, vals, k: (rows, cols, vals)
        )
    m = sp.random(60, 12, density=0.3, random_state=5, format="csr")  # few items: many ties
    idx, counts = topk_cooccurrence(m, 4, block=16)
    b = (m.toarray() > 0).astype(np.int64)
    co = b @ b.T
    for u in range(60):
        ranked = sorted(
            (v for v in range(60) if v != u and co[u, v] > 0), key=lambda v: (-co[u, v], v)
        )
        expected = (ranked + [-1] * 4)[:4]
        np.testing.assert_array_equal(idx[u], expected)
        np.testing.assert_array_equal(counts[u], [co[u, v] if v >= 0 else 0 for v in expected])


def test_feature_tensor_norms_rows_and_copies():
    from cadmr.models.layers import feature_tensor

    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    x.flags.writeable = False  # the dataset's arrays are read-only
    t = feature_tensor(x)
    np.testing.assert_allclose(t.numpy(), [[0.6, 0.8], [0.0, 0.0]])
    raw = feature_tensor(x, "none")
    raw[0, 0] = 7.0
    assert x[0, 0] == 3.0 and t.dtype == torch.float32
    with pytest.raises(ValueError, match="'l2' or 'none'"):
        feature_tensor(x, "max")


def test_symmetric_spmm_gradient_equals_torchs():
    import scipy.sparse as sp
    import torch

    from cadmr.models.layers import normalized_bipartite_adjacency, propagate_mean, to_torch_sparse

    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((30, 20)) < 0.2).astype(np.float32))
    adj = to_torch_sparse(normalized_bipartite_adjacency(train))
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    w = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    mine, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    (propagate_mean(adj, mine, 3) * w).sum().backward()
    out, layer = ref, ref
    for _ in range(3):
        layer = torch.sparse.mm(adj, layer)  # torch's own backward
        out = out + layer
    (out / 4 * w).sum().backward()
    torch.testing.assert_close(mine.grad, ref.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_csr_product_gradient_equals_torchs(dtype):
    from cadmr.models.layers import sparse_mm, to_torch_sparse

    rng = np.random.default_rng(0)
    dense = (rng.random((6, 40)) < 0.1) * rng.random((6, 40))  # some empty rows and columns
    a = to_torch_sparse(sp.csr_matrix(dense))
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)
    g = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=dtype)
    mine, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = sparse_mm(a.to(dtype), mine)
    (out * g).sum().backward()
    (torch.sparse.mm(a.to(dtype), ref) * g).sum().backward()
    torch.testing.assert_close(out, torch.sparse.mm(a.to(dtype), x))
    torch.testing.assert_close(mine.grad, ref.grad)
    assert mine.grad.dtype == dtype


def test_both_transposed_products_agree():
    """The backward's two ways to ``a^T @ x``: scipy on the CPU, the transposed COO form on
    any other device (run here on the CPU, where both exist)."""
    from cadmr.models.layers import _transposed_mm_scipy, _transposed_mm_torch, to_torch_sparse

    rng = np.random.default_rng(2)
    dense = (rng.random((7, 30)) < 0.15) * rng.random((7, 30))
    a = to_torch_sparse(sp.csr_matrix(dense))
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    expected = torch.from_numpy(dense.T.astype(np.float32)) @ x
    torch.testing.assert_close(_transposed_mm_scipy(a, x), expected)
    torch.testing.assert_close(_transposed_mm_torch(a, x), expected)


@pytest.mark.parametrize("chunk", [3, 1 << 18])
def test_learned_graph_product_gradients_equal_torchs(monkeypatch, chunk):
    import cadmr.models.layers as layers

    monkeypatch.setattr(layers, "GRAPH_GRAD_CHUNK", chunk)
    gen = torch.Generator().manual_seed(0)
    indices = torch.tensor([[0, 0, 1, 3, 3, 4], [1, 4, 2, 0, 3, 4]])
    values = torch.rand(6, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    g = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    results = []
    for product in (layers.learned_graph_mm, torch.sparse.mm):
        v, h = values.clone().requires_grad_(), x.clone().requires_grad_()
        graph = torch.sparse_coo_tensor(indices, 2.0 * v, (5, 5), check_invariants=True).coalesce()
        out = product(graph, h)
        (out * g).sum().backward()
        results.append((out.detach(), v.grad, h.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
