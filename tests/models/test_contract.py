"""The shared model contract (docs/conventions.md), run against every registered model.

A model added to the registry is tested here automatically: score shape and finiteness,
determinism per seed, a training step lowers the loss, checkpoint round trip, the leakage
guard on its input, and a known-answer task it must solve.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cadmr.data import Dataset, LeakageError, LeakageGuard
from cadmr.eval.protocol import evaluate
from cadmr.models import MODELS, ClosedFormRecommender, TorchRecommender
from cadmr.models.base import batch_to
from cadmr.train import resolve_run_config, run
from cadmr.train.trainer import build_model, load_model

ALL = sorted(MODELS)
TORCH = sorted(n for n, c in MODELS.items() if issubclass(c, TorchRecommender))

# small batches and a large learning rate: enough steps on the tiny known-answer data
SMALL_STEPS = {"epochs": 60, "batch_size": 8, "learning_rate": 0.01, "patience": 20}
SMALL_MM = {"latent_dim": 16, "modality_dim": 8, "extractor_hidden": 16}  # CADMR's blocks

# Per-model training settings for the known-answer task (defaults below otherwise).
KNOWN_ANSWER_SETTINGS: dict[str, dict] = {
    # 30 items are 30 training examples for the item autoencoder: a small network, and the
    # positive weight of dense data (each user has half a group's items; the grid's 10)
    "kernel_ae": {"params": {"hidden": [32, 32], "pos_weight": 10.0}, "train": SMALL_STEPS},
    # the same autoencoder, then fine-tuning with a small attention block (60 epochs a phase)
    "cadmr": {"params": {"hidden": [32, 32], "pos_weight": 10.0, **SMALL_MM}, "train": SMALL_STEPS},
    # the paper's settings: lambda_2 at 1/100 of GLocal-K's, since its loss divides the
    # penalty by I x U = 1,200
    "cadmr_paper": {
        "params": {"hidden": [32, 32], "lambda_2": 0.2, **SMALL_MM},
        "train": SMALL_STEPS,
    },
    # 40 users: batches of 8 users give the user autoencoder 5 steps an epoch
    "addvae": {
        "train": SMALL_STEPS,
    },
    # no negatives: BM3 separates the groups within ~10 epochs, but recall@20 saturates
    # (20 of 23 unseen items) before that and would select an early epoch; nDCG@20 keeps
    # rewarding the valid item moving up
    "bm3": {
        "eval": {"valid_metric": "ndcg@20"},
        "train": {"epochs": 100, "batch_size": 64, "learning_rate": 0.005, "patience": 30},
    },
}
DEFAULT_SETTINGS = {
    "train": {"epochs": 100, "batch_size": 64, "learning_rate": 0.05, "patience": 30}
}


def checkerboard(n_per_group: int = 20, items_per_group: int = 15, seed: int = 0) -> Dataset:
    """Two user groups, two item groups; users interact only within their own group and
    item features are clustered by group. Each user holds out one valid and one test item."""
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


@pytest.fixture(scope="module")
def board() -> Dataset:
    return checkerboard()


def _config(name: str, **layers):
    extra = {"train": {"progress": False, **layers.get("train", {})}}
    extra.update({k: v for k, v in layers.items() if k != "train"})
    cfg = resolve_run_config(name, "checkerboard", extra=extra)
    return dataclasses.replace(cfg, search={})


def _ready(name: str, data: Dataset, seed: int = 0):
    cfg = _config(name)
    model = build_model(cfg, cfg.params, data, seed=seed)
    model.setup(data.train, data.features, LeakageGuard(data))
    if isinstance(model, ClosedFormRecommender):
        model.fit()
    return model


@pytest.mark.parametrize("name", ALL)
def test_score_shape_and_finite(name, board):
    model = _ready(name, board)
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


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_result(name, board, tmp_path):
    cfg = _config(name, train={"epochs": 2, "batch_size": 64})
    a = run(cfg, board, tmp_path / "a", echo=False)
    b = run(cfg, board, tmp_path / "b", echo=False)
    assert a["valid"] == b["valid"]
    assert a["test"] == b["test"]

    def losses(d):  # bit-reproducible: the training losses themselves, not only the metrics
        history = tmp_path / d / "history.jsonl"  # closed-form models have none
        lines = history.read_text().splitlines() if history.exists() else []
        return [(h.get("phase"), h["epoch"], h.get("loss")) for h in map(json.loads, lines)]

    assert losses("a") == losses("b")


@pytest.mark.parametrize("name", TORCH)
def test_different_seed_different_init(name, board):
    a = _ready(name, board, seed=0).state()
    b = _ready(name, board, seed=1).state()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("name", TORCH)
def test_training_step_lowers_loss(name, board):
    model = _ready(name, board)
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


@pytest.mark.parametrize("name", TORCH)
def test_scores_follow_the_parameters(name, board):
    """Scores computed after training steps come from the new parameters, even when the
    model cached embeddings for an earlier round of scoring (CachedEmbeddingScores)."""
    model = _ready(name, board)
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


@pytest.mark.parametrize("name", TORCH)
def test_an_epoch_states_its_number_of_batches(name, board):
    """Every phase's epoch has a length (the trainer's progress bar shows a total and the
    time left) equal to the batches it yields."""
    model = _ready(name, board)
    for phase in model.phases():
        model.start_phase(phase)
        batches = model.batches(np.random.default_rng(0), 7)
        assert len(batches) == sum(1 for _ in batches) > 1


@pytest.mark.parametrize("name", TORCH)
def test_every_parameter_gets_a_gradient(name, board):
    """Within the first two optimizer steps of its phases, every parameter gets a non-zero
    gradient (two steps: a zero-initialised layer passes no gradient back on the first)."""
    model = _ready(name, board)
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


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_round_trip(name, board, tmp_path):
    """The saved best model reproduces exactly the validation metrics it was selected by."""
    cfg = _config(name, train={"epochs": 3})
    results = run(cfg, board, tmp_path, echo=False)
    model, ck = load_model(results["checkpoint"], board)
    assert ck["config"]["model"] == name
    assert evaluate(model, board, "valid", cfg.eval) == results["valid"]
    assert evaluate(model, board, "test", cfg.eval) == results["test"]


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


@pytest.mark.parametrize("name", TORCH)
def test_moving_the_model_moves_every_tensor_it_holds(name, board):
    """``model.to(device)`` must reach the constants ``setup`` built and the caches that
    training and scoring fill, or a GPU run mixes devices. Checked with the conversion that
    ``.to`` uses, here a copy on the CPU: afterwards no tensor the model held before is still
    held; the buffers come back too; tensors that were one object stay one object."""
    model = _ready(name, board)
    model.train()
    model.loss(next(iter(model.batches(np.random.default_rng(0), 64))))  # fills training caches
    model.eval()
    model.prepare_scoring()  # fills scoring caches
    before = _held_tensors(model)
    # BPR-MF is parameters alone; any other model without a constant means the walk is blind
    assert bool(before) == (name != "bpr"), sorted(vars(model))
    buffers = {id(b) for b in model.buffers()}
    model._apply(lambda t: t.clone())
    after = _held_tensors(model)
    assert not set(before) & set(after), [k for k, v in vars(model).items() if id(v) in after]
    assert not buffers & {id(b) for b in model.buffers()}
    assert len(after) <= len(before)  # aliases were not split into copies
    model.prepare_scoring()
    with torch.no_grad():
        assert torch.isfinite(model.score(np.arange(3))).all()


@pytest.mark.parametrize("name", TORCH)
def test_state_is_a_cpu_copy(name, board):
    model = _ready(name, board)
    state = model.state()
    params = dict(model.named_parameters())
    for key, value in state.items():
        assert value.device.type == "cpu"
        if key in params:
            assert value.data_ptr() != params[key].data_ptr()


@pytest.mark.parametrize("name", ALL)
def test_leaked_pair_in_input_fails(name, board):
    """A validation pair placed into the matrix given to the model must stop it."""
    model = build_model(_config(name), _config(name).params, board)
    v = board.valid.tocoo()
    one = sp.csr_matrix(([1.0], ([v.row[0]], [v.col[0]])), shape=board.train.shape)
    leaked = sp.csr_matrix(board.train + one)
    with pytest.raises(LeakageError, match="validation/test"):
        model.setup(leaked, board.features, LeakageGuard(board))


@pytest.mark.parametrize("name", ALL)
def test_known_answer_task(name, board, tmp_path):
    """Users must be recommended items of their own group (popularity: the most popular)."""
    settings = KNOWN_ANSWER_SETTINGS.get(name, DEFAULT_SETTINGS)
    cfg = _config(name, **settings)
    if cfg.search:
        cfg = dataclasses.replace(cfg, search={})
    results = run(cfg, board, tmp_path, echo=False)
    model, _ = load_model(results["checkpoint"], board)
    users = np.arange(board.n_users)
    items, _ = model.recommend(users, k=5)
    if not MODELS[name].personalized:
        counts = np.asarray(board.train.sum(axis=0)).ravel()
        for u in users:
            unseen = np.setdiff1d(np.arange(board.n_items), board.train[u].indices)
            assert counts[items[u, 0]] == counts[unseen].max()
        return
    user_group = users // 20
    item_group = items // 15
    own = (item_group == user_group[:, None]).mean()
    assert own >= 0.9, f"{name}: only {own:.0%} of top-5 items are in the user's own group"
    assert results["test"]["recall@5"] > 0.3


# ---- the same contract on a GPU ------------------------------------------------------------
# These run only where torch sees a CUDA GPU (CI has none; a session lent a GPU machine runs
# ``pytest tests/models/test_contract.py -k gpu``). They check what a CPU run cannot: that
# training, scoring and checkpoints work with the model on the GPU and give the CPU's numbers.

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# losses that draw from torch's generator even in eval mode (BM3's target dropout, SLMRec's
# views): the devices' generators differ, so those losses are only checked to be finite
RANDOM_IN_EVAL = {"bm3", "slmrec"}


def _pair(name, board):
    cpu = _ready(name, board)
    gpu = _ready(name, board).to("cuda")
    gpu.load_state(cpu.state())
    return cpu, gpu


@GPU
@pytest.mark.parametrize("name", TORCH)
def test_gpu_scores_match_the_cpu(name, board):
    cpu, gpu = _pair(name, board)
    users = np.arange(board.n_users)
    for model in (cpu, gpu):
        model.eval()
        model.prepare_scoring()
    with torch.no_grad():
        on_cpu, on_gpu = cpu.score(users), gpu.score(users)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-4)
    items, _ = gpu.recommend(users[:5], k=5)
    assert items.shape == (5, 5)


@GPU
@pytest.mark.parametrize("name", TORCH)
def test_gpu_training_step(name, board):
    cpu, gpu = _pair(name, board)
    batch = next(iter(cpu.batches(np.random.default_rng(0), 64)))
    gpu_batch = next(iter(gpu.batches(np.random.default_rng(0), 64)))
    losses = {}
    for model, b in ((cpu, batch), (gpu, batch_to(gpu_batch, gpu.device))):
        model.eval()  # no dropout: the two devices draw different masks
        loss = model.loss(b)
        loss.backward()
        losses[model.device.type] = loss.item()
    assert np.isfinite(losses["cuda"])
    if name not in RANDOM_IN_EVAL:
        assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-3, abs=1e-5)
    for pname, p in gpu.named_parameters():
        if p.grad is not None:
            assert p.grad.device.type == "cuda", pname
            assert torch.isfinite(p.grad).all(), pname


@GPU
@pytest.mark.parametrize("name", TORCH)
def test_gpu_training_run_and_evaluation_anywhere(name, board, tmp_path):
    cfg = _config(name, train={"epochs": 3, "device": "cuda"})
    results = run(cfg, board, tmp_path, echo=False)
    assert results["device"].startswith("cuda")
    model, _ = load_model(results["checkpoint"], board, device="cuda")
    assert evaluate(model, board, "valid", cfg.eval) == results["valid"]
    on_cpu, _ = load_model(results["checkpoint"], board, device="cpu")
    for key, value in evaluate(on_cpu, board, "test", cfg.eval).items():
        assert value == pytest.approx(results["test"][key], abs=0.03), key
