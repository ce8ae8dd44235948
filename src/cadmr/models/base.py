"""Model interface shared by every recommender.

A model is built from (params, n_users, n_items, feature dims), never from a dataset
object, and never reads or writes files. Its life cycle:

1. ``setup(train, features, guard)``: receives the training matrix and item features and
   builds whatever it derives from them (adjacency, Gram matrix, input rows), passing each
   interaction-derived matrix through ``guard.check`` (docs/protocol.md leakage guard).
2. Closed-form models: ``fit()``. Iterative models: the generic trainer draws
   ``batches(rng, batch_size)`` and minimises ``loss(batch)``.
3. ``score(users) -> (B, n_items)`` raw scores. Masking, top-K and metrics belong to the
   evaluation protocol; ``recommend`` is written once here.

Rankings go through ``ranked_topk``: with ``item_block = 0`` (the default) it scores the
whole catalogue at once; a model that sets ``item_block > 0`` (and overrides ``score_block``)
is ranked by streaming item blocks, never forming a dense (B, n_items) score matrix.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from cadmr.data.leakage import LeakageGuard
from cadmr.errors import CadmrValueError


def mask_rows(scores: torch.Tensor, users: np.ndarray, exclude: sp.csr_matrix) -> torch.Tensor:
    """Set ``scores[b, i] = -inf`` where ``exclude[users[b], i]`` is non-zero (in place)."""
    sub = exclude[users]  # (B, n_items) sparse
    rows = torch.from_numpy(np.repeat(np.arange(len(users)), np.diff(sub.indptr)))
    cols = torch.from_numpy(sub.indices.astype(np.int64))
    scores[rows.to(scores.device), cols.to(scores.device)] = -torch.inf
    return scores


def topk_items(
    scores: torch.Tensor, users: np.ndarray, k: int, exclude: sp.csr_matrix | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, item indices), both (B, k), after masking ``exclude``'s items
    in place in ``scores`` (which ``Recommender.score`` hands over to its caller)."""
    if exclude is not None:
        scores = mask_rows(scores, users, exclude)
    k = min(k, scores.shape[1])
    return torch.topk(scores, k, dim=1, sorted=True)


def _nan_error(model: Recommender) -> FloatingPointError:
    return FloatingPointError(f"{model.name}.score returned NaN scores")


