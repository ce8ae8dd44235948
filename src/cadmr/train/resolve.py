"""Resolve a run configuration from the registry, a configuration file and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cadmr.config import RunConfig, build_run_config, load_yaml, parse_sets
from cadmr.data.cold import COLD_MARK
from cadmr.models import get_model_class

GRIDS = ("none", "published", "budget")


def resolve_run_config(
    model: str,
    dataset: str,
    config_file: str | Path | None = None,
    sets: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
    extra: dict[str, Any] | None = None,
    grid: str = "none",
) -> RunConfig:
    """Merge defaults (the dataclasses', then the model's ``train_defaults``, and on a
    cold-item split its ``cold_defaults``) ->
    ``config_file`` -> ``extra`` -> ``sets`` -> ``seed``, and validate the result strictly.

    ``search`` is what the layers set. Where no layer sets one, ``grid`` decides (``GRIDS``):
    "none" (one configuration, as ``cadmr train``), "published" (the model's published grid,
    ``default_search``, as ``cadmr tune`` searches) or "budget" (its ``budget_search``, the
    published grid where it has none).

    A model's defaults live in one file, its module: the params dataclass, the grids and
    ``train_defaults``.
    """
    cls = get_model_class(model)
    layers: list[dict[str, Any]] = []
    if cls.train_defaults:
        layers.append({"train": dict(cls.train_defaults)})
    if cls.cold_defaults and COLD_MARK in dataset:
        layers.append({"params": dict(cls.cold_defaults)})
    if config_file:
        layers.append(load_yaml(config_file))
    if extra:
        layers.append(extra)
    layers.append(parse_sets(list(sets)))
    if seed is not None:
        layers.append({"seed": seed})
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    default = {
        "none": None,
        "published": cls.default_search,
        "budget": cls.default_search if cls.budget_search is None else cls.budget_search,
    }[grid]
    return build_run_config(cls.name, dataset, cls.params_cls, layers, default)
