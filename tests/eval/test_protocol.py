"""The full-ranking protocol (docs/protocol.md) with a fake model whose scores we choose."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cadmr.config import EvalConfig
from cadmr.data.dataset import Dataset
from cadmr.data.leakage import LeakageGuard
from cadmr.eval.protocol import evaluate, evaluation_users, hits_matrix
from cadmr.models.base import Recommender, TorchRecommender

D2 = 1 / math.log2(3)  # gain of rank 2 = 0.6309297535714575

# 4 users x 6 items.
TRAIN = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (3, 4), (3, 0)]
VALID = [(0, 2), (1, 3), (2, 4)]  # user 3 has no validation item
TEST = [(0, 3), (1, 4), (3, 5)]  # user 2 has no test item
N_USERS, N_ITEMS = 4, 6

# Fixed scores. After masking the training items the rankings are:
#   u0 (train 0, 1):  2 (7), 3 (6), 4 (2), 5 (0)    valid {2} at rank 1; test {3} at rank 2
#                                                    (rank 1 once valid item 2 is masked too)
#   u1 (train 1, 2):  4 (6), 3 (5), 5 (1), 0 (0)    valid {3} at rank 2; test {4} at rank 1
#   u2 (train 3):     5 (5), 2 (3), 1 (2), 0 (1), 4 (0)   valid {4} at rank 5; no test item
#   u3 (train 0, 4):  5 (8), 3 (2), 2 (1), 1 (0)    no valid item; test {5} at rank 1
# Every user's training items get the highest raw scores, so unmasked they would fill the top.
SCORES = [
    [10.0, 9.0, 7.0, 6.0, 2.0, 0.0],
    [0.0, 10.0, 9.0, 5.0, 6.0, 1.0],
    [1.0, 2.0, 3.0, 10.0, 0.0, 5.0],
    [11.0, 0.0, 1.0, 2.0, 9.0, 8.0],
]


def csr(pairs: list[tuple[int, int]], shape: tuple[int, int] = (N_USERS, N_ITEMS)) -> sp.csr_matrix:
    rows = np.array([u for u, _ in pairs], dtype=np.int64)
    cols = np.array([i for _, i in pairs], dtype=np.int64)
    return sp.csr_matrix((np.ones(len(pairs), dtype=np.float32), (rows, cols)), shape=shape)


def tiny() -> Dataset:
    return Dataset.build("tiny", {"train": csr(TRAIN), "valid": csr(VALID), "test": csr(TEST)})


class FixedScores(Recommender):
    """Returns rows of a fixed score table and records every request's shape."""

    name = "fixed"
    params_cls = dict

    def __init__(self, table: Any, dataset: Dataset | None = None) -> None:
        table = torch.as_tensor(np.asarray(table), dtype=torch.float32)
        super().__init__({}, table.shape[0], table.shape[1], {})
        self.table = table
        self.requests: list[tuple[int, ...]] = []
        self.prepared = 0
        if dataset is not None:
            self.setup(dataset.train, {}, LeakageGuard(dataset))

    def prepare_scoring(self) -> None:
        self.prepared += 1

    def score(self, users: np.ndarray) -> torch.Tensor:
        out = self.table[torch.from_numpy(np.asarray(users, dtype=np.int64))]  # a copy
        self.requests.append(tuple(out.shape))
        return out

    def state(self) -> dict[str, Any]:
        return {"table": self.table}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.table = state["table"]


class Returns(FixedScores):
    """Returns whatever tensor ``make(users)`` builds, to test the protocol's checks."""

    def __init__(self, make: Any, n_users: int, n_items: int) -> None:
        super().__init__(np.zeros((n_users, n_items)))
        self.make = make

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.make(users)


CFG = EvalConfig(ks=(1, 2, 3), valid_metric="recall@2")


# --------------------------------------------------------------------------------------
# Known answers


