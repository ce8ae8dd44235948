"""What models do on a cold-item split (data/cold.py): who may train, what they never see,
how the capable ones score an item nobody has interacted with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadmr.data.leakage import LeakageGuard
from cadmr.data.sources import resolve_dataset
from cadmr.errors import TrainingError
from cadmr.models import MODELS, get_model_class
from cadmr.models.base import ranked_topk
from cadmr.models.sampling import TripletSampler
from cadmr.train import resolve_run_config, run
from cadmr.train.trainer import build_model


@pytest.fixture(scope="module")
def cold():
    return resolve_dataset("synthetic-small@cold=0.2")


def _model(name, dataset, **params):
    cls = get_model_class(name)
    model = cls(cls.params_cls(**params), dataset.n_users, dataset.n_items, dataset.modalities)
    model.setup(dataset.train, dataset.features, LeakageGuard(dataset))
    return model


def test_only_models_that_can_score_new_items_train_on_a_cold_split(cold, tmp_path):
    capable = {n for n, c in MODELS.items() if c.scores_new_items is True}
    assert capable == {"content_knn", "vbpr", "freedom", "lattice", "dragon"}
    config = resolve_run_config("kernel_ae", "synthetic-small@cold=0.2")
    with pytest.raises(TrainingError, match="kernel_ae cannot rank items without interactions"):
        build_model(config, config.params, cold)
    for name, allowed in (("cadmr", True), ("cadmr_paper", False)):
        config = resolve_run_config(name, "synthetic-small@cold=0.2")
        assert get_model_class(name).can_score_new_items(config.params) is allowed
        if not allowed:
            with pytest.raises(TrainingError, match="cadmr_paper cannot"):
                run(config, cold, tmp_path / "paper", echo=False)
            assert not (tmp_path / "paper").exists()  # refused before the run folder


def test_cold_ranking_ranks_only_the_splits_cold_items(cold):
    model = _model("pop", cold).fit()  # scores every cold item 0 and warm items above
    users = np.arange(20)
    _, top = ranked_topk(model, users, 10, cold.train, cold.cold_items["test"])
    assert set(top.numpy().ravel()) <= set(cold.cold_items["test"].tolist())
    _, top = ranked_topk(model, users, 10, cold.train)  # mixed: the warm items win
    assert not set(top.numpy().ravel()) & set(cold.cold_items["test"].tolist())


def test_training_never_sees_a_cold_item(cold):
    guard = LeakageGuard(cold)
    sampler = TripletSampler(cold.train, guard.cold_items)
    negatives = sampler.negatives(np.zeros(20_000, dtype=np.int64), np.random.default_rng(0))
    assert not np.isin(negatives, guard.cold_items).any()
    ae = _model("kernel_ae", cold)
    seen = np.concatenate([b.items for b in ae.batches(np.random.default_rng(0), 64)])
    np.testing.assert_array_equal(
        np.sort(seen), np.setdiff1d(np.arange(cold.n_items), guard.cold_items)
    )
    ordinary = resolve_dataset("synthetic-small")
    assert _model("kernel_ae", ordinary).training_items is None  # same draws as before


def test_content_knn_ranks_the_item_most_like_the_users_items_first(cold):
    model = _model("content_knn", cold).fit()
    f = model.item_vectors()
    user = 3
    history = cold.train[user].indices
    profile = f[torch.from_numpy(history)].sum(0)
    expected = torch.argsort(f @ profile, descending=True)
    scores = model.score(np.array([user]))[0]
    torch.testing.assert_close(scores, f @ profile)
    assert int(torch.argmax(scores)) == int(expected[0])


def test_vbpr_scores_a_cold_item_by_its_content_alone(cold):
    model = _model("vbpr", cold)
    _, items = model.final_embeddings()
    d = model.params.embedding_size
    cold_ids = torch.from_numpy(np.concatenate(list(cold.cold_items.values())))
    assert items[cold_ids, :d].abs().sum() == 0  # ID factors: never trained
    assert items[cold_ids, d : 2 * d].abs().sum() > 0  # content term
    warm = _model("vbpr", resolve_dataset("synthetic-small"))
    assert warm.untrained is None


def test_cadmr_item_dropout_empties_whole_rows_while_fine_tuning(cold):
    model = _model("cadmr", cold, cold_dropout=0.9, input_dropout=0.0)
    model.start_phase("finetune")
    model.train()
    items = np.flatnonzero(np.diff(model.item_user.indptr) > 0)[:200]
    rows = model.rating_rows(items, corrupt=True)
    empty = np.diff(rows.indptr) == 0
    assert 0.8 < empty.mean() < 0.97
    kept = ~empty
    np.testing.assert_array_equal(rows[kept].toarray(), model.input_matrix[items[kept]].toarray())
    model.start_phase("pretrain")  # the autoencoder's own phase is untouched
    assert (np.diff(model.rating_rows(items, corrupt=True).indptr) > 0).all()


def test_a_run_on_a_cold_split_reports_both_rankings(cold, tmp_path):
    config = resolve_run_config("content_knn", cold.name, sets=["train.progress=false"])
    res = run(config, cold, tmp_path, echo=False)
    assert res["test"]["n_users"] > 0 and res["test_mixed"]["n_users"] == res["test"]["n_users"]
    # among 80 candidates the cold items are found far more easily than among all 800
    assert res["test"]["recall@20"] > res["test_mixed"]["recall@20"]
    assert "cold among warm" in (tmp_path / "train.log").read_text()


def test_cadmr_takes_its_cold_defaults_on_a_cold_split_only():
    warm = resolve_run_config("cadmr", "scientific").params
    cold = resolve_run_config("cadmr", "scientific@cold=0.2").params

    def chosen(p):
        return p.cold_dropout, p.finetune_autoencoder, p.neighbour_reverse, p.prior_temperature

    assert chosen(warm) == (0.0, False, True, 0.1)
    assert chosen(cold) == (0.5, True, False, 0.0)
    paper = resolve_run_config("cadmr_paper", "scientific@cold=0.2").params
    assert paper == resolve_run_config("cadmr_paper", "scientific").params
    explicit = resolve_run_config("cadmr", "x@cold=0.2", sets=["params.cold_dropout=0.9"])
    assert explicit.params.cold_dropout == 0.9  # --set still wins
