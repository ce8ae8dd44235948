"""Per-user random train / valid / test split, exactly as docs/protocol.md prescribes.

For a user with ``n`` interactions:

* ``n < 10``: ``n - 2`` train, 1 valid, 1 test;
* ``n >= 10``: ``vt = int(0.2 n)``, ``valid = vt // 2``, ``test = vt - valid``, the rest train.

Which of a user's interactions land in which split is random (one seeded generator, passed
in). The whole split is vectorised: one stable sort puts every user's interactions in a
random order, a rank within the user follows from group offsets, and the ranks are compared
with per-user thresholds.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cadmr.data.dataset import DataError

TRAIN, VALID, TEST = 0, 1, 2
"""The ``x_label`` codes of the MMRec ``.inter`` format."""

MIN_INTERACTIONS = 3
"""Fewest interactions a user needs for one train, one valid and one test interaction."""


def split_counts(n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Number of train, valid and test interactions for users with ``n`` interactions.

    ``int(0.2 n)`` is computed as ``n // 5``, which is the same integer for every
    non-negative ``n`` (the double nearest 0.2 is slightly above 1/5, so ``0.2 * n`` never
    rounds to just below an integer) and exact for any size.

    Args:
        n: Interaction counts, any integer shape. Values below 3 give a train count below 1;
            :func:`split_per_user` rejects them.

    Returns:
        ``(train, valid, test)``: int64 arrays of the shape of ``n``.
    """
    n = np.asarray(n, dtype=np.int64)
    small = n < 10
    vt = np.where(small, 2, n // 5)
    valid = np.where(small, 1, vt // 2)
    test = vt - valid
    train = n - vt
    return train, valid, test


def split_per_user(users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomly assign every (user, item) pair to train, valid or test, per user.

    Args:
        users: User id of each pair, shape (m,), any integer ids (need not be dense).
        items: Item id of each pair, shape (m,). Only its length is used: the label of a pair
            depends on its user and on the random order, never on the item.
        rng: Source of all randomness; the same generator state and input give the same
            labels.

    Returns:
        int8 array of shape (m,), aligned with the input pairs: 0 train, 1 valid, 2 test.
        Every user gets exactly the counts of :func:`split_counts`.

    Raises:
        ValueError: if ``users`` and ``items`` differ in length, or some user has fewer than
            3 interactions (the 5-core filter upstream should have removed them).
    """
    users = np.asarray(users)
    items = np.asarray(items)
    if users.ndim != 1 or users.shape != items.shape:
        raise ValueError(
            f"users and items must be 1-D arrays of one length, got shapes "
            f"{users.shape} and {items.shape}"
        )
    m = users.shape[0]
    labels = np.empty(m, dtype=np.int8)  # (m,)
    if m == 0:
        return labels

    # uid: dense user index of each pair; counts: interactions per distinct user.
    _, uid, counts = np.unique(users, return_inverse=True, return_counts=True)
    too_few = counts < MIN_INTERACTIONS
    if too_few.any():
        raise DataError(
            f"{int(too_few.sum())} user(s) have fewer than {MIN_INTERACTIONS} interactions "
            f"(smallest: {int(counts.min())}); each needs at least one train, one valid and "
            f"one test interaction. Apply the 5-core filter before splitting."
        )

    # A random permutation followed by a stable sort by user: pairs grouped by user, in a
    # uniformly random order within each user.
    perm = rng.permutation(m)  # (m,)
    order = perm[np.argsort(uid[perm], kind="stable")]  # (m,)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))  # (n_distinct_users,)
    sorted_uid = uid[order]  # (m,)
    rank = np.arange(m) - starts[sorted_uid]  # (m,) position within the user's random order

    train, valid, _ = split_counts(counts)  # (n_distinct_users,) each
    n_train = train[sorted_uid]  # (m,)
    n_train_valid = n_train + valid[sorted_uid]  # (m,)
    sorted_labels = np.where(
        rank < n_train, TRAIN, np.where(rank < n_train_valid, VALID, TEST)
    ).astype(np.int8)
    labels[order] = sorted_labels
    return labels


def subsample_per_user(
    train: sp.spmatrix, fraction: float, rng: np.random.Generator
) -> sp.csr_matrix:
    """Keep a random ``fraction`` of each user's training interactions (at least one per user
    who has any; ``round(fraction x n_u)`` otherwise): the cold-start experiment's reduced
    training data. Validation and test are left to the caller, unchanged.

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    m = sp.csr_matrix(train, dtype=np.float32)
    counts = np.diff(m.indptr)
    keep = np.maximum(np.rint(fraction * counts), np.minimum(counts, 1)).astype(np.int64)
    rows = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((rng.random(len(rows)), rows))  # random order within each row
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows)) - m.indptr[rows[order]]
    kept = rank < keep[rows]
    out = sp.csr_matrix(
        (m.data[kept], (rows[kept], m.indices[kept])), shape=m.shape, dtype=np.float32
    )
    out.sort_indices()
    return out