def test_valid_split_known_answer() -> None:
    out = evaluate(FixedScores(SCORES), tiny(), "valid", CFG)
    # Evaluated users 0, 1, 2 (user 3 has no validation item): n_users = 3.
    # Ranks of the one relevant item: u0 1, u1 2, u2 5.
    # recall@1    = (1 + 0 + 0) / 3 = 1/3;  recall@2 = recall@3 = (1 + 1 + 0) / 3 = 2/3
    # ndcg@1      = (1 + 0 + 0) / 3 = 1/3;  ndcg@2 = ndcg@3 = (1 + 1/log2 3 + 0) / 3
    #             = 1.6309297535714575 / 3 = 0.5436432511904858
    # precision@2 = (1/2 + 1/2 + 0) / 3 = 1/3;  precision@3 = (1/3 + 1/3 + 0) / 3 = 2/9
    # map@2       = (P@1 * 1 / 1 + P@2 * 1 / 1 + 0) / 3 = (1 + 1/2) / 3 = 0.5;  map@3 = 0.5
    # hit@1       = 1/3;  hit@2 = hit@3 = 2/3
    # mrr@1       = (1 + 0 + 0) / 3 = 1/3;  mrr@2 = mrr@3 = (1 + 1/2 + 0) / 3 = 0.5
    # coverage (users 0, 1, 2; top 3s 2,3,4 / 4,3,5 / 5,2,1 of 6 items):
    #   top 1 {2, 4, 5} = 3/6; top 2 adds 3 -> 4/6; top 3 adds 1 -> 5/6 (item 0 never)
    expected = {
        "recall@1": 1 / 3,
        "recall@2": 2 / 3,
        "recall@3": 2 / 3,
        "ndcg@1": 1 / 3,
        "ndcg@2": 0.5436432511904858,
        "ndcg@3": 0.5436432511904858,
        "precision@1": 1 / 3,
        "precision@2": 1 / 3,
        "precision@3": 2 / 9,
        "map@1": 1 / 3,
        "map@2": 0.5,
        "map@3": 0.5,
        "hit@1": 1 / 3,
        "hit@2": 2 / 3,
        "hit@3": 2 / 3,
        "mrr@1": 1 / 3,
        "mrr@2": 0.5,
        "mrr@3": 0.5,
        "coverage@1": 3 / 6,
        "coverage@2": 4 / 6,
        "coverage@3": 5 / 6,
    }
    assert out.pop("n_users") == 3
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    assert math.isclose((1 + D2) / 3, 0.5436432511904858, abs_tol=1e-12)


def test_test_split_does_not_mask_validation_items_by_default() -> None:
    out = evaluate(FixedScores(SCORES), tiny(), "test", CFG)
    # Evaluated users 0, 1, 3 (user 2 has no test item).  Valid item 2 of u0 stays in the
    # ranking and takes rank 1, pushing test item 3 to rank 2; u1 and u3 hit at rank 1.
    # recall@1 = (0 + 1 + 1) / 3 = 2/3;  ndcg@1 = 2/3
    # recall@2 = 3/3 = 1;  ndcg@2 = (1/log2 3 + 1 + 1) / 3 = 2.6309297535714575 / 3
    assert out["n_users"] == 3
    assert out["recall@1"] == pytest.approx(2 / 3)
    assert out["ndcg@1"] == pytest.approx(2 / 3)
    assert out["recall@2"] == pytest.approx(1.0)
    assert out["ndcg@2"] == pytest.approx((D2 + 2) / 3, abs=1e-12)


def test_test_split_masks_validation_items_when_asked() -> None:
    cfg = EvalConfig(ks=(1, 2, 3), valid_metric="recall@2", mask_valid_at_test=True)
    out = evaluate(FixedScores(SCORES), tiny(), "test", cfg)
    # u0's valid item 2 is masked: test item 3 moves to rank 1 -> every user hits at rank 1.
    assert out["n_users"] == 3
    assert out["recall@1"] == pytest.approx(1.0)
    assert out["ndcg@1"] == pytest.approx(1.0)
    assert out["map@3"] == pytest.approx(1.0)


def test_mask_valid_option_does_not_touch_the_valid_split() -> None:
    cfg = EvalConfig(ks=(1, 2, 3), valid_metric="recall@2", mask_valid_at_test=True)
    assert evaluate(FixedScores(SCORES), tiny(), "valid", cfg) == evaluate(
        FixedScores(SCORES), tiny(), "valid", CFG
    )


