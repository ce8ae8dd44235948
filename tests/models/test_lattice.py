"""LATTICE: the mixed item graph, its per-epoch rebuild with gradient, the loss by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cadmr.config import TrainConfig
from cadmr.models.graphs import knn_graph, normalized_knn_tensor, sym_normalize
from cadmr.models.lattice import LATTICE, LATTICEParams
from cadmr.testing import setup_model, small_dataset
from cadmr.train.loop import make_optimizer

MODALITIES = (("audio", 6), ("text", 5), ("whisper", 4))


def _data(n_modalities: int):  # data2 (conftest.py) is _data(2)
    return small_dataset(MODALITIES[:n_modalities], n_items=24, n_interactions=240)


def _model(data, seed: int = 0, **params) -> LATTICE:
    return setup_model(
        LATTICE,
        LATTICEParams(**{"embedding_size": 8, "feat_embed_dim": 6, "knn_k": 3, **params}),
        data,
        seed,
    )


def _dense(t: torch.Tensor) -> np.ndarray:
    return t.detach().to_dense().numpy()


def _init_graph(data, m: str, k: int) -> np.ndarray:
    return sym_normalize(knn_graph(data.features[m].copy(), k, weighted=True)).toarray()


def test_initial_graph_is_the_softmax_weighted_sum_of_normalised_knn_graphs(data2):
    model = _model(data2, lambda_coeff=1.0)
    with torch.no_grad():
        model.modal_logits.copy_(torch.tensor([0.3, -1.0]))
    w = torch.softmax(torch.tensor([0.3, -1.0]), 0).numpy()
    expected = w[0] * _init_graph(data2, "audio", 3) + w[1] * _init_graph(data2, "text", 3)
    np.testing.assert_allclose(_dense(model.item_graph()), expected, atol=1e-6)


def test_item_graph_mixes_initial_and_learned_with_lambda(data2):
    lam = 0.7
    model = _model(data2, lambda_coeff=lam)
    with torch.no_grad():
        model.modal_logits.copy_(torch.tensor([0.5, 1.5]))
    w = torch.softmax(model.modal_logits.detach(), 0)
    # learned part by hand: weighted cosine kNN graphs of the projections, summed, normalised
    learned = np.zeros((data2.n_items, data2.n_items))
    for wm, m in zip(w.numpy(), ("audio", "text"), strict=True):
        z = model.projections[m](model.features[m]).detach()
        learned += wm * knn_graph(z, 3, weighted=True).toarray()
    learned = sym_normalize(learned).toarray()
    init = w[0].item() * _init_graph(data2, "audio", 3) + w[1].item() * _init_graph(
        data2, "text", 3
    )
    expected = lam * init + (1 - lam) * learned
    np.testing.assert_allclose(_dense(model.item_graph()), expected, atol=1e-5)


def test_single_modality_learned_graph_is_the_shared_normalized_knn_tensor():
    data = _data(1)
    model = _model(data, lambda_coeff=0.0)
    assert model.modal_logits is None
    z = model.projections["audio"](model.features["audio"])
    expected = _dense(normalized_knn_tensor(z, 3))
    np.testing.assert_allclose(_dense(model.item_graph()), expected, atol=1e-6)


def test_graphs_are_sparse_with_k_entries_per_row_and_modality(data2):
    model = _model(data2)
    g = model.item_graph()
    assert g.layout == torch.sparse_coo and g.shape == (data2.n_items, data2.n_items)
    # 2 modalities x (initial + learned) kNN graphs: at most 4 k entries per row
    assert g._nnz() <= 4 * 3 * data2.n_items
    assert model.adj.layout == torch.sparse_csr
    for idx, val in model._init_graphs:
        assert idx.shape == (2, 3 * data2.n_items) and val.shape == (3 * data2.n_items,)


def test_learned_graph_gets_gradient_on_the_rebuild_batch_only(data2):
    model = _model(data2)
    rng = np.random.default_rng(0)
    first, second = list(model.batches(rng, 64))[:2]
    model.loss(first).backward()
    for name in ("projections.audio.weight", "projections.text.bias", "modal_logits"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert not model._graph.requires_grad  # kept detached for the rest of the epoch
    model.zero_grad(set_to_none=True)
    model.loss(second).backward()
    for name, p in model.named_parameters():
        if name.startswith(("projections", "modal_logits")):
            assert p.grad is None or not p.grad.any(), name
    assert model.item_emb.grad is not None and model.item_emb.grad.any()
    # a new epoch rebuilds it, with gradient again
    first = next(iter(model.batches(rng, 64)))
    model.zero_grad(set_to_none=True)
    model.loss(first).backward()
    assert model.projections["text"].weight.grad.any()


def test_graph_is_rebuilt_once_per_epoch_from_the_current_projections(data2):
    model = _model(data2, lambda_coeff=0.0)
    rng = np.random.default_rng(0)
    batches = list(model.batches(rng, 32))
    model.loss(batches[0])
    graph = model._graph
    with torch.no_grad():
        for p in model.projections.parameters():
            p.add_(torch.randn_like(p))
    model.loss(batches[1])
    assert model._graph is graph  # same epoch: not rebuilt
    model.batches(rng, 32)
    model.loss(batches[0])
    assert not np.allclose(_dense(model._graph), _dense(graph))


def _user_item_graph(train, form: str) -> torch.Tensor:
    """The dense (U + I) square user-item graph, written out: LightGCN's D^-1/2 A D^-1/2, or
    D^-1 (A + I), each row the mean of the node and its neighbours."""
    r = train.toarray()
    u, i = r.shape
    a = np.block([[np.zeros((u, u)), r], [r.T, np.zeros((i, i))]])
    if form == "sym":
        d = a.sum(1)
        inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0.0)
        return torch.from_numpy((inv[:, None] * a * inv[None, :]).astype(np.float32))
    a = a + np.eye(u + i)
    return torch.from_numpy((a / a.sum(1, keepdims=True)).astype(np.float32))


@pytest.mark.parametrize("ui_graph", ["rw_self", "sym"])
def test_loss_matches_hand_computation(data2, ui_graph):
    lam, reg = 0.6, 1e-2
    model = _model(
        data2, lambda_coeff=lam, reg_weight=reg, n_ui_layers=2, n_layers=2, ui_graph=ui_graph
    )
    batch = next(iter(model.batches(np.random.default_rng(1), 16)))
    with torch.no_grad():
        s = torch.from_numpy(model.item_graph().to_dense().numpy())  # (I, I) test-sized
        a = _user_item_graph(data2.train, ui_graph)
        ego = torch.cat([model.user_emb, model.item_emb])
        final = (ego + a @ ego + a @ a @ ego) / 3
        users, items = final[: data2.n_users], final[data2.n_users :]
        items = items + F.normalize(s @ (s @ model.item_emb), dim=1)
        u, p, n = users[batch.users], items[batch.pos], items[batch.neg]
        x = (u * p).sum(1) - (u * n).sum(1)
        squares = u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()
        expected = -F.logsigmoid(x).mean() + reg * 0.5 * squares / len(batch.users)
        torch.testing.assert_close(model.loss(batch), expected, rtol=1e-5, atol=1e-6)


def test_scores_follow_the_parameters_and_survive_a_state_round_trip(data2):
    model = _model(data2)
    users = np.array([0, 3, 29])
    model.prepare_scoring()
    before = model.score(users)
    other = _model(data2, seed=1)
    assert not torch.allclose(other.score(users), before)
    other.load_state(model.state())
    other.prepare_scoring()
    torch.testing.assert_close(other.score(users), before)
    assert set(model.state()) == {n for n, _ in model.named_parameters()}  # no graph in it


@pytest.mark.parametrize("n_modalities", [1, 2, 3])
def test_any_number_of_modalities_trains(n_modalities):
    data = _data(n_modalities)
    model = _model(data)
    assert (model.modal_logits is None) == (n_modalities == 1)
    assert model.modality_weights().sum().item() == pytest.approx(1.0)
    opt = make_optimizer(model, TrainConfig(learning_rate=0.01))
    for epoch in range(2):
        for batch in model.batches(np.random.default_rng(epoch), 64):
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
    model.prepare_scoring()
    assert torch.isfinite(model.score(np.arange(data.n_users))).all()


def test_learning_rate_parameter_overrides_the_training_one(data2):
    tc = TrainConfig(learning_rate=0.5)
    assert make_optimizer(_model(data2), tc).param_groups[0]["lr"] == 0.5
    assert make_optimizer(_model(data2, learning_rate=1e-4), tc).param_groups[0]["lr"] == 1e-4


def test_feature_norm_and_validation(data2):
    model = _model(data2)
    norms = model.features["audio"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    raw = _model(data2, feature_norm="none").features["audio"].numpy()
    np.testing.assert_allclose(raw, data2.features["audio"])
    with pytest.raises(ValueError, match="lambda_coeff"):
        LATTICEParams(lambda_coeff=1.5)
    with pytest.raises(ValueError, match="ui_graph must be 'rw_self' or 'sym'"):
        LATTICEParams(ui_graph="ngcf")
    with pytest.raises(ValueError, match="at least one item modality"):
        LATTICE(LATTICEParams(), 3, 3, {})


def test_checkpoints_from_before_the_graph_choice_load_over_lightgcns_graph(data2, tmp_path):
    from cadmr.train import resolve_run_config, run
    from cadmr.train.checkpoint import load_checkpoint, load_model, save_checkpoint

    params = {"embedding_size": 8, "feat_embed_dim": 6, "knn_k": 3, "ui_graph": "sym"}
    extra = {"train": {"epochs": 1, "progress": False}, "params": params}
    results = run(resolve_run_config("lattice", "d", extra=extra), data2, tmp_path, echo=False)
    ck = load_checkpoint(results["checkpoint"])
    del ck["params"]["ui_graph"]  # as a checkpoint saved before the parameter existed
    save_checkpoint(tmp_path / "old.pt", ck)
    model, _ = load_model(tmp_path / "old.pt", data2)
    assert model.params.ui_graph == "sym"
    trained, _ = load_model(results["checkpoint"], data2)
    users = np.arange(data2.n_users)
    torch.testing.assert_close(model.score(users), trained.score(users))
    assert LATTICE.saved_params({"ui_graph": "rw_self"})["ui_graph"] == "rw_self"
