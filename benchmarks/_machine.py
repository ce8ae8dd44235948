"""What every benchmark table states first: the machine and its measured matmul speed."""

from __future__ import annotations

import os
import platform
import resource
import time

import torch


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 GFLOP/s of an n x n matmul with the current torch threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def machine_line(threads: int) -> str:
    """One line: processor, cores, torch version and threads, measured fp32 GFLOP/s."""
    torch.set_num_threads(threads)
    return (
        f"machine: {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, "
        f"{threads} threads, fp32 matmul {matmul_gflops():.0f} GFLOP/s"
    )


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, in GiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
