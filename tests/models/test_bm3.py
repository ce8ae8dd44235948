"""BM3: bootstrap loss by hand, stop-gradient targets, dropout views, N modalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cadmr.models.bm3 import BM3, BM3Params, cosine_loss
from cadmr.models.layers import normalized_bipartite_adjacency
from cadmr.models.sampling import PairBatch
from cadmr.testing import setup_model, small_dataset

MODALITIES = (("a", 3), ("b", 2), ("c", 5))


def _data(n_modalities: int = 2):
    return small_dataset(MODALITIES[:n_modalities])


def _model(data, **params) -> BM3:
    return setup_model(BM3, BM3Params(embedding_size=4, **params), data)


def _batch(data) -> PairBatch:
    coo = data.train.tocoo()
    return PairBatch(
        torch.from_numpy(coo.row[:16].astype(np.int64)),
        torch.from_numpy(coo.col[:16].astype(np.int64)),
    )


def test_cosine_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    # cosines 0 and 1 -> 1 - 0.5
    torch.testing.assert_close(cosine_loss(a, b), torch.tensor(0.5))


def test_target_view_carries_no_gradient():
    x = torch.randn(5, 4, requires_grad=True)
    y = torch.randn(5, 4, requires_grad=True)
    cosine_loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y.grad is None  # stop-gradient on the target

    data = _data()
    model = _model(data)
    assert not model.target(model.user_emb).requires_grad


def test_target_dropout_rate_and_scale():
    data = _data()
    model = _model(data, dropout=0.3)
    torch.manual_seed(1)
    out = model.target(torch.ones(2000, 50))
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.01
    torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 1 / 0.7))


@pytest.mark.parametrize(
    ("n_modalities", "modality_weight", "scale"),
    [(2, "capped", 1.0), (3, "capped", 2 / 3), (3, "sum", 1.0), (1, "capped", 1.0)],
)
def test_loss_equals_hand_computation_without_dropout(n_modalities, modality_weight, scale):
    """dropout 0 makes the target views the detached online embeddings: the loss is then
    the formula of the module docstring, written out densely here. With more than two
    modalities, "capped" scales the feature terms' sum by 2 / M."""
    data = _data(n_modalities)
    model = _model(
        data,
        dropout=0.0,
        n_layers=2,
        reg_weight=0.1,
        cl_weight=2.0,
        modality_weight=modality_weight,
    )
    batch = _batch(data)
    with torch.no_grad():
        model.predictor.bias.normal_()
    adj = torch.from_numpy(normalized_bipartite_adjacency(data.train).toarray())
    ego = torch.cat([model.user_emb, model.item_emb]).detach()
    layers = [ego, adj @ ego, adj @ adj @ ego]
    mean = sum(layers) / 3
    users, items = mean[: data.n_users], mean[data.n_users :] + model.item_emb.detach()
    w, bias = model.predictor.weight.detach(), model.predictor.bias.detach()

    def pred(x):
        return x @ w.T + bias

    def cos(a, b):
        return 1 - F.cosine_similarity(a, b, dim=1).mean()

    hu, hi = users[batch.users], items[batch.items]
    expected = cos(pred(hu), hi) + cos(pred(hi), hu)
    for m, _ in MODALITIES[:n_modalities]:
        f = torch.tensor(data.features[m])
        f = f / f.norm(dim=1, keepdim=True)
        proj = model.projections[m]
        z = f[batch.items] @ proj.weight.detach().T + proj.bias.detach()
        expected = expected + scale * 2.0 * (cos(pred(z), hi) + cos(pred(z), z))
    expected = expected + 0.1 * (users.norm() + items.norm()) / data.n_items
    with torch.no_grad():
        got = model.loss(batch)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_score_is_predicted_user_dot_predicted_item():
    data = _data()
    model = _model(data)
    users = np.array([0, 3, 7])
    with torch.no_grad():
        u, i = model.propagate()
        expected = model.predictor(u)[users] @ model.predictor(i).T
        torch.testing.assert_close(model.score(users), expected)


@pytest.mark.parametrize("n_modalities", [1, 2, 3])
def test_any_number_of_modalities_trains(n_modalities):
    data = _data(n_modalities)
    model = _model(data)
    assert sorted(model.projections) == [m for m, _ in MODALITIES[:n_modalities]]
    batch = next(iter(model.batches(np.random.default_rng(0), 64)))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = model.loss(batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    scores = model.score(np.arange(5))
    assert scores.shape == (5, data.n_items) and torch.isfinite(scores).all()


def test_batches_are_positive_pairs():
    data = _data()
    model = _model(data)
    batches = list(model.batches(np.random.default_rng(0), 50))
    users = torch.cat([b.users for b in batches]).numpy().copy()
    items = torch.cat([b.items for b in batches]).numpy().copy()
    assert len(users) == data.train.nnz
    assert np.all(np.asarray(data.train[users, items]).ravel() == 1)


def test_l2_feature_norm_and_raw():
    data = _data()
    unit = _model(data)
    for m in ("a", "b"):
        torch.testing.assert_close(unit.features[m].norm(dim=1), torch.ones(data.n_items))
    raw = _model(data, feature_norm="none")
    np.testing.assert_allclose(raw.features["a"].numpy(), data.features["a"])


def test_invalid_params():
    with pytest.raises(ValueError, match="dropout"):
        BM3Params(dropout=1.0)
    with pytest.raises(ValueError, match="feature_norm"):
        BM3Params(feature_norm="z")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="modality_weight must be 'capped' or 'sum'"):
        BM3Params(modality_weight="mean")  # type: ignore[arg-type]
