"""LeakageGuard: no validation/test pair may be non-zero in a matrix a model learns from."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cadmr.data.dataset import Dataset
from cadmr.data.leakage import LeakageError, LeakageGuard

# 4 users x 6 items (n_users != n_items, so a transposed matrix cannot pass by accident).
N_USERS, N_ITEMS = 4, 6
TRAIN = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (3, 4), (3, 0)]
VALID = [(0, 2), (1, 3), (2, 4)]
TEST = [(0, 3), (1, 4), (3, 5)]


def csr(pairs: list[tuple[int, int]], values: list[float] | None = None) -> sp.csr_matrix:
    rows = [u for u, _ in pairs]
    cols = [i for _, i in pairs]
    data = np.ones(len(pairs)) if values is None else np.asarray(values, dtype=np.float64)
    return sp.csr_matrix((data, (rows, cols)), shape=(N_USERS, N_ITEMS))


@pytest.fixture
def guard() -> LeakageGuard:
    ds = Dataset.build("tiny", {"train": csr(TRAIN), "valid": csr(VALID), "test": csr(TEST)})
    return LeakageGuard(ds)


def bipartite(r: sp.spmatrix, upper: bool = True, lower: bool = True) -> sp.csr_matrix:
    """(U + I) square adjacency, users first: [[0, R], [R^T, 0]] (blocks optional)."""
    zero_ui = sp.csr_matrix((N_USERS, N_ITEMS))
    return sp.bmat(
        [[None, r if upper else zero_ui], [r.T if lower else zero_ui.T, None]], format="csr"
    )


def test_training_matrix_passes_and_is_returned_unchanged(guard: LeakageGuard) -> None:
    train = csr(TRAIN)
    assert guard.check(train, "train") is train


@pytest.mark.parametrize(("user", "item"), VALID + TEST)
def test_one_held_out_pair_is_caught(guard: LeakageGuard, user: int, item: int) -> None:
    leaked = csr([*TRAIN, (user, item)])
    with pytest.raises(LeakageError, match=rf"my matrix: 1 .*user {user}, item {item}\b"):
        guard.check(leaked, "my matrix")


def test_counts_every_leaked_pair(guard: LeakageGuard) -> None:
    with pytest.raises(LeakageError, match=r": 6 validation/test"):
        guard.check(csr(TRAIN + VALID + TEST), "all")


def test_any_nonzero_value_counts(guard: LeakageGuard) -> None:
    # a normalised adjacency can hold small or negative weights: still leakage
    with pytest.raises(LeakageError, match="user 1, item 3"):
        guard.check(csr([*TRAIN, (1, 3)], [1.0] * len(TRAIN) + [-1e-9]), "weights")


def test_item_user_layout(guard: LeakageGuard) -> None:
    assert guard.check(csr(TRAIN).T, "item x user", layout="item_user") is not None
    with pytest.raises(LeakageError, match="user 2, item 4"):
        guard.check(csr([*TRAIN, (2, 4)]).T.tocsr(), "item x user", layout="item_user")


def test_bipartite_layout(guard: LeakageGuard) -> None:
    guard.check(bipartite(csr(TRAIN)), "adjacency", layout="bipartite")
    leaked = csr([*TRAIN, (3, 5)])
    for upper, lower in ((True, True), (True, False), (False, True)):
        with pytest.raises(LeakageError, match="user 3, item 5"):
            guard.check(bipartite(leaked, upper, lower), "adjacency", layout="bipartite")


def test_bipartite_ignores_user_user_and_item_item_blocks(guard: LeakageGuard) -> None:
    # entries inside the U x U or I x I blocks are not (user, item) pairs
    adj = bipartite(csr(TRAIN)).tolil()
    adj[0, 2] = 1.0  # user 0 -- user 2 (would be key (0, 2) = a valid pair if misread)
    adj[N_USERS + 0, N_USERS + 3] = 1.0  # item 0 -- item 3
    guard.check(adj.tocsr(), "adjacency", layout="bipartite")


def test_dense_arrays(guard: LeakageGuard) -> None:
    guard.check(csr(TRAIN).toarray(), "dense")
    guard.check(bipartite(csr(TRAIN)).toarray(), "dense", layout="bipartite")
    dense = csr(TRAIN).toarray()
    dense[0, 2] = 0.5
    with pytest.raises(LeakageError, match="user 0, item 2"):
        guard.check(dense, "dense")
    with pytest.raises(LeakageError, match="user 0, item 2"):
        guard.check(dense.T.copy(), "dense", layout="item_user")


def test_explicit_zero_is_not_leakage(guard: LeakageGuard) -> None:
    m = csr([*TRAIN, (0, 2), (1, 4)], [1.0] * len(TRAIN) + [0.0, 0.0])
    assert m.nnz == len(TRAIN) + 2  # the zeros are stored entries
    assert guard.check(m, "explicit zeros") is m
    guard.check(m.T.tocsr(), "explicit zeros", layout="item_user")
    adj = bipartite(m)
    assert (adj.data == 0).sum() == 4  # bmat keeps both stored zeros, in both blocks
    guard.check(adj, "explicit zeros", layout="bipartite")


def test_unknown_layout(guard: LeakageGuard) -> None:
    with pytest.raises(ValueError, match="unknown layout"):
        guard.check(csr(TRAIN), "x", layout="users_items")


def test_held_out_pairs_come_from_valid_and_test_only(guard: LeakageGuard) -> None:
    # a pair in no split at all (user 2, item 0) is not a held-out pair
    guard.check(csr([*TRAIN, (2, 0)]), "unseen pair")


def test_shape_must_match_layout(guard: LeakageGuard) -> None:
    leaked = bipartite(csr([*TRAIN, (0, 2)]))  # (10, 10), holds valid pair (0, 2)
    with pytest.raises(ValueError, match="shape"):
        guard.check(leaked, "adjacency")  # forgot layout="bipartite"
