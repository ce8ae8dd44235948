"""Local-kernel layer and kernel autoencoder (GLocal-K): known answers and equivalences.

The shared contract (tests/models/test_contract.py) covers the leakage guard, determinism,
checkpoints and the known-answer task; these are the model's own checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cadmr.data import Dataset, LeakageGuard
from cadmr.models import kernel_ae, layers
from cadmr.models.kernel_ae import ItemBatch, KernelAE, KernelAEParams
from cadmr.models.layers import LocalKernelLayer, local_kernel, shared_kernels, to_torch_sparse


def tiny_dataset(n_users: int = 6, n_items: int = 5) -> Dataset:
    """Each user has two training items, one valid and one test item."""
    splits = {s: sp.lil_matrix((n_users, n_items), dtype=np.float32) for s in ("tr", "va", "te")}
    for u in range(n_users):
        items = [(u + j) % n_items for j in range(4)]
        splits["tr"][u, items[0]] = 1
        splits["tr"][u, items[1]] = 1
        splits["va"][u, items[2]] = 1
        splits["te"][u, items[3]] = 1
    return Dataset.build(
        "tiny",
        {
            "train": splits["tr"].tocsr(),
            "valid": splits["va"].tocsr(),
            "test": splits["te"].tocsr(),
        },
        {},
    )


def ready_model(data: Dataset, **params) -> KernelAE:
    torch.manual_seed(0)
    model = KernelAE(KernelAEParams(**params), data.n_users, data.n_items, {})
    model.setup(data.train, {}, LeakageGuard(data))
    return model


def test_kernel_known_values():
    u = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [3.0, 4.0]])
    v = torch.tensor([[0.0, 0.0]])
    k = local_kernel(u, v)  # squared distances 0, 0.25, 1, 25
    torch.testing.assert_close(k, torch.tensor([[1.0], [0.75], [0.0], [0.0]]))


def test_layer_effective_weight_is_masked_by_kernel():
    torch.manual_seed(0)
    layer = LocalKernelLayer(3, 2, kernel_dim=2)
    with torch.no_grad():
        layer.u.copy_(torch.tensor([[0.0, 0.0], [0.5, 0.0], [2.0, 0.0]]))
        layer.v.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    w = layer.effective_weight()
    torch.testing.assert_close(w[0], layer.weight[0])
    torch.testing.assert_close(w[1], 0.75 * layer.weight[1])
    assert torch.equal(w[2], torch.zeros(2))
    weight_sq, kernel_sq = layer.penalties()
    torch.testing.assert_close(weight_sq, layer.weight.pow(2).sum())
    torch.testing.assert_close(kernel_sq, torch.tensor(2 * (1.0 + 0.75**2)))


def test_sparse_input_equals_dense_input():
    torch.manual_seed(0)
    layer = LocalKernelLayer(7, 4)
    dense = sp.random(5, 7, density=0.4, format="csr", random_state=0, dtype=np.float32)
    out_sparse = layer(to_torch_sparse(dense))
    out_dense = layer(torch.from_numpy(dense.toarray()))
    torch.testing.assert_close(out_sparse, out_dense)


def test_forward_columns_equals_full_forward():
    torch.manual_seed(0)
    layer = LocalKernelLayer(6, 9)
    x = torch.randn(4, 6)
    cols = torch.tensor([7, 0, 3])
    torch.testing.assert_close(layer.forward_columns(x, cols), layer(x)[:, cols])


def test_score_equals_columns_of_full_reconstruction():
    data = tiny_dataset()
    model = ready_model(data, hidden=(4, 3), kernel_dim=2)
    users = np.array([4, 0, 2])
    model.prepare_scoring()
    scores = model.score(users)  # (B, n_items)
    with torch.no_grad():
        full = model(torch.from_numpy(model.input_matrix.toarray()))  # (n_items, n_users)
    torch.testing.assert_close(scores, full[:, users].T)
    assert scores.shape == (3, data.n_items)


def test_scoring_forms_each_kernel_once_in_blocks_of_bounded_rows(monkeypatch):
    """prepare_scoring shares each encoder layer's W * k across its item blocks, and a
    block's dense (B, n_users) rows stay under DENSE_BLOCK_ENTRIES; neither changes the
    encoding."""
    data = tiny_dataset(n_users=6, n_items=11)
    model = ready_model(data, hidden=(4, 3), kernel_dim=2)
    model.eval()
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(model.input_matrix.toarray()))
    calls, rows = [], []
    real_apply, real_input_rows = layers.KernelWeight.apply, model.input_rows
    monkeypatch.setattr(layers.KernelWeight, "apply", lambda *a: calls.append(1) or real_apply(*a))
    monkeypatch.setattr(
        model, "input_rows", lambda items: rows.append(len(items)) or real_input_rows(items)
    )
    monkeypatch.setattr(kernel_ae, "DENSE_BLOCK_ENTRIES", 4 * data.n_users)
    model.prepare_scoring()
    assert rows == [4, 4, 3]
    assert len(calls) == len(model.encoder)
    torch.testing.assert_close(model._hidden, expected)
    assert model.encoder[0]._shared is None  # the sharing ends with the scoring


def test_shared_kernel_blocks_nest():
    torch.manual_seed(0)
    outer, inner = LocalKernelLayer(3, 2), LocalKernelLayer(2, 2)
    with shared_kernels([outer]):
        first = outer.weighted()
        with shared_kernels([outer, inner]):
            assert outer.weighted() is first
            inner.weighted()
        assert inner._shared is None
        assert outer.weighted() is first  # the inner block left the outer's kernel alone
    assert outer._shared is None


def test_scoring_cache_is_invalidated_when_training_resumes():
    data = tiny_dataset()
    model = ready_model(data, hidden=(4, 3))
    model.prepare_scoring()
    before = model.score(np.array([0]))
    next(iter(model.batches(np.random.default_rng(0), 2)))
    with torch.no_grad():
        model.decoder.bias.add_(1.0)
    torch.testing.assert_close(model.score(np.array([0])), before + 1.0)


def test_batches_cover_every_item_once():
    data = tiny_dataset()
    model = ready_model(data, hidden=(4, 3))
    items = np.concatenate([b.items for b in model.batches(np.random.default_rng(1), 2)])
    assert sorted(items.tolist()) == list(range(data.n_items))


@pytest.mark.parametrize("pos_weight", [1.0, 3.0])
def test_weighted_mse_by_hand(pos_weight):
    data = tiny_dataset()
    model = ready_model(data, hidden=(4, 3), pos_weight=pos_weight)
    out = torch.tensor([[0.5, 0.0], [1.0, 0.25]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # errors^2: 0.25 (positive), 0 (zero), 1 (zero), 0.5625 (positive)
    expected = (pos_weight * (0.25 + 0.5625) + 0.0 + 1.0) / 4
    got = model.reconstruction_loss(out, target)
    torch.testing.assert_close(got, torch.tensor(expected))


def test_pos_weight_scales_only_the_positive_errors():
    data = tiny_dataset()
    common = {"hidden": (4, 3), "lambda_2": 0.0, "lambda_s": 0.0, "input_dropout": 0.0}
    plain = ready_model(data, **common, pos_weight=1.0)
    weighted = ready_model(data, **common, pos_weight=5.0)
    batch = ItemBatch(np.arange(data.n_items))
    x, target = plain.input_rows(batch.items), plain.target_rows(batch.items)
    with torch.no_grad():
        out = plain(x)
        sq = (out - target).pow(2)
        pos, neg = (sq * target).sum(), (sq * (1 - target)).sum()
        n = sq.numel()
        torch.testing.assert_close(plain.loss(batch), (pos + neg) / n)
        torch.testing.assert_close(weighted.loss(batch), (5.0 * pos + neg) / n)
        assert weighted.loss(batch) > plain.loss(batch)


def test_multinomial_loss_by_hand():
    data = tiny_dataset()
    model = ready_model(data, hidden=(4, 3), loss="multinomial")
    out = torch.tensor([[0.0, 0.0], [float(np.log(3.0)), 0.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # -(log 1/2) for row 1; -(log 3/4 + log 1/4) for row 2; mean over the 2 rows
    expected = (np.log(2.0) - np.log(0.75) - np.log(0.25)) / 2
    got = model.reconstruction_loss(out, target)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32))


def test_penalty_scaling():
    data = tiny_dataset()
    model = ready_model(data, hidden=(4, 3), lambda_2=2.0, lambda_s=0.5, lambda_scale="fixed")
    layers = (*model.encoder, model.decoder)
    w = sum(layer.weight.pow(2).sum() for layer in layers)
    k = sum(layer.kernel().pow(2).sum() for layer in layers)
    expected = (2.0 * w + 0.5 * k) / (2 * data.n_items * data.n_users)
    torch.testing.assert_close(model.penalty(), expected)


def test_params_validation():
    with pytest.raises(ValueError):
        KernelAEParams(pos_weight=0.0)
    with pytest.raises(ValueError):
        KernelAEParams(hidden=())
    with pytest.raises(ValueError, match="input_norm"):
        KernelAEParams(input_norm="l1")  # type: ignore[arg-type]


def test_grids_search_the_width_only_in_the_published_one():
    """`cadmr tune` searches the width a catalogue with many users wins with (Baby: 2,000)
    next to the default, for kernel_ae and CADMR; the budget grid stays at the default
    width; cadmr_paper searches only its positive weight in both."""
    from cadmr.train import resolve_run_config

    for name in ("kernel_ae", "cadmr"):
        published = resolve_run_config(name, "tiny", grid="published").search
        assert published["hidden"] == ((500, 500), (2000, 2000))
        assert KernelAEParams().hidden in published["hidden"]
        budget = resolve_run_config(name, "tiny", grid="budget").search
        assert "hidden" not in budget
        assert {k: v for k, v in published.items() if k != "hidden"} == budget
    for grid in ("published", "budget"):
        assert list(resolve_run_config("cadmr_paper", "tiny", grid=grid).search) == ["pos_weight"]


def test_global_conv_rows_match_a_full_matrix_convolution():
    """GLocal-K convolves the whole item x user matrix; gathering neighbouring rows per
    batch must give the same rows, including at the first and last item."""
    data = tiny_dataset()
    model = ready_model(data, hidden=(4, 3), global_kernel=True)
    model.start_phase("finetune")
    full = torch.from_numpy(model.item_user.toarray())[None, None]  # (1, 1, I, U)
    with torch.no_grad():
        expected = torch.relu(
            torch.nn.functional.conv2d(full, model.global_kernel()[None, None], padding=1)
        )[0, 0]
        items = np.array([0, 3, data.n_items - 1])
        torch.testing.assert_close(model.global_conv_rows(items), expected[items])


def test_global_kernel_phases_and_gradients():
    data = tiny_dataset()
    model = ready_model(data, hidden=(4, 3), global_kernel=True)
    assert model.phases() == ("pretrain", "finetune")
    assert not model.uses_global_kernel
    model.start_phase("finetune")
    batch = next(iter(model.batches(np.random.default_rng(0), 4)))
    model.loss(batch).backward()
    assert model.global_kernel_map.grad is not None
    assert model.global_kernel_map.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="phases"):
        model.start_phase("other")


def test_global_kernel_run_has_two_phases(tmp_path):
    from cadmr.train.checkpoint import load_model
    from cadmr.train.resolve import resolve_run_config
    from cadmr.train.trainer import run

    data = tiny_dataset()
    cfg = resolve_run_config(
        "kernel_ae",
        "tiny",
        extra={
            "train": {"epochs": 3, "batch_size": 2, "progress": False},
            "params": {"hidden": [4, 3], "global_kernel": True},
        },
    )
    results = run(cfg, data, tmp_path, echo=False)
    assert (tmp_path / "best-pretrain.pt").exists() and (tmp_path / "best.pt").exists()
    log = (tmp_path / "train.log").read_text()
    assert "[pretrain] epoch" in log and "[finetune] start" in log
    model, ck = load_model(results["checkpoint"], data)
    assert ck["phase"] == "finetune" and model.uses_global_kernel


@pytest.mark.parametrize("pos_weight", [1.0, 3.0])
def test_weighted_squared_error_equals_the_composed_formula(pos_weight):
    from cadmr.models.kernel_ae import weighted_squared_error

    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(5, 9, generator=gen, dtype=torch.float64) < 0.3).double()
    out = torch.randn(5, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    ref_out = out.detach().clone().requires_grad_()
    loss = weighted_squared_error(out, target, pos_weight)
    ref = ((1.0 + (pos_weight - 1.0) * target) * (ref_out - target).pow(2)).mean()
    (3.0 * loss).backward()
    (3.0 * ref).backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(out.grad, ref_out.grad)
    assert torch.autograd.gradcheck(lambda o: weighted_squared_error(o, target, pos_weight), (out,))


# ---------------------------------------------------------------- denoising and the input scale


def test_input_dropout_corrupts_training_rows_only():
    data = tiny_dataset(n_users=400, n_items=5)
    model = ready_model(data, input_dropout=0.5)
    model.batches(np.random.default_rng(0), 2)  # seeds the corruption's generator
    items = np.arange(5)
    clean = model.item_user[items]
    model.train()
    noisy = model.rating_rows(items, corrupt=True)
    kept = noisy.nnz / clean.nnz
    assert 0.4 < kept < 0.6  # about half of 800 entries survive
    assert np.allclose(noisy.data, 2.0)  # survivors scaled by 1 / (1 - p)
    assert noisy.multiply(clean).nnz == noisy.nnz  # never adds an entry
    assert (model.rating_rows(items) != clean).nnz == 0  # scoring never corrupts
    model.eval()
    assert (model.rating_rows(items, corrupt=True) != clean).nnz == 0


def test_input_dropout_draws_repeat_with_the_epoch_generator():
    data = tiny_dataset(n_users=50, n_items=5)
    model = ready_model(data, input_dropout=0.5)
    draws = []
    for _ in range(2):
        model.batches(np.random.default_rng(7), 2)
        draws.append(model.rating_rows(np.arange(5), corrupt=True).toarray())
    np.testing.assert_array_equal(draws[0], draws[1])


def test_input_norm_gives_every_row_the_norm_of_a_mean_row_and_keeps_the_target():
    # items with 1, 2 and 5 users: raw norms 1, 1.41, 2.24
    train = sp.csr_matrix(
        np.array([[1, 0, 1], [0, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]], np.float32)
    )
    data = Dataset.build("norm", {"train": train, "valid": train * 0, "test": train * 0}, {})
    model = ready_model(data, input_norm="l2", input_dropout=0.5)
    items = np.arange(3)
    rows = model.rating_rows(items)
    mean_nnz = train.nnz / 3
    np.testing.assert_allclose(sp.linalg.norm(rows, axis=1), np.sqrt(mean_nnz), rtol=1e-6)
    assert (rows.astype(bool) != model.item_user[items].astype(bool)).nnz == 0  # same users
    np.testing.assert_array_equal(model.target_rows(items).numpy(), model.item_user.toarray())
    model.batches(np.random.default_rng(0), 2)
    model.train()
    noisy = model.rating_rows(items, corrupt=True)  # normalised first, then corrupted
    np.testing.assert_allclose(noisy.data, 2.0 * rows.multiply(noisy.astype(bool)).data)
    plain = ready_model(data, input_norm="none")
    assert (plain.rating_rows(items) != plain.item_user[items]).nnz == 0  # "none": R as it is


def test_checkpoints_from_before_input_norm_read_the_rows_as_they_are():
    assert KernelAE.saved_params({"pos_weight": 100.0})["input_norm"] == "none"
    assert KernelAE.saved_params({"input_norm": "l2"})["input_norm"] == "l2"
    assert KernelAEParams().input_norm == "l2"  # the default since, which old ones lack


def test_active_init_gives_unit_preactivation_scale_once():
    data = tiny_dataset(n_users=6, n_items=5)
    model = ready_model(data, input_init="active")
    mean_nnz = data.train.nnz / data.n_items
    std = float(model.encoder[0].weight.detach().std())
    assert std == pytest.approx(1 / np.sqrt(mean_nnz), rel=1e-5)
    model.setup(data.train, {}, LeakageGuard(data))  # a second set-up does not rescale again
    assert float(model.encoder[0].weight.detach().std()) == pytest.approx(std, rel=1e-6)
    xavier = ready_model(data, input_init="xavier")
    assert float(xavier.encoder[0].weight.detach().std()) < std


def test_lambda_scale_items_multiplies_the_penalty_by_catalogue_size():
    data = tiny_dataset(n_users=6, n_items=5)
    fixed = ready_model(data, lambda_scale="fixed")
    scaled = ready_model(data, lambda_scale="items")
    with torch.no_grad():
        torch.testing.assert_close(scaled.penalty(), fixed.penalty() * 5 / 1000)


def test_centered_sigmoid_is_sigmoid_shifted_by_a_half():
    x = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(
        kernel_ae.hidden_activation(x, "centered_sigmoid"), torch.sigmoid(x) - 0.5
    )
    # the same functions: the shift moves into the next layer's bias
    data = tiny_dataset()
    sig = ready_model(data, hidden_activation="sigmoid")
    cen = ready_model(data, hidden_activation="centered_sigmoid")
    with torch.no_grad():
        for layer in (*cen.encoder[1:], cen.decoder):
            w = layer.effective_weight()
            layer.bias += 0.5 * w.sum(0)  # sigmoid = centred + 1/2
        rows = to_torch_sparse(sig.item_user, None)
        torch.testing.assert_close(cen(rows), sig(rows), rtol=1e-5, atol=1e-5)
