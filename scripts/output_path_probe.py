"""Probe CADMR's output path before training anything (docs/cadmr.md, "The attended rows at
the output" and "Both directions"): each trained ``kernel_ae`` of ``scripts/cadmr_table.sh``
(runs/table/DATASET/kernel_ae-seedS/best.pt) scores items by its reconstruction plus
W x (content term) / n_u, where the content term mixes the training rows of each item's 10
nearest items by features (CADMR's attention candidates) with uniform weights, or with
``--priors T ...`` weights softmax(cos / T) over each item's candidates (the attention of
``prior_temperature`` T whose own scores are zero; 0 = uniform): one way (A R, an item's
own neighbours), reverse only (A^T R, the items whose neighbour it is) or both
((A + A^T) / 2 R). Prints validation Recall@20 per prior, direction and weight, mean over
the seeds. Usage:

    .venv/bin/python scripts/output_path_probe.py scientific [--seeds 0 1 2] [--weights 4 6 8 12]
        [--priors 0 0.1] [--directions both]
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp
import torch

import cadmr
from cadmr.data import LeakageGuard
from cadmr.data.sources import resolve_dataset
from cadmr.eval.protocol import evaluate
from cadmr.train.resolve import resolve_run_config
from cadmr.train.trainer import build_model


class FixedScores:
    """A (users x items) score matrix as a recommender ``evaluate`` can rank."""

    name, item_block, training = "probe", 0, False

    def __init__(self, scores: torch.Tensor) -> None:
        self.scores, self.n_items = scores, scores.shape[1]

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.scores[users]

    def prepare_scoring(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weights", type=float, nargs="+", default=[4.0, 6.0, 8.0, 12.0])
    parser.add_argument("--priors", type=float, nargs="+", default=[0.0])
    parser.add_argument(
        "--directions",
        nargs="+",
        default=["one way", "reverse only", "both"],
        choices=["one way", "reverse only", "both"],
    )
    args = parser.parse_args()
    data = resolve_dataset(args.dataset)
    # CADMR's candidates: each item's 10 nearest other items by features
    config = resolve_run_config("cadmr", args.dataset)
    model = build_model(config, config.params, data)
    model.setup(data.train, data.features, LeakageGuard(data))
    cand, similarity = (t.cpu() for t in model.feature_neighbours(10))
    n, k = cand.shape
    shares = model._user_share_rows  # users x items: each user's row / their training count
    terms = {}
    for prior in args.priors:
        w = torch.softmax(similarity / prior, 1) if prior else torch.full((n, k), 1 / k)
        a = sp.csr_matrix((w.numpy().ravel(), (np.repeat(np.arange(n), k), cand.numpy().ravel())))
        one_way = torch.from_numpy((shares @ a.T).toarray()).float()  # sum_j A_ij R_uj / n_u
        reverse = torch.from_numpy((shares @ a).toarray()).float()  # sum_j A_ji R_uj / n_u
        both = (one_way + reverse) / 2
        every = {"one way": one_way, "reverse only": reverse, "both": both}
        terms.update({(prior, d): every[d] for d in args.directions})
    results: dict[tuple[float, str, float], list[float]] = {}
    for seed in args.seeds:
        ae = cadmr.load(f"runs/table/{args.dataset}/kernel_ae-seed{seed}/best.pt", data)
        ae.eval()
        with torch.no_grad():
            ae.prepare_scoring()
            users = np.arange(data.n_users)
            base = torch.cat([ae.score(users[s : s + 512]) for s in range(0, len(users), 512)])
        results.setdefault((0.0, "autoencoder", 0.0), []).append(
            evaluate(FixedScores(base), data, "valid")["recall@20"]
        )
        for (prior, name), term in terms.items():
            for w in args.weights:
                r = evaluate(FixedScores(base + w * term), data, "valid")["recall@20"]
                results.setdefault((prior, name, w), []).append(r)
    print(f"{args.dataset}: validation recall@20, mean over seeds {args.seeds}")
    print("| prior T | direction | W | mean | per seed |\n|---|---|---|---|---|")
    for (prior, name, w), values in results.items():
        per_seed = " ".join(f"{v:.4f}" for v in values)
        print(f"| {prior:g} | {name} | {w:g} | {np.mean(values):.4f} | {per_seed} |")


if __name__ == "__main__":
    main()
