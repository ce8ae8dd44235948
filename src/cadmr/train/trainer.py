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
    status.json      running, finished, failed (with the error) or interrupted
    .lock            held while a process owns the folder (train/runfolder.py): a second
                     run into the same folder is refused with the owner's pid

With a grid, each point trains in ``out_dir/trials/NNN`` and the best is chosen on
validation only. ``resume=True`` continues an interrupted run from ``last.pt`` and reuses
finished trials.
"""

from __future__ import annotations

import contextvars
import ctypes
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from cadmr.config import RunConfig, TrainConfig, from_dict, to_dict
from cadmr.data.dataset import Dataset
from cadmr.data.leakage import LeakageGuard
from cadmr.eval.protocol import evaluate
from cadmr.models import ClosedFormRecommender, Recommender, TorchRecommender, get_model_class
from cadmr.models.base import batch_to
from cadmr.train import runfolder
from cadmr.train.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from cadmr.train.device import resolve_device
from cadmr.train.distributed import data_parallel_loss, rank_and_size

HEADLINE = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
# called with each epoch's history entry (epoch, loss, seconds, valid metrics when
# evaluated); set by cadmr.api.fit for its ``callback``, None otherwise
EPOCH_CALLBACK: contextvars.ContextVar[Callable[[dict[str, Any]], None] | None] = (
    contextvars.ContextVar("EPOCH_CALLBACK", default=None)
)


class TrainingError(RuntimeError):
    """Training cannot continue (diverged loss, incompatible resume, ...)."""


def set_threads(n: int) -> int:
    """Set torch's intra-op threads (0 = one per available core); returns the count."""
    n = n or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def retain_freed_memory() -> bool:
    """Keep memory that the process frees for its own reuse instead of returning it to the
    OS (glibc only; ``CADMR_RETAIN_FREED_MEMORY=0`` opts out). Returns whether it applied.

    glibc maps every allocation above 32 MiB afresh and unmaps it on free, so each training
    step's weight-sized tensors (CADMR's kernel-weighted matrices and their gradients) are
    page-faulted in again; on this project's virtual machines a first touch costs about 6
    us per 4 KiB page, a third of a CADMR pretraining step at Baby size. Served from the
    heap and kept there, the same blocks are reused step after step (docs/scaling.md: the
    epoch times and peak memory with and without).
    """
    if os.environ.get("CADMR_RETAIN_FREED_MEMORY", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def build_model(
    config: RunConfig, params: Any, dataset: Dataset, seed: int | None = None
) -> Recommender:
    """Instantiate the configured model with deterministic initial weights."""
    cls = get_model_class(config.model)
    if cls.needs_features and not dataset.features:
        raise TrainingError(f"{cls.name} needs item features; {dataset.name} has none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed if seed is None else seed)
        return cls(params, dataset.n_users, dataset.n_items, dataset.modalities)


class _Log:
    """Writes each line to stdout (without breaking progress bars) and to a file."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.path = path
        self.echo = echo

    def __call__(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self.echo:
            tqdm.write(line, file=sys.stdout)


def _fmt(metrics: dict[str, float], keys: tuple[str, ...] = HEADLINE) -> str:
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def checkpoint_payload(
    config: RunConfig, params: Any, dataset: Dataset, model: Recommender, **extra: Any
) -> dict[str, Any]:
    """What every checkpoint holds: enough to rebuild and verify the model and its data."""
    return {
        "format": 1,
        "config": config.to_dict(),
        "params": to_dict(params),
        "dataset_fingerprint": dataset.fingerprint(),
        "sizes": {"n_users": dataset.n_users, "n_items": dataset.n_items},
        "feature_dims": dataset.modalities,
        "model_state": model.state(),
        **extra,
    }


def fit_trial(
    config: RunConfig,
    params: Any,
    dataset: Dataset,
    out_dir: Path,
    resume: bool = False,
    log: Callable[[str], None] = print,
    model: Recommender | None = None,
) -> dict[str, Any]:
    """Train one configuration, early-stopped on validation; returns the trial summary.

    The summary (also written to ``out_dir/trial.json``) holds the best validation metrics,
    the best epoch, mean seconds per epoch and the path of ``best.pt``.
    """
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
        summary = _fit_iterative(config, params, dataset, model, out_dir, resume, log)
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
    log(f"{model.name} {_params_str(params)} fit {fit_s:.1f}s | valid {_fmt(valid)}")
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


def _params_str(params: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in to_dict(params).items())


def _fit_iterative(
    config: RunConfig,
    params: Any,
    dataset: Dataset,
    model: TorchRecommender,
    out_dir: Path,
    resume: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run the model's training phases in order (most models have one).

    Each phase gets a fresh optimizer and its own early stopping on the validation metric
    (``train.epochs`` and ``train.patience`` apply per phase). A later phase starts from the
    best checkpoint of the phase before; that starting point is evaluated first ("epoch -1"),
    so a phase that never improves validation leaves the model as it was. The best model of
    phase P is ``best-P.pt``; the last phase's is ``best.pt``. The run's model is the best of
    these on validation. ``last.pt`` records the phase, so ``--resume`` continues inside
    whichever phase was interrupted.
    """
    tc: TrainConfig = config.train
    metric = config.eval.valid_metric
    phases = model.phases()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)  # dropout and any other torch sampling during training
    state: dict[str, Any] = _fresh_phase_state(0)
    state["finished"] = []
    history: list[dict[str, Any]] = []
    last = out_dir / "last.pt"
    optimizer_state = None
    if resume and last.exists():
        ck = load_checkpoint(last)
        if ck["params"] != to_dict(params) or ck["dataset_fingerprint"] != dataset.fingerprint():
            raise TrainingError(f"{last} was written for other parameters or data; cannot resume")
        model.load_state(ck["model_state"])
        optimizer_state = ck["optimizer"]
        rng.bit_generator.state = ck["numpy_rng"]
        torch.set_rng_state(ck["torch_rng"])
        if ck.get("cuda_rng") is not None and model.device.type == "cuda":
            torch.cuda.set_rng_state(ck["cuda_rng"], model.device)
        state = {"phase": 0, "finished": [], **ck["trainer"]}
        history = ck["history"]
        atomic_write_text(out_dir / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        log(f"resumed from {last} at phase {state['phase']}, epoch {state['epoch']}")

    def save_last(optimizer: torch.optim.Optimizer | None, epoch: int) -> None:
        save_checkpoint(
            last,
            checkpoint_payload(
                config,
                params,
                dataset,
                model,
                optimizer=None if optimizer is None else optimizer.state_dict(),
                best_metric=state["best_metric"],
                epoch=epoch,
                numpy_rng=rng.bit_generator.state,
                torch_rng=torch.get_rng_state(),
                cuda_rng=(
                    torch.cuda.get_rng_state(model.device) if model.device.type == "cuda" else None
                ),
                trainer=dict(state),
                history=history,
            ),
        )

    while state["phase"] < len(phases):
        phase = phases[state["phase"]]
        final = state["phase"] == len(phases) - 1
        best = out_dir / ("best.pt" if final else f"best-{phase}.pt")
        tag = f"[{phase}] " if len(phases) > 1 else ""
        model.start_phase(phase)
        optimizer = make_optimizer(model, tc)
        loss_fn = data_parallel_loss(model)  # model.loss unless under torchrun
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
            optimizer_state = None

        def payload(epoch: int, phase: str = phase) -> dict[str, Any]:
            return checkpoint_payload(
                config,
                params,
                dataset,
                model,
                epoch=epoch,
                phase=phase,
                best_metric=state["best_metric"],
            )

        if state["phase"] > 0 and state["epoch"] == 0 and state["best_metric"] == -math.inf:
            # the starting point of a later phase competes with its epochs
            valid = evaluate(model, dataset, "valid", config.eval)
            state.update(best_metric=valid[metric], best_epoch=-1, best_valid=valid)
            save_checkpoint(best, payload(epoch=-1))
            log(f"{tag}start | valid {_fmt(valid)} *")
        while state["epoch"] < tc.epochs and state["bad_evals"] < tc.patience:
            epoch = state["epoch"]
            entry = _train_epoch(model, optimizer, rng, tc, f"{tag}epoch {epoch}", loss_fn)
            entry = {"phase": phase, "epoch": epoch, **entry} if tag else {"epoch": epoch, **entry}
            line = (
                f"{tag}epoch {epoch:4d} loss {entry['loss']:.5f} "
                f"train {entry['train_seconds']:.1f}s"
            )
            state["epoch"] = epoch + 1
            if (epoch + 1) % tc.eval_every == 0 or state["epoch"] == tc.epochs:
                t0 = time.perf_counter()
                valid = evaluate(model, dataset, "valid", config.eval)
                entry["eval_seconds"] = time.perf_counter() - t0
                entry["valid"] = valid
                line += f" eval {entry['eval_seconds']:.1f}s | valid {_fmt(valid)}"
                if valid[metric] > state["best_metric"]:
                    state.update(best_metric=valid[metric], best_epoch=epoch, bad_evals=0)
                    state["best_valid"] = valid
                    save_checkpoint(best, payload(epoch=epoch))
                    line += " *"
                else:
                    state["bad_evals"] += 1
            history.append(entry)
            log(line)
            if (callback := EPOCH_CALLBACK.get()) is not None:
                callback(dict(entry))
            save_last(optimizer, epoch)
            with open(out_dir / "history.jsonl", "a") as f:  # after last.pt: never ahead of it
                f.write(json.dumps(entry) + "\n")
        if state["best_metric"] == -math.inf:
            raise TrainingError("no validation evaluation happened; check train.eval_every")
        if state["bad_evals"] >= tc.patience:
            log(f"{tag}early stop: no {metric} gain in {tc.patience} evaluations")
        mine = [h for h in history if h.get("phase", phase) == phase]
        state["finished"].append(
            {
                "phase": phase,
                "best_epoch": state["best_epoch"],
                "epochs_run": state["epoch"],
                "valid": state["best_valid"],
                "seconds_per_epoch": float(np.mean([h["train_seconds"] for h in mine] or [0.0])),
                "eval_seconds": float(
                    np.mean([h["eval_seconds"] for h in mine if "eval_seconds" in h] or [0.0])
                ),
                "checkpoint": str(best),
            }
        )
        if final:
            break
        # the next phase starts from this phase's best model
        model.load_state(load_checkpoint(best)["model_state"])
        state.update(_fresh_phase_state(state["phase"] + 1))
        save_last(None, -1)

    done = state["finished"]
    # the run's model is the best validation checkpoint over all phases (a later phase wins
    # ties): a fine-tuning phase whose input differs from its predecessor's (GLocal-K's
    # global kernel) can end below the pretrained model, and then the pretrained one is kept
    chosen = max(reversed(done), key=lambda p: p["valid"][metric])
    return {
        **chosen,
        "epochs_run": sum(p["epochs_run"] for p in done),
        **({"phases": done, "selected_phase": chosen["phase"]} if len(done) > 1 else {}),
    }


def _fresh_phase_state(phase: int) -> dict[str, Any]:
    return {"phase": phase, "epoch": 0, "best_metric": -math.inf, "best_epoch": -1, "bad_evals": 0}


def _train_epoch(
    model: TorchRecommender,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    tc: TrainConfig,
    desc: str,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """One pass over ``model.batches``; returns the mean loss and the seconds it took.

    ``loss_fn`` computes a batch's loss (default ``model.loss``; data-parallel training
    passes its rank's share, ``distributed.data_parallel_loss``).

    With ``tc.mirror_gradient``, batches 0, beta, 2 beta, ... (beta = ``mirror_interval``)
    take Mirror Gradient's pair of steps: one on ``alpha1 x loss``, then one on
    ``-alpha2 x loss`` recomputed on the same batch at the updated parameters. With plain
    SGD the pair moves the parameters by ``-lr (alpha1 - alpha2) g - lr^2 alpha1 alpha2 H g``
    to second order: with alpha1 = alpha2 only the curvature term remains, a step down the
    gradient norm (towards flat minima). The reported loss is the first, unscaled one.
    """
    model.train()
    t0 = time.perf_counter()
    total, n_batches = 0.0, 0
    bar = tqdm(model.batches(rng, tc.batch_size), desc=desc, disable=not tc.progress, leave=False)

    compute = loss_fn or model.loss

    def checked_loss(batch: Any) -> torch.Tensor:
        loss = compute(batch)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{model.name}: loss is {loss.item()} at {desc}, batch {n_batches}; "
                "lower train.learning_rate or check the inputs"
            )
        return loss

    device = getattr(model, "device", torch.device("cpu"))
    for batch in bar:
        batch = batch_to(batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss = checked_loss(batch)
        if tc.mirror_gradient and n_batches % tc.mirror_interval == 0:
            (tc.mirror_alpha1 * loss).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            (-tc.mirror_alpha2 * checked_loss(batch)).backward()
        else:
            loss.backward()
        optimizer.step()
        total += float(loss.detach())
        n_batches += 1
    return {"loss": total / max(n_batches, 1), "train_seconds": time.perf_counter() - t0}


def make_optimizer(model: TorchRecommender, tc: TrainConfig) -> torch.optim.Optimizer:
    """The model's own optimizer if it defines one, else Adam with the configured settings.

    A model whose parameters have a ``learning_rate`` field (LATTICE, DRAGON: MMRec's grids
    search it, and grids range over model parameters) trains at that rate when it is > 0,
    at ``train.learning_rate`` when it is 0.
    """
    custom = getattr(model, "make_optimizer", None)
    if custom is not None:
        return custom(tc)
    lr = getattr(model.params, "learning_rate", 0.0) or tc.learning_rate
    # fused: one kernel per step instead of a chain of foreach ops (same update, same state)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=tc.weight_decay, fused=True)


def load_model(
    checkpoint: str | Path, dataset: Dataset, device: str = "cpu"
) -> tuple[Recommender, dict[str, Any]]:
    """Rebuild a model from a checkpoint for ``dataset``, verifying it is the same data; a
    gradient-trained model goes to ``device`` (``train.device``'s values), wherever it was
    trained."""
    ck = load_checkpoint(checkpoint)
    if ck.get("dataset_fingerprint") != dataset.fingerprint():
        raise ValueError(
            f"{checkpoint} was trained on other data (fingerprint "
            f"{ck.get('dataset_fingerprint')}, this dataset {dataset.fingerprint()})"
        )
    cls = get_model_class(ck["config"]["model"])
    params = from_dict(cls.params_cls, ck["params"], "params")
    model = cls(params, dataset.n_users, dataset.n_items, dataset.modalities)
    model.setup(dataset.train, dataset.features, LeakageGuard(dataset))
    if isinstance(model, TorchRecommender):
        model.to(resolve_device(device))
        model.start_phase(ck.get("phase") or model.phases()[-1])
    model.load_state(ck["model_state"])
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model, ck


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
    try:
        with runfolder.owned(out_dir) as stale:
            return _run_owned(config, dataset, out_dir, resume, echo, stale)
    except runfolder.RunFolderError as e:
        raise TrainingError(str(e)) from None


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
    log = _Log(out_dir / "train.log", echo)
    if stale:
        log(f"took over {out_dir} from process {stale}, which ended without releasing it")
    runfolder.write_status(out_dir, "running")
    try:
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
    log: _Log,
    device: torch.device,
) -> dict[str, Any]:
    """Every trial of the grid, the best on validation tested once; writes results.json."""
    threads = set_threads(config.train.num_threads)
    retain_freed_memory()
    log(
        f"{config.model} on {dataset.name} ({dataset.n_users} users, {dataset.n_items} items, "
        f"{dataset.train.nnz} train interactions), seed {config.seed}, {threads} threads"
        + ("" if device.type == "cpu" else f", {device}")
    )

    trials = list(config.trials())
    summaries: list[dict[str, Any]] = []
    # closed-form models refit one instance across the grid (EASE reuses its Gram matrix)
    closed_form = issubclass(get_model_class(config.model), ClosedFormRecommender)
    shared = build_model(config, config.params, dataset) if closed_form else None
    for i, params in enumerate(trials):
        trial_dir = out_dir if len(trials) == 1 else out_dir / "trials" / f"{i:03d}"
        if len(trials) > 1:
            log(f"trial {i + 1}/{len(trials)}: {_params_str(params)}")
        summaries.append(fit_trial(config, params, dataset, trial_dir, resume, log, shared))

    shared = None  # a closed-form model can be an I x I matrix: one copy at a time
    metric = config.eval.valid_metric
    best_i = max(range(len(summaries)), key=lambda j: summaries[j]["valid"][metric])
    best = summaries[best_i]
    model, _ = load_model(best["checkpoint"], dataset, config.train.device)
    test = evaluate(model, dataset, "test", config.eval, progress=config.train.progress)
    log(f"best epoch {best['best_epoch']} | valid {_fmt(best['valid'])} | test {_fmt(test)}")
    popularity = test if config.model == "pop" else _popularity_reference(config, dataset)

    results = {
        "model": config.model,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "seed": config.seed,
        "best_epoch": best["best_epoch"],
        "epochs_run": best["epochs_run"],
        "params": best["params"],
        "valid": best["valid"],
        "test": test,
        "seconds_per_epoch": best["seconds_per_epoch"],
        "eval_seconds": best["eval_seconds"],
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
    if len(trials) > 1:
        results["search"] = [
            {
                "params": s["params"],
                "valid_" + metric: s["valid"][metric],
                "best_epoch": s["best_epoch"],
                "epochs_run": s["epochs_run"],
                "seconds_per_epoch": s["seconds_per_epoch"],
            }
            for s in summaries
        ]
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / "results.md", results_markdown([results]))
    return results


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


def results_markdown(rows: list[dict[str, Any]], keys: tuple[str, ...] = HEADLINE) -> str:
    """A Markdown table of test metrics with the Recall@10 / NDCG@10 ratio (docs/protocol.md).

    A popularity reference row is added from the first result that carries one, so every
    table shows the floor any personalised model must clear.
    """
    head = ["model", "dataset", "seed", "best epoch", *[f"test {k}" for k in keys]]
    head += ["R@10/N@10", "valid recall@20", "s/epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, r: dict[str, Any], epoch: str, valid: str, secs: str) -> str:
        t = r["test"]
        ratio = t["recall@10"] / t["ndcg@10"] if t.get("ndcg@10") else float("nan")
        cells = [name, r["dataset"], str(r["seed"]), epoch]
        cells += [f"{t[k]:.4f}" for k in keys] + [f"{ratio:.2f}", valid, secs]
        return "| " + " | ".join(cells) + " |"

    for r in rows:
        valid = f"{r['valid'].get('recall@20', float('nan')):.4f}"
        lines.append(
            row(r["model"], r, str(r["best_epoch"]), valid, f"{r['seconds_per_epoch']:.2f}")
        )
    ref = next((r for r in rows if "popularity" in r), None)
    if ref is not None and not any(r["model"] == "pop" for r in rows):
        pop = {"test": ref["popularity"], "dataset": ref["dataset"], "seed": ref["seed"]}
        lines.append(row("pop (reference)", pop, "-", "-", "-"))
    return "\n".join(lines) + "\n"


def search_markdown(results: dict[str, Any]) -> str:
    """A Markdown table of a grid search: one row per point (the searched parameters only),
    its best validation metric, best epoch and seconds per epoch; the selected point is
    marked. The test split plays no part in it (it is evaluated once, at the selected point).
    """
    trials = results.get("search", [])
    if not trials:
        return ""
    metric = results["config"]["eval"]["valid_metric"]
    keys = list(results["config"]["search"])
    best = max(range(len(trials)), key=lambda i: trials[i]["valid_" + metric])
    head = [*keys, f"valid {metric}", "best epoch", "s/epoch", "selected"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, t in enumerate(trials):
        cells = [str(t["params"][k]) for k in keys]
        cells += [f"{t['valid_' + metric]:.4f}", str(t["best_epoch"])]
        cells += [f"{t['seconds_per_epoch']:.2f}", "*" if i == best else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
