"""Run and sweep folders: what was asked, what ran, and what came out.

A run folder, ``<root>/<config name>-<hash>/``::

    config.json         the resolved configuration (every default filled in)
    run.json            command line, seeds, git revision, path, wall time,
                        every summary figure's mean and 95 % interval, the
                        inconclusive figures, degeneration warnings
    seeds.parquet       one summary row per seed
    nodes.parquet       one row per inference node and seed
    validators.parquet  one row per validator and seed
    epochs.parquet      one row per epoch and seed
    *.png               plots (netsim.plots)

A sweep folder, ``<root>/<config name>-sweep-<hash>/``: ``config.json``,
``sweep.json`` (command line, grid, seeds, backend, warnings),
``runs.parquet`` (one row per point and seed), ``sweep.parquet`` (one row
per point: means and intervals) and plots.

``<hash>`` is the first 8 hex digits of the SHA-256 of the resolved
configuration (path and seed included), the number of seeds and, for a
sweep, the grid: different configurations, overrides, paths or seeds never
share a folder, and the same ones always do. The tables depend only on
those: the same command gives the same Parquet bytes. ``run.json`` also
holds the wall time, which does not.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netsim import metrics
from netsim.config import SimConfig
from netsim.intervals import INTERVAL
from netsim.tables import SeedTables, is_measured

if TYPE_CHECKING:
    from netsim.grid import Axis

REPO_ROOT = Path(__file__).resolve().parents[1]
HASH_DIGITS = 8


def git_revision() -> str:
    """The commit the code ran at, or ``unknown`` outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def config_hash(what: Mapping[str, Any]) -> str:
    """Short SHA-256 of a JSON object in canonical form (sorted keys, no spaces)."""
    text = json.dumps(jsonable(what), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_DIGITS]


def run_folder(root: Path, name: str, config: SimConfig, seeds: int) -> Path:
    return root / f"{name}-{config_hash({'config': config.to_dict(), 'seeds': seeds})}"


def sweep_folder(
    root: Path, name: str, config: SimConfig, axes: Sequence[Axis], seeds: int
) -> Path:
    grid = [[a.name, list(a.values), a.categorical] for a in axes]
    digest = config_hash({"config": config.to_dict(), "grid": grid, "seeds": seeds})
    return root / f"{name}-sweep-{digest}"


def to_arrow(table: Mapping[str, Any]) -> pa.Table:
    columns = {}
    for name, values in table.items():
        array = np.asarray(values)
        columns[name] = pa.array(array.tolist() if array.dtype == object else array)
    return pa.table(columns)


def write_table(table: Mapping[str, Any], path: Path) -> None:
    pq.write_table(to_arrow(table), path, compression="zstd")


def write_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Rows of scalars as one Parquet table; a value missing from a row is null."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    table = pa.table({name: [jsonable(row.get(name)) for row in rows] for name in names})
    pq.write_table(table, path, compression="zstd")


def jsonable(value: Any) -> Any:
    """JSON without NaN: a missing measurement is null."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value


def summary_json(runs: SeedTables) -> dict[str, Any]:
    """Each figure: mean, 95 % interval, seeds that define it, and whether it is inconclusive."""
    return {
        name: {
            "mean": e.mean, "low": e.low, "high": e.high, "n": e.n,
            **({"inconclusive": e.inconclusive} if is_measured(name) else {}),
        }
        for name, e in runs.estimates.items()
    }


def write_run(
    folder: Path, runs: SeedTables, seconds: float, command: str, plots: bool = True
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = runs.config
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    run = {
        "command": command,
        "seeds": list(runs.seeds),
        "interval": INTERVAL,
        "git_revision": git_revision(),
        "path": config.path,
        "seconds": round(seconds, 3),
        "conserved": runs.conserved,
        "summary": summary_json(runs),
        "inconclusive": runs.inconclusive,
        "warnings": runs.warnings,
    }
    (folder / "run.json").write_text(json.dumps(jsonable(run), indent=2) + "\n")
    seed_rows = [{"seed": s, **r.summary, "warnings": "; ".join(r.warnings)}
                 for s, r in zip(runs.seeds, runs.runs, strict=True)]
    write_rows(seed_rows, folder / "seeds.parquet")
    for name in ("nodes", "validators", "epochs"):
        table: metrics.Table = runs.stacked(name)
        write_table(table, folder / f"{name}.parquet")
    if plots:
        from netsim.plots import plot_run

        plot_run(folder, runs)


def write_sweep(
    folder: Path,
    base: SimConfig,
    axes: Sequence[Axis],
    seeds: int,
    rows: Sequence[Mapping[str, Any]],
    points: Sequence[Mapping[str, Any]],
    seconds: float,
    backend: str,
    command: str,
    plots: bool = True,
) -> None:
    """``config.json``, ``sweep.json``, ``runs.parquet``, ``sweep.parquet`` and plots."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(base.to_dict(), indent=2) + "\n")
    meta = {
        "command": command,
        "grid": {a.name: {"values": list(a.values), "categorical": a.categorical}
                 for a in axes},
        "seeds": seeds,
        "interval": INTERVAL,
        "points": len(points),
        "git_revision": git_revision(),
        "backend": backend,
        "seconds": round(seconds, 3),
        "warnings": [f"point {p['point']}: {w}" for p in points
                     for w in str(p["warnings"]).split("; ") if w],
    }
    (folder / "sweep.json").write_text(json.dumps(jsonable(meta), indent=2) + "\n")
    write_rows(rows, folder / "runs.parquet")
    write_rows(points, folder / "sweep.parquet")
    if plots and any(p["status"] == "ok" for p in points) and len(axes) in (1, 2):
        from netsim.plots import plot_sweep

        plot_sweep(folder, base, axes, seeds, points)
