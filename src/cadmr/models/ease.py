"""EASE: embarrassingly shallow autoencoder, a closed-form item-item model.

References: Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.

B = I - P diag(1 / diag(P)) with P = (X^T X + lambda I)^-1, scores = X_u B. The diagonal
of B is zero by construction. lambda is chosen on the validation split (default grid
below); refitting the same instance with another lambda reuses its Gram matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from cadmr.models.base import ClosedFormRecommender
from cadmr.models.layers import to_torch_sparse

# The dense I x I solve needs about 3 float64 copies of the Gram matrix.
MAX_ITEMS = 40_000


@dataclass(frozen=True)
class EASEParams:
    """Attributes:
    reg_weight: L2 penalty lambda on the item-item weights.
    """

    reg_weight: float = 250.0

    def __post_init__(self) -> None:
        if self.reg_weight <= 0:
            raise ValueError(f"reg_weight must be > 0, got {self.reg_weight}")


class EASE(ClosedFormRecommender):
    name = "ease"
    params_cls = EASEParams
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "reg_weight": (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0)
    }

    _gram_cache: tuple[int, torch.Tensor] | None = None

    def _gram(self) -> torch.Tensor:
        key = id(self.train_matrix)
        if self._gram_cache is None or self._gram_cache[0] != key:
            if self.n_items > MAX_ITEMS:
                gib = 3 * 8 * self.n_items**2 / 2**30
                raise MemoryError(
                    f"EASE needs a dense {self.n_items} x {self.n_items} solve "
                    f"(about {gib:.0f} GiB); this build supports up to {MAX_ITEMS} items"
                )
            x = self.train_matrix.astype(np.float64)
            g = (x.T @ x).toarray()  # (I, I)
            self._gram_cache = (key, torch.from_numpy(g))
        return self._gram_cache[1]

    def fit(self) -> EASE:
        g = self._gram().clone()
        g.diagonal().add_(self.params.reg_weight)
        p = torch.cholesky_inverse(torch.linalg.cholesky(g))  # (I, I), symmetric PD
        b = -p / p.diagonal()  # column j divided by P_jj
        b.diagonal().zero_()
        self.weights = b.to(torch.float32)
        return self

    def score(self, users: np.ndarray) -> torch.Tensor:
        x = to_torch_sparse(self.train_matrix[users])  # (B, I) sparse
        return torch.sparse.mm(x, self.weights)  # (B, I)

    def state(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.weights = state["weights"]
