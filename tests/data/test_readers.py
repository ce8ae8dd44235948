"""Tests for the dataset readers (mmrec, lattice, mmssl) and the describe report."""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from cadmr.data.dataset import SPLITS, DataError, Dataset
from cadmr.data.describe import describe_text
from cadmr.data.readers import load_dataset, read_lattice, read_mmrec, read_mmssl

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def pairs_of(m: sp.spmatrix) -> set[tuple[int, int]]:
    coo = sp.coo_matrix(m)
    return {(int(u), int(i)) for u, i in zip(coo.row, coo.col, strict=True)}


def same_matrix(a: sp.spmatrix, b: sp.spmatrix) -> bool:
    return a.shape == b.shape and (sp.csr_matrix(a) != sp.csr_matrix(b)).nnz == 0


# --------------------------------------------------------------------------- round trips


def test_mmrec_reads_the_interactions(make, tiny):
    ds = read_mmrec(make.mmrec(tiny))
    assert (ds.n_users, ds.n_items) == (4, 6)
    for s in SPLITS:
        assert pairs_of(ds.split(s)) == set(tiny[s])
    assert ds.name == "tiny"
    assert ds.info["format"] == "mmrec"
    assert ds.info["duplicates_collapsed"] == 0
    assert ds.features == {}


def test_three_formats_give_the_same_dataset(make, tiny, tiny_features):
    folders = {
        "mmrec": make.mmrec(tiny, folder="a"),
        "lattice": make.lattice(tiny, folder="b"),
        "mmssl": make.mmssl(tiny, folder="c"),
    }
    loaded: dict[str, Dataset] = {}
    for fmt, folder in folders.items():
        make.features(folder.name, **tiny_features)
        loaded[fmt] = load_dataset(folder, name="tiny")
        assert loaded[fmt].info["format"] == fmt
        assert loaded[fmt].info["path"] == str(folder.resolve())
        assert Path(str(loaded[fmt].info["path"])).is_absolute()
    ref = loaded["mmrec"]
    for ds in loaded.values():
        for s in SPLITS:
            assert same_matrix(ds.split(s), ref.split(s))
        assert list(ds.features) == ["image", "text"]
        for mod in ds.features:
            np.testing.assert_array_equal(ds.features[mod], ref.features[mod])
        assert ds.fingerprint() == ref.fingerprint()


@pytest.mark.parametrize("fmt", ["coo", "csr", "csc"])
@pytest.mark.parametrize("array", [False, True])
def test_mmssl_accepts_coo_csr_csc_matrices_and_arrays(make, tiny, fmt, array):
    ds = read_mmssl(make.mmssl(tiny, fmt=fmt, array=array))
    for s in SPLITS:
        assert pairs_of(ds.split(s)) == set(tiny[s])


def test_default_names(make, tiny):
    assert read_mmrec(make.mmrec(tiny, folder="x", name="baby")).name == "baby"
    assert read_lattice(str(make.lattice(tiny, folder="lat"))).name == "lat"
    assert read_mmssl(make.mmssl(tiny, folder="ssl")).name == "ssl"
    assert read_mmssl(make.mmssl(tiny, folder="ssl"), name="other").name == "other"


def test_features_float16_and_float64_become_float32(make, tiny):
    folder = make.mmrec(tiny)
    half = np.arange(24, dtype=np.float16).reshape(6, 4)
    double = np.linspace(0, 1, 12).reshape(6, 2)
    make.features(folder.name, text=half, image=double)
    ds = read_mmrec(folder)
    assert ds.modalities == {"image": 2, "text": 4}
    assert ds.features["text"].dtype == np.float32
    assert ds.features["image"].dtype == np.float32
    np.testing.assert_array_equal(ds.features["text"], half.astype(np.float32))
    np.testing.assert_allclose(ds.features["image"], double, rtol=1e-6)


def test_mmrec_optional_and_extra_columns(make, tiny):
    minimal = read_mmrec(make.mmrec(tiny, folder="a", header="userID\titemID\tx_label"))
    extra = read_mmrec(
        make.mmrec(tiny, folder="b", header="x_label\tfoo\titemID\trating\tuserID\tbar")
    )
    for s in SPLITS:
        assert same_matrix(minimal.split(s), extra.split(s))
        assert pairs_of(minimal.split(s)) == set(tiny[s])


