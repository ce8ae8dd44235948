"""PairSampler: every training interaction exactly once per epoch, in rng order."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cadmr.models.sampling import PairSampler


def _train() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    dense = (rng.random((12, 9)) < 0.3).astype(np.float32)
    dense[0, :] = 1.0  # a user with every item is fine without negatives
    return sp.csr_matrix(dense)


def test_epoch_covers_each_interaction_once():
    train = _train()
    batches = list(PairSampler(train).epoch(np.random.default_rng(1), batch_size=5))
    users = np.concatenate([b.users.numpy() for b in batches])
    items = np.concatenate([b.items.numpy() for b in batches])
    assert all(len(b.users) <= 5 for b in batches)
    assert len(users) == train.nnz
    got = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=train.shape)
    assert (got != train).nnz == 0  # each pair once (duplicates would sum to 2)


def test_order_follows_the_rng():
    sampler = PairSampler(_train())
    a = next(iter(sampler.epoch(np.random.default_rng(3), 1000)))
    b = next(iter(sampler.epoch(np.random.default_rng(3), 1000)))
    c = next(iter(sampler.epoch(np.random.default_rng(4), 1000)))
    assert np.array_equal(a.users.numpy(), b.users.numpy())
    assert np.array_equal(a.items.numpy(), b.items.numpy())
    assert not np.array_equal(
        a.users.numpy() * 100 + a.items.numpy(), c.users.numpy() * 100 + c.items.numpy()
    )
