"""`cadmr recommend`: raw ids in and out, titles, and the batch export (issue 20)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cadmr.cli import main
from cadmr.data.ids import IdMaps
from cadmr.data.readers import load_dataset
from cadmr.train.checkpoint import load_model

N_USERS, N_ITEMS = 6, 9


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """An MMRec folder with raw-id mappings and item texts, and a BPR checkpoint on it."""
    root = tmp_path_factory.mktemp("export")
    data = root / "shop"
    data.mkdir()
    rng = np.random.default_rng(0)
    lines = ["userID\titemID\tx_label"]
    for u in range(N_USERS):
        items = rng.choice(N_ITEMS, size=6, replace=False)
        lines += [f"{u}\t{i}\t{s}" for i, s in zip(items, (0, 0, 0, 0, 1, 2), strict=True)]
    (data / "shop.inter").write_text("\n".join(lines) + "\n")
    (data / "u_id_mapping.csv").write_text(
        "user_id\tuserID\n" + "".join(f"U{u:03d}x\t{u}\n" for u in range(N_USERS))
    )
    (data / "i_id_mapping.csv").write_text(
        "asin\titemID\n" + "".join(f"B{i:04d}\t{i}\n" for i in range(N_ITEMS))
    )
    (data / "item_text.tsv").write_text(
        "item\ttext\n" + "".join(f"B{i:04d}\tThing {i}. More words.\n" for i in range(N_ITEMS))
    )
    out = root / "run"
    args = ["train", "-m", "bpr", "-d", str(data), "--out", str(out), "--quiet"]
    assert main([*args, "--set", "train.epochs=3"]) == 0
    return data, out / "best.pt"


def _read(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_export_round_trips_with_raw_ids(trained, tmp_path, suffix, capsys):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    data, ckpt = trained
    out = tmp_path / f"recs{suffix}"
    assert main(["recommend", str(ckpt), "--all-users", "-k", "3", "-o", str(out), "--quiet"]) == 0
    assert f"{N_USERS * 3} recommendations for {N_USERS} users" in capsys.readouterr().out
    rows = _read(out)
    dataset = load_dataset(data)
    model, _ = load_model(ckpt, dataset)
    ids = IdMaps.for_dataset(dataset)
    items, scores = model.recommend(np.arange(N_USERS), 3)
    for u in range(N_USERS):
        mine = [r for r in rows if r["user"] == f"U{u:03d}x"]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3]
        assert [r["item"] for r in mine] == [f"B{i:04d}" for i in items[u]]
        assert [r["title"] for r in mine] == [f"Thing {i}" for i in items[u]]
        assert np.allclose([float(r["score"]) for r in mine], scores[u])
        seen = {ids.item_raw(i) for i in dataset.train[u].indices}
        assert not seen & {r["item"] for r in mine}  # training items excluded


def test_print_mode_takes_raw_and_dense_ids_and_a_users_file(trained, tmp_path, capsys):
    _, ckpt = trained
    assert main(["recommend", str(ckpt), "--user", "U002x", "--user", "4", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["user U002x", "user U004x"]
    assert "'Thing " in lines[0]
    users = tmp_path / "users.txt"
    users.write_text("# wanted\nU001x\n\n5\n")
    assert main(["recommend", str(ckpt), "--users-file", str(users), "-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["user U001x", "user U005x"]


def test_exclude_valid_and_a_k_beyond_the_catalogue(trained, tmp_path):
    data, ckpt = trained
    dataset = load_dataset(data)
    ids = IdMaps.for_dataset(dataset)
    out = tmp_path / "all.csv"
    args = ["recommend", str(ckpt), "--all-users", "-k", "5000", "-o", str(out), "--quiet"]
    assert main([*args, "--exclude-valid"]) == 0
    rows = _read(out)
    for u in range(N_USERS):
        mine = {r["item"] for r in rows if r["user"] == ids.user_raw(u)}
        held = {ids.item_raw(i) for i in dataset.train[u].indices}
        held |= {ids.item_raw(i) for i in dataset.valid[u].indices}
        assert mine == {ids.item_raw(i) for i in range(N_ITEMS)} - held  # no -1 padding
        assert "-1" not in mine


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--user", "1", "-k", "0"], "-k must be at least 1, got 0"),
        (["--user", "nobody"], "user 'nobody' is not a raw id"),
        (["--user", "99"], "user '99' is not a raw id"),
        (["--all-users", "-o", "recs.xlsx"], "the output must end in .csv, .jsonl, .parquet"),
        (["--users-file", "none.txt"], "no users file at none.txt"),
    ],
)
def test_bad_requests_are_one_line(trained, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    _, ckpt = trained
    assert main(["recommend", str(ckpt), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list(tmp_path.glob("recs*"))
