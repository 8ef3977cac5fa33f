"""What the protocol's model predicts for one cheated job, to draw next to the measurement.

Proof of Sampling (arXiv 2405.00295) catches a cheated job with probability
p(1−r), r the share of validators colluding with the cheater. Our network
has more in it, and the prediction follows it rule by rule, for the
population as drawn at genesis (everyone bonded):

* the job is sampled with probability p;
* its auditor is uniform over the m validators; it accuses unless it is
  lazy or covers the node (a colluder of the node's group): A accusers;
* the committee is k of the other m − 1 validators, and it confirms FRAUD
  when more than k/2 of them are accusers too (lazy and covering validators
  vote VALID), a hypergeometric draw; with fewer than k others the ledger
  refuses the accusation.

So ``π = p · A/m · P[Hyp(m−1, A−1, k) > k/2]``, which is p(1−r)(1−κ) in the
paper's setting (κ the chance colluders capture the committee). A cheated
job that is not caught saves the node s·C; a caught one costs it the reward
R and the slash S. A committee that the m − A validators voting VALID hold
by a majority (probability ρ = p · A/m · P[Hyp(m−1, m−A, k) > k/2]) slashes
the honest accuser instead, and the cheater, as the wronged node, is paid
W, its share of that slash and of the accuser's forfeited bond (the ledger
splits both, ``slashing.rules``). So the expected gain is
``s·C − π(R + S) + ρW``: the threshold C* of PoSP, lowered by what captured
committees pay the cheater. All of it assumes every validator stays bonded
and every stake covers its slash: when jail, tombstones or slashes thin the
validators, the measurement leaves the prediction, and the run's
degeneration warnings say so.
"""

from __future__ import annotations

import math

import numpy as np

from netsim.behaviour import audit_action
from netsim.population import Population
from protocol.sampling import PPM
from slashing import constants as c


def majority_of(others: int, voters: int, k: int) -> float:
    """P(more than k/2 of a committee of k, drawn from ``others``, are among ``voters``)."""
    if others < k:
        return 0.0
    total = math.comb(others, k)
    return sum(
        math.comb(voters, j) * math.comb(others - voters, k - j)
        for j in range(k // 2 + 1, min(k, voters) + 1)
    ) / total


def accusers(population: Population, node: int) -> int:
    """A: validators that accuse a cheated job of ``node`` and vote FRAUD on it."""
    return sum(
        audit_action(population, v, node, cheated=True, grief=1.0)[0]
        for v in range(population.config.validators)
    )


def catch_probability(population: Population, node: int) -> float:
    """π: the chance that one cheated job of ``node`` ends in a FRAUD verdict."""
    config = population.config
    m, found = config.validators, accusers(population, node)
    if found == 0:
        return 0.0
    p = config.ledger.sample_ppm / PPM
    return p * found / m * majority_of(m - 1, found - 1, config.ledger.committee_size)


def cleared_probability(population: Population, node: int) -> float:
    """ρ: the chance that one cheated job of ``node`` is accused and the committee clears it."""
    config = population.config
    m, found = config.validators, accusers(population, node)
    if found == 0:
        return 0.0
    p = config.ledger.sample_ppm / PPM
    return p * found / m * majority_of(m - 1, m - found, config.ledger.committee_size)


def catch_probabilities(population: Population) -> np.ndarray:
    """π for every node (computed once per kind of coverage, since nodes share it)."""
    cache: dict[int, float] = {}
    out = np.zeros(population.config.nodes)
    for node in range(population.config.nodes):
        group = int(population.node_group[node])
        if group not in cache:
            cache[group] = catch_probability(population, node)
        out[node] = cache[group]
    return out


def cheat_gain(population: Population, node: int, catch: float) -> float:
    """Expected gain of one cheated job over doing it honestly: s·C − π(R + S) + ρW."""
    config = population.config
    ledger = config.ledger
    strategy = int(population.node_strategy[node])
    saving = config.strategies[strategy].saving if strategy >= 0 else 0.0
    loss = ledger.reward + ledger.fraud_slash
    # the pot a false accusation forfeits: the accuser's slash and its escrowed bond
    wronged = ((min(ledger.false_accusation_slash, config.validator_bond) + ledger.accuser_bond)
               * ledger.wronged_node_share_bps // c.BPS)
    cleared = cleared_probability(population, node)
    return saving * float(population.node_cost[node]) - catch * loss + cleared * wronged
