"""Our models next to MMRec's own code on the same data and settings (issue 22).

Usage:
    python benchmarks/vs_mmrec.py --mmrec ../shared/peers/mmrec \
        [--mmrec-python ~/mmrec-venv/bin/python] [--dataset lfm2k] [--modalities text audio] \
        [--models lightgcn vbpr freedom ...] [--epochs 6] [--repeats 1]
    python benchmarks/vs_mmrec.py --mmrec ../shared/peers/mmrec --quality [--patience 20] \
        [--variant raw:params.feature_norm=none ...] [--mmrec-set KEY=VALUE ...]

Set-up of MMRec's interpreter: ../shared/peers/README.md. Without ``--mmrec`` the script says
so and exits 0 (nothing to compare).

Both sides read one folder this script writes (MMRec's layout: ``<name>.inter`` with the
dataset's own train/valid/test labels, the first modality of ``--modalities`` as
``text_feat.npy`` and the second as ``image_feat.npy``), train for ``--epochs`` epochs with
batch 2,048 and embedding 64 on one thread (``OMP_NUM_THREADS=1`` and
``torch.set_num_threads(1)``), validate every epoch, and report the test Recall@20 at the
best validation epoch within that budget, so speed is never bought with quality. MMRec runs
from a copy of its ``src`` tree (it writes logs there), with each grid of its model's YAML cut
to the one point that matches our default (``MATCHED``). The runs are interleaved (ours,
theirs, then theirs, ours on the next repetition). Per model it prints: seconds per training
epoch (median of epochs 2-5, or of every epoch after the first when fewer), seconds per
validation pass (median), MMRec's time divided by ours, each process's CPU seconds, wall
seconds and peak resident memory (``/usr/bin/time``), and both test Recall@20.

``--quality`` compares what each side learns instead (issue 23): both early-stop on
validation Recall@20 with ``--patience`` (default 20) within ``--epochs`` (then default 1000),
at the same matched hyper-parameters, and the table gives each side's best validation and
test Recall@20 and best epoch. Our default configuration is one column; each ``--variant
NAME:KEY=VALUE,...`` adds a column of ours with those ``--set`` overrides (e.g. MMRec's
behaviour where ours deviates); ``--mmrec-set KEY=VALUE`` changes MMRec's configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from _machine import machine_line

from cadmr.data.sources import resolve_dataset

# ours -> (MMRec's model, its grid cut to the point of our defaults)
MATCHED: dict[str, tuple[str, dict[str, list]]] = {
    "bpr": ("BPR", {"reg_weight": [1e-5]}),
    "lightgcn": ("LightGCN", {"n_layers": [2], "reg_weight": [1e-4]}),
    "vbpr": ("VBPR", {"reg_weight": [1e-5]}),
    "freedom": ("FREEDOM", {"dropout": [0.8], "reg_weight": [1e-4]}),
    "bm3": ("BM3", {"n_layers": [1], "dropout": [0.3], "reg_weight": [0.1]}),
    "lattice": ("LATTICE", {"reg_weight": [1e-4], "learning_rate": [1e-3]}),
    "dragon": ("DRAGON", {"aggr_mode": ["add"], "reg_weight": [1e-3], "learning_rate": [1e-3]}),
    "slmrec": (
        "SLMRec",
        {"learning_rate": [1e-3], "ssl_temp": [0.2], "ssl_alpha": [0.1], "reg": [1e-4]},
    ),
}
BATCH, EMBEDDING = 2048, 64
ROOT = Path(__file__).resolve().parent.parent
MMREC_DRIVER = """
import json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, ".")
from utils.quick_start import quick_start
quick_start(model=sys.argv[1], dataset=sys.argv[2], config_dict=json.loads(sys.argv[3]),
            save_model=False)
