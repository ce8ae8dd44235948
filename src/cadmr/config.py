"""Typed, frozen run configuration with strict YAML loading.

One frozen dataclass per concern (training loop, evaluation) and one per model (defined next
to the model). YAML maps onto the fields; unknown keys and wrong types are errors that name
the offending key and its source. Merge order (later wins):

    dataclass defaults -> the model's train_defaults -> experiment YAML (--config) -> --set

A resolved run configuration is written beside every run's results and checkpoints.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cadmr.errors import CadmrValueError

MAX_SEED = 2**63 - 1
MAX_BATCH = 2**31 - 1  # torch indexes tensors with 32-bit sizes in places


class ConfigError(CadmrValueError):
    """A configuration key is unknown, has the wrong type or an invalid value."""


def first_line(error: BaseException) -> str:
    """An error's first line, for one-line messages (YAML and torch errors go on with a
    multi-line picture or hint); its type name when it has no text."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# the values train.device takes (checked here and by cadmr.train.device, which also serves
# the checkpoint commands' --device)
DEVICE_PATTERN = r"cpu|auto|cuda(:\d+)?"


@dataclass(frozen=True)
class TrainConfig:
    """The generic training loop (iterative models; closed-form models ignore most fields).

    Attributes:
        epochs: Maximum number of epochs.
        batch_size: Training examples per optimisation step.
        learning_rate: Adam learning rate.
        weight_decay: Adam weight decay (most models regularise in their loss instead).
        patience: Evaluations without improvement of the validation metric before stopping.
        min_epochs: Epochs each phase trains before early stopping may end it (the
            patience count runs all along); 0 = none. For a model whose validation curve
            dips after an early peak and climbs again (LATTICE on Scientific,
            docs/experiments.md), where patience alone can stop inside the dip.
        eval_every: Evaluate on the validation split every this many epochs.
        num_threads: torch intra-op threads; 0 means one per available core.
        device: Where gradient-trained models train and score: "cpu", "cuda", "cuda:N", or
            "auto" (the GPU when torch sees one). Closed-form models (pop, EASE) always fit
            on the CPU. Under torchrun, "cuda" and "auto" take each rank's local GPU.
        progress: Show progress bars.
        mirror_gradient: Train with Mirror Gradient (Zhong et al., WWW'24), any gradient-trained
            model: every ``mirror_interval``-th batch takes a step on ``mirror_alpha1 x loss``,
            then a step on ``-mirror_alpha2 x loss`` of the same batch at the new parameters.
        mirror_alpha1: Scale of the descent step of a mirror pair.
        mirror_alpha2: Scale of the ascent (mirror) step of a mirror pair: 0.2, the middle of
            MMRec's grid {0.1, 0.2, 0.3} (alpha_1 1), which ``experiment compare`` searches.
        mirror_interval: Batches between mirror pairs (the paper's beta; 3 in its ablation).
    """

    epochs: int = 1000
    batch_size: int = 2048
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 20
    min_epochs: int = 0
    eval_every: int = 1
    num_threads: int = 0
    device: str = "cpu"
    progress: bool = True
    mirror_gradient: bool = False
    mirror_alpha1: float = 1.0
    mirror_alpha2: float = 0.2
    mirror_interval: int = 3

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "patience", "eval_every", "mirror_interval")
        if not (self.mirror_alpha1 >= 0 and self.mirror_alpha2 >= 0):
            raise ConfigError("train.mirror_alpha1 and train.mirror_alpha2 must be >= 0")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if self.min_epochs < 0:
            raise ConfigError(f"train.min_epochs must be >= 0, got {self.min_epochs}")
        if self.num_threads < 0:
            raise ConfigError(f"train.num_threads must be >= 0, got {self.num_threads}")
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ConfigError(
                f"train.device must be cpu, cuda, cuda:N or auto, got {self.device!r}"
            )


@dataclass(frozen=True)
class EvalConfig:
    """The ranking protocol (docs/protocol.md).

    Attributes:
        ks: Cut-offs for every metric.
        batch_size: Users scored per batch; evaluation memory grows with it.
        valid_metric: Metric for early stopping and model selection, on the validation split.
        mask_valid_at_test: Also mask validation items when ranking for the test split.
            Off by default (MMRec semantics, used in every published table).
    """

    ks: tuple[int, ...] = (5, 10, 20, 50)
    batch_size: int = 1024
    valid_metric: str = "recall@20"
    mask_valid_at_test: bool = False

    def __post_init__(self) -> None:
        if not self.ks or any(k <= 0 for k in self.ks):
            raise ConfigError(f"eval.ks must be positive integers, got {self.ks}")
        object.__setattr__(self, "ks", tuple(sorted(set(self.ks))))
        _positive(self, "batch_size")
        name, _, k = self.valid_metric.partition("@")
        if name in METRIC_NAMES and k.isdigit() and int(k) not in self.ks:
            raise ConfigError(
                f"eval.ks {list(self.ks)} leaves out {k}, the cut-off of eval.valid_metric "
                f"{self.valid_metric!r}: add it to eval.ks or choose another eval.valid_metric"
            )
        if name not in METRIC_NAMES or not k.isdigit():
            raise ConfigError(
                f"eval.valid_metric {self.valid_metric!r} must be one of "
                f"{sorted(METRIC_NAMES)} at a cut-off in eval.ks {self.ks}, e.g. 'recall@20'"
            )


