"""Process-wide settings a training run makes: torch's thread count and glibc's handling
of freed memory."""

from __future__ import annotations

import ctypes
import os

import torch


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
