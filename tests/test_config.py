"""Strict configuration: unknown keys, wrong types, invalid values, layering and the grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from cadmr.config import (
    ConfigError,
    EvalConfig,
    RunConfig,
    TrainConfig,
    build_run_config,
    from_dict,
    load_yaml,
    merge,
    parse_sets,
    to_dict,
)


@dataclass(frozen=True)
class ToyParams:
    """A model's hyper-parameters, with one field of each supported kind."""

    dim: int = 8
    reg: float = 0.01
    layers: tuple[int, ...] = (64, 32)
    act: Literal["relu", "tanh"] = "relu"
    dropout: float | None = None
    use_bias: bool = True

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise ValueError(f"dim must be > 0, got {self.dim}")


def build(*layers: dict, default_search: dict | None = None) -> RunConfig:
    return build_run_config("toy", "tiny", ToyParams, list(layers), default_search)


# --------------------------------------------------------------------------------------
# Unknown keys


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError) as e:
        build({"sed": 1})
    msg = str(e.value)
    assert "sed" in msg
    for valid in ("seed", "train", "eval", "params", "search"):
        assert valid in msg


def test_unknown_key_under_train() -> None:
    with pytest.raises(ConfigError) as e:
        build({"train": {"epoch": 5}})
    msg = str(e.value)
    assert "train.epoch" in msg
    assert "valid keys under train" in msg
    assert "epochs" in msg and "learning_rate" in msg


def test_unknown_key_under_eval() -> None:
    with pytest.raises(ConfigError, match=r"eval\.k\b.*batch_size.*ks"):
        build({"eval": {"k": [10]}})


def test_unknown_key_under_params() -> None:
    with pytest.raises(ConfigError) as e:
        build({"params": {"dimm": 3}})
    msg = str(e.value)
    assert "params.dimm" in msg
    for valid in ("act", "dim", "dropout", "layers", "reg", "use_bias"):
        assert valid in msg


# --------------------------------------------------------------------------------------
# Types


