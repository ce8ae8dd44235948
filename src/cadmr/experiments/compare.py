"""Table 2 of the paper: every model on one dataset over seeds, each tuned on validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cadmr.config import RunConfig
from cadmr.data.dataset import Dataset
from cadmr.experiments.cache import cached_run
from cadmr.train import resolve_run_config

# the models of the paper's Table 2 that run here, and its references (`+mg`: the base model
# trained with Mirror Gradient at the base model's selected configuration, as the MG paper
# applies MG to tuned models)
TABLE2 = (
    "ease",
    "lightgcn",
    "vbpr",
    "lattice",
    "bm3",
    "slmrec",
    "addvae",
    "freedom",
    "dragon",
    "dragon+mg",
    "cadmr",
)
MG = "+mg"


def parse_label(label: str) -> tuple[str, list[str], bool]:
    """``MODEL[+mg][:param=value,...]`` -> (model, ``--set`` overrides, Mirror Gradient?).

    E.g. ``cadmr:tc_weight=0`` (CADMR without its TC term), ``cadmr:heads=2``,
    ``dragon+mg``. Values are parsed as YAML, as ``--set`` does.
    """
    head, _, overrides = label.partition(":")
    model = head.removesuffix(MG)
    sets = [f"params.{kv.strip()}" for kv in overrides.split(",") if kv.strip()]
    bad = [kv for kv in sets if "=" not in kv]
    if bad:
        raise ValueError(f"label {label!r}: expected MODEL[+mg][:param=value,...]")
    return model, sets, head.endswith(MG)


def compare(
    dataset: Dataset,
    spec: str,
    models: Sequence[str] = TABLE2,
    seeds: Sequence[int] = (0, 1, 2),
    tune: bool = True,
    sets: Sequence[str] = (),
    root: str | Path = "runs/experiments/cache",
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Train (or read from the cache) every model label for every seed.

    Args:
        dataset: The loaded dataset.
        spec: How the dataset was named (packaged dataset YAML is looked up by it).
        models: Labels ``MODEL[+mg][:param=value,...]`` (``parse_label``): a registered
            model, optionally with parameter overrides; ``+mg`` retrains the selected
            configuration of the same label without it, same seed, with Mirror Gradient.
        seeds: Seeds; each seed selects its own configuration on validation.
        tune: Search each model's published grid (``cadmr tune``); otherwise its defaults.
        sets: ``--set`` overrides applied to every run (e.g. ``train.patience=10``).
        root: Run cache (runs are keyed by resolved configuration and data fingerprint).
        progress: Show a runs-done / total bar with its ETA.

    Returns:
        label -> the results of its runs, in seed order.
    """
    todo = [(label, seed) for label in models for seed in seeds]
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in models}
    selected: dict[tuple[str, int], dict[str, Any]] = {}
    bar = tqdm(todo, desc=f"compare on {dataset.name}", unit="run", disable=not progress)
    for label, seed in bar:
        bar.set_postfix_str(f"{label} seed {seed}")
        model, overrides, mg = parse_label(label)
        run_sets = [*sets, *overrides]
        if mg:  # the base configuration's selection (same overrides, same seed) comes first
            key = (label.replace(MG, "", 1), seed)
            if key not in selected:
                selected[key] = _run(dataset, spec, model, seed, tune, run_sets, root)
            params = selected[key]["params"]
            extra = {"params": params, "search": {}, "train": {"mirror_gradient": True}}
            config = resolve_run_config(model, spec, sets=run_sets, seed=seed, extra=extra)
            out = cached_run(_quiet(config), dataset, root)
        else:
            out = _run(dataset, spec, model, seed, tune, run_sets, root)
            selected[label, seed] = out
        results[label].append(out)
    return results


def _run(
    dataset: Dataset,
    spec: str,
    model: str,
    seed: int,
    tune: bool,
    sets: Sequence[str],
    root: str | Path,
) -> dict[str, Any]:
    config = resolve_run_config(model, spec, sets=sets, seed=seed, use_default_search=tune)
    return cached_run(_quiet(config), dataset, root)


def _quiet(config: RunConfig) -> RunConfig:
    """No per-run progress bars under the experiment's own."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, progress=False))