def test_mmrec_sizes_are_max_id_plus_one(make, tiny):
    tiny["test"].append((9, 2))  # cold user 9; n_users = 10 even though it is dropped
    tiny["valid"].append((0, 11))  # item 11 only in valid
    ds = read_mmrec(make.mmrec(tiny))
    assert (ds.n_users, ds.n_items) == (10, 12)


def test_mmrec_tolerates_blank_lines(make, tiny):
    folder = make.mmrec(tiny)
    inter = folder / "tiny.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join([*lines[:3], "", *lines[3:]]) + "\n\n")
    ds = read_mmrec(folder)
    assert pairs_of(ds.train) == set(tiny["train"])


# --------------------------------------------------------------------------- folder / format


def test_load_dataset_path_not_a_directory(make, tiny):
    inter = make.mmrec(tiny) / "tiny.inter"
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset(inter)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(make.root / "nowhere")


def test_load_dataset_unknown_format_names_expected_files(make):
    folder = make.text("empty", "notes.txt", "hello")
    with pytest.raises(DataError, match=r"\.inter.*train\.json.*trnMat\.pkl"):
        load_dataset(folder)


def test_load_dataset_ambiguous_folder(make, tiny):
    folder = make.mmrec(tiny, folder="both")
    make.lattice(tiny, folder="both")
    with pytest.raises(DataError, match=r"several formats.*mmrec, lattice"):
        load_dataset(folder)


def test_mmrec_needs_exactly_one_inter_file(make, tiny):
    folder = make.mmrec(tiny, name="a")
    make.mmrec(tiny, name="b")
    with pytest.raises(DataError, match=r"exactly one.*a\.inter, b\.inter"):
        read_mmrec(folder)
    with pytest.raises(DataError, match=r"exactly one.*found none"):
        read_mmrec(make.folder("nothing"))


def test_lattice_missing_file(make, tiny):
    folder = make.lattice(tiny)
    (folder / "val.json").unlink()
    with pytest.raises(DataError, match=r"missing val\.json"):
        read_lattice(folder)


def test_mmssl_missing_file(make, tiny):
    folder = make.mmssl(tiny)
    (folder / "tstMat.pkl").unlink()
    with pytest.raises(DataError, match=r"missing tstMat\.pkl"):
        read_mmssl(folder)


# --------------------------------------------------------------------------- malformed .inter

HEADER = "userID\titemID\tx_label\n"
GOOD = "0\t0\t0\n0\t1\t1\n1\t1\t0\n1\t2\t2\n"  # lines 2-5


def inter(make, body: str, header: str = HEADER) -> Path:
    return make.text("bad", "bad.inter", header + body)


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (GOOD + "2\t3\t3\n", r"bad\.inter: line 6: x_label 3 is not 0 \(train\)"),
        (GOOD + "2\t3\t-1\n", r"line 6: x_label -1"),
        (GOOD + "-2\t3\t0\n", r"line 6: negative id in column 'userID'"),
        (GOOD + "2\t-3\t0\n", r"line 6: negative id in column 'itemID'"),
        (GOOD + "3.5\t3\t0\n", r"line 6: non-integer value in column 'userID' \(value '3\.5'\)"),
        (GOOD + "1e1\t3\t0\n", r"line 6: non-integer value in column 'userID' \(value '1e1'\)"),
        (GOOD + " 4 \t3\t0\n", r"line 6: non-integer value in column 'userID' \(value ' 4 '\)"),
        (GOOD + "2\tabc\t0\n", r"line 6: non-integer value in column 'itemID' \(value 'abc'\)"),
        (GOOD + "2\t3\t0.5\n", r"line 6: non-integer value in column 'x_label'"),
        (GOOD + "2\tinf\t0\n", r"line 6: non-integer value in column 'itemID'"),
        (
            "0\t0\t0\n\t1\t0\n" + GOOD,
            r"line 3: missing value \(empty field or short line\) in "
            r"column 'userID'",
        ),
        (GOOD + "2\tNaN\t0\n", r"line 6: missing value.*'itemID'"),
        (GOOD + "2\t3", r"line 6: missing value \(empty field or short line\).*'x_label'"),
        (GOOD + "2\t3\t0\t7\n", r"bad\.inter: malformed tab-separated line.*line 6"),
        (GOOD + "99999999999\t3\t0\n", r"line 6: id too large in column 'userID'"),
        ("", r"has a header but no interaction lines"),
    ],
    ids=[
        "x_label-3",
        "x_label-neg",
        "neg-user",
        "neg-item",
        "float-user",
        "exponent-user",
        "spaced-user",
        "text-item",
        "float-label",
        "inf-item",
        "empty-field",
        "nan-item",
        "short-last-line",
        "too-many-fields",
        "huge-id",
        "header-only",
    ],
)
def test_mmrec_malformed_lines(make, body, pattern):
    with pytest.raises(DataError, match=pattern):
        read_mmrec(inter(make, body))


