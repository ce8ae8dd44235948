"""Command-line interface: parse arguments, call library functions, print.

cadmr demo                                   the README's main job
cadmr train -m MODEL -d DATASET [--config FILE] [--set k=v ...] [--out DIR] [--seed N]
cadmr tune -m MODEL -d DATASET [...]          the same, over the model's validation grid
cadmr evaluate CHECKPOINT [--split test]
cadmr recommend CHECKPOINT --user U [-k 10]
cadmr explain CHECKPOINT --item I | --user U   what CADMR attended to
cadmr data describe DATASET
cadmr experiment compare -d DATASET [-m MODEL ...] [--seeds 3]   Table 2, cached runs
cadmr experiment ablation | heads | cold-start -d DATASET        Table 3, Fig. 3, Fig. 2
cadmr experiment leakage-audit -d DATASET        honest vs planted-leak metrics (diagnostic)
cadmr data prepare REVIEWS --out DIR [--meta FILE] [--images DIR --image-model PTH] [-k 5]
cadmr data download NAME [--dest DIR] [--base-url URL | --url URL] [--sha256 HEX]
cadmr models
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from cadmr import __version__
from cadmr.config import ConfigError, EvalConfig
from cadmr.data.dataset import DataError
from cadmr.data.leakage import LeakageError

DEMO_MODELS = ("ease", "kernel_ae", "cadmr")
# a short schedule so the demo takes minutes on two cores; each phase still early-stops on
# validation (the full defaults are patience 20 and up to 1000 epochs)
DEMO_SCHEDULE = {"train": {"patience": 5, "epochs": 60}}


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="folder holding named datasets (default: $CADMR_DATA_DIR, then ../shared/data)",
    )


def _add_checkpoint_args(p: argparse.ArgumentParser, dataset_help: str) -> None:
    """What every command that loads a checkpoint takes besides it."""
    p.add_argument("--dataset", help=dataset_help)
    _add_data_dir(p)
    p.add_argument(
        "--device",
        default="cpu",
        help="where a gradient-trained model scores: cpu, cuda, cuda:N or auto (default cpu)",
    )


def _add_run_args(
    p: argparse.ArgumentParser,
    out_help: str = "output folder (default runs/<dataset>/<model>-seed<N>)",
) -> None:
    p.add_argument("-m", "--model", required=True, help="registered model name (cadmr models)")
    p.add_argument("-d", "--dataset", required=True, help="dataset folder, name or synthetic-*")
    p.add_argument("--config", help="experiment YAML merged over the defaults")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set train.epochs=50 --set params.n_layers=3",
    )
    p.add_argument("--out", help=out_help)
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    _add_data_dir(p)


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
    e.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every run, e.g. --set train.patience=10",
    )
    e.add_argument("--out", help=f"output folder (default runs/experiments/<dataset>/{name})")
    e.add_argument("--cache", default="runs/experiments/cache", help="run cache folder")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_dir(e)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadmr", description="Multimodal recommendation with an honest protocol."
    )
    parser.add_argument("--version", action="version", version=f"cadmr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train and evaluate one configuration")
    _add_run_args(p)
    p = sub.add_parser(
        "tune", help="search a model's validation grid (its published one by default)"
    )
    _add_run_args(p, out_help="output folder (default runs/<dataset>/<model>-tune-seed<N>)")
    p.add_argument(
        "--grid",
        choices=("published", "budget"),
        default="published",
        help="published: the model's published grid; budget: 2-3 values of its main "
        "regulariser from it (for small machines). --set search.X=[..] replaces either",
    )

    p = sub.add_parser("evaluate", help="evaluate a checkpoint under the protocol")
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    _add_checkpoint_args(p, "dataset to evaluate on (default: the one it was trained on)")

    p = sub.add_parser(
        "recommend", help="top-k items for users from a checkpoint, printed or to a file"
    )
    p.add_argument("checkpoint")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--user",
        action="append",
        help="user id as in the dataset's u_id_mapping.csv, or a dense id (repeatable)",
    )
    who.add_argument("--all-users", action="store_true", help="every user of the dataset")
    who.add_argument("--users-file", help="a file with one user id per line")
    p.add_argument("-k", type=int, default=10, help="items per user (at least 1)")
    p.add_argument(
        "-o", "--output", help="write user,rank,item,score[,title] rows: .csv, .jsonl, .parquet"
    )
    p.add_argument("--include-seen", action="store_true", help="do not mask training items")
    p.add_argument("--exclude-valid", action="store_true", help="mask validation items too")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_checkpoint_args(p, "dataset (default: the one it was trained on)")

    p = sub.add_parser("serve", help="serve a checkpoint over HTTP (needs cadmr[serve])")
    p.add_argument("checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    _add_checkpoint_args(p, "dataset (default: the one it was trained on)")

    p = sub.add_parser("explain", help="what a CADMR checkpoint attended to for an item or a user")
    p.add_argument("checkpoint")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--item", help="explain this item's attention (raw or dense id)")
    who.add_argument("--user", help="explain this user's top recommendations (raw or dense id)")
    p.add_argument("-k", type=int, default=10, help="recommendations to explain (--user)")
    p.add_argument("--top", type=int, default=10, help="attended items to list")
    _add_checkpoint_args(p, "dataset (default: the one it was trained on)")

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("describe", help="sizes, splits, sparsity and modalities of a dataset")
    d.add_argument("dataset")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    _add_data_dir(d)
    d = dsub.add_parser(
        "prepare", help="raw interactions + metadata/images -> an MMRec dataset folder"
    )
    d.add_argument("interactions", help="Amazon reviews JSON lines or user,item[,r,t] CSV")
    d.add_argument("--out", required=True, help="dataset folder to create")
    d.add_argument("--name", help="dataset name (default: the --out folder name)")
    d.add_argument("--meta", help="item metadata (Amazon JSON lines or an item TSV/CSV)")
    d.add_argument("--images", help="folder of <item id>.<ext> images, or an item,path list")
    d.add_argument("--image-model", help="ResNet weights file (torchvision state dict .pth)")
    d.add_argument(
        "--text-model",
        default="all-MiniLM-L6-v2",
        help="sentence-transformers folder, default all-MiniLM-L6-v2; 'none' skips text",
    )
    d.add_argument(
        "--features",
        action="append",
        default=[],
        metavar="MOD=FILE",
        help="precomputed features keyed by item id (.b, .npy+.ids.txt, .npz, .csv)",
    )
    d.add_argument("-k", "--k", type=int, default=5, help="k-core size (default 5)")
    d.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    d.add_argument("--format", choices=("auto", "amazon", "csv"), default="auto")
    d.add_argument("--batch-size", type=int, default=64)
    d.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d = dsub.add_parser("download", help="fetch a public MMRec dataset (baby, sports, ...)")
    d.add_argument("name", help="baby, sports, clothing or elec")
    d.add_argument("--dest", help="data directory (default: --data-dir, $CADMR_DATA_DIR, ./data)")
    d.add_argument("--url", help="full archive URL")
    d.add_argument("--base-url", help="mirror holding <name>.zip ($CADMR_DOWNLOAD_BASE_URL)")
    d.add_argument("--sha256", help="expected archive checksum")
    d.add_argument("--force", action="store_true", help="download again if present")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_dir(d)

    p = sub.add_parser("experiment", help="the paper's multi-run experiments (cached runs)")
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

    p = sub.add_parser(
        "demo", help="CADMR next to EASE and the autoencoder alone on embedded synthetic data"
    )
    p.add_argument("--dataset", default="synthetic-small")
    p.add_argument("--models", nargs="+", default=list(DEMO_MODELS))
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)

    sub.add_parser("models", help="list registered models")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from cadmr.data.sources import resolve_dataset
    from cadmr.models import get_model_class
    from cadmr.train import resolve_run_config, results_markdown, run

    config = resolve_run_config(args.model, args.dataset, args.config, args.sets, args.seed)
    if args.quiet:
        config = _quiet(config)
    dataset = resolve_dataset(args.dataset, args.data_dir)
    out = Path(args.out or f"runs/{dataset.name}/{config.model}-seed{config.seed}")
    results = run(config, dataset, out, resume=args.resume, echo=not args.quiet)
    print(results_markdown([results]), end="")
    if "phases" in results:
        print(phase_summary(results))
    grid = get_model_class(config.model).default_search
    if grid and not config.search:
        points = 1
        for values in grid.values():
            points *= len(values)
        print(
            f"note: these are {config.model}'s default parameters; `cadmr tune` searches its "
            f"published grid ({points} points over {', '.join(grid)}) on validation"
        )
    print(f"results: {out / 'results.json'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    import yaml

    from cadmr.data.sources import resolve_dataset
    from cadmr.train import resolve_run_config, results_markdown, run, search_markdown

    config = resolve_run_config(
        args.model, args.dataset, args.config, args.sets, args.seed, grid=args.grid
    )
    if not config.search:
        raise ValueError(
            f"{config.model} has no default grid; give one, e.g. "
            "--set search.<param>=[value1,value2]"
        )
    if args.quiet:
        config = _quiet(config)
    dataset = resolve_dataset(args.dataset, args.data_dir)
    out = Path(args.out or f"runs/{dataset.name}/{config.model}-tune-seed{config.seed}")
    results = run(config, dataset, out, resume=args.resume, echo=not args.quiet)
    best = out / "best.yaml"
    best.write_text(
        f"# best of {len(results.get('search', [1]))} point(s) on validation "
        f"{config.eval.valid_metric}; use with: cadmr train --config {best}\n"
        + yaml.safe_dump({"params": results["params"]}, sort_keys=False)
    )
    print(search_markdown(results), end="")
    print()
    print(results_markdown([results]), end="")
    print(f"best configuration: {best}\nresults: {out / 'results.json'}")
    return 0


def _quiet(config):
    import dataclasses

    return dataclasses.replace(config, train=dataclasses.replace(config.train, progress=False))


def _load_for_checkpoint(args: argparse.Namespace):
    from cadmr.data.sources import resolve_dataset
    from cadmr.train.checkpoint import load_checkpoint
    from cadmr.train.trainer import load_model

    ck = load_checkpoint(args.checkpoint)
    dataset = resolve_dataset(args.dataset or ck["config"]["dataset"], args.data_dir)
    model, ck = load_model(args.checkpoint, dataset, args.device)
    return model, ck, dataset


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cadmr.config import from_dict
    from cadmr.eval.metrics import METRICS
    from cadmr.eval.protocol import evaluate

    model, ck, dataset = _load_for_checkpoint(args)
    eval_cfg = from_dict(EvalConfig, ck["config"]["eval"], "eval")
    metrics = evaluate(model, dataset, args.split, eval_cfg, progress=True)
    print(
        f"{ck['config']['model']} on {dataset.name}, {args.split} split, {metrics['n_users']} users"
    )
    for k in eval_cfg.ks:
        row = "  ".join(f"{m}@{k}={metrics[f'{m}@{k}']:.4f}" for m in METRICS)
        print(row)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    import numpy as np

    from cadmr.data.ids import IdMaps
    from cadmr.export import check_format, ranked_rows, write_recommendations

    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    fmt = check_format(Path(args.output)) if args.output else None  # before loading anything
    model, _, dataset = _load_for_checkpoint(args)
    ids = IdMaps.for_dataset(dataset)
    if args.all_users:
        users = np.arange(dataset.n_users)
    else:
        tokens = args.user or _read_user_tokens(Path(args.users_file))
        users = np.array([ids.user_dense(t) for t in tokens], dtype=np.int64)
    rows = ranked_rows(
        model,
        users,
        args.k,
        ids,
        exclude_seen=not args.include_seen,
        exclude=dataset.valid if args.exclude_valid else None,
        progress=fmt is not None and not args.quiet,
    )
    if fmt is not None:
        n = write_recommendations(rows, Path(args.output), fmt)
        print(f"{n} recommendations for {len(users)} users: {args.output}")
        return 0
    by_user: dict[str, list[str]] = {}
    for r in rows:
        title = f" {r['title']!r}" if r.get("title") else ""
        by_user.setdefault(str(r["user"]), []).append(f"{r['item']}{title} ({r['score']:.3f})")
    for u in users:
        user = ids.user_raw(int(u))
        print(f"user {user}: " + ", ".join(by_user.get(user, [])))
    return 0


def _read_user_tokens(path: Path) -> list[str]:
    """User ids, one per line (blank lines and #-comments skipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"no users file at {path}")
    lines = (ln.split("#")[0].strip() for ln in path.read_text(encoding="utf-8").splitlines())
    tokens = [t for t in lines if t]
    if not tokens:
        raise ValueError(f"{path} lists no user")
    return tokens


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from cadmr.serve import create_app, describe_checkpoint
    except ImportError:
        raise ValueError("serving needs FastAPI and uvicorn: pip install 'cadmr[serve]'") from None
    model, ck, dataset = _load_for_checkpoint(args)
    app = create_app(model, dataset, describe_checkpoint(Path(args.checkpoint), ck, dataset))
    print(f"serving {ck['config']['model']} on {dataset.name}: http://{args.host}:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    model, ck, dataset = _load_for_checkpoint(args)
    if not hasattr(model, "explain_item"):
        raise ValueError(
            f"{ck['config']['model']} has no attention to explain; use a cadmr checkpoint"
        )
    from cadmr.data.ids import IdMaps

    ids = IdMaps.for_dataset(dataset)
    if args.item is not None:
        item = ids.item_dense(args.item)
        exp = model.explain_item(item, top=args.top)
        subject = f"item {ids.item_raw(item)}"
    else:
        user = ids.user_dense(args.user)
        exp = model.explain_user(user, k=args.k, top=args.top)
        subject = f"user {ids.user_raw(user)}"

    def named(i: int) -> str:
        title = ids.title(i)
        return ids.item_raw(i) + (f" {title!r}" if title else "")

    print(f"{subject} ({dataset.name}, {model.params.heads} heads)")
    if exp.recommended:
        print("recommended: " + ", ".join(f"{named(i)} ({s:.3f})" for i, s in exp.recommended))
    print(
        f"attended items (attention weight, mean over heads; uniform would be "
        f"{1 / dataset.n_items:.4f}):"
    )
    for i, w in exp.attended:
        print(f"  {w:.4f}  item {named(i)}")
    if not any(exp.modalities.values()):
        print("modalities: none changes the output (the fine-tuned refinement is zero, e.g.")
        print("  fine-tuning never beat the pretrained autoencoder on validation)")
        return 0
    print("modalities (share of the occlusion effect):")
    for m, share in sorted(exp.modalities.items(), key=lambda kv: -kv[1]):
        print(f"  {m:<10s} {share:6.1%}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from cadmr.data.describe import describe_text
    from cadmr.data.sources import resolve_dataset

    if args.data_command in DATA_COMMANDS:
        return DATA_COMMANDS[args.data_command](args)
    dataset = resolve_dataset(args.dataset, args.data_dir)
    if args.json:
        print(json.dumps(dataset.describe(), indent=2, default=str))
    else:
        print(describe_text(dataset))
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from cadmr.data.prepare import prepare_dataset

    precomputed = {}
    for spec in args.features:
        mod, sep, path = spec.partition("=")
        if not sep or not mod or not path:
            raise ValueError(f"--features expects MOD=FILE, got {spec!r}")
        precomputed[mod] = path
    text_model = None if args.text_model.lower() == "none" else args.text_model
    result, dataset = prepare_dataset(
        args.interactions,
        args.out,
        name=args.name,
        metadata=args.meta,
        images=args.images,
        precomputed=precomputed,
        k=args.k,
        seed=args.seed,
        text_model=text_model,
        image_model=args.image_model,
        fmt=args.format,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    raw = result.raw
    print(
        f"read {raw['interactions']} interactions ({raw['users']} users, {raw['items']} items, "
        f"{raw['duplicates_dropped']} duplicates dropped)"
    )
    print(
        f"{result.k}-core after {result.k_core_passes} pass(es): {result.users} users, "
        f"{result.items} items; split (seed {args.seed}): "
        + ", ".join(f"{n} {s}" for s, n in result.interactions.items())
    )
    for mod, f in result.features.items():
        extra = f", {f['unreadable']} unreadable" if f.get("unreadable") else ""
        print(f"{mod}_feat.npy: {f['dim']}-d, {f['mean_filled']} item(s) mean-filled{extra}")
    print(f"wrote {result.path} in {result.seconds:.1f}s; loads as {dataset.name!r}")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    import os
    import warnings

    from cadmr.data.download import download_dataset

    dest = args.dest or args.data_dir or os.environ.get("CADMR_DATA_DIR") or "data"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = download_dataset(
            args.name,
            dest,
            url=args.url,
            base_url=args.base_url,
            sha256=args.sha256,
            force=args.force,
            progress=not args.quiet,
        )
    for w in caught:
        print(f"cadmr: warning: {w.message}", file=sys.stderr)
    print(f"{args.name}: {folder}")
    return 0


DATA_COMMANDS = {"prepare": cmd_data_prepare, "download": cmd_data_download}


# Table 3's rows: the shown name -> the compare label. Our CADMR has no TC term by default
# (docs/cadmr.md), so its DRL row adds the paper's lambda = 0.5 instead of removing it
ABLATION = {
    "CADMR": "cadmr",
    "with DRL (TC, lambda 0.5)": "cadmr:tc_weight=0.5",
    "w/o CA (own value only)": "cadmr:use_attention=false",
    "CA only (no value skip)": "cadmr:value_skip=false",
    "paper's settings": "cadmr_paper",
}


def cmd_experiment(args: argparse.Namespace) -> int:
    from cadmr.data.sources import resolve_dataset

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    dataset = resolve_dataset(args.dataset, args.data_dir)
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
    if args.experiment == "leakage-audit":
        from cadmr.experiments.leakage import leakage_audit, write_audit

        rows = leakage_audit(dataset, args.dataset, models=args.models, **common)
        text = write_audit(out, dataset.name, rows)
        print(text, end="")
        print(f"tables: {out}/leakage-audit.{{md,json}}")
        return 0
    if args.experiment == "cold-start":
        from cadmr.experiments.coldstart import MODELS, cold_start
        from cadmr.experiments.report import write_cold_start

        models = args.models or list(MODELS)
        by_fraction = cold_start(
            dataset, args.dataset, models, args.fractions, retune=args.retune, **common
        )
        text, png = write_cold_start(out, dataset.name, title, by_fraction, models)
        print(text, end="")
        print(f"plot: {png}\ntables: {out}/cold-start.{{md,csv,json}}")
        return 0

    from cadmr.experiments import compare
    from cadmr.experiments.compare import TABLE2
    from cadmr.experiments.report import heads_figure, write_summary

    if args.experiment == "compare":
        names = {label: label for label in args.models or TABLE2}
    elif args.experiment == "ablation":
        names = ABLATION
    else:  # heads
        names = {f"{h} heads": f"cadmr:heads={h}" for h in args.heads}
    runs = compare(dataset, args.dataset, models=list(names.values()), **common)
    runs = {shown: runs[label] for shown, label in names.items()}
    stem = out / args.experiment
    text, rows = write_summary(stem, title, runs)
    print(text, end="")
    if args.experiment == "heads":
        title = f"{dataset.name}: CADMR by number of heads"
        print(f"plot: {heads_figure(rows, args.heads, title, stem.with_suffix('.png'))}")
    print(f"tables: {stem}.{{md,csv,json}}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cadmr.data.sources import resolve_dataset
    from cadmr.train import resolve_run_config, results_markdown, run

    t0 = time.perf_counter()
    dataset = resolve_dataset(args.dataset)
    print(
        f"{dataset.name}: {dataset.n_users} users, {dataset.n_items} items, "
        f"{dataset.train.nnz} train / {dataset.valid.nnz} valid / {dataset.test.nnz} test "
        f"interactions, modalities {dataset.modalities}"
    )
    rows = []
    for name in args.models:
        # EASE's closed form makes its lambda grid cheap; the autoencoders train their
        # defaults, which keeps the demo to about a minute
        grid = "published" if name == "ease" else "none"
        config = resolve_run_config(
            name, args.dataset, extra=DEMO_SCHEDULE, seed=args.seed, grid=grid
        )
        config = _quiet(config)
        out = Path(args.out) / name
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        rows.append(run(config, dataset, out, echo=False))
        print(f"  {name:10s} done in {time.perf_counter() - t:5.1f}s")
    print()
    print(results_markdown(rows), end="")
    for r in rows:
        if "phases" in r:
            print(f"\n{r['model']}: " + phase_summary(r))
    print(f"\nall runs in {args.out}; {time.perf_counter() - t0:.0f}s in total")
    return 0


def phase_summary(results: dict) -> str:
    """One sentence per phase of a multi-phase run, saying which one the model comes from."""
    metric = results["config"]["eval"]["valid_metric"]
    parts = []
    for p in results["phases"]:
        epoch = "its starting point" if p["best_epoch"] < 0 else f"epoch {p['best_epoch']}"
        parts.append(f"{p['phase']} best at {epoch} (valid {metric} {p['valid'][metric]:.4f})")
    chosen = results.get("selected_phase", results["phases"][-1]["phase"])
    text = "; ".join(parts) + f"; the model is the {chosen} phase's best."
    last = results["phases"][-1]
    if last["best_epoch"] < 0:
        text += f" No {last['phase']} epoch beat the phase before it on validation."
    return text


def cmd_models(args: argparse.Namespace) -> int:
    from cadmr.catalog import summaries  # read from source: no torch import

    lines = summaries()
    width = max(map(len, lines))
    for name, doc in sorted(lines.items()):
        print(f"{name:{width}s} {doc}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "tune": cmd_tune,
    "evaluate": cmd_evaluate,
    "recommend": cmd_recommend,
    "explain": cmd_explain,
    "serve": cmd_serve,
    "data": cmd_data,
    "experiment": cmd_experiment,
    "demo": cmd_demo,
    "models": cmd_models,
}


def _error(message: str) -> int:
    print(f"cadmr: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one rank of several, under torchrun
        return _main_distributed(args)
    return _main(args)


def _main_distributed(args: argparse.Namespace) -> int:
    """Data-parallel ``cadmr train``/``tune`` (``cadmr.train.distributed``); rank 0 prints."""
    import contextlib

    from cadmr.train.distributed import init_from_env, rank_and_size, shutdown

    if args.command not in ("train", "tune"):
        return _error(f"torchrun runs cadmr train or cadmr tune, not cadmr {args.command}")
    init_from_env()
    try:
        if rank_and_size()[0] == 0:
            return _main(args)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            return _main(args)
    finally:
        shutdown()


def _main(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except (
        DataError,
        ConfigError,
        LeakageError,
        KeyError,
        IndexError,
        FileNotFoundError,
        ValueError,
    ) as e:
        return _error(e.args[0] if isinstance(e, KeyError) and e.args else str(e))
    except OSError as e:  # disk full, a read-only folder, no permission: the system's reason
        where = f"{e.filename}: " if e.filename else ""
        return _error(f"{where}{e.strerror or e}")
    except RuntimeError as e:
        from cadmr.train.trainer import TrainingError  # not at start-up: it imports torch

        if isinstance(e, TrainingError):  # no features, diverged loss, resume mismatch, ...
            return _error(str(e))
        raise
    except KeyboardInterrupt:
        print(
            "\ncadmr: interrupted; finished epochs are saved, continue with --resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
