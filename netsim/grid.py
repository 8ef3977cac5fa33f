"""Parameter sweeps: a grid of configurations over seeds, run on a process pool or on Ray.

``--grid p=0.001:0.2:20`` is 20 evenly spaced values from 0.001 to 0.2
inclusive, a continuous axis; ``--grid slash=1000,5000,9000`` lists values,
a categorical axis (plots space them evenly and label each). The sweep is
the Cartesian product of the axes; each point runs with ``seeds`` seeds
(seed, seed+1, …). Every point's configuration is resolved before anything
runs, so a grid over a key that does not exist, or a value out of range, is
refused up front with the key named.

Each (point, seed) is one independent run and one row of the runs table:
the axis values, the seed, a status (``ok``, or ``refused`` with the
ledger's reason when ``SetParams`` refuses the parameters), the run's
degeneration warnings and its summary. :func:`point_table` folds the seeds
of each point into means and 95 % intervals (:mod:`netsim.intervals`), the
point's effective sample and its warnings. Rows are ordered by point and
seed, never by completion, so the tables are the same on any backend and
any number of workers.

Backends: a local ``ProcessPoolExecutor`` by default (as cadCAD/radCAD run
locally), or Ray with ``ray=True`` or ``RAY_ADDRESS`` set. When netsim
starts Ray itself it ships netsim and the packages it imports to the workers
with ``runtime_env.py_modules``, so a cluster needs only the third-party
dependencies installed; a caller that has already called ``ray.init`` keeps
its own runtime environment.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netsim import degeneration
from netsim.config import ALIASES, ConfigError, SimConfig, parse_value, resolve, set_key
from netsim.genesis import ParamsRefused
from netsim.intervals import estimate
from netsim.simulation import check_seeds, run_tables
from netsim.tables import figures, is_measured


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[Any, ...]
    categorical: bool
    """Listed values (drawn evenly spaced, each labelled) rather than a numeric range."""


def parse_axis(text: str) -> Axis:
    """``name=start:stop:count`` or ``name=v1,v2,...``."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise ConfigError(f"--grid wants name=start:stop:count or name=v1,v2,..., got {text!r}")
    return axis(name, spec)


def axis(name: str, spec: str | Sequence[Any]) -> Axis:
    """An axis from a ``start:stop:count`` or ``v1,v2`` spec, or from a list of values."""
    if not isinstance(spec, str):
        values = tuple(v.item() if isinstance(v, np.generic) else v for v in spec)
        if not values:
            raise ConfigError(f"grid {name}: no values")
        return Axis(name=name, values=values, categorical=True)
    if ":" not in spec:
        return Axis(name=name, values=tuple(parse_value(v.strip()) for v in spec.split(",")),
                    categorical=True)
    parts = spec.split(":")
    if len(parts) != 3:
        raise ConfigError(f"--grid {name}: a range is start:stop:count, got {spec!r}")
    try:
        start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ConfigError(f"--grid {name}: {spec!r} is not start:stop:count") from None
    if count < 1 or not (math.isfinite(start) and math.isfinite(stop)):
        raise ConfigError(f"--grid {name}: count must be at least 1, bounds finite")
    values = tuple(float(v) for v in np.linspace(start, stop, count))
    return Axis(name=name, values=values, categorical=False)


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


def point_config(tree: Mapping[str, Any], overrides: Mapping[str, Any]) -> SimConfig:
    """The configuration of one grid point: the TOML tree with the point's values set."""
    changed = resolve(tree).to_dict()
    for key, value in overrides.items():
        set_key(changed, key, value)
    return resolve(changed)


def grid_points(tree: Mapping[str, Any], axes: Sequence[Axis]) -> list[Point]:
    """Every point of the grid, each resolved once here so a bad one stops the sweep unrun."""
    base = resolve(tree)
    resolved = base.to_dict()
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ConfigError(f"--grid names a key twice: {names}")
    integer = {a.name: _is_integer_key(resolved, a.name) for a in axes}
    points: list[Point] = []
    for combo in itertools.product(*(a.values for a in axes)):
        overrides = {
            a.name: round(v) if integer[a.name] and isinstance(v, float) else v
            for a, v in zip(axes, combo, strict=True)
        }
        try:
            point_config(tree, overrides)
        except ConfigError as exc:
            where = ", ".join(f"{k}={v}" for k, v in overrides.items())
            raise ConfigError(f"grid point {where}: {exc}") from None
        points.append(Point(len(points), overrides))
    return points


