"""cadmr experiment compare | ablation | heads | cold-start | leakage-audit | cold-items: the
paper's multi-run experiments and ours, over seeds, from cached runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cadmr.cli.common import add_data_dir, add_sets
from cadmr.errors import CadmrValueError

if TYPE_CHECKING:  # the CLI imports data and models inside commands: a fast --help
    from cadmr.data.dataset import Dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="the paper's multi-run experiments (cached runs)")
    p.set_defaults(handler=cmd_experiment)
    esub = p.add_subparsers(dest="experiment", required=True)
    e = esub.add_parser("compare", help="Table 2: every model over seeds, tuned on validation")
    _add_experiment_args(e, "compare")
    e.add_argument(
        "-m", "--models", nargs="+", help="labels MODEL[+mg][:param=value,...] (default Table 2)"
    )
    e = esub.add_parser("ablation", help="Table 3: CADMR, without TC (DRL), without CA")
    _add_experiment_args(e, "ablation")
    e = esub.add_parser("heads", help="Fig. 3: NDCG@10 of CADMR for 1, 2, 4, 8 heads (PNG)")
    _add_experiment_args(e, "heads")
    e.add_argument("--heads", nargs="+", type=int, default=[1, 2, 4, 8])
    e = esub.add_parser(
        "cold-start", help="Fig. 2: NDCG@10 with 80%% .. 20%% of each user's training data (PNG)"
    )
    _add_experiment_args(e, "cold-start")
    e.add_argument("-m", "--models", nargs="+", help="labels (default cadmr and 4 baselines)")
    e.add_argument("--fractions", nargs="+", type=float, default=[0.8, 0.6, 0.4, 0.2])
    e.add_argument(
        "--retune",
        action="store_true",
        help="search each model's grid again on every reduced training set (first seed)",
    )
    e = esub.add_parser(
        "leakage-audit",
        help="DIAGNOSTIC: honest vs deliberately leaked metrics, and a shuffled-label control",
    )
    _add_experiment_args(e, "leakage-audit")
    e.add_argument("-m", "--models", nargs="+", default=["cadmr", "ease"])
    e = esub.add_parser(
        "cold-items",
        help="new items: rank items without interactions from their features (table + PNG)",
    )
    _add_experiment_args(e, "cold-items")
    e.add_argument(
        "--fraction",
        type=float,
        default=0.2,
        help="share of the items held out cold, half for valid, half for test (default 0.2; "
        "-d NAME@cold=F[,seed=S] gives it directly)",
    )
    e.add_argument(
        "-m", "--models", nargs="+", help="labels (default: content_knn and every capable model)"
    )


def _add_experiment_args(e: argparse.ArgumentParser, name: str) -> None:
    e.add_argument("-d", "--dataset", required=True, help="dataset folder, name or synthetic-*")
    e.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    e.add_argument(
        "--grid",
        choices=("published", "budget", "none"),
        default="published",
        help="each model's validation grid: published, budget (2-3 values of its main "
        "regulariser, for small machines) or none (its defaults)",
    )
    e.add_argument("--no-tune", action="store_true", help="the same as --grid none")
    e.add_argument(
        "--select",
        choices=("each", "first"),
        default="each",
        help="each: every seed searches the grid; first: the first seed does, the others "
        "train its selected configuration",
    )
    add_sets(e, "override for every run, e.g. --set train.patience=10")
    e.add_argument("--out", help=f"output folder (default runs/experiments/<dataset>/{name})")
    e.add_argument("--cache", default="runs/experiments/cache", help="run cache folder")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_dir(e)


# Table 3's rows: the shown name -> the compare label. Our CADMR has no TC term by default
# (docs/cadmr.md), so its DRL row adds the paper's lambda = 0.5 instead of removing it
ABLATION = {
    "CADMR": "cadmr",
    "with DRL (TC, lambda 0.5)": "cadmr:tc_weight=0.5",
    "output path one way (A, not (A + A^T) / 2)": "cadmr:neighbour_reverse=false",
    "uniform attention start (no content prior)": "cadmr:prior_temperature=0",
    "attended rows to the input only": "cadmr:neighbour_output=0",
    "attended rows to the output only": "cadmr:neighbour_input=false",
    "w/o CA (own value only)": "cadmr:use_attention=false",
    "CA over every item (no neighbour limit)": "cadmr:attention_neighbours=0",
    "the paper's CA (feature values, no value skip)": (
        "cadmr:attention_values=features,attention_neighbours=0,value_skip=false"
    ),
    "paper's settings": "cadmr_paper",
}


def cmd_experiment(args: argparse.Namespace) -> int:
    from cadmr.data.cold import COLD_MARK
    from cadmr.data.sources import resolve_dataset

    if args.seeds < 1:
        raise CadmrValueError(f"--seeds must be >= 1, got {args.seeds}")
    spec = args.dataset
    if args.experiment == "cold-items" and COLD_MARK not in spec:
        spec = f"{spec}{COLD_MARK}{args.fraction:g}"
    dataset = resolve_dataset(spec, args.data_dir)
    out = Path(args.out or f"runs/experiments/{dataset.name}/{args.experiment}")
    seeds = range(args.seeds)
    grid = "none" if args.no_tune else args.grid
    common = {
        "seeds": seeds,
        "grid": grid,
        "sets": args.sets,
        "root": args.cache,
        "progress": not args.quiet,
    }
    how = {
        "none": "defaults",
        "published": "each model's published grid searched on validation",
        "budget": "each model's budget grid searched on validation",
    }[grid]
    if grid != "none" and args.experiment == "cold-start":
        if args.retune:
            how += f" of each reduced training set (seed {seeds[0]}; the others train it)"
        else:
            how += f" of the full training data (seed {seeds[0]}), then fixed"
    elif grid != "none" and args.select == "first":
        how += f" (seed {seeds[0]}; the other seeds train its selection)"
        common["select"] = "first"
    title = (
        f"{dataset.name} ({args.experiment}): test split, mean ± sample std over seeds "
        f"{', '.join(map(str, seeds))}; {how}"
    )
    run = SPECIAL.get(args.experiment, _table_experiment)
    return run(args, dataset, spec, out, title, common)


Common = dict[str, Any]  # the arguments every experiment passes to its runs


def _leakage_audit(
    args: argparse.Namespace, dataset: Dataset, spec: str, out: Path, title: str, common: Common
) -> int:
    from cadmr.experiments.leakage import leakage_audit, write_audit

    rows = leakage_audit(dataset, spec, models=args.models, **common)
    text = write_audit(out, dataset.name, rows)
    print(text, end="")
    print(f"tables: {out}/leakage-audit.{{md,json}}")
    return 0


def _cold_start(
    args: argparse.Namespace, dataset: Dataset, spec: str, out: Path, title: str, common: Common
) -> int:
    from cadmr.experiments.coldstart import MODELS, cold_start
    from cadmr.experiments.report import write_cold_start

    models = args.models or list(MODELS)
    by_fraction = cold_start(dataset, spec, models, args.fractions, retune=args.retune, **common)
    return _printed(*write_cold_start(out, dataset.name, title, by_fraction, models), out)


def _cold_items(
    args: argparse.Namespace, dataset: Dataset, spec: str, out: Path, title: str, common: Common
) -> int:
    from cadmr.experiments.cold_items import COLD_MODELS, cold_items, write_cold_items

    runs = cold_items(dataset, spec, args.models or COLD_MODELS, **common)
    return _printed(*write_cold_items(out, dataset.name, title, runs), out)


def _printed(text: str, png: Path, out: Path) -> int:
    """Print an experiment's tables and where its plot and table files are."""
    print(text, end="")
    print(f"plot: {png}\ntables: {out / png.stem}.{{md,csv,json}}")
    return 0


def _table_experiment(
    args: argparse.Namespace, dataset: Dataset, spec: str, out: Path, title: str, common: Common
) -> int:
    """compare, ablation and heads: one table of labels over seeds (heads adds a plot)."""
    from cadmr.experiments import compare
    from cadmr.experiments.compare import TABLE2
    from cadmr.experiments.report import heads_figure, write_summary

    if args.experiment == "compare":
        names = {label: label for label in args.models or TABLE2}
    elif args.experiment == "ablation":
        names = ABLATION
    else:  # heads
        names = {f"{h} heads": f"cadmr:heads={h}" for h in args.heads}
    runs = compare(dataset, spec, models=list(names.values()), **common)
    runs = {shown: runs[label] for shown, label in names.items()}
    stem = out / args.experiment
    text, rows = write_summary(stem, title, runs)
    print(text, end="")
    if args.experiment == "heads":
        title = f"{dataset.name}: CADMR by number of heads"
        print(f"plot: {heads_figure(rows, args.heads, title, stem.with_suffix('.png'))}")
    print(f"tables: {stem}.{{md,csv,json}}")
    return 0


SPECIAL = {"leakage-audit": _leakage_audit, "cold-start": _cold_start, "cold-items": _cold_items}
