"""Tiny on-disk datasets for the reader tests, written into pytest's tmp_path."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

Pair = tuple[int, int]
Splits = Mapping[str, Iterable[Pair]]

# 4 users x 6 items; item 5 appears only in test (an item without training interactions).
TINY: dict[str, list[Pair]] = {
    "train": [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (3, 4), (3, 0)],
    "valid": [(0, 2), (1, 3), (2, 4)],
    "test": [(0, 3), (1, 4), (3, 5)],
}
TINY_USERS, TINY_ITEMS = 4, 6
LABELS = {"train": 0, "valid": 1, "test": 2}


class Writers:
    """Writes dataset folders in each format under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mmrec(
        self,
        splits: Splits = TINY,
        folder: str = "mmrec",
        name: str = "tiny",
        header: str = "userID\titemID\trating\ttimestamp\tx_label",
    ) -> Path:
        """An MMRec folder; the columns written follow ``header``."""
        cols = header.split("\t")
        lines = [header]
        t = 1_000
        for split, pairs in splits.items():
            for u, i in pairs:
                t += 1
                values = {"userID": u, "itemID": i, "x_label": LABELS[split], "timestamp": t}
                lines.append("\t".join(str(values.get(c, 1)) for c in cols))
        return self.text(folder, f"{name}.inter", "\n".join(lines) + "\n")

    def lattice(self, splits: Splits = TINY, folder: str = "lattice") -> Path:
        files = {"train": "train.json", "valid": "val.json", "test": "test.json"}
        for split, fname in files.items():
            by_user: dict[str, list[int]] = {}
            for u, i in splits.get(split, []):
                by_user.setdefault(str(u), []).append(i)
            self.text(folder, fname, json.dumps(by_user))
        return self.folder(folder)

    def mmssl(
        self,
        splits: Splits = TINY,
        folder: str = "mmssl",
        shape: tuple[int, int] = (TINY_USERS, TINY_ITEMS),
        fmt: str = "coo",
        array: bool = False,
    ) -> Path:
        files = {"train": "trnMat.pkl", "valid": "valMat.pkl", "test": "tstMat.pkl"}
        for split, fname in files.items():
            pairs = list(splits.get(split, []))
            rows = np.array([u for u, _ in pairs], dtype=np.int32)
            cols = np.array([i for _, i in pairs], dtype=np.int32)
            m = sp.coo_matrix((np.ones(len(pairs)), (rows, cols)), shape=shape)
            obj = (sp.coo_array(m) if array else m).asformat(fmt)
            self.pickle(folder, fname, obj)
        return self.folder(folder)

    def features(self, folder: str, **arrays: np.ndarray) -> Path:
        """``<modality>_feat.npy`` files, one per keyword."""
        path = self.folder(folder)
        for modality, arr in arrays.items():
            np.save(path / f"{modality}_feat.npy", arr)
        return path

    def text(self, folder: str, fname: str, content: str) -> Path:
        path = self.folder(folder)
        (path / fname).write_text(content, encoding="utf-8")
        return path

    def raw(self, folder: str, fname: str, content: bytes) -> Path:
        path = self.folder(folder)
        (path / fname).write_bytes(content)
        return path

    def pickle(self, folder: str, fname: str, obj: object, protocol: int = 4) -> Path:
        return self.raw(folder, fname, pickle.dumps(obj, protocol=protocol))


@pytest.fixture
def make(tmp_path: Path) -> Writers:
    """Writers bound to this test's temporary folder."""
    return Writers(tmp_path)


@pytest.fixture
def tiny_features() -> dict[str, np.ndarray]:
    """Two modalities for the tiny dataset, in float32 (text) and float16 (image)."""
    rng = np.random.default_rng(0)
    return {
        "text": rng.standard_normal((TINY_ITEMS, 4)).astype(np.float32),
        "image": rng.standard_normal((TINY_ITEMS, 3)).astype(np.float16),
    }


@pytest.fixture
def tiny() -> dict[str, list[Pair]]:
    """The tiny interactions (4 users x 6 items), split name -> (user, item) pairs."""
    return {s: list(p) for s, p in TINY.items()}
