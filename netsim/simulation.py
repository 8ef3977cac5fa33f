"""One simulation: draw the population, run the configured protocol path, tabulate.

:func:`run_seeds` repeats a configuration over consecutive seeds, the unit
behind every interval netsim reports.
"""

from __future__ import annotations

from collections.abc import Callable

from netsim.config import ConfigError, SimConfig
from netsim.fast import run_fast
from netsim.genesis import check_params
from netsim.outcome import Outcome
from netsim.population import Population
from netsim.reference import run_reference
from netsim.tables import RunTables, SeedTables

MAX_SEEDS = 10_000


def simulate_population(
    population: Population, on_epoch: Callable[[int], None] | None = None
) -> Outcome:
    """Run on the configured path; both name and draw every job the same way."""
    if population.config.path == "reference":
        return run_reference(population, on_epoch)
    return run_fast(population, on_epoch)


def simulate(config: SimConfig, on_epoch: Callable[[int], None] | None = None) -> Outcome:
    return simulate_population(Population.draw(config), on_epoch)


def run_tables(config: SimConfig, on_epoch: Callable[[int], None] | None = None) -> RunTables:
    population = Population.draw(config)
    return RunTables.of(population, simulate_population(population, on_epoch))


def check_seeds(seeds: object, name: str = "seeds") -> int:
    """The number of seeds, refused with a message naming ``name`` unless 1..MAX_SEEDS."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"{name} must be an integer in 1..{MAX_SEEDS}, got {seeds!r}")
    return seeds


def seed_list(config: SimConfig, seeds: int) -> tuple[int, ...]:
    return tuple(range(config.seed, config.seed + check_seeds(seeds)))


def run_seeds(
    config: SimConfig, seeds: int, on_epoch: Callable[[int], None] | None = None
) -> SeedTables:
    """The configuration with seeds ``config.seed`` … ``config.seed + seeds − 1``, in order.

    The parameters are put to the ledger before any seed runs, so a refusal
    comes before any work.
    """
    chosen = seed_list(config, seeds)
    check_params(config)
    runs = tuple(run_tables(config.with_overrides({"seed": s}), on_epoch) for s in chosen)
    return SeedTables(config=config, seeds=chosen, runs=runs)
