"""What the agents choose: job arrivals and routing, cheating, audits, votes, churn.

This is the model of the people, not of the protocol, and both protocol
paths call exactly these functions with the same inputs, so that a
difference between the paths can only come from the protocol. Each epoch
draws from its own seed-sequence stream ``[seed, EPOCH_STREAM, epoch]``,
so what happens in one epoch never shifts another's draws.

Behaviours, as the issue defines them:

* honest node: always runs the requested model.
* cheater: runs a cheaper model on a job with probability q (``rate``),
  saving ``saving`` × C.
* adaptive cheater: q grows by ``step`` for every epoch in a row in which
  none of its jobs was sampled, and falls back to ``rate`` once one is.
* colluding node: a cheater whose group's validators cover for it.
* colluding validator: attests VALID on its own group's jobs and votes VALID
  in their disputes, without re-executing; honest towards everyone else.
* lazy validator: attests and votes VALID without re-executing.
* griefing validator: re-executes, but on honest work files false FRAUD
  evidence with probability ``grief_rate``; votes honestly.
* churn: an online node goes offline with probability ``offline`` per epoch
  and an offline one rejoins with probability ``rejoin``; offline nodes get
  no new jobs, and audits of jobs they already served happen in the epoch
  the job was served, before the node can leave.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netsim.population import COLLUDING, GRIEFING, LAZY, NO_GROUP, Population
from protocol.messages import Verdict

ARRIVALS_STREAM = 1
EPOCH_STREAM = 2


def arrivals(population: Population) -> np.ndarray:
    """Jobs arriving in each epoch: an even split, or Poisson with the same mean."""
    config = population.config
    if config.arrivals == "poisson":
        rng = np.random.default_rng([config.seed, ARRIVALS_STREAM])
        return rng.poisson(config.jobs / config.epochs, config.epochs).astype(np.int64)
    counts = np.full(config.epochs, config.jobs // config.epochs, dtype=np.int64)
    counts[: config.jobs % config.epochs] += 1
    return counts


@dataclass(frozen=True)
class EpochDraw:
    """One epoch's choices: who serves each job, who cheats, the griefers' coins, churn."""

    node: np.ndarray
    cheated: np.ndarray
    grief: np.ndarray
    churn: np.ndarray
    canaries: int = 0
    """Canary jobs the operator plants this epoch (recorded the next)."""


def cheat_rates(population: Population, streak: np.ndarray) -> np.ndarray:
    """Each node's chance of cheating on its next job, given its unsampled streak."""
    rates = np.zeros(population.config.nodes)
    for index, strategy in enumerate(population.config.strategies):
        mine = population.node_strategy == index
        rate = strategy.rate
        if strategy.kind == "adaptive":
            rates[mine] = np.minimum(strategy.max_rate, rate + strategy.step * streak[mine])
        else:
            rates[mine] = rate
    return rates


def draw_epoch(
    population: Population, epoch: int, jobs: int, active: np.ndarray, streak: np.ndarray
) -> EpochDraw:
    """Route ``jobs`` uniformly to active nodes and decide which are cheated."""
    config = population.config
    rng = np.random.default_rng([config.seed, EPOCH_STREAM, epoch])
    candidates = np.flatnonzero(active)
    if len(candidates) == 0:
        jobs = 0
        candidates = np.zeros(1, dtype=np.int64)
    node = candidates[rng.integers(0, len(candidates), jobs)]
    cheated = rng.random(jobs) < cheat_rates(population, streak)[node]
    grief = rng.random(jobs)
    churn = rng.random(config.nodes)
    canaries = int(rng.binomial(jobs, config.canaries)) if config.canaries else 0
    return EpochDraw(node=node, cheated=cheated, grief=grief, churn=churn, canaries=canaries)


def next_online(population: Population, online: np.ndarray, churn: np.ndarray) -> np.ndarray:
    config = population.config
    return np.where(online, churn >= config.offline, churn < config.rejoin)


def next_streak(
    population: Population, streak: np.ndarray, node: np.ndarray, sampled: np.ndarray
) -> np.ndarray:
    """Epochs in a row each node served jobs and saw none of them sampled."""
    n = population.config.nodes
    served = np.bincount(node, minlength=n) > 0
    seen = np.bincount(node[sampled], minlength=n) > 0
    return np.where(seen, 0, np.where(served, streak + 1, streak))


def covers(population: Population, validator: int, node: int) -> bool:
    """A colluding validator covering a node of its own group."""
    group = population.validator_group[validator]
    return (
        population.validator_kind[validator] == COLLUDING
        and group != NO_GROUP
        and node >= 0  # not a canary: those belong to no group
        and group == population.node_group[node]
    )


def audit_action(
    population: Population, validator: int, node: int, cheated: bool, grief: float
) -> tuple[bool, bool]:
    """(accuse?, re-executed?) for the validator drawn to audit a sampled job."""
    kind = population.validator_kind[validator]
    if kind == LAZY or covers(population, validator, node):
        return False, False
    if kind == GRIEFING:
        return cheated or grief < population.config.grief_rate, True
    return cheated, True


def committee_vote(
    population: Population, validator: int, node: int, cheated: bool
) -> tuple[Verdict, bool]:
    """(verdict, re-executed?) of a committee member in a dispute over the node's job."""
    if population.validator_kind[validator] == LAZY or covers(population, validator, node):
        return Verdict.VALID, False
    return (Verdict.FRAUD if cheated else Verdict.VALID), True
