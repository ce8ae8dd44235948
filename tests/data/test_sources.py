"""Resolution of the dataset argument: synthetic presets, paths, data directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadmr.data import DataError
from cadmr.data.sources import ENV_VAR, data_directory, resolve_dataset


def test_synthetic_preset_is_fixed_data():
    a = resolve_dataset("synthetic-tiny")
    assert a.name == "synthetic-tiny"
    assert a.fingerprint() == resolve_dataset("synthetic-tiny").fingerprint()


def test_path_then_data_dir_then_env(make, tmp_path, monkeypatch):
    folder = make.mmrec(folder="mydata")
    assert resolve_dataset(str(folder)).n_users == 4  # a path
    monkeypatch.chdir(tmp_path / "..")
    assert resolve_dataset("mydata", data_dir=folder.parent).n_items == 6  # --data-dir
    monkeypatch.setenv(ENV_VAR, str(folder.parent))
    assert resolve_dataset("mydata").n_items == 6  # environment variable


def test_the_default_data_directory_is_data_in_the_working_directory(make, tmp_path, monkeypatch):
    folder = make.mmrec(folder="mine")
    (tmp_path / "work" / "data").mkdir(parents=True)
    folder.rename(tmp_path / "work" / "data" / "mine")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert data_directory() == Path("data")
    assert resolve_dataset("mine").n_items == 6
    with pytest.raises(DataError, match=r"data directory, default\)"):
        resolve_dataset("elsewhere")


def test_unknown_name_lists_what_was_searched(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path)):
        resolve_dataset("no-such-dataset")
    with pytest.raises(DataError, match="unknown synthetic preset 'huge'"):
        resolve_dataset("synthetic-huge")
