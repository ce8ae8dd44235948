"""Generic trainer, checkpoints and run-configuration resolution."""

from cadmr.train.resolve import resolve_run_config
from cadmr.train.trainer import (
    TrainingError,
    load_model,
    results_markdown,
    run,
    search_markdown,
)

__all__ = [
    "TrainingError",
    "load_model",
    "resolve_run_config",
    "results_markdown",
    "run",
    "search_markdown",
]
