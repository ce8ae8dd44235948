"""Table 2 of the paper: every model on one dataset over seeds, each tuned on validation."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cadmr.config import RunConfig
from cadmr.data.dataset import Dataset
from cadmr.errors import CadmrValueError
from cadmr.experiments.cache import cached_run
from cadmr.train import resolve_run_config

# the models of the paper's Table 2 that run here, and its references (`+mg`: the base model
# trained with Mirror Gradient at the base model's selected configuration, as the MG paper
# applies MG to tuned models, its alpha_2 chosen on validation from MG_ALPHA2)
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
# Mirror Gradient's ascent scale searched for a `+mg` label (MMRec's mg.yaml grid, with its
# alpha_1 1 and interval 3, our TrainConfig defaults); a `--set train.mirror_alpha2=X` fixes it
MG_ALPHA2 = (0.1, 0.2, 0.3)


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
        raise CadmrValueError(f"label {label!r}: expected MODEL[+mg][:param=value,...]")
    return model, sets, head.endswith(MG)


def compare(
    dataset: Dataset,
    spec: str,
    models: Sequence[str] = TABLE2,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    grid: str = "published",
    select: str = "each",
    sets: Sequence[str] = (),
    root: str | Path = "runs/experiments/cache",
    progress: bool = True,
    fixed: Mapping[str, Mapping[str, Any]] | None = None,
    bar: tqdm | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Train (or read from the cache) every model label for every seed.

    Args:
        dataset: The loaded dataset.
        spec: How the dataset was named (recorded in the run configurations).
        models: Labels ``MODEL[+mg][:param=value,...]`` (``parse_label``): a registered
            model, optionally with parameter overrides; ``+mg`` retrains the selected
            configuration of the same label without it, same seed, with Mirror Gradient,
            its alpha_2 chosen on validation from ``MG_ALPHA2`` (by the seed that searches).
        seeds: Seeds.
        grid: Each model's validation grid (``resolve_run_config``): "published",
            "budget" or "none" (its defaults).
        select: "each": every seed searches the grid; "first": the first seed does and the
            other seeds train its selected parameters (a ``len(seeds)``-fold cheaper
            protocol; every number is still chosen on validation).
        sets: ``--set`` overrides applied to every run (e.g. ``train.patience=10``).
        root: Run cache (runs are keyed by resolved configuration and data fingerprint).
        progress: Show a runs-done / total bar with its ETA.
        fixed: Label (without ``+mg``) -> parameters to train instead of searching.
        bar: A progress bar to advance by one per run (an experiment made of several
            ``compare`` calls shows one bar for all); by default, one of this call's own.

    Returns:
        label -> the results of its runs, in seed order.
    """
    if select not in ("each", "first"):
        raise ValueError(f"select must be 'each' or 'first', got {select!r}")
    seeds = list(seeds)
    searched: dict[tuple[str, int], dict[str, Any]] = {}  # (label, seed) -> its search run
    mirrored: dict[tuple[str, int], dict[str, Any]] = {}  # (+mg label, seed) -> best alpha_2

    def selection(label: str, seed: int, sets: list[str]) -> Mapping[str, Any]:
        if fixed is not None and label in fixed:
            return fixed[label]
        key = (label, seeds[0] if select == "first" else seed)
        if key not in searched:
            config = resolve_run_config(
                parse_label(label)[0], spec, sets=sets, seed=key[1], grid=grid
            )
            searched[key] = cached_run(_quiet(config), dataset, root)
        return searched[key]["params"]

    todo = [(label, seed) for label in models for seed in seeds]
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in models}
    own = bar is None
    if bar is None:
        bar = tqdm(total=len(todo), desc=dataset.name, unit="run", disable=not progress)
    for label, seed in todo:
        bar.set_postfix_str(f"{dataset.name}: {label} seed {seed}")
        model, overrides, mg = parse_label(label)
        run_sets = [*sets, *overrides]
        base = label.replace(MG, "", 1)
        params = selection(base, seed, run_sets)  # searches (cached) where it must
        no_search = [kv for kv in run_sets if not kv.startswith("search.")]
        train = functools.partial(_train, dataset, spec, root, model, params, no_search)
        if not mg and (base, seed) in searched:  # this run is the search itself
            out = searched[base, seed]
        elif not mg:
            out = train(seed)
        elif any(kv.startswith("train.mirror_alpha2=") for kv in run_sets):
            out = train(seed, {})  # the user's alpha_2 (sets outrank extra)
        else:
            key = (label, seeds[0] if select == "first" else seed)
            if key not in mirrored:  # MG_ALPHA2 on the searching seed, best on validation
                trials = [train(key[1], {"mirror_alpha2": a}) for a in MG_ALPHA2]
                mirrored[key] = max(trials, key=_valid_score)
            alpha2 = mirrored[key]["config"]["train"]["mirror_alpha2"]
            out = mirrored[key] if key[1] == seed else train(seed, {"mirror_alpha2": alpha2})
        results[label].append(out)
        bar.update()
    if own:
        bar.close()
    return results


def _train(
    dataset: Dataset,
    spec: str,
    root: str | Path,
    model: str,
    params: Mapping[str, Any],
    sets: list[str],
    seed: int,
    mirror: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One cached run of ``model`` at ``params`` without a search; with ``mirror``, Mirror
    Gradient on with those train settings."""
    extra: dict[str, Any] = {"params": dict(params), "search": {}}
    if mirror is not None:
        extra["train"] = {"mirror_gradient": True, **mirror}
    config = resolve_run_config(model, spec, sets=sets, seed=seed, extra=extra)
    return cached_run(_quiet(config), dataset, root)


def _valid_score(results: Mapping[str, Any]) -> float:
    """A run's best validation value of the metric it early-stopped on."""
    return float(results["valid"][results["config"]["eval"]["valid_metric"]])


def _quiet(config: RunConfig) -> RunConfig:
    """No per-run progress bars under the experiment's own."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, progress=False))
