"""Data layer: readers for three on-disk formats, validation, synthetic data, splitting."""

from cadmr.data.dataset import SPLITS, DataError, Dataset, pairs_to_csr
from cadmr.data.leakage import LeakageError, LeakageGuard

__all__ = ["SPLITS", "DataError", "Dataset", "LeakageError", "LeakageGuard", "pairs_to_csr"]
