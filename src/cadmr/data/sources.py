"""Resolve a dataset argument (a path, a folder name, or a synthetic preset) to a Dataset.

Resolution order for ``spec``:

1. ``synthetic-<preset>`` (e.g. ``synthetic-small``): the embedded generator, data seed 0,
   so every run and every model sees the same data.
2. An existing folder path.
3. A folder named ``spec`` in the data directories, searched in this order: the explicit
   ``data_dir`` argument (``--data-dir``), the ``CADMR_DATA_DIR`` environment variable,
   ``./../shared/data`` and the ``shared/data`` folder beside this repository's checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Existing data directories in search order (see module docstring)."""
    candidates: list[Path] = []
    if data_dir:
        candidates.append(Path(data_dir))
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[3].parent / "shared" / "data")
    seen: list[Path] = []
    for c in candidates:
        c = c.resolve()
        if c.is_dir() and c not in seen:
            seen.append(c)
    return seen


def resolve_dataset(spec: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load the dataset named or located by ``spec``.

    Raises:
        DataError: if nothing matches; the message lists what was tried.
    """
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
    dirs = data_dirs(data_dir)
    for d in dirs:
        if (d / spec).is_dir():
            return load_dataset(d / spec)
    searched = ", ".join(str(d) for d in dirs) or "(no data directory exists)"
    raise DataError(
        f"dataset {spec!r} is neither a folder nor a synthetic preset "
        f"({', '.join(SYNTHETIC_PREFIX + p for p in PRESETS)}), and no folder of that name "
        f"is in the data directories: {searched}. Use --data-dir or ${ENV_VAR}."
    )