def test_mmrec_missing_required_column(make):
    folder = inter(make, "0\t0\t0\n", header="userID\titemID\tlabel\n")
    with pytest.raises(DataError, match=r"bad\.inter: line 1 \(header\) lacks.*x_label"):
        read_mmrec(folder)


def test_mmrec_without_header_line(make):
    folder = make.text("bad", "bad.inter", GOOD)
    with pytest.raises(DataError, match=r"lacks required column\(s\) userID, itemID, x_label"):
        read_mmrec(folder)


def test_mmrec_empty_file(make):
    with pytest.raises(DataError, match=r"bad\.inter: the file is empty"):
        read_mmrec(make.raw("bad", "bad.inter", b""))


def test_mmrec_not_utf8(make):
    content = (HEADER + GOOD).encode() + b"2\t\xff\xfe\t0\n"
    with pytest.raises(DataError, match=r"bad\.inter: not valid UTF-8"):
        read_mmrec(make.raw("bad", "bad.inter", content))


# --------------------------------------------------------------------------- malformed JSON


def lattice_with(make, tiny, fname: str, content: str | bytes) -> Path:
    folder = make.lattice(tiny, folder="bad")
    data = content.encode() if isinstance(content, str) else content
    (folder / fname).write_bytes(data)
    return folder


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"0": [1, 2], "1": [3', r"val\.json: invalid or truncated JSON at line 1"),
        ("", r"val\.json: the file is empty"),
        ("[[0, 1]]", r"val\.json: expected a JSON object"),
        ('{"0": 3}', r"val\.json: user '0': value must be a list of integer item ids"),
        ('{"0": [1, "2"]}', r"user '0': value must be a list of integer"),
        ('{"0": [1, 2.5]}', r"user '0': value must be a list of integer"),
        ('{"0": [true]}', r"user '0': value must be a list of integer"),
        ('{"0": [null]}', r"user '0': value must be a list of integer"),
        ('{"0": {"1": 2}}', r"user '0': value must be a list of integer"),
        ('{"abc": [1]}', r"val\.json: key 'abc' is not an integer user id"),
        ('{"1.0": [1]}', r"key '1.0' is not an integer user id"),
        ('{"-1": [1]}', r"key '-1': negative user id"),
        ('{"0": [-4]}', r"val\.json: user '0': negative item id -4"),
        ('{"2": [5], "02": [4]}', r"user id 2 appears twice"),
        ('{"0": [99999999999999999999999]}', r"does not fit in 64 bits"),
    ],
    ids=[
        "truncated",
        "empty",
        "array",
        "int-value",
        "string-item",
        "float-item",
        "bool-item",
        "null-item",
        "object-value",
        "text-key",
        "float-key",
        "negative-key",
        "negative-item",
        "duplicate-key",
        "overflow",
    ],
)
def test_lattice_malformed_json(make, tiny, content, pattern):
    with pytest.raises(DataError, match=pattern):
        read_lattice(lattice_with(make, tiny, "val.json", content))


def test_lattice_not_utf8(make, tiny):
    with pytest.raises(DataError, match=r"test\.json: not valid UTF-8"):
        read_lattice(lattice_with(make, tiny, "test.json", b'{"0": [1]}\xff'))


def test_lattice_integer_keys_and_empty_lists(make):
    folder = make.text("lat", "train.json", '{"0": [0, 1], "3": [2], "5": []}')
    make.text("lat", "val.json", '{"0": [3]}')
    make.text("lat", "test.json", "{}")
    ds = read_lattice(folder)
    assert (ds.n_users, ds.n_items) == (6, 4)
    assert pairs_of(ds.train) == {(0, 0), (0, 1), (3, 2)}
    assert ds.test.nnz == 0


