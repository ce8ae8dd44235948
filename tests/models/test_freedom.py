"""FREEDOM: the frozen item graph, degree-sensitive edge pruning, the loss by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from cadmr.data import LeakageGuard
from cadmr.models.freedom import FREEDOM, FREEDOMParams, modality_graph_weights
from cadmr.models.graphs import knn_graph, sym_normalize
from cadmr.models.layers import normalized_bipartite_adjacency
from cadmr.testing import setup_model, small_dataset

MODALITIES = (("image", 6), ("text", 5), ("audio", 4))


def _data(n_modalities: int):  # data2 (conftest.py) is _data(2)
    return small_dataset(MODALITIES[:n_modalities], n_items=24, n_interactions=240)


def _model(data, seed: int = 0, **params) -> FREEDOM:
    return setup_model(
        FREEDOM, FREEDOMParams(**{"embedding_size": 8, "knn_k": 3, **params}), data, seed
    )


def _knn(data, m: str, k: int) -> np.ndarray:
    return sym_normalize(knn_graph(data.features[m].copy(), k)).toarray()


def test_modality_weights_generalise_mm_image_weight():
    w = modality_graph_weights(["image", "text"], "text", 0.9)
    assert w == pytest.approx({"image": 0.1, "text": 0.9})  # MMRec's mm_image_weight 0.1
    w = modality_graph_weights(["audio", "text", "whisper"], "text", 0.9)
    assert w["text"] == 0.9 and w["audio"] == pytest.approx(0.05) == w["whisper"]
    assert modality_graph_weights(["text"], "text", 0.9) == {"text": 1.0}
    assert modality_graph_weights(["a", "b"], "text", 0.9) == {"a": 0.5, "b": 0.5}


def test_item_graph_is_the_weighted_sum_of_binary_normalised_knn_graphs(data2):
    model = _model(data2, primary_weight=0.7)
    assert model.item_adj.layout == torch.sparse_csr  # never a dense I x I matrix
    expected = 0.3 * _knn(data2, "image", 3) + 0.7 * _knn(data2, "text", 3)
    np.testing.assert_allclose(model.item_adj.to_dense().numpy(), expected, atol=1e-6)
    # binary kNN rows sum to k, so each modality's edges weigh 1/k before its weight
    np.testing.assert_allclose(np.unique(_knn(data2, "text", 3)), [0.0, 1 / 3], atol=1e-6)
    assert model.item_adj.values().numel() <= 2 * 3 * data2.n_items


def test_pruning_keeps_the_right_number_of_distinct_edges(data2):
    model = _model(data2, dropout=0.8)
    n_edges = data2.train.nnz
    keep = model.sample_edges(np.random.default_rng(0))
    assert len(keep) == int(n_edges * (1 - 0.8))  # MMRec's count (35 of 180: int(35.99..))
    assert len(np.unique(keep)) == len(keep)
    assert (np.diff(keep) > 0).all() and keep.min() >= 0 and keep.max() < n_edges
    same = model.sample_edges(np.random.default_rng(0))
    np.testing.assert_array_equal(keep, same)  # reproducible from the rng
    assert not np.array_equal(keep, model.sample_edges(np.random.default_rng(1)))


def test_pruning_draws_each_edge_in_proportion_to_inverse_sqrt_degrees():
    """One user with 3 items, another with 1, and an item shared: the first draw picks edge
    e with probability 1 / sqrt(d_u d_i) normalised (MMRec's torch.multinomial)."""
    train = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 0, 1, 1]], dtype=np.float32))
    model = FREEDOM.__new__(FREEDOM)  # only the edge tables matter here
    model.params = FREEDOMParams(dropout=0.8)  # int(5 x 0.2) = 1 edge kept
    coo = train.tocoo()
    model.edge_users, model.edge_items = coo.row.astype(np.int64), coo.col.astype(np.int64)
    d_u, d_i = np.array([3.0, 2.0]), np.array([1.0, 1.0, 2.0, 1.0])
    w = 1 / np.sqrt(d_u[coo.row] * d_i[coo.col])
    model.edge_weights = w
    rng = np.random.default_rng(0)
    draws = 20_000
    counts = np.bincount([model.sample_edges(rng)[0] for _ in range(draws)], minlength=5)
    np.testing.assert_allclose(counts / draws, w / w.sum(), atol=0.01)
    # the edge between the two low-degree nodes (user 1, item 3) is the most often kept
    assert counts.argmax() == np.flatnonzero((coo.row == 1) & (coo.col == 3))[0]


