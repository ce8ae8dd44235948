"""CADMR, equation by equation (paper eqs. (1)-(5), docs/CADMR.md decisions).

The shared contract (tests/models/test_contract.py) covers determinism, checkpoints, the
leaked-pair check and the known-answer task; these are CADMR's own checks.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cadmr.data import Dataset, LeakageGuard
from cadmr.data.synthetic import SyntheticSpec, make_content_planted, make_synthetic
from cadmr.models.cadmr import CADMR, CADMRParams, ModalityExtractor
from cadmr.models.disentangle import (
    correlation_matrix,
    decorrelation_penalty,
    gaussian_total_correlation,
)
from cadmr.models.kernel_ae import KernelAE, KernelAEParams
from cadmr.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from cadmr.train.resolve import resolve_run_config
from cadmr.train.trainer import run

SMALL = {"hidden": (16, 8), "latent_dim": 8, "modality_dim": 6, "extractor_hidden": 12}
SMALL_MM = {"latent_dim": 32, "modality_dim": 32, "extractor_hidden": 64}
# the paper's attention: values from the fused features, over every item
FEATURE_VALUES = {"attention_values": "features", "attention_neighbours": 0}


@pytest.fixture(scope="module")
def data() -> Dataset:
    """60 users x 40 items with two modalities of different widths."""
    spec = SyntheticSpec(
        n_users=60,
        n_items=40,
        n_interactions=600,
        n_groups=2,
        modalities=(("text", 10), ("image", 7)),
    )
    return make_synthetic(spec, seed=0)


def ready(data: Dataset, phase: str = "pretrain", **params) -> CADMR:
    torch.manual_seed(0)
    model = CADMR(CADMRParams(**{**SMALL, **params}), data.n_users, data.n_items, data.modalities)
    model.setup(data.train, data.features, LeakageGuard(data))
    model.start_phase(phase)
    return model


# ---------------------------------------------------------------- eq. (1) and (3): shapes


def test_extractor_is_layernorm_linear_act_dropout_twice():
    ext = ModalityExtractor(10, 12, 6, "gelu", 0.2)
    kinds = [type(m).__name__ for m in ext]
    assert kinds == ["LayerNorm", "Linear", "GELU", "Dropout", "Linear", "GELU", "Dropout"]
    assert ext[3].p == ext[6].p == 0.2
    assert ext(torch.randn(5, 10)).shape == (5, 6)


def test_extractor_folds_the_layernorm_into_the_linear_on_constant_features():
    torch.manual_seed(0)
    ext = ModalityExtractor(10, 12, 6, "gelu", 0.0).double()
    with torch.no_grad():  # a trained, non-identity affine map
        ext[0].weight.uniform_(0.5, 1.5)
        ext[0].bias.normal_()
    x = torch.randn(7, 10, dtype=torch.float64)
    grads = []
    for inp in (x, x.clone().requires_grad_()):  # folded, then torch's own Sequential
        ext.zero_grad()
        out = ext(inp)
        (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in ext.parameters()]))
    (folded, g_folded), (plain, g_plain) = grads
    torch.testing.assert_close(folded, plain, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_folded, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ext(x), folded)  # the kept normalisation of x
    x.mul_(2.0)  # changed in place: normalised again (layer norm is scale-invariant...)
    x.add_(torch.arange(10, dtype=x.dtype))  # (...but not shift-invariant per column)
    torch.testing.assert_close(ext(x), ext(x.clone()))


def test_shapes_for_any_modalities(data):
    model = ready(data)
    codes = model.modality_codes()
    assert {m: tuple(h.shape) for m, h in codes.items()} == {"image": (40, 6), "text": (40, 6)}
    assert model.modality_codes(np.array([3, 5]))["text"].shape == (2, 6)
    fused = model.fuse(codes)
    assert fused.shape == (40, 8)
    assert model.context(np.array([1, 2, 3]), fused).shape == (3, 8)
    assert model.refine(np.array([1, 2, 3]), fused).shape == (3, data.n_users)
    assert model(model.refine(np.array([1, 2]), fused)).shape == (2, data.n_users)


def test_one_modality_of_any_width_trains(tmp_path):
    one = make_synthetic(
        SyntheticSpec(
            n_users=40, n_items=30, n_interactions=400, n_groups=2, modalities=(("audio", 3),)
        ),
        seed=0,
    )
    cfg = resolve_run_config(
        "cadmr",
        "one",
        extra={"train": {"epochs": 2, "progress": False}, "params": dict(SMALL)},
    )
    results = run(cfg, one, tmp_path, echo=False)
    assert [p["phase"] for p in results["phases"]] == ["pretrain", "finetune"]
    assert np.isfinite(results["test"]["recall@10"])


def test_no_modality_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one item modality"):
        CADMR(CADMRParams(**SMALL), 5, 4, {})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"heads": 3}, "must divide latent_dim"),
        ({"global_kernel": True}, "option of kernel_ae"),
        ({"refine": "add"}, "refine must be one of"),
        ({"tc_estimator": "kde"}, "tc_estimator must be one of"),
        ({"dropout": 1.0}, "dropout"),
        ({"tc_weight": -1.0}, "tc_weight"),
    ],
)
def test_bad_params_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        CADMRParams(**{**SMALL, **bad})


# ---------------------------------------------------------------- eq. (2): total correlation


def test_total_correlation_near_zero_for_independent_dimensions():
    h = torch.randn(20_000, 8, generator=torch.Generator().manual_seed(0))
    assert float(gaussian_total_correlation(h)) < 0.01
    assert float(decorrelation_penalty(h)) < 0.01


def test_total_correlation_large_for_correlated_dimensions():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5_000, 4, generator=g)
    h = torch.cat([base, base + 0.1 * torch.randn(5_000, 4, generator=g)], dim=1)
    # each copied dimension has correlation 0.995 with its twin: I = -0.5 log(1 - rho^2) each
    expected = 8 * -0.5 * np.log(1 - (1 / np.sqrt(1.01)) ** 2)
    assert float(gaussian_total_correlation(h)) == pytest.approx(expected, rel=0.05)
    assert float(decorrelation_penalty(h)) == pytest.approx(4 * (1 / 1.01), rel=0.05)


def test_total_correlation_is_scale_invariant_and_differentiable():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(500, 5, generator=g)
    h[:, 1] += h[:, 0]
    scaled = h * torch.tensor([1.0, 100.0, 0.01, 3.0, 1.0])
    torch.testing.assert_close(gaussian_total_correlation(h), gaussian_total_correlation(scaled))
    h.requires_grad_(True)
    gaussian_total_correlation(h).backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


def test_constant_dimension_does_not_break_the_estimators():
    h = torch.randn(100, 3)
    h[:, 2] = 1.0
    assert torch.isfinite(gaussian_total_correlation(h))
    assert correlation_matrix(h)[2].abs().max() == 0


# ---------------------------------------------------------------- eq. (4): cross-attention


@pytest.mark.parametrize("norm", [False, True])
def test_attention_rows_sum_to_one_and_match_the_fast_kernel(data, norm):
    model = ready(
        data, phase="finetune", heads=4, attention_norm=norm, value_skip=False, **FEATURE_VALUES
    )
    items = np.array([0, 7, 39])
    weights = model.attention_weights(items)
    assert weights.shape == (4, 3, data.n_items)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(4, 3))
    model.eval()
    with torch.no_grad():
        fused = model.fuse(model.modality_codes())
        att = model.attention
        v = att._split(att.value(fused))  # (heads, I, l / heads)
        by_hand = (weights @ v).transpose(0, 1).reshape(3, -1)
        torch.testing.assert_close(model.context(items, fused), by_hand, rtol=1e-5, atol=1e-6)


def test_residual_refinement_adds_the_interaction_rows(data):
    """R + FFN(CA(R)) with R's nonzeros added into the FFN's output: the same values and
    gradients as the dense sum."""
    model = ready(data, phase="finetune")
    model.eval()  # no dropout: both sums see the same codes
    with torch.no_grad():  # a non-zero refinement (fine-tuning starts from zero)
        model.ffn.weight.normal_(std=0.1)
    items = np.array([3, 0, 7, 3])  # any order, repeats allowed
    fused = model.fuse(model.modality_codes())
    out = model.refine(items, fused)
    out.pow(2).sum().backward()
    grads = [p.grad.clone() for p in model.ffn.parameters()]
    model.zero_grad()
    dense = torch.from_numpy(model.input_matrix[items].toarray()) + model.ffn(
        model.context(items, model.fuse(model.modality_codes()))
    )
    dense.pow(2).sum().backward()
    assert torch.equal(out, dense)
    for got, want in zip(grads, (p.grad for p in model.ffn.parameters()), strict=True):
        torch.testing.assert_close(got, want)


def test_residual_refinement_starts_at_the_pretrained_model(data):
    """Without the output path, fine-tuning starts exactly at the pretrained model (with
    it, the start adds the output path's term, checked by the output path's test)."""
    model = ready(data, phase="pretrain", neighbour_output=0.0)
    model.eval()
    users = np.arange(data.n_users)
    before = model.score(users)
    model.start_phase("finetune")
    torch.testing.assert_close(model.score(users), before)


def test_without_cross_attention_uses_each_items_own_value(data):
    model = ready(data, phase="finetune", use_attention=False)
    model.eval()
    with torch.no_grad():
        fused = model.fuse(model.modality_codes())
        items = np.array([2, 4])
        torch.testing.assert_close(model.context(items, fused), model.attention.value(fused[items]))
    with pytest.raises(ValueError, match="without cross-attention"):
        model.explain_item(0)


def test_value_skip_adds_each_items_own_value_to_the_attention(data):
    plain = ready(data, phase="finetune", value_skip=False, **FEATURE_VALUES)
    skip = ready(data, phase="finetune", value_skip=True, **FEATURE_VALUES)
    plain.eval()
    skip.eval()
    with torch.no_grad():
        items = np.array([5, 1, 5])
        fused = skip.fuse(skip.modality_codes())
        want = plain.context(items, fused) + plain.attention.value(fused[items])
        torch.testing.assert_close(skip.context(items, fused), want)


def content_vectors(data: Dataset, modalities) -> np.ndarray:
    """Each item's modalities centred and scaled to unit length, concatenated and scaled to
    unit length again: the dot product of two rows is the candidates' cosine, written out
    here independently of ``item_content``."""
    x = np.concatenate(
        [
            (f - f.mean(0)) / np.linalg.norm(f - f.mean(0), axis=1, keepdims=True)
            for f in (data.features[m] for m in modalities)
        ],
        axis=1,
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_candidates_are_each_items_nearest_other_items_by_features(data):
    model = ready(data, phase="finetune", attention_neighbours=5)
    x = content_vectors(data, model.modalities)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    assert model.candidates.shape == (data.n_items, 5)
    for i, got in enumerate(model.candidates.numpy()):
        assert set(got) == set(np.argsort(-sim[i])[:5])


@pytest.mark.parametrize("temperature", [0.0, 0.1, 0.5])
def test_content_prior_weights_the_candidates_by_their_similarity(data, temperature):
    """prior_temperature t: each candidate's logit gains cos(i, j) / t, so an attention
    whose own scores are zero weighs the candidates softmax(cos / t): closer ones more;
    without the prior it is uniform."""
    model = ready(
        data, phase="finetune", attention_neighbours=5, heads=2, prior_temperature=temperature
    )
    model.eval()
    x = content_vectors(data, model.modalities)
    with torch.no_grad():  # q = 0: only the prior is left in the logits
        for p in (model.attention.query, model.attention.query_bias):
            p.zero_()
        model.attention.query_own.weight.zero_()
        items = np.array([0, 7, 39])
        weights = model.attention_weights(items)  # (heads, B, I)
    for b, i in enumerate(items):
        cand = model.candidates[i].numpy()
        cos = torch.from_numpy(x[cand] @ x[i]).float()
        want = torch.softmax(cos / temperature, 0) if temperature else torch.full((5,), 0.2)
        for h in range(2):
            torch.testing.assert_close(weights[h, b, cand], want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="prior_temperature"):
        CADMRParams(prior_temperature=-1.0)


def test_rated_attention_mixes_the_candidates_training_rows(data):
    """attention_values="ratings": weights sum to one over the item's candidates (never
    itself), and the refinement adds sum_h gate_h A_h R to R + FFN(V_i)."""
    model = ready(data, phase="finetune", attention_neighbours=5, heads=4)
    model.eval()
    with torch.no_grad():
        model.attention.gates.copy_(torch.tensor([0.5, -1.0, 2.0, 0.3]))
        model.ffn.weight.normal_(std=0.1)
        items = np.array([0, 7, 39, 7])
        weights = model.attention_weights(items)  # (heads, B, I)
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(4, 4))
        outside = torch.ones(4, data.n_items, dtype=torch.bool)
        outside[torch.arange(4)[:, None], model.candidates[items]] = False
        assert (weights[:, outside] == 0).all() and (weights[:, ~outside] > 0).all()
        mixed = torch.einsum("h,hbi->bi", model.attention.gates, weights)
        ratings = torch.from_numpy(model.item_user.toarray())  # the values: R itself
        inputs = torch.from_numpy(model.input_matrix.toarray())  # the autoencoder's rows
        fused = model.fuse(model.modality_codes())
        own = model.ffn(model.attention.value(fused[items]))
        want = inputs[items] + own + mixed @ ratings
        torch.testing.assert_close(model.refine(items, fused), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_output_path_adds_the_attended_rows_shares_to_the_reconstruction(data, reverse):
    """neighbour_output W: the reconstruction gains W x the heads' mean of A_h (R / n_u),
    or with neighbour_reverse W x (A + A^T) / 2 (R / n_u) (item i also gets the rows of the
    items that attend to i, with their weight on i); scoring (the streamed blocks) ranks by
    exactly what training reconstructs."""
    model = ready(
        data,
        phase="finetune",
        attention_neighbours=5,
        heads=4,
        neighbour_output=3.0,
        neighbour_reverse=reverse,
    )
    model.eval()
    with torch.no_grad():
        model.attention.gates.copy_(torch.tensor([0.5, -1.0, 2.0, 0.3]))
        model.attention.key.weight.normal_(generator=torch.Generator().manual_seed(1))
        model.ffn.weight.normal_(std=0.1)
        items = np.arange(data.n_items)
        fused = model.fuse(model.modality_codes())
        a = model.attention_weights(items).mean(dim=0)  # (I, I), zero off the candidates
        assert not torch.allclose(a, a.T)  # k-NN is not symmetric: both cases differ
        mix = (a + a.T) / 2 if reverse else a
        ratings = torch.from_numpy(model.item_user.toarray())
        shares = ratings / ratings.sum(dim=0).clamp(min=1)  # each user's column / n_u
        want = model(model.refine(items, fused)) + 3.0 * mix @ shares  # (I, U)
        torch.testing.assert_close(model.refined_output(items, fused), want, rtol=1e-5, atol=1e-5)
        some = np.array([17, 2, 33, 2])
        torch.testing.assert_close(
            model.refined_output(some, fused), want[some], rtol=1e-5, atol=1e-5
        )
        model.prepare_scoring()
        users = np.array([4, 0, 59, 4])
        torch.testing.assert_close(model.score(users), want[:, users].T, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            model.score_block(users, 7, 19), want[7:19, users].T, rtol=1e-5, atol=1e-5
        )


def test_scoring_computes_each_items_attention_once(data, monkeypatch):
    """prepare_scoring queries every item's attention once, for both of its readers (the
    refined input rows and the output path), not once for each."""
    model = ready(data, phase="finetune", attention_neighbours=5, neighbour_output=3.0)
    model.eval()
    queried = []
    inner = model._rated_attention

    def counting(items, rows, fused):
        queried.extend(np.asarray(items).tolist())
        return inner(items, rows, fused)

    monkeypatch.setattr(model, "_rated_attention", counting)
    model.prepare_scoring()
    assert sorted(queried) == list(range(data.n_items))


@pytest.mark.parametrize(
    "nowhere",
    [{"neighbour_output": 0.0}, {"attention_neighbours": 0}, {"use_attention": False}],
)
def test_reverse_output_path_does_nothing_without_the_output_path(data, nowhere):
    model = ready(data, phase="finetune", neighbour_reverse=True, **nowhere)
    assert not model.output_path and model._reverse is None
    model.eval()
    with torch.no_grad():
        items = np.array([1, 8])
        fused = model.fuse(model.modality_codes())
        torch.testing.assert_close(
            model.refined_output(items, fused), model(model.refine(items, fused))
        )


def test_without_neighbour_output_the_attended_rows_reach_the_input_only(data):
    model = ready(data, phase="finetune", attention_neighbours=5, neighbour_output=0.0)
    assert not model.output_path
    model.eval()
    with torch.no_grad():
        model.attention.gates.fill_(0.5)
        items = np.array([1, 8])
        fused = model.fuse(model.modality_codes())
        torch.testing.assert_close(
            model.refined_output(items, fused), model(model.refine(items, fused))
        )


def test_without_neighbour_input_the_attended_rows_reach_the_output_only(data):
    """neighbour_input=false: the input is R + FFN(V_i) whatever the input gates say, and
    the output path is the same as with the input path on."""
    both = ready(data, phase="finetune", attention_neighbours=5, neighbour_output=3.0)
    out_only = ready(
        data, phase="finetune", attention_neighbours=5, neighbour_output=3.0, neighbour_input=False
    )
    out_only.load_state_dict(both.state_dict())
    items = np.array([1, 8, 30])
    with torch.no_grad():
        for model in (both, out_only):
            model.eval()
            model.attention.gates.fill_(0.5)
            model.ffn.weight.normal_(generator=torch.Generator().manual_seed(0), std=0.1)
        fused = out_only.fuse(out_only.modality_codes())
        rows = torch.from_numpy(out_only.query_rows[items].toarray())
        want = rows + out_only.ffn(out_only.context(items, fused, out_only.query_rows[items]))
        torch.testing.assert_close(out_only.refine(items, fused), want)
        assert not torch.allclose(both.refine(items, fused), want)
        path = out_only.refined_output(items, fused) - out_only(want)
        torch.testing.assert_close(
            path,
            both.refined_output(items, fused) - both(both.refine(items, fused)),
            rtol=1e-5,
            atol=1e-5,
        )
        assert path.abs().sum() > 0


@pytest.mark.parametrize(
    "nowhere",
    [
        {"neighbour_output": 0.0},
        {"attention_neighbours": 0},
        {"attention_values": "features", "attention_neighbours": 0},
    ],
)
def test_neighbour_input_off_needs_the_output_path(nowhere):
    with pytest.raises(ValueError, match="neighbour_input=false"):
        CADMRParams(neighbour_input=False, **nowhere)


def test_rated_attention_over_every_item_leaves_out_the_item_itself(data):
    model = ready(data, phase="finetune", attention_neighbours=0)
    items = np.array([3, 12])
    weights = model.attention_weights(items)
    assert weights.shape == (4, 2, data.n_items)
    assert (weights[:, [0, 1], items] == 0).all()
    assert (weights.sum(dim=-1) - 1).abs().max() < 1e-5 and (weights > 0).sum() == 4 * 2 * 39


def test_attention_neighbours_need_rating_values():
    with pytest.raises(ValueError, match="attention_neighbours applies"):
        CADMRParams(attention_values="features", attention_neighbours=5)


def test_denoising_hides_the_same_entries_from_the_query_and_the_input(data, monkeypatch):
    """While training, the dropped entries of R are gone from the autoencoder's input AND
    from the cross-attention's query (a held-out user is absent from both at test time)."""
    model = ready(data, phase="finetune", input_dropout=0.5)
    model.batches(np.random.default_rng(0), 8)
    model.train()
    seen = []
    real = model.context

    def spy(items, fused, rows=None):
        seen.append(rows)
        return real(items, fused, rows)

    monkeypatch.setattr(model, "context", spy)
    items = np.arange(12)
    with torch.no_grad():
        model.ffn.weight.zero_()
        model.ffn.bias.zero_()
        out = model.refine(items, model.fuse(model.modality_codes()), corrupt=True)
    (query_rows,) = seen
    assert query_rows.nnz < model.item_user[items].nnz  # something was dropped
    np.testing.assert_array_equal(out.numpy(), query_rows.toarray())  # the same draw


