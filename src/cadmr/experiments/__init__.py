"""Multi-run experiments (the paper's tables and figures) on top of the trainer: every run is
cached by its resolved configuration and the dataset's fingerprint, so an interrupted or
extended experiment recomputes nothing it already has."""

from cadmr.experiments.cache import cached_run, run_key
from cadmr.experiments.compare import compare
from cadmr.experiments.tables import summarize, to_csv, to_markdown

__all__ = ["cached_run", "compare", "run_key", "summarize", "to_csv", "to_markdown"]