# --------------------------------------------------------------------------- pickles


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious pickle does on load."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def test_restricted_unpickler_refuses_os_system(make, tiny, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(os.system, f"touch {marker}"))
    folder = make.mmssl(tiny)
    (folder / "trnMat.pkl").write_bytes(payload)
    with pytest.raises(DataError, match=r"trnMat\.pkl: refused to unpickle global '\w+\.system'"):
        read_mmssl(folder)
    assert not marker.exists()
    # The payload is live: an unrestricted unpickler would have run it.
    pickle.loads(payload)
    assert marker.exists()


@pytest.mark.parametrize(
    ("func", "args", "refused"),
    [
        (eval, ("1 + 1",), "builtins.eval"),
        (getattr, ("", "join"), "builtins.getattr"),
        (np.load, ("x.npy",), "numpy.load"),
        (sp.load_npz, ("x.npz",), "scipy.sparse._matrix_io.load_npz"),
    ],
)
def test_restricted_unpickler_refuses_other_callables(make, tiny, func, args, refused):
    folder = make.mmssl(tiny)
    make.pickle(folder.name, "valMat.pkl", _Payload(func, *args))
    with pytest.raises(DataError, match=f"refused to unpickle global '{refused}'"):
        read_mmssl(folder)


@pytest.mark.parametrize(
    "obj",
    [{"row": [0], "col": [1]}, np.eye(4, 6), [1, 2, 3], (np.ones(2), (np.zeros(2), np.ones(2)))],
    ids=["dict", "ndarray", "list", "coo-tuple"],
)
def test_mmssl_wrong_pickle_type(make, tiny, obj):
    folder = make.mmssl(tiny)
    make.pickle(folder.name, "tstMat.pkl", obj)
    with pytest.raises(DataError, match=r"tstMat\.pkl: wrong pickle type"):
        read_mmssl(folder)


def test_mmssl_unsupported_sparse_format_is_refused(make, tiny):
    folder = make.mmssl(tiny)
    make.pickle(folder.name, "tstMat.pkl", sp.lil_matrix((4, 6)))
    with pytest.raises(DataError, match=r"tstMat\.pkl: refused to unpickle global.*lil_matrix"):
        read_mmssl(folder)


