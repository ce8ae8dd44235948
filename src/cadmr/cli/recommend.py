"""cadmr recommend | explain | serve: putting a trained checkpoint to use."""

from __future__ import annotations

import argparse
from pathlib import Path

from cadmr.cli.common import add_checkpoint_args, load_for_checkpoint
from cadmr.errors import CadmrFileNotFoundError, CadmrValueError

_DATASET_HELP = "dataset (default: the one it was trained on)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend", help="top-k items for users from a checkpoint, printed or to a file"
    )
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
    add_checkpoint_args(p, _DATASET_HELP)
    p.set_defaults(handler=cmd_recommend)

    p = sub.add_parser("serve", help="serve a checkpoint over HTTP (needs cadmr[serve])")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    add_checkpoint_args(p, _DATASET_HELP)
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("explain", help="what a CADMR checkpoint attended to for an item or a user")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--item", help="explain this item's attention (raw or dense id)")
    who.add_argument("--user", help="explain this user's top recommendations (raw or dense id)")
    p.add_argument("-k", type=int, default=10, help="recommendations to explain (--user)")
    p.add_argument("--top", type=int, default=10, help="attended items to list")
    add_checkpoint_args(p, _DATASET_HELP)
    p.set_defaults(handler=cmd_explain)


def cmd_recommend(args: argparse.Namespace) -> int:
    import numpy as np

    from cadmr.data.ids import IdMaps
    from cadmr.export import check_format, ranked_rows, write_recommendations

    if args.k < 1:
        raise CadmrValueError(f"-k must be at least 1, got {args.k}")
    fmt = check_format(Path(args.output)) if args.output else None  # before loading anything
    model, _, dataset = load_for_checkpoint(args)
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
        raise CadmrFileNotFoundError(f"no users file at {path}")
    lines = (ln.split("#")[0].strip() for ln in path.read_text(encoding="utf-8").splitlines())
    tokens = [t for t in lines if t]
    if not tokens:
        raise CadmrValueError(f"{path} lists no user")
    return tokens


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from cadmr.serve import create_app, describe_checkpoint
    except ImportError:
        raise CadmrValueError(
            "serving needs FastAPI and uvicorn: pip install 'cadmr[serve]'"
        ) from None
    model, ck, dataset = load_for_checkpoint(args)
    app = create_app(model, dataset, describe_checkpoint(Path(args.checkpoint), ck, dataset))
    print(f"serving {ck['config']['model']} on {dataset.name}: http://{args.host}:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    model, ck, dataset = load_for_checkpoint(args)
    if not hasattr(model, "explain_item"):
        raise CadmrValueError(
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
    over = f"heads and the {len(exp.recommended)} recommended items" if exp.recommended else "heads"
    print(
        f"attended items (attention weight, mean over {over}; uniform over one item's keys "
        f"would be {exp.uniform:.4f}):"
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
