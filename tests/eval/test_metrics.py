"""Known-answer, edge-case and property tests of the ranking metrics (docs/protocol.md).

Every expected value below is worked out by hand in the comment next to it. Useful constants:
1/log2(2) = 1, 1/log2(3) = 0.6309297535714575, 1/log2(4) = 0.5, 1/log2(5) = 0.4306765580733931,
1/log2(6) = 0.3868528072345416.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cadmr.eval.metrics import (
    METRICS,
    coverage_at_k,
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

FUNCS = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "precision": precision_at_k,
    "map": map_at_k,
    "hit": hit_rate_at_k,
    "mrr": mrr_at_k,
}
D2 = 1 / math.log2(3)  # gain of rank 2 = 0.6309297535714575
D3 = 1 / math.log2(4)  # gain of rank 3 = 0.5
D4 = 1 / math.log2(5)  # gain of rank 4
D5 = 1 / math.log2(6)  # gain of rank 5


def one(metric: str, hits: list[int], n_rel: int, k: int) -> float:
    """The metric of a single user."""
    out = FUNCS[metric](np.array([hits], dtype=bool), np.array([n_rel]), k)
    assert out.shape == (1,)
    return float(out[0])


# --------------------------------------------------------------------------------------
# Known answers


# hits [1, 0, 1, 0, 0], n_rel = 3 (hits at ranks 1 and 3).
# k=1: top-1 holds 1 hit.  recall = 1/3, precision = 1/1, hit = 1,
#      NDCG = (1/log2 2) / (1/log2 2) = 1 (IDCG over min(1, 3) = 1 position),
#      MAP  = P@1 * 1 / min(1, 3) = 1 / 1 = 1.
# k=3: 2 hits.  recall = 2/3, precision = 2/3, hit = 1,
#      DCG  = 1 + 1/log2 4 = 1 + 0.5 = 1.5,
#      IDCG = 1 + 0.6309297535714575 + 0.5 = 2.1309297535714575 (min(3, 3) = 3 positions),
#      NDCG = 1.5 / 2.1309297535714575 = 0.7039180890341347,
#      MAP  = (P@1 + P@3) / min(3, 3) = (1 + 2/3) / 3 = 5/9.
# k=5: still 2 hits.  recall = 2/3, precision = 2/5, hit = 1,
#      NDCG: same DCG 1.5 and IDCG over min(5, 3) = 3 positions -> 0.7039180890341347,
#      MAP  = (1 + 2/3) / min(5, 3) = 5/9.
# MRR = 1 / rank of the first hit = 1 / 1 at every k.
HITS_10100 = [1, 0, 1, 0, 0]


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, {"recall": 1 / 3, "precision": 1.0, "hit": 1.0, "ndcg": 1.0, "map": 1.0, "mrr": 1.0}),
        (
            3,
            {
                "recall": 2 / 3,
                "precision": 2 / 3,
                "hit": 1.0,
                "ndcg": 0.7039180890341347,  # 1.5 / 2.1309297535714575
                "map": 5 / 9,
                "mrr": 1.0,
            },
        ),
        (
            5,
            {
                "recall": 2 / 3,
                "precision": 2 / 5,
                "hit": 1.0,
                "ndcg": 0.7039180890341347,  # 1.5 / 2.1309297535714575
                "map": 5 / 9,
                "mrr": 1.0,
            },
        ),
    ],
)
def test_known_answer_hits_at_rank_1_and_3(k: int, expected: dict[str, float]) -> None:
    for metric, value in expected.items():
        assert one(metric, HITS_10100, 3, k) == pytest.approx(value, abs=1e-12), metric


def test_hand_constants() -> None:
    # the IDCG of three positions used above: 1 + 0.6309297535714575 + 0.5
    assert math.isclose(1 + D2 + D3, 2.1309297535714575, abs_tol=1e-12)
    assert math.isclose(1.5 / (1 + D2 + D3), 0.7039180890341347, abs_tol=1e-12)


def test_perfect_ranking() -> None:
    # hits [1, 1, 1, 0, 0], n_rel = 3: the three relevant items occupy ranks 1..3.
    # k=3: DCG = IDCG = 1 + 0.6309 + 0.5 -> NDCG = 1; MAP = (1/1 + 2/2 + 3/3) / 3 = 1;
    #      recall = 3/3 = 1; precision = 3/3 = 1.
    # k=5: NDCG = 1 (IDCG over min(5, 3) = 3 positions); MAP = 3 / min(5, 3) = 1;
    #      recall = 1; precision = 3/5.
    hits = [1, 1, 1, 0, 0]
    for k in (3, 5):
        assert one("ndcg", hits, 3, k) == pytest.approx(1.0, abs=1e-12)
        assert one("map", hits, 3, k) == pytest.approx(1.0, abs=1e-12)
        assert one("recall", hits, 3, k) == 1.0
        assert one("hit", hits, 3, k) == 1.0
    assert one("precision", hits, 3, 3) == 1.0
    assert one("precision", hits, 3, 5) == pytest.approx(3 / 5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 3, 5])
def test_no_hit_is_zero(metric: str, k: int) -> None:
    # hits [0, 0, 0, 0, 0], n_rel = 2: every numerator is 0 -> every metric 0.
    assert one(metric, [0, 0, 0, 0, 0], 2, k) == 0.0


def test_fewer_relevant_than_k() -> None:
    # hits [0, 1, 0, 0, 0], n_rel = 1 < k = 5.
    # recall    = 1 / 1 = 1
    # precision = 1 / 5 = 0.2
    # NDCG      = (1/log2 3) / (1/log2 2) = 0.6309297535714575  (IDCG truncated to n_rel = 1)
    # MAP       = P@2 * 1 / min(5, 1) = (1/2) / 1 = 0.5
    # hit       = 1
    h = [0, 1, 0, 0, 0]
    assert one("recall", h, 1, 5) == 1.0
    assert one("precision", h, 1, 5) == pytest.approx(0.2)
    assert one("ndcg", h, 1, 5) == pytest.approx(0.6309297535714575, abs=1e-12)
    assert one("map", h, 1, 5) == pytest.approx(0.5)
    assert one("hit", h, 1, 5) == 1.0


def test_more_relevant_than_k() -> None:
    # hits [1, 1, 0, 0, 0], n_rel = 10 > k.
    # k=2: recall = 2 / 10 = 0.2  (NOT 2 / min(2, 10) = 1)
    #      NDCG   = (1 + 0.6309) / (1 + 0.6309) = 1  (IDCG over min(2, 10) = 2 positions)
    #      MAP    = (1/1 + 2/2) / min(2, 10) = 2 / 2 = 1
    #      precision = 2 / 2 = 1
    # k=5: recall = 0.2
    #      IDCG   = 1 + 0.6309297535714575 + 0.5 + 0.4306765580733931 + 0.3868528072345416
    #             = 2.948459118879392 (min(5, 10) = 5 positions)
    #      NDCG   = 1.6309297535714575 / 2.948459118879392 = 0.5531464700081437
    #      MAP    = (1 + 1) / min(5, 10) = 0.4
    #      precision = 2 / 5 = 0.4
    h = [1, 1, 0, 0, 0]
    assert one("recall", h, 10, 2) == pytest.approx(0.2)
    assert one("ndcg", h, 10, 2) == pytest.approx(1.0, abs=1e-12)
    assert one("map", h, 10, 2) == pytest.approx(1.0)
    assert one("precision", h, 10, 2) == 1.0
    assert one("recall", h, 10, 5) == pytest.approx(0.2)
    assert math.isclose(1 + D2 + D3 + D4 + D5, 2.948459118879392, abs_tol=1e-12)
    assert one("ndcg", h, 10, 5) == pytest.approx(0.5531464700081437, abs=1e-12)
    assert one("map", h, 10, 5) == pytest.approx(0.4)
    assert one("precision", h, 10, 5) == pytest.approx(0.4)


def test_truncation_hit_at_rank_k_and_k_plus_1() -> None:
    # hits [0, 0, 1, 0], n_rel = 1: the only hit sits at rank 3.
    # k=3 (hit at rank K): recall = 1, hit = 1, precision = 1/3,
    #      NDCG = (1/log2 4) / 1 = 0.5, MAP = P@3 * 1 / min(3, 1) = 1/3, MRR = 1/3.
    # k=2 (hit at rank K+1): nothing counted -> every metric 0.
    h = [0, 0, 1, 0]
    assert one("recall", h, 1, 3) == 1.0
    assert one("hit", h, 1, 3) == 1.0
    assert one("precision", h, 1, 3) == pytest.approx(1 / 3)
    assert one("ndcg", h, 1, 3) == pytest.approx(0.5)
    assert one("map", h, 1, 3) == pytest.approx(1 / 3)
    assert one("mrr", h, 1, 3) == pytest.approx(1 / 3)
    for metric in METRICS:
        assert one(metric, h, 1, 2) == 0.0, metric


def test_one_value_per_user_in_a_batch() -> None:
    # Three users at k = 2:
    #   u0 hits [1, 0, 0] n_rel 1 -> recall 1,   NDCG 1,                  MAP 1
    #   u1 hits [0, 1, 1] n_rel 4 -> recall 1/4, NDCG 0.6309/(1+0.6309), MAP (1/2)/2 = 1/4
    #   u2 hits [0, 0, 0] n_rel 2 -> 0, 0, 0
    hits = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)
    n_rel = np.array([1, 4, 2])
    np.testing.assert_allclose(recall_at_k(hits, n_rel, 2), [1.0, 0.25, 0.0])
    np.testing.assert_allclose(ndcg_at_k(hits, n_rel, 2), [1.0, D2 / (1 + D2), 0.0])
    np.testing.assert_allclose(map_at_k(hits, n_rel, 2), [1.0, 0.25, 0.0])
    np.testing.assert_allclose(precision_at_k(hits, n_rel, 2), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(hit_rate_at_k(hits, n_rel, 2), [1.0, 1.0, 0.0])
    # MRR: u0 first hit at rank 1 -> 1; u1 at rank 2 -> 1/2; u2 none -> 0
    np.testing.assert_allclose(mrr_at_k(hits, n_rel, 2), [1.0, 0.5, 0.0])


def test_mrr_counts_only_the_first_hit() -> None:
    # hits [0, 1, 1, 1], n_rel 3: first hit at rank 2 -> 1/2 whatever follows, at k 2..4;
    # at k = 1 nothing is counted -> 0
    assert one("mrr", [0, 1, 1, 1], 3, 4) == 0.5
    assert one("mrr", [0, 1, 1, 1], 3, 2) == 0.5
    assert one("mrr", [0, 1, 1, 1], 3, 1) == 0.0


def test_coverage_known_answer() -> None:
    # 5 items whose best ranks over all users are 0, 3, 1, never (5), 0:
    # in some top 1: items 0 and 4 -> 2/5; top 2: + item 2 -> 3/5; top 4: + item 1 -> 4/5
    best = np.array([0, 3, 1, 5, 0])
    assert coverage_at_k(best, 1) == pytest.approx(2 / 5)
    assert coverage_at_k(best, 2) == pytest.approx(3 / 5)
    assert coverage_at_k(best, 4) == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="non-empty"):
        coverage_at_k(np.array([]), 1)


def test_ranking_metrics_keys_and_values() -> None:
    hits = np.array([HITS_10100], dtype=bool)
    out = ranking_metrics(hits, np.array([3]), (1, 3))
    assert set(out) == {f"{m}@{k}" for m in METRICS for k in (1, 3)}
    assert out["recall@3"][0] == pytest.approx(2 / 3)
    assert out["map@3"][0] == pytest.approx(5 / 9)


def test_empty_batch_gives_empty_arrays() -> None:
    out = ranking_metrics(np.zeros((0, 5), dtype=bool), np.zeros(0), (1, 5))
    assert all(v.shape == (0,) for v in out.values())


# --------------------------------------------------------------------------------------
# Invalid input


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("hits", "n_rel", "k"),
    [
        (np.array([1, 0, 1], dtype=bool), np.array([2]), 1),  # hits not 2-D
        (np.zeros((2, 3), dtype=bool), np.array([1]), 1),  # n_rel length != B
        (np.zeros((2, 3), dtype=bool), np.array([[1], [1]]), 1),  # n_rel not 1-D
        (np.zeros((1, 3), dtype=bool), np.array([1]), 0),  # k = 0
        (np.zeros((1, 3), dtype=bool), np.array([1]), -1),  # k < 0
        (np.zeros((1, 3), dtype=bool), np.array([1]), 4),  # k > columns
        (np.zeros((1, 3), dtype=bool), np.array([0]), 1),  # n_rel = 0
        (np.ones((1, 3), dtype=bool), np.array([2]), 1),  # 3 hits but n_rel 2
    ],
)
def test_invalid_input_raises(metric: str, hits: np.ndarray, n_rel: np.ndarray, k: int) -> None:
    with pytest.raises(ValueError):
        FUNCS[metric](hits, n_rel, k)


# --------------------------------------------------------------------------------------
# Properties on seeded random hit matrices (hypothesis is not installed in the venv)


def random_cases(seed: int, n_cases: int = 40) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        b, kk = int(rng.integers(1, 30)), int(rng.integers(1, 25))
        hits = rng.random((b, kk)) < rng.uniform(0.0, 1.0)
        n_rel = hits.sum(axis=1) + rng.integers(0, 6, size=b)
        n_rel = np.maximum(n_rel, 1)
        cases.append((hits, n_rel))
    return cases


def reference(metric: str, hits: np.ndarray, n_rel: int, k: int) -> float:
    """One user, written as a plain loop from the definitions in docs/protocol.md."""
    h = [bool(x) for x in hits[:k]]
    n_hits = sum(h)
    if metric == "recall":
        return n_hits / n_rel
    if metric == "precision":
        return n_hits / k
    if metric == "hit":
        return float(n_hits > 0)
    if metric == "ndcg":
        dcg = sum(1 / math.log2(r + 2) for r, x in enumerate(h) if x)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k, n_rel)))
        return dcg / idcg
    if metric == "mrr":
        return next((1 / (r + 1) for r, x in enumerate(h) if x), 0.0)
    total, seen = 0.0, 0
    for r, x in enumerate(h):
        if x:
            seen += 1
            total += seen / (r + 1)
    return total / min(k, n_rel)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference(seed: int) -> None:
    for hits, n_rel in random_cases(seed, 15):
        for k in range(1, hits.shape[1] + 1):
            for metric in METRICS:
                got = FUNCS[metric](hits, n_rel, k)
                want = [reference(metric, hits[b], int(n_rel[b]), k) for b in range(len(hits))]
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=metric)


@pytest.mark.parametrize("seed", [10, 11])
def test_properties(seed: int) -> None:
    for hits, n_rel in random_cases(seed):
        kk = hits.shape[1]
        prev = {m: np.zeros(len(hits)) for m in ("recall", "hit")}
        for k in range(1, kk + 1):
            vals = ranking_metrics(hits, n_rel, (k,))
            for name, v in vals.items():
                assert np.all(v >= 0) and np.all(v <= 1 + 1e-12), name
            # recall and hit never decrease as K grows
            for m in ("recall", "hit"):
                assert np.all(vals[f"{m}@{k}"] >= prev[m])
                prev[m] = vals[f"{m}@{k}"]
            # precision * k is the number of hits in the top k
            np.testing.assert_allclose(vals[f"precision@{k}"] * k, hits[:, :k].sum(axis=1))
            # NDCG = 1 exactly when the first min(k, n_rel) positions are all hits
            m = np.minimum(k, n_rel)
            ideal = np.array([hits[b, : m[b]].all() for b in range(len(hits))])
            np.testing.assert_array_equal(np.isclose(vals[f"ndcg@{k}"], 1.0), ideal)


def test_config_knows_every_metric():
    """config.py (which may not import eval/, docs/conventions.md) keeps its own set of the
    metric names eval.valid_metric accepts: it must be exactly the metrics computed here."""
    from cadmr.config import METRIC_NAMES

    assert set(METRICS) == METRIC_NAMES