METRIC_NAMES = frozenset({"recall", "ndcg", "precision", "map", "hit", "mrr"})


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run. Written as ``config.yaml`` beside its results.

    Attributes:
        model: Registered model name.
        dataset: Dataset name or path, as given.
        seed: Seed of every random generator in the run.
        train: Training loop settings.
        eval: Evaluation settings.
        params: The model's own frozen hyper-parameter dataclass.
        search: Hyper-parameter grid (param name -> candidate values) searched on the
            validation split; empty means train ``params`` as given.
    """

    model: str
    dataset: str
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    params: Any = None
    search: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "seed": self.seed,
            "train": to_dict(self.train),
            "eval": to_dict(self.eval),
            "params": to_dict(self.params) if self.params is not None else {},
            "search": {k: list(v) for k, v in self.search.items()},
        }

    def trials(self) -> Iterator[Any]:
        """Every params dataclass of the grid (just ``params`` when there is no search)."""
        if not self.search:
            yield self.params
            return
        keys = list(self.search)
        for values in itertools.product(*(self.search[k] for k in keys)):
            yield dataclasses.replace(self.params, **dict(zip(keys, values, strict=True)))


def _positive(obj: Any, *names: str) -> None:
    section = "train" if isinstance(obj, TrainConfig) else "eval"
    for n in names:
        v = getattr(obj, n)
        if v <= 0:
            raise ConfigError(f"{section}.{n} must be > 0, got {v}")
    if getattr(obj, "batch_size", 0) > MAX_BATCH:
        raise ConfigError(
            f"{section}.batch_size must be at most {MAX_BATCH} (a batch larger than the data "
            f"is the whole data), got {obj.batch_size}"
        )


# --------------------------------------------------------------------------------------
# Generic strict mapping of plain data (YAML) onto frozen dataclasses.


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass instance as plain YAML-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return to_dict(v)
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def from_dict(cls: type, data: Mapping[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Args:
        cls: A (frozen) dataclass type.
        data: Plain data, e.g. parsed YAML. Missing keys take the dataclass defaults.
        where: Prefix for error messages, e.g. "params".

    Raises:
        ConfigError: naming the key, the expected type and the value received.
    """
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(
            f"{where or cls.__name__} must be a mapping of keys to values, got {data!r}"
        )
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(_key(where, k) for k in unknown)}; "
            f"valid keys{' under ' + where if where else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {k: coerce(v, hints[k], _key(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def _key(where: str, k: str) -> str:
    return f"{where}.{k}" if where else k


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (int, float, bool, str, tuples, Optional,
    Literal, nested dataclasses) and return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        item_tp = args[0] if args else Any
        return tuple(coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {first_line(e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def parse_sets(assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.epochs=5", "params.embedding_size=32"]`` -> nested dict; values are YAML."""
    out: dict[str, Any] = {}
    for a in assignments:
        key, sep, raw = a.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {a!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {a!r}: value is not valid YAML: {first_line(e)}") from e
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {a!r} conflicts with an earlier --set of {p}")
        node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge of plain mappings; ``over`` wins."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def build_run_config(
    model: str,
    dataset: str,
    params_cls: type,
    layers: list[Mapping[str, Any]],
    default_search: Mapping[str, tuple[Any, ...]] | None = None,
) -> RunConfig:
    """Resolve a run configuration from merged layers of plain data.

    Args:
        model: Registered model name.
        dataset: Dataset name or path.
        params_cls: The model's hyper-parameter dataclass.
        layers: Mappings in merge order (the model's train_defaults, --config, --set).
        default_search: The model's default validation grid, used when no layer sets one.
    """
    data: dict[str, Any] = {}
    for layer in layers:
        data = merge(data, layer)
    allowed = {"seed", "train", "eval", "params", "search", "model", "dataset"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {unknown}; valid keys: {', '.join(sorted(allowed))}"
        )
    for k in ("model", "dataset"):
        if k in data and data[k] != locals()[k]:
            raise ConfigError(f"config says {k}: {data[k]!r} but the run is for {locals()[k]!r}")
    params = from_dict(params_cls, data.get("params"), "params")
    search_raw = data.get("search", dict(default_search or {}))
    if not isinstance(search_raw, Mapping):
        raise ConfigError(f"search must be a mapping of param -> list, got {search_raw!r}")
    hints = typing.get_type_hints(params_cls)
    search: dict[str, tuple[Any, ...]] = {}
    for k, values in search_raw.items():
        if k not in hints:
            raise ConfigError(
                f"search.{k} is not a parameter of {model}; valid: {', '.join(sorted(hints))}"
            )
        if isinstance(values, str) or not isinstance(values, list | tuple) or not values:
            raise ConfigError(f"search.{k} must be a non-empty list, got {values!r}")
        search[k] = tuple(coerce(v, hints[k], f"search.{k}[{i}]") for i, v in enumerate(values))
        for v in search[k]:  # each candidate must also pass the dataclass's own checks
            try:
                dataclasses.replace(params, **{k: v})
            except (TypeError, ValueError) as e:
                raise ConfigError(f"search.{k}: {e}") from e
    seed = coerce(data.get("seed", 0), int, "seed")
    if not 0 <= seed <= MAX_SEED:  # numpy and torch take seeds in this range
        raise ConfigError(f"seed must be an integer in 0..{MAX_SEED}, got {seed}")
    return RunConfig(
        model=model,
        dataset=dataset,
        seed=seed,
        train=from_dict(TrainConfig, data.get("train"), "train"),
        eval=from_dict(EvalConfig, data.get("eval"), "eval"),
        params=params,
        search=search,
    )
