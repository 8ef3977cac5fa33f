"""netsim: configs, run folders, seeds and intervals, warnings, CLI, sweeps, notebook API."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import netsim
from assay.cli import main
from netsim.config import ConfigError, load_config, resolve
from netsim.degeneration import run_warnings
from netsim.grid import axis, grid_points, parse_axis, point_table, run_sweep
from netsim.intervals import estimate, t_quantile
from netsim.simulation import run_seeds, run_tables

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "netsim" / "examples"
SMALL = EXAMPLES / "small.toml"
TABLES = ("nodes.parquet", "validators.parquet", "epochs.parquet", "seeds.parquet")

TINY = """
seed = 3
epochs = 4
jobs = 200
[nodes]
count = 6
[[nodes.strategy]]
kind = "cheater"
share = 0.5
rate = 0.5
[validators]
count = 5
"""


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def tiny(tmp_path: Path, text: str = TINY) -> Path:
    config = tmp_path / "tiny.toml"
    config.write_text(text)
    return config


def test_examples_resolve_and_round_trip() -> None:
    for path in sorted(EXAMPLES.glob("*.toml")):
        config = load_config(path)
        assert resolve(config.to_dict()) == config, path


# -- bad input: refused before anything runs, naming the key -------------------------------


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"epochz": 3}, "unknown key(s) in the config: ['epochz']"),
        ({"ids": "hash"}, "unknown key(s) in the config: ['ids']"),
        ({"nodes": {"count": 0}}, "nodes.count must be an integer"),
        ({"nodes": {"costs": 5}}, "unknown key(s) in nodes: ['costs']"),
        ({"nodes": {"strategy": [{"kind": "thief", "share": 0.1, "rate": 0.1}]}},
         "nodes.strategy.0.kind must be one of"),
        ({"nodes": {"strategy": [{"kind": "cheater", "share": 0.1, "rate": -0.2}]}},
         "nodes.strategy.0.rate must be between 0 and 1, got -0.2"),
        ({"nodes": {"offline": -0.1}}, "nodes.offline must be between 0 and 1"),
        ({"nodes": {"cost": -5}}, "nodes.cost must be a non-negative number"),
        ({"validators": {"grief_rate": -1}}, "validators.grief_rate must be between 0 and 1"),
        ({"validators": {"lazy": 0.7, "griefing": 0.5}}, "add up to more than 1"),
        ({"jobs": -1}, "jobs must be an integer"),
        ({"ledger": {"sample_ppm": 0}}, "ledger: parameter 'sample_ppm'"),
        ({"ledger": {"slash": 5}}, "unknown key(s) in ledger: ['slash']"),
    ],
)
def test_bad_configs_name_the_key(tree: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve(tree)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"validators.nope": [1, 2]}, "unknown key(s) in validators: ['nope']"),
        ({"nodes.strategy.3.rate": [0.1]}, "nodes.strategy.3 is not an existing list index"),
        ({"q": [0.5, -0.5]}, "q=-0.5: nodes.strategy.0.rate must be between 0 and 1"),
        ({"nodes.count": [3, 0]}, "nodes.count=0: nodes.count must be an integer"),
    ],
)
def test_bad_grids_are_refused_before_any_point_runs(
    grid: dict[str, list[Any]], message: str
) -> None:
    tree = tomllib.loads(TINY)
    with pytest.raises(ConfigError) as refused:
        grid_points(tree, [axis(k, v) for k, v in grid.items()])
    assert message in str(refused.value)


def test_zero_seeds_are_refused() -> None:
    with pytest.raises(ConfigError, match="seeds must be an integer in 1"):
        netsim.run(tomllib.loads(TINY), seeds=0)
    with pytest.raises(ConfigError, match="seeds must be an integer in 1"):
        run_sweep(tomllib.loads(TINY), [parse_axis("p=0.1,0.2")], seeds=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sim", "run", "missing.toml"], "does not exist"),
        (["sim", "run", str(SMALL), "--set", "nodes.count=0"], "nodes.count must be"),
        (["sim", "run", str(SMALL), "--set", "nodes.colour=red"],
         "unknown key(s) in nodes: ['colour']"),
        (["sim", "run", str(SMALL), "--set", "q=-0.3"], "nodes.strategy.0.rate must be between"),
        (["sim", "run", str(SMALL), "--seeds", "0"], "--seeds must be an integer in 1"),
        (["sim", "run", str(SMALL), "--set", "p=0.001"], "the ledger refuses these parameters"),
        (["sim", "sweep", str(SMALL)], "a sweep needs at least one --grid"),
        (["sim", "sweep", str(SMALL), "--grid", "p=1:2"], "a range is start:stop:count"),
        (["sim", "sweep", str(SMALL), "--grid", "validators.nope=1,2"],
         "unknown key(s) in validators: ['nope']"),
        (["sim", "sweep", str(SMALL), "--grid", "p=0.1,0.2", "--seeds", "0"],
         "--seeds must be an integer in 1"),
    ],
)
def test_cli_refusals_are_one_line_and_write_nothing(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(args, capsys)
    assert code == 2
    assert err.startswith("assay: error:") and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


# -- runs, seeds, intervals ------------------------------------------------------------------


def test_same_command_same_tables_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        code, _, err = run(["sim", "run", str(SMALL), "--seed", seed, "--seeds", "2",
                            "--no-plots", "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
    for table in TABLES:
        same = (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()
        assert same, table
    assert (tmp_path / "a" / "nodes.parquet").read_bytes() != (
        tmp_path / "c" / "nodes.parquet"
    ).read_bytes()
    run_json = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run_json["seeds"] == [7, 8] and run_json["path"] == "fast"
    assert run_json["git_revision"]
    assert run_json["command"] == (f"assay sim run {SMALL} --seeds 2 --seed 7 "
                                   f"--out {tmp_path / 'a'}")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["seed"] == 7
    nodes = pq.read_table(tmp_path / "a" / "nodes.parquet").to_pydict()
    assert sorted(set(nodes["seed"])) == [7, 8] and len(nodes["seed"]) == 40


def test_run_folders_never_collide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Different configs, overrides, paths and seed counts get their own folders."""
    config = tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    variants = [[], ["--path", "reference"], ["--set", "p=0.2"], ["--seeds", "2"],
                ["--seed", "4"], []]
    folders = []
    for extra in variants:
        code, out, err = run(["sim", "run", str(config), "--no-plots", *extra], capsys)
        assert code == 0, err
        folders.append(out.split()[1])
    assert len(set(folders)) == len(variants) - 1 and folders[0] == folders[-1]
    assert all(f.startswith("netsim-runs/tiny-") and len(f) == len("netsim-runs/tiny-") + 8
               for f in folders)
    commands = [json.loads((tmp_path / f / "run.json").read_text())["command"]
                for f in folders[:5]]
    assert commands[1].endswith("--path reference") and commands[2].endswith("--set p=0.2")


