"""Parameter sweeps: a grid of configurations, run on a process pool or on Ray.

``--grid p=0.001:0.2:20`` is 20 evenly spaced values from 0.001 to 0.2
inclusive; ``--grid slash=1000,5000,9000`` lists values. The sweep is the
Cartesian product of the axes, times ``replicates`` seeds (seed, seed+1, …).
Each point is one independent run; its row holds the axis values, the seed,
a status (``ok``, or ``refused`` with the ledger's reason when ``SetParams``
refuses the parameters, or ``invalid`` when the config is out of range) and
the run's summary. Rows are ordered by point, never by completion, so the
table is the same on any backend and any number of workers.

Backends: a local ``ProcessPoolExecutor`` by default (as cadCAD/radCAD run
locally), or Ray with ``ray=True`` or ``RAY_ADDRESS`` set. When netsim
starts Ray itself it ships netsim and the packages it imports to the workers
with ``runtime_env.py_modules``, so a cluster needs only the third-party
dependencies installed; a caller that has already called ``ray.init`` keeps
its own runtime environment.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netsim.config import ALIASES, ConfigError, SimConfig, parse_value, resolve
from netsim.genesis import ParamsRefused
from netsim.output import git_revision, jsonable


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[Any, ...]


def parse_axis(text: str) -> Axis:
    """``name=start:stop:count`` or ``name=v1,v2,...``."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise ConfigError(f"--grid wants name=start:stop:count or name=v1,v2,..., got {text!r}")
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) != 3:
            raise ConfigError(f"--grid {name}: a range is start:stop:count, got {spec!r}")
        try:
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ConfigError(f"--grid {name}: {spec!r} is not start:stop:count") from None
        if count < 1 or not (math.isfinite(start) and math.isfinite(stop)):
            raise ConfigError(f"--grid {name}: count must be at least 1, bounds finite")
        values: tuple[Any, ...] = tuple(float(v) for v in np.linspace(start, stop, count))
    else:
        values = tuple(parse_value(v.strip()) for v in spec.split(","))
    return Axis(name=name, values=values)


def _is_integer_key(tree: Mapping[str, Any], name: str) -> bool:
    """Whether the key holds an integer in the resolved config (then grid floats are rounded)."""
    if name == "p":
        return False
    node: Any = tree
    for part in ALIASES.get(name, name).split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return isinstance(node, int) and not isinstance(node, bool)


@dataclass(frozen=True)
class Point:
    index: int
    overrides: dict[str, Any]
    seed: int


def grid_points(
    tree: Mapping[str, Any], axes: Sequence[Axis], replicates: int = 1
) -> list[Point]:
    base = resolve(tree)
    resolved = base.to_dict()
    integer = {a.name: _is_integer_key(resolved, a.name) for a in axes}
    points: list[Point] = []
    for combo in itertools.product(*(a.values for a in axes)):
        for replicate in range(replicates):
            overrides = {
                a.name: round(v) if integer[a.name] and isinstance(v, float) else v
                for a, v in zip(axes, combo, strict=True)
            }
            points.append(Point(len(points), overrides, base.seed + replicate))
    return points


def run_point(tree: Mapping[str, Any], point: Point) -> dict[str, Any]:
    """Run one grid point; a refused or invalid configuration is a row, not an error."""
    from netsim.run import run_tables

    row: dict[str, Any] = {"point": point.index, **point.overrides, "seed": point.seed}
    try:
        config = resolve(tree).with_overrides({**point.overrides, "seed": point.seed})
        tables = run_tables(config)
    except ParamsRefused as exc:
        return {**row, "status": "refused", "reason": str(exc)}
    except ConfigError as exc:
        return {**row, "status": "invalid", "reason": str(exc)}
    return {**row, "status": "ok", "reason": "", **tables.summary}


def _run_local(
    tree: Mapping[str, Any], points: Sequence[Point], workers: int,
    advance: Callable[[], None],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any] | None] = [None] * len(points)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_point, dict(tree), p): p.index for p in points}
        for future in as_completed(futures):
            rows[futures[future]] = future.result()
            advance()
    return [r for r in rows if r is not None]


def _run_ray(
    tree: Mapping[str, Any], points: Sequence[Point], advance: Callable[[], None]
) -> list[dict[str, Any]]:
    import ray

    import netsim
    import protocol
    import slashing
    import verifier

    if not ray.is_initialized():
        roots = (netsim, protocol, slashing, verifier)
        packages = [str(Path(str(m.__file__)).parent) for m in roots]
        ray.init(include_dashboard=False, log_to_driver=False,
                 runtime_env={"py_modules": packages})
    remote = ray.remote(run_point)
    pending = {remote.remote(dict(tree), p): p.index for p in points}
    rows: list[dict[str, Any] | None] = [None] * len(points)
    waiting = list(pending)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        for ref in done:
            rows[pending[ref]] = ray.get(ref)
            advance()
    return [r for r in rows if r is not None]


def use_ray(requested: bool) -> bool:
    return requested or bool(os.environ.get("RAY_ADDRESS"))


def run_sweep(
    tree: Mapping[str, Any],
    axes: Sequence[Axis],
    replicates: int = 1,
    workers: int | None = None,
    ray: bool = False,
    advance: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Every grid point's row, in point order, whichever backend ran them."""
    return run_points(tree, grid_points(tree, axes, replicates), workers, ray, advance)


def run_points(
    tree: Mapping[str, Any],
    points: Sequence[Point],
    workers: int | None = None,
    ray: bool = False,
    advance: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Run any list of points (not only a grid), in point order."""
    if use_ray(ray):
        return _run_ray(tree, points, advance)
    return _run_local(tree, points, workers or os.cpu_count() or 1, advance)


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows to columns; a refused point has null metrics."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    return {name: [row.get(name) for row in rows] for name in names}


SWEEP_PLOTS = ("cheat_gain_per_cheated_job", "detection_per_cheated_job",
               "verification_overhead_pct")


def write_sweep(
    folder: Path,
    base: SimConfig,
    axes: Sequence[Axis],
    rows: Sequence[Mapping[str, Any]],
    seconds: float,
    backend: str,
    plots: bool = True,
) -> None:
    """``config.json``, ``sweep.json`` (grid, revision, backend, time), ``sweep.parquet``, plots."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(base.to_dict(), indent=2) + "\n")
    meta = {
        "grid": {a.name: list(a.values) for a in axes},
        "points": len(rows),
        "git_revision": git_revision(),
        "backend": backend,
        "seconds": round(seconds, 3),
    }
    (folder / "sweep.json").write_text(json.dumps(jsonable(meta), indent=2) + "\n")
    table = sweep_table(rows)
    pq.write_table(pa.table(table), folder / "sweep.parquet", compression="zstd")
    ok = [r for r in rows if r.get("status") == "ok"]
    if plots and ok and len(axes) in (1, 2):
        from netsim.plots import plot_sweep

        names = [a.name for a in axes]
        for metric in SWEEP_PLOTS:
            plot_sweep(folder, names, sweep_table(ok), metric)
