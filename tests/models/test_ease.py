"""EASE's in-place solve against the textbook formula."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import cadmr.models.ease as ease_mod
from cadmr.models.ease import EASE, EASEParams, ease_weights_in_place, gram


def _matrix(n_users=300, n_items=70, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(np.float32))


def _reference(x: sp.csr_matrix, lam: float) -> np.ndarray:
    g = (x.T @ x).toarray().astype(np.float64)
    p = np.linalg.inv(g + lam * np.eye(g.shape[0]))
    b = np.eye(g.shape[0]) - p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("block", [1, 16, 70, 4096])
def test_gram_in_column_blocks(block):
    x = _matrix()
    assert np.array_equal(gram(x, np.float64, block), (x.T @ x).toarray())


@pytest.mark.parametrize(("dtype", "tol"), [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("block", [1, 16, 69, 4096])
def test_in_place_weights_equal_the_formula(dtype, tol, block):
    x = _matrix()
    g = gram(x, dtype)
    b = ease_weights_in_place(g, 25.0, block)
    assert np.shares_memory(b, g) and b.dtype == dtype
    np.testing.assert_allclose(b, _reference(x, 25.0), atol=tol)
    assert (np.diagonal(b) == 0).all()


def test_large_catalogues_solve_in_float32_without_a_cached_gram(monkeypatch):
    x = _matrix()
    ref = _reference(x, 10.0)
    model = EASE(EASEParams(reg_weight=10.0), x.shape[0], x.shape[1], {})
    model.train_matrix = x
    monkeypatch.setattr(ease_mod, "FLOAT64_MAX_ITEMS", 50)
    model.fit()
    assert model._gram_cache is None and model._dtype() is np.float32
    np.testing.assert_allclose(model.weights.numpy(), ref, atol=1e-5)
    monkeypatch.setattr(ease_mod, "FLOAT64_MAX_ITEMS", 100)
    model.fit()
    assert model._gram_cache is not None and model._dtype() is np.float64
    np.testing.assert_allclose(model.weights.numpy(), ref, atol=1e-6)


def test_bad_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="dtype must be auto, float32 or float64"):
        EASEParams(dtype="float16")


def test_lapack_runs_with_one_blas_thread(monkeypatch):
    """OpenBLAS's threaded potrf segfaults on large Gram matrices (docs/scaling.md)."""
    from threadpoolctl import threadpool_info

    real = ease_mod.lapack.get_lapack_funcs
    seen = []

    def spying(names, arrays):
        def wrap(f):
            def call(*args, **kwargs):
                seen.append(
                    {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
                )
                return f(*args, **kwargs)

            return call

        return tuple(wrap(f) for f in real(names, arrays))

    monkeypatch.setattr(ease_mod.lapack, "get_lapack_funcs", spying)
    x = _matrix()
    g = gram(x, np.float64)
    ease_weights_in_place(g, 50.0)
    assert len(seen) == 2 and all(threads == {1} for threads in seen)
    np.testing.assert_allclose(g, _reference(x, 50.0), atol=1e-10)


def test_scores_in_row_blocks_of_the_weights_equal_one_product(monkeypatch):
    """Electronics-size weights exceed torch's 32-bit indexing of a dense operand."""
    x = _matrix()
    model = EASE(EASEParams(reg_weight=50.0), x.shape[0], x.shape[1], {})
    model.train_matrix = x
    model.fit()
    users = np.arange(0, 300, 3)
    whole = model.score(users)
    monkeypatch.setattr(ease_mod, "MAX_DENSE_ELEMENTS", 70 * 9)  # 9 rows of B per product
    np.testing.assert_allclose(model.score(users).numpy(), whole.numpy(), rtol=1e-5, atol=1e-6)