def test_reference_run_folder_with_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, stdout, err = run(["sim", "run", str(tiny(tmp_path)), "--path", "reference",
                             "--seeds", "2", "--json", "--out", str(out)], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["summary"]["jobs"]["mean"] == 200 and result["conserved"] is True
    assert result["interval"] == "95 % Student-t interval over seeds"
    assert {p.name for p in out.iterdir()} >= {*TABLES, "config.json", "run.json",
                                               "profit.png", "overhead.png", "network.png",
                                               "detection.png"}
    nodes = pq.read_table(out / "nodes.parquet").to_pydict()
    assert len(nodes["node"]) == 12 and set(nodes["kind"]) == {"cheater", "honest"}
    epochs = pq.read_table(out / "epochs.parquet").to_pydict()
    assert sum(epochs["jobs"]) == 400 and sum(epochs["arrived"]) == 400


def test_intervals_are_student_t_over_seeds() -> None:
    """Published two-sided 95 % t quantiles, and a mean ± t·sd/√n from the seeds' own rows."""
    for df, table in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert round(t_quantile(df), 3) == table
    runs = run_seeds(load_config(SMALL), 4)
    values = [r.summary["cheater_profit"] for r in runs.runs]
    found = runs.estimates["cheater_profit"]
    half = 3.182 * np.std(values, ddof=1) / 2
    assert found.mean == pytest.approx(np.mean(values))
    assert found.high - found.mean == pytest.approx(half, rel=1e-3)
    assert found.n == 4
    assert math.isnan(estimate([5.0]).low) and estimate([None, math.nan]).n == 0
    assert estimate([-1.0, 1.0]).inconclusive and not estimate([1.0, 1.0]).inconclusive


def test_summary_says_which_figures_are_inconclusive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["sim", "run", str(SMALL), "--seeds", "5", "--no-plots",
                          "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    run_json = json.loads((tmp_path / "r" / "run.json").read_text())
    spans = [name for name, e in run_json["summary"].items()
             if e["low"] is not None and e["low"] < 0 < e["high"]
             and not name.startswith("theory_")]
    assert spans and run_json["inconclusive"] == spans
    for name in spans:
        line = next(x for x in out.splitlines() if x.split() and x.split()[0] == name)
        assert line.endswith("inconclusive: interval spans 0")
    assert f"inconclusive over 5 seeds: {', '.join(spans)}" in out


# -- degeneration ---------------------------------------------------------------------------


def test_worn_out_network_warns() -> None:
    """Every node cheats every job under the ledger's jail: the network stops, and says so."""
    tree = tomllib.loads((EXAMPLES / "posp.toml").read_text())
    tree["ledger"].pop("jail_period")
    tree["ledger"].pop("tombstone_offences")
    tree["jobs"] = 4_000
    tables = run_tables(resolve(tree))
    assert any(w.startswith("active nodes fell to zero in epochs ") for w in tables.warnings)
    assert any(w.startswith("only ") and "of the 4000 jobs that arrived were served" in w
               for w in tables.warnings)
    assert tables.summary["unserved_jobs"] > 0


def test_jailed_validators_warn() -> None:
    """Griefers falsely accuse until every one is jailed: accusations then find no committee."""
    tree = tomllib.loads(TINY)
    tree["validators"].update({"griefing": 1.0, "grief_rate": 1.0})
    # S = 3 000 keeps p·S·D (0.5 × 3 000 × 6) within the minimum stake
    tree["ledger"] = {"sample_ppm": 500_000, "committee_size": 1, "fraud_slash": 3_000}
    tables = run_tables(resolve(tree))
    auditors = list(tables.epochs["auditors"])
    assert auditors[0] == 5 and auditors[-1] == 0
    refused = int(tables.epochs["refused"].sum())
    assert refused > 0
    assert f"{refused} accusations were refused: too few bonded validators for a committee" in (
        tables.warnings)
    assert any(w.startswith("bonded validators fell to zero in epochs") for w in tables.warnings)


def test_warnings_name_the_epochs() -> None:
    """Read off an epoch table: zero active nodes or validators, jobs that found no node.

    Built here so that every warning shows at once, in a known order.
    """
    epochs = {
        "epoch": np.arange(10), "active": np.array([3, 3, 3, 0, 0, 0, 2, 2, 2, 0]),
        "auditors": np.array([2] * 8 + [0, 0]),
        "arrived": np.full(10, 10), "jobs": np.array([10, 10, 10, 0, 0, 0, 10, 10, 10, 0]),
    }
    found = run_warnings(epochs, {"unaudited_samples": 4, "refused": 0})
    assert found == [
        "active nodes fell to zero in epochs 3–5, 9 of 10",
        "bonded validators fell to zero in epochs 8–9 of 10",
        "only 60 of the 100 jobs that arrived were served",
        "4 sampled jobs had no validator to audit them",
    ]


def test_posp_example_runs_what_it_says() -> None:
    """At the largest p of its sweep, every node serves in every epoch and no job is lost."""
    config = load_config(EXAMPLES / "posp.toml", {"p": 0.2})
    tables = run_tables(config)
    assert (tables.epochs["active"] == config.nodes).all()
    assert (tables.epochs["auditors"] == config.validators).all()
    assert tables.summary["jobs"] == config.jobs and tables.warnings == ()
    # Every job a fair draw: detection per cheated job is p (r = 0, committees all honest)
    assert tables.summary["theory_detection_per_cheated_job"] == pytest.approx(0.2)
    assert tables.summary["detection_per_cheated_job"] == pytest.approx(0.2, abs=0.01)


def test_small_samples_warn() -> None:
    runs = run_seeds(resolve(tomllib.loads(TINY)), 1)
    assert runs.warnings[-1].startswith("effective sample ")
    assert "below 30" in runs.warnings[-1]


# -- sweeps ----------------------------------------------------------------------------------


def test_sweep_on_a_local_process_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    code, stdout, err = run(["sim", "sweep", str(tiny(tmp_path)), "--grid", "p=0.001,0.1,0.5",
                             "--grid", "slash=2000:5000:2", "--seeds", "2", "--workers", "2",
                             "--out", str(out)], capsys)
    assert code == 0, err
    runs = pq.read_table(out / "runs.parquet").to_pydict()
    assert runs["point"] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert runs["seed"] == [3, 4] * 6
    points = pq.read_table(out / "sweep.parquet").to_pydict()
    assert points["status"] == ["refused", "refused", "ok", "ok", "ok", "refused"]
    assert "fabrication condition" in points["reason"][0]
    assert "stake at risk fails" in points["reason"][5]  # p·S·D = 15 000 > the minimum stake
    assert points["seeds"] == [0, 0, 2, 2, 2, 0]
    low, mean, high = (points[f"cheat_gain_per_cheated_job{s}"][2] for s in ("_low", "", "_high"))
    assert low <= mean <= high
    assert {p.name for p in out.iterdir()} >= {
        "cheat_gain_per_cheated_job.png", "cheat_gain_per_cheated_job-lines.png",
        "detection_per_cheated_job.png", "sweep.json", "config.json"}
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["grid"]["p"]["categorical"] and not meta["grid"]["slash"]["categorical"]
    assert meta["command"].startswith("assay sim sweep ") and "--grid p=0.001,0.1,0.5" in (
        meta["command"])
    # The same grid in this process gives the same rows
    rows = run_sweep(tomllib.loads(TINY), [parse_axis("p=0.001,0.1,0.5"),
                                           parse_axis("slash=2000:5000:2")], seeds=2, workers=1)
    assert [r.get("cheated") for r in rows] == runs["cheated"]
    assert "3 points refused by the ledger" in stdout


def test_point_table_folds_seeds() -> None:
    axes = [parse_axis("p=0.1,0.3")]
    rows = run_sweep(tomllib.loads(TINY), axes, seeds=3, workers=1)
    table = point_table(rows, axes)
    assert [p["seeds"] for p in table] == [3, 3]
    first = [r["fraud"] for r in rows if r["point"] == 0]
    assert table[0]["fraud"] == pytest.approx(np.mean(first))
    assert table[0]["effective_sample"] == sum(r["sampled_cheated"] for r in rows[:3])


# -- the notebook API ------------------------------------------------------------------------


def test_notebook_api_returns_data_frames() -> None:
    import pandas as pd

    result = netsim.run(SMALL, seeds=3, overrides={"p": 0.2})
    assert isinstance(result.summary, pd.DataFrame)
    assert list(result.summary.columns) == ["mean", "low", "high", "n", "inconclusive"]
    assert result.summary.loc["jobs", "n"] == 3
    assert list(result.seeds["seed"]) == [7, 8, 9]
    assert set(result.nodes["seed"]) == {7, 8, 9} and len(result.nodes) == 60
    assert len(result.epochs) == 90
    grid = netsim.sweep(tomllib.loads(TINY), {"p": [0.1, 0.3], "q": "0.2:0.8:2"}, seeds=2,
                        workers=1)
    assert len(grid.points) == 4 and len(grid.runs) == 8
    assert {"cheater_profit", "cheater_profit_low", "cheater_profit_high"} <= set(
        grid.points.columns)
    assert list(grid.points["q"]) == [0.2, 0.8, 0.2, 0.8]
