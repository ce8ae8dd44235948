"""ADDVAE: concept assignment, sparse encoder, KL, alignment, annealing, modalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cadmr.data import LeakageGuard
from cadmr.models import addvae as addvae_module
from cadmr.models.addvae import (
    ADDVAE,
    ADDVAEParams,
    SparseRows,
    UserBatch,
    coda_attention,
    concept_log_assignment,
    jsd_mutual_info_loss,
    kl_weight,
    macrid_kl,
    mixture_logits,
    squared_distance_loss,
)
from cadmr.testing import setup_model, small_dataset

SMALL = {"n_concepts": 3, "embedding_size": 8, "hidden": (16,)}


def _data(modalities=(("a", 6), ("b", 4)), seed=0):
    return small_dataset(modalities, n_items=25, seed=seed)


def _model(data, **params) -> ADDVAE:
    return setup_model(ADDVAE, ADDVAEParams(**{**SMALL, **params}), data)


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.mark.parametrize("sample", [False, True])
def test_concept_assignment_rows_are_distributions(sample):
    torch.manual_seed(0)
    items = F.normalize(torch.randn(50, 8), dim=1)
    protos = F.normalize(torch.randn(4, 8), dim=1)
    c = concept_log_assignment(items, protos, tau=0.1, sample=sample).exp()
    assert c.shape == (50, 4)
    assert (c >= 0).all()
    torch.testing.assert_close(c.sum(dim=1), torch.ones(50))


def test_gumbel_sample_is_random_and_softmax_is_not():
    items = F.normalize(torch.randn(50, 8), dim=1)
    protos = F.normalize(torch.randn(4, 8), dim=1)
    a = concept_log_assignment(items, protos, 0.1, sample=False)
    torch.testing.assert_close(a, concept_log_assignment(items, protos, 0.1, sample=False))
    torch.testing.assert_close(a, F.log_softmax(items @ protos.T / 0.1, dim=1))
    b = concept_log_assignment(items, protos, 0.1, sample=True)
    assert not torch.allclose(a, b)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert macrid_kl(torch.zeros(5, 3, 4)).item() == 0.0
    assert macrid_kl(torch.full((5, 3, 4), 0.5)).item() > 0
    assert macrid_kl(torch.full((5, 3, 4), -0.5)).item() > 0
    # 0.5 * (e^1 - 1 - 1) per dimension, 3 x 4 dimensions a user
    expected = 0.5 * (np.e - 2.0) * 12
    assert macrid_kl(torch.ones(5, 3, 4)).item() == pytest.approx(expected, rel=1e-6)


def test_distance_alignment_zero_iff_identical():
    a = torch.randn(6, 3, 5)
    assert squared_distance_loss(a, a.clone()).item() == 0.0
    assert squared_distance_loss(a, a + 0.1).item() > 0


def test_mutual_info_alignment_prefers_matching_concepts():
    a = F.normalize(torch.randn(64, 4, 8), dim=2) * 3
    aligned = jsd_mutual_info_loss(a, a.clone())
    shuffled = jsd_mutual_info_loss(a, a[:, [1, 2, 3, 0]])
    assert aligned.item() < shuffled.item()
    # by hand for one concept pair set: softplus(-pos) + mean softplus(neg)
    s = a[0] @ a[0].T
    by_hand = np.mean(
        [
            F.softplus(-s[k, k]) + F.softplus(s[k, [j for j in range(4) if j != k]]).mean()
            for k in range(4)
        ]
    )
    one = jsd_mutual_info_loss(a[:1], a[:1])
    assert one.item() == pytest.approx(float(by_hand), rel=1e-5)


def test_kl_annealing_schedule():
    assert kl_weight(0, 0.2, 100) == 0.0
    assert kl_weight(10, 0.2, 100) == pytest.approx(0.1)
    assert kl_weight(20, 0.2, 100) == pytest.approx(0.2)
    assert kl_weight(10_000, 0.2, 100) == 0.2
    assert kl_weight(0, 0.2, 0) == 0.2


def test_step_counter_counts_training_steps_only(data):
    model = _model(data)
    batch = UserBatch(np.arange(10))
    model.train()
    model.loss(batch).backward()
    model.loss(batch)
    assert int(model.step) == 2
    model.eval()
    model.loss(batch)
    with torch.no_grad():
        model.train()
        model.loss(batch)
    assert int(model.step) == 2
    assert "step" in model.state()  # saved with checkpoints, so --resume keeps the schedule


def _composed_mixture_logits(z, items, log_c, tau):
    """The decoder as torch ops, forming all (K, B, I) concept logits."""
    logits = torch.einsum("bkd,id->kbi", z, items) / tau
    return torch.logsumexp(logits + log_c.T[:, None, :], dim=0)


def test_mixture_logits_is_log_of_weighted_sum():
    z = torch.randn(2, 3, 4)
    items = F.normalize(torch.randn(5, 4), dim=1)
    log_c = torch.log_softmax(torch.randn(5, 3), dim=1)
    expected = torch.log(
        sum(log_c[:, k].exp() * torch.exp(z[:, k] @ items.T / 0.5) for k in range(3))
    )
    torch.testing.assert_close(mixture_logits(z, items, log_c, 0.5), expected)


@pytest.mark.parametrize("block_elements", [1, 40, 1 << 18])  # one item, a few, all at once
def test_blocked_mixture_logits_match_composed_ops(monkeypatch, block_elements):
    """Values and gradients of the item-blocked decoder equal the composed torch ops for
    any block size (the last block shorter), and pass gradcheck."""
    monkeypatch.setattr(addvae_module, "MIXTURE_BLOCK_ELEMENTS", block_elements)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    items = F.normalize(torch.randn(11, 4, generator=gen, dtype=torch.float64), dim=1)
    items.requires_grad_()
    log_c = torch.log_softmax(torch.randn(11, 3, generator=gen, dtype=torch.float64), dim=1)
    log_c.requires_grad_()
    grad = torch.randn(6, 11, generator=gen, dtype=torch.float64)
    out = mixture_logits(z, items, log_c, 0.3)
    expected = _composed_mixture_logits(z, items, log_c, 0.3)
    torch.testing.assert_close(out, expected)
    for got, want in zip(
        torch.autograd.grad(out, (z, items, log_c), grad),
        torch.autograd.grad(expected, (z, items, log_c), grad),
        strict=True,
    ):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda a, b, c: mixture_logits(a, b, c, 0.3), (z, items, log_c))


@pytest.mark.parametrize("side", ["rating", "content"])
def test_sparse_encoder_equals_dense_reference(data, side):
    """The first layer on sparse rows is W_1 applied to each L2-normalised x * c_k."""
    model = _model(data)
    users = np.array([0, 3, 7, 11])
    rows = model.user_rows(users)
    vae = getattr(model, side)
    feats = None if side == "rating" else model.features
    with torch.no_grad():
        _, log_c = vae.assignments(feats, sample=False)
        c = log_c.exp()
        x = torch.from_numpy(model.rows[users].toarray())  # (B, I)
        w = rows.vals[:, None] * c[rows.cols]
        norm = torch.zeros(len(users), 3).index_add_(0, rows.rows, w.pow(2)).sqrt()
        got = vae.first_layer(rows, w / norm[rows.rows], feats)  # (B, K, H)
        table = vae.first_weight if side == "rating" else vae.first_proj(model.features)
        for k in range(3):
            xk = F.normalize(x * c[:, k], dim=1)
            torch.testing.assert_close(got[:, k], xk @ table + vae.first_bias)


def test_content_features_scaled_per_modality():
    data = _data()
    scaled = dict(data.features)
    scaled["a"] = scaled["a"] * 1500.0 + 7.0  # lfm2k-like audio scale, and an offset
    a, b = _model(data), _model(data)
    b.setup(data.train, scaled, LeakageGuard(data))
    torch.testing.assert_close(a.features, b.features, rtol=1e-4, atol=1e-5)
    block = a.features[:, :6]  # modality "a" (sorted first)
    torch.testing.assert_close(block.norm(dim=1), torch.ones(data.n_items))
    none = _model(data, feature_norm="none")
    none.setup(data.train, scaled, LeakageGuard(data))
    assert none.features[:, :6].norm(dim=1).min() > 1000  # raw features kept as they are


def test_scoring_is_deterministic_in_any_mode(data):
    model = _model(data)
    users = np.array([1, 2, 5])
    model.train()
    a = model.score(users)
    b = model.score(users)
    model.eval()
    c = model.score(users)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert a.shape == (3, data.n_items) and torch.isfinite(a).all()


def test_training_loss_is_stochastic_but_eval_loss_is_not(data):
    model = _model(data)
    batch = UserBatch(np.arange(20))
    with torch.no_grad():
        model.train()
        assert model.loss(batch).item() != model.loss(batch).item()
        model.eval()
        assert model.loss(batch).item() == model.loss(batch).item()


@pytest.mark.parametrize(
    "modalities",
    [(("text", 7),), (("audio", 3), ("text", 5)), (("audio", 3), ("text", 5), ("whisper", 4))],
)
def test_one_two_three_modalities(modalities):
    data = _data(modalities)
    model = _model(data)
    assert model.features.shape == (data.n_items, sum(d for _, d in modalities))
    model.train()
    loss = model.loss(next(iter(model.batches(np.random.default_rng(0), 16))))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.content.first_proj.weight.grad.abs().sum() > 0
    assert model.score(np.arange(4)).shape == (4, data.n_items)


@pytest.mark.parametrize("combine", ["attention", "addition", "separate"])
def test_content_reaches_scores_unless_separate(data, combine):
    model = _model(data, combine=combine, alignment="distance")
    users = np.arange(6)
    before = model.score(users)
    with torch.no_grad():
        model.content.first_bias.add_(1.0)  # changes every content concept vector
    model.prepare_scoring()
    after = model.score(users)
    assert torch.equal(before, after) == (combine == "separate")


@pytest.mark.parametrize(
    "params", [{"combine": "separate", "alignment": "distance"}, {"attention": "softmax"}]
)
def test_variants_train(data, params):
    model = _model(data, **params)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    batch = UserBatch(np.arange(30))
    for _ in range(3):
        opt.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)


def test_coda_weights_values_without_softmax():
    q = torch.randn(2, 3, 4)
    out = coda_attention(q, q, torch.eye(3).expand(2, 3, 3))  # identity values: the weights
    assert out.shape == (2, 3, 3)
    assert ((out > -1) & (out < 1)).all()  # tanh times sigmoid, no normalisation
    assert (out.diagonal(dim1=1, dim2=2) > 0).all()  # self-affinity tanh(|q|^2) > 0


def test_sparse_rows_from_csr(data):
    m = data.train[[2, 0]].tocsr()
    rows = SparseRows.from_csr(m)
    dense = torch.zeros(2, data.n_items)
    dense[rows.rows, rows.cols] = rows.vals
    torch.testing.assert_close(dense, torch.from_numpy(m.toarray()))
    assert rows.starts.tolist() == m.indptr[:-1].tolist()


def test_invalid_params():
    with pytest.raises(ValueError, match="n_concepts >= 2"):
        ADDVAEParams(n_concepts=1)
    ADDVAEParams(n_concepts=1, alignment="distance")
    with pytest.raises(ValueError, match="combine"):
        ADDVAEParams(combine="concat")
    with pytest.raises(ValueError, match="dropout"):
        ADDVAEParams(dropout=1.0)
