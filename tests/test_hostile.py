"""The hostile-input corpus (issue 21): what an attacker or a careless user feeds the CLI.

Every case builds its input in a temporary folder, runs ``cadmr`` in-process and checks the
outcome a user should get: exit status 2, exactly one line on stderr starting with
``cadmr: error:``, no traceback, and nothing left behind that looks like a run
(``results.json``). Cases for findings not fixed yet are ``xfail(strict=True)`` with the
finding as the reason: when one gets fixed, its xfail fails and must be removed, so the
list below is always the true list of what is still open.

Families: ``--set`` values, ``.inter`` files, feature files, LATTICE JSON, MMSSL pickles,
checkpoints, downloads (served from ``file://`` URLs: no network) and command-line
arguments. Concurrent runs, kill -9 and failed-run states are in
tests/train/test_runfolder.py, a full disk in tests/test_cli.py.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cadmr.cli import main

# a valid MMRec interaction file: 4 users, 6 items, every user in every split
HEADER = "userID\titemID\tx_label\n"
GOOD = "".join(f"{u}\t{i}\t{s}\n" for u in range(4) for i, s in ((u, 0), (u + 1, 1), (u + 2, 2)))
N_ITEMS = 6


@dataclass(frozen=True)
class Case:
    """One hostile input: ``build(tmp)`` writes it and returns the CLI arguments."""

    name: str
    build: Callable[[Path], list[str]]
    message: str  # a piece of the expected one-line error
    open_finding: str = ""  # non-empty: not fixed yet (xfail, strict)


# ---------------------------------------------------------------- --set values

TRAIN = ["train", "-m", "bpr", "-d", "synthetic-tiny", "--quiet"]
BAD_SETS = {
    "unknown-section": ("foo.bar=1", "foo"),
    "unknown-train-key": ("train.epoch=3", "train.epoch"),
    "epochs-text": ("train.epochs=many", "train.epochs"),
    "epochs-zero": ("train.epochs=0", "epochs"),
    "epochs-negative": ("train.epochs=-5", "epochs"),
    "batch-zero": ("train.batch_size=0", "batch_size"),
    "batch-negative": ("train.batch_size=-64", "batch_size"),
    "batch-huge": ("train.batch_size=1000000000000", "at most 2147483647"),
    "eval-batch-huge": ("eval.batch_size=1000000000000", "at most 2147483647"),
    "lr-text": ("train.learning_rate=fast", "learning_rate"),
    "lr-zero": ("train.learning_rate=0", "learning_rate"),
    "lr-negative": ("train.learning_rate=-0.1", "learning_rate"),
    "lr-nan": ("train.learning_rate=nan", "learning_rate"),
    "lr-inf": ("train.learning_rate=inf", "learning_rate"),
    "patience-negative": ("train.patience=-1", "patience"),
    "threads-text": ("train.num_threads=all", "num_threads"),
    "device-bogus": ("train.device=tpu", "device"),
    "device-missing-gpu": ("train.device=cuda:7", "cuda"),
    "eval-ks-zero": ("eval.ks=[0]", "eval.ks"),
    "eval-ks-empty": ("eval.ks=[]", "eval.ks"),
    "eval-ks-text": ("eval.ks=[ten]", "eval.ks"),
    "eval-ks-huge": ("eval.ks=[100000]", "leaves out 20"),
    "valid-metric-unknown": ("eval.valid_metric=auc@20", "valid_metric"),
    "valid-metric-no-k": ("eval.valid_metric=recall", "valid_metric"),
    "eval-batch-zero": ("eval.batch_size=0", "batch_size"),
    "param-unknown": ("params.depth=3", "depth"),
    "param-wrong-type": ("params.embedding_size=big", "embedding_size"),
    "param-negative": ("params.embedding_size=-8", "embedding_size"),
    "search-not-list": ("search.reg_weight=5", "search.reg_weight"),
    "search-empty": ("search.reg_weight=[]", "search.reg_weight"),
    "search-unknown": ("search.depth=[1,2]", "search.depth"),
    "seed-in-set": ("seed=-3", "seed"),
    "yaml-tag": ("train.epochs=!!python/object/apply:os.system [echo pwned]", "train.epochs"),
    "no-equals": ("train.epochs", "expects key=value"),
    "empty-key": ("=3", "expects key=value"),
}
OPEN_SETS: dict[str, tuple[str, str, str]] = {}  # name: (setting, message, open finding)


def _set_case(name: str, setting: str, message: str, finding: str = "") -> Case:
    return Case(
        f"set-{name}",
        lambda tmp: [*TRAIN, "--out", str(tmp / "run"), "--set", setting],
        message,
        finding,
    )


# ---------------------------------------------------------------- .inter files


def _inter_case(name: str, content: str | bytes, message: str, finding: str = "") -> Case:
    def build(tmp: Path) -> list[str]:
        folder = tmp / "data"
        folder.mkdir()
        path = folder / "bad.inter"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["data", "describe", str(folder)]

    return Case(f"inter-{name}", build, message, finding)


BAD_INTERS = {
    "empty-file": ("", "the file is empty"),
    "header-only": (HEADER, "no interaction lines"),
    "no-header": (GOOD, "lacks required column"),
    "missing-x-label": ("userID\titemID\n0\t0\n", "x_label"),
    "x-label-3": (HEADER + GOOD + "0\t1\t3\n", "x_label 3"),
    "x-label-negative": (HEADER + GOOD + "0\t1\t-1\n", "x_label -1"),
    "x-label-float": (HEADER + GOOD + "0\t1\t0.5\n", "non-integer"),
    "user-negative": (HEADER + GOOD + "-1\t1\t0\n", "negative id"),
    "item-negative": (HEADER + GOOD + "1\t-1\t0\n", "negative id"),
    "user-float": (HEADER + GOOD + "1.5\t1\t0\n", "non-integer"),
    "user-exponent": (HEADER + GOOD + "1e1\t1\t0\n", "non-integer"),
    "user-spaces": (HEADER + GOOD + " 4 \t1\t0\n", "non-integer"),
    "user-plus": (HEADER + GOOD + "+4\t1\t0\n", "non-integer"),
    "user-hex": (HEADER + GOOD + "0x4\t1\t0\n", "non-integer"),
    "user-text": (HEADER + GOOD + "alice\t1\t0\n", "non-integer"),
    "item-inf": (HEADER + GOOD + "1\tinf\t0\n", "non-integer"),
    "item-nan": (HEADER + GOOD + "1\tNaN\t0\n", "missing value"),
    "empty-field": (HEADER + GOOD + "\t1\t0\n", "missing value"),
    "short-line": (HEADER + GOOD + "1\t2\n", "missing value"),
    "extra-field": (HEADER + GOOD + "1\t2\t0\t9\n", "malformed"),
    "id-over-int32": (HEADER + GOOD + "99999999999\t1\t0\n", "id too large"),
    "id-near-2-31": (HEADER + GOOD + "2147483000\t1\t0\n", "ids must be dense"),
    "item-near-2-31": (HEADER + GOOD + "1\t2147483000\t0\n", "ids must be dense"),
    "pair-in-two-splits": (HEADER + GOOD + "0\t1\t0\n", "split"),
    "not-utf8": (HEADER.encode() + b"\xff\xfe\t1\t0\n", "UTF-8"),
    "binary-garbage": (bytes(range(256)) * 4, "bad.inter"),
}


def _two_inters(tmp: Path) -> list[str]:
    folder = tmp / "data"
    folder.mkdir()
    for name in ("a.inter", "b.inter"):
        (folder / name).write_text(HEADER + GOOD)
    return ["data", "describe", str(folder)]


# ---------------------------------------------------------------- feature files


def _feature_case(name: str, write: Callable[[Path], None], message: str) -> Case:
    def build(tmp: Path) -> list[str]:
        folder = tmp / "data"
        folder.mkdir()
        (folder / "d.inter").write_text(HEADER + GOOD)
        write(folder / "text_feat.npy")
        return ["data", "describe", str(folder)]

    return Case(f"feature-{name}", build, message)


def _npy_header(path: Path, shape: tuple[int, ...]) -> None:
    with open(path, "wb") as fh:
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 64)


BAD_FEATURES = {
    "too-few-rows": (lambda p: np.save(p, np.ones((N_ITEMS - 1, 3), np.float32)), "rows"),
    "too-many-rows": (lambda p: np.save(p, np.ones((N_ITEMS + 4, 3), np.float32)), "rows"),
    "one-dimensional": (lambda p: np.save(p, np.ones(N_ITEMS, np.float32)), "2-D"),
    "three-dimensional": (lambda p: np.save(p, np.ones((N_ITEMS, 2, 2), np.float32)), "2-D"),
    "no-columns": (lambda p: np.save(p, np.ones((N_ITEMS, 0), np.float32)), "no columns"),
    "integers": (lambda p: np.save(p, np.ones((N_ITEMS, 3), np.int64)), "floating"),
    "nan": (lambda p: np.save(p, np.full((N_ITEMS, 3), np.nan, np.float32)), "NaN"),
    "inf": (lambda p: np.save(p, np.full((N_ITEMS, 3), np.inf, np.float32)), "NaN/inf"),
    "overflow-float64": (lambda p: np.save(p, np.full((N_ITEMS, 3), 1e300)), "NaN/inf"),
    "objects": (
        lambda p: np.save(p, np.array([{"a": 1}] * N_ITEMS, dtype=object)),
        "cannot read",
    ),
    "not-npy": (lambda p: p.write_bytes(b"just text"), "cannot read"),
    "empty-file": (lambda p: p.write_bytes(b""), "cannot read"),
    "truncated": (lambda p: p.write_bytes(_npy_bytes()[:100]), "cannot read"),
    "header-claims-9-gb": (lambda p: _npy_header(p, (30, 80_000_000)), "cannot read"),
    "a-folder": (lambda p: p.mkdir(), "is not a file"),
}


def _npy_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ones((N_ITEMS, 64), np.float32))
    return buf.getvalue()


# ---------------------------------------------------------------- LATTICE JSON


def _lattice_case(name: str, train: str, message: str) -> Case:
    def build(tmp: Path) -> list[str]:
        folder = tmp / "data"
        folder.mkdir()
        good = json.dumps({str(u): [u + 1] for u in range(4)})
        for fname, text in (("train.json", train), ("val.json", good), ("test.json", good)):
            (folder / fname).write_text(text)
        return ["data", "describe", str(folder)]

    return Case(f"lattice-{name}", build, message)


BAD_LATTICE = {
    "not-json": ("{0: [1]", "train.json"),
    "a-list": ("[[0, 1]]", "train.json"),
    "text-key": ('{"alice": [1]}', "train.json"),
    "negative-item": ('{"0": [-1]}', "train.json"),
    "float-item": ('{"0": [1.5]}', "train.json"),
    "nested-items": ('{"0": [[1]]}', "train.json"),
    "items-not-list": ('{"0": 1}', "train.json"),
    "duplicate-key": ('{"0": [1], "0": [2]}', "train.json"),
}


# ---------------------------------------------------------------- MMSSL pickles


class _RunsCode:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


def _mmssl_case(name: str, train: object, message: str, raw: bytes | None = None) -> Case:
    def build(tmp: Path) -> list[str]:
        folder = tmp / "data"
        folder.mkdir()
        # the other two matrices share the train matrix's shape, so only its content is bad
        shape = train.shape if sp.issparse(train) else (4, N_ITEMS)
        good = sp.coo_matrix(([1.0] * 4, (list(range(4)), [1, 2, 3, 4])), shape=shape)
        for fname, obj in (("trnMat.pkl", train), ("valMat.pkl", good), ("tstMat.pkl", good)):
            path = folder / fname
            if raw is not None and fname == "trnMat.pkl":
                path.write_bytes(raw)
            else:
                path.write_bytes(pickle.dumps(obj))
        return ["data", "describe", str(folder)]

    return Case(f"mmssl-{name}", build, message)


def _coo(data: list[float], shape: tuple[int, int] = (4, N_ITEMS)) -> sp.coo_matrix:
    return sp.coo_matrix((data, (list(range(len(data))), [0] * len(data))), shape=shape)


BAD_MMSSL = {
    "runs-code": (_RunsCode(), "refused"),
    "a-dict": ({"row": [0]}, "wrong pickle type"),
    "a-dense-array": (np.eye(4, N_ITEMS), "wrong pickle type"),
    "lil-matrix": (sp.lil_matrix((4, N_ITEMS)), "refused"),
    "negative-entries": (_coo([1.0, -1.0]), "negative value"),
    "nan-entries": (_coo([1.0, float("nan")]), "NaN/inf"),
    "pair-also-in-valid": (sp.coo_matrix(([1.0], ([0], [1])), shape=(4, N_ITEMS)), "split"),
    "shape-2-31": (_coo([1.0], (2**31 - 3, N_ITEMS)), "ids must be dense"),
}


# ---------------------------------------------------------------- checkpoints


def _checkpoint_case(name: str, write: Callable[[Path], None], message: str) -> Case:
    def build(tmp: Path) -> list[str]:
        path = tmp / "model.pt"
        write(path)
        return ["evaluate", str(path)]

    return Case(f"checkpoint-{name}", build, message)


BAD_CHECKPOINTS = {
    "missing": (lambda p: None, "no checkpoint at"),
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "text": (lambda p: p.write_text("weights"), "cannot read checkpoint"),
    "truncated": (lambda p: p.write_bytes(b"\x80\x02truncated"), "cannot read checkpoint"),
    "a-list": (lambda p: torch.save([1, 2], p), "it holds a list"),
    "empty-dict": (lambda p: torch.save({}, p), "not a cadmr checkpoint"),
    "no-model": (
        lambda p: torch.save(
            {"format": 1, "config": {}, "params": {}, "model_state": {}, "dataset_fingerprint": ""},
            p,
        ),
        "no model",
    ),
    "runs-code": (lambda p: torch.save({"x": _RunsCode()}, p), "could run code"),
    "a-folder": (lambda p: p.mkdir(), "no checkpoint at"),
}


# ---------------------------------------------------------------- command-line arguments


def _trained(tmp: Path) -> Path:
    out = tmp / "trained"
    assert main([*TRAIN, "--out", str(out), "--set", "train.epochs=1"]) == 0
    return out / "best.pt"


def _config_case(name: str, text: str) -> Case:
    def build(tmp: Path) -> list[str]:
        (tmp / "c.yaml").write_text(text)
        return [*TRAIN, "--out", str(tmp / "run"), "--config", str(tmp / "c.yaml")]

    return Case(name, build, "c.yaml")


def _cold_train(
    model: str, dataset: str = "synthetic-tiny@cold=0.3"
) -> Callable[[Path], list[str]]:
    return lambda t: ["train", "-m", model, "-d", dataset, "--out", str(t / "run")]


BAD_ARGS = [
    Case("args-unknown-model", lambda t: ["train", "-m", "nope", "-d", "synthetic-tiny"], "nope"),
    Case("args-cold-split-pop", _cold_train("pop"), "pop cannot rank items without"),
    Case("args-cold-split-paper", _cold_train("cadmr_paper"), "cadmr_paper cannot rank"),
    Case("args-cold-fraction-1", _cold_train("content_knn", "synthetic-tiny@cold=1"), "(0, 1)"),
    Case("args-cold-bad-suffix", _cold_train("content_knn", "synthetic-tiny@cold=x"), "NAME@cold="),
    Case("args-cold-bad-seed", _cold_train("content_knn", "synthetic-tiny@cold=0.2,s=1"), "seed=N"),
    Case("args-unknown-dataset", lambda t: ["train", "-m", "bpr", "-d", "nowhere"], "nowhere"),
    Case("args-unknown-preset", lambda t: ["data", "describe", "synthetic-huge"], "preset"),
    Case(
        "args-recommend-unknown-user",
        lambda t: ["recommend", str(_trained(t)), "--user", "100000"],
        "user '100000' is not a dense id",
    ),
    Case(
        "args-recommend-negative-user",
        lambda t: ["recommend", str(_trained(t)), "--user", "-1"],
        "user '-1' is not a dense id",
    ),
    Case("args-explain-not-cadmr", lambda t: ["explain", str(_trained(t)), "--item", "0"], "cadmr"),
    Case(
        "args-evaluate-other-data",
        lambda t: ["evaluate", str(_trained(t)), "--dataset", "synthetic-small"],
        "other data",
    ),
    Case(
        "args-out-is-a-file",
        lambda t: (t / "f").write_text("x") and [*TRAIN, "--out", str(t / "f")],
        "f",
    ),
    Case(
        "args-config-missing",
        lambda t: [*TRAIN, "--out", str(t / "run"), "--config", str(t / "none.yaml")],
        "none.yaml",
    ),
    _config_case("args-config-yaml-tag", "train: !!python/object/apply:os.system [id]\n"),
    _config_case("args-config-not-mapping", "- 1\n- 2\n"),
    Case("args-seed-negative", lambda t: [*TRAIN, "--out", str(t / "r"), "--seed", "-1"], "seed"),
]


# ---------------------------------------------------------------- downloads (file:// URLs)


def _archive(kind: str, files: dict[str, bytes]) -> bytes:
    import io
    import tarfile
    import zipfile

    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, data in files.items():
                z.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _download_case(
    name: str, payload: bytes, message: str, sha256: str | None = None, flags: tuple = ()
) -> Case:
    def build(tmp: Path) -> list[str]:
        import hashlib

        source = tmp / "served.bin"
        source.write_bytes(payload)
        digest = sha256 or hashlib.sha256(payload).hexdigest()
        return [
            "data", "download", "baby", "--dest", str(tmp / "run"), "--quiet",
            "--url", source.as_uri(), "--sha256", digest, *flags,
        ]  # fmt: skip

    return Case(f"download-{name}", build, message)


GOOD_DATA = {"baby/baby.inter": (HEADER + GOOD).encode()}
BAD_DOWNLOADS = [
    _download_case("zip-bomb", _archive("zip", {"baby/x.bin": bytes(20 << 20)}), "refused above"),
    _download_case("zip-escape", _archive("zip", {"../evil.inter": b"x"}), "unsafe path"),
    _download_case("tar-escape", _archive("tar", {"../evil.inter": b"x"}), "cannot unpack"),
    _download_case("not-a-dataset", _archive("zip", {"baby/a.txt": b"hi"}), "not unpack to a"),
    _download_case("not-an-archive", b"plain bytes", "neither a zip nor a tar"),
    _download_case("sha-malformed", _archive("zip", GOOD_DATA), "64 hexadecimal", "xyz"),
    _download_case("sha-mismatch", _archive("zip", GOOD_DATA), "checksum mismatch", "0" * 64),
]


def _no_valid_split(tmp: Path) -> list[str]:
    folder = tmp / "data"
    folder.mkdir()
    (folder / "d.inter").write_text(HEADER + "".join(f"{u}\t{u}\t0\n" for u in range(4)))
    return ["train", "-m", "pop", "-d", str(folder), "--out", str(tmp / "run"), "--quiet"]


def _cases() -> list[Case]:
    cases = [_set_case(n, s, m) for n, (s, m) in BAD_SETS.items()]
    cases += [_set_case(n, s, m, f) for n, (s, m, f) in OPEN_SETS.items()]
    cases += [_inter_case(n, c, m) for n, (c, m) in BAD_INTERS.items()]
    cases.append(Case("inter-two-files", _two_inters, "exactly one"))
    cases += [_feature_case(n, w, m) for n, (w, m) in BAD_FEATURES.items()]
    cases += [_lattice_case(n, c, m) for n, (c, m) in BAD_LATTICE.items()]
    cases += [_mmssl_case(n, o, m) for n, (o, m) in BAD_MMSSL.items()]
    cases.append(_mmssl_case("empty-pickle", None, "cannot unpickle", raw=b""))
    cases.append(_mmssl_case("truncated-pickle", None, "cannot unpickle", raw=b"\x80\x04\x95"))
    cases += [_checkpoint_case(n, w, m) for n, (w, m) in BAD_CHECKPOINTS.items()]
    cases.append(Case("inter-no-valid-split", _no_valid_split, "the valid split is empty"))
    return cases + BAD_DOWNLOADS + BAD_ARGS


CASES = _cases()


def test_the_corpus_is_large():
    assert len(CASES) >= 100
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=c.open_finding))
        if c.open_finding
        else c
        for c in CASES
    ],
    ids=[c.name for c in CASES],
)
def test_hostile_input_is_one_clear_line(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = case.build(tmp_path)
    capsys.readouterr()  # what building printed (a training run) is not the case's output
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cadmr: error:"), err
    assert case.message in lines[0], lines[0]
    assert "Traceback" not in err and "ran code" not in out + err
    assert not list(tmp_path.glob("run*/results.json"))  # nothing that looks like a run
    assert not (tmp_path / "run" / "baby").exists()  # nor a half-downloaded dataset
