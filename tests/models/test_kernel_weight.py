"""The fused local-kernel weight against the composed torch ops it replaces: the compiled
CPU loops (``kernel_pass``) and the torch tiles that other devices use."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import cadmr.models.layers as layers
from cadmr.models import kernel_pass
from cadmr.models.layers import KernelWeight, LocalKernelLayer, local_kernel


def _inputs(n_in, n_out, d=5, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_in, n_out, generator=gen, dtype=dtype)
    # spread so that about half the kernel entries clamp to 0 and the rest lie inside (0, 1)
    u = 0.3 * torch.randn(n_in, d, generator=gen, dtype=dtype)
    v = 0.3 * torch.randn(n_out, d, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (weight, u, v)]


def _composed(weight, u, v):
    k = local_kernel(u, v)
    return weight * k, weight.pow(2).sum(), k.pow(2).sum()


def _assert_equals_composed(n_in, n_out, dtype=torch.float64, tol=(1e-10, 1e-12)):
    ref_in = _inputs(n_in, n_out)
    fused_in = [t.detach().to(dtype).requires_grad_() for t in ref_in]
    fused, ref = KernelWeight.apply(*fused_in), _composed(*ref_in)
    k = local_kernel(*ref_in[1:]).detach()
    assert 0.1 < (k == 0).double().mean() < 0.9  # both sides of the clamp are exercised
    gen = torch.Generator().manual_seed(1)
    g_out = torch.randn(n_in, n_out, generator=gen, dtype=torch.float64)
    for outs, g in ((fused, g_out.to(dtype)), (ref, g_out)):
        loss = (outs[0] * g).sum() + 0.3 * outs[1] + 0.7 * outs[2]
        loss.backward()
    rtol, atol = tol
    for a, b in zip(fused, ref, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol)
    for a, b in zip(fused_in, ref_in, strict=True):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=rtol, atol=atol)


@pytest.fixture
def torch_walk(monkeypatch):
    """KernelWeight through the torch tiles, as on devices other than the CPU."""
    monkeypatch.setattr(layers, "COMPILED_CPU_PASS", False)


@pytest.mark.usefixtures("torch_walk")
@pytest.mark.parametrize(("block", "columns"), [(1, 2048), (7, 2048), (1 << 18, 2048), (20, 4)])
@pytest.mark.parametrize(("n_in", "n_out"), [(13, 9), (4, 31)])
def test_torch_tiles_equal_the_composed_ops(monkeypatch, block, columns, n_in, n_out):
    """Every tiling: single entries, row blocks, the whole matrix, and column blocks (4
    columns, 5 rows a tile) with ragged edges."""
    monkeypatch.setattr(layers, "KERNEL_BLOCK_ELEMENTS", block)
    monkeypatch.setattr(layers, "KERNEL_BLOCK_COLUMNS", columns)
    _assert_equals_composed(n_in, n_out)


@pytest.mark.parametrize(
    ("n_in", "n_out"),
    # parts of rows (some empty: 13 rows in 8 parts of 2), parts of columns; a part of
    # 1,125 columns walks a full and a ragged 1,024-column segment
    [(13, 9), (4, 31), (1, 40), (40, 1), (2, 9000), (2100, 3)],
)
def test_compiled_loops_equal_the_composed_ops(n_in, n_out):
    assert layers._compiled(_inputs(1, 1)[0])
    _assert_equals_composed(n_in, n_out)


def test_compiled_loops_in_float32_match_float64():
    # float32 rounding only; the sums of squares accumulate in float64
    _assert_equals_composed(40, 300, dtype=torch.float32, tol=(1e-4, 1e-5))


def test_compiled_loops_give_the_same_bits_with_any_number_of_threads():
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            w, u, v = _inputs(300, 2000, dtype=torch.float32)
            outs = KernelWeight.apply(w, u, v)
            (outs[0].sum() + outs[1] + outs[2]).backward()
            results.append([t.detach() for t in outs] + [w.grad, u.grad, v.grad])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("walk", ["compiled", "torch"])
def test_gradcheck(monkeypatch, walk):
    monkeypatch.setattr(layers, "COMPILED_CPU_PASS", walk == "compiled")
    monkeypatch.setattr(layers, "KERNEL_BLOCK_ELEMENTS", 10)
    monkeypatch.setattr(layers, "KERNEL_BLOCK_COLUMNS", 3)
    assert torch.autograd.gradcheck(KernelWeight.apply, _inputs(6, 5))
    assert torch.autograd.gradcheck(KernelWeight.apply, _inputs(3, 11))


def test_compiled_loops_take_only_cpu_floats():
    assert kernel_pass.supports(torch.zeros(2, 2))
    assert kernel_pass.supports(torch.zeros(2, 2, dtype=torch.float64))
    assert not kernel_pass.supports(torch.zeros(2, 2, dtype=torch.bfloat16))
    assert not kernel_pass.supports(torch.zeros(2, 2, device="meta"))


def test_unused_outputs_get_no_gradient_contribution():
    fused_in, ref_in = _inputs(5, 4), _inputs(5, 4)
    KernelWeight.apply(*fused_in)[0].sum().backward()  # the penalties are not used
    _composed(*ref_in)[0].sum().backward()
    for a, b in zip(fused_in, ref_in, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_layer_shares_one_fused_pass_per_step(monkeypatch):
    layer = LocalKernelLayer(6, 4)
    calls = []
    real = KernelWeight.apply

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(KernelWeight, "apply", counting)
    with layers.shared_kernels([layer]):
        layer(torch.ones(2, 6))
        layer.penalties()
    assert len(calls) == 1


_CONCURRENT_CALLS = """
import threading, torch
from cadmr.models import kernel_pass
torch.set_num_threads(2)
w, u, v = torch.randn(300, 2000), 0.3 * torch.randn(300, 5), 0.3 * torch.randn(2000, 5)
expected = kernel_pass.forward(w, u, v)[0]
results = []
def call():
    for _ in range(20):
        results.append(torch.equal(kernel_pass.forward(w, u, v)[0], expected))
threads = [threading.Thread(target=call) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert results == [True] * 80
"""


def test_compiled_loops_take_calls_from_several_python_threads():
    # numba's fork-safe pool aborts the whole process on a concurrent second caller, so
    # this runs in its own process
    proc = subprocess.run(
        [sys.executable, "-c", _CONCURRENT_CALLS], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