def test_active_init_scales_the_query_like_the_first_layer(data):
    model = ready(data, input_init="active")
    torch.testing.assert_close(model.attention.query.std(), model.encoder[0].weight.std())


def test_scoring_attends_in_query_blocks(data, monkeypatch):
    """Never an I x I attention: the query side is at most ``scoring_block`` items."""
    model = ready(data, phase="finetune", **FEATURE_VALUES)
    model.scoring_block = 7
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.shape[-2], k.shape[-2]))  # (..., sequence, head dim)
        assert q.dim() == 4  # torch's fused CPU kernel; 3-d inputs take the slow math path
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model.eval()
    model.prepare_scoring()
    assert max(q for q, _ in seen) <= 7 and all(k == data.n_items for _, k in seen)
    assert sum(q for q, _ in seen) == data.n_items


# ---------------------------------------------------------------- eq. (5) and the phases


def _groups(model: CADMR) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    for name, _ in model.named_parameters():
        groups.setdefault(name.split(".")[0], set()).add(name)
    return groups


def _reached(model: CADMR, steps: int = 2) -> set[str]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reached: set[str] = set()
    model.train()
    for _ in range(steps):
        batch = next(iter(model.batches(np.random.default_rng(0), 16)))
        opt.zero_grad()
        model.loss(batch).backward()
        reached |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
        opt.step()
    return reached


