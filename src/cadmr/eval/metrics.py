"""Top-K ranking metrics as pure functions (docs/protocol.md).

All functions take ``hits``, a boolean (B, K) array whose row u, column r tells whether the
item ranked at position r + 1 for user u is relevant, and ``n_rel``, the number of relevant
items of each user (B,). They return one value per user; the protocol averages over users.
Definitions follow the MMRec toolbox so that our tables compare with the literature:

- Recall@K    = hits in top K / n_rel            (not / min(K, n_rel))
- Precision@K = hits in top K / K
- HitRate@K   = 1 if any hit in top K
- NDCG@K      = sum_r hit_r / log2(r + 1)  /  sum_{r <= min(K, n_rel)} 1 / log2(r + 1)
- MAP@K       = sum_r P@r * hit_r / min(K, n_rel)
- MRR@K       = 1 / rank of the first hit in top K (0 without one)

Catalogue coverage@K is not a per-user metric; ``coverage_at_k`` computes it from the best
rank each item reached over all users (the protocol accumulates it batch by batch).
"""

from __future__ import annotations

import numpy as np

METRICS = ("recall", "ndcg", "precision", "map", "hit", "mrr")


def _check(hits: np.ndarray, n_rel: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    hits = np.asarray(hits, dtype=bool)
    n_rel = np.asarray(n_rel, dtype=np.float64)
    if hits.ndim != 2 or n_rel.shape != (hits.shape[0],):
        raise ValueError(f"hits must be (B, K) and n_rel (B,), got {hits.shape}, {n_rel.shape}")
    if k < 1 or k > hits.shape[1]:
        raise ValueError(f"k={k} outside 1..{hits.shape[1]} (columns of hits)")
    if (n_rel < hits.sum(axis=1)).any() or (n_rel <= 0).any():
        raise ValueError("each user needs n_rel >= 1 and at least as many relevant items as hits")
    return hits[:, :k], n_rel


def recall_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    h, n = _check(hits, n_rel, k)
    return h.sum(axis=1) / n


def precision_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    h, _ = _check(hits, n_rel, k)
    return h.sum(axis=1) / k


def hit_rate_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    h, _ = _check(hits, n_rel, k)
    return h.any(axis=1).astype(np.float64)


def ndcg_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    h, n = _check(hits, n_rel, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2))  # (K,) gain of ranks 1..K
    dcg = (h * discount).sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(n, k).astype(np.int64) - 1]
    return dcg / ideal


def map_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    h, n = _check(hits, n_rel, k)
    prec = np.cumsum(h, axis=1) / np.arange(1, k + 1)  # (B, K) precision at each rank
    return (prec * h).sum(axis=1) / np.minimum(n, k)


def mrr_at_k(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    h, _ = _check(hits, n_rel, k)
    first = h.argmax(axis=1)  # 0 for a row without hits too; masked below
    return np.where(h.any(axis=1), 1.0 / (first + 1), 0.0)


def coverage_at_k(best_rank: np.ndarray, k: int) -> float:
    """Share of the ranked catalogue that is in at least one user's top K.

    ``best_rank`` holds, for every item that could be ranked, the best (0-based) rank it
    reached in any evaluated user's list (``len(best_rank)`` or more for never listed).
    A model that recommends the same head items to everyone has low coverage."""
    best_rank = np.asarray(best_rank)
    if best_rank.ndim != 1 or len(best_rank) == 0:
        raise ValueError(f"best_rank must be a non-empty vector, got shape {best_rank.shape}")
    return float((best_rank < k).mean())


_FUNCS = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "precision": precision_at_k,
    "map": map_at_k,
    "hit": hit_rate_at_k,
    "mrr": mrr_at_k,
}


def ranking_metrics(
    hits: np.ndarray, n_rel: np.ndarray, ks: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Every metric at every cut-off, per user: ``{"recall@20": (B,), ...}``."""
    return {f"{m}@{k}": _FUNCS[m](hits, n_rel, k) for m in METRICS for k in ks}
