"""Model interface shared by every recommender.

A model is built from (params, n_users, n_items, feature dims), never from a dataset
object, and never reads or writes files. Its life cycle:

1. ``setup(train, features, guard)``: receives the training matrix and item features and
   builds whatever it derives from them (adjacency, Gram matrix, input rows), passing each
   interaction-derived matrix through ``guard.check`` (docs/PROTOCOL.md leakage guard).
2. Closed-form models: ``fit()``. Iterative models: the generic trainer draws
   ``batches(rng, batch_size)`` and minimises ``loss(batch)``.
3. ``score(users) -> (B, n_items)`` raw scores. Masking, top-K and metrics belong to the
   evaluation protocol; ``recommend`` is written once here.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from cadmr.data.leakage import LeakageGuard


def mask_rows(scores: torch.Tensor, users: np.ndarray, exclude: sp.csr_matrix) -> torch.Tensor:
    """Set ``scores[b, i] = -inf`` where ``exclude[users[b], i]`` is non-zero (in place)."""
    sub = exclude[users]  # (B, n_items) sparse
    rows = np.repeat(np.arange(len(users)), np.diff(sub.indptr))
    scores[torch.from_numpy(rows), torch.from_numpy(sub.indices.astype(np.int64))] = -torch.inf
    return scores


def topk_items(
    scores: torch.Tensor, users: np.ndarray, k: int, exclude: sp.csr_matrix | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, item indices), both (B, k), after masking ``exclude``'s items
    in place in ``scores`` (which ``Recommender.score`` hands over to its caller)."""
    if exclude is not None:
        scores = mask_rows(scores, users, exclude)
    k = min(k, scores.shape[1])
    return torch.topk(scores, k, dim=1, sorted=True)


class Recommender(abc.ABC):
    """Common interface. Subclasses set ``name`` and ``params_cls``.

    Attributes:
        name: Registry name.
        params_cls: Frozen dataclass of the model's hyper-parameters.
        personalized: False for non-personalised models (popularity).
        default_search: Validation grid searched unless the configuration sets one.
        needs_features: True when the model cannot run without item features.
    """

    name: ClassVar[str]
    params_cls: ClassVar[type]
    personalized: ClassVar[bool] = True
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    needs_features: ClassVar[bool] = False

    def __init__(
        self, params: Any, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        self.params = params
        self.n_users = n_users
        self.n_items = n_items
        self.feature_dims = dict(feature_dims)
        self.train_matrix: sp.csr_matrix | None = None

    def setup(
        self,
        train: sp.csr_matrix,
        features: Mapping[str, np.ndarray],
        guard: LeakageGuard,
    ) -> None:
        """Receive the training data. Subclasses extend this and check what they build."""
        if train.shape != (self.n_users, self.n_items):
            raise ValueError(
                f"{self.name}: training matrix has shape {train.shape}, "
                f"model was built for {(self.n_users, self.n_items)}"
            )
        self.train_matrix = sp.csr_matrix(guard.check(train, f"{self.name} training matrix"))

    @abc.abstractmethod
    def score(self, users: np.ndarray) -> torch.Tensor:
        """Raw scores of every item for ``users`` (B,) -> float32 tensor (B, n_items).

        The tensor belongs to the caller, who may modify it in place (masking): return a
        new tensor, never a cached one or a view of one.
        """

    def prepare_scoring(self) -> None:  # noqa: B027 - optional hook
        """Hook run once before a round of ``score`` calls (e.g. propagate a graph)."""

    @torch.no_grad()
    def recommend(
        self, users: np.ndarray, k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for ``users``: (items (B, k) int64, scores (B, k) float32).

        Training items are excluded unless ``exclude_seen`` is False. A user with fewer
        than ``k`` eligible items gets the row padded with item -1 and score -inf.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        bad = users[(users < 0) | (users >= self.n_users)]
        if len(bad):
            raise IndexError(f"user {int(bad[0])} is not in 0..{self.n_users - 1}")
        self.prepare_scoring()
        scores = self.score(users)
        values, items = topk_items(scores, users, k, self.train_matrix if exclude_seen else None)
        items = items.numpy().copy()
        items[np.isneginf(values.numpy())] = -1
        return items, values.numpy()

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything learned, as tensors/arrays, for checkpoints."""

    @abc.abstractmethod
    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state`` returned."""


class ClosedFormRecommender(Recommender):
    """A model fitted in one step from the training matrix (popularity, EASE)."""

    @abc.abstractmethod
    def fit(self) -> ClosedFormRecommender:
        """Fit on the matrix given to ``setup``; returns self."""


class TorchRecommender(nn.Module, Recommender):
    """A model trained by gradient steps in the generic trainer."""

    def __init__(
        self, params: Any, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        nn.Module.__init__(self)
        Recommender.__init__(self, params, n_users, n_items, feature_dims)

    @abc.abstractmethod
    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[Any]:
        """One epoch of training batches, drawn with ``rng``."""

    @abc.abstractmethod
    def loss(self, batch: Any) -> torch.Tensor:
        """Scalar training loss of one batch."""

    def state(self) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.load_state_dict(dict(state))
