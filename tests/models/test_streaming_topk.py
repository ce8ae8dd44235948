"""Streaming item-block top-K (``ranked_topk`` with ``item_block > 0``) against the full path.

A fake model with a fixed, tie-free random score table is ranked once by scoring the whole
catalogue and once by item blocks of several sizes; values and items must agree exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cadmr.config import EvalConfig
from cadmr.data.dataset import Dataset
from cadmr.data.leakage import LeakageGuard
from cadmr.eval.protocol import evaluate
from cadmr.models.base import Recommender, ranked_topk, topk_items

N_USERS, N_ITEMS = 23, 17
# 1 and 3 (3 does not divide 17, so the last block is short), 5, 16, and >= n_items (full)
BLOCKS = [1, 3, 5, 16, N_ITEMS, 100]


class Table(Recommender):
    """Scores from a fixed table; records every ``score`` / ``score_block`` request."""

    name = "table"
    params_cls = dict

    def __init__(self, table: np.ndarray, item_block: int = 0) -> None:
        super().__init__({}, table.shape[0], table.shape[1], {})
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.item_block = item_block  # instance attribute shadows the ClassVar
        self.score_calls: list[tuple[int, int]] = []  # (B, n_items)
        self.block_calls: list[tuple[int, int, int]] = []  # (B, start, stop)

    def score(self, users: np.ndarray) -> torch.Tensor:
        self.score_calls.append((len(users), self.n_items))
        return self.table[torch.from_numpy(np.asarray(users, dtype=np.int64))]  # a copy

    def score_block(self, users: np.ndarray, start: int, stop: int) -> torch.Tensor:
        self.block_calls.append((len(users), start, stop))
        rows = self.table[torch.from_numpy(np.asarray(users, dtype=np.int64))]
        return rows[:, start:stop]  # (B, stop - start), a copy (advanced indexing)

    def state(self) -> dict[str, Any]:
        return {"table": self.table}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.table = state["table"]


def tie_free_table(seed: int = 0, n_users: int = N_USERS, n_items: int = N_ITEMS) -> np.ndarray:
    table = np.random.default_rng(seed).standard_normal((n_users, n_items)).astype(np.float32)
    assert len(np.unique(table)) == table.size  # no ties anywhere: item order is unique
    return table


def random_exclude(seed: int, n_users: int = N_USERS, n_items: int = N_ITEMS) -> sp.csr_matrix:
    """About 30 % of each row excluded; user 0 has every item excluded, user 1 none."""
    dense = np.random.default_rng(seed).random((n_users, n_items)) < 0.3
    dense[0] = True
    dense[1] = False
    return sp.csr_matrix(dense.astype(np.float32))


USERS = np.array([5, 0, 1, 22, 3, 3, 10], dtype=np.int64)  # unsorted, with a repeat


# --------------------------------------------------------------------------------------
# Equality with the full path


@pytest.mark.parametrize("with_exclude", [False, True])
@pytest.mark.parametrize("k", [1, 4, N_ITEMS, N_ITEMS + 10])
@pytest.mark.parametrize("block", BLOCKS)
def test_streaming_equals_full_path(block: int, k: int, with_exclude: bool) -> None:
    table = tie_free_table()
    exclude = random_exclude(1) if with_exclude else None
    full_v, full_i = ranked_topk(Table(table), USERS, k, exclude)
    ref_v, ref_i = topk_items(torch.from_numpy(table[USERS]), USERS, k, exclude)
    # the item_block = 0 path is exactly today's topk_items on the dense scores
    assert torch.equal(full_v, ref_v) and torch.equal(full_i, ref_i)

    model = Table(table, item_block=block)
    v, i = ranked_topk(model, USERS, k, exclude)
    kk = min(k, N_ITEMS)
    assert v.shape == i.shape == (len(USERS), kk)
    assert v.dtype == torch.float32 and i.dtype == torch.int64
    finite = torch.isfinite(full_v)
    torch.testing.assert_close(v, full_v, rtol=0, atol=0)
    # masked items (-inf) tie among themselves: compare items where the score is finite
    assert torch.equal(i[finite], full_i[finite])
    # the -inf tail, whatever its order, lists distinct items (the user's masked ones)
    assert all(len(set(row)) == len(row) for row in i.tolist())
    if with_exclude:
        assert np.isneginf(v[USERS == 0].numpy()).all()  # user 0: every item excluded


def test_streaming_with_ties_agrees_on_values() -> None:
    # Integer scores in 0..3: many ties. Tie order is unspecified, so only the values (and
    # that each listed item really has its listed score) must agree.
    table = np.random.default_rng(4).integers(0, 4, (N_USERS, N_ITEMS)).astype(np.float32)
    exclude = random_exclude(5)
    full_v, _ = ranked_topk(Table(table), USERS, 6, exclude)
    for block in (1, 3, 5):
        v, i = ranked_topk(Table(table, item_block=block), USERS, 6, exclude)
        torch.testing.assert_close(v, full_v, rtol=0, atol=0)
        listed = np.where(
            exclude[USERS].toarray()[np.arange(len(USERS))[:, None], i.numpy()] > 0,
            -np.inf,
            table[USERS[:, None], i.numpy()],
        )
        np.testing.assert_array_equal(listed, v.numpy())
        # deterministic for fixed inputs
        v2, i2 = ranked_topk(Table(table, item_block=block), USERS, 6, exclude)
        assert torch.equal(v, v2) and torch.equal(i, i2)


def test_streaming_with_no_users() -> None:
    v, i = ranked_topk(Table(tie_free_table(), 3), np.zeros(0, np.int64), 5, random_exclude(1))
    assert v.shape == i.shape == (0, 5)


# --------------------------------------------------------------------------------------
# recommend and evaluate


@pytest.mark.parametrize("block", BLOCKS)
def test_recommend_streaming_equals_full(block: int) -> None:
    table = tie_free_table(7)
    train = random_exclude(8)  # user 0 has seen every item
    ds = Dataset.build("t", {"train": train, "valid": train * 0, "test": train * 0})
    full, streamed = Table(table), Table(table, item_block=block)
    for model in (full, streamed):
        model.setup(train, {}, LeakageGuard(ds))
    for k in (3, N_ITEMS + 5):
        for exclude_seen in (True, False):
            fi, fs = full.recommend(USERS, k, exclude_seen)
            si, ss = streamed.recommend(USERS, k, exclude_seen)
            np.testing.assert_array_equal(si, fi)
            np.testing.assert_array_equal(ss, fs)
            assert si.dtype == np.int64 and ss.dtype == np.float32
    items, scores = streamed.recommend(np.array([0]), k=4)
    assert items.tolist() == [[-1, -1, -1, -1]] and np.isneginf(scores).all()


def random_dataset(seed: int, n_users: int = 41, n_items: int = 29) -> Dataset:
    rng = np.random.default_rng(seed)
    splits = {s: np.zeros((n_users, n_items), dtype=np.float32) for s in ("train", "valid", "test")}
    for u in range(n_users):
        items = rng.permutation(n_items)
        n_tr, n_va, n_te = rng.integers(1, 8), rng.integers(0, 4), rng.integers(0, 4)
        splits["train"][u, items[:n_tr]] = 1
        splits["valid"][u, items[n_tr : n_tr + n_va]] = 1
        splits["test"][u, items[n_tr + n_va : n_tr + n_va + n_te]] = 1
    return Dataset.build("rand", {k: sp.csr_matrix(v) for k, v in splits.items()})


@pytest.mark.parametrize("split", ["valid", "test"])
def test_evaluate_metrics_identical_between_block_sizes(split: str) -> None:
    ds = random_dataset(0)
    table = tie_free_table(9, ds.n_users, ds.n_items)
    cfg = EvalConfig(
        ks=(1, 5, 10, 50), batch_size=8, valid_metric="recall@5", mask_valid_at_test=split == "test"
    )
    reference = evaluate(Table(table), ds, split, cfg)
    assert reference["n_users"] > 0
    for block in (1, 4, 7, ds.n_items, 1000):
        assert evaluate(Table(table, item_block=block), ds, split, cfg) == reference, block


# --------------------------------------------------------------------------------------
# Memory (request sizes) and failures


@pytest.mark.parametrize("block", [1, 3, 5, 16])
def test_score_block_requests_bounded_and_score_never_called(block: int) -> None:
    ds = random_dataset(1, n_items=N_ITEMS)
    model = Table(tie_free_table(2, ds.n_users, ds.n_items), item_block=block)
    evaluate(model, ds, "valid", EvalConfig(ks=(2, 20), batch_size=6, valid_metric="recall@2"))
    model.recommend(USERS, k=N_ITEMS + 3)
    assert model.score_calls == []
    assert model.block_calls
    assert all(stop - start <= block for _, start, stop in model.block_calls)
    assert all(rows <= 6 or rows == len(USERS) for rows, _, _ in model.block_calls)
    assert max(stop - start for _, start, stop in model.block_calls) == min(block, N_ITEMS)
    # each ranking call covers the catalogue once, block by block, in order
    per_call = -(-N_ITEMS // block)
    starts = [start for _, start, _ in model.block_calls]
    assert len(starts) % per_call == 0
    assert starts == list(range(0, N_ITEMS, block)) * (len(starts) // per_call)


def test_full_path_calls_score_only() -> None:
    for block in (0, N_ITEMS, N_ITEMS + 1):
        model = Table(tie_free_table(), item_block=block)
        ranked_topk(model, USERS, 3, None)
        assert model.score_calls == [(len(USERS), N_ITEMS)] and model.block_calls == []


class NaNBlock(Table):
    """NaN at one (user, item) of the table, in the block holding ``item``."""

    def __init__(self, item: int, item_block: int) -> None:
        table = tie_free_table()
        table[USERS[2], item] = np.nan
        super().__init__(table, item_block)


@pytest.mark.parametrize("item", [0, 8, N_ITEMS - 1])
@pytest.mark.parametrize("block", [0, 1, 3, 5])
def test_nan_in_one_block_raises(block: int, item: int) -> None:
    model = NaNBlock(item, block)
    # every block is checked before its top-k, whatever k and wherever the NaN lies
    with pytest.raises(FloatingPointError, match=r"^table\.score returned NaN scores$"):
        ranked_topk(model, USERS, 1, None)
    with pytest.raises(FloatingPointError, match="NaN"):
        model.recommend(USERS, k=2, exclude_seen=False)


def test_nan_in_evaluate_raises_in_streaming_path() -> None:
    ds = random_dataset(3, n_items=N_ITEMS)
    table = tie_free_table(4, ds.n_users, ds.n_items)
    table[:, 11] = np.nan  # every user, so whichever is evaluated first hits it
    train = ds.train.toarray()
    table[train > 0] = 0.0  # keep NaN only on unmasked items
    with pytest.raises(FloatingPointError, match="NaN"):
        evaluate(
            Table(table, item_block=4),
            ds,
            "valid",
            EvalConfig(ks=(1,), batch_size=5, valid_metric="recall@1"),
        )


def test_wrong_block_shape_raises() -> None:
    class Short(Table):
        def score_block(self, users: np.ndarray, start: int, stop: int) -> torch.Tensor:
            return super().score_block(users, start, stop)[:, :-1]

    with pytest.raises(ValueError, match="expected"):
        ranked_topk(Short(tie_free_table(), item_block=4), USERS, 3, None)


def test_default_score_block_slices_score() -> None:
    class Plain(Table):
        score_block = Recommender.score_block  # the base implementation

    model = Plain(tie_free_table(), item_block=5)
    v, i = ranked_topk(model, USERS, 4, random_exclude(1))
    full_v, full_i = ranked_topk(Table(tie_free_table()), USERS, 4, random_exclude(1))
    finite = torch.isfinite(full_v)  # user 0's all -inf row ties: its order is unspecified
    assert torch.equal(v, full_v) and torch.equal(i[finite], full_i[finite])
    block = model.score_block(USERS, 2, 9)
    assert block.shape == (len(USERS), 7)
    block.fill_(0.0)  # the caller owns it: the model's table is untouched
    assert torch.equal(model.table, torch.from_numpy(tie_free_table()))
