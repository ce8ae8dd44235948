"""Streaming readers for raw interaction logs and item metadata.

Supported inputs:
    - Amazon reviews (McAuley 2014 ``reviews_*.json`` and 2018 ``*.json``), one JSON object per
      line, gzipped or not: ``reviewerID``, ``asin``, ``overall`` and ``unixReviewTime`` are
      read, everything else (the review text) is skipped.
    - A CSV/TSV log ``user,item[,rating,timestamp]`` (e.g. the 2014 ``ratings_*.csv`` files),
      with or without a header; a header is recognised when its first two fields are user and
      item column names (``user``, ``user_id``, ``userID``, ``reviewerID`` / ``item``,
      ``item_id``, ``itemID``, ``asin``).
    - Amazon metadata, one record per line, gzipped or not: strict JSON (2018) or Python
      literal dicts with single quotes (2014, parsed with :func:`ast.literal_eval`, which
      evaluates literals only, never code).
    - A CSV/TSV item table with a header holding an item column and any of ``title``,
      ``brand``, ``categories``, ``description`` or ``text``.

Everything is read line by line: raw string ids are mapped to integer codes as they stream
past, so memory holds one entry per distinct user and item plus a few bytes per interaction,
never the review text. Metadata keeps only the items asked for.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import os
from array import array
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from cadmr.data.dataset import DataError

__all__ = [
    "Interactions",
    "item_text",
    "iter_records",
    "open_text",
    "read_interactions",
    "read_item_texts",
]

USER_COLUMNS = ("user", "user_id", "userid", "reviewerid")
ITEM_COLUMNS = ("item", "item_id", "itemid", "asin")
TEXT_COLUMNS = ("title", "brand", "categories", "description", "text")
_GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a text file for reading, gunzipping it when it starts with the gzip magic bytes.

    Raises:
        DataError: if the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    with p.open("rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
    if gz:
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", errors="replace")
    return p.open(encoding="utf-8", errors="replace", newline="")


def _is_table(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".csv", ".tsv", ".txt"))


def iter_records(path: str | os.PathLike[str], progress: bool = False) -> Iterator[dict]:
    """Yield one dict per non-empty line of a JSON-lines or Python-literal-lines file.

    Each line is parsed as JSON first and, failing that, with :func:`ast.literal_eval` (the
    2014 Amazon metadata files are ``repr`` of Python dicts).

    Raises:
        DataError: naming the file and line when a line is neither, or not a dict.
    """
    p = Path(path)
    with open_text(p) as f:
        lines = tqdm(f, desc=p.name, unit=" lines", disable=not progress, mininterval=1.0)
        for lineno, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                try:
                    rec = ast.literal_eval(line)
                except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
                    raise DataError(
                        f"{p}:{lineno}: neither JSON nor a Python literal dict "
                        f"({type(e).__name__}); expected one record per line"
                    ) from None
            if not isinstance(rec, dict):
                raise DataError(f"{p}:{lineno}: expected an object per line, got {type(rec)}")
            yield rec


@dataclass
class Interactions:
    """Raw interactions as integer codes into the raw id lists.

    Attributes:
        users: Code of each interaction's user, int64 (m,); ``user_ids[code]`` is the raw id.
        items: Code of each interaction's item, int64 (m,).
        user_ids: Raw user ids, in order of first appearance.
        item_ids: Raw item ids, in order of first appearance.
        ratings: Rating of each interaction, float32 (m,), or None when the input had none.
        timestamps: Unix time of each interaction, int64 (m,), or None when the input had none.
        info: Counts about reading (lines, duplicates dropped, ...).
    """

    users: np.ndarray
    items: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    info: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)


class _Coder:
    """Maps raw string ids to dense codes in order of first appearance."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.ids: list[str] = []

    def __call__(self, key: str) -> int:
        code = self.codes.get(key)
        if code is None:
            code = self.codes[key] = len(self.ids)
            self.ids.append(key)
        return code


