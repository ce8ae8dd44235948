"""scripts/add_metrics.py: new metrics for old runs, only from the model the old ones came from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cadmr.cli import main

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "add_metrics.py"


@pytest.fixture(scope="module")
def add_metrics():
    spec = importlib.util.spec_from_file_location("add_metrics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _old_run(tmp_path, *extra):
    """A finished run whose results lose MRR and coverage, as results written before them."""
    out = tmp_path / "run"
    args = ["train", "-m", "bpr", "-d", "synthetic-tiny", "--out", str(out), "--quiet"]
    assert main([*args, "--set", "train.epochs=3", *extra]) == 0
    path = out / "results.json"
    full = json.loads(path.read_text())
    old = json.loads(path.read_text())
    for part in ("valid", "test", "popularity"):
        old[part] = {k: v for k, v in old[part].items() if not k.startswith(("mrr", "coverage"))}
    path.write_text(json.dumps(old))
    return out, full


def test_missing_metrics_are_added_as_trained(add_metrics, tmp_path):
    out, full = _old_run(tmp_path)
    assert add_metrics.main([str(out)]) == 0
    again = json.loads((out / "results.json").read_text())
    for part in ("valid", "test", "popularity"):
        assert again[part] == pytest.approx(full[part], abs=1e-9), part
    assert add_metrics.main([str(out)]) == 0  # nothing left to add: unchanged
    assert json.loads((out / "results.json").read_text()) == again


def test_a_grid_run_uses_the_selected_trial(add_metrics, tmp_path):
    out, full = _old_run(tmp_path, "--set", "search.reg_weight=[0.1,0.00001]")
    assert not (out / "best.pt").exists()
    assert add_metrics.main([str(out)]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["test"]["mrr@10"] == pytest.approx(full["test"]["mrr@10"], abs=1e-9)


def test_a_run_whose_numbers_do_not_reproduce_is_left_alone(add_metrics, tmp_path, capsys):
    out, _ = _old_run(tmp_path)
    path = out / "results.json"
    tampered = json.loads(path.read_text())
    tampered["test"]["recall@20"] += 0.01
    path.write_text(json.dumps(tampered))
    assert add_metrics.main([str(out)]) == 1
    assert json.loads(path.read_text()) == tampered
    assert "recall@20" in capsys.readouterr().err
