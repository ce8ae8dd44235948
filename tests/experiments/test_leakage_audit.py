"""The leakage audit: the planted leak reaches the model only there, and the control falls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cadmr.cli import main
from cadmr.data import LeakageError, LeakageGuard
from cadmr.data.synthetic import make_synthetic
from cadmr.experiments.leakage import leakage_audit, leaked_matrix, shuffled_test


@pytest.fixture(scope="module")
def small():
    return make_synthetic("small", seed=0)


def test_the_leak_is_train_valid_and_test_and_the_guard_catches_it_elsewhere(small):
    leak = leaked_matrix(small)
    assert leak.nnz == small.train.nnz + small.valid.nnz + small.test.nnz
    with pytest.raises(LeakageError):
        LeakageGuard(small).check(leak, "a normal run")


def test_shuffled_test_moves_labels_to_other_users(small):
    control = shuffled_test(small, seed=0)
    assert (control.train != small.train).nnz == 0 and (control.valid != small.valid).nnz == 0
    seen = small.train + small.valid
    assert control.test.multiply(seen).nnz == 0  # never an item the user already has
    assert control.test.nnz > 0.9 * small.test.nnz
    same_rows = sum(
        np.array_equal(control.test[u].indices, small.test[u].indices)
        for u in range(small.n_users)
        if small.test[u].nnz
    )
    assert same_rows < 0.05 * small.n_users


def test_audit_rows_leak_inflates_and_control_falls_to_popularity(small, tmp_path):
    rows = leakage_audit(small, "synthetic-small", ["ease"], [0], root=tmp_path, progress=False)
    by = {(r["model"], r["condition"]): r["test"]["ndcg@10"] for r in rows}
    honest = by["ease", "honest"]
    assert by["ease", "LEAKED (diagnostic)"] > honest
    # the honest model on shuffled labels is no better than popularity on them
    assert (
        by["ease", "shuffled test labels (control)"]
        <= by["popularity", "shuffled test labels (control)"]
    )
    assert list((tmp_path / "synthetic-small" / "LEAKED").iterdir())  # written apart


def test_cli_leakage_audit_is_labelled_a_diagnostic(tmp_path, capsys):
    out = tmp_path / "audit"
    args = ["experiment", "leakage-audit", "-d", "synthetic-tiny", "-m", "ease", "bpr"]
    args += ["--seeds", "1", "--no-tune", "--set", "train.epochs=3", "--quiet"]
    assert main([*args, "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "DIAGNOSTIC" in printed and "LEAKED (diagnostic)" in printed
    rows = json.loads((out / "leakage-audit.json").read_text())
    conditions = {(r["model"], r["condition"]) for r in rows}
    assert ("bpr", "LEAKED (diagnostic)") in conditions
    assert ("bpr", "shuffled test labels (control)") in conditions