def read_interactions(
    path: str | os.PathLike[str], fmt: str = "auto", progress: bool = True
) -> Interactions:
    """Stream an interaction file into integer codes.

    A (user, item) pair that occurs more than once is kept once (its first occurrence, which
    keeps its rating and timestamp); ``info["duplicates_dropped"]`` counts the rest.

    Args:
        path: Amazon reviews JSON lines (``fmt="amazon"``) or a CSV/TSV log (``fmt="csv"``),
            gzipped or not. ``"auto"`` picks ``csv`` for ``.csv``/``.tsv``/``.txt`` names
            (optionally ``.gz``) and ``amazon`` otherwise.
        fmt: ``"auto"``, ``"amazon"`` or ``"csv"``.
        progress: Show a tqdm line counter.

    Returns:
        The interactions, in file order.

    Raises:
        DataError: on a missing file, a malformed line (named by line number), or no
            interactions at all.
    """
    p = Path(path)
    if fmt == "auto":
        fmt = "csv" if _is_table(p) else "amazon"
    if fmt not in ("amazon", "csv"):
        raise DataError(f"unknown interaction format {fmt!r}; expected auto, amazon or csv")
    found = _Collector()
    read = _read_amazon if fmt == "amazon" else _read_table
    records = read(p, found, progress)
    return found.interactions(p, fmt, records)


class _Collector:
    """Interactions as integer codes in compact arrays, filled while a file streams past."""

    def __init__(self) -> None:
        self.user_code, self.item_code = _Coder(), _Coder()
        self.users, self.items = array("q"), array("q")
        self.ratings, self.stamps = array("f"), array("q")
        self.has_rating = self.has_time = True

    def add(self, u: str, i: str, r: object, t: object, where: str) -> None:
        """Append one interaction; ``r`` and ``t`` may be None or "" (missing)."""
        self.users.append(self.user_code(u))
        self.items.append(self.item_code(i))
        try:
            self.ratings.append(float(r) if r not in (None, "") else float("nan"))
            self.stamps.append(int(float(t)) if t not in (None, "") else -1)
        except (TypeError, ValueError):
            raise DataError(f"{where}: rating {r!r} or timestamp {t!r} is not a number") from None
        self.has_rating &= r not in (None, "")
        self.has_time &= t not in (None, "")

    def interactions(self, p: Path, fmt: str, records: int) -> Interactions:
        """Everything added, each (user, item) pair kept once (its first occurrence)."""
        if not self.users:
            raise DataError(f"{p}: no interactions found")
        u = np.frombuffer(self.users, dtype=np.int64)
        i = np.frombuffer(self.items, dtype=np.int64)
        # first occurrence of each (user, item) pair, in file order (8 bytes per line, no set)
        _, first = np.unique(u * len(self.item_code.ids) + i, return_index=True)
        first.sort()
        ratings = np.frombuffer(self.ratings, dtype=np.float32)
        stamps = np.frombuffer(self.stamps, dtype=np.int64)
        return Interactions(
            users=u[first].copy(),
            items=i[first].copy(),
            user_ids=self.user_code.ids,
            item_ids=self.item_code.ids,
            ratings=ratings[first].copy() if self.has_rating else None,
            timestamps=stamps[first].copy() if self.has_time else None,
            info={"format": fmt, "records": records, "duplicates_dropped": len(u) - len(first)},
        )


def _read_amazon(p: Path, found: _Collector, progress: bool) -> int:
    """Add the interactions of an Amazon reviews file; return the number of records."""
    records = 0
    for records, rec in enumerate(iter_records(p, progress), 1):
        u, i = rec.get("reviewerID"), rec.get("asin")
        if u is None or i is None:
            raise DataError(
                f"{p}: record {records} lacks 'reviewerID' or 'asin'; is this a reviews file?"
            )
        r, t = rec.get("overall"), rec.get("unixReviewTime")
        found.add(str(u), str(i), r, t, f"{p}: record {records}")
    return records


