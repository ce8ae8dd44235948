"""``train.device``: choosing the device, its errors, and what stays as it was on the CPU."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
import yaml

from cadmr.cli import main
from cadmr.config import ConfigError, TrainConfig
from cadmr.data.synthetic import make_synthetic
from cadmr.experiments import run_key
from cadmr.models.base import _map_tensors, batch_to
from cadmr.train import resolve_run_config, run
from cadmr.train.device import resolve_device

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic("tiny", seed=0)


def test_cpu_and_auto_without_a_gpu():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "cudax", "cuda:x", ""])
def test_unknown_device_names_are_a_clear_error(name):
    """The checkpoint commands' --device reaches resolve_device without the configuration's
    check: it refuses the same names."""
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device(name)


@NO_GPU
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_gpu_that_is_not_there_is_a_clear_error(name):
    with pytest.raises(ConfigError, match=f"train.device is {name} but torch sees no GPU"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", ""])
def test_device_names_are_checked_with_the_configuration(name):
    with pytest.raises(ConfigError, match=r"train\.device must be cpu, cuda, cuda:N or auto"):
        TrainConfig(device=name)


@NO_GPU
def test_the_cli_reports_a_missing_gpu_in_one_line(tmp_path, capsys):
    args = ["train", "-m", "bpr", "-d", "synthetic-tiny", "--set", "train.device=cuda"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cadmr: error: train.device is cuda but torch sees no GPU")
    assert not (tmp_path / "run" / "last.pt").exists()  # it failed before any work


@NO_GPU
@pytest.mark.parametrize("command", [["evaluate"], ["recommend", "--user", "0"]])
def test_checkpoint_commands_take_a_device(command, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "-m", "bpr", "-d", "synthetic-tiny", "--quiet", "--out", str(out)]
    assert main([*args, "--set", "train.epochs=1"]) == 0
    ckpt = str(out / "best.pt")
    assert main([command[0], ckpt, *command[1:], "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main([command[0], ckpt, *command[1:], "--device", "cuda"]) == 2
    assert "torch sees no GPU" in capsys.readouterr().err


def test_results_record_the_device(tiny, tmp_path):
    cfg = resolve_run_config("bpr", "synthetic-tiny", extra={"train": {"epochs": 1}})
    assert run(cfg, tiny, tmp_path, echo=False)["device"] == "cpu"


def test_a_run_folder_from_before_the_device_setting_resumes(tiny, tmp_path):
    """config.yaml written without ``train.device`` is the same configuration on the CPU."""
    cfg = resolve_run_config(
        "bpr", "synthetic-tiny", extra={"train": {"epochs": 2, "progress": False}}
    )
    first = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    run(first, tiny, tmp_path, echo=False)
    for done in ("results.json", "trial.json"):  # as if interrupted after its first epoch
        (tmp_path / done).unlink()
    old = yaml.safe_load((tmp_path / "config.yaml").read_text())
    old["train"]["epochs"] = 2
    del old["train"]["device"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    resumed = run(cfg, tiny, tmp_path, resume=True, echo=False)
    assert resumed["epochs_run"] == 2


def test_cached_run_keys_keep_their_value_on_the_cpu(tiny):
    """Keys of runs cached before ``train.device``, ``train.min_epochs`` and CADMR's
    ``params.neighbour_input`` / ``neighbour_reverse`` / ``prior_temperature`` /
    ``finetune_loss`` / ``ranking_temperature`` existed still find them; another device, a
    minimum, CADMR's attended rows at the output only, its output path both ways or its
    content prior (today's defaults) or its ranking loss is another run."""
    cfg = resolve_run_config("bpr", "synthetic-tiny")
    before = {k: v for k, v in cfg.to_dict().items() if k != "dataset"}
    added = ("progress", "device", "min_epochs")
    before["train"] = {k: v for k, v in before["train"].items() if k not in added}
    text = yaml.safe_dump(before, sort_keys=True) + tiny.fingerprint()
    assert run_key(cfg, tiny) == hashlib.sha256(text.encode()).hexdigest()[:16]
    gpu = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cuda"))
    assert run_key(gpu, tiny) != run_key(cfg, tiny)
    held = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, min_epochs=5))
    assert run_key(held, tiny) != run_key(cfg, tiny)
    # CADMR's params.neighbour_input, neighbour_reverse, prior_temperature, finetune_loss
    # and ranking_temperature came later: at the values that behave as before (input path
    # on, output path one way, no prior, the reconstruction loss) they leave the key alone
    default = resolve_run_config("cadmr", "synthetic-tiny")
    one_way = dataclasses.replace(
        default,
        params=dataclasses.replace(default.params, neighbour_reverse=False, prior_temperature=0.0),
    )
    before = {k: v for k, v in one_way.to_dict().items() if k != "dataset"}
    before["train"] = {k: v for k, v in before["train"].items() if k not in added}
    later = (
        "neighbour_input",
        "neighbour_reverse",
        "prior_temperature",
        "finetune_loss",
        "ranking_temperature",
    )
    before["params"] = {k: v for k, v in before["params"].items() if k not in later}
    text = yaml.safe_dump(before, sort_keys=True) + tiny.fingerprint()
    assert run_key(one_way, tiny) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert run_key(default, tiny) != run_key(one_way, tiny)  # both ways: a new default
    for change in ({"neighbour_reverse": True}, {"prior_temperature": 0.1}):
        newer = dataclasses.replace(one_way, params=dataclasses.replace(one_way.params, **change))
        assert run_key(newer, tiny) != run_key(one_way, tiny)
    ranked = dataclasses.replace(
        one_way, params=dataclasses.replace(one_way.params, finetune_loss="ranking")
    )
    assert run_key(ranked, tiny) != run_key(one_way, tiny)
    out_only = dataclasses.replace(
        one_way, params=dataclasses.replace(one_way.params, neighbour_input=False)
    )
    assert run_key(out_only, tiny) != run_key(one_way, tiny)


@dataclasses.dataclass(frozen=True)
class _Batch:
    users: torch.Tensor
    items: np.ndarray


def test_tensors_are_mapped_inside_containers_and_aliases_stay_aliases():
    t, arr = torch.arange(3), np.arange(3)
    value = {"batch": _Batch(t, arr), "pair": (t, 1), "plain": [arr, "x"]}
    out = _map_tensors(value, lambda x: x + 10, {})
    assert out["batch"].users.tolist() == [10, 11, 12] and out["batch"].items is arr
    assert out["pair"][0] is out["batch"].users  # one tensor, one result
    assert out["plain"] is value["plain"]  # nothing to map: the same object
    untouched = {"a": [1, 2], "b": arr}
    assert _map_tensors(untouched, lambda x: x + 1, {}) is untouched
    p = torch.nn.Parameter(torch.ones(2))
    assert _map_tensors([p], lambda x: x * 0, {})[0] is p  # nn.Module moves parameters
    batch = _Batch(t, arr)
    assert batch_to(batch, torch.device("cpu")) is batch
