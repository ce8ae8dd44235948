"""Recommendations for many users, written to a file with the ids users know.

``write_recommendations`` ranks users in blocks (the model's streaming top-k: never a users
x items matrix) and writes one row per (user, rank): ``user, rank, item, score`` plus
``title`` where the dataset has item texts. The format follows the file's extension:
``.csv``, ``.jsonl`` or ``.parquet`` (the last needs pyarrow: ``pip install pyarrow``). The
file appears only once it is complete (written beside it, then renamed).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from cadmr.data.ids import IdMaps
from cadmr.errors import CadmrValueError
from cadmr.models.base import Recommender

FORMATS = (".csv", ".jsonl", ".parquet")
USER_BLOCK = 1024  # users ranked per call: B x (item block + k) scores at a time


def check_format(path: Path) -> str:
    """The export format of ``path`` (its extension), or a ValueError naming the choices."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise CadmrValueError(f"{path}: the output must end in {', '.join(FORMATS)}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise CadmrValueError("writing .parquet needs pyarrow: pip install pyarrow") from None
    return suffix


def ranked_rows(
    model: Recommender,
    users: np.ndarray,
    k: int,
    ids: IdMaps,
    exclude_seen: bool = True,
    exclude: sp.csr_matrix | None = None,
    progress: bool = False,
) -> Iterator[dict[str, object]]:
    """(user, rank, item, score[, title]) rows, best first per user, training items left
    out unless ``exclude_seen`` is False, and ``exclude``'s too; items a user cannot get
    (fewer than k eligible) are left out rather than padded."""
    bar = tqdm(total=len(users), unit="user", disable=not progress, desc="recommend")
    model.prepare_scoring()  # once for all blocks: the model does not change in between
    for start in range(0, len(users), USER_BLOCK):
        block = users[start : start + USER_BLOCK]
        items, scores = model.recommend(block, k, exclude_seen, exclude, prepare=False)
        for u, its, scs in zip(block, items, scores, strict=True):
            user = ids.user_raw(int(u))
            for rank, (i, s) in enumerate(zip(its, scs, strict=True), start=1):
                if i < 0:
                    break
                yield {"user": user, "rank": rank, **ids.item_entry(int(i), score=float(s))}
        bar.update(len(block))
    bar.close()


def write_recommendations(rows: Iterator[dict[str, object]], path: Path, fmt: str) -> int:
    """Write ``rows`` to ``path`` in ``fmt``; returns the number of rows. Atomic: a crash
    leaves no partial file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        n = _write(rows, Path(tmp), fmt)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def _write(rows: Iterator[dict[str, object]], path: Path, fmt: str) -> int:
    n = 0
    if fmt == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        batch: list[dict[str, object]] = []
        for row in rows:
            batch.append(row)
            n += 1
            if len(batch) == 65536:
                writer = _parquet_batch(pa, pq, writer, batch, path)
                batch = []
        writer = _parquet_batch(pa, pq, writer, batch, path)
        if writer is not None:
            writer.close()
        return n
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = None
        for row in rows:
            if fmt == ".jsonl":
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
            n += 1
    return n


def _parquet_batch(pa, pq, writer, batch, path):
    if not batch:
        return writer
    table = pa.Table.from_pylist(batch)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema)
    writer.write_table(table)
    return writer
