"""One simulation: draw the population, run the configured protocol path, tabulate."""

from __future__ import annotations

from collections.abc import Callable

from netsim.config import SimConfig
from netsim.fast import run_fast
from netsim.outcome import Outcome
from netsim.population import Population
from netsim.reference import run_reference
from netsim.tables import RunTables


def simulate_population(
    population: Population, on_epoch: Callable[[int], None] | None = None
) -> Outcome:
    """Run on the configured path; the reference path always uses real message ids."""
    if population.config.path == "reference":
        return run_reference(population, on_epoch)
    return run_fast(population, on_epoch)


def simulate(config: SimConfig, on_epoch: Callable[[int], None] | None = None) -> Outcome:
    return simulate_population(Population.draw(config), on_epoch)


def run_tables(config: SimConfig, on_epoch: Callable[[int], None] | None = None) -> RunTables:
    population = Population.draw(config)
    return RunTables.of(population, simulate_population(population, on_epoch))