def test_training_items_are_masked() -> None:
    # A model that scores exactly the training matrix (plus a small item bias) puts every
    # training item on top; masking must remove them, leaving the bias order 5 > 4 > ... > 0.
    ds = tiny()
    bias = np.arange(N_ITEMS) / 100.0
    table = ds.train.toarray() * 100.0 + bias
    out = evaluate(FixedScores(table), ds, "test", CFG)
    # Ranking after masking: u0: 5, 4, 3, 2 -> test 3 at rank 3
    #                        u1: 5, 4, 3, 0 -> test 4 at rank 2
    #                        u3: 5, 3, 2, 1 -> test 5 at rank 1
    # recall@1 = 1/3, recall@2 = 2/3, recall@3 = 3/3
    assert out["recall@1"] == pytest.approx(1 / 3)
    assert out["recall@2"] == pytest.approx(2 / 3)
    assert out["recall@3"] == pytest.approx(1.0)


def test_users_without_items_in_split_are_not_counted() -> None:
    ds = tiny()
    assert evaluation_users(ds.valid).tolist() == [0, 1, 2]
    assert evaluation_users(ds.test).tolist() == [0, 1, 3]
    model = FixedScores(SCORES)
    evaluate(model, ds, "valid", CFG)
    # only the three evaluated users were ever scored
    assert sum(r[0] for r in model.requests) == 3


def test_cold_users_are_dropped_before_evaluation() -> None:
    # user 3 has only a test item and no training item: the dataset drops the row
    ds = Dataset.build(
        "cold",
        {
            "train": csr([(0, 0), (1, 1), (2, 2)]),
            "valid": csr([(0, 1)]),
            "test": csr([(1, 2), (3, 4)]),
        },
    )
    out = evaluate(FixedScores(SCORES), ds, "test", CFG)
    assert out["n_users"] == 1


def test_coverage_on_a_cold_item_split_counts_the_split_s_items() -> None:
    # items 4 and 5 are the validation's new items, 6 the test's; both users put 5 first
    shape = (2, 7)
    ds = Dataset.build(
        "cold",
        {
            "train": csr([(0, 0), (0, 1), (1, 1), (1, 2)], shape),
            "valid": csr([(0, 4), (1, 5)], shape),
            "test": csr([(0, 6)], shape),
        },
        cold_items={"valid": np.array([4, 5]), "test": np.array([6])},
    )
    scores = [[0, 0, 0, 9, 1, 2, 3], [0, 0, 0, 9, 1, 2, 3]]
    out = evaluate(FixedScores(scores), ds, "valid", CFG)
    # ranked: the two new items only, 5 then 4 for both users -> top 1 covers 1 of 2
    assert out["coverage@1"] == 0.5 and out["coverage@2"] == 1.0
    mixed = evaluate(FixedScores(scores), ds, "valid", CFG, mixed=True)
    # every item ranked, training items masked: u0 3, 6, 5; u1 3, 6, 5 -> 1, 2, 3 of 7
    assert [mixed[f"coverage@{k}"] for k in (1, 2, 3)] == pytest.approx([1 / 7, 2 / 7, 3 / 7])


def test_cutoffs_above_n_items_rank_the_whole_catalogue() -> None:
    # 6-item catalogue, default ks (5, 10, 20, 50): every cut-off is reported; beyond the
    # catalogue the whole (masked) ranking counts, so recall@50 = recall@6-equivalent.
    out = evaluate(FixedScores(SCORES), tiny(), "valid", EvalConfig())
    for k in (5, 10, 20, 50):
        assert f"recall@{k}" in out and f"ndcg@{k}" in out
    assert out["recall@50"] == out["recall@20"] == out["recall@10"] == 1.0
    assert out["precision@50"] == pytest.approx(out["precision@10"] * 10 / 50)


