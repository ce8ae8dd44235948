"""Models that project each distinct item of a batch once (layers.distinct_rows, issue 22)
compute the same loss and gradients as projecting every row of the batch."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from cadmr.data import LeakageGuard
from cadmr.models import get_model_class, layers
from cadmr.testing import small_dataset


def every_row(*index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The slow path: every entry its own row, no deduplication."""
    rows = torch.cat(index)
    return rows, list(torch.arange(len(rows)).split([len(i) for i in index]))


def test_distinct_rows_recovers_every_index():
    a, b = torch.tensor([4, 1, 4, 9]), torch.tensor([1, 1, 7])
    distinct, (at_a, at_b) = layers.distinct_rows(a, b)
    assert distinct.tolist() == [1, 4, 7, 9]
    assert torch.equal(distinct[at_a], a) and torch.equal(distinct[at_b], b)


@pytest.mark.parametrize("name", ["vbpr", "freedom", "bm3"])
def test_loss_and_gradients_match_the_per_row_projection(name, monkeypatch):
    data = small_dataset()
    cls = get_model_class(name)
    module = importlib.import_module(cls.__module__)

    def loss_and_grads():
        torch.manual_seed(0)
        model = cls(cls.params_cls(embedding_size=8), data.n_users, data.n_items, data.modalities)
        model.setup(data.train, data.features, LeakageGuard(data))
        model.train()
        batch = next(iter(model.batches(np.random.default_rng(0), 64)))
        torch.manual_seed(1)  # the same dropout draws (BM3's target view) on both paths
        loss = model.loss(batch)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    fast, fast_grads = loss_and_grads()
    monkeypatch.setattr(module, "distinct_rows", every_row)
    slow, slow_grads = loss_and_grads()
    torch.testing.assert_close(fast, slow)
    assert fast_grads.keys() == slow_grads.keys() and any("projection" in n for n in fast_grads)
    for n in fast_grads:
        torch.testing.assert_close(fast_grads[n], slow_grads[n], msg=n)
