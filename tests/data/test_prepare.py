"""Raw data -> MMRec folder: k-core fixpoint, re-indexing, split, features, CLI.

The fixture ``fixtures/reviews.json`` (74 review lines, written by hand) is built so that
the 5-core needs three removing passes:

* pass 1: item BXXXXXXXX1 has 4 reviewers (G, H, J, K) -> dropped; H, J, K have 3 reviews
  each -> dropped;
* pass 2: user G is left with 4 items (B..01-03, BYYYYYYYY1) -> dropped;
* pass 3: item BYYYYYYYY1 is left with 4 reviewers (A-D) -> dropped;
* pass 4 removes nothing.

What remains: users AUSERA-AUSERE with the 10 items B000000001-B000000010 each, and AUSERF
with B000000001-05: 6 users, 10 items, 55 interactions. One line repeats (AUSERA,
B000000001) and is dropped as a duplicate, so the input has 73 distinct pairs of 10 users
and 12 items. Split (docs/protocol.md): n = 10 -> 8/1/1 for A-E, n = 5 -> 3/1/1 for F, so
43 train, 6 valid, 6 test.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cadmr.cli import main
from cadmr.data.dataset import DataError
from cadmr.data.features import (
    MissingExtraError,
    ResNet,
    encode_images,
    encode_texts,
    load_text_model,
    read_precomputed,
)
from cadmr.data.prepare import k_core, prepare_dataset
from cadmr.data.raw import item_text, iter_records, read_interactions, read_item_texts
from cadmr.data.readers import load_dataset

FIXTURES = Path(__file__).parent / "fixtures"
REVIEWS = FIXTURES / "reviews.json"
META = FIXTURES / "meta.json"
USERS = ["AUSERA", "AUSERB", "AUSERC", "AUSERD", "AUSERE", "AUSERF"]
ITEMS = [f"B00000000{i}" for i in range(1, 10)] + ["B000000010"]


class HashText:
    """A stand-in sentence-transformers model: deterministic unit vectors from text hashes."""

    max_seq_length = 256

    def get_sentence_embedding_dimension(self) -> int:
        return 8

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        out = np.array(
            [np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], np.uint8) for t in texts],
            dtype=np.float32,
        )
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def gz_reviews(tmp_path: Path) -> Path:
    path = tmp_path / "reviews_Baby.json.gz"
    with REVIEWS.open("rb") as src, gzip.open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture
def tiny_cnn(tmp_path: Path) -> Path:
    """A randomly initialised tiny ResNet (BasicBlock, one block per stage, width 4)."""
    torch.manual_seed(0)
    path = tmp_path / "tiny_resnet.pth"
    torch.save(ResNet(False, (1, 1, 1, 1), width=4, num_classes=5).state_dict(), path)
    return path


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """PNGs for items 1-7, an undecodable file for item 8, nothing for items 9 and 10."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n, item in enumerate(ITEMS[:7]):
        size = (40 + 7 * n, 30 + 5 * n)  # varied sizes and aspect ratios
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{item}.png")
    (folder / f"{ITEMS[7]}.jpg").write_bytes(b"not an image")
    return folder


# --------------------------------------------------------------------------- k-core


def test_k_core_fixpoint_needs_several_passes() -> None:
    # 3-core. Pass 1 drops item 3 (2 users); user 2 then has 2 items -> pass 2; item 2 then
    # has 2 users -> pass 3; then users 0, 1, 3 with items 0, 1, 4 form a complete 3-core.
    pairs = [(0, 0), (0, 1), (0, 2), (0, 4), (1, 0), (1, 1), (1, 4), (3, 0), (3, 1), (3, 4)]
    pairs += [(1, 2), (2, 0), (2, 2), (2, 3), (4, 3)]
    u, i = np.array(pairs).T
    res = k_core(u, i, k=3)
    assert res.passes == 3
    kept = {p for p, keep in zip(pairs, res.keep, strict=True) if keep}
    assert kept == {(a, b) for a in (0, 1, 3) for b in (0, 1, 4)}


def test_k_core_edge_cases() -> None:
    u = np.array([0, 0, 1, 1])
    i = np.array([0, 1, 0, 1])
    assert k_core(u, i, 2).passes == 0 and k_core(u, i, 2).keep.all()
    assert not k_core(u, i, 3).keep.any()
    assert k_core(u, i, 1).keep.all()
    with pytest.raises(ValueError, match="at least 1"):
        k_core(u, i, 0)


