"""The one dataset object every model, trainer and evaluator receives.

A :class:`Dataset` is immutable: its sparse matrices and feature arrays are read-only, and
it is built only through :meth:`Dataset.build`, which validates everything and applies the
protocol's cold-user rule (docs/protocol.md) before anything else can see the data.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from cadmr.errors import CadmrValueError

SPLITS = ("train", "valid", "test")


class DataError(CadmrValueError):
    """Raised when a dataset on disk or in memory breaks the format or the protocol."""


def _freeze_csr(m: sp.csr_matrix) -> sp.csr_matrix:
    for arr in (m.data, m.indices, m.indptr):
        arr.flags.writeable = False
    return m


def pairs_to_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary user x item CSR matrix (float32 ones) from id arrays; duplicates collapse to 1."""
    m = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)),
        shape=(n_users, n_items),
        dtype=np.float32,
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m


def pair_keys(m: sp.spmatrix, n_items: int) -> np.ndarray:
    """Sorted int64 keys ``user * n_items + item`` of a user x item matrix's non-zeros."""
    coo = sp.coo_matrix(m)
    nz = coo.data != 0
    keys = np.sort(coo.row[nz].astype(np.int64) * n_items + coo.col[nz].astype(np.int64))
    if len(keys) > 1:  # sort + neighbour test: much faster than np.unique on large inputs
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    return keys


