"""Quality bands on the real datasets in $CADMR_DATA_DIR, which conftest.py points at the
team's ../shared/data (slow; skipped when absent).

Run with ``make test-slow``. The bands come from the published MMRec Baby numbers and our
own validation-selected runs (docs/results.md).
"""

from __future__ import annotations

import pytest

from cadmr.data.readers import load_dataset
from cadmr.data.sources import data_directory
from cadmr.train import resolve_run_config, run

SHARED = data_directory()

pytestmark = pytest.mark.slow


def _data(name: str):
    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} is not present")
    return load_dataset(SHARED / name)


def test_baby_popularity_and_ease(tmp_path):
    baby = _data("baby")
    pop = run(resolve_run_config("pop", "baby"), baby, tmp_path / "pop", echo=False)
    assert 0.048 <= pop["test"]["recall@20"] <= 0.056  # MMRec-style popularity ~0.052
    ratio = pop["test"]["recall@10"] / pop["test"]["ndcg@10"]
    assert 1.6 <= ratio <= 2.0  # honest Amazon tables sit near 1.8
    cfg = resolve_run_config(
        "ease", "baby", extra={"train": {"progress": False}, "search": {"reg_weight": [250, 1000]}}
    )
    ease = run(cfg, baby, tmp_path / "ease", echo=False)
    assert ease["test"]["recall@20"] >= 0.080


@pytest.mark.parametrize("name", ["lfm2k", "ml100k"])
def test_feature_datasets_load_and_ease_beats_popularity(name, tmp_path):
    data = _data(name)
    assert data.features
    cfg = resolve_run_config("ease", name, extra={"train": {"progress": False}})
    ease = run(cfg, data, tmp_path, echo=False)
    assert ease["test"]["recall@20"] > 1.2 * ease["popularity"]["recall@20"]


def test_cadmr_on_ml100k_matches_its_measured_band(tmp_path):
    """docs/cadmr.md: CADMR at ml100k's selection (pos_weight 3, lambda_2 13) reaches test
    R@20 0.3422 +- 0.0014 over 3 seeds (0.3437 +- 0.0070 with raw rows), and its pretraining
    phase is the autoencoder alone."""
    data = _data("ml100k")
    extra = {
        "train": {"progress": False},
        "params": {"pos_weight": 3.0, "lambda_2": 13.0},
    }
    res = run(resolve_run_config("cadmr", "ml100k", extra=extra), data, tmp_path, echo=False)
    assert 0.330 <= res["test"]["recall@20"] <= 0.360
    assert [p["phase"] for p in res["phases"]] == ["pretrain", "finetune"]
    assert res["valid"]["recall@20"] >= res["phases"][0]["valid"]["recall@20"]


def test_autoencoder_defaults_on_sparse_scientific(tmp_path):
    """docs/cadmr.md: with its defaults the autoencoder reaches test R@20 0.2311 +- 0.0047
    on Amazon Scientific (3 seeds; EASE 0.2257, popularity 0.0962); with GLocal-K's
    settings it stayed near popularity (0.1133)."""
    data = _data("scientific")
    res = run(
        resolve_run_config("kernel_ae", "scientific", extra={"train": {"progress": False}}),
        data,
        tmp_path,
        echo=False,
    )
    assert res["test"]["recall@20"] >= 0.215
    assert res["test"]["recall@20"] > 2 * res["popularity"]["recall@20"]


def test_cadmr_defaults_on_sparse_scientific(tmp_path):
    """docs/cadmr.md: with its defaults CADMR reaches test R@20 0.2601 +- 0.0042 on Amazon
    Scientific (3 seeds; seed 0 0.2635), 0.2531 with a uniform attention start, 0.2596 with
    its output path one way, against its autoencoder's 0.2311 and 0.2317 with the attended
    rows at the autoencoder's input only: below 0.245 the output path has lost its gain.
    Seed 0's validation R@20 is 0.2825 with the content prior, 0.2749 without it."""
    data = _data("scientific")
    cfg = resolve_run_config("cadmr", "scientific", extra={"train": {"progress": False}})
    res = run(cfg, data, tmp_path, echo=False)
    assert res["test"]["recall@20"] >= 0.245
    assert res["valid"]["recall@20"] > res["phases"][0]["valid"]["recall@20"] + 0.01
    assert res["valid"]["recall@20"] >= 0.278  # the content prior's share
