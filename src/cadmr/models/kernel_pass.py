"""The local-kernel weight pass (``layers.KernelWeight``) as compiled CPU loops.

Composed from torch ops, even in cache-sized tiles, the pass runs a chain of elementwise
ops per tile (factor product, clamp, product with ``W``, squares; in backward two products,
two fused multiply-adds, the clamp's mask and two skinny products), each reading and
writing the tile again. Here a row segment's kernel values go to an L1-sized buffer and
one loop does the rest, so the (n_in, n_out) matrices are read and written once: forward
reads ``W`` and writes ``W * k``; backward reads ``W`` and the output gradient and writes
``W``'s gradient, and the row and column sums for the factors' gradients accumulate on
the way.
On a Baby-size layer (500 x 19,445, one thread) forward and backward take about 50 ms
instead of 100 (docs/scaling.md).

The loops are compiled by numba on first use (about 8 s per dtype, then cached on disk).
Work is split into ``PARTS`` fixed parts, along the rows or the columns whichever is
longer; each part keeps its own partial sums and they are added in part order, so results
do not depend on the number of threads. Numba runs the parts on its fork-safe thread pool
(a process that used GNU OpenMP aborts at ``fork``) with torch's thread count.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
import torch
from numba import prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba picks GNU OpenMP where it is present, and a child forked after it ran aborts
    # (multiprocessing's default start method on Linux forks)
    numba.config.THREADING_LAYER = "forksafe"

PARTS = 8  # fixed, so that sums are added in the same order with any number of threads
TILE = 1024  # columns of a row segment: its kernel values stay in L1 cache

DTYPES = (torch.float32, torch.float64)

# the fork-safe pool takes one caller at a time and aborts the process on a second: calls
# from several Python threads (a threaded server scoring requests) wait here instead
_POOL = threading.Lock()


def supports(weight: torch.Tensor) -> bool:
    """Whether the compiled pass can take this weight: CPU, float32 or float64."""
    return weight.device.type == "cpu" and weight.dtype in DTYPES


@numba.njit(cache=True)
def _bounds(part, n):
    """Start and end of one of ``PARTS`` near-equal parts of ``range(n)``."""
    step = (n + PARTS - 1) // PARTS
    return min(n, part * step), min(n, (part + 1) * step)


@numba.njit(cache=True)
def _part(part, n_in, n_out, by_rows):
    """(first row, end row, first column, end column) of one part of an (n_in, n_out) walk
    split along its rows or its columns."""
    if by_rows:
        r0, r1 = _bounds(part, n_in)
        return r0, r1, 0, n_out
    c0, c1 = _bounds(part, n_out)
    return 0, n_in, c0, c1


@numba.njit(inline="always")
def _pre_row(pre, base, cv, v2, u_row, c0, c1):
    """pre[j] = 1 - |u_i|^2 - |v_j|^2 + 2 u_i.v_j for columns c0..c1 of one row."""
    n = c1 - c0
    cvt = cv[c0:c1]
    for j in range(n):
        pre[j] = base + cvt[j]
    for q in range(u_row.shape[0]):
        uq = u_row[q]
        vq = v2[q, c0:c1]
        for j in range(n):
            pre[j] += uq * vq[j]


@numba.njit(parallel=True, fastmath=True, cache=True)
def _forward(w, u, cu, v2, cv, out, by_rows, zero, one):
    n_in, n_out = w.shape
    sums = np.zeros((PARTS, 2))
    for p_ in prange(PARTS):
        p = np.int64(p_)  # prange's index is unsigned, and mixed arithmetic gives floats
        pre = np.empty(TILE, dtype=w.dtype)
        r0, r1, c_lo, c_hi = _part(p, n_in, n_out, by_rows)
        sq_w = 0.0
        sq_k = 0.0
        for c0 in range(c_lo, c_hi, TILE):
            c1 = min(c_hi, c0 + TILE)
            for i in range(r0, r1):
                _pre_row(pre, cu[i], cv, v2, u[i], c0, c1)
                w_row = w[i, c0:c1]
                out_row = out[i, c0:c1]
                row_w = zero
                row_k = zero
                for j in range(c1 - c0):
                    k = min(max(pre[j], zero), one)
                    x = w_row[j]
                    out_row[j] = x * k
                    row_w += x * x
                    row_k += k * k
                sq_w += row_w
                sq_k += row_k
        sums[p, 0] = sq_w
        sums[p, 1] = sq_k
    return sums


@numba.njit(parallel=True, fastmath=True, cache=True)
def _backward(
    w, g, u, cu, v2, cv, two_gw, two_gk, d_weight, row_parts, col_parts, by_rows, zero, one
):
    n_in, n_out = w.shape
    d = u.shape[1]
    for p_ in prange(PARTS):
        p = np.int64(p_)
        pre = np.empty(TILE, dtype=w.dtype)
        a = np.empty(TILE, dtype=w.dtype)
        r0, r1, c_lo, c_hi = _part(p, n_in, n_out, by_rows)
        # the part's own partial sums where other parts cover the same rows or columns
        row_acc = row_parts[0 if by_rows else p]
        col_acc = col_parts[p if by_rows else 0]
        for c0 in range(c_lo, c_hi, TILE):
            c1 = min(c_hi, c0 + TILE)
            n = c1 - c0
            for i in range(r0, r1):
                _pre_row(pre, cu[i], cv, v2, u[i], c0, c1)
                w_row = w[i, c0:c1]
                g_row = g[i, c0:c1]
                dw_row = d_weight[i, c0:c1]
                total = zero
                for j in range(n):
                    x = pre[j]
                    k = min(max(x, zero), one)
                    gj = g_row[j]
                    wj = w_row[j]
                    dw_row[j] = two_gw * wj + gj * k
                    # dL/dpre; no gradient where the clamp is flat, nor on its bounds
                    aj = (two_gk * k + gj * wj) if (x > zero and x < one) else zero
                    a[j] = aj
                    total += aj
                row_acc[i, d] += total
                for q in range(d):
                    vq = v2[q, c0:c1]
                    t = zero
                    for j in range(n):
                        t += a[j] * vq[j]
                    row_acc[i, q] += t
                    uq = u[i, q]
                    cq = col_acc[q, c0:c1]
                    for j in range(n):
                        cq[j] += uq * a[j]
                cd = col_acc[d, c0:c1]
                for j in range(n):
                    cd[j] += a[j]


def _factors(u: torch.Tensor, v: torch.Tensor):
    """numpy views of u, 1 - |u_i|^2, 2 v^T (d, n_out) and -|v_j|^2."""
    u = u.detach().contiguous()
    v = v.detach()
    cu = 1.0 - u.pow(2).sum(1)
    v2 = (2.0 * v).T.contiguous()
    cv = -v.pow(2).sum(1)
    return u.numpy(), cu.numpy(), v2.numpy(), cv.numpy()


def _threads() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def forward(
    weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W * k, sum W^2, sum k^2)``, as ``KernelWeight.forward``."""
    w = weight.detach().contiguous()
    out = torch.empty_like(w)
    scalar = w.numpy().dtype.type
    with _POOL:
        _threads()
        sums = _forward(w.numpy(), *_factors(u, v), out.numpy(), _by_rows(w), scalar(0), scalar(1))
    sq_w, sq_k = sums.sum(0)
    return out, w.new_tensor(sq_w), w.new_tensor(sq_k)