def test_pretraining_trains_autoencoder_and_extractors_not_attention(data):
    model = ready(data, phase="pretrain")
    reached = _reached(model)
    groups = _groups(model)
    for g in ("encoder", "decoder", "extractors", "fusion", "align_head"):
        assert groups[g] <= reached, g
    assert not (groups["attention"] | groups["ffn"]) & reached


def test_finetuning_reaches_every_group_end_to_end(data):
    model = ready(data, phase="finetune")
    reached = _reached(model)
    groups = _groups(model)
    for g in ("encoder", "decoder", "extractors", "fusion", "attention", "ffn"):
        assert groups[g] <= reached, g


def test_finetune_loss_is_mse_plus_penalty_plus_lambda_tc(data):
    model = ready(data, phase="finetune", tc_weight=0.5)
    model.eval()  # no dropout: both sides see the same codes
    items = np.arange(10)
    from cadmr.models.kernel_ae import ItemBatch

    with torch.no_grad():
        codes = model.modality_codes()
        out = model.refined_output(items, model.fuse(codes))
        target = model.target_rows(items)
        weight = 1 + (model.params.pos_weight - 1) * target  # positives weighted (default 10)
        mse = (weight * (out - target) ** 2).mean()
        tc = gaussian_total_correlation(codes["image"]) + gaussian_total_correlation(codes["text"])
        expected = mse + model.penalty() + 0.5 * tc
        torch.testing.assert_close(model.loss(ItemBatch(items)), expected)


