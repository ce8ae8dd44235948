"""One generic trainer for every model.

``run(config, dataset, out_dir)`` trains the model named in the configuration (each point
of its validation grid, if it has one), stops early on the validation metric, evaluates the
test split exactly once at the best validation checkpoint, and writes into ``out_dir``:

    config.yaml      the fully resolved configuration
    train.log        one line per epoch (loss, validation metrics, seconds)
    history.jsonl    the same as JSON lines
    last.pt          full training state after the latest epoch (for --resume)
    best.pt          the best-validation model (for evaluate / recommend)
    results.json     machine-readable results (schema below); only a finished run has it
    results.md       the results as a Markdown table
    best.yaml        with a grid: the selected parameters, for ``cadmr train --config``
    status.json      running, finished, failed (with the error) or interrupted
    .lock            held while a process owns the folder (train/runfolder.py): a second
                     run into the same folder is refused with the owner's pid

With a grid, each point trains in ``out_dir/trials/NNN`` and the best is chosen on
validation only. ``resume=True`` continues an interrupted run from ``last.pt`` and reuses
finished trials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cadmr.atomic import atomic_write_text
from cadmr.config import RunConfig, to_dict
from cadmr.data.dataset import Dataset
from cadmr.data.leakage import LeakageGuard
from cadmr.errors import TrainingError
from cadmr.eval.protocol import evaluate
from cadmr.logs import RUN_LOGGER, run_transcript, showing_progress
from cadmr.models import (
    MODELS,
    ClosedFormRecommender,
    Recommender,
    TorchRecommender,
    get_model_class,
)
from cadmr.train import runfolder
from cadmr.train.checkpoint import checkpoint_payload, load_model, save_checkpoint
from cadmr.train.device import resolve_device
from cadmr.train.distributed import rank_and_size
from cadmr.train.loop import fit_iterative
from cadmr.train.reporting import format_metrics, format_params, results_markdown
from cadmr.train.runtime import retain_freed_memory, set_threads

__all__ = [
    "TrainingError",
    "build_model",
    "check_evaluable",
    "fit_trial",
    "fitted_popularity",
    "run",
]


def build_model(
    config: RunConfig, params: Any, dataset: Dataset, seed: int | None = None
) -> Recommender:
    """Instantiate the configured model with deterministic initial weights."""
    cls = get_model_class(config.model)
    if cls.needs_features and not dataset.features:
        raise TrainingError(f"{cls.name} needs item features; {dataset.name} has none")
    check_capable(config, dataset, [params])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed if seed is None else seed)
        return cls(params, dataset.n_users, dataset.n_items, dataset.modalities)


def check_capable(config: RunConfig, dataset: Dataset, trials: list[Any]) -> None:
    """Raise TrainingError if ``dataset`` is a cold-item split and the model cannot rank
    items without interactions at any of the parameters ``trials``."""
    cls = get_model_class(config.model)
    if dataset.cold_items and not all(cls.can_score_new_items(p) for p in trials):
        capable = ", ".join(n for n in sorted(MODELS) if MODELS[n].scores_new_items)
        raise TrainingError(
            f"{cls.name} cannot rank items without interactions, which is all {dataset.name} "
            f"evaluates (a cold-item split); models that can: {capable}, and cadmr with "
            "rating-valued attention, value_skip or without attention"
        )


def fit_trial(
    config: RunConfig,
    params: Any,
    dataset: Dataset,
    out_dir: Path,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    model: Recommender | None = None,
) -> dict[str, Any]:
    """Train one configuration, early-stopped on validation; returns the trial summary.

    The summary (also written to ``out_dir/trial.json``) holds the best validation metrics,
    the best epoch, mean seconds per epoch and the path of ``best.pt``. ``log`` receives
    the transcript lines (default: the ``cadmr.run`` logger).
    """
    log = log or logging.getLogger(RUN_LOGGER).info
    out_dir.mkdir(parents=True, exist_ok=True)
    done = out_dir / "trial.json"
    if resume and done.exists():
        summary = json.loads(done.read_text())
        if summary.get("params") == to_dict(params):
            log(f"reusing finished trial {out_dir}")
            return summary
    guard = LeakageGuard(dataset)
    if model is None:
        model = build_model(config, params, dataset)
    else:
        model.params = params
    model.setup(dataset.train, dataset.features, guard)
    if isinstance(model, TorchRecommender):  # after setup: it moves the constants too
        model.to(resolve_device(config.train.device))
    if isinstance(model, ClosedFormRecommender):
        summary = _fit_closed_form(config, params, dataset, model, out_dir, log)
    elif isinstance(model, TorchRecommender):
        summary = fit_iterative(config, params, dataset, model, out_dir, resume, log)
    else:
        raise TypeError(f"{type(model).__name__} is neither closed-form nor a torch model")
    summary["params"] = to_dict(params)
    atomic_write_text(done, json.dumps(summary, indent=2))
    return summary


def _fit_closed_form(
    config: RunConfig,
    params: Any,
    dataset: Dataset,
    model: ClosedFormRecommender,
    out_dir: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    t0 = time.perf_counter()
    model.fit()
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    valid = evaluate(model, dataset, "valid", config.eval, progress=config.train.progress)
    eval_s = time.perf_counter() - t0
    log(f"{model.name} {format_params(params)} fit {fit_s:.1f}s | valid {format_metrics(valid)}")
    ckpt = out_dir / "best.pt"
    save_checkpoint(
        ckpt,
        checkpoint_payload(
            config, params, dataset, model, epoch=0, best_metric=valid[config.eval.valid_metric]
        ),
    )
    return {
        "best_epoch": 0,
        "epochs_run": 1,
        "valid": valid,
        "seconds_per_epoch": fit_s,
        "eval_seconds": eval_s,
        "checkpoint": str(ckpt),
    }


def run(
    config: RunConfig,
    dataset: Dataset,
    out_dir: str | Path,
    resume: bool = False,
    echo: bool = True,
) -> dict[str, Any]:
    """Train (with the validation grid, if any), test once at the best, write results.

    Under torchrun (``distributed``), every rank trains and evaluates the same model on its
    share of each batch; rank 0 writes ``out_dir``, the others a temporary folder.
    """
    check_evaluable(dataset)
    check_capable(config, dataset, list(config.trials()))  # before the run folder exists
    rank, size = rank_and_size()
    if resume and size > 1:
        raise TrainingError("--resume runs in one process; resume without torchrun")
    if rank == 0:
        return _run(config, dataset, Path(out_dir), resume, echo)
    with tempfile.TemporaryDirectory(prefix="cadmr-rank") as scratch:
        quiet = dataclasses.replace(config.train, progress=False)
        return _run(dataclasses.replace(config, train=quiet), dataset, Path(scratch), False, False)


def check_evaluable(dataset: Dataset) -> None:
    """Raise TrainingError unless the valid and the test split each hold a user who also
    has training interactions: otherwise early stopping has nothing to select on, or the
    test has nothing to measure, and every metric would be nan."""
    has_train = np.diff(dataset.train.indptr) > 0
    for split in ("valid", "test"):
        held = np.diff(dataset.split(split).indptr) > 0
        if not (held & has_train).any():
            what = "is empty" if not held.any() else "has no user with training interactions"
            raise TrainingError(f"{dataset.name}: the {split} split {what}; nothing to evaluate")


def _run(
    config: RunConfig, dataset: Dataset, out_dir: Path, resume: bool, echo: bool
) -> dict[str, Any]:
    """``run`` in one process: owns ``out_dir`` (one process per folder) and records in its
    status.json whether the run is running, finished, failed or interrupted
    (train/runfolder.py)."""
    with runfolder.owned(out_dir) as stale:
        return _run_owned(config, dataset, out_dir, resume, echo, stale)


def _run_owned(
    config: RunConfig,
    dataset: Dataset,
    out_dir: Path,
    resume: bool,
    echo: bool,
    stale: str | None,
) -> dict[str, Any]:
    cfg_path = out_dir / "config.yaml"
    cfg_text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    device = resolve_device(config.train.device)  # before any work: a missing GPU fails here
    if device.type == "cuda":  # the current GPU too, for what NCCL runs without a tensor
        torch.cuda.set_device(device)
    if resume and cfg_path.exists() and not _same_config(cfg_path.read_text(), cfg_text):
        raise TrainingError(
            f"{out_dir} holds a run with another configuration; resume needs the same one"
        )
    if not resume and (out_dir / "results.json").exists():
        raise TrainingError(
            f"{out_dir} already holds finished results; pass --resume to reuse it or "
            "choose another --out"
        )
    atomic_write_text(cfg_path, cfg_text)
    runfolder.write_status(out_dir, "running")
    try:
        with run_transcript(out_dir / "train.log", echo) as log:
            if stale:
                log(f"took over {out_dir} from process {stale}, which ended without releasing it")
            results = _train_and_test(config, dataset, out_dir, resume, log, device)
    except KeyboardInterrupt:
        runfolder.write_status(out_dir, "interrupted", resume="continue with --resume")
        raise
    except BaseException as e:
        runfolder.write_status(out_dir, "failed", error=f"{type(e).__name__}: {e}")
        raise
    runfolder.write_status(out_dir, "finished")
    return results


def _train_and_test(
    config: RunConfig,
    dataset: Dataset,
    out_dir: Path,
    resume: bool,
    log: Callable[[str], None],
    device: torch.device,
) -> dict[str, Any]:
    """Every trial of the grid, the best on validation tested once; writes results.json."""
    with showing_progress(config.train.progress):
        threads = set_threads(config.train.num_threads)
        retain_freed_memory()
        log(
            f"{config.model} on {dataset.name} ({dataset.n_users} users, {dataset.n_items} "
            f"items, {dataset.train.nnz} train interactions), seed {config.seed}, "
            f"{threads} threads" + ("" if device.type == "cpu" else f", {device}")
        )
        summaries = _fit_trials(config, dataset, out_dir, resume, log)
        metric = config.eval.valid_metric
        best = max(summaries, key=lambda s: s["valid"][metric])  # the first of equals
        model, _ = load_model(best["checkpoint"], dataset, config.train.device)
        test = evaluate(model, dataset, "test", config.eval, progress=config.train.progress)
        valid = format_metrics(best["valid"])
        log(f"best epoch {best['best_epoch']} | valid {valid} | test {format_metrics(test)}")
        if dataset.cold_items:  # the cold items among the warm ones: the second table
            mixed = {"test_mixed": evaluate(model, dataset, "test", config.eval, mixed=True)}
            log(f"test, all items ranked (cold among warm): {format_metrics(mixed['test_mixed'])}")
        else:
            mixed = {}
        popularity = test if config.model == "pop" else _popularity_reference(config, dataset)
    results = {
        "model": config.model,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "seed": config.seed,
        **{k: best[k] for k in ("best_epoch", "epochs_run", "params", "valid")},
        "test": test,
        **mixed,
        **{k: best[k] for k in ("seconds_per_epoch", "eval_seconds")},
        **{k: best[k] for k in ("phases", "selected_phase") if k in best},
        "threads": threads,
        "device": str(device),
        **(
            {"gpu_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
            if device.type == "cuda"
            else {}
        ),
        "checkpoint": best["checkpoint"],
        "config": config.to_dict(),
        "popularity": popularity,
    }
    if len(summaries) > 1:
        keys = ("best_epoch", "epochs_run", "seconds_per_epoch")
        results["search"] = [
            {"params": s["params"], "valid_" + metric: s["valid"][metric]} | {k: s[k] for k in keys}
            for s in summaries
        ]
    _write_results(out_dir, config, results, len(summaries))
    return results


def _fit_trials(
    config: RunConfig,
    dataset: Dataset,
    out_dir: Path,
    resume: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Each point of the grid trained (or reused) in its folder; their summaries."""
    trials = list(config.trials())
    # closed-form models refit one instance across the grid (EASE reuses its Gram matrix);
    # it goes when this returns: a closed-form model can be an I x I matrix
    closed_form = issubclass(get_model_class(config.model), ClosedFormRecommender)
    shared = build_model(config, config.params, dataset) if closed_form else None
    summaries = []
    for i, params in enumerate(trials):
        trial_dir = out_dir if len(trials) == 1 else out_dir / "trials" / f"{i:03d}"
        if len(trials) > 1:
            log(f"trial {i + 1}/{len(trials)}: {format_params(params)}")
        summaries.append(fit_trial(config, params, dataset, trial_dir, resume, log, shared))
    return summaries


