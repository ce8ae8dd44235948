"""Synthetic data: shapes, determinism, the protocol split, and real group signal."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cadmr.data.dataset import SPLITS, Dataset
from cadmr.data.sources import resolve_dataset
from cadmr.data.split import split_counts
from cadmr.data.synthetic import (
    PRESETS,
    SyntheticSpec,
    make_content_planted,
    make_synthetic,
    make_synthetic_with_groups,
    planted_item_groups,
)


def _user_totals(d: Dataset) -> np.ndarray:
    return sum(np.diff(d.split(s).indptr) for s in SPLITS)  # (n_users,)


def test_tiny_builds_with_expected_shapes() -> None:
    spec = PRESETS["tiny"]
    d = make_synthetic("tiny")
    assert d.name == "synthetic-tiny"
    assert (d.n_users, d.n_items) == (spec.n_users, spec.n_items)
    assert d.modalities == dict(spec.modalities)
    for s in SPLITS:
        assert d.split(s).shape == (spec.n_users, spec.n_items)
    for feats in d.features.values():
        assert feats.dtype == np.float32
        assert feats.shape[0] == spec.n_items
        assert np.isfinite(feats).all()
        assert not feats.flags.writeable
    assert d.info["format"] == "synthetic"
    assert d.info["preset"] == "tiny"
    assert d.info["seed"] == 0
    assert d.info["spec"] == dataclasses.asdict(spec)
    assert d.info["cold_users_dropped"] == 0


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = make_synthetic("tiny", seed=3)
    b = make_synthetic("tiny", seed=3)
    c = make_synthetic("tiny", seed=4)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert (a.train != c.train).nnz > 0


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_counts_and_split_follow_the_protocol(preset: str) -> None:
    spec = PRESETS[preset]
    d = make_synthetic(preset, seed=1)
    n = _user_totals(d)
    assert n.min() >= spec.min_user_interactions
    assert n.max() <= spec.max_user_interactions
    assert int(n.sum()) == d.info["interactions_generated"]
    assert abs(int(n.sum()) - spec.n_interactions) <= 0.05 * spec.n_interactions
    train, valid, test = split_counts(n)
    assert np.array_equal(np.diff(d.train.indptr), train)
    assert np.array_equal(np.diff(d.valid.indptr), valid)
    assert np.array_equal(np.diff(d.test.indptr), test)


def test_user_counts_are_skewed() -> None:
    n = _user_totals(make_synthetic("small"))
    assert n.max() >= 3 * np.median(n)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_features_predict_item_groups(preset: str) -> None:
    # Nearest centroid, centroids estimated on the even items, evaluated on the odd ones.
    spec = PRESETS[preset]
    d, _, item_groups = make_synthetic_with_groups(preset, seed=2)
    fit, held = np.arange(0, d.n_items, 2), np.arange(1, d.n_items, 2)
    for mod in d.features:
        x = d.features[mod]  # (n_items, d)
        centroids = np.stack([x[fit][item_groups[fit] == g].mean(0) for g in range(spec.n_groups)])
        dist = ((x[held, None, :] - centroids[None]) ** 2).sum(-1)  # (n_held, G)
        accuracy = (dist.argmin(1) == item_groups[held]).mean()
        assert accuracy >= 0.9, (mod, accuracy, 1 / spec.n_groups)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_training_interactions_mostly_in_own_group(preset: str) -> None:
    spec = PRESETS[preset]
    d, user_groups, item_groups = make_synthetic_with_groups(preset, seed=0)
    assert user_groups.shape == (d.n_users,)
    assert item_groups.shape == (d.n_items,)
    assert set(np.unique(user_groups).tolist()) == set(range(spec.n_groups))
    assert set(np.unique(item_groups).tolist()) == set(range(spec.n_groups))
    coo = d.train.tocoo()
    own = (user_groups[coo.row] == item_groups[coo.col]).mean()
    chance = 1 / spec.n_groups
    assert own >= 0.7
    assert own > chance + 0.5 * (1 - chance)


def test_custom_spec_and_name() -> None:
    spec = SyntheticSpec(
        n_users=30, n_items=20, n_interactions=200, n_groups=2, modalities=[["audio", 8]]
    )
    assert spec.modalities == (("audio", 8),)
    d = make_synthetic(spec, seed=0, name="mine")
    assert d.name == "mine"
    assert d.modalities == {"audio": 8}
    assert d.info["preset"] is None
    assert make_synthetic(spec).name == "synthetic"


def test_unknown_preset() -> None:
    with pytest.raises(KeyError, match="unknown synthetic preset"):
        make_synthetic("nope")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_interactions": 10},  # below n_users x min_user_interactions
        {"n_groups": 50},  # more groups than items
        {"in_group": 1.5},
        {"min_user_interactions": 2},
        {"modalities": (("a", 4), ("a", 8))},
    ],
)
def test_invalid_spec_raises(kwargs: dict) -> None:
    base = {"n_users": 30, "n_items": 20, "n_interactions": 200, "n_groups": 2}
    with pytest.raises(ValueError):
        SyntheticSpec(**{**base, **kwargs})


def test_baby_preset_builds() -> None:
    spec = PRESETS["baby"]
    d = make_synthetic("baby")
    assert (d.n_users, d.n_items) == (19_445, 7_050)
    assert d.modalities == {"text": 384, "image": 4096}
    n = _user_totals(d)
    assert n.min() >= 5
    assert abs(int(n.sum()) - spec.n_interactions) <= 0.02 * spec.n_interactions


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["sports", "elec"])
def test_large_presets_build(preset: str) -> None:
    spec = PRESETS[preset]
    d = make_synthetic(preset)
    assert (d.n_users, d.n_items) == (spec.n_users, spec.n_items)
    n = _user_totals(d)
    assert n.min() >= spec.min_user_interactions
    assert abs(int(n.sum()) - spec.n_interactions) <= 0.02 * spec.n_interactions


# ---------------------------------------------------------------- the planted-signal data


def _planted_checks(d: Dataset, users_per_item: int) -> np.ndarray:
    """Every interaction within a group, each item's training users as asked, held-out
    items unseen in training; returns the item groups."""
    groups = planted_item_groups(d)
    assert groups is not None
    user_groups = np.arange(d.n_users) % d.info["n_groups"]
    for s in SPLITS:
        coo = d.split(s).tocoo()
        assert (user_groups[coo.row] == groups[coo.col]).all(), s
    assert (np.diff(d.train.tocsc().indptr) == users_per_item).all()
    held = d.valid + d.test
    assert d.train.multiply(held).nnz == 0
    return groups


def test_content_planted_shares_no_training_item() -> None:
    d = resolve_dataset("synthetic-content-planted")
    assert d.name == "synthetic-content-planted"
    groups = _planted_checks(d, users_per_item=1)
    assert np.bincount(groups).tolist() == [200] * 4
    assert (d.train @ d.train.T).nnz == d.n_users  # no user shares an item with another
    feats = np.asarray(d.features["text"])
    means = np.stack([feats[groups == g].mean(axis=0) for g in range(4)])
    nearest = np.argmin(((feats[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == groups).mean() > 0.99  # the features reveal every item's group


def test_content_planted_hard_has_two_users_and_noise_for_half_the_items() -> None:
    d = resolve_dataset("synthetic-content-planted-hard")
    groups = _planted_checks(d, users_per_item=2)
    feats = np.asarray(d.features["text"])
    clean = np.asarray(make_content_planted(users_per_item=2).features["text"])
    informative = np.isclose(feats, clean).all(axis=1)
    assert 0.4 < informative.mean() < 0.6
    assert planted_item_groups(make_synthetic("tiny")) is None
    assert len(groups) == d.n_items


@pytest.mark.parametrize(
    "kwargs", [{"users_per_item": 0}, {"users_per_item": 101}, {"uninformative": 1.5}]
)
def test_content_planted_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        make_content_planted(**kwargs)
