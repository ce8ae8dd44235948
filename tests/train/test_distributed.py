"""Data-parallel training: two torchrun ranks (gloo) against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from cadmr.cli import main
from cadmr.train.checkpoint import load_checkpoint
from cadmr.train.distributed import data_parallel_loss, rank_and_size, shard

# 466 training interactions in batches of 101: four full batches and one of 62, so the two
# ranks' shares differ in size (50/51) and the loss scaling is exercised
SETS = ["train.epochs=4", "train.batch_size=101", "train.num_threads=1", "train.patience=10"]


@dataclass(frozen=True)
class _Batch:
    users: np.ndarray
    items: torch.Tensor


def test_shard_splits_contiguously_and_reports_the_share():
    batch = _Batch(np.arange(5), torch.arange(10, 15))
    first, share0 = shard(batch, 0, 2)
    second, share1 = shard(batch, 1, 2)
    assert first.users.tolist() == [0, 1] and first.items.tolist() == [10, 11]
    assert second.users.tolist() == [2, 3, 4] and second.items.tolist() == [12, 13, 14]
    assert (share0, share1) == (0.4, 0.6)
    empty, share = shard(_Batch(np.arange(1), torch.arange(1)), 0, 2)
    assert len(empty.users) == 0 and share == 0.0


def test_shard_refuses_what_it_cannot_split():
    with pytest.raises(TypeError, match="batch dataclasses"):
        shard((np.arange(3),), 0, 2)
    with pytest.raises(TypeError, match="differ in length"):
        shard(_Batch(np.arange(3), torch.arange(2)), 0, 2)


def test_outside_torchrun_training_is_single_process():
    class M(torch.nn.Module):
        def loss(self, batch):
            return batch

    model = M()
    assert rank_and_size() == (0, 1)
    assert data_parallel_loss(model) == model.loss


def _states(folder):
    ck = load_checkpoint(folder / "best.pt")
    return ck["model_state"], ck["epoch"]


@pytest.mark.parametrize("model", ["bpr", "lightgcn"])
def test_two_ranks_match_one_process(model, tmp_path):
    _two_ranks_against_one(model, SETS, tmp_path)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs a GPU per rank: 2 GPUs")
@pytest.mark.parametrize("model", ["bpr", "lightgcn"])
def test_two_ranks_on_two_gpus_match_one_process(model, tmp_path):
    """The same on GPUs: each rank on its LOCAL_RANK GPU, gradients all-reduced by NCCL."""
    _two_ranks_against_one(model, [*SETS, "train.device=cuda"], tmp_path)


def _two_ranks_against_one(model: str, sets: list[str], tmp_path) -> None:
    common = ["-m", model, "-d", "synthetic-tiny", "--quiet"]
    for kv in sets:
        common += ["--set", kv]
    assert main(["train", *common, "--out", str(tmp_path / "one")]) == 0

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    proc = subprocess.run(
        [*launch, "-m", "cadmr.cli", "train", *common, "--out", str(tmp_path / "two")],
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| test recall@10") == 1  # rank 0 alone prints its table

    one, epoch_one = _states(tmp_path / "one")
    two, epoch_two = _states(tmp_path / "two")
    assert epoch_one == epoch_two and one.keys() == two.keys()
    # without the gradient all-reduce, or with unscaled shares, rank 0 would train on half
    # of each batch and end far from these parameters
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-6), k
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    for k, v in r1["test"].items():
        assert r2["test"][k] == pytest.approx(v, abs=1e-6), k


def test_torchrun_runs_only_train_and_tune(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["models"]) == 2
    assert "torchrun runs cadmr train or cadmr tune" in capsys.readouterr().err
