"""Leakage guard: no held-out (user, item) pair may reach a matrix a model learns from.

docs/protocol.md requires the check where the matrices are built. Models receive a
:class:`LeakageGuard` in ``setup`` and call :meth:`LeakageGuard.check` on every
interaction-derived matrix they build (autoencoder input and target, graph adjacency,
cross-attention query). A violation raises :class:`LeakageError` and training stops.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cadmr.data.dataset import Dataset, pair_keys
from cadmr.errors import CadmrError


class LeakageError(CadmrError, RuntimeError):
    """A validation or test interaction was found in a model's input."""


class LeakageGuard:
    """Knows the held-out pairs of a dataset and rejects matrices that contain any.

    Args:
        dataset: The dataset whose valid and test pairs must stay unseen.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.n_users = dataset.n_users
        self.n_items = dataset.n_items
        self._held_out = np.union1d(
            pair_keys(dataset.valid, self.n_items), pair_keys(dataset.test, self.n_items)
        )
        # on a cold-item split, the items held out with all their interactions (sorted):
        # models leave them out of what they train on, negatives included
        self.cold_items = np.sort(
            np.concatenate([np.empty(0, np.int64), *dataset.cold_items.values()])
        )

    def check(self, matrix: sp.spmatrix | np.ndarray, what: str, layout: str = "user_item"):
        """Fail loudly if ``matrix`` has a non-zero entry at a held-out pair.

        Args:
            matrix: The matrix about to be used (sparse or dense).
            what: Human-readable name for the error message, e.g. "LightGCN adjacency".
            layout: "user_item" (n_users x n_items), "item_user" (n_items x n_users) or
                "bipartite" ((n_users + n_items) square adjacency, users first).

        Returns:
            The matrix, unchanged, so the call can wrap construction.

        Raises:
            LeakageError: if any held-out pair is non-zero.
        """
        m = sp.coo_matrix(matrix)
        u, i = self.n_users, self.n_items
        expected = {"user_item": (u, i), "item_user": (i, u), "bipartite": (u + i, u + i)}
        if layout not in expected:
            raise ValueError(f"unknown layout {layout!r}; expected one of {list(expected)}")
        if m.shape != expected[layout]:
            raise ValueError(
                f"{what}: shape {m.shape} does not match layout {layout!r} "
                f"(expected {expected[layout]})"
            )
        rows, cols = m.row.astype(np.int64), m.col.astype(np.int64)
        nz = m.data != 0
        rows, cols = rows[nz], cols[nz]
        if layout == "item_user":
            rows, cols = cols, rows
        elif layout == "bipartite":
            upper = (rows < self.n_users) & (cols >= self.n_users)
            lower = (rows >= self.n_users) & (cols < self.n_users)
            rows, cols = (
                np.concatenate([rows[upper], cols[lower]]),
                np.concatenate([cols[upper], rows[lower]]) - self.n_users,
            )
        keys = rows * self.n_items + cols
        leaked = np.isin(keys, self._held_out, assume_unique=False)
        if leaked.any():
            k = int(keys[np.argmax(leaked)])
            u, i = divmod(k, self.n_items)
            raise LeakageError(
                f"{what}: {int(leaked.sum())} validation/test interaction(s) found in a matrix "
                f"the model learns from (e.g. user {u}, item {i}). Models may only see the "
                "training split; see docs/protocol.md."
            )
        return matrix