"""


def export(spec: str, modalities: list[str], folder: Path) -> str:
    """Write ``spec`` in MMRec's layout under ``folder/<name>``; returns the name."""
    ds = resolve_dataset(spec)
    missing = [m for m in modalities if m not in ds.features]
    if missing:
        sys.exit(f"{spec} has no {missing} features; it has {sorted(ds.features)}")
    name = re.sub(r"[^A-Za-z0-9_]", "_", spec)
    out = folder / name
    out.mkdir(parents=True)
    rows = []
    for label, split in enumerate((ds.train, ds.valid, ds.test)):
        coo = split.tocoo()
        rows.append(np.column_stack([coo.row, coo.col, np.full(coo.nnz, label)]))
    inter = np.concatenate(rows)
    inter = inter[np.lexsort((inter[:, 1], inter[:, 0]))]
    np.savetxt(
        out / f"{name}.inter",
        inter,
        fmt="%d",
        delimiter="\t",
        header="userID\titemID\tx_label",
        comments="",
    )
    for m, file in zip(modalities, ("text_feat.npy", "image_feat.npy"), strict=False):
        np.save(out / file, np.asarray(ds.features[m], dtype=np.float32))
    return name


class RunFailed(Exception):
    """A run exited non-zero; the message is its log's path."""


