"""How well do feature kNN graphs match co-consumption? For each dataset and modality: the mean
interaction cosine (over the training matrix's item columns) between an item and its 10
nearest items by feature cosine, next to random items and the 10 best co-consumed items.

Usage: python scripts/feature_graph_quality.py [DATASET ...]   (default: ml100k lfm2k)
Small catalogues only: the oracle row forms the dense item x item cosine matrix.
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.sparse as sp

from cadmr.data.sources import resolve_dataset
from cadmr.models.graphs import knn_neighbours

K = 10


def mean_cos(cosine: np.ndarray, idx: np.ndarray) -> float:
    """Mean of ``cosine[i, idx[i, j]]`` over items i and their neighbours j."""
    rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
    return float(np.nanmean(cosine[rows, idx.ravel()]))


def main(names: list[str]) -> None:
    print(f"| dataset | random items | by each modality's {K}-NN | best {K} co-consumed |")
    print("|---|---|---|---|")
    for name in names:
        d = resolve_dataset(name)
        cols = sp.csr_matrix(d.train.T, dtype=np.float32, copy=True)  # (I, U) binary
        cols.data[:] = 1.0
        norms = np.sqrt(np.asarray(cols.sum(axis=1)).ravel()) + 1e-12
        cosine = (cols @ cols.T).toarray() / np.outer(norms, norms)  # (I, I)
        np.fill_diagonal(cosine, np.nan)

        rng = np.random.default_rng(0)
        random = rng.integers(0, d.n_items, size=(d.n_items, K))
        best = np.argsort(-np.nan_to_num(cosine, nan=-1.0), axis=1)[:, :K]
        by_modality = []
        for m, f in sorted(d.features.items()):
            idx, _ = knn_neighbours(f, K + 1)  # the item itself comes first
            by_modality.append(f"{m} {mean_cos(cosine, idx[:, 1:].numpy()):.3f}")
        print(
            f"| {name} | {mean_cos(cosine, random):.3f} | {'; '.join(by_modality)} | "
            f"{mean_cos(cosine, best):.3f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["ml100k", "lfm2k"])
