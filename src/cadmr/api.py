"""The Python API: train, recommend, save and load without the command line.

    import cadmr
    model = cadmr.fit("lightgcn", "ml100k", embedding_size=64, callback=print)
    items, scores = model.recommend([0, 1, 2], k=10)
    cadmr.save(model, "lightgcn.pt")
    model = cadmr.load("lightgcn.pt")

``fit`` runs the same trainer as ``cadmr train`` (the same configuration resolution, early
stopping on validation, test evaluated once), in a temporary folder unless ``out_dir`` is
given, and returns the best model on validation. Its results (validation and test metrics,
best epoch) are in ``model.results``. The same model, data and seed give the same scores as
``cadmr train`` (tests/test_api.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cadmr.data.dataset import Dataset
from cadmr.data.sources import resolve_dataset
from cadmr.errors import CadmrValueError
from cadmr.models.base import Recommender
from cadmr.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from cadmr.train.loop import EPOCH_CALLBACK
from cadmr.train.resolve import resolve_run_config
from cadmr.train.trainer import run

CHECKPOINT = "_cadmr_checkpoint"  # the attribute holding a model's checkpoint metadata


def fit(
    model: str,
    dataset: Dataset | str,
    *,
    seed: int = 0,
    train: Mapping[str, Any] | None = None,
    eval: Mapping[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    out_dir: str | Path | None = None,
    **params: Any,
) -> Recommender:
    """Train ``model`` (a registered name) on ``dataset`` (a Dataset, or a name/folder as
    ``-d`` takes) and return the best model on validation.

    Args:
        seed: The run seed.
        train, eval: Overrides of the ``train`` / ``eval`` configuration sections.
        callback: Called after every epoch with its history entry (epoch, loss, seconds,
            and the validation metrics when it was evaluated), e.g. to log to a dashboard.
        out_dir: Keep the run folder there (checkpoints, logs, results); default: a
            temporary folder, removed on return.
        **params: The model's hyper-parameters (``cadmr train --set params.NAME=...``).
    """
    data = resolve_dataset(dataset) if isinstance(dataset, str) else dataset
    extra = {
        "seed": seed,
        "train": {"progress": False, **(train or {})},
        "eval": dict(eval or {}),
        "params": params,
    }
    config = resolve_run_config(model, data.name, extra=extra)
    token = EPOCH_CALLBACK.set(callback)
    try:
        if out_dir is not None:
            return _trained(config, data, Path(out_dir))
        with tempfile.TemporaryDirectory(prefix="cadmr-fit-") as tmp:
            return _trained(config, data, Path(tmp))
    finally:
        EPOCH_CALLBACK.reset(token)


def _trained(config, data: Dataset, out_dir: Path) -> Recommender:
    results = run(config, data, out_dir, echo=False)
    model = load(results["checkpoint"], data)
    model.results = results
    return model


def save(model: Recommender, path: str | Path) -> Path:
    """Write ``model`` (from ``fit`` or ``load``) as a checkpoint that ``load``, ``cadmr
    evaluate`` and ``cadmr recommend`` read."""
    meta = getattr(model, CHECKPOINT, None)
    if meta is None:
        raise CadmrValueError("only a model from cadmr.fit or cadmr.load can be saved")
    path = Path(path)
    save_checkpoint(path, {**meta, "model_state": model.state()})
    return path


def load(path: str | Path, dataset: Dataset | str | None = None) -> Recommender:
    """The model of a checkpoint (``save``'s, or a run's ``best.pt``), on ``dataset``
    (default: the one it was trained on), ready to recommend."""
    if dataset is None:
        dataset = load_checkpoint(path)["config"]["dataset"]
    data = resolve_dataset(dataset) if isinstance(dataset, str) else dataset
    model, ck = load_model(path, data)
    setattr(model, CHECKPOINT, {k: v for k, v in ck.items() if k != "model_state"})
    return model
