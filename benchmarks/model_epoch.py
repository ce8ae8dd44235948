"""Seconds per epoch, evaluation seconds and peak memory of every registered model.

Usage:
    python benchmarks/model_epoch.py [--models lightgcn dragon ...] \
        [--datasets lfm2k synthetic-baby] [--threads 2] [--max-batches 5] [--device cuda]

For each dataset and model (default parameters and batch size), a fresh process builds the
dataset and the model, times its set-up (graphs, adjacency), then for each training phase
times ``--max-batches`` optimisation steps after one warm-up step and extrapolates to the
epoch's batch count (exact when the epoch has no more batches; ``--max-batches 0`` trains
the whole epoch: the warm-up step plus every other batch), times one full evaluation of
the validation split (every user ranked against every item), and reports the process's
peak resident memory and the fp32 matmul GFLOP/s measured in that process afterwards,
under the load the row ran with. The first line states the machine: cores, torch threads,
the matmul GFLOP/s and memory GB/s at the start. FLOPs per epoch are one step's
matrix-product FLOPs (sparse products counted by their non-zeros;
``_machine.flop_counter``), measured on the second batch (the first carries per-epoch work
such as LATTICE's graph rebuild, which the timing leaves out too), times the batches per
epoch, so "achieved GFLOP/s" reads directly against the machine's. Models that need
features are skipped on data without any. With ``--device cuda`` gradient-trained models
train and rank on the GPU (``train.device``), the matmul rates are the GPU's, and a last
column gives the peak GPU memory.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np
import torch
from _machine import (
    flop_counter,
    machine_line,
    matmul_gflops,
    peak_device_gib,
    peak_rss_gib,
    sync,
)

from cadmr.data import LeakageGuard
from cadmr.data.sources import resolve_dataset
from cadmr.eval.protocol import evaluate
from cadmr.models import MODELS, ClosedFormRecommender
from cadmr.models.base import batch_to
from cadmr.train.loop import make_optimizer
from cadmr.train.resolve import resolve_run_config
from cadmr.train.runtime import retain_freed_memory
from cadmr.train.trainer import build_model


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: object) -> None:
    optimizer.zero_grad(set_to_none=True)
    model.loss(batch_to(batch, model.device)).backward()
    optimizer.step()


def measure(
    spec: str, name: str, max_batches: int, threads: int, device: str, out: mp.Queue
) -> None:
    torch.set_num_threads(threads)
    retain_freed_memory()  # as the trainer does
    dataset = resolve_dataset(spec)
    if MODELS[name].needs_features and not dataset.modalities:
        out.put({"skipped": True})
        return
    config = resolve_run_config(name, spec)
    model = build_model(config, config.params, dataset)
    t0 = time.perf_counter()
    model.setup(dataset.train, dataset.features, LeakageGuard(dataset))
    if isinstance(model, ClosedFormRecommender):
        model.fit()
    else:
        model.to(device)
    sync(device)
    setup_s = time.perf_counter() - t0
    epochs: list[str] = []
    if not isinstance(model, ClosedFormRecommender):
        for phase in model.phases():
            model.start_phase(phase)
            optimizer = make_optimizer(model, config.train)
            model.train()
            batches = list(model.batches(np.random.default_rng(0), config.train.batch_size))

            step(model, optimizer, batches[0])  # warm-up; LATTICE rebuilds its graph here
            with flop_counter() as counter:  # a batch like every other of the epoch
                step(model, optimizer, batches[1] if len(batches) > 1 else batches[0])
            timed = (batches[1 : 1 + max_batches] if max_batches else batches[1:]) or batches[:1]
            sync(device)
            t0 = time.perf_counter()
            for batch in timed:
                step(model, optimizer, batch)
            sync(device)
            epoch_s = (time.perf_counter() - t0) / len(timed) * len(batches)
            gflop = counter.get_total_flops() * len(batches) / 1e9
            mark = "" if len(timed) + 1 >= len(batches) else "*"
            epochs.append(
                f"{phase} {epoch_s:.1f}{mark} ({len(batches)}) {gflop:.3g} GFLOP "
                f"{gflop / epoch_s:.3g} GFLOP/s"
            )
        model.eval()
    t0 = time.perf_counter()
    evaluate(model, dataset, "valid", config.eval)
    eval_s = time.perf_counter() - t0
    out.put(
        {
            "dataset": dataset.name,
            "size": f"{dataset.n_users}x{dataset.n_items}",
            "model": name,
            "setup_s": setup_s,
            "epochs": "; ".join(epochs) or "closed form",
            "eval_s": eval_s,
            "peak_gib": peak_rss_gib(),
            "peak_device_gib": peak_device_gib(device),
            "machine_gflops": matmul_gflops(device=device),  # in this process, same load
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=sorted(MODELS))
    parser.add_argument("--datasets", nargs="+", default=["lfm2k", "synthetic-baby"])
    parser.add_argument(
        "--max-batches", type=int, default=5, help="timed steps per phase; 0: the whole epoch"
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (train.device)")
    args = parser.parse_args()
    gpu = args.device != "cpu"

    print(machine_line(args.threads, args.device))
    print()
    print(
        "| dataset | users x items | model | set-up s | per phase: s/epoch (batches) "
        "GFLOP/epoch achieved GFLOP/s | eval s (valid) | peak RSS GiB | machine GFLOP/s |"
        + (" peak GPU GiB |" if gpu else "")
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    ctx = mp.get_context("spawn")
    for spec in args.datasets:
        for name in args.models:
            queue = ctx.Queue()
            proc = ctx.Process(
                target=measure,
                args=(spec, name, args.max_batches, args.threads, args.device, queue),
            )
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                print(f"| {spec} | - | {name} | failed (exit {proc.exitcode}) | | | |", flush=True)
                continue
            r = queue.get()
            if r.get("skipped"):  # needs features the dataset does not have
                continue
            print(
                f"| {r['dataset']} | {r['size']} | {r['model']} | {r['setup_s']:.1f} | "
                f"{r['epochs']} | {r['eval_s']:.1f} | {r['peak_gib']:.2f} | "
                f"{r['machine_gflops']:.0f} |"
                + (f" {r['peak_device_gib'] or 0:.2f} |" if gpu else ""),
                flush=True,
            )
    print()
    if args.max_batches:
        print(f"* extrapolated from {args.max_batches} timed steps after one warm-up step")


if __name__ == "__main__":
    main()
