"""Logging through the standard library, in step with tqdm progress bars.

The toolkit logs to loggers under ``cadmr``. A training run's transcript (one line per
epoch, early stopping, the test result) goes to the ``cadmr.run`` logger, which
:func:`run_transcript` points at the run folder's ``train.log`` and, when asked to echo, at
standard output; it does not propagate, so the transcript shows once whatever the
application configured. Add handlers to ``cadmr.run`` to receive it elsewhere.

Every console line is written with ``tqdm.write``, so a line never breaks a bar.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

RUN_LOGGER = "cadmr.run"
# whether library steps show bars: on inside a run with train.progress (showing_progress)
SHOW_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("SHOW_PROGRESS", default=False)


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (cleared when done) for a library step that can take more than ~10 s on
    large data (EASE's solve, a user graph); shown only inside :func:`showing_progress`."""
    return tqdm(iterable, disable=not SHOW_PROGRESS.get(), leave=False, **kwargs)


@contextlib.contextmanager
def showing_progress(on: bool) -> Iterator[None]:
    """Library steps inside the block show their :func:`progress` bars when ``on``."""
    token = SHOW_PROGRESS.set(on)
    try:
        yield
    finally:
        SHOW_PROGRESS.reset(token)


class TqdmHandler(logging.Handler):
    """A handler that writes each record through ``tqdm.write`` (default: standard output)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream or sys.stdout)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def run_transcript(path: Path, echo: bool) -> Iterator[Callable[[str], None]]:
    """For the length of a run, ``cadmr.run`` writes to ``path`` (appending) and, with
    ``echo``, to standard output; yields the function that logs one line."""
    logger = logging.getLogger(RUN_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    if echo:
        handlers.append(TqdmHandler())
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(h)
    try:
        yield logger.info
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
