"""The model contract as a test kit: subclass it and a new model is checked like ours.

    from cadmr.testing import ModelContract
    from mypackage.models import MyModel  # a cadmr.models.Recommender subclass

    class TestMyModel(ModelContract):
        model = MyModel  # or a registered name, or a list of classes and names

pytest then runs every check of the contract (docs/conventions.md) on the model: score
shape and finiteness, determinism per seed, a training step lowers the loss, scores follow
the parameters, every parameter is trained, checkpoint round trip, ``.to(device)`` moves
everything the model holds, the leakage guard, a known-answer task on ``checkerboard`` data,
and, where torch sees a CUDA GPU, the same on the GPU (skipped elsewhere). Checks that need
gradient training run only for ``TorchRecommender`` models. A class that is not in
``cadmr.models.MODELS`` is registered under its ``name`` while each check runs.

Class attributes tune the checks (``ModelContract``); ``check_contract(MyModel)`` runs
them without pytest. ``small_dataset`` and ``setup_model`` build the small data and models
of a model's own unit tests. This module imports torch but not pytest: pytest finds the
checks by their names and parametrises them through ``ModelContract.pytest_generate_tests``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
import sys
import tempfile
import unittest
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from cadmr.config import RunConfig
from cadmr.data import Dataset, LeakageError, LeakageGuard
from cadmr.data.synthetic import SyntheticSpec, make_synthetic
from cadmr.eval.protocol import evaluate
from cadmr.models import (
    MODELS,
    ClosedFormRecommender,
    Recommender,
    TorchRecommender,
    get_model_class,
)
from cadmr.models.base import batch_to
from cadmr.train import load_model, resolve_run_config, run
from cadmr.train.trainer import build_model

__all__ = [
    "KNOWN_ANSWER_DEFAULT",
    "ModelContract",
    "check_contract",
    "checkerboard",
    "contract_config",
    "ready_model",
    "registered",
    "setup_model",
    "small_dataset",
]

# the checkerboard's layout: users and items per group
BOARD_USERS, BOARD_ITEMS = 20, 15

KNOWN_ANSWER_DEFAULT: Mapping[str, Any] = {
    "train": {"epochs": 100, "batch_size": 64, "learning_rate": 0.05, "patience": 30}
}
"""Configuration layers of the known-answer run for a model without its own settings."""


# ---- data and models ------------------------------------------------------------------------


def checkerboard(
    n_per_group: int = BOARD_USERS, items_per_group: int = BOARD_ITEMS, seed: int = 0
) -> Dataset:
    """Two user groups, two item groups; users interact only within their own group and
    item features ("text", "image", 8-d each) are clustered by group. Each user holds out
    one valid and one test item."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 2 * n_per_group, 2 * items_per_group
    splits = {
        s: sp.lil_matrix((n_users, n_items), dtype=np.float32) for s in ("train", "valid", "test")
    }
    for u in range(n_users):
        g = u // n_per_group
        own = rng.permutation(np.arange(g * items_per_group, (g + 1) * items_per_group))[:9]
        for i in own[:7]:
            splits["train"][u, i] = 1
        splits["valid"][u, own[7]] = 1
        splits["test"][u, own[8]] = 1
    group = np.repeat([0, 1], items_per_group)
    centres = rng.normal(size=(2, 8))
    feats = {
        "text": (centres[group] + 0.1 * rng.normal(size=(n_items, 8))).astype(np.float32),
        "image": (centres[::-1][group] + 0.1 * rng.normal(size=(n_items, 8))).astype(np.float32),
    }
    return Dataset.build("checkerboard", {k: v.tocsr() for k, v in splits.items()}, feats)


@functools.cache
def _board() -> Dataset:  # a Dataset is immutable: one per process serves every check
    return checkerboard()


def small_dataset(
    modalities: Sequence[tuple[str, int]] = (("a", 3), ("b", 2)),
    *,
    n_users: int = 30,
    n_items: int = 20,
    n_interactions: int = 200,
    n_groups: int = 2,
    seed: int = 0,
) -> Dataset:
    """A small synthetic dataset (``make_synthetic``) with the given ``(name, dim)``
    modalities, for a model's unit tests."""
    spec = SyntheticSpec(
        n_users=n_users,
        n_items=n_items,
        n_interactions=n_interactions,
        n_groups=n_groups,
        modalities=tuple(modalities),
    )
    return make_synthetic(spec, seed=seed)


