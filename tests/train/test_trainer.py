"""The generic trainer: early stopping, test-once, results files, checkpoints, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cadmr.train.checkpoint as checkpoint_mod
from cadmr.config import ConfigError
from cadmr.data.synthetic import make_synthetic
from cadmr.train import TrainingError, load_model, resolve_run_config, run
from cadmr.train.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic("tiny", seed=0)


def _cfg(model="bpr", **train):
    return resolve_run_config(
        model, "synthetic-tiny", extra={"train": {"progress": False, "batch_size": 128, **train}}
    )


def test_results_files_and_schema(tiny, tmp_path):
    res = run(_cfg(epochs=4), tiny, tmp_path, echo=False)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    for key in ("model", "dataset", "seed", "best_epoch", "valid", "test", "seconds_per_epoch"):
        assert key in on_disk
    for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "precision@10", "map@10", "hit@10"):
        assert 0.0 <= on_disk["test"][k] <= 1.0
    assert "recall@20" in on_disk["valid"]
    assert on_disk["config"]["train"]["epochs"] == 4
    assert on_disk["popularity"]["recall@20"] > 0
    for name in ("config.yaml", "results.md", "train.log", "history.jsonl", "best.pt", "last.pt"):
        assert (tmp_path / name).exists(), name
    assert "| bpr | synthetic-tiny |" in (tmp_path / "results.md").read_text()
    assert "pop (reference)" in (tmp_path / "results.md").read_text()
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 4


def test_test_split_is_evaluated_once_at_best_valid(tiny, tmp_path, monkeypatch):
    import cadmr.train.trainer as trainer

    calls = []
    real = trainer.evaluate

    def spy(model, dataset, split="valid", *a, **k):
        calls.append((split, model.name))
        return real(model, dataset, split, *a, **k)

    monkeypatch.setattr(trainer, "evaluate", spy)
    res = run(_cfg(epochs=5), tiny, tmp_path, echo=False)
    model_test_calls = [c for c in calls if c == ("test", "bpr")]
    assert len(model_test_calls) == 1
    history = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    best = max(history, key=lambda h: h["valid"]["recall@20"])
    assert res["best_epoch"] == best["epoch"]
    assert res["valid"] == best["valid"]


def test_early_stopping_respects_patience(tiny, tmp_path):
    res = run(_cfg(epochs=500, patience=3, learning_rate=0.05), tiny, tmp_path, echo=False)
    assert res["epochs_run"] == res["best_epoch"] + 1 + 3
    assert "early stop" in (tmp_path / "train.log").read_text()


def test_min_epochs_holds_off_early_stopping(tiny, tmp_path):
    """Patience still counts, but no phase stops before train.min_epochs; past it the run
    stops at the first evaluation with patience used up."""
    plain = run(_cfg(epochs=500, patience=3, learning_rate=0.05), tiny, tmp_path / "a", echo=False)
    floor = plain["epochs_run"] + 5
    held = run(
        _cfg(epochs=500, patience=3, learning_rate=0.05, min_epochs=floor),
        tiny,
        tmp_path / "b",
        echo=False,
    )
    assert held["epochs_run"] >= floor
    history = [json.loads(x) for x in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    best_epoch = max(range(len(history)), key=lambda e: history[e]["valid"]["recall@20"])
    assert held["epochs_run"] == max(floor, best_epoch + 1 + 3)
    capped = run(_cfg(epochs=4, patience=1, min_epochs=10), tiny, tmp_path / "c", echo=False)
    assert capped["epochs_run"] == 4  # train.epochs still bounds the phase
    with pytest.raises(ConfigError, match="min_epochs"):
        _cfg(min_epochs=-1)


def test_resume_continues_exactly(tiny, tmp_path, monkeypatch):
    """Interrupt while the 3rd epoch's state is being saved; resume must match a clean run."""
    import cadmr.train.loop as trainer

    cfg = _cfg(epochs=6, patience=100)
    full = run(cfg, tiny, tmp_path / "full", echo=False)
    saves = []
    real_save = trainer.save_checkpoint

    def interrupting_save(path, payload):
        if path.name == "last.pt":
            saves.append(path)
            if len(saves) == 3:
                raise KeyboardInterrupt
        real_save(path, payload)

    monkeypatch.setattr(trainer, "save_checkpoint", interrupting_save)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tiny, tmp_path / "part", echo=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "part" / "last.pt")["trainer"]["epoch"] == 2
    resumed = run(cfg, tiny, tmp_path / "part", resume=True, echo=False)
    assert "resumed from" in (tmp_path / "part" / "train.log").read_text()
    assert resumed["test"] == full["test"]
    assert resumed["valid"] == full["valid"]
    assert resumed["best_epoch"] == full["best_epoch"]
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "part" / "history.jsonl").open()]
    assert epochs == list(range(6))


