"""ShuffledBatches: one epoch of index chunks, sized for the trainer's progress bar."""

from __future__ import annotations

import numpy as np
import pytest

from cadmr.models.sampling import ShuffledBatches


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (9, 3), (1, 5), (0, 4), (7, 1)])
def test_length_is_the_number_of_batches_and_each_index_comes_once(n, batch_size):
    batches = ShuffledBatches(n, batch_size, np.random.default_rng(0), lambda idx: idx)
    got = list(batches)
    assert len(batches) == len(got)
    assert all(len(b) <= batch_size for b in got)
    assert sorted(np.concatenate(got).tolist() if got else []) == list(range(n))


def test_order_is_drawn_from_the_rng_when_iteration_starts():
    rng = np.random.default_rng(3)
    batches = ShuffledBatches(20, 6, rng, lambda idx: idx)
    expected = np.random.default_rng(3).permutation(20)
    np.testing.assert_array_equal(np.concatenate(list(batches)), expected)
    assert np.concatenate(list(batches)).dtype == np.int64
    # a second pass is a new epoch: the generator has moved on
    assert not np.array_equal(np.concatenate(list(batches)), expected)


def test_rejects_a_batch_size_below_one():
    with pytest.raises(ValueError, match="batch size"):
        ShuffledBatches(5, 0, np.random.default_rng(0), lambda idx: idx)