@dataclass(frozen=True)
class Dataset:
    """Train / valid / test interactions plus item features, validated and read-only.

    Attributes:
        name: Dataset name (folder name or synthetic preset).
        train: Binary user x item CSR matrix of training interactions.
        valid: Binary user x item CSR matrix of validation interactions (cold users dropped).
        test: Binary user x item CSR matrix of test interactions (cold users dropped).
        features: Modality name -> read-only float32 array of shape (n_items, d).
        info: Facts about loading (source format, duplicates collapsed, cold users dropped).
        cold_items: On a cold-item split (data/cold.py), split name ("valid", "test") ->
            the sorted item ids held out with all their interactions; training has none
            of them, and evaluation ranks a split's cold items only (docs/protocol.md).
            Empty on an ordinary split.
    """

    name: str
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    info: Mapping[str, object] = field(default_factory=dict)
    cold_items: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    @property
    def modalities(self) -> dict[str, int]:
        """Modality name -> feature dimension."""
        return {k: int(v.shape[1]) for k, v in self.features.items()}

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    @classmethod
    def build(
        cls,
        name: str,
        splits: Mapping[str, sp.spmatrix],
        features: Mapping[str, np.ndarray] | None = None,
        info: Mapping[str, object] | None = None,
        cold_items: Mapping[str, np.ndarray] | None = None,
    ) -> Dataset:
        """Validate split matrices and features and return an immutable dataset.

        Matrices are binarised (any non-zero counts as one interaction). Validation and
        test rows of users without any training interaction are dropped (docs/protocol.md);
        how many is recorded in ``info``.

        Raises:
            DataError: on an empty training split, a (user, item) pair in two splits,
                mismatched shapes, bad feature matrices, or cold items that overlap or
                have training interactions.
        """
        info = dict(info or {})
        mats: dict[str, sp.csr_matrix] = {}
        shape = None
        for s in SPLITS:
            if s not in splits:
                raise DataError(f"{name}: split {s!r} is missing")
            m = sp.csr_matrix(splits[s], dtype=np.float32, copy=True)
            m.eliminate_zeros()
            m.sum_duplicates()
            m.data[:] = 1.0
            m.sort_indices()
            if shape is None:
                shape = m.shape
            elif m.shape != shape:
                raise DataError(f"{name}: split {s!r} has shape {m.shape}, but train has {shape}")
            mats[s] = m
        n_items = shape[1]
        if mats["train"].nnz == 0:
            raise DataError(f"{name}: the training split is empty")

        keys = {s: pair_keys(mats[s], n_items) for s in SPLITS}
        for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
            both = np.intersect1d(keys[a], keys[b], assume_unique=True)
            if len(both):
                u, i = divmod(int(both[0]), n_items)
                raise DataError(
                    f"{name}: {len(both)} (user, item) pair(s) appear in both {a} and {b}, "
                    f"e.g. user {u}, item {i}; every pair must belong to exactly one split"
                )

        _drop_cold_users(mats, info)
        feats: dict[str, np.ndarray] = {}
        for mod, arr in (features or {}).items():
            feats[mod] = check_features(name, mod, arr, n_items)
        return cls(
            name=name,
            train=_freeze_csr(mats["train"]),
            valid=_freeze_csr(mats["valid"]),
            test=_freeze_csr(mats["test"]),
            features=types.MappingProxyType(feats),
            info=types.MappingProxyType(info),
            cold_items=types.MappingProxyType(_check_cold_items(name, cold_items, mats["train"])),
        )

    def fingerprint(self) -> str:
        """Short content hash of splits and features: identical data -> identical string.

        Computed once per object (the data is immutable) and cached.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is not None:
            return cached
        h = hashlib.sha256()
        h.update(f"{self.n_users}x{self.n_items}".encode())
        for s in SPLITS:
            m = self.split(s)
            h.update(s.encode())
            h.update(m.indptr.tobytes())
            h.update(m.indices.tobytes())
        for mod in sorted(self.features):
            h.update(mod.encode())
            h.update(np.ascontiguousarray(self.features[mod]).tobytes())
        for s in sorted(self.cold_items):
            h.update(f"cold {s}".encode())
            h.update(self.cold_items[s].tobytes())
        digest = h.hexdigest()[:16]
        self.__dict__["_fingerprint"] = digest  # frozen dataclass: bypass __setattr__
        return digest

    def with_train(self, train: sp.spmatrix, name: str | None = None) -> Dataset:
        """A copy with another training matrix (e.g. a subsampled one); everything revalidated."""
        return Dataset.build(
            name or self.name,
            {"train": train, "valid": self.valid, "test": self.test},
            self.features,
            {k: v for k, v in self.info.items() if not k.startswith("cold_")},
            self.cold_items,
        )

    def describe(self) -> dict[str, object]:
        """Summary numbers for ``cadmr data describe``."""
        n_cells = self.n_users * self.n_items
        nnz = {s: int(self.split(s).nnz) for s in SPLITS}
        total = sum(nnz.values())
        item_train = np.diff(self.train.tocsc().indptr)
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": nnz,
            "interactions_total": total,
            "sparsity": 1.0 - total / n_cells if n_cells else 1.0,
            "users_with_train": int((np.diff(self.train.indptr) > 0).sum()),
            "items_without_train": int((item_train == 0).sum()),
            "modalities": self.modalities,
            **(
                {"cold_items": {s: len(v) for s, v in self.cold_items.items()}}
                if self.cold_items
                else {}
            ),
            **{k: v for k, v in self.info.items()},
        }


def _drop_cold_users(mats: dict[str, sp.csr_matrix], info: dict[str, object]) -> None:
    """Drop, in place, the valid/test rows of users without training interactions
    (docs/protocol.md) and record how many users and interactions went in ``info``."""
    has_train = np.diff(mats["train"].indptr) > 0
    cold_rows = 0
    cold_users: set[int] = set()
    for s in ("valid", "test"):
        m = mats[s]
        row_nnz = np.diff(m.indptr)
        cold = (~has_train) & (row_nnz > 0)
        if cold.any():
            cold_rows += int(row_nnz[cold].sum())
            cold_users.update(np.flatnonzero(cold).tolist())
            keep = sp.diags(has_train.astype(np.float32))
            m = sp.csr_matrix(keep @ m)
            m.eliminate_zeros()
            m.sort_indices()
            mats[s] = m
    info["cold_users_dropped"] = len(cold_users)
    info["cold_interactions_dropped"] = cold_rows


def _check_cold_items(
    name: str, cold_items: Mapping[str, np.ndarray] | None, train: sp.csr_matrix
) -> dict[str, np.ndarray]:
    """Validated, sorted, read-only cold item ids per split (see ``Dataset.cold_items``)."""
    out: dict[str, np.ndarray] = {}
    n_items = train.shape[1]
    item_train = np.diff(train.tocsc().indptr)
    for s, items in (cold_items or {}).items():
        if s not in ("valid", "test"):
            raise DataError(f"{name}: cold items are given for {s!r}; only valid and test")
        ids = np.unique(np.asarray(items, dtype=np.int64))
        if len(ids) and (ids[0] < 0 or ids[-1] >= n_items):
            raise DataError(f"{name}: cold {s} item ids must lie in 0..{n_items - 1}")
        if (item_train[ids] > 0).any():
            item = int(ids[np.argmax(item_train[ids] > 0)])
            raise DataError(f"{name}: cold {s} item {item} has training interactions")
        ids.flags.writeable = False
        out[s] = ids
    if len(out) == 2 and len(np.intersect1d(out["valid"], out["test"])):
        raise DataError(f"{name}: an item is cold in both valid and test")
    return out


def check_features(name: str, mod: str, arr: np.ndarray, n_items: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise DataError(
            f"{name}: feature {mod!r} must be a 2-D (n_items, dim) array, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{name}: feature {mod!r} must be floating point, got {arr.dtype}")
    if arr.shape[0] != n_items:
        raise DataError(
            f"{name}: feature {mod!r} has {arr.shape[0]} rows but the dataset has "
            f"{n_items} items (row i must describe item i)"
        )
    if arr.shape[1] == 0:
        raise DataError(f"{name}: feature {mod!r} has no columns (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(
            f"{name}: feature {mod!r} has {int(bad.sum())} NaN/inf value(s), first in row {row}"
        )
    arr.flags.writeable = False
    return arr
