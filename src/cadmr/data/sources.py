"""Resolve a dataset argument (a path, a folder name, or a synthetic preset) to a Dataset.

Resolution order for ``spec``:

1. ``synthetic-<preset>`` (e.g. ``synthetic-small``): the embedded generator, data seed 0,
   so every run and every model sees the same data.
2. An existing folder path.
   Any of these with a suffix ``@cold=F[,seed=S]``: the cold-item split (data/cold.py).
3. A folder named ``spec`` in the data directory: the explicit ``data_dir`` argument
   (``--data-dir``), else the ``CADMR_DATA_DIR`` environment variable, else ``./data``
   (where ``cadmr data download`` puts datasets by default).

The library knows no other place. The team's shared datasets are configured where the
team works: the Makefile and the tests' conftest set ``CADMR_DATA_DIR`` to
``../shared/data`` when it is unset.
"""

from __future__ import annotations

import os
from pathlib import Path

from cadmr.data.cold import cold_item_split, parse_cold_spec
from cadmr.data.dataset import DataError, Dataset
from cadmr.data.readers import load_dataset
from cadmr.data.synthetic import PRESETS, make_content_planted, make_synthetic

SYNTHETIC_PREFIX = "synthetic-"
DEFAULT_DATASET = "synthetic-small"
# make_content_planted: interactions only the features explain; "-hard": two users per item
# and half the items with noise for features, so only the attention can place those
PLANTED = {
    "content-planted": {},
    "content-planted-hard": {"users_per_item": 2, "uninformative": 0.5},
}
ENV_VAR = "CADMR_DATA_DIR"
DEFAULT_DATA_DIR = "data"


def data_directory(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory (see module docstring); it need not exist."""
    return Path(explicit or os.environ.get(ENV_VAR) or DEFAULT_DATA_DIR).expanduser()


def resolve_dataset(spec: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load the dataset named or located by ``spec``; ``NAME@cold=F[,seed=S]`` is NAME
    re-split with a fraction F of its items cold (data/cold.py).

    Raises:
        DataError: if nothing matches; the message lists what was tried.
    """
    cold = parse_cold_spec(spec)
    if cold is not None:
        base, fraction, seed = cold
        return cold_item_split(resolve_dataset(base, data_dir), fraction, seed)
    if spec.startswith(SYNTHETIC_PREFIX):
        preset = spec[len(SYNTHETIC_PREFIX) :]
        if preset in PLANTED:
            return make_content_planted(name=spec, **PLANTED[preset])
        if preset not in PRESETS:
            raise DataError(
                f"unknown synthetic preset {preset!r}; available: "
                + ", ".join(SYNTHETIC_PREFIX + p for p in (*PRESETS, *PLANTED))
            )
        return make_synthetic(preset, seed=0, name=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_dataset(path)
    folder = data_directory(data_dir)
    if (folder / spec).is_dir():
        return load_dataset(folder / spec)
    where = "--data-dir" if data_dir else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "default"
    raise DataError(
        f"dataset {spec!r} is neither a folder nor a synthetic preset "
        f"({', '.join(SYNTHETIC_PREFIX + p for p in PRESETS)}), and {folder.resolve()} (the "
        f"data directory, {where}) has no folder of that name. Use --data-dir or ${ENV_VAR}."
    )
