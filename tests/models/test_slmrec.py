"""SLMRec: InfoNCE by hand, branch propagation, SSL augmentations, N modalities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from cadmr.models.layers import propagate_mean, to_torch_sparse
from cadmr.models.sampling import PairBatch
from cadmr.models.slmrec import SSL_TASKS, SLMRec, SLMRecParams, info_nce, propagate_dropout
from cadmr.testing import setup_model, small_dataset

MODALITIES = (("a", 3), ("b", 2), ("c", 5))


def _data(n_modalities: int = 2):
    return small_dataset(MODALITIES[:n_modalities])


def _model(data, **params) -> SLMRec:
    return setup_model(SLMRec, SLMRecParams(embedding_size=8, **params), data)


def _batch(data, n: int = 16) -> PairBatch:
    coo = data.train.tocoo()
    return PairBatch(
        torch.from_numpy(coo.row[:n].astype(np.int64)),
        torch.from_numpy(coo.col[:n].astype(np.int64)),
    )


def test_info_nce_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # row 0 logits (1, 1)/0.5 -> -log(1/2); row 1 logits (0, 1)/0.5 -> -log(e^2 / (1 + e^2))
    expected = (math.log(2) + math.log(1 + math.exp(2)) - 2) / 2
    torch.testing.assert_close(info_nce(a, b, 0.5), torch.tensor(expected))


def test_info_nce_identical_views_beat_shuffled_views():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(64, 16), dim=1)
    same = info_nce(x, x, 0.2)
    shuffled = info_nce(x, x[torch.randperm(64)], 0.2)
    assert same < shuffled
    assert same < math.log(64) < shuffled  # log(B): the loss of uninformative logits


def _line_graph() -> torch.Tensor:
    a = sp.random(12, 12, density=0.3, random_state=0, format="csr", dtype=np.float32)
    return to_torch_sparse(a + a.T)


def test_propagate_dropout_without_dropout_is_propagate_mean():
    adj = _line_graph()
    ego = torch.randn(12, 4)
    torch.testing.assert_close(propagate_dropout(adj, ego, 3, 0.0), propagate_mean(adj, ego, 3))


def test_feature_dropout_drops_the_configured_fraction():
    """One layer over the identity graph: out = (x + dropout(x)) / 2, so a dropped entry of
    ones is 0.5 and a kept one (1 + 1 / (1 - p)) / 2."""
    n = 4000
    eye = to_torch_sparse(sp.identity(n, format="csr", dtype=np.float32))
    torch.manual_seed(0)
    out = propagate_dropout(eye, torch.ones(n, 25), 1, 0.3)
    dropped = torch.isclose(out, torch.tensor(0.5)).float().mean().item()
    assert abs(dropped - 0.3) < 0.01
    kept = out[~torch.isclose(out, torch.tensor(0.5))]
    torch.testing.assert_close(kept, torch.full_like(kept, (1 + 1 / 0.7) / 2))


def test_branches_equal_separate_propagations():
    """The wide propagation is N + 1 LightGCN branches sharing the user ego embeddings."""
    data = _data(2)
    model = _model(data)
    d = model.params.embedding_size
    with torch.no_grad():
        out = model.branches()
        for b, item_input in enumerate(model.item_inputs()):
            ego = torch.cat([model.user_emb, item_input])
            alone = propagate_mean(model.adj, ego, model.params.n_layers)
            torch.testing.assert_close(out[:, b * d : (b + 1) * d], alone)


def test_feature_masking_zeroes_one_branch_input():
    data = _data(2)
    model = _model(data, ssl_task="FM")
    inputs = model.item_inputs(masked=2)
    assert torch.count_nonzero(inputs[2]) == 0
    assert torch.count_nonzero(inputs[0]) > 0 and torch.count_nonzero(inputs[1]) > 0


def test_main_loss_by_hand():
    data = _data(2)
    model = _model(data, ssl_alpha=0.0, reg=0.5, temp=0.2)
    batch = _batch(data)
    with torch.no_grad():
        out = model.branches()
        u = model.user_out(out[: data.n_users][batch.users])
        i = model.item_out(out[data.n_users :][batch.items])
        logits = F.normalize(u, dim=1) @ F.normalize(i, dim=1).T / 0.2
        main = (logits.logsumexp(1) - logits.diagonal()).mean()
        squares = sum(w.pow(2).sum() for w in model.parameters())
        torch.testing.assert_close(model.loss(batch), main + 0.5 * 0.5 * squares)


def test_reg_is_adam_weight_decay():
    """The reg term's gradient is reg * theta: one Adam step with ``reg`` in the loss equals
    one Adam step with ``weight_decay=reg`` and ``reg = 0``."""
    data = _data(2)
    batch = _batch(data)
    a = _model(data, reg=0.01, ssl_alpha=0.5)
    b = _model(data, reg=0.0, ssl_alpha=0.5)
    opt_a = torch.optim.Adam(a.parameters(), lr=0.01)
    opt_b = torch.optim.Adam(b.parameters(), lr=0.01, weight_decay=0.01)
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    for (name, wa), wb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(wa, wb, msg=name)


def test_fac_spaces_and_loss_by_hand():
    data = _data(2)
    model = _model(data, ssl_task="FAC", ssl_temp=0.5)
    d = model.params.embedding_size
    assert model.fac_id.out_features == d
    assert model.fac_modality["b"].out_features == d // 2  # the coarsest (last) space
    batch = _batch(data)
    with torch.no_grad():
        rows = model.branches()[data.n_users :][batch.items]
        x1 = model.fac_id(rows[:, :d])
        y1 = model.fac_modality["a"](rows[:, d : 2 * d])
        x2 = model.fac_chain[0](x1)
        y2 = model.fac_modality["b"](rows[:, 2 * d :])
        expected = info_nce(x1, y1, 0.5) + info_nce(x2, y2, 0.5)
        torch.testing.assert_close(model.fac_loss(model.branches(), batch.items), expected)


def test_two_view_loss_is_low_for_identical_views():
    """FD with dropout 0 compares a view with itself: below log(B) for users and items."""
    data = _data(2)
    model = _model(data, ssl_task="FD", dropout_rate=0.0)
    batch = _batch(data)
    with torch.no_grad():
        same = model.two_view_loss(batch, None, None, 0.0)
        torch.manual_seed(0)
        dropped = model.two_view_loss(batch, None, None, 0.9)
    assert same < dropped


@pytest.mark.parametrize("n_modalities", [1, 2, 3])
@pytest.mark.parametrize("task", SSL_TASKS)
def test_every_task_and_modality_count_trains(task, n_modalities):
    data = _data(n_modalities)
    model = _model(data, ssl_task=task)
    batch = next(iter(model.batches(np.random.default_rng(0), 1000)))
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    # a zero-initialised bias still gets a gradient; nothing may be left out
    assert not missing
    scores = model.score(np.arange(4))
    assert scores.shape == (4, data.n_items) and torch.isfinite(scores).all()


def test_mean_fusion_and_concat_widths():
    data = _data(3)
    assert _model(data).user_out.in_features == 4 * 8
    model = _model(data, fusion="mean")
    assert model.user_out.in_features == 8
    loss = model.loss(_batch(data))
    assert torch.isfinite(loss)


def test_features_are_l2_normalised_by_default():
    data = _data(2)
    model = _model(data)
    for m in ("a", "b"):
        torch.testing.assert_close(model.features[m].norm(dim=1), torch.ones(data.n_items))


def test_invalid_params():
    with pytest.raises(ValueError, match="ssl_task"):
        SLMRecParams(ssl_task="XX")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temp"):
        SLMRecParams(ssl_temp=0.0)
