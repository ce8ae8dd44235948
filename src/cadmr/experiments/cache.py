"""Runs cached by what determines them: the resolved configuration and the data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from cadmr.config import RunConfig
from cadmr.data.dataset import Dataset
from cadmr.train import run


def run_key(config: RunConfig, dataset: Dataset) -> str:
    """16 hex digits identifying a run: the fully resolved configuration and the dataset's
    content fingerprint. Left out: the dataset's name or path as typed, and whether progress
    bars were shown; neither changes a result. The device is part of the key (a GPU's
    floating-point results differ in the last bits) unless it is the CPU,
    ``train.min_epochs`` unless it is 0, and CADMR's ``params.neighbour_input`` unless it
    is false, ``params.neighbour_reverse`` unless it is true, ``params.prior_temperature``
    unless it is above 0 and ``params.finetune_loss`` / ``ranking_temperature`` unless
    they are "ranking" / not 0.1."""
    cfg = {k: v for k, v in config.to_dict().items() if k != "dataset"}
    # settings added later are left out at the value that behaves as before they existed
    # (the CPU; no minimum; CADMR's input path on, its output path one way, no content
    # prior, the reconstruction loss), so keys of runs cached before them still match
    unchanged = {
        "train": {"device": "cpu", "min_epochs": 0},
        "params": {
            "neighbour_input": True,
            "neighbour_reverse": False,
            "prior_temperature": 0.0,
            "finetune_loss": "reconstruction",
            "ranking_temperature": 0.1,
        },
    }
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "progress"}
    for section, defaults in unchanged.items():
        cfg[section] = {
            k: v for k, v in cfg[section].items() if not (k in defaults and v == defaults[k])
        }
    text = yaml.safe_dump(cfg, sort_keys=True) + dataset.fingerprint()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_dir(config: RunConfig, dataset: Dataset, root: str | Path) -> Path:
    """Where the run of ``config`` on ``dataset`` lives under ``root``."""
    return (
        Path(root) / dataset.name / f"{config.model}-seed{config.seed}-{run_key(config, dataset)}"
    )


def cached_run(
    config: RunConfig, dataset: Dataset, root: str | Path, echo: bool = False
) -> dict[str, Any]:
    """The results of ``config`` on ``dataset``: read back when a finished run with the same
    key exists under ``root``, resumed when an interrupted one does (its finished epochs and
    grid points are kept), trained otherwise."""
    out = run_dir(config, dataset, root)
    done = out / "results.json"
    if done.exists():
        return json.loads(done.read_text())
    return run(config, dataset, out, resume=out.exists(), echo=echo)
