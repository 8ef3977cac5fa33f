"""A run folder: what was asked, what ran, and what came out.

::

    config.json       the resolved configuration (every default filled in)
    run.json          seed, git revision, path, ids, wall time, summary
    nodes.parquet     one row per inference node
    validators.parquet
    epochs.parquet    one row per epoch
    *.png             plots (netsim.plots)

The tables depend only on the configuration (seed included): the same
config gives the same Parquet bytes. ``run.json`` also holds the wall time,
which does not.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netsim import metrics
from netsim.config import SimConfig
from netsim.tables import RunTables

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def to_arrow(table: metrics.Table) -> pa.Table:
    columns = {}
    for name, values in table.items():
        array = np.asarray(values)
        columns[name] = pa.array(array.tolist() if array.dtype == object else array)
    return pa.table(columns)


def write_table(table: metrics.Table, path: Path) -> None:
    pq.write_table(to_arrow(table), path, compression="zstd")


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


def write_run(
    folder: Path, config: SimConfig, tables: RunTables, seconds: float, plots: bool = True
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    run = {
        "seed": config.seed,
        "git_revision": git_revision(),
        "path": config.path,
        "ids": "message" if config.path == "reference" else config.ids,
        "seconds": round(seconds, 3),
        "summary": tables.summary,
    }
    (folder / "run.json").write_text(json.dumps(jsonable(run), indent=2) + "\n")
    write_table(tables.nodes, folder / "nodes.parquet")
    write_table(tables.validators, folder / "validators.parquet")
    write_table(tables.epochs, folder / "epochs.parquet")
    if plots:
        from netsim.plots import plot_run

        plot_run(folder, config, tables)
