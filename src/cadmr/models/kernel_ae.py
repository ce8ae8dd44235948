"""Local-kernel item autoencoder: CADMR's "autoencoder alone" baseline.

References: Han, Lim, Long, Burgstaller & Poon, "GLocal-K: Global and Local Kernels for
Recommender Systems", CIKM 2021 (local-kernel autoencoder, without the global-kernel
fine-tuning stage); Khalafaoui et al., "CADMR: Cross-Attention and Disentangled Learning for
Multimodal Recommender Systems" (its autoencoder component). Loss on implicit data as
docs/CADMR.md decision 1; never a dense item x user matrix, as decision 5.

Each item is one example: its row of the item x user training matrix R (n_items, n_users)
goes through two sigmoid local-kernel layers (n_users -> hidden[0] -> hidden[1]) and an
identity local-kernel output layer back to n_users. The score of (user u, item i) is the
reconstruction of R[i, u]. While training, the input row may be corrupted (``input_dropout``,
denoising) while the target stays the full row.

The defaults differ from GLocal-K in six places, each chosen on validation because the
GLocal-K settings leave the model at popularity level on sparse implicit data (Amazon
Scientific, Baby): input rows of equal norm, input dropout, the first layer's initial
scale, zero-centred sigmoid units, a stronger L2 that grows with the catalogue, and the
positive weight (``KernelAEParams``; evidence in docs/cadmr.md). ``cadmr_paper`` keeps
GLocal-K's.

Loss scaling. GLocal-K minimises a SUM over the whole matrix,
``J = sum (r - r_hat)^2 + lambda_2/2 * sum W^2 + lambda_s/2 * sum k^2`` (TensorFlow's
``l2_loss`` halves), with lambda_2 = 20 and lambda_s = 0.006. We divide the whole
objective by the number of terms of its data part, so that the batch mean is an unbiased
estimate of ``J / n_terms`` (same minimiser as the full-batch sum); with
``lambda_scale="items"`` the lambdas are first multiplied by n_items / 1,000:

- ``loss="mse"``: the data part is the weighted squared error over ALL I x U entries (zeros
  included, weight ``pos_weight`` on positives), averaged over the batch's entries; the
  penalties are multiplied by ``lambda / (2 * I * U)``.
- ``loss="multinomial"``: the data part is the per-item multinomial log-likelihood over users,
  ``-sum_u r_iu log softmax(r_hat_i)_u``, averaged over the batch's items; the penalties are
  multiplied by ``lambda / (2 * I)``.

Global kernel (GLocal-K's fine-tuning stage, ``global_kernel=True``): after a pretraining
phase, the average of each item's reconstruction over users, a vector of I values, is turned
by a learned (I, g*g) matrix into a g x g convolution kernel; the kernel is convolved over the
item x user matrix (neighbouring item and user indices, as in GLocal-K) through a ReLU, and the
result is the autoencoder's input during a second, fine-tuning phase. Deviation: GLocal-K
recomputes the pooled vector inside every full-batch step; we recompute it without gradient
at the start of each epoch and before scoring (item batches make the full pass per step too
costly). The convolution depends on the order of item and user ids, which carries no meaning
in most datasets; docs/cadmr.md records its validation result.

Memory: a batch of B items holds a few dense (B, n_users) tensors (target, output and their
gradients), and every step builds each layer's full local kernel once (``shared_kernels``):
two n_users x hidden matrices, 39 MB each on Baby. The packaged default batch is 64 items
(``KernelAE.train_defaults``). On large catalogues the kernels dominate a step whatever
its batch, so larger batches (512-1024) cost much less per epoch
(benchmarks/cadmr_epoch.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.models.base import TorchRecommender
from cadmr.models.layers import LocalKernelLayer, shared_kernels, to_torch_sparse
from cadmr.models.sampling import ShuffledBatches

SCORING_BLOCK = 4096  # items per block when encoding the whole catalogue for scoring
# the most entries of one block's dense (B, n_users) rows while scoring (64 MiB of float32):
# at Electronics size a block of 512 such rows was 394 MB, allocated and freed once per block,
# and with freed memory kept for reuse (train/trainer.py) the heap fragmented around them,
# once to 16.8 GiB (docs/scaling.md, "The scoring peak")
DENSE_BLOCK_ENTRIES = 1 << 24
HIDDEN_ACTIVATIONS = ("sigmoid", "centered_sigmoid", "tanh")
LAMBDA_ITEMS = 1000.0  # lambda_scale="items": the lambdas hold for a catalogue of this size


@dataclass(frozen=True)
class KernelAEParams:
    """Defaults are this project's, chosen on validation for sparse data (docs/cadmr.md,
    "Why the autoencoder failed on sparse data"); ``cadmr_paper`` keeps GLocal-K's and the
    paper's (``CADMRPaperParams``).

    Attributes:
    hidden: Sizes of the two local-kernel hidden layers (GLocal-K: 500, 500).
    kernel_dim: Dimension of the unit embeddings u, v of every local kernel (GLocal-K: 5).
    lambda_2: GLocal-K's L2 weight on W (sum-loss scale; divided as the module says).
        GLocal-K: 20; ours 130 per 1,000 items (``lambda_scale``).
    lambda_s: GLocal-K's L2 weight on the kernels k (sum-loss scale; likewise).
    lambda_scale: "fixed": the lambdas as given (GLocal-K). "items": multiplied by
        n_items / 1,000 (each user's decoder weights meet one squared error per item, so
        the penalty that balances them grows with the catalogue; valid-best lambda_2 was 200
        on 1,549 items and about 1,000 on 7,050).
    pos_weight: Weight of the positive entries in the squared error (weighted MSE); 100
        was the valid-best of the grid {3, 10, 30, 100, 300} on Amazon Scientific (density
        0.3 %); the dense datasets select 3-10 from the same grid (``default_search``).
    loss: "mse" (weighted MSE over all entries) or "multinomial" (softmax over users).
    global_kernel: Add GLocal-K's global-kernel fine-tuning phase after pretraining.
    global_kernel_size: Side g of the global convolution kernel (GLocal-K: 3; odd).
    input_dropout: Denoising: while training, each observed entry of an input row is
        dropped with this probability (the kept ones scaled by 1 / (1 - p)) and the
        full row is still the target, so the model learns to predict interactions it
        does not see, as it must at test time (GLocal-K: 0; ours 0.7).
    input_init: "xavier" (GLocal-K) or "active": the first layer's weights rescaled so
        that an item row of mean length gives unit pre-activation variance (Xavier sizes
        them for dense rows; a sparse 0/1 row of 9 users out of 2,843 starts 14x smaller).
    hidden_activation: "sigmoid" (GLocal-K), "centered_sigmoid" (sigmoid - 1/2: the same
        functions, the offset absorbed by the next layer's bias, but zero-mean codes, which
        removes the popularity-level plateau at the start of training) or "tanh".
    input_norm: "none" (GLocal-K: the rows of R as they are) or "l2" (ours): each item's
        input row scaled, before any corruption, to the L2 norm of a 0/1 row of mean length
        (Mult-DAE's row normalisation, times a constant that keeps the first layer's scale
        and L2 meaning what they did), so an item with 5 users gets a code as strong as one
        with 500; the target stays the raw row.
    """

    hidden: tuple[int, ...] = (500, 500)
    kernel_dim: int = 5
    lambda_2: float = 130.0
    lambda_s: float = 0.006
    lambda_scale: Literal["fixed", "items"] = "items"
    pos_weight: float = 100.0
    loss: Literal["mse", "multinomial"] = "mse"
    global_kernel: bool = False
    global_kernel_size: int = 3
    input_dropout: float = 0.7
    input_init: Literal["xavier", "active"] = "active"
    hidden_activation: Literal["sigmoid", "centered_sigmoid", "tanh"] = "centered_sigmoid"
    input_norm: Literal["none", "l2"] = "l2"

    def __post_init__(self) -> None:
        if not self.hidden or any(h <= 0 for h in self.hidden) or self.kernel_dim <= 0:
            raise ValueError("hidden must be non-empty positive sizes and kernel_dim > 0")
        if self.lambda_2 < 0 or self.lambda_s < 0 or self.pos_weight <= 0:
            raise ValueError("lambda_2 and lambda_s must be >= 0 and pos_weight > 0")
        if self.loss not in ("mse", "multinomial"):
            raise ValueError(f"loss must be 'mse' or 'multinomial', got {self.loss!r}")
        if self.global_kernel_size < 1 or self.global_kernel_size % 2 == 0:
            raise ValueError("global_kernel_size must be a positive odd number")
        if self.hidden_activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(
                f"hidden_activation must be one of {HIDDEN_ACTIVATIONS}, "
                f"got {self.hidden_activation!r}"
            )
        if self.lambda_scale not in ("fixed", "items"):
            raise ValueError(f"lambda_scale must be 'fixed' or 'items', got {self.lambda_scale!r}")
        if self.input_init not in ("xavier", "active"):
            raise ValueError(f"input_init must be 'xavier' or 'active', got {self.input_init!r}")
        if not 0.0 <= self.input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {self.input_dropout}")
        if self.input_norm not in ("none", "l2"):
            raise ValueError(f"input_norm must be 'none' or 'l2', got {self.input_norm!r}")


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
    scoring_block: int = SCORING_BLOCK  # item rows encoded at once by prepare_scoring
    item_block = 8192  # rankings stream item blocks (models/base.py ranked_topk)
    # one item row per example: small item batches give the autoencoder enough steps per
    # epoch (docs/cadmr.md, "Item batches of 64"); CADMR inherits them, so its pretraining
    # phase is exactly this model
    train_defaults: ClassVar[Mapping[str, Any]] = {"batch_size": 64}
    # pos_weight is our adaptation to implicit data and GLocal-K's lambda_2 was never
    # validated for it; neither paper publishes a grid, so this is ours (docs/cadmr.md):
    # sparse catalogues select the large weight and L2 (Scientific: 100, 130), dense ones
    # the small (ml100k: 3, 13; lfm2k: 3, 13 with equal-norm rows, 10, 13 with raw rows).
    # The width is the first axis, so the cheap half of the grid runs first: a catalogue
    # with many users wants it wide (Baby, 19k users: 2,000), a small one does not
    # (Scientific, 3k users: 500). CADMR inherits both grids.
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "hidden": ((500, 500), (2000, 2000)),
        "pos_weight": (3.0, 10.0, 30.0, 100.0, 300.0),
        "lambda_2": (13.0, 130.0),
    }
    # the published grid at the default width: (2000, 2000) costs 2-4x per epoch and
    # n_users x 2,000 floats per kernel weight (1.5 GB at Electronics' 192k users)
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = {
        "pos_weight": (3.0, 10.0, 30.0, 100.0, 300.0),
        "lambda_2": (13.0, 130.0),
    }

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
        if params.global_kernel:
            g = params.global_kernel_size
            self.global_kernel_map = nn.Parameter(torch.empty(n_items, g * g))
            nn.init.trunc_normal_(self.global_kernel_map, std=0.1, a=-0.2, b=0.2)
        self.item_user: sp.csr_matrix | None = None
        self.input_matrix: sp.csr_matrix | None = None  # item_user as the encoder reads it
        self._input_scaled = False
        self._noise = torch.Generator()  # input dropout's draws (reseeded each epoch)
        self.phase = self.phases()[0]
        self._hidden: torch.Tensor | None = None  # (n_items, hidden[-1]) cache for scoring
        self._pooled: torch.Tensor | None = None  # (n_items,) item means for the global kernel

    def setup(
        self, train: sp.csr_matrix, features: Mapping[str, np.ndarray], guard: LeakageGuard
    ) -> None:
        super().setup(train, features, guard)
        r = sp.csr_matrix(self.train_matrix.T, dtype=np.float32)  # (n_items, n_users)
        r.sort_indices()
        self.item_user = guard.check(r, "kernel AE input/target", layout="item_user")
        # a cold-item split's held-out items are no training examples (empty rows whose
        # target would teach "nobody"); None: every item, as on an ordinary split
        cold = guard.cold_items
        self.training_items = np.setdiff1d(np.arange(self.n_items), cold) if len(cold) else None
        self._hidden = None
        mean_nnz = max(r.nnz / max(r.shape[0], 1), 1.0)
        self.input_matrix = self.item_user
        if self.params.input_norm == "l2":
            # every row to the norm of a 0/1 row of mean length: the same overall scale
            # as the raw rows, so the first layer's init and L2 keep their meaning
            norms = np.sqrt(np.asarray(r.multiply(r).sum(axis=1), dtype=np.float64).ravel())
            scale = math.sqrt(mean_nnz) / np.maximum(norms, 1e-12)
            self.input_matrix = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ r)
        if self.params.input_init == "active" and not self._input_scaled:
            # unit pre-activation variance for an item row of mean length
            with torch.no_grad():
                w = self.encoder[0].weight
                w.mul_((1.0 / math.sqrt(mean_nnz)) / w.std())
            self._input_scaled = True

    @classmethod
    def saved_params(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Checkpoints saved before ``input_norm`` existed read the rows as they are."""
        data = dict(data)
        data.setdefault("input_norm", "none")
        return data

    def phases(self) -> tuple[str, ...]:
        return ("pretrain", "finetune") if self.params.global_kernel else ("train",)

    def start_phase(self, phase: str) -> None:
        if phase not in self.phases():
            raise ValueError(f"{self.name} has phases {self.phases()}, not {phase!r}")
        self.phase = phase
        self._hidden = self._pooled = None

    @property
    def uses_global_kernel(self) -> bool:
        return self.params.global_kernel and self.phase == "finetune"

    def make_optimizer(self, tc: Any) -> torch.optim.Optimizer:
        return paper_adam(self.parameters(), tc.learning_rate, tc.weight_decay)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer: (B, n_users) dense or sparse -> (B, hidden[-1])."""
        h = x
        for layer in self.encoder:
            h = hidden_activation(layer(h), self.params.hidden_activation)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of item rows: (B, n_users) dense or sparse -> (B, n_users)."""
        return self.decoder(self.encode(x))

    @torch.no_grad()
    def item_means(self) -> torch.Tensor:
        """(n_items,) mean reconstruction of each item over users from the plain input:
        GLocal-K's item-based average pooling, the input of the global kernel."""
        blocks = []
        step = self.dense_block(SCORING_BLOCK)  # the decoder's output is dense
        with shared_kernels(self.kernel_layers()):
            for start in range(0, self.n_items, step):
                rows = self.input_matrix[start : start + step]
                blocks.append(self(to_torch_sparse(rows, self.device)).mean(dim=1))
        return torch.cat(blocks)

    def dense_block(self, most: int) -> int:
        """Item rows per block where a block forms dense (B, n_users) rows: at most ``most``
        and at most ``DENSE_BLOCK_ENTRIES`` entries."""
        return max(1, min(most, DENSE_BLOCK_ENTRIES // max(self.n_users, 1)))

    def global_kernel(self) -> torch.Tensor:
        """(g, g) convolution kernel from the pooled item means (GLocal-K)."""
        if self._pooled is None:
            self._pooled = self.item_means()
        g = self.params.global_kernel_size
        return (self._pooled @ self.global_kernel_map).view(g, g)

    def global_conv_rows(self, items: np.ndarray) -> torch.Tensor:
        """ReLU(R * K_g) at the rows ``items``: (B, n_users) dense. The g x g window covers
        the neighbouring item rows (zero beyond the matrix) and neighbouring users."""
        half = self.params.global_kernel_size // 2
        offsets = np.arange(-half, half + 1)
        rows = items[:, None] + offsets  # (B, g) neighbouring item indices
        valid = (rows >= 0) & (rows < self.n_items)
        dense = self.tensor(self.item_user[np.clip(rows, 0, self.n_items - 1).ravel()].toarray())
        dense = dense.view(len(items), len(offsets), self.n_users)
        dense = dense * self.tensor(valid)[:, :, None]
        out = F.conv2d(dense[:, None], self.global_kernel()[None, None], padding=(0, half))
        return torch.relu(out[:, 0, 0])  # (B, n_users)

    def rating_rows(self, items: np.ndarray, corrupt: bool = False) -> sp.csr_matrix:
        """Rows of R for ``items``, scaled as ``input_norm`` says; with ``corrupt`` (a
        training loss in training mode) and ``input_dropout`` p, each entry is dropped with
        probability p and the kept ones are scaled by 1 / (1 - p) (denoising)."""
        rows = self.input_matrix[items]
        p = self.params.input_dropout
        if not (corrupt and self.training and p > 0):
            return rows
        keep = (torch.rand(rows.nnz, generator=self._noise) >= p).numpy()
        data = np.where(keep, rows.data / (1.0 - p), 0.0).astype(np.float32)
        out = sp.csr_matrix((data, rows.indices, rows.indptr), shape=rows.shape)
        out.eliminate_zeros()
        return out

    def input_rows(self, items: np.ndarray, corrupt: bool = False) -> torch.Tensor:
        """The autoencoder's input for ``items``: sparse rows of R (corrupted as
        ``rating_rows`` says), or their global convolution in the global-kernel phase;
        (B, n_users)."""
        if self.uses_global_kernel:
            return self.global_conv_rows(items)
        return to_torch_sparse(self.rating_rows(items, corrupt), self.device)

    def batches(self, rng: np.random.Generator, batch_size: int) -> ShuffledBatches[ItemBatch]:
        self._hidden = None  # parameters will change
        if self.params.input_dropout > 0:
            # its own generator, so the extractors' dropout in CADMR's pretraining phase
            # does not change the autoencoder's draws
            self._noise.manual_seed(int(rng.integers(2**62)))
        if self.uses_global_kernel:
            self._pooled = self.item_means()  # once per epoch (module docstring)
        items = self.training_items
        n = self.n_items if items is None else len(items)
        return ShuffledBatches(n, batch_size, rng, ItemBatch, items)

    def target_rows(self, items: np.ndarray) -> torch.Tensor:
        """Reconstruction target: the dense training rows of ``items``, (B, n_users)."""
        return self.tensor(self.item_user[items].toarray())

    def penalty(self) -> torch.Tensor:
        """lambda_2/2 * sum W^2 + lambda_s/2 * sum k^2 over all layers, divided by the number
        of terms of the data loss over the whole matrix (module docstring)."""
        p = self.params
        n_terms = self.n_items * (self.n_users if p.loss == "mse" else 1)
        if p.lambda_scale == "items":  # lambdas given per 1,000 items (module docstring)
            n_terms = n_terms * LAMBDA_ITEMS / self.n_items
        total = torch.zeros((), device=self.device)
        for layer in self.kernel_layers():
            weight, kernel = layer.penalties()  # the global kernel map is not penalised
            total = total + p.lambda_2 * weight + p.lambda_s * kernel
        return total / (2.0 * n_terms)

    def reconstruction_loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Data part of the loss of one batch; ``out`` and ``target`` are (B, n_users)."""
        if self.params.loss == "multinomial":
            return -(target * F.log_softmax(out, dim=1)).sum() / out.shape[0]
        return weighted_squared_error(out, target, self.params.pos_weight)

    def kernel_layers(self) -> tuple[LocalKernelLayer, ...]:
        return (*self.encoder, self.decoder)

    def loss(self, batch: ItemBatch) -> torch.Tensor:
        with shared_kernels(self.kernel_layers()):
            out = self(self.input_rows(batch.items, corrupt=True))  # (B, n_users)
            return self.reconstruction_loss(out, self.target_rows(batch.items)) + self.penalty()

    @torch.no_grad()
    def prepare_scoring(self) -> None:
        self._pooled = self._hidden = None
        # the input rows are dense in the global-kernel phase and in CADMR's fine-tuning
        step = self.dense_block(self.scoring_block)
        last = self.encoder[-1].weight  # (hidden[-2], hidden[-1])
        # filled in place: no list of blocks, no copy at the end
        hidden = last.new_empty(self.n_items, last.shape[1])
        with shared_kernels(self.encoder):  # each layer's W * k once, not once per block
            for start in range(0, self.n_items, step):
                items = np.arange(start, min(start + step, self.n_items))
                hidden[start : start + len(items)] = self.encode(self.input_rows(items))
        self._hidden = hidden  # (n_items, hidden[-1])

    def item_vectors(self) -> torch.Tensor:
        if self._hidden is None:
            self.prepare_scoring()
        return self._hidden  # each item's code: the last hidden layer of its row

    @torch.no_grad()
    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.score_block(users, 0, self.n_items)

    @torch.no_grad()
    def score_block(self, users: np.ndarray, start: int, stop: int) -> torch.Tensor:
        """Reconstructed R[start:stop, users], transposed: (B, stop - start)."""
        if self._hidden is None:
            self.prepare_scoring()
        cols = self.tensor(np.asarray(users, dtype=np.int64))
        out = self.decoder.forward_columns(self._hidden[start:stop], cols)  # (items, B)
        return out.T.contiguous()

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self._hidden = self._pooled = None


def hidden_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """GLocal-K's sigmoid, or the same unit shifted to zero mean (``centered_sigmoid``:
    sigmoid - 1/2, the offset absorbed by the next layer's bias, so the same functions), or
    tanh."""
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "centered_sigmoid":
        return torch.sigmoid(x) - 0.5
    return torch.tanh(x)


class _WeightedSquaredError(torch.autograd.Function):
    """mean(w * (out - target)^2) with w = 1 + (pos_weight - 1) * target, its gradient
    ``2 w (out - target) / n`` formed in forward: three passes over the (B, n_users) matrix
    and one in backward, where the composed ops took about ten (a sixth of a Baby-size
    fine-tuning step at item batch 1,024)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, out: torch.Tensor, target: torch.Tensor, pos_weight: float
    ) -> torch.Tensor:
        diff = out.detach() - target
        weighted = diff if pos_weight == 1.0 else diff * target.mul(pos_weight - 1.0).add_(1.0)
        loss = torch.linalg.vecdot(weighted.reshape(-1), diff.reshape(-1)) / diff.numel()
        ctx.save_for_backward(weighted)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (weighted,) = ctx.saved_tensors
        return weighted * (grad * (2.0 / weighted.numel())), None, None


def weighted_squared_error(
    out: torch.Tensor, target: torch.Tensor, pos_weight: float
) -> torch.Tensor:
    """GLocal-K's data loss with observed entries weighted: mean over all (B, n_users) entries
    of ``(1 + (pos_weight - 1) * target) * (out - target)^2``; ``target`` is constant."""
    return _WeightedSquaredError.apply(out, target, float(pos_weight))


def paper_adam(parameters: Any, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam as CADMR section 4.3 sets it (beta1 0.9, beta2 0.99, eps 1e-6); the autoencoder
    alone uses it too, so that it is exactly CADMR's pretraining phase."""
    return torch.optim.Adam(
        parameters, lr=lr, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay, fused=True
    )