def test_mmssl_truncated_pickle(make, tiny):
    folder = make.mmssl(tiny)
    data = (folder / "trnMat.pkl").read_bytes()
    (folder / "trnMat.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"trnMat\.pkl: cannot unpickle \(truncated or corrupt"):
        read_mmssl(folder)


def test_mmssl_empty_pickle(make, tiny):
    folder = make.mmssl(tiny)
    (folder / "valMat.pkl").write_bytes(b"")
    with pytest.raises(DataError, match=r"valMat\.pkl: cannot unpickle"):
        read_mmssl(folder)


def test_mmssl_negative_values_are_refused(make, tiny):
    folder = make.mmssl(tiny)
    make.pickle(folder.name, "tstMat.pkl", sp.coo_matrix(([1.0, -1.0], ([0, 1], [1, 2])), (4, 6)))
    with pytest.raises(DataError, match=r"tstMat\.pkl: matrix holds 1 negative value"):
        read_mmssl(folder)


def test_mmssl_shapes_must_agree(make, tiny):
    folder = make.mmssl(tiny)
    make.pickle(folder.name, "tstMat.pkl", sp.coo_matrix(([1.0], ([0], [7])), shape=(4, 8)))
    with pytest.raises(DataError, match=r"tstMat\.pkl: shape \(4, 8\) differs.*\(4, 6\)"):
        read_mmssl(folder)


def test_mmssl_out_of_range_indices_are_caught(make, tiny):
    folder = make.mmssl(tiny)
    csr = sp.csr_matrix(([1.0, 1.0], ([0, 1], [1, 2])), shape=(4, 6))
    csr.indices[1] = 60  # corrupt: column beyond the shape, never seen by the constructor
    make.pickle(folder.name, "valMat.pkl", csr)
    with pytest.raises(DataError, match=r"valMat\.pkl: inconsistent sparse matrix"):
        read_mmssl(folder)

    coo = sp.coo_matrix(([1.0], ([0], [1])), shape=(4, 6))
    coo.coords = (np.array([-1], dtype=np.int32), coo.col)
    make.pickle(folder.name, "valMat.pkl", coo)
    with pytest.raises(DataError, match=r"valMat\.pkl: inconsistent sparse matrix"):
        read_mmssl(folder)


def test_mmssl_nan_values(make, tiny):
    folder = make.mmssl(tiny)
    make.pickle(folder.name, "valMat.pkl", sp.coo_matrix(([np.nan], ([0], [2])), shape=(4, 6)))
    with pytest.raises(DataError, match=r"valMat\.pkl: matrix holds NaN/inf"):
        read_mmssl(folder)


def test_mmssl_explicit_zero_is_not_an_interaction(make, tiny):
    folder = make.mmssl(tiny)
    rows, cols = zip(*tiny["train"], strict=True)
    data = np.ones(len(rows) + 1)
    data[-1] = 0.0
    train = sp.coo_matrix((data, ([*rows, 2], [*cols, 5])), shape=(4, 6))
    make.pickle(folder.name, "trnMat.pkl", train)
    ds = read_mmssl(folder)
    assert pairs_of(ds.train) == set(tiny["train"])


class _LegacyPickler(pickle.Pickler):
    """Writes a coo_matrix the way scipy < 1.13 did (row/col attributes, no coords)."""

    def reducer_override(self, obj: object) -> object:
        if type(obj) is sp.coo_matrix:
            state = {"row": obj.row, "col": obj.col, "data": obj.data, "_shape": obj.shape}
            return copyreg.__newobj__, (sp.coo_matrix,), state
        return NotImplemented


def test_mmssl_legacy_module_paths_load(make, tiny):
    """Old MMSSL/DiffMM pickles name scipy.sparse.coo and numpy.core.multiarray."""
    folder = make.mmssl(tiny)
    for split, fname in (("train", "trnMat.pkl"), ("valid", "valMat.pkl"), ("test", "tstMat.pkl")):
        rows, cols = zip(*tiny[split], strict=True)
        m = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(4, 6))
        buf = io.BytesIO()
        _LegacyPickler(buf, protocol=2).dump(m)
        data = buf.getvalue()
        for new, old in (
            (b"scipy.sparse._coo", b"scipy.sparse.coo"),
            (b"numpy._core.multiarray", b"numpy.core.multiarray"),
        ):
            assert new + b"\n" in data
            data = data.replace(new + b"\n", old + b"\n")
        (folder / fname).write_bytes(data)
    ds = read_mmssl(folder)
    for s in SPLITS:
        assert pairs_of(ds.split(s)) == set(tiny[s])


# --------------------------------------------------------------------------- features

FORMATS = ["mmrec", "lattice", "mmssl"]


def _folder(make, fmt: str, tiny) -> Path:
    return getattr(make, fmt)(tiny)


@pytest.mark.parametrize("fmt", FORMATS)
def test_feature_rows_must_match_items(make, tiny, fmt):
    folder = _folder(make, fmt, tiny)
    make.features(folder.name, text=np.zeros((7, 3), dtype=np.float32))
    with pytest.raises(DataError, match=r"text_feat\.npy: feature 'text' has 7 rows.*6 items"):
        load_dataset(folder)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_feature_nan_inf(make, tiny, bad):
    folder = make.mmrec(tiny)
    arr = np.zeros((6, 3))
    arr[4, 1] = bad
    make.features(folder.name, image=arr)
    with pytest.raises(DataError, match=r"image_feat\.npy: feature 'image' has 1 NaN/inf.*row 4"):
        read_mmrec(folder)


def test_feature_truncated_npy(make, tiny):
    folder = make.mmrec(tiny)
    make.features(folder.name, text=np.ones((6, 50), dtype=np.float32))
    path = folder / "text_feat.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"text_feat\.npy: cannot read the \.npy file"):
        read_mmrec(folder)


def test_feature_not_npy_and_object_npy(make, tiny):
    folder = make.mmrec(tiny)
    make.raw(folder.name, "text_feat.npy", b"not an npy file")
    with pytest.raises(DataError, match=r"text_feat\.npy: cannot read"):
        read_mmrec(folder)
    np.save(folder / "text_feat.npy", np.array([{"a": 1}] * 6, dtype=object))
    with pytest.raises(DataError, match=r"text_feat\.npy: cannot read.*Python objects"):
        read_mmrec(folder)


def test_feature_file_that_is_a_folder_or_has_no_columns(make, tiny):
    folder = make.mmrec(tiny)
    (folder / "text_feat.npy").mkdir()
    with pytest.raises(DataError, match=r"text_feat\.npy: is not a file"):
        read_mmrec(folder)
    (folder / "text_feat.npy").rmdir()
    np.save(folder / "text_feat.npy", np.ones((6, 0), dtype=np.float32))  # 6 tiny items
    with pytest.raises(DataError, match=r"feature 'text' has no columns"):
        read_mmrec(folder)


def test_feature_header_claiming_more_than_the_file_holds(make, tiny):
    folder = make.mmrec(tiny)
    with open(folder / "text_feat.npy", "wb") as fh:  # (30, 80 M) float32 = 9.6 GB claimed
        header = {"descr": "<f4", "fortran_order": False, "shape": (30, 80_000_000)}
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 64)
    with pytest.raises(DataError, match=r"text_feat\.npy: cannot read the \.npy file"):
        read_mmrec(folder)


