"""Atomic writes leave either the old file or the new one, never a part, and no litter."""

from __future__ import annotations

import pytest

from cadmr.atomic import atomic_write, atomic_write_text


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "results.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half of the new")
        raise KeyboardInterrupt  # a crash or Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
