"""The ids users know: raw user and item ids, and item titles, for a dataset's dense ids.

A dataset folder may hold ``u_id_mapping.csv`` and ``i_id_mapping.csv`` (tab-separated, a
header, then ``raw_id<TAB>dense_id`` per line: what ``cadmr data prepare`` writes and what
MMRec's folders carry) and ``item_text.tsv`` (``item<TAB>text``, raw item ids). ``IdMaps``
reads them once and translates both ways; without a mapping a dense id is its own raw id.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cadmr.data.dataset import DataError, Dataset
from cadmr.errors import CadmrKeyError

USER_MAP = "u_id_mapping.csv"
ITEM_MAP = "i_id_mapping.csv"
ITEM_TEXT = "item_text.tsv"
TITLE_CHARS = 80


def _read_tsv(path: Path, what: str) -> pd.DataFrame:
    """A tab-separated file with a header, every field as text."""
    try:
        return pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read {what}: {e}") from None


def _read_mapping(path: Path, n: int, what: str) -> np.ndarray | None:
    """dense id -> raw id (str array of length n), or None when the file is absent."""
    if not path.is_file():
        return None
    df = _read_tsv(path, f"the {what} id mapping")
    if df.shape[1] != 2:
        raise DataError(f"{path}: expected 2 tab-separated columns (raw id, dense id)")
    raw, dense_text = df.iloc[:, 0].to_numpy(), df.iloc[:, 1]
    if not dense_text.str.fullmatch(r"[0-9]+").all():
        raise DataError(f"{path}: the second column must hold dense integer {what} ids")
    dense = dense_text.astype(np.int64).to_numpy()
    if len(dense) and (dense.max() >= n or len(np.unique(dense)) != len(dense)):
        raise DataError(f"{path}: dense {what} ids must be distinct and below {n}")
    if len(set(raw)) != len(raw):
        raise DataError(f"{path}: a raw {what} id appears twice")
    out = np.array([str(i) for i in range(n)], dtype=object)  # unmapped: the dense id itself
    out[dense] = raw
    return out


def _titles(folder: Path, index: dict[str, int] | None, n: int) -> np.ndarray | None:
    """dense item -> a short title from item_text.tsv ("" where none), or None. ``index``
    maps raw item ids to dense ones; without it the file's ids are dense integers."""
    path = folder / ITEM_TEXT
    if not path.is_file():
        return None
    df = _read_tsv(path, "item texts")
    if df.shape[1] < 2:
        raise DataError(f"{path}: expected columns item<TAB>text")
    texts = df["text"] if "text" in df.columns else df.iloc[:, 1]
    out = np.full(n, "", dtype=object)
    for raw, text in zip(df.iloc[:, 0], texts, strict=True):
        dense = index.get(raw) if index is not None else _as_int(raw)
        if dense is not None and dense < n:
            first = text.split(". ")[0].strip()
            out[dense] = first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 3] + "..."
    return out


def _as_int(token: str) -> int | None:
    return int(token) if token.isdigit() else None


@dataclass(frozen=True)
class IdMaps:
    """Raw ids (and titles) of one dataset's users and items.

    Attributes:
        n_users, n_items: The dataset's sizes.
        users, items: dense -> raw id (str), or None when the folder has no mapping.
        titles: dense item -> short title ("" where unknown), or None without item texts.
    """

    n_users: int
    n_items: int
    users: np.ndarray | None = None
    items: np.ndarray | None = None
    titles: np.ndarray | None = None
    _user_index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _item_index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def for_dataset(cls, dataset: Dataset) -> IdMaps:
        """The maps of ``dataset``'s folder (``info["path"]``); identity for synthetic data."""
        folder = dataset.info.get("path")
        if not folder:
            return cls(dataset.n_users, dataset.n_items)
        folder = Path(str(folder))
        users = _read_mapping(folder / USER_MAP, dataset.n_users, "user")
        items = _read_mapping(folder / ITEM_MAP, dataset.n_items, "item")
        user_index = {r: i for i, r in enumerate(users)} if users is not None else {}
        item_index = {r: i for i, r in enumerate(items)} if items is not None else {}
        titles = _titles(folder, item_index if items is not None else None, dataset.n_items)
        return cls(dataset.n_users, dataset.n_items, users, items, titles, user_index, item_index)

    def user_raw(self, dense: int) -> str:
        return str(self.users[dense]) if self.users is not None else str(dense)

    def item_raw(self, dense: int) -> str:
        return str(self.items[dense]) if self.items is not None else str(dense)

    def item_entry(self, dense: int, **values: object) -> dict[str, object]:
        """An item as an export row or a server answer shows it: raw id, ``values``, and
        its title where the dataset has item texts."""
        entry = {"item": self.item_raw(dense), **values}
        return entry | {"title": self.title(dense)} if self.titles is not None else entry

    def title(self, dense: int) -> str:
        return str(self.titles[dense]) if self.titles is not None else ""

    def user_dense(self, token: str) -> int:
        """A user given as a raw id or, failing that, as a dense integer id."""
        return self._dense(str(token).strip(), self._user_index, self.n_users, "user")

    def item_dense(self, token: str) -> int:
        """An item given as a raw id or, failing that, as a dense integer id."""
        return self._dense(str(token).strip(), self._item_index, self.n_items, "item")

    @staticmethod
    def _dense(token: str, index: dict[str, int], n: int, what: str) -> int:
        if token in index:  # raw ids first: they may look like integers (lfm2k's do)
            return index[token]
        dense = _as_int(token)
        if dense is None or dense >= n:
            known = "a raw id of the dataset's mapping or " if index else ""
            raise CadmrKeyError(f"{what} {token!r} is not {known}a dense id in 0..{n - 1}")
        return dense
