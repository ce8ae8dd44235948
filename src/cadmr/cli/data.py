"""cadmr data describe | prepare | download: datasets."""

from __future__ import annotations

import argparse
import json
import sys

from cadmr.cli.common import add_data_dir
from cadmr.errors import CadmrValueError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("describe", help="sizes, splits, sparsity and modalities of a dataset")
    d.add_argument("dataset")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    add_data_dir(d)
    d.set_defaults(handler=cmd_describe)

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
    d.set_defaults(handler=cmd_prepare)

    d = dsub.add_parser("download", help="fetch a public MMRec dataset (baby, sports, ...)")
    d.add_argument("name", help="baby, sports, clothing or elec")
    d.add_argument("--dest", help="data directory (default: --data-dir, $CADMR_DATA_DIR, ./data)")
    d.add_argument("--url", help="full archive URL")
    d.add_argument("--base-url", help="mirror holding <name>.zip ($CADMR_DOWNLOAD_BASE_URL)")
    d.add_argument("--sha256", help="expected archive checksum")
    d.add_argument("--force", action="store_true", help="download again if present")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_dir(d)
    d.set_defaults(handler=cmd_download)


def cmd_describe(args: argparse.Namespace) -> int:
    from cadmr.data.describe import describe_text
    from cadmr.data.sources import resolve_dataset

    dataset = resolve_dataset(args.dataset, args.data_dir)
    if args.json:
        print(json.dumps(dataset.describe(), indent=2, default=str))
    else:
        print(describe_text(dataset))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from cadmr.data.prepare import prepare_dataset

    precomputed = {}
    for spec in args.features:
        mod, sep, path = spec.partition("=")
        if not sep or not mod or not path:
            raise CadmrValueError(f"--features expects MOD=FILE, got {spec!r}")
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


def cmd_download(args: argparse.Namespace) -> int:
    import warnings

    from cadmr.data.download import download_dataset
    from cadmr.data.sources import data_directory

    dest = args.dest or data_directory(args.data_dir)
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
