"""One run folder, one process: the lock and the status file of a run folder.

``owned(out_dir)`` holds an exclusive lock on ``out_dir/.lock`` for the whole run, and the
file holds the owner's pid. A second process asking for the same folder is refused at once
with one line naming the owner. The lock is ``fcntl.flock``: the kernel drops it when its
process ends, however it ends (kill -9 included), so a lock file left by a dead run is
stale by construction and the next run simply takes it over. (The ``filelock`` package
truncates the lock file on every attempt, which would erase the owner's pid before a
refused process could read it; hence these few lines of ``fcntl``. POSIX only, like the
rest of the toolkit's tooling.)

``status.json`` says what the folder holds: ``running`` (with the pid; a ``running`` folder
whose lock is free was killed), ``finished``, ``failed`` (with the error) or
``interrupted`` (Ctrl-C: continue with ``--resume``). Only a finished run writes
``results.json``, so nothing that looks for ``results.json`` (``--resume``, the experiment
cache, scripts) can take a failed run for a finished one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cadmr.atomic import atomic_write_text
from cadmr.errors import TrainingError

LOCK = ".lock"
STATUS = "status.json"


class RunFolderError(TrainingError):
    """The run folder cannot be used: it is not a folder, cannot be written, or is in use."""


class FolderInUseError(RunFolderError):
    """Another live process owns the run folder."""


@contextlib.contextmanager
def owned(out_dir: Path) -> Iterator[str | None]:
    """Own ``out_dir`` (created if needed) until the block ends. Yields the pid of a dead
    previous owner whose lock was taken over, or None.

    Raises:
        RunFolderError: if the folder cannot be created or written.
        FolderInUseError: if a live process holds the folder.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except FileExistsError:
        raise RunFolderError(
            f"{out_dir} exists and is not a folder; choose another --out"
        ) from None
    except OSError as e:  # read-only, no permission, a file on the path, disk full
        raise RunFolderError(f"cannot use {out_dir} as a run folder: {e.strerror}") from None
    try:
        previous = os.pread(fd, 64, 0).decode(errors="replace").strip() or None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = f"process {previous}" if previous else "another process"
            raise FolderInUseError(
                f"{out_dir} is in use by {owner}; wait for it to finish or choose another --out"
            ) from None
        # the previous owner empties the file when it lets go: a pid still there is a
        # dead owner's
        stale = os.pread(fd, 64, 0).decode(errors="replace").strip() or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield stale
        finally:
            os.ftruncate(fd, 0)  # the folder is free again; the file stays (no unlink race)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_status(out_dir: Path, status: str, **details: object) -> None:
    """Record ``status`` (running, finished, failed, interrupted) in ``out_dir/status.json``."""
    record = {"status": status, "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(out_dir / STATUS, json.dumps({**record, **details}, indent=2))


def read_status(out_dir: Path) -> dict[str, object] | None:
    """The folder's status record, or None when it has none (or an unreadable one)."""
    try:
        record = json.loads((out_dir / STATUS).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
