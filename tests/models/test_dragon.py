"""DRAGON: the homogeneous graphs, the N-modality combination and the loss, against hand
computations on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from cadmr.config import TrainConfig
from cadmr.data import LeakageGuard
from cadmr.models.dragon import (
    DRAGON,
    DRAGONParams,
    item_graph,
    item_graph_weights,
    user_graph,
)
from cadmr.models.graphs import knn_graph, sym_normalize
from cadmr.models.sampling import TripletBatch
from cadmr.testing import setup_model, small_dataset
from cadmr.train.loop import make_optimizer


def _data(modalities=(("a", 3), ("b", 2)), seed=0):
    return small_dataset(modalities, seed=seed)


def _model(data, **params):
    return setup_model(DRAGON, DRAGONParams(**params), data)


# ------------------------------------------------------------------------- user-user graph


def _tiny_train() -> sp.csr_matrix:
    # u0: {0, 1, 2}, u1: {0, 1}, u2: {2, 3}, u3: {4}
    rows = [0, 0, 0, 1, 1, 2, 2, 3]
    cols = [0, 1, 2, 0, 1, 2, 3, 4]
    return sp.csr_matrix((np.ones(8, dtype=np.float32), (rows, cols)), shape=(4, 5))


def test_user_graph_neighbours_and_softmax_weights():
    g = user_graph(_tiny_train(), k=2).toarray()
    e = math.e
    expected = np.array(
        [
            [0, e**2 / (e**2 + e), e / (e**2 + e), 0],  # shares 2 items with u1, 1 with u2
            [1, 0, 0, 0],  # only u0 shares items with u1
            [1, 0, 0, 0],
            [0, 0, 0, 0],  # u3 shares nothing: a zero row
        ]
    )
    np.testing.assert_allclose(g, expected, rtol=1e-6)


def test_user_graph_keeps_only_top_k():
    g = user_graph(_tiny_train(), k=1)
    assert g[0].indices.tolist() == [1]  # the user with the most shared items
    np.testing.assert_allclose(g[0].data, [1.0])
    assert (np.diff(g.indptr) <= 1).all()


def test_user_graph_does_not_modify_its_input():
    train = _tiny_train()
    train.data[:] = 3.0
    train.data.setflags(write=False)
    user_graph(train, k=2)
    assert (train.data == 3.0).all()


def test_user_graph_at_most_k_entries_and_rows_sum_to_one():
    data = _data()
    g = user_graph(data.train, k=4)
    assert (np.diff(g.indptr) <= 4).all()
    assert g.diagonal().sum() == 0  # nobody is their own neighbour
    sums = np.asarray(g.sum(axis=1)).ravel()
    np.testing.assert_allclose(sums[sums > 0], 1.0, rtol=1e-6)


# ------------------------------------------------------------------------- item-item graph


def test_item_graph_weights_rules():
    np.testing.assert_allclose(item_graph_weights(["image", "text"], 0.1), [0.1, 0.9])
    np.testing.assert_allclose(item_graph_weights(["audio", "text", "whisper"], 0.1), [1 / 3] * 3)
    np.testing.assert_allclose(
        item_graph_weights(["audio", "image", "text"], 0.1), [0.45, 0.1, 0.45]
    )
    np.testing.assert_allclose(item_graph_weights(["image"], 0.1), [1.0])
    np.testing.assert_allclose(item_graph_weights(["a", "b"], 0.1, (1.0, 3.0)), [0.25, 0.75])
    with pytest.raises(ValueError, match="modality_weights"):
        item_graph_weights(["a", "b"], 0.1, (1.0,))


def test_item_graph_is_weighted_sum_of_normalised_knn_graphs():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(25, 4)).astype(np.float32)
    f2 = 1000.0 * rng.normal(size=(25, 7)).astype(np.float32)  # scale does not matter
    single = item_graph([f1], 3, [1.0])
    assert (np.diff(single.indptr) == 3).all()  # sparse: k entries per row
    np.testing.assert_allclose(single.toarray(), sym_normalize(knn_graph(f1, 3)).toarray())
    both = item_graph([f1, f2], 3, [0.25, 0.75])
    assert (np.diff(both.indptr) <= 6).all()
    expected = 0.25 * sym_normalize(knn_graph(f1, 3)) + 0.75 * sym_normalize(knn_graph(f2, 3))
    np.testing.assert_allclose(both.toarray(), expected.toarray(), rtol=1e-6)
    np.testing.assert_allclose(
        item_graph([f1, f2 / 1000.0], 3, [0.25, 0.75]).toarray(), both.toarray(), rtol=1e-6
    )


# ------------------------------------------------------------------------- the model


@pytest.mark.parametrize(
    "modalities",
    [(("text", 6),), (("image", 5), ("text", 3)), (("audio", 4), ("text", 3), ("whisper", 2))],
)
def test_combination_concatenates_one_block_per_modality(modalities):
    data = _data(modalities)
    model = _model(data, embedding_size=4, knn_k=3, user_k=5)
    users, items = model.representations()
    n = len(modalities)
    assert users.shape == (data.n_users, 4 * n)
    assert items.shape == (data.n_items, 4 * n)
    assert model.user_weights.shape == (data.n_users, n)
    assert model.score(np.array([0, 3])).shape == (2, data.n_items)


def _dense_reference(model: DRAGON, data) -> tuple[torch.Tensor, torch.Tensor]:
    """DRAGON's forward pass with dense matrices built from scratch (tiny inputs only)."""
    n_users, n_items = data.n_users, data.n_items
    r = torch.from_numpy(data.train.toarray()).float()  # (U, I)
    a = torch.zeros(n_users + n_items, n_users + n_items)
    a[:n_users, n_users:], a[n_users:, :n_users] = r, r.T
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    a_hat = inv[:, None] * a * inv[None, :]
    blocks_u, blocks_i = [], []
    for j, m in enumerate(sorted(data.features)):
        f = torch.from_numpy(np.array(data.features[m], dtype=np.float32))
        f = f / f.norm(dim=1, keepdim=True)
        x = F.normalize(torch.cat([model.preferences[j], model.mlps[j](f)]), dim=1)
        x = x + a_hat @ x + a_hat @ a_hat @ x  # summed layers 0..2
        blocks_u.append(model.user_weights[:, j : j + 1] * x[:n_users])
        blocks_i.append(x[n_users:])
    u, i = torch.cat(blocks_u, 1), torch.cat(blocks_i, 1)
    # item-item graph: equal weights of the binary, normalised cosine kNN graphs
    s = torch.zeros(n_items, n_items)
    for m in data.features:
        f = F.normalize(torch.from_numpy(np.array(data.features[m], dtype=np.float32)), dim=1)
        knn = torch.zeros(n_items, n_items)
        knn.scatter_(1, torch.topk(f @ f.T, 3, dim=1).indices, 1.0)
        d = knn.sum(1).pow(-0.5)
        s += d[:, None] * knn * d[None, :] / len(data.features)
    # user-user graph: softmax over co-interaction counts of the top 5 other users (ties:
    # lower index first)
    co = r @ r.T
    co.fill_diagonal_(0)
    g = torch.zeros(n_users, n_users)
    for v in range(n_users):
        counts, idx = torch.sort(co[v], descending=True, stable=True)
        counts, idx = counts[:5], idx[:5]
        keep = counts > 0
        if keep.any():
            g[v, idx[keep]] = torch.softmax(counts[keep], 0)
    return u + g @ u, i + s @ i