def test_reconstruct_objective_trains_its_heads(data):
    model = ready(data, extractor_objective="reconstruct")
    assert _groups(model)["reconstruct_heads"] <= _reached(model)


def autoencoder_and_cadmr(
    data: Dataset, tmp_path, common: dict, ae_params: dict, cadmr_params: dict
) -> tuple[dict, dict]:
    """Results of kernel_ae and of CADMR trained on ``data`` with the same seed and
    training settings ``common``."""
    runs = []
    for model, params in (("kernel_ae", ae_params), ("cadmr", cadmr_params)):
        config = resolve_run_config(model, "d", extra={**common, "params": params})
        runs.append(run(config, data, tmp_path / model, echo=False))
    return runs[0], runs[1]


def test_pretraining_phase_is_the_autoencoder_alone(data, tmp_path):
    """Same seed: CADMR's pretraining reproduces kernel_ae's validation curve exactly."""
    common = {"train": {"epochs": 3, "progress": False}}
    ae_params = {"hidden": [16, 8]}
    ae, full = autoencoder_and_cadmr(data, tmp_path, common, ae_params, SMALL)
    assert full["phases"][0]["valid"] == ae["valid"]
    assert full["phases"][0]["best_epoch"] == ae["best_epoch"]


# ---------------------------------------------------------------- leakage guard


