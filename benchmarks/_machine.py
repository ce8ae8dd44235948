"""What every benchmark table states first: the machine and its measured matmul speed."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from collections.abc import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

import cadmr.models.layers as layers

# named datasets (lfm2k, baby, ...) come from $CADMR_DATA_DIR; by default the team's folder
# beside the checkout (the library itself would look in ./data)
os.environ.setdefault(
    "CADMR_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
)


def sync(device: str | torch.device = "cpu") -> None:
    """Wait for the device's queued work (a GPU runs asynchronously), so a clock read after
    it counts that work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(n: int = 2048, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Measured fp32 GFLOP/s of an n x n matmul with the current torch threads (on a GPU:
    torch's fp32 default, TF32 off)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def memory_gbps(mib: int = 256, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Measured memory bandwidth in GB/s with the current torch threads: ``c = a + 2 b`` over
    float32 vectors of ``mib`` MiB each (two reads and a write per element, STREAM's triad),
    far larger than any cache. The elementwise passes, the optimiser and skinny products of
    a step run at this rate, not at the matmul rate."""
    n = mib * 2**20 // 4
    a, b, c = (torch.ones(n, device=device) for _ in range(3))
    torch.add(a, b, alpha=2.0, out=c)  # warm-up: pages touched
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.add(a, b, alpha=2.0, out=c)
    sync(device)
    return 3 * 4 * n * repeats / (time.perf_counter() - t0) / 1e9


def machine_line(threads: int, device: str | torch.device = "cpu") -> str:
    """One line: processor, cores, torch version and threads, measured fp32 GFLOP/s and
    memory GB/s; on a GPU, its name and its fp32 GFLOP/s and memory GB/s instead."""
    torch.set_num_threads(threads)
    line = (
        f"machine: {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, {threads} threads"
    )
    device = torch.device(device)
    if device.type == "cuda":
        line += f", {torch.cuda.get_device_name(device)}"
    return (
        line + f", fp32 matmul {matmul_gflops(device=device):.0f} GFLOP/s"
        f", memory {memory_gbps(device=device):.0f} GB/s (triad)"
    )


def peak_device_gib(device: str | torch.device) -> float | None:
    """Peak memory torch allocated on a GPU so far, in GiB; None on the CPU."""
    device = torch.device(device)
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, in GiB: Linux's VmHWM, the high-water
    mark of this process's own address space. ``ru_maxrss`` is not that: a spawned process
    inherits its parent's peak at fork time (0.71 GiB for every small-dataset row while the
    parent held a larger dataset), so it is only the fallback off Linux (there in KiB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _nnz(t: torch.Tensor) -> int:
    return int(t._nnz()) if t.layout != torch.strided else t.numel()


def _product_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    """2 x multiply-adds of ``a @ b``: a sparse operand contributes its non-zeros only."""
    if a.layout != torch.strided:
        return 2 * _nnz(a) * b.shape[-1]
    if b.layout != torch.strided:
        return 2 * _nnz(b) * a.shape[0]
    return 2 * a.shape[0] * a.shape[1] * b.shape[-1]


def _mm(a, b, *args, out_val=None, **kwargs) -> int:
    return _product_flops(a, b)


def _addmm(bias, a, b, *args, out_val=None, **kwargs) -> int:
    return _product_flops(a, b)


for _f in (_mm, _addmm):
    _f._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode passes the tensors


@contextlib.contextmanager
def flop_counter() -> Iterator[FlopCounterMode]:
    """torch's FlopCounterMode with matrix products counted by their operands' non-zeros:
    torch counts ``sparse @ dense`` as if the sparse operand were dense. Elementwise ops,
    gathers and reductions count 0 (memory-bound; they cost time but no matmul FLOPs).
    Inside, the local-kernel pass takes its torch walk, whose kernel-factor products torch
    sees (the compiled CPU loops compute the same products out of its sight), so the count
    does not depend on which walk the timed steps take."""
    aten = torch.ops.aten
    mapping = {aten.mm: _mm, aten.addmm: _addmm, aten._sparse_addmm: _addmm}
    compiled = layers.COMPILED_CPU_PASS
    layers.COMPILED_CPU_PASS = False
    try:
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            yield counter
    finally:
        layers.COMPILED_CPU_PASS = compiled
