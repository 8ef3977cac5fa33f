"""A run's tables: per node, per validator, per epoch, and the summary figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netsim import metrics
from netsim.outcome import Outcome
from netsim.population import Population


@dataclass(frozen=True)
class RunTables:
    nodes: metrics.Table
    validators: metrics.Table
    epochs: metrics.Table
    summary: dict[str, Any]

    @classmethod
    def of(cls, population: Population, outcome: Outcome) -> RunTables:
        nodes = metrics.node_table(population, outcome)
        validators = metrics.validator_table(population, outcome)
        return cls(
            nodes=nodes,
            validators=validators,
            epochs=metrics.epoch_table(population, outcome),
            summary=metrics.summary(population, outcome, nodes, validators),
        )
