"""Figures of the experiments (matplotlib, written to PNG without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt


def line_plot(
    xs: Sequence[float | str],
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    path: str | Path,
    references: dict[str, Sequence[float]] | None = None,
) -> Path:
    """One line per series with mean +- std error bars, saved as a PNG at ``path``.

    Args:
        xs: Shared x positions (e.g. heads 1, 2, 4, 8), shown as categorical ticks.
        series: label -> (means, stds), each aligned with ``xs``.
        references: label -> values drawn as dashed grey lines (e.g. popularity).
    """
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    positions = list(range(len(xs)))
    for label, (means, stds) in series.items():
        ax.errorbar(positions, means, yerr=stds, marker="o", capsize=3, label=label)
    for label, values in (references or {}).items():
        ax.plot(positions, values, linestyle="--", color="grey", marker=".", label=label)
    ax.set_xticks(positions, [str(x) for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) + len(references or {}) > 1:
        ax.legend()
    return _save(fig, path)


def bar_plot(
    groups: Sequence[str],
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    ylabel: str,
    title: str,
    path: str | Path,
) -> Path:
    """Grouped bars (one group per entry of ``groups``, one bar per series, mean +- std
    error bars), saved as a PNG at ``path``."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(groups) + 2), 3.5), dpi=120)
    width = 0.8 / max(len(series), 1)
    for s, (label, (means, stds)) in enumerate(series.items()):
        xs = [g + (s - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Lay out, write ``fig`` as a PNG at ``path`` (folders created) and free it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