def test_empty_split_gives_nan_metrics() -> None:
    data = tiny()
    empty = Dataset.build(
        "empty", {"train": data.train, "valid": data.valid * 0, "test": data.test}
    )
    out = evaluate(FixedScores(SCORES), empty, "valid", CFG)
    assert out["n_users"] == 0
    assert all(np.isnan(v) for k, v in out.items() if k != "n_users") and len(out) > 1


def test_prepare_scoring_called_once_per_evaluation() -> None:
    model = FixedScores(SCORES)
    evaluate(model, tiny(), "valid", CFG)
    assert model.prepared == 1


class TorchFixed(TorchRecommender):
    """A torch model that records whether it was in training mode when scored."""

    name = "torch_fixed"
    params_cls = dict

    def __init__(self) -> None:
        super().__init__({}, N_USERS, N_ITEMS, {})
        self.table = torch.nn.Parameter(torch.tensor(SCORES))
        self.modes: list[bool] = []

    def score(self, users: np.ndarray) -> torch.Tensor:
        self.modes.append(self.training)
        return self.table[torch.from_numpy(users)]

    def batches(self, rng: np.random.Generator, batch_size: int):  # pragma: no cover
        yield from ()

    def loss(self, batch: Any) -> torch.Tensor:  # pragma: no cover
        return self.table.sum()


def test_torch_model_scored_in_eval_mode_and_mode_restored() -> None:
    model = TorchFixed()
    model.train()
    out = evaluate(model, tiny(), "valid", CFG)
    assert model.modes == [False] and model.training
    assert out["recall@2"] == pytest.approx(2 / 3)  # same answer as the plain fake
    model.eval()
    evaluate(model, tiny(), "valid", CFG)
    assert not model.training


# --------------------------------------------------------------------------------------
# Batching and memory


def random_dataset(seed: int, n_users: int = 53, n_items: int = 40) -> Dataset:
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[int, int]]] = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        items = rng.permutation(n_items)
        n_tr, n_va, n_te = rng.integers(1, 8), rng.integers(0, 4), rng.integers(0, 4)
        for name, chunk in (
            ("train", items[:n_tr]),
            ("valid", items[n_tr : n_tr + n_va]),
            ("test", items[n_tr + n_va : n_tr + n_va + n_te]),
        ):
            parts[name] += [(u, int(i)) for i in chunk]
    shape = (n_users, n_items)
    return Dataset.build("rand", {k: csr(v, shape) for k, v in parts.items()})


@pytest.mark.parametrize("split", ["valid", "test"])
def test_batch_size_does_not_change_the_result(split: str) -> None:
    ds = random_dataset(0)
    table = np.random.default_rng(1).standard_normal((ds.n_users, ds.n_items))
    results = [
        evaluate(FixedScores(table), ds, split, EvalConfig(ks=(1, 5, 10, 20), batch_size=b))
        for b in (1, 7, 1000)
    ]
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        assert other["n_users"] == results[0]["n_users"]
        for key in results[0]:
            # the sums are accumulated in a different order: equal up to rounding
            assert other[key] == pytest.approx(results[0][key], rel=1e-12, abs=1e-15), key


@pytest.mark.parametrize("batch_size", [1, 7, 16, 1000])
def test_score_requests_are_bounded_by_batch_size(batch_size: int) -> None:
    # Peak memory: the protocol never asks for more than batch_size x n_items scores at once.
    ds = random_dataset(2)
    model = FixedScores(np.random.default_rng(3).standard_normal((ds.n_users, ds.n_items)))
    out = evaluate(model, ds, "valid", EvalConfig(ks=(5, 20), batch_size=batch_size))
    n_eval = out["n_users"]
    assert n_eval == len(evaluation_users(ds.valid))
    assert all(rows <= batch_size and cols == ds.n_items for rows, cols in model.requests)
    assert sum(rows for rows, _ in model.requests) == n_eval
    assert len(model.requests) == math.ceil(n_eval / batch_size)


# --------------------------------------------------------------------------------------
# Failures


def test_wrong_score_shape_raises() -> None:
    model = Returns(lambda users: torch.zeros(len(users), N_ITEMS - 1), N_USERS, N_ITEMS)
    with pytest.raises(ValueError, match="expected"):
        evaluate(model, tiny(), "valid", CFG)
    model = Returns(lambda users: torch.zeros(len(users) + 1, N_ITEMS), N_USERS, N_ITEMS)
    with pytest.raises(ValueError, match="expected"):
        evaluate(model, tiny(), "valid", CFG)