def setup_model(cls: type[Recommender], params: Any, data: Dataset, seed: int = 0) -> Any:
    """``cls(params, ...)`` built after ``torch.manual_seed(seed)`` (the global generator, so
    a test's later draws follow from the seed too) and ``setup`` on ``data``'s training
    split."""
    torch.manual_seed(seed)
    model = cls(params, data.n_users, data.n_items, data.modalities)
    model.setup(data.train, data.features, LeakageGuard(data))
    return model


def contract_config(name: str, **layers: Any) -> RunConfig:
    """The run configuration of registered model ``name`` for the checkerboard, without
    progress bars or a search, with ``layers`` (``train=``, ``eval=``, ``params=``...) over
    the defaults."""
    extra = {"train": {"progress": False, **layers.get("train", {})}}
    extra.update({k: v for k, v in layers.items() if k != "train"})
    cfg = resolve_run_config(name, "checkerboard", extra=extra)
    return dataclasses.replace(cfg, search={})


def ready_model(name: str, data: Dataset, seed: int = 0) -> Any:
    """Registered model ``name`` with its default parameters, built as the trainer builds it
    (``build_model``), set up on ``data`` and, when closed-form, fitted."""
    cfg = contract_config(name)
    model = build_model(cfg, cfg.params, data, seed=seed)
    model.setup(data.train, data.features, LeakageGuard(data))
    if isinstance(model, ClosedFormRecommender):
        model.fit()
    return model


@contextmanager
def registered(*classes: type[Recommender]) -> Iterator[None]:
    """Register ``classes`` in ``cadmr.models.MODELS`` under their ``name`` for the block
    (the trainer, configuration and checkpoints look models up there).

    Raises:
        ValueError: another class is registered under one of the names.
    """
    added = []
    try:
        for cls in classes:
            current = MODELS.get(cls.name)
            if current is None:
                MODELS[cls.name] = cls
                added.append(cls.name)
            elif current is not cls:
                raise ValueError(f"{current.__name__} is registered as {cls.name!r}")
        yield
    finally:
        for name in added:
            del MODELS[name]


def _held_tensors(root: object) -> dict[int, torch.Tensor]:
    """Every tensor reachable from ``root`` through attributes (of modules, and of this
    package's own objects: samplers, batches), dicts, lists, tuples and sets, except
    parameters and what nn.Module itself keeps (parameters, buffers, children)."""
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    internals = set(vars(torch.nn.Module()))

    def walk(value: object) -> None:
        if id(value) in seen or isinstance(value, torch.nn.Parameter):
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            found[id(value)] = value
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for v in value:
                walk(v)
        elif isinstance(value, torch.nn.Module):
            for name, v in vars(value).items():
                if name not in internals:
                    walk(v)
            for child in value.children():
                walk(child)
        elif type(value).__module__.startswith("cadmr") and hasattr(value, "__dict__"):
            for v in vars(value).values():
                walk(v)

    walk(root)
    return found


def _torch_only(check: Callable[..., None]) -> Callable[..., None]:
    check.torch_only = True  # type: ignore[attr-defined]
    return check


def _gpu(check: Callable[..., None]) -> Callable[..., None]:
    check.gpu = True  # type: ignore[attr-defined]
    return _torch_only(check)


def _require_cuda() -> None:
    if torch.cuda.is_available():
        return
    if "pytest" in sys.modules:  # under pytest (not imported here: the kit runs without it)
        sys.modules["pytest"].skip("needs a CUDA GPU")
    raise unittest.SkipTest("needs a CUDA GPU")


# ---- the contract ---------------------------------------------------------------------------


