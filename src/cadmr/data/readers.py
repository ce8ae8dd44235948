"""Readers for the three on-disk dataset formats of the multimodal-recommendation literature.

Every reader returns one validated, immutable :class:`~cadmr.data.dataset.Dataset` (built with
:meth:`Dataset.build`, which also drops cold valid/test users) or raises :class:`DataError`
with one message naming the offending file (and line, for ``.inter`` files). Nothing is
returned or written partially.

Formats:
    - ``mmrec``: exactly one ``<name>.inter`` file, tab separated, with a header line holding
      at least ``userID``, ``itemID`` and ``x_label`` (0 = train, 1 = valid, 2 = test); any
      other column (``rating``, ``timestamp``, ...) is allowed and ignored.
    - ``lattice``: ``train.json``, ``val.json`` and ``test.json``, each a JSON object
      mapping a user id (an integer written as a string) to a list of integer item ids.
    - ``mmssl``: ``trnMat.pkl``, ``valMat.pkl`` and ``tstMat.pkl``, pickled scipy sparse
      user x item matrices (coo/csr/csc, matrix or array), as used by MMSSL and DiffMM. They
      are unpickled with a restricted unpickler that only resolves the few globals such a
      pickle needs, so a malicious file cannot run code.

In every format, ``<modality>_feat.npy`` files in the folder are item features (row i =
item i), loaded with ``allow_pickle=False`` and converted to float32.

Sizes: for ``mmrec`` and ``lattice``, n_users = max user id + 1 and n_items = max item id + 1
over all three splits (docs/protocol.md); for ``mmssl`` they are the matrices' shape, which
must agree across the three files.

Duplicates (a decision): a (user, item) pair repeated *within* one split is collapsed into a
single implicit interaction, and the number of collapsed repeats is recorded in
``info["duplicates_collapsed"]`` (for ``mmssl``: repeated stored coordinates of a coo matrix or
of a non-canonical csr/csc matrix; a stored value above 1 is not counted, it is simply
binarised). A pair present in two *different* splits is an error (raised by
:meth:`Dataset.build`): it would leak held-out interactions into training.

Every dataset's ``info`` also records ``format`` ("mmrec" | "lattice" | "mmssl") and ``path``
(the absolute folder path).
"""

from __future__ import annotations

import codecs
import copyreg
import csv
import json
import os
import pickle
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cadmr.data.dataset import SPLITS, DataError, Dataset, check_features, pairs_to_csr

__all__ = ["load_dataset", "read_lattice", "read_mmrec", "read_mmssl"]

LATTICE_FILES = {"train": "train.json", "valid": "val.json", "test": "test.json"}
MMSSL_FILES = {"train": "trnMat.pkl", "valid": "valMat.pkl", "test": "tstMat.pkl"}
FEATURE_SUFFIX = "_feat.npy"
INTER_COLUMNS = ("userID", "itemID", "x_label")

# Sizes must fit scipy's int32 index arrays; a larger id is a broken file, not a real dataset.
_MAX_ID = 2**31 - 2
# an id space may have gaps (a user with no interaction left), but not many more ids than
# the data holds: a few lines claiming user 2,147,483,000 must not allocate gigabytes
_SPARSE_IDS, _ID_SLACK = 2, 1000
_PLAIN_INT = r"-?[0-9]+"  # an id or x_label as _int_column accepts it

Pairs = tuple[np.ndarray, np.ndarray]  # (users, items), int64 arrays of equal length


# --------------------------------------------------------------------------- public API


