"""One run folder, one process; and a status that says whether a run finished, failed or
was interrupted (train/runfolder.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import cadmr.train.trainer as trainer
from cadmr.cli import main
from cadmr.data import Dataset
from cadmr.data.synthetic import make_synthetic
from cadmr.train import TrainingError, resolve_run_config, run
from cadmr.train.runfolder import LOCK, owned, read_status


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic("tiny", seed=0)


def _cfg(**train):
    return resolve_run_config(
        "bpr", "synthetic-tiny", extra={"train": {"progress": False, "epochs": 2, **train}}
    )


def test_a_folder_in_use_is_refused_with_its_owner(tiny, tmp_path):
    # this process holds the folder, as a concurrent run would
    in_use = pytest.raises(TrainingError, match=f"in use by process {os.getpid()}")
    with owned(tmp_path), in_use:
        run(_cfg(), tiny, tmp_path, echo=False)
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / "config.yaml").exists()  # the refused run wrote nothing
    run(_cfg(), tiny, tmp_path, echo=False)  # released: the folder can be used again
    assert read_status(tmp_path)["status"] == "finished"


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from cadmr.train.runfolder import owned\n"
            "with owned(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        in_use = pytest.raises(RuntimeError, match=f"in use by process {holder.pid}")
        with in_use, owned(tmp_path):
            pass
    finally:
        holder.kill()  # as kill -9 would: the kernel drops its lock
        holder.wait()
    with owned(tmp_path) as stale:
        assert stale == str(holder.pid)  # the dead owner's pid was still in the file


def test_a_stale_lock_is_taken_over_and_logged(tiny, tmp_path):
    (tmp_path / LOCK).write_text("999999999\n")  # a pid whose process is gone; no lock held
    run(_cfg(), tiny, tmp_path, echo=False)
    assert "from process 999999999, which ended without releasing it" in (
        (tmp_path / "train.log").read_text()
    )
    assert (tmp_path / LOCK).read_text() == ""  # released: empty again


def test_a_failed_run_is_marked_failed_and_never_finished(tiny, tmp_path):
    with pytest.raises(TrainingError):
        run(_cfg(learning_rate=1e30), tiny, tmp_path, echo=False)
    status = read_status(tmp_path)
    assert status["status"] == "failed"
    assert "TrainingError" in status["error"]
    assert not (tmp_path / "results.json").exists()


def test_an_interrupted_run_says_how_to_continue(tiny, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_train_and_test", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(), tiny, tmp_path, echo=False)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "interrupted"
    assert "--resume" in status["resume"]


def test_a_refused_rerun_keeps_the_finished_status(tiny, tmp_path):
    run(_cfg(), tiny, tmp_path, echo=False)
    with pytest.raises(TrainingError, match="already holds finished results"):
        run(_cfg(), tiny, tmp_path, echo=False)
    assert read_status(tmp_path)["status"] == "finished"


@pytest.mark.parametrize("split", ["valid", "test"])
def test_an_empty_evaluation_split_is_refused_before_anything_is_written(tiny, tmp_path, split):
    empty = tiny.split(split)[:0].copy()
    empty.resize(tiny.split(split).shape)
    splits = {s: (empty if s == split else tiny.split(s)) for s in ("train", "valid", "test")}
    data = Dataset.build("holed", splits, tiny.features)
    with pytest.raises(TrainingError, match=f"the {split} split is empty"):
        run(_cfg(), data, tmp_path / "run", echo=False)
    assert not (tmp_path / "run").exists()


def test_kill_9_then_resume_gives_the_uninterrupted_result(tmp_path):
    args = ["train", "-m", "kernel_ae", "-d", "synthetic-small", "--quiet"]
    for setting in ("train.epochs=30", "train.patience=100", "train.num_threads=1"):
        args += ["--set", setting]
    args += ["--set", "params.hidden=[32,32]"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main([*args, "--out", str(full)]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "cadmr.cli", *args, "--out", str(cut)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    history, deadline = cut / "history.jsonl", time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if history.exists() and len(history.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no handler runs, the lock and status stay as they were
    proc.wait()
    assert not (cut / "results.json").exists(), "the run finished before it was killed"
    assert read_status(cut)["status"] == "running"
    assert main([*args, "--out", str(cut), "--resume"]) == 0
    resumed = json.loads((cut / "results.json").read_text())
    uninterrupted = json.loads((full / "results.json").read_text())
    assert resumed["test"] == uninterrupted["test"]
    assert resumed["best_epoch"] == uninterrupted["best_epoch"]
    assert read_status(cut)["status"] == "finished"