def test_resume_refuses_other_config(tiny, tmp_path):
    run(_cfg(epochs=2), tiny, tmp_path, echo=False)
    with pytest.raises(TrainingError, match="another configuration"):
        run(_cfg(epochs=3), tiny, tmp_path, resume=True, echo=False)


def test_finished_run_is_not_overwritten(tiny, tmp_path):
    run(_cfg(epochs=1), tiny, tmp_path, echo=False)
    with pytest.raises(TrainingError, match="already holds finished results"):
        run(_cfg(epochs=1), tiny, tmp_path, echo=False)


def test_grid_search_selects_on_validation(tiny, tmp_path):
    cfg = resolve_run_config(
        "ease",
        "synthetic-tiny",
        extra={"train": {"progress": False}},
        sets=["search.reg_weight=[0.1,10.0,1000.0]"],
    )
    res = run(cfg, tiny, tmp_path, echo=False)
    assert len(res["search"]) == 3
    best = max(res["search"], key=lambda s: s["valid_recall@20"])
    assert res["params"] == best["params"]
    assert (tmp_path / "trials" / "002" / "trial.json").exists()
    # a resumed grid reuses finished trials
    (tmp_path / "results.json").unlink()
    run(cfg, tiny, tmp_path, resume=True, echo=False)
    assert "reusing finished trial" in (tmp_path / "train.log").read_text()


def test_diverging_loss_stops_with_a_clear_error(tiny, tmp_path, monkeypatch):
    from cadmr.models.bpr import BPRMF

    monkeypatch.setattr(BPRMF, "loss", lambda self, batch: torch.tensor(float("nan")))
    with pytest.raises(TrainingError, match="loss is nan"):
        run(_cfg(epochs=2), tiny, tmp_path, echo=False)