@torch.no_grad()
def ranked_topk(
    model: Recommender,
    users: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    candidates: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values float32 (B, k'), item indices int64 (B, k')) of ``model`` for
    ``users`` (B,), k' = min(k, n_items), best first, after masking ``exclude``'s items of
    each user to -inf (masked items still fill the tail when fewer than k' are eligible).
    With ``candidates`` (item ids), every other item is masked too: only they are ranked.

    With ``model.item_block`` 0 or >= n_items this is ``topk_items(model.score(users), ...)``.
    Otherwise items are scored in blocks of ``item_block`` columns by ``score_block``, each
    block is masked and reduced to its own top-k, and merged into a running top-k, so peak
    memory is O(B x (item_block + k)) plus the users' rows of ``exclude``.

    Ties: equal scores are ranked in an order ``torch.topk`` does not specify, in both paths,
    so with tied scores the two may list different (equally valid) items; the values agree
    always. When merging, the streaming path keeps earlier blocks (lower item indices) ahead
    of a later block's equal scores (stable sort), and it is deterministic for fixed inputs.

    Raises:
        ValueError: ``score`` / ``score_block`` returned the wrong shape, or ``k`` < 0.
        FloatingPointError: an unmasked score is NaN.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n_items, n_users = model.n_items, len(users)
    block = model.item_block
    outside = None  # (n_items,) bool: not a candidate
    if candidates is not None:
        outside = torch.ones(n_items, dtype=torch.bool)
        outside[torch.from_numpy(np.array(candidates, dtype=np.int64))] = False
    if block < 0:
        raise ValueError(f"{model.name}.item_block must be >= 0, got {block}")
    if block == 0 or block >= n_items:
        scores = model.score(users)  # (B, n_items)
        if tuple(scores.shape) != (n_users, n_items):
            raise ValueError(
                f"{model.name}.score returned {tuple(scores.shape)}, expected {(n_users, n_items)}"
            )
        scores = scores.float()
        if outside is not None:
            scores[:, outside.to(scores.device)] = -torch.inf
        values, items = topk_items(scores, users, k, exclude)
        if torch.isnan(values).any():  # topk ranks NaN first, so this sees any NaN
            raise _nan_error(model)
        return values, items

    return _streamed_topk(model, users, min(k, n_items), exclude, outside)


def _streamed_topk(
    model: Recommender,
    users: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    outside: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ranked_topk`` over blocks of ``model.item_block`` items and a running top-k."""
    n_items, n_users, block = model.n_items, len(users), model.item_block
    starts = np.arange(0, n_items, block, dtype=np.int64)
    if exclude is not None:
        # the users' excluded (row, column) pairs, sorted by column: a block's pairs are a slice
        sub = exclude[users]  # (B, n_items) sparse
        rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(sub.indptr))
        cols = sub.indices.astype(np.int64)
        order = np.argsort(cols, kind="stable")
        rows, cols = rows[order], cols[order]
        bounds = np.searchsorted(cols, np.append(starts, n_items))  # (n_blocks + 1,)
    values: torch.Tensor | None = None  # running top-k, (B, <= k)
    items: torch.Tensor | None = None
    for b, start in enumerate(starts.tolist()):
        stop = min(start + block, n_items)
        scores = model.score_block(users, start, stop)  # (B, stop - start)
        if tuple(scores.shape) != (n_users, stop - start):
            raise ValueError(
                f"{model.name}.score_block returned {tuple(scores.shape)}, expected "
                f"{(n_users, stop - start)}"
            )
        scores = scores.float()
        if outside is not None:
            scores[:, outside[start:stop].to(scores.device)] = -torch.inf
        if exclude is not None and bounds[b + 1] > bounds[b]:
            lo, hi = bounds[b], bounds[b + 1]
            r = torch.from_numpy(rows[lo:hi]).to(scores.device)
            c = torch.from_numpy(cols[lo:hi] - start).to(scores.device)
            scores[r, c] = -torch.inf
        if torch.isnan(scores).any():
            raise _nan_error(model)
        block_values, block_items = torch.topk(scores, min(k, stop - start), dim=1, sorted=False)
        block_items += start  # global item indices
        if values is None:
            values, items = block_values, block_items
        else:
            values = torch.cat([values, block_values], dim=1)  # (B, <= 2k)
            items = torch.cat([items, block_items], dim=1)
        order_t = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
        values, items = values.gather(1, order_t), items.gather(1, order_t)
    assert values is not None and items is not None  # n_items > block >= 1: one block at least
    return values, items


class Recommender(abc.ABC):
    """Common interface. Subclasses set ``name`` and ``params_cls``.

    Attributes:
        name: Registry name.
        params_cls: Frozen dataclass of the model's hyper-parameters.
        personalized: False for non-personalised models (popularity).
        default_search: The published validation grid, searched by ``cadmr tune`` (and by
            ``run`` when the configuration sets no ``search``).
        budget_search: A smaller grid for machines where the published one does not fit:
            2-3 values of the model's main regulariser from the published grid, the rest at
            defaults (``cadmr tune --grid budget``; kernel_ae's: its published grid at the
            default width); None: the published grid.
        needs_features: True when the model cannot run without item features.
        scores_new_items: True when the model can rank items that have no training
            interaction (from their features); only such models train on a cold-item
            split (data/cold.py). ``can_score_new_items(params)`` asks it for given
            parameters (CADMR decides by them).
        item_block: Items scored per ``score_block`` call when ranking (``ranked_topk``);
            0 scores the whole catalogue with one ``score`` call.
        train_defaults: The model's own defaults for the ``train`` section, over
            ``TrainConfig``'s (e.g. item autoencoders train on small item batches).
        cold_defaults: Parameters the model takes on a cold-item split (a dataset named
            ``NAME@cold=...``), over its params dataclass's, chosen on such splits'
            validation (CADMR's item dropout).
    """

    name: ClassVar[str]
    params_cls: ClassVar[type]
    personalized: ClassVar[bool] = True
    default_search: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    summary: ClassVar[str] = ""  # one line for `cadmr models` (default: the module's first)
    budget_search: ClassVar[Mapping[str, tuple[Any, ...]] | None] = None
    needs_features: ClassVar[bool] = False
    scores_new_items: ClassVar[bool] = False
    item_block: ClassVar[int] = 0
    train_defaults: ClassVar[Mapping[str, Any]] = {}
    cold_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self, params: Any, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        if self.needs_features and not feature_dims:
            raise CadmrValueError(
                f"{self.name} needs at least one item modality; the data has none"
            )
        self.params = params
        self.n_users = n_users
        self.n_items = n_items
        self.feature_dims = dict(feature_dims)
        self.modalities = sorted(feature_dims)  # the order every model iterates them in
        self.train_matrix: sp.csr_matrix | None = None

    @classmethod
    def can_score_new_items(cls, params: Any) -> bool:
        """Whether the model with ``params`` ranks items without interactions."""
        return cls.scores_new_items

    @classmethod
    def saved_params(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint's saved parameters as this version reads them: a model whose
        defaults changed fills in, for checkpoints saved before, the values they were
        trained with (default: unchanged)."""
        return dict(data)

    def setup(
        self,
        train: sp.csr_matrix,
        features: Mapping[str, np.ndarray],
        guard: LeakageGuard,
    ) -> None:
        """Receive the training data. Subclasses extend this and check what they build."""
        if train.shape != (self.n_users, self.n_items):
            raise ValueError(
                f"{self.name}: training matrix has shape {train.shape}, "
                f"model was built for {(self.n_users, self.n_items)}"
            )
        self.train_matrix = sp.csr_matrix(guard.check(train, f"{self.name} training matrix"))

    @abc.abstractmethod
    def score(self, users: np.ndarray) -> torch.Tensor:
        """Raw scores of every item for ``users`` (B,) -> float32 tensor (B, n_items).

        The tensor belongs to the caller, who may modify it in place (masking): return a
        new tensor, never a cached one or a view of one.
        """

    def score_block(self, users: np.ndarray, start: int, stop: int) -> torch.Tensor:
        """Raw scores of items ``start..stop-1`` for ``users`` (B,) -> tensor (B, stop-start).

        Same ownership rule as ``score``. This default slices ``score``; a model that sets
        ``item_block`` overrides it to compute only the block.
        """
        return self.score(users)[:, start:stop].clone()

    def prepare_scoring(self) -> None:  # noqa: B027 - optional hook
        """Hook run once before a round of ``score`` calls (e.g. propagate a graph)."""

    def item_vectors(self) -> torch.Tensor | None:
        """(n_items, d) item representations whose cosine says which items the model treats
        alike (``cadmr serve``'s ``/similar``), after ``prepare_scoring``; None where the
        model has none."""
        return None

    def fold_in(self, items: np.ndarray) -> torch.Tensor | None:
        """Scores (n_items,) for a user who is not in the training data, from the items
        they interacted with; None where the model cannot score an unseen user without
        retraining (per-user parameters)."""
        return None

    @torch.no_grad()
    def recommend(
        self,
        users: np.ndarray,
        k: int = 10,
        exclude_seen: bool = True,
        exclude: sp.csr_matrix | None = None,
        prepare: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for ``users``: (items (B, k) int64, scores (B, k) float32).

        Training items are excluded unless ``exclude_seen`` is False; ``exclude`` (users x
        items) leaves out more (e.g. the validation items). A user with fewer than ``k``
        eligible items gets the row padded with item -1 and score -inf. Ranked by
        ``ranked_topk`` (streaming item blocks when ``item_block`` is set); NaN scores raise
        FloatingPointError. ``prepare=False`` skips ``prepare_scoring``: only for a caller
        that ran it since the parameters last changed (a server of a fixed model).
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        bad = users[(users < 0) | (users >= self.n_users)]
        if len(bad):
            raise IndexError(f"user {int(bad[0])} is not in 0..{self.n_users - 1}")
        if prepare:
            self.prepare_scoring()
        seen = self.train_matrix if exclude_seen else None
        if exclude is not None:
            exclude = sp.csr_matrix(exclude if seen is None else seen + exclude)
        else:
            exclude = seen
        values, items = ranked_topk(self, users, k, exclude)
        values, items = values.cpu().numpy(), items.cpu().numpy().copy()
        items[np.isneginf(values)] = -1
        return items, values

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything learned, as tensors/arrays, for checkpoints."""

    @abc.abstractmethod
    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state`` returned."""


class ClosedFormRecommender(Recommender):
    """A model fitted in one step from the training matrix (popularity, EASE)."""

    @abc.abstractmethod
    def fit(self) -> ClosedFormRecommender:
        """Fit on the matrix given to ``setup``; returns self."""


# attributes every nn.Module has (its parameters, buffers, children, hooks): _apply leaves
# them to nn.Module
_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def _map_tensors(
    value: Any, fn: Callable[[torch.Tensor], torch.Tensor], memo: dict[int, torch.Tensor]
) -> Any:
    """``value`` with ``fn`` applied to every tensor in it: a tensor, or a dict, list, tuple
    or dataclass instance holding tensors (nested). A tensor met twice maps to one result
    (``memo``, by identity), so aliases stay aliases; a parameter is left alone (nn.Module
    moves it in place); a value holding no tensor comes back as the same object."""
    if isinstance(value, nn.Parameter):
        return value
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = fn(value)
        return memo[id(value)]
    if type(value) is dict:
        mapped = {k: _map_tensors(v, fn, memo) for k, v in value.items()}
        return value if all(mapped[k] is v for k, v in value.items()) else mapped
    if type(value) in (list, tuple):
        seq = [_map_tensors(v, fn, memo) for v in value]
        return value if all(a is b for a, b in zip(seq, value, strict=True)) else type(value)(seq)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        mapped = {k: _map_tensors(v, fn, memo) for k, v in fields.items()}
        if all(mapped[k] is v for k, v in fields.items()):
            return value
        return dataclasses.replace(value, **mapped)
    return value


def batch_to(batch: Any, device: torch.device) -> Any:
    """A training batch (a dataclass of (B, ...) tensors and arrays) with its tensors on
    ``device``; NumPy arrays stay where they are (models slice scipy matrices with them)."""
    if device.type == "cpu":
        return batch
    return _map_tensors(batch, lambda t: t.to(device), {})


class TorchRecommender(nn.Module, Recommender):
    """A model trained by gradient steps in the generic trainer.

    ``model.to(device)`` moves everything the model holds, not only its parameters and
    buffers: the constants that ``setup`` derives from the data (graphs, feature matrices)
    are plain tensor attributes, possibly in dicts, lists, tuples or dataclasses, of the
    model or of its submodules, and ``_apply`` maps them too. Code that makes a tensor from
    data at a step (an index array, a batch of rows) puts it on ``self.device``.
    """

    def __init__(
        self, params: Any, n_users: int, n_items: int, feature_dims: Mapping[str, int]
    ) -> None:
        nn.Module.__init__(self)
        Recommender.__init__(self, params, n_users, n_items, feature_dims)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (the CPU for a model without any)."""
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if first is None else first.device

    def tensor(self, array: Any) -> torch.Tensor:
        """``array`` (NumPy, a sequence, or a tensor) as a tensor on ``self.device``; a NumPy
        array shares its memory when the model is on the CPU."""
        t = torch.from_numpy(array) if isinstance(array, np.ndarray) else torch.as_tensor(array)
        return t.to(self.device)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True):  # type: ignore[override]
        super()._apply(fn, recurse)
        memo: dict[int, torch.Tensor] = {}
        for module in self.modules() if recurse else (self,):
            for name, value in list(vars(module).items()):
                if name in _MODULE_INTERNALS:
                    continue
                mapped = _map_tensors(value, fn, memo)
                if mapped is not value:
                    object.__setattr__(module, name, mapped)
        return self

    def phases(self) -> tuple[str, ...]:
        """Names of the training phases, run in this order by the trainer, each with a fresh
        optimizer and its own early stopping (e.g. CADMR's pretrain, then finetune)."""
        return ("train",)

    def start_phase(self, phase: str) -> None:
        """Switch to ``phase`` (one of ``phases()``): called before its first epoch, on resume
        and before ``make_optimizer``, so ``batches``, ``loss`` and the optimizer follow it."""

    @abc.abstractmethod
    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterable[Any]:
        """One epoch of training batches, drawn with ``rng``; one with a length (as
        ``sampling.ShuffledBatches``) gives the trainer's progress bar a total."""

    @abc.abstractmethod
    def loss(self, batch: Any) -> torch.Tensor:
        """Scalar training loss of one batch."""

    def state(self) -> dict[str, Any]:
        """The state dict, copied to the CPU (checkpoints load on any machine)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.load_state_dict(dict(state))


class CachedEmbeddingScores:
    """Mixin for models that score ``<user, item>`` of final embeddings computed from all
    parameters at once (LightGCN and the graph models): the subclass implements
    ``final_embeddings``; ``prepare_scoring`` computes them once per round of scoring and
    ``score`` reads them. Switching train/eval mode (the trainer calls ``train()`` before
    every epoch, evaluation ``eval()``) and ``load_state`` drop the cache, so scores never
    come from parameters that have since changed. Put it before the model's base class:
    ``class LightGCN(CachedEmbeddingScores, BPRMF)``.
    """

    _final: tuple[torch.Tensor, torch.Tensor] | None = None

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users (U, d), items (I, d)) whose dot products are the scores."""
        raise NotImplementedError

    @torch.no_grad()
    def prepare_scoring(self) -> None:
        self._final = self.final_embeddings()

    def score(self, users: np.ndarray) -> torch.Tensor:
        if self._final is None:
            self.prepare_scoring()
        u, i = self._final
        return u[torch.from_numpy(np.asarray(users, dtype=np.int64)).to(u.device)] @ i.T

    def item_vectors(self) -> torch.Tensor | None:
        if self._final is None:
            self.prepare_scoring()
        return self._final[1]

    def train(self, mode: bool = True):
        self._final = None
        return super().train(mode)  # type: ignore[misc]

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        self._final = None