@pytest.mark.parametrize(
    ("layer", "key"),
    [
        ({"train": {"epochs": "5"}}, "train.epochs"),  # string for int
        ({"train": {"epochs": 5.0}}, "train.epochs"),  # float for int
        ({"train": {"epochs": True}}, "train.epochs"),  # bool for int
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate"),  # non-numeric string
        ({"train": {"learning_rate": False}}, "train.learning_rate"),  # bool for float
        ({"train": {"progress": 1}}, "train.progress"),  # int for bool
        ({"train": {"progress": "yes"}}, "train.progress"),  # string for bool
        ({"eval": {"ks": 20}}, "eval.ks"),  # scalar for tuple
        ({"eval": {"ks": "20"}}, "eval.ks"),  # string for tuple
        ({"eval": {"ks": [5, "10"]}}, "eval.ks[1]"),  # wrong element type
        ({"eval": {"valid_metric": 20}}, "eval.valid_metric"),  # int for str
        ({"params": {"layers": "64"}}, "params.layers"),  # string for tuple
        ({"params": {"act": "gelu"}}, "params.act"),  # not in the Literal
        ({"params": {"dropout": "x"}}, "params.dropout"),  # Optional[float]
        ({"seed": "1"}, "seed"),
    ],
)
def test_wrong_type_names_the_key(layer: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        build(layer)
    assert key in str(e.value)


def test_accepted_types_are_canonicalised() -> None:
    rc = build(
        {
            "train": {"learning_rate": 1, "weight_decay": 0},  # int accepted for float
            "eval": {"ks": [20, 5, 20], "valid_metric": "ndcg@5"},  # list -> sorted unique
            "params": {"layers": [16, 8], "dropout": 0.5, "reg": 2},
        }
    )
    assert rc.train.learning_rate == 1.0 and type(rc.train.learning_rate) is float
    assert type(rc.train.weight_decay) is float
    assert rc.eval.ks == (5, 20)
    assert rc.params.layers == (16, 8) and isinstance(rc.params.layers, tuple)
    assert rc.params.dropout == 0.5
    assert type(rc.params.reg) is float
    assert build({"params": {"dropout": None}}).params.dropout is None


def test_non_mapping_dataclass_value_inside_from_dict() -> None:
    @dataclass(frozen=True)
    class Outer:
        train: TrainConfig = field(default_factory=TrainConfig)

    with pytest.raises(ConfigError, match="train must be a mapping"):
        from_dict(Outer, {"train": 5})


@pytest.mark.parametrize(
    "layer", [{"train": 5}, {"params": [1, 2]}, {"eval": "abc"}], ids=["int", "list", "str"]
)
def test_non_mapping_section_is_a_config_error(layer: dict) -> None:
    section = next(iter(layer))
    with pytest.raises(ConfigError, match=rf"^{section} must be a mapping"):
        build(layer)


# --------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        ({"train": {"epochs": 0}}, r"train\.epochs must be > 0"),
        ({"train": {"batch_size": -1}}, r"train\.batch_size must be > 0"),
        ({"train": {"learning_rate": 0}}, r"train\.learning_rate must be > 0"),
        ({"train": {"num_threads": -1}}, r"train\.num_threads must be >= 0"),
        ({"train": {"mirror_interval": 0}}, r"train\.mirror_interval must be > 0"),
        ({"train": {"mirror_alpha2": -1.0}}, r"train\.mirror_alpha1 and train\.mirror_alpha2"),
        ({"eval": {"batch_size": 0}}, r"eval\.batch_size must be > 0"),
        ({"eval": {"ks": [0, 20]}}, r"eval\.ks"),
        ({"eval": {"ks": []}}, r"eval\.ks"),
        ({"eval": {"valid_metric": "foo@20"}}, "foo@20"),
        ({"eval": {"valid_metric": "recall@7"}}, "recall@7"),  # 7 not in ks
        ({"eval": {"valid_metric": "recall"}}, "recall"),
        ({"eval": {"ks": [5, 10]}}, "recall@20"),  # default valid_metric not in ks
        ({"params": {"dim": 0}}, "dim must be > 0"),  # the params' own __post_init__
    ],
)
def test_invalid_values(layer: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build(layer)


def test_valid_metric_at_a_cutoff_in_ks() -> None:
    rc = build({"eval": {"ks": [7], "valid_metric": "recall@7"}})
    assert rc.eval.valid_metric == "recall@7" and rc.eval.ks == (7,)


# --------------------------------------------------------------------------------------
# --set parsing and merging


def test_parse_sets_nests_and_types_values() -> None:
    out = parse_sets(
        [
            "train.epochs=5",
            "train.progress=false",
            "eval.ks=[10, 20]",
            "params.act=tanh",
            "params.reg=0.5",
            "seed=3",
            "a.b.c=x=y",  # only the first '=' separates key and value
            "empty=",
            "none=null",
        ]
    )
    assert out == {
        "train": {"epochs": 5, "progress": False},
        "eval": {"ks": [10, 20]},
        "params": {"act": "tanh", "reg": 0.5},
        "seed": 3,
        "a": {"b": {"c": "x=y"}},
        "empty": "",
        "none": None,
    }
    assert type(out["train"]["epochs"]) is int


def test_parse_sets_exponent_without_dot_is_a_string() -> None:
    # PyYAML follows YAML 1.1: a float needs a dot, so "1e-3" is the STRING '1e-3' while
    # "1.0e-3" is the float 0.001 (the same holds for `reg: 1e-3` in a YAML file).
    assert parse_sets(["params.reg=1e-3"]) == {"params": {"reg": "1e-3"}}
    assert parse_sets(["params.reg=1.0e-3"]) == {"params": {"reg": 0.001}}


def test_float_fields_accept_numeric_strings() -> None:
    # ... so float fields convert numeric strings: `--set params.reg=1e-3` works.
    assert build(parse_sets(["params.reg=1e-3"])).params.reg == 0.001
    rc = build(yaml.safe_load("train:\n  learning_rate: 1e-3\n"))
    assert rc.train.learning_rate == 0.001 and type(rc.train.learning_rate) is float
    assert build({"params": {"dropout": "5e-1"}}).params.dropout == 0.5  # float | None
    # int fields stay strict: YAML's "1e3" is a string, not an integer
    with pytest.raises(ConfigError, match=r"params\.dim must be an integer, got '1e3'"):
        build(parse_sets(["params.dim=1e3"]))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan"], ids=["nan", "inf", "str"])
def test_non_finite_learning_rate_is_rejected(value: object) -> None:
    with pytest.raises(ConfigError, match="learning_rate"):
        build({"train": {"learning_rate": value}})


@pytest.mark.parametrize(
    "sets",
    [
        ["train.epochs"],  # no '='
        ["=5"],  # no key
        [" =5"],
        ["x=[1,"],  # invalid YAML
        ["a=1", "a.b=2"],  # a is a value, then used as a section
    ],
)
def test_parse_sets_errors(sets: list[str]) -> None:
    with pytest.raises(ConfigError):
        parse_sets(sets)


def test_parse_sets_later_assignment_wins() -> None:
    assert parse_sets(["train.epochs=5", "train.epochs=7"]) == {"train": {"epochs": 7}}


def test_merge_precedence() -> None:
    base = {"seed": 1, "train": {"epochs": 5, "patience": 3}, "params": {"layers": [1, 2]}}
    over = {"train": {"epochs": 7}, "params": {"layers": [9]}, "eval": {"ks": [10]}}
    out = merge(base, over)
    assert out == {
        "seed": 1,
        "train": {"epochs": 7, "patience": 3},  # nested keys merge
        "params": {"layers": [9]},  # lists are replaced, not merged
        "eval": {"ks": [10]},
    }
    assert base == {"seed": 1, "train": {"epochs": 5, "patience": 3}, "params": {"layers": [1, 2]}}
    assert merge({"train": {"epochs": 5}}, {"train": None}) == {"train": None}
    assert merge({"train": 5}, {"train": {"epochs": 2}}) == {"train": {"epochs": 2}}


# --------------------------------------------------------------------------------------
# build_run_config


def test_defaults() -> None:
    rc = build()
    assert rc.model == "toy" and rc.dataset == "tiny" and rc.seed == 0
    assert rc.train == TrainConfig() and rc.eval == EvalConfig()
    assert rc.params == ToyParams()
    assert rc.search == {}
    assert list(rc.trials()) == [ToyParams()]


def test_layers_later_wins() -> None:
    rc = build(
        {"seed": 1, "train": {"epochs": 5, "patience": 3}, "params": {"dim": 4}},  # dataset
        {"train": {"epochs": 6}, "params": {"reg": 0.5}},  # model
        {"train": {"epochs": 7}},  # --config
        parse_sets(["params.dim=16"]),  # --set
    )
    assert rc.seed == 1
    assert rc.train.epochs == 7 and rc.train.patience == 3
    assert rc.params == ToyParams(dim=16, reg=0.5)


def test_model_and_dataset_must_match() -> None:
    assert build({"model": "toy", "dataset": "tiny"}).model == "toy"
    with pytest.raises(ConfigError, match="model"):
        build({"model": "other"})
    with pytest.raises(ConfigError, match="dataset"):
        build({"dataset": "other"})


def test_search_grid_and_trials() -> None:
    rc = build({"params": {"reg": 0.5}, "search": {"dim": [4, 8], "act": ["relu", "tanh"]}})
    assert rc.search == {"dim": (4, 8), "act": ("relu", "tanh")}
    trials = list(rc.trials())
    assert trials == [
        ToyParams(dim=4, act="relu", reg=0.5),
        ToyParams(dim=4, act="tanh", reg=0.5),
        ToyParams(dim=8, act="relu", reg=0.5),
        ToyParams(dim=8, act="tanh", reg=0.5),
    ]


def test_search_values_are_coerced() -> None:
    rc = build({"search": {"reg": [1, 0.1], "layers": [[8], [16, 8]]}})
    assert rc.search["reg"] == (1.0, 0.1) and type(rc.search["reg"][0]) is float
    assert rc.search["layers"] == ((8,), (16, 8))
    assert len(list(rc.trials())) == 4


def test_default_search_used_only_when_no_layer_sets_one() -> None:
    default = {"dim": (2, 3)}
    assert build(default_search=default).search == {"dim": (2, 3)}
    assert build({"search": {"reg": [0.1]}}, default_search=default).search == {"reg": (0.1,)}
    assert build({"search": {}}, default_search=default).search == {}


@pytest.mark.parametrize(
    ("search", "match"),
    [
        ({"depth": [1, 2]}, r"search\.depth.*valid: .*dim"),  # unknown param
        ({"dim": []}, r"search\.dim must be a non-empty list"),
        ({"dim": 4}, r"search\.dim must be a non-empty list"),
        ({"dim": "48"}, r"search\.dim must be a non-empty list"),
        ({"dim": [4, "8"]}, r"search\.dim\[1\] must be an integer"),
        ({"dim": [4, 2.5]}, r"search\.dim\[1\] must be an integer"),
        ({"act": ["relu", "gelu"]}, r"search\.act\[1\]"),
        ({"dim": [4, 0]}, r"search\.dim: dim must be > 0"),  # fails the dataclass check
        ([["dim", [1]]], "search must be a mapping"),
    ],
)
def test_search_validation(search: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build({"search": search})


# --------------------------------------------------------------------------------------
# Round trips and files


def test_to_dict_round_trip() -> None:
    rc = build(
        {
            "seed": 4,
            "train": {"epochs": 3, "learning_rate": 0.01},
            "eval": {"ks": [10, 20], "valid_metric": "ndcg@10", "mask_valid_at_test": True},
            "params": {"layers": [4, 2], "dropout": 0.1, "act": "tanh"},
            "search": {"dim": [2, 4]},
        }
    )
    d = rc.to_dict()
    assert d["eval"]["ks"] == [10, 20] and d["params"]["layers"] == [4, 2]  # plain YAML data
    reloaded = yaml.safe_load(yaml.safe_dump(d))
    assert reloaded == d
    assert build(reloaded) == rc
    assert from_dict(TrainConfig, to_dict(rc.train), "train") == rc.train
    assert from_dict(EvalConfig, to_dict(rc.eval), "eval") == rc.eval
    assert from_dict(ToyParams, to_dict(rc.params), "params") == rc.params


def test_load_yaml(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  epochs: 5\n")
    assert load_yaml(good) == {"train": {"epochs": 5}}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


def test_load_yaml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "nope.yaml")


def test_load_yaml_invalid_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "5\n", "just a string\n"])
def test_load_yaml_non_mapping_top_level(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(bad)


def test_resolve_grid_choices() -> None:
    from cadmr.models import MODELS, get_model_class
    from cadmr.train import resolve_run_config

    assert resolve_run_config("bpr", "tiny").search == {}
    published = resolve_run_config("bpr", "tiny", grid="published").search
    assert published["reg_weight"] == (2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    assert resolve_run_config("bpr", "tiny", grid="budget").search == {
        "reg_weight": (1e-1, 1e-3, 1e-5)
    }
    bm3 = get_model_class("bm3")  # no budget grid: the published one
    assert resolve_run_config("bm3", "tiny", grid="budget").search == dict(bm3.default_search)
    with pytest.raises(ValueError, match="grid must be one of none, published, budget"):
        resolve_run_config("bpr", "tiny", grid="full")
    # every budget grid draws its values from the published grid
    for name, cls in MODELS.items():
        for k, values in (cls.budget_search or {}).items():
            assert set(values) <= set(cls.default_search[k]), (name, k)


@pytest.mark.parametrize("seed", [-1, 2**63, 10**30])
def test_seed_out_of_range_is_refused(seed):
    with pytest.raises(ConfigError, match=r"seed must be an integer in 0\.\."):
        build({"seed": seed})


def test_a_valid_metric_cut_off_missing_from_ks_names_the_cut_off():
    with pytest.raises(ConfigError, match=r"eval.ks \[100000\] leaves out 20"):
        build({"eval": {"ks": [100000]}})
