"""The full-ranking evaluation protocol (docs/protocol.md), in one place for every model.

For each user with at least one item in the evaluated split: score all items, mask the
user's training items (and, only if asked, validation items at test time), take the top
max(K), and compute binary-relevance metrics against the split. On a cold-item split
(data/cold.py) only the split's cold items are ranked (``mixed=True``: every item, the
cold ones among the warm). Users are processed in batches, so peak memory is
O(batch_size x n_items) and never O(n_users x n_items). Ranking goes through
``ranked_topk``: a model with ``item_block > 0`` is scored in item blocks with a running
top-K, so peak memory drops to O(batch_size x (item_block + max(K))).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from cadmr.config import EvalConfig
from cadmr.data.dataset import Dataset
from cadmr.eval.metrics import METRICS, coverage_at_k, ranking_metrics
from cadmr.models.base import Recommender, ranked_topk


def evaluation_users(relevant: sp.csr_matrix) -> np.ndarray:
    """Users with at least one relevant item, ascending (int64)."""
    return np.flatnonzero(np.diff(relevant.indptr) > 0).astype(np.int64)


def hits_matrix(topk: np.ndarray, users: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """(B, K) bool: is ``topk[b, r]`` a relevant item of ``users[b]``? Vectorised lookup."""
    sub = relevant[users]  # (B, n_items) sparse, sorted indices
    sub.sort_indices()
    n_items = relevant.shape[1]
    row_keys = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(sub.indptr))
    keys = row_keys * n_items + sub.indices  # sorted
    query = np.arange(len(users), dtype=np.int64)[:, None] * n_items + topk
    pos = np.searchsorted(keys, query)
    pos = np.minimum(pos, max(len(keys) - 1, 0))
    return keys[pos] == query if len(keys) else np.zeros(topk.shape, dtype=bool)


def evaluate(
    model: Recommender,
    dataset: Dataset,
    split: str = "valid",
    config: EvalConfig | None = None,
    progress: bool = False,
    mixed: bool = False,
) -> dict[str, float]:
    """Mean ranking metrics of ``model`` on ``split`` over all users with relevant items.

    Args:
        model: A fitted recommender (only its ``score``, or ``score_block`` when it sets
            ``item_block``, is used).
        dataset: The dataset it was trained on.
        split: "valid" or "test".
        config: Cut-offs, user batch size and masking option.
        progress: Show a progress bar over user batches.
        mixed: On a cold-item split (``dataset.cold_items``), rank the whole catalogue
            instead of the split's cold items only (data/cold.py); no effect otherwise.

    Returns:
        ``{"recall@20": ..., "ndcg@10": ..., ..., "coverage@20": ..., "n_users": ...}``
        (means over users, NaN when no user has an item in the split; ``coverage@K`` is
        the share of the ranked items, the split's cold items on a cold-item split, in at
        least one user's top K). A cut-off larger than the catalogue ranks every item.
    """
    if split not in ("valid", "test"):
        raise ValueError(f"evaluate on 'valid' or 'test', not {split!r}")
    if model.n_items != dataset.n_items:
        raise ValueError(
            f"{model.name} ranks {model.n_items} items, expected the dataset's {dataset.n_items}"
        )
    config = config or EvalConfig()
    relevant = dataset.split(split)
    exclude = dataset.train
    if split == "test" and config.mask_valid_at_test:
        exclude = sp.csr_matrix(dataset.train + dataset.valid)
    candidates = None if mixed else dataset.cold_items.get(split)
    users = evaluation_users(relevant)
    n_rel_all = np.diff(relevant.indptr)
    ks = config.ks
    n_top = min(max(ks), dataset.n_items)  # a cut-off beyond the catalogue ranks it all
    sums: dict[str, float] = dict.fromkeys((f"{m}@{k}" for m in METRICS for k in ks), 0.0)
    # best 0-based rank each item reached in any user's list, for catalogue coverage
    best_rank = np.full(dataset.n_items, n_top, dtype=np.int64)
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            model.prepare_scoring()
            batches = range(0, len(users), config.batch_size)
            for start in tqdm(batches, desc=f"eval {split}", disable=not progress, leave=False):
                batch = users[start : start + config.batch_size]
                # (B, n_top) each; raises on a wrong score shape or a NaN score in any block
                _, top = ranked_topk(model, batch, n_top, exclude, candidates)
                top_np = top.cpu().numpy()
                ranks = np.broadcast_to(np.arange(top_np.shape[1]), top_np.shape)
                np.minimum.at(best_rank, top_np.ravel(), ranks.ravel())
                hits = hits_matrix(top_np, batch, relevant)  # (B, n_top)
                if n_top < max(ks):
                    hits = np.pad(hits, ((0, 0), (0, max(ks) - n_top)))
                for key, vals in ranking_metrics(hits, n_rel_all[batch], ks).items():
                    sums[key] += float(vals.sum())
    finally:
        if was_training:
            model.train()
    n = len(users)
    out = {k: (v / n if n else float("nan")) for k, v in sums.items()}
    ranked = best_rank if candidates is None else best_rank[candidates]
    for k in ks:
        out[f"coverage@{k}"] = coverage_at_k(ranked, k) if n and len(ranked) else float("nan")
    out["n_users"] = len(users)
    return out