# --------------------------------------------------------------------------- raw readers


def test_reviews_gz_and_plain_read_alike(gz_reviews: Path) -> None:
    plain = read_interactions(REVIEWS, progress=False)
    gz = read_interactions(gz_reviews, progress=False)
    assert plain.info["format"] == "amazon"
    assert plain.info["records"] == 74
    assert plain.info["duplicates_dropped"] == 1
    assert len(plain) == 73 and len(plain.user_ids) == 10 and len(plain.item_ids) == 12
    assert np.array_equal(plain.users, gz.users) and np.array_equal(plain.items, gz.items)
    assert plain.ratings is not None and plain.timestamps is not None
    first = plain.user_ids[plain.users[0]], plain.item_ids[plain.items[0]]
    assert first == ("AUSERA", "B000000001")
    assert plain.ratings[0] == 1.0  # the first occurrence is kept, not the duplicate's 5.0


def test_metadata_2014_literal_and_2018_json() -> None:
    recs = list(iter_records(META))
    assert len(recs) == 10  # both line styles parse
    texts = read_item_texts(META, wanted=ITEMS, progress=False)
    assert sorted(texts) == ITEMS[:9]  # item 10 has no metadata; BXXXXXXXX1 not wanted
    # 2014: first category path only, newline flattened
    assert texts[ITEMS[0]] == (
        "Baby thing 1 Acme Baby Nursery Kind 1 A soft item's description number 1."
    )
    # 2018: category list and description list
    assert texts[ITEMS[1]] == "Baby thing 2 Acme Baby Feeding Kind 2 Description of item 2."


def test_item_text_skips_missing_fields() -> None:
    assert item_text({"asin": "x", "title": "T"}) == "T"
    assert item_text({"description": "a\n\nb", "brand": None}) == "a b"


def test_bad_metadata_line_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "meta.json"
    bad.write_text('{"asin": "a"}\n{not a record\n')
    with pytest.raises(DataError, match=r"meta\.json:2"):
        list(iter_records(bad))


def test_csv_log_with_and_without_header(tmp_path: Path) -> None:
    with_header = tmp_path / "log.csv"
    with_header.write_text("user_id,item_id,rating,timestamp\nu1,i1,4,100\nu1,i2,5,101\n")
    no_header = tmp_path / "ratings_Baby.csv"
    no_header.write_text("u1,i1,4,100\nu1,i2,5,101\nu1,i1,3,102\n")
    a = read_interactions(with_header, progress=False)
    b = read_interactions(no_header, progress=False)
    assert a.info["format"] == b.info["format"] == "csv"
    assert len(a) == len(b) == 2 and b.info["duplicates_dropped"] == 1
    assert a.user_ids == ["u1"] and a.item_ids == ["i1", "i2"]
    two_cols = tmp_path / "pairs.tsv"
    two_cols.write_text("u1\ti1\nu2\ti1\n")
    c = read_interactions(two_cols, progress=False)
    assert c.ratings is None and c.timestamps is None and len(c) == 2


def test_item_table_metadata(tmp_path: Path) -> None:
    table = tmp_path / "items.tsv"
    table.write_text("itemID\tartistID\ttext\n0\t80\trock, pop\n1\t3\tjazz\n")
    assert read_item_texts(table, progress=False) == {"0": "rock, pop", "1": "jazz"}


# --------------------------------------------------------------------------- end to end


