"""Fixtures shared by the model tests; the data and model builders are ``cadmr.testing``'s."""

from __future__ import annotations

import pytest

from cadmr.data import Dataset
from cadmr.testing import small_dataset


@pytest.fixture(scope="module")
def data2(request: pytest.FixtureRequest) -> Dataset:
    """The first two of the test module's ``MODALITIES`` on 30 users x 24 items."""
    return small_dataset(request.module.MODALITIES[:2], n_items=24, n_interactions=240)
