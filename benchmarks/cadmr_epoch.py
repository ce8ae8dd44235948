"""Seconds per epoch, FLOPs per epoch and peak memory of CADMR's two phases.

Usage:
    python benchmarks/cadmr_epoch.py [--datasets synthetic-baby lfm2k] [--threads 2]
        [--batch-sizes 64 1024] [--max-batches 8] [--device cuda] [--models cadmr cadmr_paper ...]

For each model (``cadmr``, default; ``cadmr_paper``: the paper's settings; or a variant,
``cadmr:param=value,...``; several are run side by side, interleaved), dataset, phase
(pretrain, finetune) and item batch size, a fresh process builds the dataset and the model
with its defaults, times ``--max-batches`` training steps after one warm-up step and
extrapolates to a full epoch (exact when the epoch has no more batches), counts the
matrix-product FLOPs of one step (``_machine.flop_counter``: sparse products by their
non-zeros), measures the machine's fp32 matmul GFLOP/s in that process right after, and
reports the dense-FLOP time (FLOPs / that rate), the epoch's multiple of it, and the peak
resident memory of that process; a last table sums the two phases into each model's epoch.
The first line states the machine: cores, torch threads, fp32 matmul GFLOP/s and memory GB/s.
With ``--device cuda`` CADMR trains on the GPU and the rates are the GPU's (its dense-FLOP
time is then the GPU's fp32 bound).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np
import torch
from _machine import flop_counter, machine_line, matmul_gflops, peak_rss_gib, sync

from cadmr.data import LeakageGuard
from cadmr.data.sources import resolve_dataset
from cadmr.experiments.compare import parse_label
from cadmr.models.base import batch_to
from cadmr.train.loop import make_optimizer
from cadmr.train.resolve import resolve_run_config
from cadmr.train.runtime import retain_freed_memory
from cadmr.train.trainer import build_model


def measure(
    name: str,
    spec: str,
    phase: str,
    batch_size: int,
    max_batches: int,
    threads: int,
    device: str,
    out: mp.Queue,
):
    torch.set_num_threads(threads)
    retain_freed_memory()  # as the trainer does
    dataset = resolve_dataset(spec)
    model_name, sets, _ = parse_label(name)  # a variant's params as --set arguments
    config = resolve_run_config(
        model_name, spec, sets=sets, extra={"train": {"batch_size": batch_size}}
    )
    model = build_model(config, config.params, dataset)
    model.setup(dataset.train, dataset.features, LeakageGuard(dataset))
    model.to(device)
    model.start_phase(phase)
    optimizer = make_optimizer(model, config.train)
    model.train()
    batches = list(model.batches(np.random.default_rng(0), batch_size))

    def step(batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        model.loss(batch_to(batch, model.device)).backward()
        optimizer.step()

    with flop_counter() as counter:
        step(batches[0])  # also the warm-up
    step_flops = counter.get_total_flops()
    timed = batches[1 : 1 + max_batches] or batches[:1]
    sync(device)
    t0 = time.perf_counter()
    for batch in timed:
        step(batch)
    sync(device)
    per_item = (time.perf_counter() - t0) / sum(len(b.items) for b in timed)
    epoch_s = per_item * dataset.n_items
    epoch_flops = step_flops / len(batches[0].items) * dataset.n_items
    out.put(
        {
            "machine_gflops": matmul_gflops(device=device),
            "model": name,
            "dataset": dataset.name,
            "size": f"{dataset.n_users}x{dataset.n_items}",
            "phase": phase,
            "batch": batch_size,
            "batches": len(batches),
            "timed": len(timed),
            "epoch_s": epoch_s,
            "gflop": epoch_flops / 1e9,
            "gflops": epoch_flops / 1e9 / epoch_s,
            "peak_gib": peak_rss_gib(),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic-baby", "lfm2k"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 1024])
    parser.add_argument("--max-batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (train.device)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["cadmr"],
        help="cadmr, cadmr_paper, or a variant as MODEL:param=value,... (e.g. "
        "cadmr:attention_values=features,attention_neighbours=0)",
    )
    args = parser.parse_args()

    print(machine_line(args.threads, args.device))
    print()
    print(
        "| model | dataset | users x items | phase | item batch | batches/epoch | s/epoch | "
        "GFLOP/epoch | achieved GFLOP/s | machine GFLOP/s | dense-FLOP s | x dense | "
        "peak RSS GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ctx = mp.get_context("spawn")
    epochs: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    runs = [
        (name, spec, phase, batch_size)
        for spec in args.datasets
        for phase in ("pretrain", "finetune")
        for batch_size in args.batch_sizes
        for name in args.models  # the models side by side, interleaved
    ]
    for name, spec, phase, batch_size in runs:
        queue = ctx.Queue()
        proc = ctx.Process(
            target=measure,
            args=(
                name,
                spec,
                phase,
                batch_size,
                args.max_batches,
                args.threads,
                args.device,
                queue,
            ),
        )
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(
                f"| {name} | {spec} | - | {phase} | {batch_size} | failed (exit {proc.exitcode}) |"
            )
            continue
        r = queue.get()
        extrapolated = "" if r["timed"] + 1 >= r["batches"] else "*"
        dense_s = r["gflop"] / r["machine_gflops"]
        key = (name, r["dataset"], batch_size)
        epochs.setdefault(key, []).append((r["epoch_s"], dense_s))
        print(
            f"| {name} | {r['dataset']} | {r['size']} | {r['phase']} | {r['batch']} | "
            f"{r['batches']} | {r['epoch_s']:.1f}{extrapolated} | {r['gflop']:.0f} | "
            f"{r['gflops']:.1f} | {r['machine_gflops']:.0f} | {dense_s:.1f} | "
            f"{r['epoch_s'] / dense_s:.2f} | {r['peak_gib']:.2f} |",
            flush=True,
        )
    print()
    print(
        "| model | dataset | item batch | epoch s (pretrain + finetune) | dense-FLOP s | x dense |"
    )
    print("|---|---|---|---|---|---|")
    for (name, data, batch_size), phases in epochs.items():
        if len(phases) == 2:
            epoch_s, dense_s = (sum(p[i] for p in phases) for i in (0, 1))
            ratio = epoch_s / dense_s
            print(
                f"| {name} | {data} | {batch_size} | {epoch_s:.1f} | {dense_s:.1f} | {ratio:.2f} |"
            )
    print()
    print(f"* extrapolated from {args.max_batches} timed steps after one warm-up step")


if __name__ == "__main__":
    main()
