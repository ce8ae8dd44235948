"""Checkpoints: what they hold, written atomically (a crash mid-write never leaves a
truncated file), read back safely, and turned into a model again."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from cadmr.atomic import atomic_write
from cadmr.config import RunConfig, first_line, from_dict, to_dict
from cadmr.data.dataset import Dataset
from cadmr.data.leakage import LeakageGuard
from cadmr.errors import CadmrFileNotFoundError, CadmrValueError
from cadmr.models import Recommender, TorchRecommender, get_model_class
from cadmr.train.device import resolve_device


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dict (tensors, numbers, strings, plain containers) atomically."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


REQUIRED_KEYS = ("format", "config", "params", "model_state", "dataset_fingerprint")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain data only).

    Raises:
        CadmrFileNotFoundError: if there is no file at ``path``.
        CadmrValueError: in one line, if the file is empty, truncated, not a torch file, holds
            objects other than tensors and plain data (refused unread: unpickling them
            could run code), or is not a checkpoint of this toolkit.
    """
    path = Path(path)
    if not path.is_file():
        raise CadmrFileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CadmrValueError(f"cannot read checkpoint {path}: the file is empty")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's weights-only unpickler refused an object
        raise CadmrValueError(
            f"cannot read checkpoint {path}: it holds objects other than tensors and plain "
            "data, which are refused (loading them could run code)"
        ) from None
    except Exception as e:  # truncated or foreign file
        raise CadmrValueError(f"cannot read checkpoint {path}: {first_line(e)}") from None
    if not isinstance(ck, dict):
        raise CadmrValueError(f"{path} is not a cadmr checkpoint (it holds a {type(ck).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in ck]
    if missing or not isinstance(ck["config"], dict) or "model" not in ck["config"]:
        what = f"no {', '.join(missing)}" if missing else "no model in its config"
        raise CadmrValueError(f"{path} is not a cadmr checkpoint ({what})")
    return ck


def checkpoint_payload(
    config: RunConfig, params: Any, dataset: Dataset, model: Recommender, **extra: Any
) -> dict[str, Any]:
    """What every checkpoint holds: enough to rebuild and verify the model and its data."""
    return {
        "format": 1,
        "config": config.to_dict(),
        "params": to_dict(params),
        "dataset_fingerprint": dataset.fingerprint(),
        "sizes": {"n_users": dataset.n_users, "n_items": dataset.n_items},
        "feature_dims": dataset.modalities,
        "model_state": model.state(),
        **extra,
    }


def load_model(
    checkpoint: str | Path, dataset: Dataset, device: str = "cpu"
) -> tuple[Recommender, dict[str, Any]]:
    """Rebuild a model from a checkpoint for ``dataset``, verifying it is the same data; a
    gradient-trained model goes to ``device`` (``train.device``'s values), wherever it was
    trained."""
    ck = load_checkpoint(checkpoint)
    if ck.get("dataset_fingerprint") != dataset.fingerprint():
        raise CadmrValueError(
            f"{checkpoint} was trained on other data (fingerprint "
            f"{ck.get('dataset_fingerprint')}, this dataset {dataset.fingerprint()})"
        )
    cls = get_model_class(ck["config"]["model"])
    params = from_dict(cls.params_cls, cls.saved_params(ck["params"]), "params")
    model = cls(params, dataset.n_users, dataset.n_items, dataset.modalities)
    model.setup(dataset.train, dataset.features, LeakageGuard(dataset))
    if isinstance(model, TorchRecommender):
        model.to(resolve_device(device))
        model.start_phase(ck.get("phase") or model.phases()[-1])
    model.load_state(ck["model_state"])
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model, ck