def test_query_and_autoencoder_rows_pass_the_guard(data, monkeypatch):
    checked = []
    real = LeakageGuard.check

    def spy(self, matrix, what, layout="user_item"):
        checked.append((what, layout))
        return real(self, matrix, what, layout)

    monkeypatch.setattr(LeakageGuard, "check", spy)
    ready(data)
    assert ("CADMR cross-attention query", "item_user") in checked
    assert ("kernel AE input/target", "item_user") in checked


def test_leaked_pair_in_query_rows_is_refused(data):
    model = CADMR(CADMRParams(**SMALL), data.n_users, data.n_items, data.modalities)
    v = data.valid.tocoo()
    leaked = sp.csr_matrix(
        data.train + sp.csr_matrix(([1.0], ([v.row[0]], [v.col[0]])), shape=data.train.shape)
    )
    from cadmr.data.leakage import LeakageError

    with pytest.raises(LeakageError):
        model.setup(leaked, data.features, LeakageGuard(data))


# ---------------------------------------------------------------- explanations


def test_explanations(data, tmp_path):
    cfg = resolve_run_config(
        "cadmr", "d", extra={"train": {"epochs": 2, "progress": False}, "params": SMALL}
    )
    results = run(cfg, data, tmp_path, echo=False)
    model, _ = load_model(results["checkpoint"], data)
    with torch.no_grad():  # a refinement that moves the scores, whatever fine-tuning kept
        torch.nn.init.normal_(model.ffn.weight, std=0.5)
    exp = model.explain_item(3, top=5)
    weights = [w for _, w in exp.attended]
    assert len(exp.attended) == 5 and weights == sorted(weights, reverse=True)
    full = model.attention_weights(np.array([3])).mean(dim=0)[0]
    assert exp.attended[0][0] == int(full.argmax())
    assert set(exp.modalities) == {"image", "text"}
    assert sum(exp.modalities.values()) == pytest.approx(1.0)
    assert exp.uniform == pytest.approx(1 / 10)  # over its 10 neighbours (the default)

    user = model.explain_user(0, k=4, top=3)
    recommended = [i for i, _ in user.recommended]
    assert len(recommended) == 4 and not set(recommended) & set(data.train[0].indices)
    assert sum(user.modalities.values()) == pytest.approx(1.0)
    with pytest.raises(IndexError):
        model.explain_item(data.n_items)

    # the output path's attention reads the features: occluding one moves the scores
    assert min(model.explain_user(0, k=4).modalities.values()) > 0
    with torch.no_grad():  # a zero refinement: no modality changes the scores
        model.ffn.weight.zero_()
        model.ffn.bias.zero_()
        model.attention.gates.zero_()
    # the input path now adds nothing; the item's shares still see the output path
    assert min(model.explain_item(3).modalities.values()) > 0
    model.params = dataclasses.replace(model.params, neighbour_output=0.0)
    assert set(model.explain_user(0, k=4).modalities.values()) == {0.0}
    assert set(model.explain_item(3).modalities.values()) == {0.0}

    pretrained, _ = load_model(tmp_path / "best-pretrain.pt", data)
    with pytest.raises(ValueError, match="fine-tuned"):
        pretrained.explain_item(0)


