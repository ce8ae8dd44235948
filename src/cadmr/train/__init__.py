"""Generic trainer, checkpoints and run-configuration resolution."""

from cadmr.errors import TrainingError
from cadmr.train.checkpoint import load_model
from cadmr.train.reporting import results_markdown, search_markdown
from cadmr.train.resolve import resolve_run_config
from cadmr.train.trainer import run

__all__ = [
    "TrainingError",
    "load_model",
    "resolve_run_config",
    "results_markdown",
    "run",
    "search_markdown",
]
