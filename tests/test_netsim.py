"""netsim: configs, run folders, determinism by seed, the CLI, and sweeps on a process pool."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from assay.cli import main
from netsim.config import ConfigError, load_config, resolve
from netsim.sweep import parse_axis, run_sweep

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "netsim" / "examples" / "small.toml"
TABLES = ("nodes.parquet", "validators.parquet", "epochs.parquet")

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


def test_examples_resolve_and_round_trip() -> None:
    for path in sorted((ROOT / "netsim" / "examples").glob("*.toml")):
        config = load_config(path)
        assert resolve(config.to_dict()) == config, path


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"epochz": 3}, "unknown key(s) in the config: ['epochz']"),
        ({"nodes": {"count": 0}}, "nodes.count must be an integer"),
        ({"nodes": {"strategy": [{"kind": "thief", "share": 0.1, "rate": 0.1}]}},
         "nodes.strategy.0.kind must be one of"),
        ({"validators": {"lazy": 0.7, "griefing": 0.5}}, "add up to more than 1"),
        ({"ledger": {"sample_ppm": 0}}, "ledger: parameter 'sample_ppm'"),
    ],
)
def test_bad_configs_name_the_key(tree: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        resolve(tree)


def test_same_seed_same_tables_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        code, _, err = run(["sim", "run", str(SMALL), "--seed", seed, "--no-plots",
                            "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
    for table in TABLES:
        same = (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()
        assert same, table
    assert (tmp_path / "a" / "nodes.parquet").read_bytes() != (
        tmp_path / "c" / "nodes.parquet"
    ).read_bytes()
    run_json = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run_json["seed"] == 7 and run_json["path"] == "fast" and run_json["git_revision"]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["seed"] == 7


def test_run_folder_on_the_reference_path_with_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "run"
    code, stdout, err = run(["sim", "run", str(config), "--path", "reference", "--json",
                             "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["jobs"] == 200 and summary["conserved"] is True
    assert {p.name for p in out.iterdir()} >= {*TABLES, "config.json", "run.json",
                                               "profit.png", "overhead.png"}
    nodes = pq.read_table(out / "nodes.parquet").to_pydict()
    assert len(nodes["node"]) == 6 and set(nodes["kind"]) == {"cheater", "honest"}
    epochs = pq.read_table(out / "epochs.parquet").to_pydict()
    assert sum(epochs["jobs"]) == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sim", "run", "missing.toml"], "does not exist"),
        (["sim", "run", str(SMALL), "--set", "nodes.count=0"], "nodes.count must be"),
        (["sim", "run", str(SMALL), "--set", "p=0.001"], "the ledger refuses these parameters"),
        (["sim", "sweep", str(SMALL)], "a sweep needs at least one --grid"),
        (["sim", "sweep", str(SMALL), "--grid", "p=1:2"], "a range is start:stop:count"),
    ],
)
def test_cli_refusals_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(args, capsys)
    assert code == 2
    assert err.startswith("assay: error:") and message in err and err.count("\n") == 1, err


def test_grid_axes() -> None:
    assert parse_axis("p=0.01:0.05:3").values == pytest.approx((0.01, 0.03, 0.05))
    assert parse_axis("slash=1000,5000").values == (1000, 5000)


def test_sweep_on_a_local_process_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "sweep"
    code, _, err = run(["sim", "sweep", str(config), "--grid", "p=0.001,0.1,0.5",
                             "--grid", "slash=2000,5000", "--workers", "2", "--out", str(out)],
                            capsys)
    assert code == 0, err
    table = pq.read_table(out / "sweep.parquet").to_pydict()
    assert table["point"] == list(range(6))
    assert table["status"] == ["refused", "refused", "ok", "ok", "ok", "ok"]
    assert "fabrication condition" in table["reason"][0]
    assert (out / "cheat_gain_per_cheated_job.png").exists()
    # The same grid in this process gives the same rows
    import tomllib

    rows = run_sweep(tomllib.loads(TINY), [parse_axis("p=0.001,0.1,0.5"),
                                           parse_axis("slash=2000,5000")], workers=1)
    assert [r["cheated"] if r["status"] == "ok" else None for r in rows] == table["cheated"]
