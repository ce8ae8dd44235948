"""The cold-item split: items nobody interacted with in training, ranked from content.

``cold_item_split(dataset, fraction, seed)`` pools every interaction of ``dataset``, draws a
seeded random ``fraction`` of the items, and holds them out with ALL their interactions:
the first half of the drawn items (rounded down) are the validation cold items, the rest
the test cold items (disjoint sets). Training is every interaction with the other (warm)
items, so no model sees a cold item's interactions; evaluation then ranks, for each user,
the split's cold items only (the usual setting of the cold-start literature, e.g. CLCRec,
ALDI), and a second ranking over the whole catalogue ("mixed", cold items competing with
warm ones) is reported beside it (docs/protocol.md).

On the command line the split is a suffix of the dataset argument:
``-d scientific@cold=0.2`` (seed 0) or ``-d scientific@cold=0.2,seed=1``, so a checkpoint
trained on it resolves the same split again for evaluate / recommend / serve.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cadmr.data.dataset import DataError, Dataset

COLD_MARK = "@cold="


def cold_item_split(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``dataset`` re-split with a seeded ``fraction`` of its items cold (module docstring).

    Raises:
        DataError: if the fraction is not in (0, 1) or leaves fewer than one cold item per
            held-out split.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the cold-item fraction must be in (0, 1), got {fraction}")
    n = dataset.n_items
    drawn = np.random.default_rng(seed).permutation(n)[: round(fraction * n)]
    half = len(drawn) // 2
    cold = {"valid": np.sort(drawn[:half]), "test": np.sort(drawn[half:])}
    if half == 0:
        raise DataError(
            f"{dataset.name}: a cold fraction of {fraction} gives {len(drawn)} cold item(s) "
            f"of {n}; valid and test need at least one each"
        )
    pooled = sp.csr_matrix(dataset.train + dataset.valid + dataset.test)
    columns = {s: np.zeros(n, dtype=np.float32) for s in cold}
    for s, items in cold.items():
        columns[s][items] = 1.0
    warm = 1.0 - columns["valid"] - columns["test"]
    splits = {
        "train": pooled @ sp.diags(warm),
        "valid": pooled @ sp.diags(columns["valid"]),
        "test": pooled @ sp.diags(columns["test"]),
    }
    name = f"{dataset.name}{COLD_MARK}{fraction:g}" + (f",seed={seed}" if seed else "")
    info = {k: v for k, v in dataset.info.items() if not k.startswith("cold_")}
    info["cold_split"] = {"fraction": fraction, "seed": seed, "from": dataset.name}
    return Dataset.build(name, splits, dataset.features, info, cold_items=cold)


def parse_cold_spec(spec: str) -> tuple[str, float, int] | None:
    """``"NAME@cold=F[,seed=S]"`` -> (NAME, F, S); None when ``spec`` has no cold suffix.

    Raises:
        DataError: on a malformed suffix.
    """
    base, mark, rest = spec.rpartition(COLD_MARK)
    if not mark:
        return None
    fraction, _, seed_part = rest.partition(",")
    try:
        seed = int(seed_part.removeprefix("seed=")) if seed_part else 0
        if seed_part and not seed_part.startswith("seed="):
            raise ValueError
        return base, float(fraction), seed
    except ValueError:
        raise DataError(
            f"{spec!r}: expected NAME{COLD_MARK}FRACTION[,seed=N], e.g. scientific@cold=0.2"
        ) from None
