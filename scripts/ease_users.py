"""EASE on the transposed matrix: the user-user linear model, for docs/cadmr.md ("Baby").

An item autoencoder (kernel_ae, CADMR's backbone) predicts an item's users from its other
users, so it belongs to the user-user family; this script gives that family's closed-form
reference on a dataset, the same solve as `cadmr` EASE (models/ease.py) on R^T. Usage:

    .venv/bin/python scripts/ease_users.py baby --lambdas 500 1000 2000 4000 [--split test]

The (U, U) solve runs on one core: Baby's 19,445 users take about 5 minutes a lambda and
3 GiB (float64). Prints validation (or test) Recall@20 and NDCG@10 per lambda.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp
import torch

from cadmr.data.sources import resolve_dataset
from cadmr.eval.protocol import evaluate
from cadmr.models.ease import ease_weights_in_place, gram
from cadmr.models.layers import to_torch_sparse


class UserUserEASE:
    """Scores ``B^T R``: user u's score of item i is the B-weighted sum of the other users'
    interactions with i (B = EASE's weights on R^T, zero diagonal). Just what ``evaluate``
    asks of a model."""

    name = "ease_users"
    item_block = 0
    training = False

    def __init__(self, train: sp.csr_matrix, weights: np.ndarray) -> None:
        self.n_items = train.shape[1]
        self.items_by_users = to_torch_sparse(sp.csr_matrix(train.T, dtype=np.float32))
        self.weights = torch.from_numpy(weights.astype(np.float32))  # (U, U)

    def prepare_scoring(self) -> None:
        pass

    def score(self, users: np.ndarray) -> torch.Tensor:
        columns = self.weights[:, torch.from_numpy(np.asarray(users, dtype=np.int64))]
        return torch.sparse.mm(self.items_by_users, columns).T.contiguous()  # (B, I)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[500.0, 1000.0, 2000.0])
    parser.add_argument("--split", choices=["valid", "test"], default="valid")
    args = parser.parse_args()
    dataset = resolve_dataset(args.dataset)
    users_gram = gram(sp.csr_matrix(dataset.train.T), np.float64)  # (U, U)
    for lam in args.lambdas:
        weights = ease_weights_in_place(users_gram.copy(), lam)
        metrics = evaluate(UserUserEASE(dataset.train, weights), dataset, args.split)
        print(
            f"{dataset.name} lambda {lam:g}: {args.split} recall@20 {metrics['recall@20']:.4f}"
            f" ndcg@10 {metrics['ndcg@10']:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
