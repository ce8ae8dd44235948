"""Where a model's hits come from: hit@K of the split's interactions, grouped by how many
training users the item has, for one or more trained models side by side (docs/cadmr.md,
"Input rows of equal norm", where it located the autoencoder's gap to EASE on Baby).

    .venv/bin/python scripts/hits_by_popularity.py RUN/best.pt [RUN/best.pt ...] \
        [--split valid] [--k 20] [--edges 10 30 100]

Each checkpoint is ranked as the protocol ranks it (full catalogue, the user's training
items excluded; ``Recommender.recommend``). An interaction is a hit when its item is in the
user's top K; a group's hit rate is its hits over its interactions. The last line is the
protocol's Recall@K (the users' mean), to check it against the run's results.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import scipy.sparse as sp

import cadmr
from cadmr.data.sources import resolve_dataset
from cadmr.eval.protocol import evaluation_users
from cadmr.train.checkpoint import load_checkpoint

USER_BLOCK = 2048


def top_items(model, users: np.ndarray, k: int) -> np.ndarray:
    """(len(users), k) top-k items, the training items excluded; the model prepares its
    scoring (an autoencoder encodes every item) once, not once per block of users."""
    model.prepare_scoring()
    blocks = range(0, len(users), USER_BLOCK)
    return np.concatenate(
        [model.recommend(users[s : s + USER_BLOCK], k=k, prepare=False)[0] for s in blocks]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--split", choices=["valid", "test"], default="valid")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--edges", type=int, nargs="+", default=[10, 30, 100])
    args = parser.parse_args()
    data = resolve_dataset(load_checkpoint(args.checkpoints[0])["config"]["dataset"])
    relevant = sp.csr_matrix(getattr(data, args.split))
    users = evaluation_users(relevant)
    rows = relevant[users]
    owner = np.repeat(np.arange(len(users)), np.diff(rows.indptr))  # each interaction's user
    popularity = np.asarray((data.train > 0).sum(axis=0)).ravel()[rows.indices]
    edges = [0, *args.edges, np.inf]
    groups = list(itertools.pairwise(edges))
    header = [f"{lo:g}-{hi - 1:g}" if np.isfinite(hi) else f"{lo:g}+" for lo, hi in groups]
    print(f"{data.name}, {args.split}: hit@{args.k} by the item's training users")
    print("| model | " + " | ".join(header) + f" | recall@{args.k} |")
    print("|---|" + "---|" * (len(groups) + 1))
    in_group = [(popularity >= lo) & (popularity < hi) for lo, hi in groups]
    print("| interactions | " + " | ".join(f"{int(g.sum()):,}" for g in in_group) + " | - |")
    for path in args.checkpoints:
        model = cadmr.load(path, data)
        top = top_items(model, users, args.k)
        hit = (top[owner] == rows.indices[:, None]).any(axis=1)
        rates = [hit[g].mean() for g in in_group]
        recall = np.bincount(owner, weights=hit, minlength=len(users)) / np.diff(rows.indptr)
        print(f"| {path} | " + " | ".join(f"{r:.4f}" for r in rates) + f" | {recall.mean():.4f} |")


if __name__ == "__main__":
    main()
