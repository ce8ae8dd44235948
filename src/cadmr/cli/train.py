"""cadmr train | tune | evaluate | demo | models: training runs and what they produce."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from cadmr.cli.common import add_checkpoint_args, add_data_dir, add_sets, load_for_checkpoint, quiet
from cadmr.config import EvalConfig
from cadmr.errors import CadmrValueError

DEMO_MODELS = ("ease", "kernel_ae", "cadmr")
# a short schedule so the demo takes minutes on two cores; each phase still early-stops on
# validation (the full defaults are patience 20 and up to 1000 epochs)
DEMO_SCHEDULE = {"train": {"patience": 5, "epochs": 60}}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train and evaluate one configuration")
    _add_run_args(p)
    p.set_defaults(handler=cmd_train)

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
    p.set_defaults(handler=cmd_tune)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint under the protocol")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    add_checkpoint_args(p, "dataset to evaluate on (default: the one it was trained on)")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser(
        "demo", help="CADMR next to EASE and the autoencoder alone on embedded synthetic data"
    )
    p.add_argument("--dataset", default="synthetic-small")
    p.add_argument("--models", nargs="+", default=list(DEMO_MODELS))
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_demo)

    sub.add_parser("models", help="list registered models").set_defaults(handler=cmd_models)


def _add_run_args(
    p: argparse.ArgumentParser,
    out_help: str = "output folder (default runs/<dataset>/<model>-seed<N>)",
) -> None:
    p.add_argument("-m", "--model", required=True, help="registered model name (cadmr models)")
    p.add_argument("-d", "--dataset", required=True, help="dataset folder, name or synthetic-*")
    p.add_argument("--config", help="experiment YAML merged over the defaults")
    add_sets(p, "override one setting, e.g. --set train.epochs=50 --set params.n_layers=3")
    p.add_argument("--out", help=out_help)
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    add_data_dir(p)


def cmd_train(args: argparse.Namespace) -> int:
    from cadmr.data.sources import resolve_dataset
    from cadmr.models import get_model_class
    from cadmr.train import resolve_run_config, results_markdown, run

    config = resolve_run_config(args.model, args.dataset, args.config, args.sets, args.seed)
    if args.quiet:
        config = quiet(config)
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
    from cadmr.data.sources import resolve_dataset
    from cadmr.train import resolve_run_config, results_markdown, run, search_markdown

    config = resolve_run_config(
        args.model, args.dataset, args.config, args.sets, args.seed, grid=args.grid
    )
    if not config.search:
        raise CadmrValueError(
            f"{config.model} has no default grid; give one, e.g. "
            "--set search.<param>=[value1,value2]"
        )
    if args.quiet:
        config = quiet(config)
    dataset = resolve_dataset(args.dataset, args.data_dir)
    out = Path(args.out or f"runs/{dataset.name}/{config.model}-tune-seed{config.seed}")
    results = run(config, dataset, out, resume=args.resume, echo=not args.quiet)
    print(search_markdown(results), end="")
    print()
    print(results_markdown([results]), end="")
    print(f"best configuration: {out / 'best.yaml'}\nresults: {out / 'results.json'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cadmr.config import from_dict
    from cadmr.eval.metrics import METRICS
    from cadmr.eval.protocol import evaluate

    model, ck, dataset = load_for_checkpoint(args)
    eval_cfg = from_dict(EvalConfig, ck["config"]["eval"], "eval")
    metrics = evaluate(model, dataset, args.split, eval_cfg, progress=True)
    print(
        f"{ck['config']['model']} on {dataset.name}, {args.split} split, {metrics['n_users']} users"
    )
    for k in eval_cfg.ks:
        row = "  ".join(f"{m}@{k}={metrics[f'{m}@{k}']:.4f}" for m in METRICS)
        print(row)
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
        out = Path(args.out) / name
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        print(f"  {name:10s} training (bars: its epochs and validations)", flush=True)
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
