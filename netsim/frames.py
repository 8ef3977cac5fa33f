"""netsim from a notebook: run or sweep a configuration, get pandas data frames back.

::

    import netsim

    result = netsim.run("netsim/examples/small.toml", seeds=10, overrides={"p": 0.05})
    result.summary      # one row per figure: mean, low, high (95 % interval), n, inconclusive
    result.seeds        # one row per seed: its summary
    result.nodes        # one row per node and seed; also .validators, .epochs
    result.warnings     # degeneration warnings, as the command line prints them

    grid = netsim.sweep("netsim/examples/posp.toml",
                        {"p": "0.01:0.2:20", "slash": [2000, 5000]}, seeds=10)
    grid.points         # one row per point: <figure>, <figure>_low, <figure>_high, ...
    grid.runs           # one row per point and seed

``config`` is a TOML path, a TOML tree (a dict) or a :class:`SimConfig`;
``overrides`` take dotted keys or the aliases ``p``, ``slash``, ``R``,
``C``, ``r``, ``q``, ``k`` as on the command line. A grid axis is a list of
values (categorical) or a ``"start:stop:count"`` range. Everything is
checked before anything runs, as on the command line: an unknown key, a
value out of range, a grid over a key that does not exist or zero seeds
raise :class:`ConfigError` naming the key; parameters the ledger refuses
raise :class:`ParamsRefused` from ``run`` and are ``refused`` rows in a
sweep. Nothing is written to disk.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from netsim.config import ConfigError, SimConfig, resolve, set_key
from netsim.grid import axis, grid_points, point_table, run_points
from netsim.simulation import check_seeds, run_seeds
from netsim.tables import SeedTables, is_measured

ConfigSource = str | Path | Mapping[str, Any] | SimConfig


def config_tree(config: ConfigSource, overrides: Mapping[str, object] | None) -> dict[str, Any]:
    """The TOML tree of ``config`` with ``overrides`` set, checked by resolving it."""
    if isinstance(config, SimConfig):
        tree = config.to_dict()
    elif isinstance(config, Mapping):
        tree = dict(config)
    else:
        try:
            tree = tomllib.loads(Path(config).read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config} is not valid TOML: {exc}") from exc
    for key, value in (overrides or {}).items():
        set_key(tree, key, value)
    resolve(tree)
    return tree


@dataclass(frozen=True)
class RunFrames:
    summary: pd.DataFrame
    seeds: pd.DataFrame
    nodes: pd.DataFrame
    validators: pd.DataFrame
    epochs: pd.DataFrame
    warnings: list[str]
    tables: SeedTables
    """Everything else a run holds (the resolved config, per-seed arrays)."""


@dataclass(frozen=True)
class SweepFrames:
    points: pd.DataFrame
    runs: pd.DataFrame


def run(
    config: ConfigSource,
    seeds: int = 1,
    overrides: Mapping[str, object] | None = None,
    path: str | None = None,
) -> RunFrames:
    """Run ``config`` over ``seeds`` seeds on the fast path (or ``path``)."""
    check_seeds(seeds)
    tree = config_tree(config, {**(overrides or {}), **({"path": path} if path else {})})
    runs = run_seeds(resolve(tree), seeds)
    summary = pd.DataFrame(
        [{"figure": name, "mean": e.mean, "low": e.low, "high": e.high, "n": e.n,
          "inconclusive": is_measured(name) and e.inconclusive}
         for name, e in runs.estimates.items()]
    ).set_index("figure")
    return RunFrames(
        summary=summary,
        seeds=pd.DataFrame([{"seed": s, **r.summary}
                            for s, r in zip(runs.seeds, runs.runs, strict=True)]),
        nodes=pd.DataFrame(runs.stacked("nodes")),
        validators=pd.DataFrame(runs.stacked("validators")),
        epochs=pd.DataFrame(runs.stacked("epochs")),
        warnings=runs.warnings,
        tables=runs,
    )


def sweep(
    config: ConfigSource,
    grid: Mapping[str, str | Sequence[Any]],
    seeds: int = 1,
    overrides: Mapping[str, object] | None = None,
    workers: int | None = None,
    ray: bool = False,
) -> SweepFrames:
    """Run every point of ``grid`` (axis name → values or ``"start:stop:count"``) over seeds."""
    check_seeds(seeds)
    if not grid:
        raise ConfigError("a sweep needs at least one grid axis")
    tree = config_tree(config, overrides)
    axes = [axis(name, spec) for name, spec in grid.items()]
    points = grid_points(tree, axes)
    rows = run_points(tree, points, seeds, workers, ray)
    return SweepFrames(points=pd.DataFrame(point_table(rows, axes)), runs=pd.DataFrame(rows))
