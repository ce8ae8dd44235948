"""Command-line interface: one module per command group parses its arguments, calls the
library and prints; this one builds the parser and turns expected errors into one line.

cadmr demo                                   the README's main job
cadmr train -m MODEL -d DATASET [--config FILE] [--set k=v ...] [--out DIR] [--seed N]
cadmr tune -m MODEL -d DATASET [...]          the same, over the model's validation grid
cadmr evaluate CHECKPOINT [--split test]
cadmr recommend CHECKPOINT --user U [-k 10] | --all-users -o FILE
cadmr explain CHECKPOINT --item I | --user U   what CADMR attended to
cadmr serve CHECKPOINT [--port 8000]
cadmr data describe | prepare | download ...
cadmr experiment compare | ablation | heads | cold-start | leakage-audit -d DATASET
cadmr models

Errors: a :class:`cadmr.errors.CadmrError` (bad input the user can fix) or an OSError
(disk full, no permission) prints ``cadmr: error: ...`` in one line and exits 2; anything
else is a bug and shows its traceback. ``cadmr --debug ...`` shows the traceback always.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from cadmr import __version__
from cadmr.cli import data, experiment, recommend, train
from cadmr.errors import CadmrError

GROUPS = (train, recommend, data, experiment)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadmr", description="Multimodal recommendation with an honest protocol."
    )
    parser.add_argument("--version", action="version", version=f"cadmr {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of every error"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one rank of several, under torchrun
        return _main_distributed(args)
    return _main(args)


def _error(message: str) -> int:
    print(f"cadmr: error: {message}", file=sys.stderr)
    return 2


def _main_distributed(args: argparse.Namespace) -> int:
    """Data-parallel ``cadmr train``/``tune`` (``cadmr.train.distributed``); rank 0 prints."""
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
        return args.handler(args)
    except CadmrError as e:
        if args.debug:
            raise
        return _error(str(e))
    except OSError as e:  # disk full, a read-only folder, no permission: the system's reason
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        return _error(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        print(
            "\ncadmr: interrupted; finished epochs are saved, continue with --resume",
            file=sys.stderr,
        )
        return 130
