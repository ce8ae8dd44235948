"""Per-user split: docs/protocol.md's counts, exact coverage, reproducibility, errors."""

from __future__ import annotations

import numpy as np
import pytest

from cadmr.data.split import TEST, TRAIN, VALID, split_counts, split_per_user

# Hand-computed from docs/protocol.md: n < 10 -> (n-2, 1, 1); n >= 10 -> vt = int(0.2 n),
# valid = vt // 2, test = vt - valid, train = n - vt.
EXPECTED = {
    3: (1, 1, 1),
    5: (3, 1, 1),
    9: (7, 1, 1),
    10: (8, 1, 1),  # vt = 2
    11: (9, 1, 1),  # vt = int(2.2) = 2
    15: (12, 1, 2),  # vt = 3
    25: (20, 2, 3),  # vt = 5
    100: (80, 10, 10),  # vt = 20
}


def _per_user_counts(users: np.ndarray, labels: np.ndarray) -> dict[int, tuple[int, int, int]]:
    out = {}
    for u in np.unique(users):
        lab = labels[users == u]
        out[int(u)] = (
            int((lab == TRAIN).sum()),
            int((lab == VALID).sum()),
            int((lab == TEST).sum()),
        )
    return out


@pytest.mark.parametrize(("n", "expected"), sorted(EXPECTED.items()))
def test_split_counts_known_answers(n: int, expected: tuple[int, int, int]) -> None:
    train, valid, test = split_counts(np.array([n]))
    assert (int(train[0]), int(valid[0]), int(test[0])) == expected


@pytest.mark.parametrize(("n", "expected"), sorted(EXPECTED.items()))
def test_split_per_user_single_user(n: int, expected: tuple[int, int, int]) -> None:
    users = np.full(n, 7)
    items = np.arange(n)
    labels = split_per_user(users, items, np.random.default_rng(0))
    assert labels.dtype == np.int8
    assert labels.shape == (n,)
    assert _per_user_counts(users, labels)[7] == expected


def test_split_counts_matches_int_of_0_2_n() -> None:
    n = np.arange(10, 200_000)
    _, valid, test = split_counts(n)
    vt = np.array([int(0.2 * x) for x in n[:2000]])
    assert np.array_equal((valid + test)[:2000], vt)
    assert np.array_equal(valid + test, np.floor(0.2 * n).astype(np.int64))


def test_every_pair_labelled_once_with_protocol_counts() -> None:
    rng = np.random.default_rng(1)
    n_per_user = rng.integers(3, 120, size=300)
    user_ids = rng.choice(10_000, size=300, replace=False)  # sparse, non-dense ids
    users = np.repeat(user_ids, n_per_user)
    items = np.concatenate([rng.choice(5_000, size=k, replace=False) for k in n_per_user])
    shuffle = rng.permutation(len(users))
    users, items = users[shuffle], items[shuffle]

    labels = split_per_user(users, items, np.random.default_rng(2))

    assert labels.shape == users.shape
    assert set(np.unique(labels).tolist()) <= {TRAIN, VALID, TEST}
    counts = _per_user_counts(users, labels)
    train, valid, test = split_counts(n_per_user)
    for uid, tr, va, te in zip(user_ids, train, valid, test, strict=True):
        assert counts[int(uid)] == (tr, va, te)
    assert sum(sum(c) for c in counts.values()) == len(users)


def test_split_reproducible_per_seed() -> None:
    users = np.repeat(np.arange(50), 12)
    items = np.tile(np.arange(12), 50)
    a = split_per_user(users, items, np.random.default_rng(5))
    b = split_per_user(users, items, np.random.default_rng(5))
    c = split_per_user(users, items, np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_is_random_within_user() -> None:
    # One user with 10 interactions: over many seeds every position must reach each split.
    users = np.zeros(10, dtype=np.int64)
    items = np.arange(10)
    seen = np.zeros((10, 3), dtype=bool)
    for seed in range(200):
        labels = split_per_user(users, items, np.random.default_rng(seed))
        seen[np.arange(10), labels] = True
    assert seen.all()


def test_users_with_fewer_than_three_interactions_raise() -> None:
    users = np.array([0, 0, 0, 0, 0, 1, 1, 2])  # user 1 has 2, user 2 has 1
    items = np.arange(8)
    with pytest.raises(ValueError, match=r"2 user\(s\) have fewer than 3"):
        split_per_user(users, items, np.random.default_rng(0))


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="one length"):
        split_per_user(np.zeros(5), np.zeros(4), np.random.default_rng(0))


def test_empty_input() -> None:
    labels = split_per_user(np.empty(0, np.int64), np.empty(0, np.int64), np.random.default_rng(0))
    assert labels.shape == (0,)
    assert labels.dtype == np.int8


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8, 1.0])
def test_subsample_per_user_keeps_the_fraction_of_each_user(fraction):
    import scipy.sparse as sp

    from cadmr.data.split import subsample_per_user

    train = sp.random(50, 40, density=0.3, random_state=1, format="csr")
    train.data[:] = 1.0
    out = subsample_per_user(train, fraction, np.random.default_rng(3))
    n, k = np.diff(train.indptr), np.diff(out.indptr)
    expected = np.maximum(np.rint(fraction * n), np.minimum(n, 1))
    np.testing.assert_array_equal(k, expected)
    assert (out.multiply(train) != out).nnz == 0  # a subset of the user's own items
    again = subsample_per_user(train, fraction, np.random.default_rng(3))
    assert (again != out).nnz == 0  # seeded
    if fraction < 1.0:
        other = subsample_per_user(train, fraction, np.random.default_rng(4))
        assert (other != out).nnz > 0


def test_subsample_rejects_bad_fractions():
    import scipy.sparse as sp

    from cadmr.data.split import subsample_per_user

    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            subsample_per_user(sp.eye(3, format="csr"), bad, np.random.default_rng(0))