def test_checkpoints_from_before_rating_values_load_with_feature_values(data, tmp_path):
    cfg = resolve_run_config(
        "cadmr",
        "d",
        extra={"train": {"epochs": 1, "progress": False}, "params": {**SMALL, **FEATURE_VALUES}},
    )
    results = run(cfg, data, tmp_path, echo=False)
    ck = load_checkpoint(results["checkpoint"])
    for key in FEATURE_VALUES:  # as a checkpoint saved before these parameters existed
        del ck["params"][key]
    save_checkpoint(tmp_path / "old.pt", ck)
    model, _ = load_model(tmp_path / "old.pt", data)
    assert model.params.attention_values == "features" and not model.rated_attention
    assert CADMR.saved_params({"attention_values": "ratings"})["attention_values"] == "ratings"
    assert CADMR.saved_params({})["input_norm"] == "none"  # the autoencoder's upgrade too


def test_checkpoints_from_before_the_output_path_load_without_it(data, tmp_path):
    extra = {"train": {"epochs": 1, "progress": False}, "params": {**SMALL}}
    results = run(resolve_run_config("cadmr", "d", extra=extra), data, tmp_path, echo=False)
    ck = load_checkpoint(results["checkpoint"])
    assert ck["params"]["neighbour_output"] > 0
    del ck["params"]["neighbour_output"]  # as saved before the parameter existed
    save_checkpoint(tmp_path / "old.pt", ck)
    model, _ = load_model(tmp_path / "old.pt", data)
    assert model.params.neighbour_output == 0 and not model.output_path


