"""Arguments and steps that several command groups share."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="folder holding named datasets (default: $CADMR_DATA_DIR, then ./data)",
    )


def add_checkpoint_args(p: argparse.ArgumentParser, dataset_help: str) -> None:
    """What every command that loads a checkpoint takes besides it."""
    p.add_argument("checkpoint")
    p.add_argument("--dataset", help=dataset_help)
    add_data_dir(p)
    p.add_argument(
        "--device",
        default="cpu",
        help="where a gradient-trained model scores: cpu, cuda, cuda:N or auto (default cpu)",
    )


def add_sets(p: argparse.ArgumentParser, text: str) -> None:
    """``--set KEY=VALUE``, repeatable, into ``args.sets``; ``text`` is its help."""
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=text
    )


def quiet(config: Any) -> Any:
    """``config`` without progress bars."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, progress=False))


def load_for_checkpoint(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any]:
    """The model, checkpoint and dataset named by ``args`` (add_checkpoint_args): the
    dataset defaults to the one the checkpoint was trained on."""
    from cadmr.data.sources import resolve_dataset
    from cadmr.train.checkpoint import load_checkpoint, load_model

    ck = load_checkpoint(args.checkpoint)
    dataset = resolve_dataset(args.dataset or ck["config"]["dataset"], args.data_dir)
    model, ck = load_model(args.checkpoint, dataset, args.device)
    return model, ck, dataset
