"""Cached experiment runs and the Table 2 summary."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import cadmr.experiments.cache as cache_mod
from cadmr.cli import main
from cadmr.cli.experiment import ABLATION
from cadmr.data.synthetic import make_synthetic
from cadmr.experiments import compare, run_key, summarize, to_csv, to_markdown
from cadmr.experiments.compare import MG_ALPHA2
from cadmr.train import resolve_run_config

SETS = ("train.epochs=2",)
KW = {"sets": SETS, "progress": False}


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic("tiny", seed=0)


@pytest.fixture
def counted_runs(monkeypatch):
    """Counts the trainer runs the cache lets through."""
    calls = []
    real = cache_mod.run

    def spy(config, *args, **kwargs):
        calls.append((config.model, config.seed))
        return real(config, *args, **kwargs)

    monkeypatch.setattr(cache_mod, "run", spy)
    return calls


def test_finished_runs_are_reused_and_new_ones_added(tiny, tmp_path, counted_runs):
    def experiment(models):
        return compare(tiny, "synthetic-tiny", models, [0, 1], grid="none", root=tmp_path, **KW)

    first = experiment(["ease", "bpr"])
    assert sorted(counted_runs) == [("bpr", 0), ("bpr", 1), ("ease", 0), ("ease", 1)]
    counted_runs.clear()
    again = experiment(["ease", "bpr"])
    assert counted_runs == [] and again == first
    # an extended experiment computes only what is new
    experiment(["ease", "bpr", "lightgcn"])
    assert sorted(counted_runs) == [("lightgcn", 0), ("lightgcn", 1)]


def test_mirror_gradient_label_reuses_the_base_selection(tiny, tmp_path, counted_runs):
    kw = {**KW, "select": "first"}
    runs = compare(tiny, "synthetic-tiny", ["bpr+mg"], [0, 1], root=tmp_path, **kw)
    base = compare(tiny, "synthetic-tiny", ["bpr"], [0, 1], root=tmp_path, **kw)
    # the base grid once on seed 0, MG at each alpha_2 of MG_ALPHA2 on seed 0, seed 1's MG
    # run at the chosen alpha_2; then the base call trains seed 1 only (seed 0 is cached)
    assert counted_runs == [("bpr", 0)] + [("bpr", 0)] * len(MG_ALPHA2) + [("bpr", 1)] * 2
    first, second = runs["bpr+mg"]
    for mg in (first, second):
        assert mg["config"]["train"]["mirror_gradient"] is True and "search" not in mg
        assert mg["params"] == base["bpr"][0]["params"]
    alpha2 = first["config"]["train"]["mirror_alpha2"]
    assert alpha2 in MG_ALPHA2 and second["config"]["train"]["mirror_alpha2"] == alpha2
    metric = first["config"]["eval"]["valid_metric"]
    trials = [r for r in _cached(tmp_path) if r["config"]["train"]["mirror_gradient"]]
    assert sorted(r["config"]["train"]["mirror_alpha2"] for r in trials if r["seed"] == 0) == [
        *MG_ALPHA2
    ]
    best = max(r["valid"][metric] for r in trials if r["seed"] == 0)
    assert first["valid"][metric] == best  # the chosen alpha_2 is (one of) the best


def _cached(root):
    return [json.loads(p.read_text()) for p in Path(root).rglob("results.json")]


def test_a_given_mirror_alpha2_is_not_searched(tiny, tmp_path, counted_runs):
    kw = {**KW, "sets": [*KW.get("sets", ()), "train.mirror_alpha2=0.5"]}
    runs = compare(tiny, "synthetic-tiny", ["bpr+mg"], [0], root=tmp_path, **kw)
    assert counted_runs == [("bpr", 0), ("bpr", 0)]
    assert runs["bpr+mg"][0]["config"]["train"]["mirror_alpha2"] == 0.5


def test_select_first_trains_the_first_seeds_selection(tiny, tmp_path, counted_runs):
    grid = ["search.reg_weight=[0.5,0.0001]"]
    kw = {**KW, "sets": [*SETS, *grid], "root": tmp_path}
    runs = compare(tiny, "synthetic-tiny", ["bpr", "bpr+mg"], [0, 1], select="first", **kw)
    # one search (seed 0), then seed 1, and the MG runs at its selection: one per alpha_2 on
    # seed 0, one on seed 1
    mg = len(MG_ALPHA2)
    assert sorted(counted_runs) == [("bpr", 0)] * (1 + mg) + [("bpr", 1)] * 2
    first, second = runs["bpr"]
    assert len(first["search"]) == 2 and "search" not in second
    assert second["params"] == first["params"] and second["seed"] == 1
    assert all(r["params"] == first["params"] for r in runs["bpr+mg"])
    each = compare(tiny, "synthetic-tiny", ["bpr"], [0, 1], **kw)  # seed 1 searches its own
    assert len(each["bpr"][1]["search"]) == 2 and each["bpr"][0] == first


def test_cold_start_trains_the_full_data_selection(tiny, tmp_path, counted_runs):
    from cadmr.experiments.coldstart import cold_start

    kw = {**KW, "sets": [*SETS, "search.reg_weight=[0.5,0.0001]"], "root": tmp_path}
    full = compare(tiny, "synthetic-tiny", ["bpr"], [0], **kw)["bpr"][0]
    out = cold_start(tiny, "synthetic-tiny", ["bpr"], [0.5], [0, 1], **kw)
    runs = out[0.5]["bpr"]
    assert [r["params"] for r in runs] == [full["params"]] * 2
    assert all("search" not in r for r in runs) and runs[0]["dataset"].endswith("-train50")
    assert len(counted_runs) == 3  # the full-data search once (cached), then 2 reduced runs


def test_run_key_follows_what_changes_results(tiny):
    cfg = resolve_run_config("bpr", "synthetic-tiny")
    same = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=False))
    other = dataclasses.replace(cfg, params=dataclasses.replace(cfg.params, reg_weight=0.5))
    assert run_key(cfg, tiny) == run_key(same, tiny)
    assert run_key(cfg, tiny) != run_key(other, tiny)
    assert run_key(cfg, tiny) != run_key(dataclasses.replace(cfg, seed=1), tiny)
    assert run_key(cfg, tiny) != run_key(cfg, make_synthetic("tiny", seed=1))


def _result(seed, r10, n10, pop=None):
    test = {"recall@10": r10, "recall@20": r10, "ndcg@10": n10, "ndcg@20": n10}
    out = {"seed": seed, "test": test, "seconds_per_epoch": 1.0}
    if pop is not None:
        out["popularity"] = {k: pop for k in test}
    return out


def test_summary_known_answer():
    rows = summarize({"a": [_result(0, 0.2, 0.1, pop=0.05), _result(1, 0.4, 0.3)]})
    a, pop = rows
    assert a["model"] == "a" and a["seeds"] == [0, 1]
    assert a["recall@10"] == pytest.approx(0.3)
    assert a["recall@10_std"] == pytest.approx(0.1414213, rel=1e-5)  # sample std
    assert a["ratio"] == pytest.approx(0.3 / 0.2)
    assert pop["model"] == "popularity" and pop["ratio"] == pytest.approx(1.0)
    md = to_markdown(rows)
    assert "| a | 0,1 | 0.3000 ± 0.1414 |" in md and "| popularity | - | 0.0500 |" in md
    lines = to_csv(rows).splitlines()
    assert lines[0].startswith("model,seeds,recall@10,recall@10_std")
    assert lines[1].startswith("a,0 1,0.300000,0.141421")


def test_summary_shows_a_metric_the_results_predate_as_a_dash():
    # _result records no MRR or coverage (results written before they existed)
    new = _result(0, 0.2, 0.1)
    new["test"] |= {"mrr@10": 0.15, "coverage@20": 0.4}
    rows = summarize({"old": [_result(0, 0.2, 0.1)], "new": [new]})
    md = to_markdown(rows).splitlines()
    assert md[0].endswith("| MRR@10 | cov@20 | R@10/N@10 | s/epoch |")
    assert "| 0.1000 | - | - | 2.00 |" in md[2] and "| 0.1500 | 0.4000 | 2.00 |" in md[3]


def test_cli_compare_writes_the_three_tables(tmp_path, capsys):
    out, cache = tmp_path / "tables", tmp_path / "cache"
    args = ["experiment", "compare", "-d", "synthetic-tiny", "-m", "ease", "bpr", "--seeds", "2"]
    args += ["--no-tune", "--set", "train.epochs=2", "--out", str(out), "--cache", str(cache)]
    assert main([*args, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "mean ± sample std over seeds 0, 1; defaults" in printed
    assert (out / "compare.md").read_text().count("\n| ") == 4  # ease, bpr, popularity + head
    data = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["ease", "bpr", "popularity"]
    assert [r["seed"] for r in data["runs"]["bpr"]] == [0, 1]
    assert (out / "compare.csv").read_text().count("\n") == 4


def test_an_interrupted_run_resumes_where_it_stopped(tiny, tmp_path, crash_while_saving):
    from cadmr.experiments import cached_run

    cfg = resolve_run_config("bpr", "synthetic-tiny", sets=["train.epochs=4"])
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=False))
    disarm = crash_while_saving(phase=0, epoch=2)
    with pytest.raises(KeyboardInterrupt):
        cached_run(cfg, tiny, tmp_path / "a")
    disarm()
    resumed = cached_run(cfg, tiny, tmp_path / "a")
    fresh = cached_run(cfg, tiny, tmp_path / "b")
    assert resumed["valid"] == fresh["valid"] and resumed["test"] == fresh["test"]
    log = next((tmp_path / "a").rglob("train.log")).read_text()
    assert "resumed from" in log


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("bpr", ("bpr", [], False)),
        ("dragon+mg", ("dragon", [], True)),
        ("cadmr:heads=2", ("cadmr", ["params.heads=2"], False)),
        ("cadmr+mg:tc_weight=0, heads=8", ("cadmr", ["params.tc_weight=0", "params.heads=8"], 1)),
    ],
)
def test_labels(label, expected):
    from cadmr.experiments.compare import parse_label

    assert parse_label(label) == expected


def test_a_bad_label_is_a_clear_error():
    from cadmr.experiments.compare import parse_label

    with pytest.raises(ValueError, match="MODEL\\[\\+mg\\]"):
        parse_label("cadmr:heads")


def test_label_overrides_reach_the_model(tiny, tmp_path):
    label = "bpr:reg_weight=0.5"
    runs = compare(tiny, "synthetic-tiny", [label], [0], grid="none", root=tmp_path, **KW)
    assert runs[label][0]["params"]["reg_weight"] == 0.5


@pytest.mark.parametrize("experiment", ["ablation", "heads"])
def test_cli_ablation_and_heads(experiment, tmp_path, capsys):
    out = tmp_path / experiment
    args = ["experiment", experiment, "-d", "synthetic-tiny", "--seeds", "1", "--quiet"]
    args += ["--set", "train.epochs=2", "--out", str(out), "--cache", str(tmp_path / "cache")]
    # the tables' wiring, not the search: the budget grid (CADMR's published one adds the
    # width, 3x the time here)
    args += ["--grid", "budget"]
    if experiment == "heads":
        args += ["--heads", "1", "2"]
    assert main(args) == 0
    data = json.loads((out / f"{experiment}.json").read_text())
    shown = [r["model"] for r in data["rows"]]
    if experiment == "ablation":
        assert shown == [*ABLATION, "popularity"]
        runs = data["runs"]
        assert runs["CADMR"][0]["params"]["tc_weight"] == 0
        assert runs["with DRL (TC, lambda 0.5)"][0]["params"]["tc_weight"] == 0.5
        assert runs["w/o CA (own value only)"][0]["params"]["use_attention"] is False
        assert (
            runs["CA over every item (no neighbour limit)"][0]["params"]["attention_neighbours"]
            == 0
        )
        paper_ca = runs["the paper's CA (feature values, no value skip)"][0]["params"]
        assert paper_ca["attention_values"] == "features" and paper_ca["value_skip"] is False
        assert runs["paper's settings"][0]["params"]["tc_weight"] == 0.5  # cadmr_paper
        assert runs["paper's settings"][0]["params"]["input_dropout"] == 0
    else:
        assert shown == ["1 heads", "2 heads", "popularity"]
        png = (out / "heads.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert "tables:" in capsys.readouterr().out


def test_reduced_dataset_keeps_valid_and_test(tiny):
    from cadmr.experiments.coldstart import reduced

    half = reduced(tiny, 0.5)
    assert half.name == "synthetic-tiny-train50"
    assert (half.valid != tiny.valid).nnz == 0 and (half.test != tiny.test).nnz == 0
    assert half.train.nnz < tiny.train.nnz and half.fingerprint() != tiny.fingerprint()


def test_cli_cold_start_table_and_plot(tmp_path):
    out = tmp_path / "cs"
    args = ["experiment", "cold-start", "-d", "synthetic-tiny", "-m", "ease", "bpr", "--quiet"]
    args += ["--fractions", "0.8", "0.4", "--seeds", "1", "--no-tune", "--set", "train.epochs=2"]
    assert main([*args, "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    data = json.loads((out / "cold-start.json").read_text())
    assert list(data) == ["0.8", "0.4"]
    assert [r["model"] for r in data["0.4"]] == ["ease", "bpr", "popularity"]
    # less training data: EASE's test NDCG@10 falls
    assert data["0.4"][0]["ndcg@10"] < data["0.8"][0]["ndcg@10"]
    assert (out / "cold-start.png").read_bytes()[:4] == b"\x89PNG"


def test_cold_start_retune_searches_each_reduced_set(tiny, tmp_path, counted_runs):
    from cadmr.experiments.coldstart import cold_start

    kw = {**KW, "sets": [*SETS, "search.reg_weight=[0.5,0.0001]"], "root": tmp_path}
    out = cold_start(tiny, "synthetic-tiny", ["bpr"], [0.5, 0.8], [0, 1], retune=True, **kw)
    for f in (0.5, 0.8):
        first, second = out[f]["bpr"]
        assert len(first["search"]) == 2 and "search" not in second
        assert second["params"] == first["params"]
    assert len(counted_runs) == 4  # no full-data search: one search + one run per fraction


def test_cold_start_shows_one_bar_over_all_its_runs(tiny, tmp_path, capsys):
    from cadmr.experiments.coldstart import cold_start

    kw = {"sets": SETS, "root": tmp_path, "grid": "none"}
    cold_start(tiny, "synthetic-tiny", ["ease", "bpr"], [0.5, 0.8], [0, 1], **kw)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    # 2 fractions x 2 models x 2 seeds, plus each model's full-data selection
    assert any("cold-start on synthetic-tiny" in line and "10/10" in line for line in bar)