def backward(
    weight: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    g_out: torch.Tensor,
    two_gw: float,
    two_gk: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``W``, ``u`` and ``v`` given the output's gradient and twice the
    penalties' gradients, as ``KernelWeight.backward``."""
    w = weight.detach().contiguous()
    g = g_out.detach().contiguous()
    n_in, n_out = w.shape
    d = u.shape[1]
    by_rows = _by_rows(w)
    d_weight = torch.empty_like(w)
    row_parts = w.new_zeros(1 if by_rows else PARTS, n_in, d + 1)
    col_parts = w.new_zeros(PARTS if by_rows else 1, d + 1, n_out)
    u_np, cu, v2, cv = _factors(u, v)
    scalar = u_np.dtype.type
    with _POOL:
        _threads()
        _backward(
            w.numpy(), g.numpy(), u_np, cu, v2, cv, scalar(two_gw), scalar(two_gk),
            d_weight.numpy(), row_parts.numpy(), col_parts.numpy(), by_rows, scalar(0),
            scalar(1),
        )  # fmt: skip
    row_acc, col_acc = row_parts.sum(0), col_parts.sum(0)
    u_, v_ = u.detach(), v.detach()
    # row_acc holds sum_j a_ij (2 v_j) and sum_j a_ij; col_acc sum_i a_ij u_i and sum_i a_ij
    d_u = row_acc[:, :d] - 2.0 * u_ * row_acc[:, d:]
    d_v = 2.0 * (col_acc[:d].T - v_ * col_acc[d, :, None])
    return d_weight, d_u, d_v


def _by_rows(w: torch.Tensor) -> bool:
    return w.shape[0] >= w.shape[1]
