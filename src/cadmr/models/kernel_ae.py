"""Local-kernel item autoencoder: CADMR's "autoencoder alone" baseline.

References: Han, Lim, Long, Burgstaller & Poon, "GLocal-K: Global and Local Kernels for
Recommender Systems", CIKM 2021 (local-kernel autoencoder, without the global-kernel
fine-tuning stage); Khalafaoui et al., "CADMR: Cross-Attention and Disentangled Learning for
Multimodal Recommender Systems" (its autoencoder component). Loss on implicit data as
docs/CADMR.md decision 1; never a dense item x user matrix, as decision 5.

Each item is one example: its row of the item x user training matrix R (n_items, n_users)
goes through two sigmoid local-kernel layers (n_users -> hidden[0] -> hidden[1]) and an
identity local-kernel output layer back to n_users. The score of (user u, item i) is the
reconstruction of R[i, u].

Loss scaling. GLocal-K minimises a SUM over the whole matrix,
``J = sum (r - r_hat)^2 + lambda_2/2 * sum W^2 + lambda_s/2 * sum k^2`` (TensorFlow's
``l2_loss`` halves), with lambda_2 = 20 and lambda_s = 0.006. We keep those values and
divide the whole objective by the number of terms of its data part, so that the batch mean is
an unbiased estimate of ``J / n_terms`` (same minimiser as the full-batch sum):

- ``loss="mse"``: the data part is the weighted squared error over ALL I x U entries (zeros
  included, weight ``pos_weight`` on positives), averaged over the batch's entries; the
  penalties are multiplied by ``lambda / (2 * I * U)``.
- ``loss="multinomial"``: the data part is the per-item multinomial log-likelihood over users,
  ``-sum_u r_iu log softmax(r_hat_i)_u``, averaged over the batch's items; the penalties are
  multiplied by ``lambda / (2 * I)``.

Memory: a batch of B items holds a few dense (B, n_users) tensors (target, output and their
gradients); with the trainer's default ``train.batch_size`` = 2048 that is about 160 MB each on
Baby (19,445 users), fine on 24 GiB. For catalogues with ~10^5 users (Electronics) use a batch
of 256-512 items.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.models.base import TorchRecommender
from cadmr.models.layers import LocalKernelLayer, to_torch_sparse

SCORING_BLOCK = 4096  # items per block when encoding the whole catalogue for scoring


@dataclass(frozen=True)
class KernelAEParams:
    """Attributes:
    hidden: Sizes of the two sigmoid local-kernel hidden layers (GLocal-K: 500, 500).
    kernel_dim: Dimension of the unit embeddings u, v of every local kernel (GLocal-K: 5).
    lambda_2: GLocal-K's L2 weight on W (sum-loss scale; divided as the module says).
    lambda_s: GLocal-K's L2 weight on the kernels k (sum-loss scale; likewise).
    pos_weight: Weight of the positive entries in the squared error (weighted MSE).
    loss: "mse" (weighted MSE over all entries) or "multinomial" (softmax over users).
    """

    hidden: tuple[int, ...] = (500, 500)
    kernel_dim: int = 5
    lambda_2: float = 20.0
    lambda_s: float = 0.006
    pos_weight: float = 1.0
    loss: Literal["mse", "multinomial"] = "mse"

    def __post_init__(self) -> None:
        if not self.hidden or any(h <= 0 for h in self.hidden) or self.kernel_dim <= 0:
            raise ValueError("hidden must be non-empty positive sizes and kernel_dim > 0")
        if self.lambda_2 < 0 or self.lambda_s < 0 or self.pos_weight <= 0:
            raise ValueError("lambda_2 and lambda_s must be >= 0 and pos_weight > 0")
        if self.loss not in ("mse", "multinomial"):
            raise ValueError(f"loss must be 'mse' or 'multinomial', got {self.loss!r}")


@dataclass(frozen=True)
class ItemBatch:
    """Attributes:
    items: (B,) int64 indices of the items (rows of R) in the batch.
    """

    items: np.ndarray


class KernelAE(TorchRecommender):
    """GLocal-K's local-kernel autoencoder over item rows of the interaction matrix."""

    name = "kernel_ae"
    params_cls = KernelAEParams

    def __init__(
        self,
        params: KernelAEParams,
        n_users: int,
        n_items: int,
        feature_dims: Mapping[str, int],
    ) -> None:
        super().__init__(params, n_users, n_items, feature_dims)
        sizes = (n_users, *params.hidden)
        self.encoder = nn.ModuleList(
            LocalKernelLayer(a, b, params.kernel_dim) for a, b in itertools.pairwise(sizes)
        )
        self.decoder = LocalKernelLayer(sizes[-1], n_users, params.kernel_dim)
        self.item_user: sp.csr_matrix | None = None
        self._hidden: torch.Tensor | None = None  # (n_items, hidden[-1]) cache for scoring

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        r = sp.csr_matrix(self.train_matrix.T, dtype=np.float32)  # (n_items, n_users)
        r.sort_indices()
        self.item_user = guard.check(r, "kernel AE input/target", layout="item_user")
        self._hidden = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer: (B, n_users) dense or sparse -> (B, hidden[-1])."""
        h = x
        for layer in self.encoder:
            h = torch.sigmoid(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of item rows: (B, n_users) dense or sparse -> (B, n_users)."""
        return self.decoder(self.encode(x))

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[ItemBatch]:
        self._hidden = None  # parameters will change
        order = rng.permutation(self.n_items).astype(np.int64)
        for start in range(0, self.n_items, batch_size):
            yield ItemBatch(order[start : start + batch_size])

    def _rows(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(sparse input, dense target), both (B, n_users), for the given item rows."""
        rows = self.item_user[items]
        return to_torch_sparse(rows), torch.from_numpy(rows.toarray())

    def penalty(self) -> torch.Tensor:
        """lambda_2/2 * sum W^2 + lambda_s/2 * sum k^2 over all layers, divided by the number
        of terms of the data loss over the whole matrix (module docstring)."""
        p = self.params
        n_terms = self.n_items * (self.n_users if p.loss == "mse" else 1)
        total = torch.zeros(())
        for layer in (*self.encoder, self.decoder):
            weight, kernel = layer.penalties()
            total = total + p.lambda_2 * weight + p.lambda_s * kernel
        return total / (2.0 * n_terms)

    def reconstruction_loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Data part of the loss of one batch; ``out`` and ``target`` are (B, n_users)."""
        if self.params.loss == "multinomial":
            return -(target * F.log_softmax(out, dim=1)).sum() / out.shape[0]
        sq = (out - target).pow(2)  # (B, n_users)
        if self.params.pos_weight != 1.0:
            sq = sq * (1.0 + (self.params.pos_weight - 1.0) * target)
        return sq.mean()

    def loss(self, batch: ItemBatch) -> torch.Tensor:
        x, target = self._rows(batch.items)
        out = self(x)  # (B, n_users)
        return self.reconstruction_loss(out, target) + self.penalty()

    @torch.no_grad()
    def prepare_scoring(self) -> None:
        blocks = []
        for start in range(0, self.n_items, SCORING_BLOCK):
            items = np.arange(start, min(start + SCORING_BLOCK, self.n_items))
            blocks.append(self.encode(to_torch_sparse(self.item_user[items])))
        self._hidden = torch.cat(blocks)  # (n_items, hidden[-1])

    @torch.no_grad()
    def score(self, users: np.ndarray) -> torch.Tensor:
        if self._hidden is None:
            self.prepare_scoring()
        cols = torch.from_numpy(np.asarray(users, dtype=np.int64))
        out = self.decoder.forward_columns(self._hidden, cols)  # (n_items, B)
        return out.T.contiguous()  # (B, n_items)

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self._hidden = None