def _write_results(out_dir: Path, config: RunConfig, results: dict[str, Any], n: int) -> None:
    """results.json and .md; with a grid of ``n`` points, best.yaml for ``train --config``."""
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / "results.md", results_markdown([results]))
    if config.search:
        best_yaml = out_dir / "best.yaml"
        atomic_write_text(
            best_yaml,
            f"# best of {n} point(s) on validation {config.eval.valid_metric}; use with: "
            f"cadmr train --config {best_yaml}\n"
            + yaml.safe_dump({"params": results["params"]}, sort_keys=False),
        )


def _same_config(written: str, current: str) -> bool:
    """Whether a run folder's config.yaml text ``written`` holds the configuration dumped as
    ``current``. A folder written before ``train.device`` existed ran on the CPU, its
    default."""
    old = yaml.safe_load(written) or {}
    if isinstance(old.get("train"), dict):
        old["train"].setdefault("device", "cpu")
    return old == yaml.safe_load(current)


def fitted_popularity(dataset: Dataset) -> Recommender:
    """The popularity baseline fitted on ``dataset``'s training split."""
    pop = get_model_class("pop")(None, dataset.n_users, dataset.n_items, dataset.modalities)
    pop.setup(dataset.train, dataset.features, LeakageGuard(dataset))
    return pop.fit()


def _popularity_reference(config: RunConfig, dataset: Dataset) -> dict[str, float]:
    """Test metrics of the popularity baseline, printed beside every result (docs/protocol.md)."""
    return evaluate(fitted_popularity(dataset), dataset, "test", config.eval)