class ModelContract:
    """The checks every model must pass, as ``test_*`` methods of ``model_name`` (one of the
    names of ``model``; pytest parametrises them) and pytest's ``tmp_path``.

    Attributes:
        model: What to check: a ``Recommender`` subclass, a registered model name, or a
            sequence of them.
        known_answer_settings: Configuration layers (``train``, ``eval``, ``params``) of the
            known-answer run, per model name; a model not named gets
            ``KNOWN_ANSWER_DEFAULT``.
        random_in_eval: Names of models whose loss draws from torch's generator even in eval
            mode: their GPU loss is only checked to be finite, not to match the CPU's.
        parameters_only: Names of models that hold nothing but parameters (no constant from
            ``setup``, no cache); when set, every other model must hold a tensor, which
            proves that the ``.to(device)`` check sees what it checks. None: not asserted.
    """

    model: ClassVar[type[Recommender] | str | Sequence[type[Recommender] | str]] = ()
    known_answer_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    random_in_eval: ClassVar[Collection[str]] = ()
    parameters_only: ClassVar[Collection[str] | None] = None

    @classmethod
    def models(cls) -> dict[str, type[Recommender]]:
        """name -> class of everything ``model`` names."""
        given = [cls.model] if isinstance(cls.model, (str, type)) else list(cls.model)
        classes = [get_model_class(m) if isinstance(m, str) else m for m in given]
        return {c.name: c for c in classes}

    def dataset(self) -> Dataset:
        """The checkerboard every check runs on (the known-answer check reads its layout)."""
        return _board()

    # pytest's hooks: parametrise by model name, register the classes around each check
    def pytest_generate_tests(self, metafunc: Any) -> None:
        if "model_name" in metafunc.fixturenames:
            torch_only = getattr(metafunc.function, "torch_only", False)
            names = [
                name
                for name, c in self.models().items()
                if not torch_only or issubclass(c, TorchRecommender)
            ]
            metafunc.parametrize("model_name", names)

    def setup_method(self, method: Any = None) -> None:
        self._registration = ExitStack()
        self._registration.enter_context(registered(*self.models().values()))

    def teardown_method(self, method: Any = None) -> None:
        self._registration.close()

    # ---- the checks ------------------------------------------------------------------------

    def test_score_shape_and_finite(self, model_name: str) -> None:
        board = self.dataset()
        model = ready_model(model_name, board)
        users = np.array([0, 5, 39])
        model.prepare_scoring()
        with torch.no_grad():
            scores = model.score(users)
        assert scores.shape == (3, board.n_items)
        assert scores.dtype == torch.float32
        assert torch.isfinite(scores).all()
        # the caller owns the returned tensor (the protocol masks it in place)
        again = model.score(users)
        scores.fill_(0)
        assert torch.isfinite(again).all() and not torch.equal(again, scores)

    def test_same_seed_same_result(self, model_name: str, tmp_path: Path) -> None:
        board = self.dataset()
        cfg = contract_config(model_name, train={"epochs": 2, "batch_size": 64})
        a = run(cfg, board, tmp_path / "a", echo=False)
        b = run(cfg, board, tmp_path / "b", echo=False)
        assert a["valid"] == b["valid"]
        assert a["test"] == b["test"]

        def losses(d: str) -> list[tuple[Any, ...]]:  # bit-reproducible: the losses themselves
            history = tmp_path / d / "history.jsonl"  # closed-form models have none
            lines = history.read_text().splitlines() if history.exists() else []
            return [(h.get("phase"), h["epoch"], h.get("loss")) for h in map(json.loads, lines)]

        assert losses("a") == losses("b")

    @_torch_only
    def test_different_seed_different_init(self, model_name: str) -> None:
        a = ready_model(model_name, self.dataset(), seed=0).state()
        b = ready_model(model_name, self.dataset(), seed=1).state()
        assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())

    @_torch_only
    def test_training_step_lowers_loss(self, model_name: str) -> None:
        model = ready_model(model_name, self.dataset())
        rng = np.random.default_rng(0)
        batch = next(iter(model.batches(rng, 256)))
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        model.train()
        before = model.loss(batch).item()
        for _ in range(5):
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
        assert model.loss(batch).item() < before

    @_torch_only
    def test_scores_follow_the_parameters(self, model_name: str) -> None:
        """Scores computed after training steps come from the new parameters, even when the
        model cached embeddings for an earlier round of scoring (CachedEmbeddingScores)."""
        board = self.dataset()
        model = ready_model(model_name, board)
        users = np.arange(board.n_users)
        model.eval()
        model.prepare_scoring()
        with torch.no_grad():
            before = model.score(users)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        model.train()
        for batch in model.batches(np.random.default_rng(0), 256):
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            after = model.score(users)
        assert not torch.allclose(before, after)

    @_torch_only
    def test_an_epoch_states_its_number_of_batches(self, model_name: str) -> None:
        """Every phase's epoch has a length (the trainer's progress bar shows a total and the
        time left) equal to the batches it yields."""
        model = ready_model(model_name, self.dataset())
        for phase in model.phases():
            model.start_phase(phase)
            batches = model.batches(np.random.default_rng(0), 7)
            assert len(batches) == sum(1 for _ in batches) > 1

    @_torch_only
    def test_every_parameter_gets_a_gradient(self, model_name: str) -> None:
        """Within the first two optimizer steps of its phases, every parameter gets a non-zero
        gradient (two steps: a zero-initialised layer passes no gradient back on the first)."""
        model = ready_model(model_name, self.dataset())
        reached: set[str] = set()
        for phase in model.phases():
            model.start_phase(phase)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            model.train()
            for _ in range(2):
                batch = next(iter(model.batches(np.random.default_rng(0), 10_000)))
                optimizer.zero_grad()
                model.loss(batch).backward()
                reached |= {
                    n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()
                }
                optimizer.step()
        assert not {n for n, _ in model.named_parameters()} - reached

    def test_checkpoint_round_trip(self, model_name: str, tmp_path: Path) -> None:
        """The saved best model reproduces exactly the validation metrics it was selected by."""
        board = self.dataset()
        cfg = contract_config(model_name, train={"epochs": 3})
        results = run(cfg, board, tmp_path, echo=False)
        model, ck = load_model(results["checkpoint"], board)
        assert ck["config"]["model"] == model_name
        assert evaluate(model, board, "valid", cfg.eval) == results["valid"]
        assert evaluate(model, board, "test", cfg.eval) == results["test"]

    @_torch_only
    def test_moving_the_model_moves_every_tensor_it_holds(self, model_name: str) -> None:
        """``model.to(device)`` must reach the constants ``setup`` built and the caches that
        training and scoring fill, or a GPU run mixes devices. Checked with the conversion
        that ``.to`` uses, here a copy on the CPU: afterwards no tensor the model held before
        is still held; the buffers come back too; tensors that were one object stay one."""
        model = ready_model(model_name, self.dataset())
        model.train()
        model.loss(next(iter(model.batches(np.random.default_rng(0), 64))))  # training caches
        model.eval()
        model.prepare_scoring()  # fills scoring caches
        before = _held_tensors(model)
        if self.parameters_only is not None:  # else the walk may be blind
            assert bool(before) == (model_name not in self.parameters_only), sorted(vars(model))
        buffers = {id(b) for b in model.buffers()}
        model._apply(lambda t: t.clone())
        after = _held_tensors(model)
        assert not set(before) & set(after), [k for k, v in vars(model).items() if id(v) in after]
        assert not buffers & {id(b) for b in model.buffers()}
        assert len(after) <= len(before)  # aliases were not split into copies
        model.prepare_scoring()
        with torch.no_grad():
            assert torch.isfinite(model.score(np.arange(3))).all()

    @_torch_only
    def test_state_is_a_cpu_copy(self, model_name: str) -> None:
        model = ready_model(model_name, self.dataset())
        state = model.state()
        params = dict(model.named_parameters())
        for key, value in state.items():
            assert value.device.type == "cpu"
            if key in params:
                assert value.data_ptr() != params[key].data_ptr()

    def test_leaked_pair_in_input_fails(self, model_name: str) -> None:
        """A validation pair placed into the matrix given to the model must stop it."""
        board = self.dataset()
        cfg = contract_config(model_name)
        model = build_model(cfg, cfg.params, board)
        v = board.valid.tocoo()
        one = sp.csr_matrix(([1.0], ([v.row[0]], [v.col[0]])), shape=board.train.shape)
        leaked = sp.csr_matrix(board.train + one)
        try:
            model.setup(leaked, board.features, LeakageGuard(board))
        except LeakageError as error:
            assert re.search("validation/test", str(error)), error
        else:
            raise AssertionError(f"{model_name}.setup accepted a validation pair")

    def test_known_answer_task(self, model_name: str, tmp_path: Path) -> None:
        """Users must be recommended items of their own group (a non-personalised model: the
        most popular)."""
        board = self.dataset()
        settings = self.known_answer_settings.get(model_name, KNOWN_ANSWER_DEFAULT)
        results = run(contract_config(model_name, **settings), board, tmp_path, echo=False)
        model, _ = load_model(results["checkpoint"], board)
        users = np.arange(board.n_users)
        items, _ = model.recommend(users, k=5)
        if not self.models()[model_name].personalized:
            counts = np.asarray(board.train.sum(axis=0)).ravel()
            for u in users:
                unseen = np.setdiff1d(np.arange(board.n_items), board.train[u].indices)
                assert counts[items[u, 0]] == counts[unseen].max()
            return
        own = (items // BOARD_ITEMS == (users // BOARD_USERS)[:, None]).mean()
        assert own >= 0.9, f"{model_name}: only {own:.0%} of top-5 items are in the user's group"
        assert results["test"]["recall@5"] > 0.3

    # ---- the same contract on a GPU (skipped where torch sees none) ------------------------
    # They check what a CPU run cannot: that training, scoring and checkpoints work with the
    # model on the GPU and give the CPU's numbers.

    def _cpu_and_gpu(self, model_name: str) -> tuple[Any, Any]:
        _require_cuda()
        cpu = ready_model(model_name, self.dataset())
        gpu = ready_model(model_name, self.dataset()).to("cuda")
        gpu.load_state(cpu.state())
        return cpu, gpu

    @_gpu
    def test_gpu_scores_match_the_cpu(self, model_name: str) -> None:
        cpu, gpu = self._cpu_and_gpu(model_name)
        users = np.arange(self.dataset().n_users)
        for model in (cpu, gpu):
            model.eval()
            model.prepare_scoring()
        with torch.no_grad():
            on_cpu, on_gpu = cpu.score(users), gpu.score(users)
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-4)
        items, _ = gpu.recommend(users[:5], k=5)
        assert items.shape == (5, 5)

    @_gpu
    def test_gpu_training_step(self, model_name: str) -> None:
        cpu, gpu = self._cpu_and_gpu(model_name)
        batch = next(iter(cpu.batches(np.random.default_rng(0), 64)))
        gpu_batch = next(iter(gpu.batches(np.random.default_rng(0), 64)))
        losses = {}
        for model, b in ((cpu, batch), (gpu, batch_to(gpu_batch, gpu.device))):
            model.eval()  # no dropout: the two devices draw different masks
            loss = model.loss(b)
            loss.backward()
            losses[model.device.type] = loss.item()
        assert np.isfinite(losses["cuda"])
        if model_name not in self.random_in_eval:  # as pytest.approx(rel=1e-3, abs=1e-5)
            assert abs(losses["cuda"] - losses["cpu"]) <= max(1e-3 * abs(losses["cpu"]), 1e-5)
        for pname, p in gpu.named_parameters():
            if p.grad is not None:
                assert p.grad.device.type == "cuda", pname
                assert torch.isfinite(p.grad).all(), pname

    @_gpu
    def test_gpu_training_run_and_evaluation_anywhere(
        self, model_name: str, tmp_path: Path
    ) -> None:
        _require_cuda()
        board = self.dataset()
        cfg = contract_config(model_name, train={"epochs": 3, "device": "cuda"})
        results = run(cfg, board, tmp_path, echo=False)
        assert results["device"].startswith("cuda")
        model, _ = load_model(results["checkpoint"], board, device="cuda")
        assert evaluate(model, board, "valid", cfg.eval) == results["valid"]
        on_cpu, _ = load_model(results["checkpoint"], board, device="cpu")
        for key, value in evaluate(on_cpu, board, "test", cfg.eval).items():
            assert abs(value - results["test"][key]) <= 0.03, key