def load_dataset(path: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """Detect the format of a dataset folder and load it.

    Args:
        path: The dataset folder.
        name: Dataset name; defaults to the ``.inter`` file stem (mmrec) or the folder name.

    Returns:
        The validated dataset.

    Raises:
        DataError: if ``path`` is not a directory, if it holds the files of no known format
            (or of more than one), or if the files are malformed.
    """
    folder = _as_folder(path)
    found = [fmt for fmt, probe in _PROBES.items() if probe(folder)]
    if not found:
        raise DataError(
            f"{folder}: no known dataset format found; expected one of: a single "
            f"'<name>.inter' file (mmrec), {', '.join(LATTICE_FILES.values())} (lattice), or "
            f"{', '.join(MMSSL_FILES.values())} (mmssl)"
        )
    if len(found) > 1:
        raise DataError(
            f"{folder}: holds files of several formats ({', '.join(found)}); call the reader "
            f"of the one you mean (read_mmrec, read_lattice, read_mmssl)"
        )
    return _READERS[found[0]](folder, name)


def read_mmrec(folder: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """Read an MMRec folder: one tab-separated ``<name>.inter`` file plus feature files.

    Args:
        folder: The dataset folder.
        name: Dataset name; defaults to the stem of the ``.inter`` file.

    Returns:
        The validated dataset.

    Raises:
        DataError: if the folder does not hold exactly one ``.inter`` file, or on any
            malformed content (the message names the file and, where meaningful, the line).
    """
    root = _as_folder(folder)
    inters = sorted(p for p in root.glob("*.inter") if p.is_file())
    if len(inters) != 1:
        got = ", ".join(p.name for p in inters) if inters else "none"
        raise DataError(
            f"{root}: an mmrec folder must hold exactly one '<name>.inter' file; found {got}"
        )
    inter = inters[0]
    users, items, labels = _read_inter(inter)
    n_users = int(users.max()) + 1
    n_items = int(items.max()) + 1
    _check_size(inter, "user", n_users)
    _check_size(inter, "item", n_items)
    pairs = {s: (users[labels == k], items[labels == k]) for k, s in enumerate(SPLITS)}
    return _assemble(name or inter.stem, root, "mmrec", pairs, n_users, n_items)


def read_lattice(folder: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """Read a LATTICE folder: ``train.json``, ``val.json``, ``test.json`` plus feature files.

    Args:
        folder: The dataset folder.
        name: Dataset name; defaults to the folder name.

    Returns:
        The validated dataset.

    Raises:
        DataError: if a file is missing, unreadable or not a JSON object mapping integer
            user ids to lists of non-negative integer item ids.
    """
    root = _as_folder(folder)
    _require_files(root, "lattice", LATTICE_FILES.values())
    pairs: dict[str, Pairs] = {}
    n_users = n_items = 0
    for s, f in LATTICE_FILES.items():
        users, items, max_user = _read_lattice_json(root / f)
        pairs[s] = (users, items)
        n_users = max(n_users, max_user + 1)  # a user key with an empty list still counts
        n_items = max(n_items, int(items.max()) + 1 if len(items) else 0)
    if n_users == 0 or n_items == 0:
        raise DataError(f"{root / LATTICE_FILES['train']}: the training split is empty")
    return _assemble(name or root.name, root, "lattice", pairs, n_users, n_items)


def read_mmssl(folder: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """Read an MMSSL/DiffMM folder: ``trnMat.pkl``, ``valMat.pkl``, ``tstMat.pkl`` + features.

    The pickles are loaded with a restricted unpickler: only scipy sparse matrix classes, the
    numpy array/dtype reconstructors and a few inert builtins can be referenced; any other
    global (``os.system``, ``builtins.eval``, ...) is refused before it is ever called.

    Args:
        folder: The dataset folder.
        name: Dataset name; defaults to the folder name.

    Returns:
        The validated dataset.

    Raises:
        DataError: if a file is missing, truncated, refers to a refused global, is not a scipy
            sparse matrix, is internally inconsistent, or if the three shapes differ.
    """
    root = _as_folder(folder)
    _require_files(root, "mmssl", MMSSL_FILES.values())
    pairs: dict[str, Pairs] = {}
    shape: tuple[int, int] | None = None
    for s, f in MMSSL_FILES.items():
        (users, items), this_shape = _read_sparse_pickle(root / f)
        if shape is None:
            shape = this_shape
        elif this_shape != shape:
            raise DataError(
                f"{root / f}: shape {this_shape} differs from the shape {shape} of "
                f"{MMSSL_FILES['train']}; the three matrices must be user x item of one size"
            )
        pairs[s] = (users, items)
    assert shape is not None
    n_users, n_items = shape
    _check_size(root / MMSSL_FILES["train"], "user", n_users)
    _check_size(root / MMSSL_FILES["train"], "item", n_items)
    return _assemble(name or root.name, root, "mmssl", pairs, n_users, n_items)


# --------------------------------------------------------------------------- shared steps


def _as_folder(path: str | os.PathLike[str]) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a directory"
        raise DataError(f"{folder}: {what}; a dataset is a folder of files")
    return folder


def _require_files(root: Path, fmt: str, names: Iterable[str]) -> None:
    names = list(names)
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"{root}: a {fmt} folder needs {', '.join(names)}; missing {', '.join(missing)}"
        )


def _check_size(where: Path, what: str, n: int) -> None:
    if n > _MAX_ID:
        raise DataError(
            f"{where}: largest {what} id is {n - 1}; ids must be dense 0-based integers "
            f"below {_MAX_ID}"
        )


def _assemble(
    name: str,
    root: Path,
    fmt: str,
    pairs: dict[str, Pairs],
    n_users: int,
    n_items: int,
) -> Dataset:
    """Collapse within-split duplicates, load features, and build the dataset."""
    for what, n, column in (("user", n_users, 0), ("item", n_items, 1)):
        distinct = len(np.unique(np.concatenate([p[column] for p in pairs.values()])))
        if n > _SPARSE_IDS * distinct + _ID_SLACK:  # before any (n,)-sized allocation
            raise DataError(
                f"{root}: {n} {what} ids (largest {n - 1}) for {distinct} distinct {what}s; "
                "ids must be dense 0-based integers"
            )
    collapsed = 0
    mats: dict[str, sp.csr_matrix] = {}
    for s in SPLITS:
        users, items = pairs[s]
        mats[s] = pairs_to_csr(users, items, n_users, n_items)  # sums repeats into one entry
        collapsed += len(users) - mats[s].nnz
    features = _read_features(root, n_items)
    info = {"format": fmt, "path": str(root.resolve()), "duplicates_collapsed": int(collapsed)}
    return Dataset.build(name, mats, features, info)


def _read_features(root: Path, n_items: int) -> dict[str, np.ndarray]:
    """Every ``<modality>_feat.npy`` of the folder, checked and converted to float32."""
    features: dict[str, np.ndarray] = {}
    for path in sorted(root.glob("*" + FEATURE_SUFFIX)):
        if not path.is_file():
            raise DataError(f"{path}: is not a file; a feature file is one .npy array")
        modality = path.name[: -len(FEATURE_SUFFIX)]
        if not modality:
            raise DataError(f"{path}: feature files must be named '<modality>{FEATURE_SUFFIX}'")
        try:
            # memory-mapped: a header claiming more than the file holds fails here, before
            # anything is allocated
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(
                f"{path}: cannot read the .npy file (truncated or corrupt?): {e}"
            ) from None
        if not isinstance(arr, np.ndarray):
            raise DataError(f"{path}: expected a single .npy array, got {type(arr).__name__}")
        arr = np.array(arr)  # into memory: the dataset must not depend on the file later
        # Same checks as Dataset.build, but the message names the file.
        with np.errstate(over="ignore"):  # float64 overflow -> inf, reported just below
            features[modality] = check_features(str(path), modality, arr, n_items)
    return features


# --------------------------------------------------------------------------- mmrec


def _read_inter(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User ids, item ids and x_labels of a ``.inter`` file, validated line by line."""
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            header=0,
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,  # keep row index == line number - 2
            encoding="utf-8",
            low_memory=False,
            # ids as written: pandas would read "1e1" as 10 and " 4 " as 4 (_int_column)
            dtype={c: str for c in INTER_COLUMNS},
        )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: the file is empty; expected a tab-separated header line with "
            f"{', '.join(INTER_COLUMNS)}, then one interaction per line"
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 text ({e})") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: malformed tab-separated line: {e}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file: {e}") from None

    missing = [c for c in INTER_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: line 1 (header) lacks required column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, df.columns))}; expected a tab-separated header with "
            f"{', '.join(INTER_COLUMNS)} (rating, timestamp optional)"
        )
    df = df.loc[~df.isna().all(axis=1)]  # blank lines carry nothing
    if len(df) == 0:
        raise DataError(f"{path}: has a header but no interaction lines")

    users = _int_column(df, "userID", path)
    items = _int_column(df, "itemID", path)
    labels = _int_column(df, "x_label", path, allow_negative=True)
    bad = (labels < 0) | (labels > 2)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: line {int(df.index[row]) + 2}: x_label {labels[row]} is not 0 (train), "
            f"1 (valid) or 2 (test); {int(bad.sum())} such line(s)"
        )
    return users, items, labels


def _int_column(
    df: pd.DataFrame, col: str, path: Path, *, allow_negative: bool = False
) -> np.ndarray:
    """A column as int64, or a DataError naming the first offending line."""
    s = df[col]

    def fail(mask: np.ndarray, problem: str) -> DataError:
        row = int(np.flatnonzero(mask)[0])
        return DataError(
            f"{path}: line {int(df.index[row]) + 2}: {problem} in column {col!r} "
            f"(value {s.iloc[row]!r}); {int(mask.sum())} such line(s)"
        )

    # the column is text (_read_inter reads ids as written): missing, then plain decimal
    # integers only (no exponent, padding spaces, decimals or inf), then in range
    missing = s.isna().to_numpy()
    if missing.any():
        raise fail(missing, "missing value (empty field or short line)")
    plain = s.str.fullmatch(_PLAIN_INT).to_numpy(dtype=bool)
    if not plain.all():
        raise fail(~plain, "non-integer value")
    num = pd.to_numeric(s).to_numpy(dtype=np.float64)
    if np.abs(num).max() > _MAX_ID:
        raise fail(np.abs(num) > _MAX_ID, "id too large")
    values = num.astype(np.int64)
    if not allow_negative and (values < 0).any():
        raise fail(values < 0, "negative id")
    return values


# --------------------------------------------------------------------------- lattice

_INT_KEY = re.compile(r"-?[0-9]+")


class _JsonObject(list):
    """A decoded JSON object as its (key, value) pairs, so repeated keys stay visible."""


def _read_lattice_json(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Users, items and the largest user key (-1 if none) of one LATTICE file, validated."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 text ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file: {e}") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty; expected a JSON object user -> [items]")
    try:
        pairs = json.loads(text, object_pairs_hook=_JsonObject)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: invalid or truncated JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None
    if not isinstance(pairs, _JsonObject):
        raise DataError(
            f"{path}: expected a JSON object mapping user id -> list of item ids, "
            f"got {_short(pairs)}"
        )

    seen: set[int] = set()
    user_ids: list[int] = []
    lengths: list[int] = []
    flat: list[int] = []
    for key, value in pairs:
        if not _INT_KEY.fullmatch(key):
            raise DataError(f"{path}: key {key!r} is not an integer user id")
        user = int(key)
        if user < 0:
            raise DataError(f"{path}: key {key!r}: negative user id")
        if user in seen:
            raise DataError(f"{path}: user id {user} appears twice as a key")
        seen.add(user)
        if type(value) is not list or not all(type(x) is int for x in value):
            raise DataError(
                f"{path}: user {key!r}: value must be a list of integer item ids, "
                f"got {_short(value)}"
            )
        user_ids.append(user)
        lengths.append(len(value))
        flat.extend(value)
    try:
        items = np.array(flat, dtype=np.int64)
    except OverflowError:
        raise DataError(f"{path}: an item id does not fit in 64 bits") from None
    users = np.repeat(np.array(user_ids, dtype=np.int64), lengths)
    if (items < 0).any():
        k = int(np.flatnonzero(items < 0)[0])
        raise DataError(f"{path}: user '{users[k]}': negative item id {items[k]}")
    max_user = max(seen, default=-1)
    _check_size(path, "user", max_user + 1)
    _check_size(path, "item", int(items.max()) + 1 if len(items) else 0)
    return users, items, max_user


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- mmssl

_SPARSE_CLASSES = {
    "coo_matrix",
    "csr_matrix",
    "csc_matrix",
    "coo_array",
    "csr_array",
    "csc_array",
}
# numpy's own reconstructors, taken from live objects so that pickles written by numpy 1.x
# (numpy.core.multiarray) and 2.x (numpy._core.multiarray) resolve to the same functions.
_NUMPY_GLOBALS: dict[str, object] = {
    "ndarray": np.ndarray,
    "dtype": np.dtype,
    "_reconstruct": np.ndarray((0,)).__reduce__()[0],
    "scalar": np.float64(0).__reduce__()[0],
    "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],
}
_BUILTINS = {
    t.__name__: t
    for t in (object, tuple, list, dict, set, frozenset, int, float, complex, bool, str)
} | {"bytes": bytes, "bytearray": bytearray, "slice": slice}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a pickled scipy sparse matrix needs.

    Resolving by name from fixed tables (rather than importing whatever a module prefix
    allows) keeps callables such as ``numpy.load`` or ``numpy.testing`` helpers out of reach,
    and maps legacy module paths (``scipy.sparse.coo``, ``numpy.core.multiarray``) to the
    current classes without importing deprecated shims.
    """

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> object:
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and (
            name in _SPARSE_CLASSES
        ):
            return getattr(sp, name)
        if (module == "numpy" or module.startswith("numpy.")) and name in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[name]
        if module == "copyreg" and name == "_reconstructor":
            return copyreg._reconstructor  # type: ignore[attr-defined]
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles
            return codecs.encode
        raise DataError(
            f"{self._path}: refused to unpickle global '{module}.{name}'; only scipy sparse "
            f"matrices (and the numpy arrays inside them) may be loaded from a pickle"
        )


def _read_sparse_pickle(path: Path) -> tuple[Pairs, tuple[int, int]]:
    """(users, items) of the stored non-zero entries of a pickled sparse matrix, and its shape."""
    try:
        with path.open("rb") as fh:
            obj = _RestrictedUnpickler(fh, path).load()
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{path}: cannot read the file: {e}") from None
    except Exception as e:  # untrusted bytes can fail in any way; all of them mean "corrupt"
        raise DataError(
            f"{path}: cannot unpickle (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from None

    if not sp.issparse(obj) or obj.format not in ("coo", "csr", "csc"):
        raise DataError(
            f"{path}: wrong pickle type {type(obj).__module__}.{type(obj).__name__}; expected "
            f"a scipy sparse user x item matrix (coo, csr or csc)"
        )
    try:
        coo = _rebuild_coo(obj)
    except (ValueError, TypeError, AttributeError, IndexError, OverflowError) as e:
        raise DataError(f"{path}: inconsistent sparse matrix: {e}") from None
    if coo.data.dtype.kind not in "biuf":
        raise DataError(f"{path}: matrix values must be numeric, got dtype {coo.data.dtype}")
    if not np.isfinite(coo.data).all():
        raise DataError(f"{path}: matrix holds NaN/inf value(s)")
    if (coo.data < 0).any():  # a -1 (disliked, or a padding code) is no interaction
        raise DataError(
            f"{path}: matrix holds {int((coo.data < 0).sum())} negative value(s); "
            "interactions are positive entries, absent ones zero"
        )
    nz = coo.data != 0
    users = coo.row[nz].astype(np.int64)
    items = coo.col[nz].astype(np.int64)
    n_users, n_items = (int(x) for x in coo.shape)
    return (users, items), (n_users, n_items)


def _rebuild_coo(obj: sp.spmatrix) -> sp.coo_matrix:
    """Re-create the matrix through scipy's checking constructors.

    An unpickled matrix never ran its constructor, so its arrays may be inconsistent (indices
    out of range, a wrong ``indptr``); scipy's C routines do not bounds-check, hence the full
    check before any conversion. Duplicate coordinates are kept (they are counted later).
    """
    shape = tuple(int(x) for x in obj.shape)
    if len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"shape {shape} is not a 2-D user x item shape")
    if obj.format == "coo":
        row, col = (np.asarray(a) for a in obj.coords)
        m = sp.coo_matrix((np.asarray(obj.data), (row, col)), shape=shape)
        if row.dtype.kind not in "iu" or col.dtype.kind not in "iu":
            raise ValueError("coordinates must be integers")
        return m
    cls = sp.csr_matrix if obj.format == "csr" else sp.csc_matrix
    arrays = (np.asarray(obj.data), np.asarray(obj.indices), np.asarray(obj.indptr))
    m = cls(arrays, shape=shape)
    m.check_format(full_check=True)
    return m.tocoo()


_PROBES: dict[str, Callable[[Path], bool]] = {
    "mmrec": lambda d: any(p.is_file() for p in d.glob("*.inter")),
    "lattice": lambda d: any((d / f).is_file() for f in LATTICE_FILES.values()),
    "mmssl": lambda d: any((d / f).is_file() for f in MMSSL_FILES.values()),
}
_READERS: dict[str, Callable[[Path, str | None], Dataset]] = {
    "mmrec": read_mmrec,
    "lattice": read_lattice,
    "mmssl": read_mmssl,
}
