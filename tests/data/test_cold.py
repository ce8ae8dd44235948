"""The cold-item split (data/cold.py): items held out with all their interactions."""

from __future__ import annotations

import numpy as np
import pytest

from cadmr.data import DataError
from cadmr.data.cold import cold_item_split, parse_cold_spec
from cadmr.data.leakage import LeakageGuard
from cadmr.data.sources import resolve_dataset


@pytest.fixture(scope="module")
def base():
    return resolve_dataset("synthetic-small")


def _columns_with_data(m) -> set[int]:
    return set(np.flatnonzero(np.diff(m.tocsc().indptr) > 0).tolist())


def test_cold_items_are_disjoint_and_absent_from_training(base):
    cold = cold_item_split(base, 0.2, seed=0)
    valid, test = cold.cold_items["valid"], cold.cold_items["test"]
    assert len(valid) == 80 and len(test) == 80  # 20 % of 800, half each
    assert not set(valid) & set(test)
    assert not _columns_with_data(cold.train) & (set(valid) | set(test))
    assert _columns_with_data(cold.valid) <= set(valid)
    assert _columns_with_data(cold.test) <= set(test)
    # every interaction is kept somewhere (synthetic users all have warm training items)
    total = base.train.nnz + base.valid.nnz + base.test.nnz
    assert cold.train.nnz + cold.valid.nnz + cold.test.nnz == total
    assert cold.name == "synthetic-small@cold=0.2"
    assert cold.describe()["cold_items"] == {"valid": 80, "test": 80}


def test_the_split_is_seeded(base):
    a, b = cold_item_split(base, 0.2, seed=0), cold_item_split(base, 0.2, seed=0)
    assert a.fingerprint() == b.fingerprint()
    other = cold_item_split(base, 0.2, seed=1)
    assert other.fingerprint() != a.fingerprint()
    assert other.name == "synthetic-small@cold=0.2,seed=1"
    assert resolve_dataset("synthetic-small@cold=0.2").fingerprint() == a.fingerprint()
    assert resolve_dataset("synthetic-small@cold=0.2,seed=1").fingerprint() == other.fingerprint()


def test_specs_and_bad_fractions(base):
    assert parse_cold_spec("scientific") is None
    assert parse_cold_spec("scientific@cold=0.25,seed=3") == ("scientific", 0.25, 3)
    for bad in ("x@cold=abc", "x@cold=0.2,seed", "x@cold=0.2,s=1"):
        with pytest.raises(DataError, match="NAME@cold="):
            parse_cold_spec(bad)
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(DataError, match="must be in"):
            cold_item_split(base, fraction)
    with pytest.raises(DataError, match="at least one each"):
        cold_item_split(base, 0.001)


def test_the_guard_knows_the_cold_items(base):
    cold = cold_item_split(base, 0.2, seed=0)
    guard = LeakageGuard(cold)
    expected = np.sort(np.concatenate([cold.cold_items["valid"], cold.cold_items["test"]]))
    np.testing.assert_array_equal(guard.cold_items, expected)
    assert len(LeakageGuard(base).cold_items) == 0


def test_cold_items_with_training_interactions_are_refused(base):
    from cadmr.data.dataset import Dataset

    splits = {"train": base.train, "valid": base.valid, "test": base.test}
    item = int(base.train.indices[0])
    with pytest.raises(DataError, match=f"cold valid item {item} has training interactions"):
        Dataset.build("x", splits, cold_items={"valid": [item]})


def test_describe_counts_the_new_items():
    from cadmr.data.describe import describe_text

    text = describe_text(resolve_dataset("synthetic-small@cold=0.2"))
    assert "new (cold) items, valid" in text and "new (cold) items, test" in text
    assert "new (cold)" not in describe_text(resolve_dataset("synthetic-small"))
