"""The training loop of gradient-trained models: phases, epochs, early stopping on
validation, and ``last.pt`` after every epoch so an interrupted run resumes exactly."""

from __future__ import annotations

import contextvars
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cadmr.atomic import atomic_write_text
from cadmr.config import RunConfig, TrainConfig, to_dict
from cadmr.data.dataset import Dataset
from cadmr.errors import TrainingError
from cadmr.eval.protocol import evaluate
from cadmr.models import TorchRecommender
from cadmr.models.base import batch_to
from cadmr.train.checkpoint import checkpoint_payload, load_checkpoint, save_checkpoint
from cadmr.train.distributed import data_parallel_loss
from cadmr.train.reporting import format_metrics

# called with each epoch's history entry (epoch, loss, seconds, valid metrics when
# evaluated); set by cadmr.api.fit for its ``callback``, None otherwise
EPOCH_CALLBACK: contextvars.ContextVar[Callable[[dict[str, Any]], None] | None] = (
    contextvars.ContextVar("EPOCH_CALLBACK", default=None)
)


def fit_iterative(
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
    fit = _PhasedFit(config, params, dataset, model, out_dir, log)
    if resume and fit.last.exists():
        fit.resume()
    return fit.run()


def _fresh_phase_state(phase: int) -> dict[str, Any]:
    return {"phase": phase, "epoch": 0, "best_metric": -math.inf, "best_epoch": -1, "bad_evals": 0}


class _PhasedFit:
    """One iterative fit: the trainer state that ``last.pt`` saves and a resume restores
    (phase, epoch, best metric, patience count, finished phases), the epoch history and
    the sampling generator."""

    def __init__(
        self,
        config: RunConfig,
        params: Any,
        dataset: Dataset,
        model: TorchRecommender,
        out_dir: Path,
        log: Callable[[str], None],
    ) -> None:
        self.config, self.params, self.dataset, self.model = config, params, dataset, model
        self.out_dir, self.log = out_dir, log
        self.tc: TrainConfig = config.train
        self.metric = config.eval.valid_metric
        self.phases = model.phases()
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)  # dropout and any other torch sampling during training
        self.state: dict[str, Any] = {**_fresh_phase_state(0), "finished": []}
        self.history: list[dict[str, Any]] = []
        self.last = out_dir / "last.pt"
        self.optimizer_state: dict[str, Any] | None = None

    def resume(self) -> None:
        """Restore model, optimizer, generators and trainer state from ``last.pt``."""
        ck = load_checkpoint(self.last)
        if (
            ck["params"] != to_dict(self.params)
            or ck["dataset_fingerprint"] != self.dataset.fingerprint()
        ):
            raise TrainingError(
                f"{self.last} was written for other parameters or data; cannot resume"
            )
        model = self.model
        model.load_state(ck["model_state"])
        self.optimizer_state = ck["optimizer"]
        self.rng.bit_generator.state = ck["numpy_rng"]
        torch.set_rng_state(ck["torch_rng"])
        if ck.get("cuda_rng") is not None and model.device.type == "cuda":
            torch.cuda.set_rng_state(ck["cuda_rng"], model.device)
        self.state = {"phase": 0, "finished": [], **ck["trainer"]}
        self.history = ck["history"]
        text = "".join(json.dumps(h) + "\n" for h in self.history)
        atomic_write_text(self.out_dir / "history.jsonl", text)
        where = f"phase {self.state['phase']}, epoch {self.state['epoch']}"
        self.log(f"resumed from {self.last} at {where}")

    def payload(self, **extra: Any) -> dict[str, Any]:
        return checkpoint_payload(
            self.config,
            self.params,
            self.dataset,
            self.model,
            best_metric=self.state["best_metric"],
            **extra,
        )

    def save_last(self, optimizer: torch.optim.Optimizer | None, epoch: int) -> None:
        device = self.model.device
        save_checkpoint(
            self.last,
            self.payload(
                optimizer=None if optimizer is None else optimizer.state_dict(),
                epoch=epoch,
                numpy_rng=self.rng.bit_generator.state,
                torch_rng=torch.get_rng_state(),
                cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                trainer=dict(self.state),
                history=self.history,
            ),
        )

    def run(self) -> dict[str, Any]:
        """Every phase from the current one; the summary of the run's chosen phase."""
        while self.state["phase"] < len(self.phases):
            final = self.state["phase"] == len(self.phases) - 1
            self._run_phase(self.phases[self.state["phase"]], final)
            if final:
                break
            # the next phase starts from this phase's best model
            best = self.state["finished"][-1]["checkpoint"]
            self.model.load_state(load_checkpoint(best)["model_state"])
            self.state.update(_fresh_phase_state(self.state["phase"] + 1))
            self.save_last(None, -1)
        done = self.state["finished"]
        # the run's model is the best validation checkpoint over all phases (a later phase
        # wins ties): a fine-tuning phase whose input differs from its predecessor's
        # (GLocal-K's global kernel) can end below the pretrained model, which is then kept
        chosen = max(reversed(done), key=lambda p: p["valid"][self.metric])
        return {
            **chosen,
            "epochs_run": sum(p["epochs_run"] for p in done),
            **({"phases": done, "selected_phase": chosen["phase"]} if len(done) > 1 else {}),
        }

    def _run_phase(self, phase: str, final: bool) -> None:
        """Epochs of one phase until ``train.epochs`` or patience runs out (not before
        ``train.min_epochs``)."""
        state, tc = self.state, self.tc
        best = self.out_dir / ("best.pt" if final else f"best-{phase}.pt")
        tag = f"[{phase}] " if len(self.phases) > 1 else ""
        self.model.start_phase(phase)
        optimizer = make_optimizer(self.model, tc)
        loss_fn = data_parallel_loss(self.model)  # model.loss unless under torchrun
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
            self.optimizer_state = None
        if state["phase"] > 0 and state["epoch"] == 0 and state["best_metric"] == -math.inf:
            # the starting point of a later phase competes with its epochs
            valid = self._validate()
            state.update(best_metric=valid[self.metric], best_epoch=-1, best_valid=valid)
            save_checkpoint(best, self.payload(epoch=-1, phase=phase))
            self.log(f"{tag}start | valid {format_metrics(valid)} *")
        while state["epoch"] < tc.epochs and (
            state["bad_evals"] < tc.patience or state["epoch"] < tc.min_epochs
        ):
            self._epoch(phase, tag, best, optimizer, loss_fn)
        if state["best_metric"] == -math.inf:
            raise TrainingError("no validation evaluation happened; check train.eval_every")
        if state["bad_evals"] >= tc.patience and state["epoch"] < tc.epochs:
            self.log(f"{tag}early stop: no {self.metric} gain in {tc.patience} evaluations")
        state["finished"].append(self._phase_summary(phase, best))

    def _epoch(
        self,
        phase: str,
        tag: str,
        best: Path,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any], torch.Tensor],
    ) -> None:
        """One epoch, its validation when due, then ``last.pt`` and the history line."""
        state, tc = self.state, self.tc
        epoch = state["epoch"]
        entry = train_epoch(self.model, optimizer, self.rng, tc, f"{tag}epoch {epoch}", loss_fn)
        entry = {"phase": phase, "epoch": epoch, **entry} if tag else {"epoch": epoch, **entry}
        line = f"{tag}epoch {epoch:4d} loss {entry['loss']:.5f} train {entry['train_seconds']:.1f}s"
        state["epoch"] = epoch + 1
        if (epoch + 1) % tc.eval_every == 0 or state["epoch"] == tc.epochs:
            t0 = time.perf_counter()
            valid = self._validate()
            entry["eval_seconds"] = time.perf_counter() - t0
            entry["valid"] = valid
            line += f" eval {entry['eval_seconds']:.1f}s | valid {format_metrics(valid)}"
            if valid[self.metric] > state["best_metric"]:
                state.update(best_metric=valid[self.metric], best_epoch=epoch, bad_evals=0)
                state["best_valid"] = valid
                save_checkpoint(best, self.payload(epoch=epoch, phase=phase))
                line += " *"
            else:
                state["bad_evals"] += 1
        self.history.append(entry)
        self.log(line)
        if (callback := EPOCH_CALLBACK.get()) is not None:
            callback(dict(entry))
        self.save_last(optimizer, epoch)
        with open(self.out_dir / "history.jsonl", "a") as f:  # after last.pt: never ahead of it
            f.write(json.dumps(entry) + "\n")

    def _validate(self) -> dict[str, float]:
        return evaluate(
            self.model, self.dataset, "valid", self.config.eval, progress=self.tc.progress
        )

    def _phase_summary(self, phase: str, best: Path) -> dict[str, Any]:
        mine = [h for h in self.history if h.get("phase", phase) == phase]
        evals = [h["eval_seconds"] for h in mine if "eval_seconds" in h]
        return {
            "phase": phase,
            "best_epoch": self.state["best_epoch"],
            "epochs_run": self.state["epoch"],
            "valid": self.state["best_valid"],
            "seconds_per_epoch": float(np.mean([h["train_seconds"] for h in mine] or [0.0])),
            "eval_seconds": float(np.mean(evals or [0.0])),
            "checkpoint": str(best),
        }


def train_epoch(
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
