"""Atomic checkpoint files: a crash mid-write never leaves a truncated checkpoint."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from cadmr.config import first_line


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dict (tensors, numbers, strings, plain containers) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


REQUIRED_KEYS = ("format", "config", "params", "model_state", "dataset_fingerprint")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain data only).

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: in one line, if the file is empty, truncated, not a torch file, holds
            objects other than tensors and plain data (refused unread: unpickling them
            could run code), or is not a checkpoint of this toolkit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"cannot read checkpoint {path}: the file is empty")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's weights-only unpickler refused an object
        raise ValueError(
            f"cannot read checkpoint {path}: it holds objects other than tensors and plain "
            "data, which are refused (loading them could run code)"
        ) from None
    except Exception as e:  # truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {first_line(e)}") from None
    if not isinstance(ck, dict):
        raise ValueError(f"{path} is not a cadmr checkpoint (it holds a {type(ck).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in ck]
    if missing or not isinstance(ck["config"], dict) or "model" not in ck["config"]:
        what = f"no {', '.join(missing)}" if missing else "no model in its config"
        raise ValueError(f"{path} is not a cadmr checkpoint ({what})")
    return ck