def _checkpoint(x: torch.Tensor) -> dict:
    """The smallest dict load_checkpoint accepts as a checkpoint."""
    return {
        "format": 1,
        "config": {"model": "pop"},
        "params": {},
        "model_state": {"x": x},
        "dataset_fingerprint": "0",
    }


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _checkpoint(torch.ones(3)))

    def crash(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_mod.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _checkpoint(torch.zeros(3)))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model_state"]["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x80\x02truncated")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("a checkpoint ran code",))


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b""), "the file is empty"),
        (lambda p: torch.save([1, 2], p), "not a cadmr checkpoint .it holds a list"),
        (lambda p: torch.save({}, p), "not a cadmr checkpoint .no format, config"),
        (lambda p: torch.save({**_checkpoint(torch.ones(1)), "config": {}}, p), "no model"),
        (lambda p: torch.save({"x": _RunsCode()}, p), "refused .loading them could run code"),
        (lambda p: p.write_text("not a torch file at all"), "cannot read checkpoint"),
    ],
)
def test_a_checkpoint_that_is_not_ours_is_one_clear_line(tmp_path, capsys, write, message):
    path = tmp_path / "x.pt"
    write(path)
    with pytest.raises(ValueError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert "ran code" not in capsys.readouterr().out


def test_checkpoint_refuses_other_data(tiny, tmp_path):
    res = run(_cfg(epochs=1), tiny, tmp_path, echo=False)
    other = make_synthetic("tiny", seed=1)
    with pytest.raises(ValueError, match="trained on other data"):
        load_model(res["checkpoint"], other)


def test_same_seed_same_numbers_different_seed_differs(tiny, tmp_path):
    a = run(_cfg(epochs=3), tiny, tmp_path / "a", echo=False)
    b = run(_cfg(epochs=3), tiny, tmp_path / "b", echo=False)
    c_cfg = resolve_run_config(
        "bpr", "synthetic-tiny", seed=7, extra={"train": {"progress": False, "epochs": 3}}
    )
    c = run(c_cfg, tiny, tmp_path / "c", echo=False)
    assert a["test"] == b["test"]
    assert a["valid"] != c["valid"] or a["test"] != c["test"]
    assert np.isfinite(a["seconds_per_epoch"])


class _TwoPhase:
    """A model whose second phase ranks worse than its first (popularity, then reversed)."""

    @staticmethod
    def make():
        from dataclasses import dataclass

        from cadmr.models.base import TorchRecommender

        @dataclass(frozen=True)
        class Params:
            pass

        class TwoPhase(TorchRecommender):
            name = "two_phase"
            params_cls = Params

            def __init__(self, params, n_users, n_items, feature_dims):
                super().__init__(params, n_users, n_items, feature_dims)
                self.w = torch.nn.Parameter(torch.ones(1))
                self.phase = "good"

            def phases(self):
                return ("good", "bad")

            def start_phase(self, phase):
                self.phase = phase

            def batches(self, rng, batch_size):
                yield None

            def loss(self, batch):
                return (self.w - 2.0).pow(2).sum()

            def score(self, users):
                pop = torch.from_numpy(np.asarray(self.train_matrix.sum(axis=0)).ravel())
                sign = 1.0 if self.phase == "good" else -1.0
                return (sign * pop).float().repeat(len(users), 1)

        return TwoPhase


def test_phases_run_in_order_and_the_best_phase_is_kept(tiny, tmp_path, monkeypatch):
    from cadmr.models import MODELS

    monkeypatch.setitem(MODELS, "two_phase", _TwoPhase.make())
    res = run(_cfg("two_phase", epochs=2), tiny, tmp_path, echo=False)
    assert [p["phase"] for p in res["phases"]] == ["good", "bad"]
    assert res["selected_phase"] == "good"
    assert res["checkpoint"].endswith("best-good.pt")
    assert res["valid"] == res["phases"][0]["valid"]
    assert res["phases"][1]["valid"]["recall@20"] < res["valid"]["recall@20"]
    model, ck = load_model(res["checkpoint"], tiny)
    assert ck["phase"] == "good" and model.phase == "good"
    log = (tmp_path / "train.log").read_text()
    assert log.index("[good] epoch") < log.index("[bad] start") < log.index("[bad] epoch")


def test_resume_inside_a_later_phase(tiny, tmp_path, monkeypatch, crash_while_saving):
    from cadmr.models import MODELS

    monkeypatch.setitem(MODELS, "two_phase", _TwoPhase.make())
    full = run(_cfg("two_phase", epochs=3), tiny, tmp_path / "full", echo=False)
    disarm = crash_while_saving(phase=1, epoch=2)  # after epoch 1 of phase "bad"
    with pytest.raises(KeyboardInterrupt):
        run(_cfg("two_phase", epochs=3), tiny, tmp_path / "part", echo=False)
    disarm()
    resumed = run(_cfg("two_phase", epochs=3), tiny, tmp_path / "part", resume=True, echo=False)
    assert "at phase 1, epoch 1" in (tmp_path / "part" / "train.log").read_text()
    keys = ("phase", "best_epoch", "epochs_run", "valid")
    assert [{k: p[k] for k in keys} for p in resumed["phases"]] == [
        {k: p[k] for k in keys} for p in full["phases"]
    ]
    assert resumed["test"] == full["test"]


class _Quadratic(torch.nn.Module):
    """loss = 0.5 * a * w^2 per batch, four batches an epoch: its SGD steps are known."""

    name = "quadratic"

    def __init__(self, a: float = 2.0) -> None:
        super().__init__()
        self.a = a
        self.w = torch.nn.Parameter(torch.tensor([1.0]))

    def batches(self, rng, batch_size):
        return iter(range(4))

    def loss(self, batch):
        return 0.5 * self.a * self.w.pow(2).sum()


@pytest.mark.parametrize("alpha1, alpha2", [(1.0, 1.0), (1.0, 0.5)])
def test_mirror_gradient_takes_the_paper_steps(alpha1, alpha2):
    """SGD on 0.5 a w^2 (gradient a w): a mirror pair on batches 0 and 3 (interval 3) is
    w <- w - lr alpha1 a w, then w <- w + lr alpha2 a w' at the new w'; batches 1, 2 are
    plain steps."""
    from cadmr.config import TrainConfig
    from cadmr.train.loop import train_epoch as _train_epoch

    model, lr, a = _Quadratic(), 0.1, 2.0
    tc = TrainConfig(
        progress=False,
        mirror_gradient=True,
        mirror_alpha1=alpha1,
        mirror_alpha2=alpha2,
        mirror_interval=3,
    )
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    _train_epoch(model, opt, np.random.default_rng(0), tc, "test")
    w = 1.0
    for b in range(4):
        if b % 3 == 0:
            w = w - lr * alpha1 * a * w
            w = w + lr * alpha2 * a * w
        else:
            w = w - lr * a * w
    assert model.w.item() == pytest.approx(w, rel=1e-6)
    plain = _Quadratic()
    opt = torch.optim.SGD(plain.parameters(), lr=lr)
    _train_epoch(plain, opt, np.random.default_rng(0), TrainConfig(progress=False), "test")
    assert plain.w.item() == pytest.approx((1 - lr * a) ** 4, rel=1e-6)
    assert model.w.item() != pytest.approx(plain.w.item())


def test_mirror_gradient_runs_any_model_end_to_end(tiny, tmp_path):
    cfg = _cfg("lightgcn", epochs=2, mirror_gradient=True)
    results = run(cfg, tiny, tmp_path / "mg", echo=False)
    plain = run(_cfg("lightgcn", epochs=2), tiny, tmp_path / "plain", echo=False)
    assert results["config"]["train"]["mirror_gradient"] is True
    assert results["valid"] != plain["valid"]  # the strategy changed the training


@pytest.mark.parametrize(("model_lr", "expected"), [(0.0, 0.5), (0.01, 0.01)])
def test_a_learning_rate_parameter_overrides_the_training_one(model_lr, expected):
    """MMRec's grids search the learning rate, so models may carry it as a parameter."""
    from types import SimpleNamespace

    from cadmr.config import TrainConfig
    from cadmr.train.loop import make_optimizer

    model = torch.nn.Linear(2, 2)
    model.params = SimpleNamespace(learning_rate=model_lr)
    assert make_optimizer(model, TrainConfig(learning_rate=0.5)).param_groups[0]["lr"] == expected


def test_retain_freed_memory_applies_on_glibc_and_can_be_switched_off(monkeypatch):
    import platform

    from cadmr.train.runtime import retain_freed_memory

    monkeypatch.setenv("CADMR_RETAIN_FREED_MEMORY", "0")
    assert retain_freed_memory() is False
    monkeypatch.delenv("CADMR_RETAIN_FREED_MEMORY")
    if platform.libc_ver()[0] == "glibc":
        assert retain_freed_memory() is True


@pytest.mark.parametrize(
    ("model", "batch"),
    [("kernel_ae", 64), ("cadmr", 64), ("cadmr_paper", 64), ("addvae", 512), ("bpr", 2048)],
)
def test_a_models_train_defaults_sit_between_the_dataclass_and_the_user(model, batch, tmp_path):
    assert resolve_run_config(model, "d").train.batch_size == batch
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  batch_size: 7\n")
    assert resolve_run_config(model, "d", config_file=cfg).train.batch_size == 7
    assert resolve_run_config(model, "d", sets=["train.batch_size=9"]).train.batch_size == 9


def test_the_transcript_goes_to_train_log_and_the_cadmr_run_logger(tiny, tmp_path, capsys):
    """echo=False keeps standard output clean; an application handler on ``cadmr.run``
    receives the same lines as train.log, and the run removes its own handlers after."""
    import logging

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("cadmr.run")
    keep = Keep()
    logger.addHandler(keep)
    try:
        run(_cfg(epochs=2), tiny, tmp_path, echo=False)
    finally:
        logger.removeHandler(keep)
    assert capsys.readouterr().out == ""
    assert seen == (tmp_path / "train.log").read_text().splitlines()
    assert any(line.startswith("epoch    1 loss") for line in seen)
    from cadmr.logs import TqdmHandler

    assert not [h for h in logger.handlers if isinstance(h, logging.FileHandler | TqdmHandler)]
