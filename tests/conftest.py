"""Fixtures shared by test folders, and the team's data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the library looks for named datasets in $CADMR_DATA_DIR, else ./data; the team's real
# datasets sit beside the checkout, so tests (and `make`) point it there unless it is set
os.environ.setdefault(
    "CADMR_DATA_DIR", str(Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.fixture
def crash_while_saving(monkeypatch):
    """``crash_while_saving(phase, epoch)`` makes the trainer raise KeyboardInterrupt while it
    writes ``last.pt`` with that trainer state (phase index, epochs done); it returns a
    function that restores the real save."""
    import cadmr.train.loop as trainer

    real = trainer.save_checkpoint

    def arm(phase: int, epoch: int):
        def dying(path, payload):
            state = payload.get("trainer", {})
            if state.get("phase", 0) == phase and state.get("epoch") == epoch:
                raise KeyboardInterrupt
            return real(path, payload)

        monkeypatch.setattr(trainer, "save_checkpoint", dying)
        return lambda: monkeypatch.setattr(trainer, "save_checkpoint", real)

    return arm
