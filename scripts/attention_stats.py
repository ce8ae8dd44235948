"""What CADMR's cross-attention attends to, for trained checkpoints (docs/cadmr.md, "What the
attention learns"). Usage:

    .venv/bin/python scripts/attention_stats.py CHECKPOINT [CHECKPOINT ...]

For every item as the query (its training row, as when scoring), the attention weights over
all items, averaged over heads, summarised as a Markdown row:

- the largest and smallest weight and the entropy, against uniform (1/I, log I);
- the mass on the item's 20 most co-occurring items (training users in common) and on its
  20 nearest items by features (cosine over all modalities concatenated), against
  uniform's 20/I: does it attend to related items?
- on `synthetic-content-planted*` data, the mass on the item's own group (chance 1/groups).

It forms I x I matrices, so it is meant for catalogues of up to about 20,000 items.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from cadmr.data.sources import resolve_dataset
from cadmr.data.synthetic import planted_item_groups
from cadmr.train.checkpoint import load_checkpoint, load_model

MAX_ITEMS = 20_000
NEIGHBOURS = 20
BLOCK = 256  # query items per attention call


def attention_matrix(model, n_items: int) -> np.ndarray:
    """(I, I): row i is item i's attention over all items, mean over heads."""
    blocks = [
        model.attention_weights(np.arange(start, min(start + BLOCK, n_items))).mean(dim=0)
        for start in range(0, n_items, BLOCK)
    ]
    return torch.cat(blocks).detach().cpu().numpy()


def mass_on(weights: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """Per item: the attention mass on its NEIGHBOURS most similar other items."""
    similarity = similarity.astype(np.float64)
    np.fill_diagonal(similarity, -np.inf)
    top = np.argpartition(-similarity, NEIGHBOURS, axis=1)[:, :NEIGHBOURS]
    return np.take_along_axis(weights, top, axis=1).sum(axis=1)


def row(path: str) -> str:
    ck = load_checkpoint(path)
    dataset = resolve_dataset(ck["config"]["dataset"])
    n = dataset.n_items
    if n > MAX_ITEMS:
        raise SystemExit(f"{path}: {n} items; this script forms {n} x {n} matrices")
    model, _ = load_model(path, dataset)
    if not hasattr(model, "attention_weights"):
        raise SystemExit(f"{path}: {ck['config']['model']} has no cross-attention")
    w = attention_matrix(model, n)
    x = dataset.train.tocsc().astype(np.float32)
    cooccur = (x.T @ x).toarray()
    feats = np.concatenate([np.asarray(f, dtype=np.float32) for f in dataset.features.values()], 1)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-12)
    entropy = -(w * np.log(np.clip(w, 1e-30, None))).sum(axis=1).mean() / np.log(n)
    has_cooccur = cooccur.max(axis=1) > 0  # items sharing no user with any other are left out
    cells = [
        dataset.name,
        f"{w.max(axis=1).mean() * n:.2f} / I",
        f"{w.min(axis=1).mean() * n:.2f} / I",
        f"{entropy:.4f}",
        f"{mass_on(w, cooccur)[has_cooccur].mean():.4f}",
        f"{mass_on(w, feats @ feats.T).mean():.4f}",
        f"{NEIGHBOURS / n:.4f}",
    ]
    groups = planted_item_groups(dataset)
    if groups is None:
        cells.append("-")
    else:
        same = groups[:, None] == groups[None, :]
        cells.append(f"{(w * same).sum(axis=1).mean():.3f} (chance {same.mean():.3f})")
    return "| " + " | ".join([path, *cells]) + " |"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    print(
        "| checkpoint | dataset | largest weight | smallest | entropy / log I "
        f"| mass on {NEIGHBOURS} co-occurring | on {NEIGHBOURS} nearest by features "
        "| uniform | own group |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in argv:
        print(row(path), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