def test_pruning_favours_low_degree_edges_on_real_shaped_data(data2):
    model = _model(data2, dropout=0.5)
    rng = np.random.default_rng(0)
    kept = np.zeros(data2.train.nnz)
    for _ in range(300):
        kept[model.sample_edges(rng)] += 1
    order = np.argsort(model.edge_weights)
    low_weight, high_weight = order[: len(order) // 4], order[-len(order) // 4 :]
    assert kept[high_weight].mean() > kept[low_weight].mean()


def test_pruned_graph_is_the_renormalised_graph_of_the_kept_edges(data2):
    model = _model(data2, dropout=0.6)
    keep = model.sample_edges(np.random.default_rng(3))
    kept = sp.csr_matrix(
        (np.ones(len(keep)), (model.edge_users[keep], model.edge_items[keep])),
        shape=data2.train.shape,
    )
    adj = model.pruned_adjacency(np.random.default_rng(3))
    assert adj.layout == torch.sparse_csr
    expected = normalized_bipartite_adjacency(kept).toarray()
    np.testing.assert_allclose(adj.to_dense().numpy(), expected, atol=1e-6)
    assert adj.values().numel() == 2 * len(keep)


def test_each_epoch_draws_a_new_graph_from_the_batches_rng(data2):
    model = _model(data2, dropout=0.8)
    model.batches(np.random.default_rng(0), 64)
    a = model.train_adj.to_dense()
    model.batches(np.random.default_rng(0), 64)
    torch.testing.assert_close(model.train_adj.to_dense(), a)
    model.batches(np.random.default_rng(1), 64)
    assert not torch.equal(model.train_adj.to_dense(), a)
    full = _model(data2, dropout=0.0)
    full.batches(np.random.default_rng(0), 64)
    assert full.train_adj is full.adj


def test_loss_matches_hand_computation(data2):
    reg = 0.3
    model = _model(data2, reg_weight=reg, dropout=0.5, n_ui_layers=2, n_mm_layers=2)
    batch = next(iter(model.batches(np.random.default_rng(4), 16)))
    with torch.no_grad():
        a = model.train_adj.to_dense()  # the epoch's pruned graph
        s = model.item_adj.to_dense()
        ego = torch.cat([model.user_emb, model.item_emb])
        final = (ego + a @ ego + a @ a @ ego) / 3
        users = final[: data2.n_users]
        items = final[data2.n_users :] + s @ (s @ model.item_emb)
        u, p, n = users[batch.users], items[batch.pos], items[batch.neg]

        def bpr(pos, neg):
            return -F.logsigmoid((u * pos).sum(1) - (u * neg).sum(1)).mean()

        modal = 0.0
        for m in ("image", "text"):
            f = F.normalize(torch.from_numpy(data2.features[m].copy()), dim=1)
            z = f @ model.projections[m].weight.T
            modal = modal + bpr(z[batch.pos], z[batch.neg])
        expected = bpr(p, n) + reg * modal
        torch.testing.assert_close(model.loss(batch), expected, rtol=1e-5, atol=1e-6)


def test_scoring_uses_the_full_graph_not_the_pruned_one(data2):
    model = _model(data2, dropout=0.9)
    model.batches(np.random.default_rng(0), 64)
    users = np.arange(5)
    with torch.no_grad():
        u, i = model.propagate(model.adj)
        torch.testing.assert_close(model.score(users), u[:5] @ i.T)
        u_pruned, i_pruned = model.propagate(model.train_adj)
        assert not torch.allclose(model.score(users), u_pruned[:5] @ i_pruned.T)


@pytest.mark.parametrize("n_modalities", [1, 2, 3])
def test_any_number_of_modalities_trains(n_modalities):
    data = _data(n_modalities)
    model = _model(data, reg_weight=1e-2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(2):
        for batch in model.batches(np.random.default_rng(epoch), 64):
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
    for m in model.modalities:
        assert model.projections[m].weight.grad.any()
    model.prepare_scoring()
    assert torch.isfinite(model.score(np.arange(data.n_users))).all()


def test_feature_scale_and_validation(data2):
    big = {m: 1500.0 * f for m, f in data2.features.items()}
    model = FREEDOM(FREEDOMParams(), data2.n_users, data2.n_items, data2.modalities)
    model.setup(data2.train, big, LeakageGuard(data2))
    norms = model.features["image"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    with pytest.raises(ValueError, match="dropout"):
        FREEDOMParams(dropout=1.0)
    with pytest.raises(ValueError, match="primary_weight"):
        FREEDOMParams(primary_weight=-0.1)