def test_kernel_ae_params_are_a_subset():
    """CADMR's autoencoder settings are kernel_ae's: one config vocabulary for both."""
    ae_fields = set(KernelAEParams.__dataclass_fields__)
    assert ae_fields < set(CADMRParams.__dataclass_fields__)
    assert issubclass(CADMR, KernelAE)


def test_finetune_batch_size_applies_to_the_finetune_phase_only(data):
    model = ready(data, phase="pretrain", finetune_batch_size=25)
    sizes = [len(b.items) for b in model.batches(np.random.default_rng(0), 10)]
    assert sizes == [10, 10, 10, 10]
    model.start_phase("finetune")
    assert [len(b.items) for b in model.batches(np.random.default_rng(0), 10)] == [25, 15]


def test_frozen_autoencoder_is_left_out_of_the_finetune_optimizer(data):
    from cadmr.config import TrainConfig

    model = ready(data, phase="finetune", finetune_autoencoder=False)
    optimizer = model.make_optimizer(TrainConfig())
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    ae = {id(p) for layer in model.kernel_layers() for p in layer.parameters()}
    assert not optimized & ae
    assert {id(p) for p in model.attention.parameters()} <= optimized
    assert optimizer.defaults["betas"] == (0.9, 0.99) and optimizer.defaults["eps"] == 1e-6


