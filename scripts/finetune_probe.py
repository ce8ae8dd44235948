"""Probe CADMR's fine-tuning phase (docs/cadmr.md, "A ranking loss for fine-tuning"): start
every variant from the same pretrained autoencoder (a run's ``best-pretrain.pt``), fine-tune
it for a few epochs with some parameters changed and a chosen set of parameters trained,
and print validation Recall@20 after each epoch and the test metrics of the best epoch.
Much faster than whole runs: the pretraining phase is shared. Usage:

    .venv/bin/python scripts/finetune_probe.py scientific \\
        runs/table/scientific/cadmr-seed0/best-pretrain.pt --epochs 6 \\
        --variant default --variant rank finetune_loss=ranking \\
        --variant rank-ae finetune_loss=ranking finetune_autoencoder=true train=autoencoder

A variant is a name and KEY=VALUE settings of ``CADMRParams`` (YAML values), plus
``train=multimodal|attention|autoencoder`` (which parameters the optimizer gets: everything
the run's phase would train, the attention with the extractors and fusion, or the
autoencoder alone) and ``lr=...`` (default 1e-3).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import yaml

from cadmr.config import EvalConfig, TrainConfig
from cadmr.data import LeakageGuard
from cadmr.data.sources import resolve_dataset
from cadmr.eval.protocol import evaluate
from cadmr.models.cadmr import CADMR, CADMRParams
from cadmr.models.kernel_ae import paper_adam
from cadmr.train.checkpoint import load_checkpoint
from cadmr.train.loop import train_epoch


def optimizer_for(model: CADMR, which: str, tc: TrainConfig) -> torch.optim.Optimizer:
    """The fine-tuning phase's optimizer (``model.make_optimizer``: what a run trains), or
    the same Adam over the attention with the extractors and fusion, or the autoencoder."""
    if which == "multimodal":
        return model.make_optimizer(tc)
    if which == "autoencoder":
        params = [p for layer in model.kernel_layers() for p in layer.parameters()]
    else:
        params = [
            *model.attention.parameters(),
            *model.extractors.parameters(),
            *model.fusion.parameters(),
        ]
    return paper_adam(params, tc.learning_rate, tc.weight_decay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("checkpoint", help="a CADMR run's best-pretrain.pt")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--variant", nargs="+", action="append", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = resolve_dataset(args.dataset)
    ck = load_checkpoint(args.checkpoint)
    saved = CADMR.saved_params(ck["params"])
    for name, *settings in args.variant:
        over = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in settings)}
        which, lr = over.pop("train", "multimodal"), float(over.pop("lr", 1e-3))
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
        torch.manual_seed(0)
        model = CADMR(
            CADMRParams(**{**params, **over}), data.n_users, data.n_items, data.modalities
        )
        model.setup(data.train, data.features, LeakageGuard(data))
        model.start_phase("pretrain")
        model.load_state(ck["model_state"])
        model.start_phase("finetune")
        batch_size = ck["config"]["train"]["batch_size"]
        tc = TrainConfig(batch_size=batch_size, learning_rate=lr, progress=False)
        optimizer = optimizer_for(model, which, tc)
        rng, ev = np.random.default_rng(0), EvalConfig()
        model.eval()
        best = evaluate(model, data, "valid", ev)["recall@20"]
        state, curve, t0 = copy.deepcopy(model.state_dict()), [], time.perf_counter()
        for epoch in range(args.epochs):
            train_epoch(model, optimizer, rng, tc, f"{name} {epoch}")
            model.eval()
            curve.append(evaluate(model, data, "valid", ev)["recall@20"])
            if curve[-1] > best:
                best, state = curve[-1], copy.deepcopy(model.state_dict())
        model.load_state(state)
        test = evaluate(model, data, "test", ev)
        print(
            f"{name}: best valid R@20 {best:.4f}, its test R@20 {test['recall@20']:.4f} "
            f"NDCG@10 {test['ndcg@10']:.4f} ({time.perf_counter() - t0:.0f} s) | per epoch "
            + " ".join(f"{v:.4f}" for v in curve),
            flush=True,
        )


if __name__ == "__main__":
    main()
