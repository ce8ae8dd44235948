"""The fused local-kernel weight against the composed torch ops it replaces."""

from __future__ import annotations

import pytest
import torch

import cadmr.models.layers as layers
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


@pytest.mark.parametrize(("block", "columns"), [(1, 2048), (7, 2048), (1 << 18, 2048), (20, 4)])
@pytest.mark.parametrize(("n_in", "n_out"), [(13, 9), (4, 31)])
def test_values_and_gradients_equal_the_composed_ops(monkeypatch, block, columns, n_in, n_out):
    """Every tiling: single entries, row blocks, the whole matrix, and column blocks (4
    columns, 5 rows a tile) with ragged edges."""
    monkeypatch.setattr(layers, "KERNEL_BLOCK_ELEMENTS", block)
    monkeypatch.setattr(layers, "KERNEL_BLOCK_COLUMNS", columns)
    fused_in, ref_in = _inputs(n_in, n_out), _inputs(n_in, n_out)
    fused, ref = KernelWeight.apply(*fused_in), _composed(*ref_in)
    k = local_kernel(*ref_in[1:]).detach()
    assert 0.2 < (k == 0).double().mean() < 0.8  # both sides of the clamp are exercised
    gen = torch.Generator().manual_seed(1)
    g_out = torch.randn(n_in, n_out, generator=gen, dtype=torch.float64)
    for outs in (fused, ref):
        loss = (outs[0] * g_out).sum() + 0.3 * outs[1] + 0.7 * outs[2]
        loss.backward()
    for a, b in zip(fused, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(fused_in, ref_in, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_gradcheck(monkeypatch):
    monkeypatch.setattr(layers, "KERNEL_BLOCK_ELEMENTS", 10)
    monkeypatch.setattr(layers, "KERNEL_BLOCK_COLUMNS", 3)
    assert torch.autograd.gradcheck(KernelWeight.apply, _inputs(6, 5))


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