def test_feature_must_be_float_2d(make, tiny):
    folder = make.mmrec(tiny)
    make.features(folder.name, text=np.ones((6, 2), dtype=np.int64))
    with pytest.raises(DataError, match=r"text_feat\.npy: feature 'text' must be floating"):
        read_mmrec(folder)
    make.features(folder.name, text=np.ones(6, dtype=np.float32))
    with pytest.raises(DataError, match=r"text_feat\.npy: feature 'text' must be a 2-D"):
        read_mmrec(folder)


# --------------------------------------------------------------------------- protocol rules


@pytest.mark.parametrize("fmt", FORMATS)
def test_pair_in_two_splits_is_an_error(make, tiny, fmt):
    tiny["test"].append((2, 3))  # (2, 3) is a training pair
    with pytest.raises(DataError, match=r"appear in both train and test.*user 2, item 3"):
        load_dataset(_folder(make, fmt, tiny))


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_train_split_is_an_error(make, tiny, fmt):
    tiny["train"] = []
    with pytest.raises(DataError, match="training split is empty"):
        load_dataset(_folder(make, fmt, tiny))


@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicates_within_a_split_are_collapsed_and_counted(make, tiny, fmt):
    clean = load_dataset(_folder(make, fmt, tiny), name="tiny")
    tiny["train"] += [(0, 0), (0, 0), (3, 4)]
    tiny["valid"] += [(1, 3)]
    folder = getattr(make, fmt)(tiny, folder=f"{fmt}-dups")
    ds = load_dataset(folder, name="tiny")
    assert ds.info["duplicates_collapsed"] == 4
    assert clean.info["duplicates_collapsed"] == 0
    for s in SPLITS:
        assert same_matrix(ds.split(s), clean.split(s))
    assert set(np.unique(ds.train.data)) == {1.0}


@pytest.mark.parametrize("fmt", FORMATS)
def test_cold_users_are_dropped_and_counted(make, tiny, fmt):
    tiny["valid"] += [(4, 0), (5, 1)]  # users 4 and 5 never train
    tiny["test"] += [(4, 2)]
    shape = {"shape": (6, 6)} if fmt == "mmssl" else {}
    ds = load_dataset(getattr(make, fmt)(tiny, **shape))
    assert ds.n_users == 6
    assert ds.info["cold_users_dropped"] == 2
    assert ds.info["cold_interactions_dropped"] == 3
    assert ds.valid[4].nnz == ds.valid[5].nnz == ds.test[4].nnz == 0
    assert pairs_of(ds.valid) == set(tiny["valid"][:3])


def test_dataset_is_read_only(make, tiny, tiny_features):
    folder = make.mmrec(tiny)
    make.features(folder.name, **tiny_features)
    ds = read_mmrec(folder)
    with pytest.raises(ValueError, match="read-only"):
        ds.train.data[0] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        ds.features["text"][0, 0] = 1.0


# --------------------------------------------------------------------------- describe


