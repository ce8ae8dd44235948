"""The Python API (issue 20): fit / recommend / save / load, against the CLI path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cadmr
from cadmr.cli import main
from cadmr.data.synthetic import make_synthetic
from cadmr.train.checkpoint import load_model


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic("tiny", seed=0)


def test_fit_matches_cadmr_train_and_reports_each_epoch(tiny, tmp_path):
    epochs = []
    model = cadmr.fit(
        "bpr", tiny, seed=3, train={"epochs": 4}, embedding_size=16, callback=epochs.append
    )
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]
    assert all("loss" in e and "recall@20" in e["valid"] for e in epochs)
    out = tmp_path / "cli"
    args = ["train", "-m", "bpr", "-d", "synthetic-tiny", "--seed", "3", "--out", str(out)]
    sets = ["--set", "train.epochs=4", "--set", "params.embedding_size=16", "--quiet"]
    assert main([*args, *sets]) == 0
    cli_model, _ = load_model(out / "best.pt", tiny)
    users = np.arange(tiny.n_users)
    assert torch.equal(model.score(users), cli_model.score(users))
    assert model.results["test"] == json.loads((out / "results.json").read_text())["test"]


def test_save_and_load_give_the_same_recommendations(tiny, tmp_path):
    model = cadmr.fit("ease", tiny)
    path = cadmr.save(model, tmp_path / "ease.pt")
    again = cadmr.load(path)  # the dataset from the checkpoint: synthetic-tiny
    a, b = model.recommend([0, 5, 9], k=5), again.recommend([0, 5, 9], k=5)
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
    assert main(["recommend", str(path), "--user", "0", "-k", "5"]) == 0  # the CLI reads it


def test_fit_keeps_the_run_folder_when_asked(tiny, tmp_path):
    cadmr.fit("pop", tiny, out_dir=tmp_path / "run")
    assert (tmp_path / "run" / "results.json").is_file()


def test_a_model_not_from_fit_cannot_be_saved(tiny, tmp_path):
    from cadmr.train.resolve import resolve_run_config
    from cadmr.train.trainer import build_model

    config = resolve_run_config("pop", "synthetic-tiny")
    with pytest.raises(ValueError, match=r"only a model from cadmr\.fit or cadmr\.load"):
        cadmr.save(build_model(config, config.params, tiny), tmp_path / "x.pt")


def test_import_cadmr_stays_light():
    import subprocess
    import sys

    code = "import sys, cadmr; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