def run_point(tree: Mapping[str, Any], point: Point, seed: int) -> dict[str, Any]:
    """Run one grid point with one seed; a refused configuration is a row, not an error."""
    row: dict[str, Any] = {"point": point.index, **point.overrides, "seed": seed}
    config = point_config(tree, {**point.overrides, "seed": seed})
    try:
        tables = run_tables(config)
    except ParamsRefused as exc:
        return {**row, "status": "refused", "reason": str(exc), "warnings": ""}
    return {**row, "status": "ok", "reason": "", "warnings": "; ".join(tables.warnings),
            **tables.summary}


Task = tuple[Point, int]


def _run_local(
    tree: Mapping[str, Any], tasks: Sequence[Task], workers: int,
    advance: Callable[[], None],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    if workers == 1:
        for i, (point, seed) in enumerate(tasks):
            rows[i] = run_point(tree, point, seed)
            advance()
        return [r for r in rows if r is not None]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_point, dict(tree), p, s): i for i, (p, s) in enumerate(tasks)}
        for future in as_completed(futures):
            rows[futures[future]] = future.result()
            advance()
    return [r for r in rows if r is not None]


def _run_ray(
    tree: Mapping[str, Any], tasks: Sequence[Task], advance: Callable[[], None]
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
    pending = {remote.remote(dict(tree), p, s): i for i, (p, s) in enumerate(tasks)}
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
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
    seeds: int = 1,
    workers: int | None = None,
    ray: bool = False,
    advance: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Every (point, seed) row, in point then seed order, whichever backend ran them."""
    return run_points(tree, grid_points(tree, axes), seeds, workers, ray, advance)


def run_points(
    tree: Mapping[str, Any],
    points: Sequence[Point],
    seeds: int = 1,
    workers: int | None = None,
    ray: bool = False,
    advance: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Run any list of points (not only a grid) with ``seeds`` seeds each, in order."""
    first = resolve(tree).seed
    tasks = [(p, first + s) for p in points for s in range(check_seeds(seeds))]
    if use_ray(ray):
        return _run_ray(tree, tasks, advance)
    return _run_local(tree, tasks, workers or os.cpu_count() or 1, advance)


def columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows to columns; a key missing from a row (a refused point's figures) is null."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    return {name: [row.get(name) for row in rows] for name in names}


def point_table(
    rows: Sequence[Mapping[str, Any]], axes: Sequence[Axis]
) -> list[dict[str, Any]]:
    """One row per point: axis values, status, seeds, effective sample, warnings, and
    each figure's mean with its 95 % interval as ``<figure>``, ``_low`` and ``_high``."""
    by_point: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_point.setdefault(int(row["point"]), []).append(row)
    out = []
    for index, group in by_point.items():
        head = {"point": index, **{a.name: group[0][a.name] for a in axes}}
        ok = [r for r in group if r["status"] == "ok"]
        if not ok:
            out.append({**head, "status": group[0]["status"], "reason": group[0]["reason"],
                        "seeds": 0, "effective_sample": 0, "warnings": "", "inconclusive": ""})
            continue
        warnings = [f"seed {r['seed']}: {w}" for r in ok for w in r["warnings"].split("; ") if w]
        warnings += degeneration.sample_warning(ok)
        stats: dict[str, Any] = {}
        inconclusive = []
        for name in [f for f in figures(ok[0]) if f not in head and f != "seed"]:
            found = estimate(r[name] for r in ok)
            stats[name], stats[f"{name}_low"], stats[f"{name}_high"] = (
                found.mean, found.low, found.high)
            if is_measured(name) and found.inconclusive:
                inconclusive.append(name)
        out.append({**head, "status": "ok", "reason": "", "seeds": len(ok),
                    "effective_sample": degeneration.effective_sample(ok),
                    "warnings": "; ".join(warnings), "inconclusive": ", ".join(inconclusive),
                    **stats})
    return out
