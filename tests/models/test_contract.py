"""The shared model contract (docs/conventions.md), run against every registered model.

The checks live in ``cadmr.testing.ModelContract``; a model added to the registry is tested
here automatically: score shape and finiteness, determinism per seed, a training step lowers
the loss, checkpoint round trip, the leakage guard on its input, and a known-answer task it
must solve. A toy model defined below, outside the registry, shows that the kit serves a
user's own model as well.

The GPU checks run only where torch sees a CUDA GPU (CI has none; a session lent a GPU
machine runs ``pytest tests/models/test_contract.py -k gpu``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from cadmr.data import LeakageGuard
from cadmr.models import MODELS
from cadmr.models.base import TorchRecommender
from cadmr.models.layers import bpr_loss
from cadmr.models.sampling import ShuffledBatches, TripletBatch, TripletSampler
from cadmr.testing import ModelContract, check_contract, registered

# small batches and a large learning rate: enough steps on the tiny known-answer data
SMALL_STEPS = {"epochs": 60, "batch_size": 8, "learning_rate": 0.01, "patience": 20}
SMALL_MM = {"latent_dim": 16, "modality_dim": 8, "extractor_hidden": 16}  # CADMR's blocks

# Per-model training settings for the known-answer task (KNOWN_ANSWER_DEFAULT otherwise).
KNOWN_ANSWER_SETTINGS: dict[str, dict] = {
    # 30 items are 30 training examples for the item autoencoder: a small network, and the
    # positive weight of dense data (each user has half a group's items; the grid's 10)
    "kernel_ae": {"params": {"hidden": [32, 32], "pos_weight": 10.0}, "train": SMALL_STEPS},
    # the same autoencoder, then fine-tuning with a small attention block (60 epochs a phase)
    "cadmr": {"params": {"hidden": [32, 32], "pos_weight": 10.0, **SMALL_MM}, "train": SMALL_STEPS},
    # the paper's settings: lambda_2 at 1/100 of GLocal-K's, since its loss divides the
    # penalty by I x U = 1,200
    "cadmr_paper": {
        "params": {"hidden": [32, 32], "lambda_2": 0.2, **SMALL_MM},
        "train": SMALL_STEPS,
    },
    # 40 users: batches of 8 users give the user autoencoder 5 steps an epoch
    "addvae": {
        "train": SMALL_STEPS,
    },
    # no negatives: BM3 separates the groups within ~10 epochs, but recall@20 saturates
    # (20 of 23 unseen items) before that and would select an early epoch; nDCG@20 keeps
    # rewarding the valid item moving up
    "bm3": {
        "eval": {"valid_metric": "ndcg@20"},
        "train": {"epochs": 100, "batch_size": 64, "learning_rate": 0.005, "patience": 30},
    },
}


class TestRegisteredModels(ModelContract):
    model = sorted(MODELS)
    known_answer_settings = KNOWN_ANSWER_SETTINGS
    # losses that draw from torch's generator even in eval mode (BM3's target dropout,
    # SLMRec's views): the devices' generators differ, so on the GPU they are only finite
    random_in_eval = frozenset({"bm3", "slmrec"})
    # BPR-MF is parameters alone; any other model without a constant means the walk is blind
    parameters_only = frozenset({"bpr"})


# ---- a model from outside the package ------------------------------------------------------


@dataclass(frozen=True)
class ToyParams:
    dim: int = 8


class ToyMF(TorchRecommender):
    """Matrix factorisation with the BPR loss, written as a user of the package would."""

    name = "toy_mf"
    params_cls = ToyParams

    def __init__(
        self, params: ToyParams, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)
        self.users = nn.Parameter(0.1 * torch.randn(n_users, params.dim))
        self.items = nn.Parameter(0.1 * torch.randn(n_items, params.dim))

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)  # the leakage guard checks the matrix
        self.sampler = TripletSampler(self.train_matrix)

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[TripletBatch]:
        return self.sampler.epoch(rng, batch_size)

    def loss(self, batch: TripletBatch) -> torch.Tensor:
        u = self.users[batch.users]  # (B, d)
        return bpr_loss((u * self.items[batch.pos]).sum(1), (u * self.items[batch.neg]).sum(1))

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.users[self.tensor(users)] @ self.items.T  # (B, n_items)


class TestAModelFromOutside(ModelContract):
    model = ToyMF


def test_a_model_is_registered_only_while_its_checks_run():
    assert "toy_mf" not in MODELS
    with registered(ToyMF):
        assert MODELS["toy_mf"] is ToyMF
    assert "toy_mf" not in MODELS
    impostor: Any = type("Impostor", (ToyMF,), {"name": "bpr"})
    with pytest.raises(ValueError, match="BPRMF is registered as 'bpr'"), registered(impostor):
        pass
    assert MODELS["bpr"] is not impostor


def test_check_contract_runs_the_checks_without_pytest():
    checks = {"test_score_shape_and_finite", "test_different_seed_different_init"}
    assert check_contract([ToyMF, "pop"], checks) == [
        "test_score_shape_and_finite[toy_mf]",
        "test_different_seed_different_init[toy_mf]",
        "test_score_shape_and_finite[pop]",  # a closed-form model: no gradient checks
    ]
    assert "toy_mf" not in MODELS