def test_representations_and_loss_match_a_dense_hand_computation():
    data = _data()
    model = _model(data, embedding_size=4, knn_k=3, user_k=5, reg_weight=0.1)
    with torch.no_grad():
        model.user_weights.uniform_(0.2, 1.0)  # not 1/N, so the weighting shows
        u_ref, i_ref = _dense_reference(model, data)
        users, items = model.representations()
    torch.testing.assert_close(users, u_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(items, i_ref, rtol=1e-4, atol=1e-5)

    batch = TripletBatch(
        torch.tensor([0, 1, 1, 5]), torch.tensor([2, 3, 4, 5]), torch.tensor([6, 7, 8, 9])
    )
    with torch.no_grad():
        u = u_ref[batch.users]
        diff = (u * i_ref[batch.pos]).sum(1) - (u * i_ref[batch.neg]).sum(1)
        ranking = -torch.log2(torch.sigmoid(diff)).mean()
        reg = sum((p[batch.users] ** 2).mean() for p in model.preferences)
        reg = reg + (model.user_weights**2).mean()
        expected = ranking + 0.1 * reg
        torch.testing.assert_close(model.loss(batch), expected, rtol=1e-4, atol=1e-6)


def test_l2_feature_norm_makes_the_model_blind_to_feature_scale():
    data = _data()
    scaled = dict(data.features)
    scaled["a"] = 1500.0 * np.asarray(scaled["a"])

    def reps(features, norm):
        torch.manual_seed(0)
        model = DRAGON(
            DRAGONParams(embedding_size=4, feature_norm=norm),
            data.n_users,
            data.n_items,
            data.modalities,
        )
        model.setup(data.train, features, LeakageGuard(data))
        with torch.no_grad():
            return model.representations()[1]

    torch.testing.assert_close(reps(data.features, "l2"), reps(scaled, "l2"))
    assert not torch.allclose(reps(data.features, "none"), reps(scaled, "none"))


def test_learning_rate_param_overrides_the_train_setting():
    data = _data()
    tc = TrainConfig(learning_rate=0.005)
    assert make_optimizer(_model(data), tc).param_groups[0]["lr"] == 0.005
    assert make_optimizer(_model(data, learning_rate=0.1), tc).param_groups[0]["lr"] == 0.1


def test_default_search_is_mmrec_grid():
    grid = DRAGON.default_search
    assert set(grid) == {"reg_weight", "learning_rate"}
    assert grid["reg_weight"] == grid["learning_rate"] == (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def test_invalid_params_and_weights():
    with pytest.raises(ValueError):
        DRAGONParams(mm_image_weight=1.5)
    with pytest.raises(ValueError):
        DRAGONParams(user_k=0)
    with pytest.raises(ValueError, match="modality_weights"):
        DRAGON(DRAGONParams(modality_weights=(1.0,)), 3, 3, {"a": 2, "b": 2})
    with pytest.raises(ValueError, match="at least one item modality"):
        DRAGON(DRAGONParams(), 3, 3, {})