def test_describe_text(make, tiny, tiny_features):
    folder = make.mmrec(tiny)
    make.features(folder.name, **tiny_features)
    text = describe_text(read_mmrec(folder))
    lines = text.splitlines()
    assert lines[0] == "Dataset tiny"
    assert any(line.split() == ["users", "4"] for line in lines)
    assert any(line.split() == ["interactions", "total", "13"] for line in lines)
    assert any(line.split() == ["interactions", "valid", "3"] for line in lines)
    assert any(line.split() == ["without", "training", "data", "1"] for line in lines)  # item 5
    assert "sparsity" in text and f"{100 * (1 - 13 / 24):.4f}%" in text
    assert "modalities" in text and "image (3-d), text (4-d)" in text
    assert "format" in text and "mmrec" in text
    assert "cold users dropped" in text
    # counts end in one column
    ends = {len(line) for line in lines if line.rstrip()[-1:].isdigit()}
    assert len(ends) == 1


def test_describe_text_without_modalities_or_info():
    m = sp.csr_matrix(np.eye(3, dtype=np.float32))
    empty = sp.csr_matrix((3, 3), dtype=np.float32)
    ds = Dataset.build("syn", {"train": m, "valid": empty, "test": empty})
    text = describe_text(ds)
    assert "none" in text
    assert any(line.split() == ["format", "-"] for line in text.splitlines())


# --------------------------------------------------------------------------- real data


def _real(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real dataset {name} not available at {folder}")
    return folder


def test_real_baby():
    folder = _real("baby")
    start = time.perf_counter()
    ds = load_dataset(folder)
    elapsed = time.perf_counter() - start
    assert ds.name == "baby" and ds.info["format"] == "mmrec"
    assert (ds.n_users, ds.n_items) == (19_445, 7_050)
    dropped = ds.info["cold_interactions_dropped"]
    assert isinstance(dropped, int)
    assert ds.train.nnz == 119_674
    assert ds.valid.nnz + ds.test.nnz + dropped == 20_559 + 20_559
    assert ds.info["duplicates_collapsed"] == 0
    assert ds.modalities == {}
    assert elapsed < 5.0  # loose bound; typically well under a second


@pytest.mark.parametrize(
    ("name", "users", "items", "counts", "modalities"),
    [
        (
            "lfm2k",
            1_858,
            1_425,
            (44_327, 4_799, 7_219),
            {"audio": 128, "text": 384, "whisper": 512},
        ),
        ("ml100k", 943, 1_682, (75_000, 12_000, 13_000), {"text": 384}),
    ],
)
def test_real_multimodal(name, users, items, counts, modalities):
    ds = load_dataset(_real(name))
    assert (ds.n_users, ds.n_items) == (users, items)
    assert ds.modalities == modalities
    assert ds.train.nnz == counts[0]
    dropped = ds.info["cold_interactions_dropped"]
    assert ds.valid.nnz + ds.test.nnz + dropped == counts[1] + counts[2]
    assert ds.info["duplicates_collapsed"] == 0
    assert all(f.dtype == np.float32 and f.shape[0] == items for f in ds.features.values())


def test_ids_beyond_int32_are_refused(make, tiny):
    folder = make.lattice(tiny)
    (folder / "test.json").write_text('{"3000000000": [1]}')
    with pytest.raises(DataError, match=r"test\.json: largest user id is 3000000000"):
        read_lattice(folder)
    folder = make.mmssl(tiny, folder="huge", shape=(4, 2**31))
    with pytest.raises(DataError, match=r"trnMat\.pkl: largest item id is 2147483647"):
        read_mmssl(folder)


def test_a_huge_id_below_the_limit_is_refused_before_allocating(make, tiny):
    folder = make.text("big", "big.inter", HEADER + GOOD + "2000000000\t3\t0\n")
    with pytest.raises(DataError, match=r"2000000001 user ids .* for 3 distinct users; ids must"):
        read_mmrec(folder)


def test_an_mmssl_shape_far_beyond_its_entries_is_refused(make, tiny):
    folder = make.mmssl(tiny)
    big = (2**31 - 3, 6)
    for name in ("trnMat.pkl", "valMat.pkl", "tstMat.pkl"):
        make.pickle(folder.name, name, sp.coo_matrix(([1.0], ([0], [1])), shape=big))
    with pytest.raises(DataError, match=r"user ids .* for 1 distinct users; ids must be dense"):
        read_mmssl(folder)
