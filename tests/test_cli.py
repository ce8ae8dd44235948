"""The command-line interface end to end on the tiny synthetic preset."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cadmr.cli import main


def _train(tmp_path, *extra):
    out = tmp_path / "run"
    args = ["train", "-m", "bpr", "-d", "synthetic-tiny", "--out", str(out), "--quiet"]
    args += ["--set", "train.epochs=3", *extra]
    assert main(args) == 0
    return out


def test_train_evaluate_recommend(tmp_path, capsys):
    out = _train(tmp_path, "--seed", "3")
    results = json.loads((out / "results.json").read_text())
    assert results["seed"] == 3 and results["config"]["train"]["epochs"] == 3
    printed = capsys.readouterr().out
    assert "| bpr | synthetic-tiny | 3 |" in printed and "pop (reference)" in printed

    assert main(["evaluate", str(out / "best.pt"), "--split", "test"]) == 0
    shown = capsys.readouterr().out
    assert f"recall@20={results['test']['recall@20']:.4f}" in shown

    assert main(["recommend", str(out / "best.pt"), "--user", "0", "--user", "5", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["user 0", "user 5"]
    assert lines[0].count("(") == 3


def test_recommend_unknown_user_is_an_error(tmp_path, capsys):
    out = _train(tmp_path)
    capsys.readouterr()
    assert main(["recommend", str(out / "best.pt"), "--user", "10000"]) == 2
    assert "user '10000' is not a dense id in 0..59" in capsys.readouterr().err


def test_config_file_and_set_precedence(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("train:\n  epochs: 7\n  batch_size: 64\nparams:\n  embedding_size: 8\n")
    out = _train(tmp_path, "--config", str(cfg))  # --set train.epochs=3 wins over the file
    resolved = json.loads((out / "results.json").read_text())["config"]
    assert resolved["train"]["epochs"] == 3
    assert resolved["train"]["batch_size"] == 64
    assert resolved["params"]["embedding_size"] == 8
    assert (out / "config.yaml").read_text().count("embedding_size: 8") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "-m", "nope", "-d", "synthetic-tiny"], "registered models: "),  # then every name
        (["train", "-m", "bpr", "-d", "synthetic-tiny", "--set", "train.epoch=3"], "train.epoch"),
        (["train", "-m", "bpr", "-d", "no-such-data"], "neither a folder nor a synthetic"),
        (["data", "describe", "synthetic-huge"], "unknown synthetic preset"),
        (["evaluate", "missing.pt"], "no checkpoint at missing.pt"),
    ],
)
def test_errors_are_one_clear_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cadmr: error:") and message in err
    assert "Traceback" not in err
    if "registered models" in message:
        from cadmr.models import MODELS

        assert err.rstrip().endswith(", ".join(sorted(MODELS)))


def test_a_bug_keeps_its_traceback_and_debug_shows_every_one(monkeypatch, capsys):
    """Only a CadmrError (or an OSError) is a one-line user error: anything else is a bug,
    whose traceback must not be flattened into a message that blames the user."""
    import cadmr.catalog

    def broken() -> dict[str, str]:
        return {}["no such key"]

    monkeypatch.setattr(cadmr.catalog, "summaries", broken)
    with pytest.raises(KeyError, match="no such key"):
        main(["models"])
    from cadmr.errors import CadmrError

    with pytest.raises(CadmrError, match="registered models"):
        main(["--debug", "train", "-m", "nope", "-d", "synthetic-tiny"])
    assert capsys.readouterr().err == ""


def test_data_describe(capsys):
    assert main(["data", "describe", "synthetic-tiny"]) == 0
    text = capsys.readouterr().out
    for word in ("users", "items", "train", "valid", "test", "sparsity", "text (64-d)"):
        assert word in text
    assert main(["data", "describe", "synthetic-tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["users"] == 60 and info["modalities"] == {"text": 64, "image": 128}


def test_demo_prints_a_table(tmp_path, capsys):
    args = ["demo", "--dataset", "synthetic-tiny", "--models", "pop", "ease"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| pop | synthetic-tiny |" in out and "| ease | synthetic-tiny |" in out


def test_console_script_entry_point():
    res = subprocess.run(
        [sys.executable, "-m", "cadmr.cli", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and res.stdout.startswith("cadmr ")


def test_explain_item_and_user(tmp_path, capsys):
    out = tmp_path / "cadmr"
    args = ["train", "-m", "cadmr", "-d", "synthetic-tiny", "--out", str(out), "--quiet"]
    args += ["--set", "train.epochs=2", "--set", "params.hidden=[16,8]"]
    assert main(args) == 0
    assert "pretrain best at" in capsys.readouterr().out  # one sentence per phase
    assert main(["explain", str(out / "best.pt"), "--item", "3", "--top", "4"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("item 3 (synthetic-tiny, 4 heads)")
    assert shown.count("  item ") == 4 and "modalities" in shown
    assert main(["explain", str(out / "best.pt"), "--user", "2", "-k", "3"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("user 2") and shown.splitlines()[1].count("(") == 3
    # a model without attention, and a bad item, are one-line errors
    bpr = _train(tmp_path)
    capsys.readouterr()
    assert main(["explain", str(bpr / "best.pt"), "--item", "0"]) == 2
    assert "no attention to explain" in capsys.readouterr().err
    assert main(["explain", str(out / "best.pt"), "--item", "99999"]) == 2
    assert "item '99999' is not a dense id in" in capsys.readouterr().err


def test_training_errors_are_one_clear_line(tmp_path, capsys):
    out = _train(tmp_path)
    capsys.readouterr()
    again = ["train", "-m", "bpr", "-d", "synthetic-tiny", "--out", str(out), "--quiet"]
    assert main(again) == 2
    err = capsys.readouterr().err
    assert err.startswith("cadmr: error: ") and "already holds finished results" in err
    assert "Traceback" not in err


def test_tune_searches_the_grid_and_writes_the_best_configuration(tmp_path, capsys):
    out = tmp_path / "tune"
    args = ["tune", "-m", "ease", "-d", "synthetic-tiny", "--out", str(out), "--quiet"]
    assert main([*args, "--set", "search.reg_weight=[1.0,1000.0]"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    valid = {t["params"]["reg_weight"]: t["valid_recall@20"] for t in results["search"]}
    chosen = max(valid, key=valid.get)
    assert results["params"]["reg_weight"] == chosen
    assert printed.count("| 1.0 |") == 1 and printed.count("| 1000.0 |") == 1
    assert "best configuration:" in printed
    # the written configuration reproduces the selected point with `train`
    again = tmp_path / "again"
    best = str(out / "best.yaml")
    assert main(["train", "-m", "ease", "-d", "synthetic-tiny", "--config", best,
                 "--out", str(again), "--quiet"]) == 0  # fmt: skip
    retrained = json.loads((again / "results.json").read_text())
    assert retrained["valid"]["recall@20"] == valid[chosen]
    assert "search" not in retrained  # train runs one configuration


def test_train_runs_one_configuration_and_points_to_tune(tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["train", "-m", "ease", "-d", "synthetic-tiny", "--out", str(out), "--quiet"]) == 0
    assert not (out / "trials").exists()
    assert "`cadmr tune` searches its published grid" in capsys.readouterr().out


def test_tune_without_a_grid_is_a_clear_error(tmp_path, capsys):
    args = ["tune", "-m", "pop", "-d", "synthetic-tiny", "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "pop has no default grid" in capsys.readouterr().err


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import cadmr.train.trainer as trainer

    def full(path, text):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(trainer, "atomic_write_text", full)
    args = ["train", "-m", "pop", "-d", "synthetic-tiny", "--out", str(tmp_path / "r"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("config.yaml: No space left on device")