def timed(cmd: list[str], cwd: Path, log: Path, **extra_env: str) -> dict[str, float]:
    """Run ``cmd`` on one thread under /usr/bin/time: its wall and CPU seconds and peak RSS
    (GiB). (``os.wait4``'s maxrss would start at this process's size, which a child
    inherits through fork.)"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra_env}
    usage = log.with_suffix(".time")
    with open(log, "w") as out:
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(usage), *cmd],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise RunFailed(str(log))
    wall, user, system, kib = map(float, usage.read_text().split()[-4:])
    return {"wall": wall, "cpu": user + system, "rss": kib / 2**20}


def median_epochs(seconds: list[float]) -> float:
    """Median of epochs 2-5 (1-based), or of every epoch after the first when fewer."""
    chosen = seconds[1:5] if len(seconds) > 2 else seconds
    return statistics.median(chosen) if chosen else float("nan")


def run_ours(
    model: str,
    data: Path,
    epochs: int,
    work: Path,
    src: Path | None = None,
    patience: int | None = None,
    sets: tuple[str, ...] = (),
    tag: str = "",
) -> dict[str, float]:
    """``cadmr train`` of this checkout, or of the package under ``src`` (an earlier
    commit's checkout, to time before and after); ``sets`` are extra ``--set`` overrides,
    ``tag`` names the variant's folder and log."""
    out = work / f"ours-{model}{tag}"
    shutil.rmtree(out, ignore_errors=True)
    settings = {
        "train.epochs": epochs,
        "train.patience": patience or epochs + 1,
        "train.batch_size": BATCH,
        "train.num_threads": 1,
        "params.embedding_size": EMBEDDING,
    }
    cmd = [
        str(ROOT / ".venv/bin/python"),
        "-m",
        "cadmr.cli",
        "train",
        "-m",
        model,
        "-d",
        str(data),
        "--out",
        str(out),
        "--quiet",
    ]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    for kv in sets:
        cmd += ["--set", kv]
    env = {"PYTHONPATH": str(src / "src")} if src else {}
    result = timed(cmd, ROOT, work / f"ours-{model}{tag}.log", **env)
    lines = (out / "history.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines]
    history = [h for h in history if "train_seconds" in h]
    results = json.loads((out / "results.json").read_text())
    return {
        **result,
        "epoch": median_epochs([h["train_seconds"] for h in history]),
        "valid": statistics.median(h["eval_seconds"] for h in history),
        "recall": results["test"]["recall@20"],
        "valid_recall": results["valid"]["recall@20"],
        "best_epoch": results["best_epoch"],
    }


def run_mmrec(
    model: str,
    name: str,
    data: Path,
    epochs: int,
    work: Path,
    python: str,
    src: Path,
    patience: int | None = None,
    overrides: dict[str, object] | None = None,
) -> dict[str, float]:
    mm_name, grid = MATCHED[model]
    config = {
        "data_path": str(data) + "/",
        "epochs": epochs,
        "stopping_step": patience or epochs + 1,
        "train_batch_size": BATCH,
        "embedding_size": EMBEDDING,
        "seed": [0],
        "use_gpu": False,
        **grid,
        **(overrides or {}),
    }
    log = work / f"mmrec-{model}.log"
    result = timed([python, "-c", MMREC_DRIVER, mm_name, name, json.dumps(config)], src, log)
    text = log.read_text()
    train = [float(t) for t in re.findall(r"epoch \d+ training \[time: ([0-9.]+)s", text)]
    valid = [float(t) for t in re.findall(r"epoch \d+ evaluating \[time: ([0-9.]+)s", text)]
    score = r"evaluating \[time: [0-9.]+s, valid_score: ([0-9.]+)"
    scores = [float(t) for t in re.findall(score, text)]
    return {
        **result,
        "epoch": median_epochs(train),
        "valid": statistics.median(valid) if valid else float("nan"),
        # the final summary block: "Valid: {...recall@20: x...},\nTest: {...}"
        "recall": _last_recall(text, "Test:"),
        "valid_recall": _last_recall(text, "Valid:"),
        # MMRec counts epochs from 0, as we do
        "best_epoch": int(np.argmax(scores)) if scores else -1,
    }


def _last_recall(text: str, marker: str) -> float:
    """recall@20 in the last block of MMRec's log that starts with ``marker``."""
    found = re.search(r"recall@20: ([0-9.]+)", text.rsplit(marker, 1)[-1])
    return float(found.group(1)) if found else float("nan")


def prepare_mmrec(
    checkout: Path, name: str, data: Path, work: Path, python: str, models: list[str]
) -> Path:
    """A copy of MMRec's src tree with a dataset YAML for ``name`` (and DRAGON's user graph)."""
    src = work / "mmrec-src"
    shutil.copytree(checkout / "src", src, ignore=shutil.ignore_patterns("log", "saved"))
    (src / "configs/dataset" / f"{name}.yaml").write_text(
        "USER_ID_FIELD: userID\nITEM_ID_FIELD: itemID\nTIME_FIELD: timestamp\n"
        f"filter_out_cod_start_users: True\ninter_file_name: '{name}.inter'\n"
        "vision_feature_file: 'image_feat.npy'\ntext_feature_file: 'text_feat.npy'\n"
        "user_graph_dict_file: 'user_graph_dict.npy'\nfield_separator: \"\\t\"\n"
    )
    graph = checkout.parent / "mmrec_dragon_user_graph.py"
    if "dragon" in models:
        if not graph.exists():
            sys.exit(f"DRAGON needs {graph} (MMRec's user graph, ../shared/peers)")
        subprocess.run(
            [python, str(graph), str(data / name), f"{name}.inter"],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    return src


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmrec", type=Path, help="an MMRec checkout (its src/ is copied)")
    parser.add_argument("--mmrec-python", default=str(Path.home() / "mmrec-venv/bin/python"))
    parser.add_argument("--dataset", default="lfm2k")
    parser.add_argument("--modalities", nargs="+", default=["text", "audio"])
    parser.add_argument("--models", nargs="+", default=list(MATCHED), choices=list(MATCHED))
    parser.add_argument("--epochs", type=int, help="epoch budget (default 6; 1000 with --quality)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--quality", action="store_true", help="train to early stopping and compare recall"
    )
    parser.add_argument("--patience", type=int, default=20, help="with --quality")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="with --quality: one more column of ours with these --set overrides",
    )
    parser.add_argument(
        "--mmrec-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override MMRec's configuration (value parsed as YAML)",
    )
    parser.add_argument("--work", type=Path, help="keep logs and runs here (default: a temp dir)")
    parser.add_argument(
        "--ours-src",
        type=Path,
        help="time this checkout's package instead (e.g. a `git worktree` of an earlier "
        "commit, for before/after tables)",
    )
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = 1000 if args.quality else 6
    variants = [parse_variant(v, parser) for v in args.variant]
    mmrec_sets = {}
    for kv in args.mmrec_set:
        key, eq, value = kv.partition("=")
        if not eq:
            parser.error(f"--mmrec-set {kv!r}: expected KEY=VALUE")
        mmrec_sets[key] = yaml.safe_load(value)
    if args.mmrec is None:
        print("no --mmrec checkout given: nothing to compare against (../shared/peers/README.md)")
        return
    if not (args.mmrec / "src/main.py").exists():
        sys.exit(f"{args.mmrec} is not an MMRec checkout (no src/main.py)")
    # absolute: MMRec runs in its own src folder
    work = (args.work or Path(tempfile.mkdtemp(prefix="vs_mmrec-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    name = export(args.dataset, args.modalities, data)
    src = prepare_mmrec(args.mmrec.resolve(), name, data, work, args.mmrec_python, args.models)
    print(machine_line(1))
    print(
        f"dataset {args.dataset} ({', '.join(args.modalities)}), {args.epochs} epochs, "
        f"batch {BATCH}, embedding {EMBEDDING}, 1 thread, {args.repeats} repeat(s); "
        f"logs in {work}"
    )
    ours = args.ours_src or ROOT
    commit = subprocess.run(
        ["git", "-C", str(ours), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"ours: {ours} at {commit or 'unknown commit'} (uncommitted changes included)")
    if args.quality:
        quality(args, variants, mmrec_sets, data, name, work, src)
        return
    rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    failed: dict[str, str] = {}
    for model in args.models:
        both = rows.setdefault(model, {"ours": [], "mmrec": []})
        try:
            for r in range(args.repeats):
                order = ("ours", "mmrec") if r % 2 == 0 else ("mmrec", "ours")
                for side in order:
                    if side == "ours":
                        run = run_ours(model, data / name, args.epochs, work, args.ours_src)
                    else:
                        run = run_mmrec(
                            model, name, data, args.epochs, work, args.mmrec_python, src
                        )
                    both[side].append(run)
        except RunFailed as e:  # the other models still run; the table names the log
            failed[model] = str(e)
        print(f"  {model} {'failed' if model in failed else 'done'}", file=sys.stderr, flush=True)
    print_table(rows, failed)


def parse_variant(text: str, parser: argparse.ArgumentParser) -> tuple[str, tuple[str, ...]]:
    """``NAME:KEY=VALUE,...`` -> (name, ``--set`` overrides)."""
    name, colon, rest = text.partition(":")
    sets = tuple(kv.strip() for kv in rest.split(",") if kv.strip())
    if not colon or not name or not sets or any("=" not in kv for kv in sets):
        parser.error(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
    return name, sets


def quality(
    args: argparse.Namespace,
    variants: list[tuple[str, tuple[str, ...]]],
    mmrec_sets: dict[str, object],
    data: Path,
    name: str,
    work: Path,
    src: Path,
) -> None:
    """Each model trained to early stopping by MMRec, by ours and by each variant of ours;
    a table of best validation Recall@20, the test Recall@20 there, and the best epoch."""
    print(
        f"quality: early stopping on validation Recall@20, patience {args.patience}, at most "
        f"{args.epochs} epochs; MMRec overrides: {mmrec_sets or 'none'}"
    )
    columns = ["MMRec", "ours", *[v for v, _ in variants]]
    head = "| model | " + " | ".join(f"{c} valid | test | epoch" for c in columns) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(columns))]
    for model in args.models:
        cells = [model]
        for column in columns:
            try:
                if column == "MMRec":
                    run = run_mmrec(
                        model, name, data, args.epochs, work, args.mmrec_python, src,
                        args.patience, mmrec_sets,
                    )  # fmt: skip
                else:
                    sets = dict(variants).get(column, ())
                    tag = "" if column == "ours" else f"-{column}"
                    run = run_ours(
                        model, data / name, args.epochs, work, args.ours_src, args.patience,
                        sets, tag,
                    )  # fmt: skip
                cells += [f"{run['valid_recall']:.4f}", f"{run['recall']:.4f}"]
                cells.append(str(run["best_epoch"]))
            except RunFailed as e:
                cells += [f"failed: {e}", "", ""]
            print(f"  {model} {column} done", file=sys.stderr, flush=True)
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))


def print_table(rows: dict[str, dict[str, list[dict[str, float]]]], failed: dict[str, str]) -> None:
    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        "| model | s/epoch ours | MMRec | ratio | valid s ours | MMRec | ratio "
        "| CPU s ours | MMRec | wall s ours | MMRec | peak RSS GiB ours | MMRec "
        "| test R@20 ours | MMRec |"
    )
    print("|" + "---|" * 16)
    for model, both in rows.items():
        if model in failed:
            print(f"| {model} | failed: {failed[model]} |" + " |" * 14)
            continue
        o, m = both["ours"], both["mmrec"]
        cells = [model]
        for key in ("epoch", "valid"):
            cells += [
                f"{med(o, key):.3f}",
                f"{med(m, key):.3f}",
                f"**{med(m, key) / med(o, key):.2f}**",
            ]
        for key in ("cpu", "wall"):
            cells += [f"{med(o, key):.1f}", f"{med(m, key):.1f}"]
        cells += [f"{med(o, 'rss'):.2f}", f"{med(m, 'rss'):.2f}"]
        cells += [f"{med(o, 'recall'):.4f}", f"{med(m, 'recall'):.4f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