def check_contract(
    model: type[Recommender] | str | Sequence[type[Recommender] | str],
    checks: Collection[str] | None = None,
    **attributes: Any,
) -> list[str]:
    """Run the contract's checks on ``model`` without pytest (a script, unittest).

    Args:
        model: As ``ModelContract.model``.
        checks: Names of the checks to run (``"test_known_answer_task"``...); None: all.
        **attributes: The other ``ModelContract`` attributes.

    Returns:
        ``"check[name]"`` of every check that ran; the GPU checks run only where torch sees
        a CUDA GPU, and checks that need gradient training only for ``TorchRecommender``
        models.

    Raises:
        AssertionError: a check failed.
    """
    contract = type("Contract", (ModelContract,), {"model": model, **attributes})()
    ran = []
    for name, cls in contract.models().items():
        for check in [n for n in vars(ModelContract) if n.startswith("test_")]:  # in order
            method = getattr(contract, check)
            skip = getattr(method, "torch_only", False) and not issubclass(cls, TorchRecommender)
            gpu_missing = getattr(method, "gpu", False) and not torch.cuda.is_available()
            if skip or gpu_missing or (checks is not None and check not in checks):
                continue
            contract.setup_method(method)
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    if "tmp_path" in inspect.signature(method).parameters:
                        method(name, tmp_path=Path(tmp))
                    else:
                        method(name)
            finally:
                contract.teardown_method(method)
            ran.append(f"{check}[{name}]")
    return ran
