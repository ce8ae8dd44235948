"""Training-batch samplers shared by the models (written once, docs/conventions.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from cadmr.errors import CadmrValueError

B = TypeVar("B")


class ShuffledBatches(Generic[B]):
    """One epoch's batches: ``range(n)`` in a random order drawn from ``rng`` when iteration
    starts, cut into chunks of ``batch_size`` indices, each turned into a batch by ``make``
    (which may draw from ``rng`` too). It has a length, so the trainer's progress bar shows
    the epoch's total and time left. With ``ids``, the batches hold ``ids[order]`` instead
    (``n`` = len(ids)): e.g. the items a cold-item split leaves to training."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        rng: np.random.Generator,
        make: Callable[[np.ndarray], B],
        ids: np.ndarray | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} batch entries")
        self.n, self.batch_size, self.rng, self.make = n, batch_size, rng, make
        self.ids = ids

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[B]:
        order = self.rng.permutation(self.n).astype(np.int64, copy=False)
        if self.ids is not None:
            order = self.ids[order]
        for start in range(0, self.n, self.batch_size):
            yield self.make(order[start : start + self.batch_size])


@dataclass(frozen=True)
class TripletBatch:
    """BPR training triples: user u prefers pos over neg. All (B,) int64."""

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor


class TripletSampler:
    """One epoch = every training interaction once, in random order, each paired with a
    uniformly drawn item the user has not interacted with in training (as MMRec samples).

    Args:
        train: Binary user x item training matrix.
        skip_items: Items never drawn as negatives: a cold-item split's held-out items
            (``LeakageGuard.cold_items``), which training must not see at all.
    """

    def __init__(self, train: sp.csr_matrix, skip_items: np.ndarray | None = None) -> None:
        coo = train.tocoo()
        self.n_items = train.shape[1]
        self._drawable = None  # None: every item (the same draws as without skip_items)
        if skip_items is not None and len(skip_items):
            self._drawable = np.setdiff1d(np.arange(self.n_items), skip_items)
        self.users = coo.row.astype(np.int64)
        self.items = coo.col.astype(np.int64)
        self._keys = np.sort(self.users * self.n_items + self.items)
        full = np.diff(train.indptr) >= self.n_items
        if full.any():
            raise CadmrValueError(
                f"{int(full.sum())} user(s) interacted with every item: no negatives"
            )

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, len(self._keys) - 1)
        return self._keys[pos] == keys

    def negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uniform items not in each user's training set, (B,) int64."""
        neg = self._draw(rng, len(users))
        bad = self._is_positive(users, neg)
        while bad.any():  # geometric: a handful of rounds even for dense users
            neg[bad] = self._draw(rng, int(bad.sum()))
            bad[bad] = self._is_positive(users[bad], neg[bad])
        return neg

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self._drawable is None:
            return rng.integers(0, self.n_items, size=n)
        return self._drawable[rng.integers(0, len(self._drawable), size=n)]

    def epoch(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[TripletBatch]:
        def triplets(idx: np.ndarray) -> TripletBatch:
            u = self.users[idx]
            return TripletBatch(
                torch.from_numpy(u),
                torch.from_numpy(self.items[idx]),
                torch.from_numpy(self.negatives(u, rng)),
            )

        return ShuffledBatches(len(self.users), batch_size, rng, triplets)


@dataclass(frozen=True)
class PairBatch:
    """Observed training pairs (user u interacted with item), no negatives. Both (B,) int64."""

    users: torch.Tensor
    items: torch.Tensor


class PairSampler:
    """One epoch = every training interaction once, in random order, without negatives (for
    models trained on positive pairs only: BM3's bootstrap loss, in-batch InfoNCE).

    Args:
        train: Binary user x item training matrix.
    """

    def __init__(self, train: sp.csr_matrix) -> None:
        coo = train.tocoo()
        self.users = coo.row.astype(np.int64)
        self.items = coo.col.astype(np.int64)

    def epoch(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[PairBatch]:
        def pairs(idx: np.ndarray) -> PairBatch:
            return PairBatch(torch.from_numpy(self.users[idx]), torch.from_numpy(self.items[idx]))

        return ShuffledBatches(len(self.users), batch_size, rng, pairs)