def test_prepare_end_to_end(
    tmp_path: Path, gz_reviews: Path, image_dir: Path, tiny_cnn: Path
) -> None:
    out = tmp_path / "baby_mini"
    result, ds = prepare_dataset(
        gz_reviews,
        out,
        metadata=META,
        images=image_dir,
        text_model=HashText(),
        image_model=tiny_cnn,
        seed=3,
        progress=False,
    )
    assert result.raw == {"interactions": 73, "users": 10, "items": 12, "duplicates_dropped": 1}
    assert result.k_core_passes == 3
    assert (result.users, result.items) == (6, 10)
    assert result.interactions == {"train": 43, "valid": 6, "test": 6}

    # files, mappings (tab separated, sorted raw ids), .inter columns
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "baby_mini.inter",
        "i_id_mapping.csv",
        "image_feat.npy",
        "prepare.json",
        "text_feat.npy",
        "u_id_mapping.csv",
    ]
    umap = pd.read_csv(out / "u_id_mapping.csv", sep="\t")
    imap = pd.read_csv(out / "i_id_mapping.csv", sep="\t", dtype={"asin": str})
    assert list(umap.columns) == ["user_id", "userID"] and umap.user_id.tolist() == USERS
    assert list(imap.columns) == ["asin", "itemID"] and imap.asin.tolist() == ITEMS
    inter = pd.read_csv(out / "baby_mini.inter", sep="\t")
    assert list(inter.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    assert len(inter) == 55
    counts = inter.groupby("userID").x_label.value_counts().unstack(fill_value=0)
    for u in range(5):
        assert counts.loc[u].tolist() == [8, 1, 1]
    assert counts.loc[5].tolist() == [3, 1, 1]
    assert sorted(inter[inter.userID == 5].itemID) == [0, 1, 2, 3, 4]

    # loads with the project's reader
    again = load_dataset(out)
    assert again.fingerprint() == ds.fingerprint()
    assert (ds.n_users, ds.n_items) == (6, 10)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (43, 6, 6)
    assert ds.modalities == {"text": 8, "image": 32}  # tiny ResNet: width 4 * 8

    # text: item 10 has no metadata -> the mean of the 9 others
    assert result.features["text"] == {"dim": 8, "mean_filled": 1}
    text = ds.features["text"]
    np.testing.assert_allclose(np.linalg.norm(text[:9], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(text[9], text[:9].mean(axis=0), rtol=1e-5)
    first_meta = ast.literal_eval(META.read_text().splitlines()[0])
    assert np.allclose(text[0], HashText().encode([item_text(first_meta)])[0])

    # images: items 8 (unreadable), 9 and 10 (none) get the mean of items 1-7
    assert result.features["image"] == {"dim": 32, "mean_filled": 3, "unreadable": 1}
    img = ds.features["image"]
    for row in (7, 8, 9):
        np.testing.assert_allclose(img[row], img[:7].mean(axis=0), rtol=1e-5)
    assert len({tuple(np.round(r, 5)) for r in img[:7]}) == 7  # distinct images, distinct rows


def test_prepare_is_seeded(tmp_path: Path) -> None:
    def labels(seed: int, folder: str) -> np.ndarray:
        prepare_dataset(REVIEWS, tmp_path / folder, seed=seed, text_model=None, progress=False)
        return pd.read_csv(tmp_path / folder / f"{folder}.inter", sep="\t").x_label.to_numpy()

    a, b, c = labels(0, "a"), labels(0, "b"), labels(1, "c")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_prepare_refuses_bad_requests(tmp_path: Path, image_dir: Path) -> None:
    with pytest.raises(DataError, match="no interaction survives the 20-core"):
        prepare_dataset(REVIEWS, tmp_path / "x", k=20, text_model=None, progress=False)
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".x.tmp-*"))  # nothing half-written
    with pytest.raises(DataError, match="no image model"):
        prepare_dataset(REVIEWS, tmp_path / "y", images=image_dir, progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        prepare_dataset(REVIEWS, tmp_path / "full", text_model=None, progress=False)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(MissingExtraError, match=r"cadmr\[features\]"):
        prepare_dataset(REVIEWS, tmp_path / "t", metadata=META, progress=False)
    assert not list(tmp_path.iterdir())
    with pytest.raises(MissingExtraError, match=r"cadmr\[features\]"):
        load_text_model()
    with pytest.raises(MissingExtraError, match=r"cadmr\[features\]"):
        encode_texts(["a model name is loaded, not called"], "all-MiniLM-L6-v2")


def test_image_encoder_torchvision_layouts() -> None:
    # the parameter counts of torchvision's resnet50 and resnet18 (same names, same shapes)
    r50 = ResNet(True, (3, 4, 6, 3))
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032
    assert sum(p.numel() for p in ResNet(False, (2, 2, 2, 2)).parameters()) == 11_689_512
    tiny = ResNet(True, (1, 2, 1, 1), width=2, num_classes=3)
    back = ResNet.from_state_dict(tiny.state_dict())
    assert back.dim == 64 and [len(back.layer2)] == [2]


def test_bad_image_model_file(tmp_path: Path, image_dir: Path) -> None:
    (tmp_path / "x.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a torch state dict"):
        prepare_dataset(REVIEWS, tmp_path / "o", images=image_dir, image_model=tmp_path / "x.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "y.pth")
    with pytest.raises(DataError, match="not a torchvision ResNet"):
        prepare_dataset(REVIEWS, tmp_path / "o", images=image_dir, image_model=tmp_path / "y.pth")


def test_encode_images_with_a_callable(image_dir: Path) -> None:
    paths = [image_dir / f"{ITEMS[0]}.png", None, image_dir / f"{ITEMS[1]}.png"]
    feats, filled, unreadable = encode_images(
        paths, lambda x: x.mean(dim=(2, 3)), batch_size=2, progress=False
    )
    assert feats.shape == (3, 3) and (filled, unreadable) == (1, 0)
    np.testing.assert_allclose(feats[1], feats[[0, 2]].mean(axis=0), rtol=1e-6)


# --------------------------------------------------------------------------- precomputed


def _mcauley(path: Path, rows: dict[str, np.ndarray]) -> None:
    with path.open("wb") as f:
        for asin, vec in rows.items():
            f.write(asin.encode("ascii"))
            f.write(np.asarray(vec, dtype="<f4").tobytes())


def test_precomputed_formats_align_and_mean_fill(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = {i: rng.standard_normal(4096).astype(np.float32) for i in ITEMS[:8]}
    vecs["BXXXXXXXX1"] = np.zeros(4096, np.float32)  # not wanted: skipped
    _mcauley(tmp_path / "image_features_Baby.b", vecs)
    feats, filled = read_precomputed(tmp_path / "image_features_Baby.b", ITEMS, progress=False)
    assert feats.shape == (10, 4096) and filled == 2
    np.testing.assert_array_equal(feats[3], vecs[ITEMS[3]])
    np.testing.assert_allclose(feats[9], np.mean([vecs[i] for i in ITEMS[:8]], axis=0), 1e-5)

    small = {i: np.arange(3, dtype=np.float32) + k for k, i in enumerate(ITEMS[2:])}
    np.save(tmp_path / "f.npy", np.stack(list(small.values())))
    (tmp_path / "f.ids.txt").write_text("\n".join(small) + "\n")
    np.savez(tmp_path / "f.npz", ids=np.array(list(small)), features=np.stack(list(small.values())))
    (tmp_path / "f.csv").write_text(
        "item,a,b,c\n" + "".join(f"{i},{v[0]},{v[1]},{v[2]}\n" for i, v in small.items())
    )
    for name in ("f.npy", "f.npz", "f.csv"):
        feats, filled = read_precomputed(tmp_path / name, ITEMS, progress=False)
        assert feats.shape == (10, 3) and filled == 2
        np.testing.assert_array_equal(feats[2], [0, 1, 2])
        np.testing.assert_allclose(feats[0], [3.5, 4.5, 5.5])  # mean of rows 2..9

    (tmp_path / "bad.b").write_bytes(b"B000000001" + b"\0" * 12)
    with pytest.raises(DataError, match="not a multiple"):
        read_precomputed(tmp_path / "bad.b", ITEMS)
    with pytest.raises(DataError, match="none of the dataset's items"):
        read_precomputed(tmp_path / "f.csv", ["nope"], progress=False)


# --------------------------------------------------------------------------- CLI


def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feats = tmp_path / "audio.csv"
    feats.write_text("".join(f"{i},{k},1\n" for k, i in enumerate(ITEMS[:6])))
    out = tmp_path / "mini"
    code = main(
        ["data", "prepare", str(REVIEWS), "--out", str(out), "--meta", str(META),
         "--text-model", "none", "--features", f"audio={feats}", "--quiet"]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "5-core after 3 pass(es): 6 users, 10 items" in text
    assert "43 train, 6 valid, 6 test" in text
    assert "audio_feat.npy: 2-d, 4 item(s) mean-filled" in text
    assert load_dataset(out).modalities == {"audio": 2}

    assert main(["data", "prepare", str(REVIEWS), "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "prepare", str(tmp_path / "none.json"), "--out", str(tmp_path / "z")]) == 2
    assert "no such file" in capsys.readouterr().err
