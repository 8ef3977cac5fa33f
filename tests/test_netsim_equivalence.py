"""The fast path is the reference path: same decisions, same money, on any network.

The reference path signs every message and folds it through the real ledger
rules; the fast path keeps balances in arrays. Both name every job by its
real message ids and draw every choice from the same seeded streams, so for
any configuration, as it stands, every per-job column, every final balance
and stake and every table must be equal: on random small networks, and on
every configuration in ``netsim/examples/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsim import jobs
from netsim.config import SimConfig, load_config, resolve
from netsim.fast import run_fast
from netsim.genesis import ParamsRefused
from netsim.population import Population
from netsim.reference import run_reference
from netsim.tables import RunTables
from slashing import LedgerParams
from slashing import constants as c

EXAMPLES = Path(__file__).resolve().parents[1] / "netsim" / "examples"
SLOW_EXAMPLES = {"posp.toml", "bench.toml"}
"""On the reference path posp takes about a minute and bench (10,000 nodes, 1,000,000 signed
jobs) about half an hour of one core and 1.6 GB."""

KINDS = ("cheater", "adaptive", "colluding")


@st.composite
def strategies(draw: st.DrawFn) -> list[dict[str, object]]:
    out = []
    left = 1.0
    for kind in draw(st.lists(st.sampled_from(KINDS), max_size=3)):
        share = draw(st.floats(0.0, left))
        left -= share
        rate = draw(st.floats(0.0, 1.0))
        out.append({
            "kind": kind, "share": share, "rate": rate,
            "saving": draw(st.floats(0.0, 1.0)),
            "step": draw(st.floats(0.0, 0.5)),
            "max_rate": draw(st.floats(rate, 1.0)),
        })
    return out


@st.composite
def ledgers(draw: st.DrawFn) -> dict[str, int]:
    committee_share = draw(st.integers(0, c.BPS))
    reward = draw(st.integers(1, 200))
    sample_ppm = draw(st.integers(50_000, 1_000_000))
    window = draw(st.integers(1, 3))
    # at most what a node at the minimum stake covers with a job a round in flight (p·S·D)
    covered = c.MIN_STAKE[c.NODE] * 1_000_000 // (sample_ppm * (window + 2))
    fraud_slash = draw(st.integers(1, min(covered, c.MIN_STAKE[c.NODE])))
    return {
        "sample_ppm": sample_ppm,
        "committee_size": draw(st.integers(1, 4)),
        "challenge_window": window,
        "reward": reward,
        "compute_cost": 0,
        "collusion_ppm": 0,
        "fraud_slash": fraud_slash,
        "false_accusation_slash": draw(st.integers(1, c.MIN_STAKE[c.VALIDATOR])),
        "verification_fee": draw(st.integers(0, 30)),
        "accuser_share_bps": draw(st.integers(0, c.BPS - committee_share)),
        "committee_share_bps": committee_share,
        "wronged_node_share_bps": draw(st.integers(0, c.BPS - committee_share)),
        "jail_period": draw(st.integers(0, 3)),
        "tombstone_offences": draw(st.integers(1, 4)),
    }


@st.composite
def configs(draw: st.DrawFn) -> SimConfig:
    lazy = draw(st.floats(0.0, 1.0))
    griefing = draw(st.floats(0.0, 1.0 - lazy))
    colluding = draw(st.floats(0.0, 1.0 - lazy - griefing))
    tree = {
        "seed": draw(st.integers(0, 2**32)),
        "epochs": draw(st.integers(1, 5)),
        "jobs": draw(st.integers(0, 40)),
        "arrivals": draw(st.sampled_from(["fixed", "poisson"])),
        "clients": draw(st.integers(1, 3)),
        "canaries": draw(st.sampled_from([0.0, 0.0, 0.1, 0.3])),
        "nodes": {
            "count": draw(st.integers(1, 6)),
            "bond": draw(st.sampled_from([10_000, 14_000, 25_000])),
            "cost": draw(st.floats(0.0, 100.0)),
            "cost_spread": draw(st.floats(0.0, 0.9)),
            "offline": draw(st.floats(0.0, 1.0)),
            "rejoin": draw(st.floats(0.0, 1.0)),
            "strategy": draw(strategies()),
        },
        "validators": {
            "count": draw(st.integers(1, 7)),
            "bond": draw(st.sampled_from([10_000, 12_000, 30_000])),
            "lazy": lazy,
            "griefing": griefing,
            "grief_rate": draw(st.floats(0.0, 1.0)),
            "colluding": colluding,
            "groups": draw(st.integers(1, 2)),
        },
        "ledger": {**dataclasses.asdict(LedgerParams.default()), **draw(ledgers())},
    }
    return resolve(tree)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_fast_path_matches_the_ledger_rules(config: SimConfig) -> None:
    population = Population.draw(config)
    try:
        reference = run_reference(population)
    except ParamsRefused:
        with pytest.raises(ParamsRefused):
            run_fast(population)
        return
    fast = run_fast(population)
    assert reference.differences(fast) == []
    # Tokens are conserved: balances + stakes + burned = minted once every fee is settled
    held = sum(int(a.sum()) for a in (
        fast.node_balance, fast.node_stake, fast.validator_balance, fast.validator_stake,
        fast.client_balance,
    ))
    assert held + fast.total_burned + fast.operator == fast.minted


def test_every_protocol_branch_is_reached_and_matches() -> None:
    """A hand-picked network where cheats are caught, griefers slashed, committees refused."""
    tree = {
        "seed": 11, "epochs": 10, "jobs": 200, "canaries": 0.1,
        "nodes": {"count": 6, "bond": 14_000, "offline": 0.2, "rejoin": 0.5, "cost_spread": 0.3,
                  "strategy": [{"kind": "cheater", "share": 0.34, "rate": 0.7},
                               {"kind": "adaptive", "share": 0.17, "rate": 0.1, "step": 0.3},
                               {"kind": "colluding", "share": 0.17, "rate": 0.9}]},
        "validators": {"count": 6, "bond": 12_000, "lazy": 0.17, "griefing": 0.17,
                       "grief_rate": 0.6, "colluding": 0.34},
        "ledger": {"sample_ppm": 500_000, "committee_size": 2, "jail_period": 1,
                   "tombstone_offences": 2, "fraud_slash": 3_000},
    }
    population = Population.draw(resolve(tree))
    reference, fast = run_reference(population), run_fast(population)
    assert reference.differences(fast) == []
    assert set(np.unique(fast.verdict)) >= {0, 1, 2}
    assert fast.node_slashed_out.any() and fast.validator_slashed_out.any()


def assert_same_tables(a: RunTables, b: RunTables) -> None:
    for name in ("nodes", "validators", "epochs"):
        mine, theirs = getattr(a, name), getattr(b, name)
        assert list(mine) == list(theirs), name
        for column in mine:
            assert np.array_equal(mine[column], theirs[column]), f"{name}.{column}"
    assert str(a.summary) == str(b.summary)  # NaN-safe equality of every figure
    assert a.warnings == b.warnings


@pytest.mark.parametrize(
    "example",
    [pytest.param(p.name, marks=pytest.mark.slow) if p.name in SLOW_EXAMPLES else p.name
     for p in sorted(EXAMPLES.glob("*.toml"))],
)
def test_every_example_gives_the_same_tables_on_both_paths(example: str) -> None:
    """The examples as written, with their defaults: no setting makes the paths agree."""
    population = Population.draw(load_config(EXAMPLES / example))
    reference, fast = run_reference(population), run_fast(population)
    assert reference.differences(fast) == []
    assert_same_tables(RunTables.of(population, reference), RunTables.of(population, fast))


def test_default_configuration_gives_the_same_tables_on_both_paths() -> None:
    """An empty TOML file: every default."""
    population = Population.draw(resolve({}))
    reference, fast = run_reference(population), run_fast(population)
    assert reference.differences(fast) == []
    assert_same_tables(RunTables.of(population, reference), RunTables.of(population, fast))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**63 - 1), st.integers(0, 5), st.booleans(), st.integers(1, 4))
def test_job_ids_are_the_real_message_ids(index: int, node: int, cheated: bool,
                                          clients: int) -> None:
    """The fast path's template bytes give the content ids of the messages the ledger sees."""
    population = Population.draw(resolve({"clients": clients, "nodes": {"count": 6}}))
    ids = jobs.JobIds(population)
    assert ids.ids(index, node, cheated) == jobs.message_ids(population, index, node, cheated)
