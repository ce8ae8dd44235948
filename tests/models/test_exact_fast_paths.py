"""Faster paths that must compute exactly what they replace (issue 22), bit for bit: row
gathers through ``index_select`` (layers.take_rows) against advanced indexing, and sparse
products through ``addmm`` into their own output (layers.csr_mm) against torch.sparse.mm."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cadmr.models import get_model_class, layers
from cadmr.models.layers import csr_mm, sparse_mm, to_torch_sparse
from cadmr.testing import ready_model, small_dataset


def indexed(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The slow path: advanced indexing."""
    return x[index]


@pytest.mark.parametrize("shape", [(50, 8), (50,), (50, 3, 4)])
@pytest.mark.parametrize("index_shape", [(200,), (40, 5)])
def test_values_and_gradients_equal_advanced_indexing(shape, index_shape):
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, shape[0], index_shape, generator=gen)  # many rows repeated
    weight = torch.randn(*index_shape, *shape[1:], generator=gen)
    grads = []
    for gather in (layers.take_rows, indexed):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
        rows = gather(x, index)
        (rows * weight).sum().backward()
        grads.append((rows.detach(), x.grad))
    (fast, fast_grad), (slow, slow_grad) = grads
    assert fast.shape == slow.shape == (*index_shape, *shape[1:])
    assert torch.equal(fast, slow) and torch.equal(fast_grad, slow_grad)


MODELS = ["bpr", "lightgcn", "vbpr", "freedom", "bm3", "lattice", "dragon", "slmrec", "cadmr"]


@pytest.mark.parametrize("name", MODELS)
def test_model_loss_and_gradients_equal_the_indexing_path(name, monkeypatch):
    data = small_dataset()
    module = importlib.import_module(get_model_class(name).__module__)

    def loss_and_grads():
        model = ready_model(name, data)  # default parameters
        model.start_phase(model.phases()[-1])  # CADMR: fine-tuning, where it gathers
        model.train()
        batch = next(iter(model.batches(np.random.default_rng(0), 64)))
        torch.manual_seed(1)  # the same dropout draws on both paths
        loss = model.loss(batch)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    fast, fast_grads = loss_and_grads()
    monkeypatch.setattr(layers, "take_rows", indexed)  # triplet_rows looks it up here
    if hasattr(module, "take_rows"):
        monkeypatch.setattr(module, "take_rows", indexed)
    slow, slow_grads = loss_and_grads()
    assert torch.equal(fast, slow)
    assert fast_grads.keys() == slow_grads.keys() and fast_grads
    for n in fast_grads:
        assert torch.equal(fast_grads[n], slow_grads[n]), n


@pytest.mark.parametrize("transposed", [False, True])
def test_csr_mm_equals_torch_sparse_mm(transposed):
    a = to_torch_sparse(sp.random(300, 200, density=0.05, random_state=0, format="csr"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 200, generator=gen).T if transposed else torch.randn(200, 64, generator=gen)
    assert torch.equal(csr_mm(a, x), torch.sparse.mm(a, x))


def test_sparse_mm_values_and_gradient_equal_torch_sparse_mm():
    a = to_torch_sparse(sp.random(300, 200, density=0.05, random_state=1, format="csr"))
    weight = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    results = []
    for product in (sparse_mm, torch.sparse.mm):
        x = torch.randn(200, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
        out = product(a, x)
        (out * weight).sum().backward()
        results.append((out.detach(), x.grad))
    (fast, fast_grad), (slow, slow_grad) = results
    assert torch.equal(fast, slow)
    torch.testing.assert_close(fast_grad, slow_grad)  # a^T @ g through scipy: other rounding
    with torch.no_grad():
        assert torch.equal(sparse_mm(a, x), torch.sparse.mm(a, x))


def test_csr_rows_are_the_matrix_rows_in_any_order():
    m = sp.random(40, 30, density=0.1, random_state=2, format="csr", dtype=np.float32)
    m[5] = 0  # an empty row
    m.eliminate_zeros()
    a = to_torch_sparse(m)
    rows = torch.tensor([7, 5, 0, 39, 7, 12])  # unsorted, repeated, empty
    sub = layers.csr_rows(a, rows)
    assert sub.layout == torch.sparse_csr and sub.shape == (6, 30)
    assert torch.equal(sub.to_dense(), a.to_dense()[rows])
    assert layers.csr_rows(a, torch.tensor([], dtype=torch.long)).shape == (0, 30)


def _symmetric_graph(n_users: int, n_items: int, seed: int) -> torch.Tensor:
    r = sp.random(n_users, n_items, density=0.05, random_state=seed, format="csr")
    r.data[:] = 1.0
    return to_torch_sparse(layers.normalized_bipartite_adjacency(r))


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
@pytest.mark.parametrize("n_rows", [30, 400])  # the last layer at the rows; the full product
def test_propagate_mean_rows_equals_gathering_the_full_mean(n_layers, n_rows):
    adj = _symmetric_graph(300, 200, seed=3)  # 500 nodes
    gen = torch.Generator().manual_seed(0)
    rows = torch.randperm(500, generator=gen)[:n_rows].sort().values
    weight = torch.randn(n_rows, 16, generator=gen)
    results = []
    for path in ("rows", "full"):
        ego = torch.randn(500, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
        if path == "rows":
            out = layers.propagate_mean_rows(adj, ego, n_layers, rows)
        else:
            out = layers.take_rows(layers.propagate_mean(adj, ego, n_layers), rows)
        (out * weight).sum().backward()
        results.append((out.detach(), ego.grad))
    (fast, fast_grad), (slow, slow_grad) = results
    assert torch.equal(fast, slow) and torch.equal(fast_grad, slow_grad)


def test_lightgcn_loss_at_the_batch_rows_equals_the_full_propagation():
    # a batch of 16 triplets touches under half of the 130 nodes: the row path
    data = small_dataset(n_users=80, n_items=50, n_interactions=600)
    model = ready_model("lightgcn", data)
    batch = next(iter(model.batches(np.random.default_rng(0), 16)))
    rows, _ = layers.distinct_rows(batch.users, batch.pos + 80, batch.neg + 80)
    assert 2 * len(rows) < 130

    def full_loss(batch) -> torch.Tensor:  # the loss as written before the row path
        u, p, n = layers.triplet_rows(*model.propagate(), batch)
        ranking = layers.bpr_loss((u * p).sum(1), (u * n).sum(1))
        ego = layers.triplet_rows(model.user_emb, model.item_emb, batch)
        reg = layers.embedding_penalty(model.params.reg_form, *ego)
        return ranking + model.params.reg_weight * reg

    results = []
    for loss in (model.loss, full_loss):
        model.zero_grad(set_to_none=True)
        value = loss(batch)
        value.backward()
        results.append((value.detach(), model.user_emb.grad, model.item_emb.grad))
    for fast, slow in zip(*results, strict=True):
        assert torch.equal(fast, slow)
