"""Which torch device a run's gradient-trained model lives on (``train.device``)."""

from __future__ import annotations

import os
import re

import torch

from cadmr.config import DEVICE_PATTERN, ConfigError


def resolve_device(name: str) -> torch.device:
    """``train.device`` -> the torch device to use.

    "cpu" is the CPU; "cuda" the current GPU, or under torchrun the rank's ``LOCAL_RANK``
    GPU (one GPU per rank, as NCCL requires); "cuda:N" that GPU; "auto" "cuda" when torch
    sees a GPU, else the CPU.

    Raises:
        ConfigError: the name is none of these; a GPU was asked for and torch sees none, or
            fewer than N + 1.
    """
    if not re.fullmatch(DEVICE_PATTERN, name):
        raise ConfigError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"train.device is {name} but torch sees no GPU (torch {torch.__version__}); "
            "train on the CPU with train.device=cpu or install a CUDA build of torch"
        )
    if name == "cuda":
        index = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
    else:
        index = int(name.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigError(f"train.device asks for cuda:{index}; torch sees {count} GPU(s)")
    return torch.device("cuda", index)
