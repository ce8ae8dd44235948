"""EASE: embarrassingly shallow autoencoder, a closed-form item-item model.

References: Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.

B = I - P diag(1 / diag(P)) with P = (X^T X + lambda I)^-1, scores = X_u B. The diagonal
of B is zero by construction. lambda is chosen on the validation split (default grid
below); refitting the same instance with another lambda reuses its Gram matrix.

The I x I solve is inherently quadratic in memory; it runs in place (one I x I matrix at
its peak), so Amazon Electronics' 63,001 items fit in 24 GiB (14.8 GiB in float32).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from cadmr.logs import progress
from cadmr.models.base import ClosedFormRecommender
from cadmr.models.layers import to_torch_sparse

# Item catalogues up to this size solve in float64 and keep their Gram matrix between the
# refits of a lambda grid; larger ones solve in float32 and rebuild it per fit, so that one
# I x I matrix is all they hold (63,001 items: 14.8 GiB; float64 with a cached copy: 59 GiB)
FLOAT64_MAX_ITEMS = 20_000
BLOCK = 2048  # rows / columns per block of the Gram build and of the in-place passes
MAX_DENSE_ELEMENTS = 2**31 - 1  # per sparse @ dense product in scoring (see EASE.score)


@dataclass(frozen=True)
class EASEParams:
    """Attributes:
    reg_weight: L2 penalty lambda on the item-item weights.
    dtype: Precision of the I x I solve: "float64", "float32", or "auto" (float64 up to
        ``FLOAT64_MAX_ITEMS`` items, float32 above). The weights are float32 either way.
    """

    reg_weight: float = 250.0
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.reg_weight <= 0:
            raise ValueError(f"reg_weight must be > 0, got {self.reg_weight}")
        if self.dtype not in ("auto", "float32", "float64"):
            raise ValueError(f"dtype must be auto, float32 or float64, got {self.dtype!r}")


def gram(x: sp.csr_matrix, dtype: type, block: int = BLOCK) -> np.ndarray:
    """X^T X as a dense C-ordered (I, I) array, built block of columns by block of columns:
    no sparse I x I intermediate, whose index arrays would outweigh the dense result."""
    n = x.shape[1]
    xc = x.astype(dtype).tocsc()
    xt = xc.T.tocsr()
    g = np.empty((n, n), dtype=dtype)
    for j in progress(range(0, n, block), desc=f"EASE Gram matrix ({n} items)", unit="block"):
        g[:, j : j + block] = (xt @ xc[:, j : j + block]).toarray()
    return g


def ease_weights_in_place(g: np.ndarray, reg_weight: float, block: int = BLOCK) -> np.ndarray:
    """Overwrite the Gram matrix ``g`` (C-ordered, symmetric) with EASE's item weights
    B = I - P diag(1 / diag(P)), P = (G + lambda I)^-1, and return it.

    LAPACK's potrf / potri factor and invert in the memory of ``g`` (a symmetric C-ordered
    array is the Fortran-ordered view of itself), and the symmetrisation and column scaling
    run block by block, so the peak is one I x I matrix plus a block.
    """
    n = g.shape[0]
    blocks = range(0, n, block)
    bar = progress(total=2 + 2 * len(blocks), desc=f"EASE solve ({n} items)", unit="step")
    g[np.diag_indices(n)] += reg_weight
    a = g.T  # Fortran-ordered: its upper triangle is g's lower one
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (a,))
    # scipy's OpenBLAS (0.3.30) segfaults in its threaded potrf from about 18,000 items
    # (float64, 2 threads; fine with 1: docs/scaling.md), so LAPACK runs single-threaded
    with threadpool_limits(limits=1, user_api="blas"):
        _, info = potrf(a, lower=0, overwrite_a=1, clean=0)
        bar.update()
        if info == 0:
            _, info = potri(a, lower=0, overwrite_c=1)
            bar.update()
    if info != 0:
        bar.close()
        raise np.linalg.LinAlgError(f"EASE: G + lambda I is not positive definite (info {info})")
    for i in blocks:  # g's lower triangle holds P: mirror it to the upper one
        j = min(i + block, n)
        d = g[i:j, i:j]
        d[...] = np.tril(d) + np.tril(d, -1).T
        g[i:j, j:] = g[j:, i:j].T
        bar.update()
    diag = np.diagonal(g).copy()
    for i in blocks:
        g[i : i + block] /= -diag  # column k divided by -P_kk
        bar.update()
    bar.close()
    g[np.diag_indices(n)] = 0.0
    return g


class EASE(ClosedFormRecommender):
    name = "ease"
    params_cls = EASEParams
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "reg_weight": (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0)
    }

    _gram_cache: tuple[tuple[int, type], np.ndarray] | None = None

    def _dtype(self) -> type:
        if self.params.dtype == "auto":
            return np.float64 if self.n_items <= FLOAT64_MAX_ITEMS else np.float32
        return np.float64 if self.params.dtype == "float64" else np.float32

    def fit(self) -> EASE:
        dtype = self._dtype()
        if self.n_items > FLOAT64_MAX_ITEMS:  # one I x I matrix at a time
            self._gram_cache = None
            self.weights = torch.empty(0)  # the previous fit's weights go first
            g = gram(self.train_matrix, dtype)
        else:  # refits across the lambda grid reuse the Gram matrix
            key = (id(self.train_matrix), dtype)
            if self._gram_cache is None or self._gram_cache[0] != key:
                self._gram_cache = (key, gram(self.train_matrix, dtype))
            g = self._gram_cache[1].copy()
        b = ease_weights_in_place(g, self.params.reg_weight)
        self.weights = torch.from_numpy(b if b.dtype == np.float32 else b.astype(np.float32))
        return self

    def item_vectors(self) -> torch.Tensor:
        return self.weights  # row i: how item i's presence scores every other item

    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        return self.weights[torch.as_tensor(np.asarray(items, dtype=np.int64))].sum(dim=0)

    def score(self, users: np.ndarray) -> torch.Tensor:
        """(B, I) scores ``X_users @ B``, summed over row blocks of ``B`` of at most
        ``MAX_DENSE_ELEMENTS``: torch's sparse @ dense product indexes its dense operand with
        32-bit integers and segfaulted on Electronics-size weights (63,001² = 4.0e9 entries)."""
        x = self.train_matrix[users]  # (B, I) scipy CSR
        n_rows, n_cols = self.weights.shape
        step = max(1, MAX_DENSE_ELEMENTS // max(1, n_cols))
        out = torch.sparse.mm(to_torch_sparse(x[:, :step]), self.weights[:step])
        for i in range(step, n_rows, step):  # row blocks of a C-ordered matrix are views
            out += torch.sparse.mm(to_torch_sparse(x[:, i : i + step]), self.weights[i : i + step])
        return out

    def state(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.weights = state["weights"]