def test_nan_scores_raise() -> None:
    def make(users: np.ndarray) -> torch.Tensor:
        s = torch.zeros(len(users), N_ITEMS)
        s[0, 3] = torch.nan
        return s

    with pytest.raises(FloatingPointError, match="NaN"):
        evaluate(Returns(make, N_USERS, N_ITEMS), tiny(), "valid", CFG)


def test_unknown_split_raises() -> None:
    with pytest.raises(ValueError, match="train"):
        evaluate(FixedScores(SCORES), tiny(), "train", CFG)


# --------------------------------------------------------------------------------------
# hits_matrix


@pytest.mark.parametrize("seed", range(5))
def test_hits_matrix_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 30, 25, 8
    dense = rng.random((n_users, n_items)) < rng.uniform(0.0, 0.3)
    dense[rng.integers(n_users)] = False  # at least one user with no relevant item
    relevant = sp.csr_matrix(dense.astype(np.float32))
    users = rng.choice(n_users, size=12, replace=False)  # any order, not only ascending
    topk = np.stack([rng.choice(n_items, size=k, replace=False) for _ in users])
    expected = np.array(
        [[dense[u, topk[b, r]] for r in range(k)] for b, u in enumerate(users)], dtype=bool
    )
    got = hits_matrix(topk, users, relevant)
    assert got.dtype == bool and got.shape == (len(users), k)
    np.testing.assert_array_equal(got, expected)


def test_hits_matrix_with_no_relevant_items_at_all() -> None:
    relevant = sp.csr_matrix((3, 5), dtype=np.float32)
    got = hits_matrix(np.array([[0, 1], [4, 3]]), np.array([0, 2]), relevant)
    np.testing.assert_array_equal(got, np.zeros((2, 2), dtype=bool))


# --------------------------------------------------------------------------------------
# Recommender.recommend


def test_recommend_excludes_seen_items() -> None:
    model = FixedScores(SCORES, tiny())
    items, scores = model.recommend(np.array([0, 3]), k=2)
    # u0: training 0, 1 excluded -> 2 (7), 3 (6);  u3: training 0, 4 excluded -> 5 (8), 3 (2)
    assert items.tolist() == [[2, 3], [5, 3]]
    np.testing.assert_allclose(scores, [[7.0, 6.0], [8.0, 2.0]])
    assert items.dtype == np.int64 and scores.dtype == np.float32


def test_recommend_can_include_seen_items() -> None:
    model = FixedScores(SCORES, tiny())
    items, scores = model.recommend(np.array([0, 3]), k=2, exclude_seen=False)
    # raw order: u0 0 (10), 1 (9);  u3 0 (11), 4 (9)
    assert items.tolist() == [[0, 1], [0, 4]]
    np.testing.assert_allclose(scores, [[10.0, 9.0], [11.0, 9.0]])


def test_recommend_accepts_a_scalar_and_clips_k() -> None:
    model = FixedScores(SCORES, tiny())
    items, _ = model.recommend(2, k=100, exclude_seen=False)
    assert items.shape == (1, N_ITEMS)


@pytest.mark.parametrize("user", [-1, N_USERS, 100])
def test_recommend_out_of_range_user_raises(user: int) -> None:
    model = FixedScores(SCORES, tiny())
    with pytest.raises(IndexError):
        model.recommend(np.array([0, user]))


def test_recommend_never_returns_seen_items_even_for_large_k() -> None:
    model = FixedScores(SCORES, tiny())
    items, scores = model.recommend(np.array([0]), k=N_ITEMS)  # u0 has 4 unseen items
    assert not set(items[0].tolist()) & {0, 1}
    # the row is padded with item -1 / score -inf past the user's unseen items
    assert items[0, 4:].tolist() == [-1, -1]
    assert np.isfinite(scores[0, :4]).all() and np.isneginf(scores[0, 4:]).all()
