"""cadmr experiment cold-items: capable models on a cold-item split, two tables and a PNG."""

from __future__ import annotations

import json

from cadmr.cli import main


def test_cold_items_experiment_writes_both_tables_and_a_plot(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["experiment", "cold-items", "-d", "synthetic-tiny", "--fraction", "0.3"]
    args += ["--seeds", "2", "--grid", "none", "-m", "content_knn", "vbpr", "--quiet"]
    args += ["--out", str(out), "--cache", str(tmp_path / "cache"), "--set", "train.epochs=3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "synthetic-tiny@cold=0.3 (cold-items)" in text
    assert "Cold items ranked alone" in text and "the cold ones among the warm" in text
    assert "| content_knn | 0,1 |" in text and "| vbpr | 0,1 |" in text
    assert "popularity" not in text  # it cannot order items it has never seen
    tables = json.loads((out / "cold-items.json").read_text())
    assert [r["model"] for r in tables["cold"]] == ["content_knn", "vbpr"]
    # ranked among the warm items too, a cold item is harder to find
    assert tables["mixed"][0]["recall@20"] <= tables["cold"][0]["recall@20"]
    assert (out / "cold-items.png").stat().st_size > 0
    assert (out / "cold-items.md").read_text().startswith("synthetic-tiny@cold=0.3")


def test_a_model_that_cannot_rank_new_items_is_refused(tmp_path, capsys):
    args = ["experiment", "cold-items", "-d", "synthetic-tiny", "-m", "lightgcn"]
    args += ["--seeds", "1", "--grid", "none", "--quiet", "--cache", str(tmp_path / "c")]
    assert main(args) == 2
    assert "lightgcn cannot rank items without interactions" in capsys.readouterr().err