def test_resume_inside_fine_tuning_matches_an_uninterrupted_run(data, tmp_path, crash_while_saving):
    """Dropout, the numpy batch order and both optimizers continue exactly after a crash."""
    cfg = resolve_run_config(
        "cadmr", "d", extra={"train": {"epochs": 3, "progress": False}, "params": SMALL}
    )
    full = run(cfg, data, tmp_path / "full", echo=False)
    disarm = crash_while_saving(phase=1, epoch=2)  # after fine-tuning epoch 1
    with pytest.raises(KeyboardInterrupt):
        run(cfg, data, tmp_path / "part", echo=False)
    disarm()
    resumed = run(cfg, data, tmp_path / "part", resume=True, echo=False)
    assert "resumed from" in (tmp_path / "part" / "train.log").read_text()
    assert [p["valid"] for p in resumed["phases"]] == [p["valid"] for p in full["phases"]]
    assert resumed["test"] == full["test"]

    def losses(d):
        lines = (tmp_path / d / "history.jsonl").read_text().splitlines()
        return [(h["phase"], h["epoch"], h["loss"]) for h in map(json.loads, lines)]

    assert losses("part") == losses("full")  # the training losses, epoch by epoch


# ---------------------------------------------------------------- the planted signal


@pytest.fixture(scope="module")
def planted() -> Dataset:
    return make_content_planted(n_users=200, n_items=400)


def test_multimodal_part_finds_what_only_the_features_reveal(planted, tmp_path):
    """Every item has ONE training user, so no two users share an item and the ratings say
    nothing about who belongs together; the features reveal each item's group. The
    autoencoder alone ranks at random (Recall@20 about 20 / 400 = 0.05 per held-out item;
    measured 0.0375); CADMR with its defaults learns the groups from the features (0.1125;
    0.2125 when the autoencoder is fine-tuned too; ranking the user's group first and
    randomly within it would give about 20 / 98 = 0.2)."""
    common = {"train": {"epochs": 40, "patience": 10, "progress": False}}
    small = {"hidden": [64, 64]}
    ae, full = autoencoder_and_cadmr(planted, tmp_path, common, small, {**small, **SMALL_MM})
    assert ae["test"]["recall@20"] < 0.06
    assert full["test"]["recall@20"] > max(0.09, 2 * ae["test"]["recall@20"])
    assert full["selected_phase"] == "finetune"


# ---------------------------------------------------------------- the ranking fine-tuning loss


def test_in_batch_softmax_is_each_users_log_likelihood_over_the_batch_items():
    from cadmr.models.cadmr import in_batch_softmax

    out = torch.tensor([[2.0, 0.0, 5.0], [1.0, 3.0, 5.0], [0.0, 0.0, 5.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    # user 0 ranks item 0 over {0, 1, 2}; user 1 items 1 and 2; user 2 has none (left out)
    col0 = torch.log_softmax(out[:, 0] / 0.5, 0)
    col1 = torch.log_softmax(out[:, 1] / 0.5, 0)
    expected = -(col0[0] + col1[1] + col1[2]) / 3
    assert torch.allclose(in_batch_softmax(out, target, 0.5), expected)
    # the loss falls as a user's item rises above the batch's others, whatever the users
    # without items score
    better = out.clone()
    better[0, 0] += 1.0
    better[:, 2] = torch.tensor([9.0, -9.0, 0.0])
    assert in_batch_softmax(better, target, 0.5) < in_batch_softmax(out, target, 0.5)
    empty = in_batch_softmax(out.requires_grad_(), torch.zeros_like(out), 0.5)
    assert empty.item() == 0.0 and empty.requires_grad


def test_ranking_finetune_loss_reaches_the_attention(data):
    losses = {}
    for loss in ("reconstruction", "ranking"):
        model = ready(data, phase="finetune", finetune_loss=loss)
        model.train()
        batch = next(iter(model.batches(np.random.default_rng(0), 16)))
        value = model.loss(batch)
        value.backward()
        assert model.attention.query.grad.abs().sum() > 0
        losses[loss] = value.item()
    # a log-likelihood over 16 items: near log 16 at the start, far from the squared error
    assert (
        1.0 < losses["ranking"] < 2 * np.log(16) and losses["ranking"] != losses["reconstruction"]
    )
    with pytest.raises(ValueError, match="ranking_temperature"):
        CADMRParams(ranking_temperature=0.0)
    with pytest.raises(ValueError, match="finetune_loss"):
        CADMRParams(finetune_loss="bpr")
