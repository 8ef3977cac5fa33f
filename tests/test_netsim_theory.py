"""netsim's predictions and estimators: catch probability with r, Kaplan–Meier, captions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netsim.config import resolve
from netsim.metrics import caught_within
from netsim.plots import parameters
from netsim.population import Population
from netsim.theory import (
    catch_probabilities,
    catch_probability,
    cheat_gain,
    cleared_probability,
)


def colluding_network(r: float, validators: int = 20, lazy: float = 0.0,
                      k: int = 3) -> Population:
    return Population.draw(resolve({
        "nodes": {"count": 4, "strategy": [
            {"kind": "colluding", "share": 0.5, "rate": 1.0},
            {"kind": "cheater", "share": 0.5, "rate": 1.0, "saving": 0.5},
        ]},
        "validators": {"count": validators, "colluding": r, "lazy": lazy},
        "ledger": {"sample_ppm": 100_000, "committee_size": k, "compute_cost": 1,
                   "collusion_ppm": 0},
    }))


def honest_majority(others: int, against: int, k: int) -> float:
    """P(at most k//2 of k drawn from ``others`` are among ``against``): the paper's 1−κ."""
    return sum(math.comb(against, j) * math.comb(others - against, k - j)
               for j in range(0, k // 2 + 1)) / math.comb(others, k)


@pytest.mark.parametrize("r", [0.0, 0.1, 0.3, 0.5])
def test_catch_probability_is_p_times_one_minus_r_times_committee(r: float) -> None:
    """PoSP's p(1−r), times the chance colluders do not hold the committee (1−κ)."""
    population = colluding_network(r)
    colluders = round(r * 20)
    expected = 0.1 * (1 - colluders / 20) * honest_majority(19, colluders, 3)
    assert catch_probability(population, 0) == pytest.approx(expected)
    # A cheater outside the colluding group is caught by every validator
    assert catch_probability(population, 3) == pytest.approx(0.1)


def test_lazy_validators_and_tiny_committees_lower_the_catch() -> None:
    lazy = colluding_network(0.0, lazy=0.25)
    assert catch_probability(lazy, 3) == pytest.approx(0.1 * 0.75 * honest_majority(19, 5, 3))
    # Fewer other validators than the committee needs: every accusation is refused
    assert catch_probability(colluding_network(0.0, validators=3, k=3), 3) == 0.0
    per_node = catch_probabilities(colluding_network(0.3))
    assert per_node[0] == per_node[1] < per_node[2] == per_node[3]


def test_cheat_gain_is_saving_minus_expected_loss_plus_cleared_payments() -> None:
    """s·C − π(R+S), plus ρW: a captured committee pays the cheater the wronged node's share."""
    population = colluding_network(0.3)
    config = population.config
    loss = config.ledger.reward + config.ledger.fraud_slash
    pi = catch_probability(population, 3)
    assert cleared_probability(population, 3) == 0.0
    assert cheat_gain(population, 3, pi) == pytest.approx(0.5 * config.cost - pi * loss)
    colluders = 6
    rho = 0.1 * (14 / 20) * (1 - honest_majority(19, colluders, 3))
    assert cleared_probability(population, 0) == pytest.approx(rho)
    # the slash and the forfeited accuser bond, as slashing.rules splits them
    wronged = (2_000 + 1_000) * 4_000 // 10_000
    assert config.ledger.accuser_bond == 1_000
    pi = catch_probability(population, 0)
    assert cheat_gain(population, 0, pi) == pytest.approx(
        1.0 * config.cost - pi * loss + rho * wronged)


def test_kaplan_meier_keeps_uncaught_cheaters_out_of_the_count_once_they_stop() -> None:
    caught_at = np.array([1, 3, -1, -1])
    cheats = np.array([5, 5, 2, 10])
    curve = caught_within(caught_at, cheats, 12)
    assert curve[:3] == pytest.approx([0.25, 0.25, 1 - 0.75 * 0.5])
    assert curve[9] == pytest.approx(0.625) and math.isnan(curve[10])
    everyone = caught_within(np.array([2, 1]), np.array([4, 4]), 5)
    assert list(everyone) == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_captions_state_the_parameters() -> None:
    config = colluding_network(0.1).config
    text = parameters(config, (7, 8, 9))
    assert "p = 0.1" in text and "r = 0.1" in text and "k = 3" in text
    assert "3 seeds 7–9, 95 % Student-t interval over seeds" in text
    assert "colluding: 50% of nodes, q = 1" in text
    swept = parameters(config, (7,), ["p", "validators.colluding"])
    assert "p swept" in swept and "r swept" in swept and "seed 7" in swept