def _read_table(p: Path, found: _Collector, progress: bool) -> int:
    """Add the interactions of a ``user,item[,rating,timestamp]`` CSV/TSV log (an optional
    header line is skipped); return the number of data rows."""
    rows_read = 0
    with open_text(p) as f:
        lines = tqdm(f, desc=p.name, unit=" lines", disable=not progress, mininterval=1.0)
        for lineno, row in enumerate(csv.reader(lines, delimiter=_delimiter(p)), 1):
            if not row or not "".join(row).strip():
                continue
            if lineno == 1 and _is_header(row):
                continue
            if len(row) < 2:
                raise DataError(f"{p}:{lineno}: expected user,item[,rating,timestamp]")
            r = row[2] if len(row) > 2 else None
            t = row[3] if len(row) > 3 else None
            found.add(row[0].strip(), row[1].strip(), r, t, f"{p}:{lineno}")
            rows_read += 1
    return rows_read


def _delimiter(p: Path) -> str:
    """Tab for a ``.tsv`` name (optionally ``.gz``), comma otherwise."""
    return "\t" if p.name.lower().removesuffix(".gz").endswith(".tsv") else ","


def _is_header(row: list[str]) -> bool:
    names = [c.strip().lower() for c in row[:2]]
    return len(names) == 2 and names[0] in USER_COLUMNS and names[1] in ITEM_COLUMNS


def _flatten(value: object) -> list[str]:
    """Strings of a metadata value: a string, a list of strings, or a list of lists."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        out: list[str] = []
        for v in value:
            out.extend(_flatten(v))
        return out
    return [str(value)]


def item_text(rec: dict) -> str:
    """The text encoded for one item, built as MMRec's preprocessing did.

    ``title + ' ' + brand + ' ' + categories (space separated) + ' ' + description`` with
    newlines turned into spaces and runs of spaces collapsed. Missing fields are skipped.
    Categories: the first category path of the 2014 list-of-lists (the item's main path),
    or the 2018 ``category`` list. A ``text`` field (own data) is appended as is.
    """
    cats = rec.get("categories", rec.get("category"))
    if isinstance(cats, list) and cats and isinstance(cats[0], list | tuple):
        cats = cats[0]
    parts = [
        *_flatten(rec.get("title")),
        *_flatten(rec.get("brand")),
        *_flatten(cats),
        *_flatten(rec.get("description")),
        *_flatten(rec.get("text")),
    ]
    return " ".join(" ".join(parts).split())


def read_item_texts(
    path: str | os.PathLike[str], wanted: Collection[str] | None = None, progress: bool = True
) -> dict[str, str]:
    """Stream item metadata and return raw item id -> text (see :func:`item_text`).

    Args:
        path: Amazon metadata (JSON or Python-literal lines, gz or not), or a CSV/TSV item
            table with a header naming an item column (``item``, ``item_id``, ``itemID``,
            ``asin``) and text columns (``title``, ``brand``, ``categories``,
            ``description``, ``text``; others are ignored).
        wanted: Keep only these raw item ids (None keeps all).
        progress: Show a tqdm line counter.

    Raises:
        DataError: on a missing file, a malformed line, or a table without the columns.
    """
    p = Path(path)
    wanted_set = set(wanted) if wanted is not None else None
    out: dict[str, str] = {}
    if _is_table(p):
        with open_text(p) as f:
            reader = csv.DictReader(f, delimiter=_delimiter(p))
            cols = {c.strip().lower(): c for c in reader.fieldnames or []}
            item_col = next((cols[c] for c in ITEM_COLUMNS if c in cols), None)
            text_cols = [cols[c] for c in TEXT_COLUMNS if c in cols]
            if item_col is None or not text_cols:
                raise DataError(
                    f"{p}: an item table needs a header with an item column "
                    f"({', '.join(ITEM_COLUMNS)}) and text columns ({', '.join(TEXT_COLUMNS)}); "
                    f"got {reader.fieldnames}"
                )
            for row in tqdm(reader, desc=p.name, unit=" rows", disable=not progress):
                key = (row.get(item_col) or "").strip()
                if wanted_set is None or key in wanted_set:
                    rec = {c.strip().lower(): row.get(c) for c in text_cols}
                    out[key] = item_text(rec)
        return out
    for rec in iter_records(p, progress):
        key = rec.get("asin")
        if key is None:
            continue
        key = str(key)
        if wanted_set is None or key in wanted_set:
            out[key] = item_text(rec)
    return out
