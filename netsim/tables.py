"""A run's tables: per node, per validator, per epoch, the summary figures and warnings.

:class:`SeedTables` holds one configuration run over several seeds: its
tables stacked with a ``seed`` column, one summary row per seed, and every
summary figure's mean and 95 % interval over the seeds
(:mod:`netsim.intervals`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from netsim import degeneration, metrics
from netsim.config import SimConfig
from netsim.intervals import Estimate, estimate
from netsim.outcome import Outcome
from netsim.population import Population

THEORY_PREFIX = "theory_"
"""Summary figures that are predictions, not measurements: never called inconclusive."""


@dataclass(frozen=True)
class RunTables:
    nodes: metrics.Table
    validators: metrics.Table
    epochs: metrics.Table
    summary: dict[str, Any]
    warnings: tuple[str, ...]

    @classmethod
    def of(cls, population: Population, outcome: Outcome) -> RunTables:
        nodes = metrics.node_table(population, outcome)
        validators = metrics.validator_table(population, outcome)
        epochs = metrics.epoch_table(population, outcome)
        summary = metrics.summary(population, outcome, nodes, validators)
        return cls(
            nodes=nodes,
            validators=validators,
            epochs=epochs,
            summary=summary,
            warnings=tuple(degeneration.run_warnings(epochs, summary)),
        )


def figures(summary: Mapping[str, Any]) -> list[str]:
    """The numeric summary figures (``conserved`` is a check, not a figure)."""
    return [k for k, v in summary.items()
            if isinstance(v, int | float | np.number) and not isinstance(v, bool)]


def estimates(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Estimate]:
    """Each figure's mean and 95 % interval over the seeds' summaries."""
    return {name: estimate(s[name] for s in summaries) for name in figures(summaries[0])}


def is_measured(name: str) -> bool:
    return not name.startswith(THEORY_PREFIX)


@dataclass(frozen=True)
class SeedTables:
    """One configuration over seeds ``config.seed``, ``config.seed + 1``, …"""

    config: SimConfig
    seeds: tuple[int, ...]
    runs: tuple[RunTables, ...]

    def stacked(self, name: str) -> metrics.Table:
        """The ``nodes``, ``validators`` or ``epochs`` tables of all seeds, with a seed column."""
        tables = [getattr(run, name) for run in self.runs]
        lengths = [len(next(iter(t.values()))) for t in tables]
        out: metrics.Table = {
            "seed": np.repeat(np.array(self.seeds, dtype=np.int64), lengths)
        }
        for column in tables[0]:
            out[column] = np.concatenate([t[column] for t in tables])
        return out

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [run.summary for run in self.runs]

    @cached_property
    def estimates(self) -> dict[str, Estimate]:
        return estimates(self.summaries)

    @property
    def conserved(self) -> bool:
        """Tokens conserved in every seed's run."""
        return all(run.summary["conserved"] for run in self.runs)

    @property
    def inconclusive(self) -> list[str]:
        """Measured figures whose interval holds zero strictly inside."""
        return [k for k, e in self.estimates.items() if is_measured(k) and e.inconclusive]

    @property
    def warnings(self) -> list[str]:
        """Each seed's degeneration warnings, then the effective-sample check."""
        out = [f"seed {seed}: {w}" for seed, run in zip(self.seeds, self.runs, strict=True)
               for w in run.warnings]
        return out + degeneration.sample_warning(self.summaries)
