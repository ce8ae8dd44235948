"""Fixtures shared by test folders."""

from __future__ import annotations

import pytest


@pytest.fixture
def crash_while_saving(monkeypatch):
    """``crash_while_saving(phase, epoch)`` makes the trainer raise KeyboardInterrupt while it
    writes ``last.pt`` with that trainer state (phase index, epochs done); it returns a
    function that restores the real save."""
    import cadmr.train.trainer as trainer

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
