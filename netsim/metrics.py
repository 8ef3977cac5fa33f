"""From an outcome to the tables researchers read: per node, per validator, per epoch.

Definitions (C is a job's compute cost on its node, R = fee − verification
fee is what a node earns for one settled job, s a cheater's saving):

* compute: what a node spent, C per honest job and (1 − s)·C per cheated one;
  a validator spends ``nodes.cost`` per re-execution.
* profit: income − compute − stake slashed.
* cheat gain: a node's profit minus what the same jobs would have earned
  done honestly, ``Σ (R − C)``. Per cheated job its expectation is
  ``s·C − P(caught)·(R + S)``, which Proof of Sampling (arXiv 2405.00295)
  says must be negative: ``p(1−r)(R+S) > C`` when s = 1.
* time to detection: epochs from a cheater's first cheat to the first
  FRAUD verdict against it; cheats to detection counts its cheated jobs up
  to and including the one caught.
* honest false slashes: slashes of a party that told the truth: FRAUD
  confirmed on an honest job, or an accuser slashed for reporting a real cheat.
* verification overhead: validators' re-execution compute as a percentage
  of the jobs' honest compute (full replication is 100 %).
* fee per valid job: what clients paid, net of refunds and returned
  verification fees, per job whose output was correct.
* theory: :mod:`netsim.theory`'s prediction of detection and gain per
  cheated job, weighted by how often each node actually cheated.
* unserved jobs: arrived in an epoch in which no node was active;
  unaudited samples: sampled jobs no bonded validator was left to audit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netsim import theory
from netsim.behaviour import arrivals
from netsim.outcome import FRAUD, INCONCLUSIVE, REFUSED, VALID, Outcome
from netsim.population import HONEST, Population

Table = dict[str, np.ndarray]


def _spend(population: Population, outcome: Outcome) -> np.ndarray:
    savings = np.array([s.saving for s in population.config.strategies] + [0.0])
    saving = savings[population.node_strategy[outcome.node]]
    return np.asarray(outcome.cost * np.where(outcome.cheated, 1.0 - saving, 1.0))


def _first(mask: np.ndarray, key: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
    """For each group, the smallest ``key`` among rows where ``mask`` holds, else -1."""
    out = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(out, groups[mask], key[mask])
    return np.where(out == np.iinfo(np.int64).max, -1, out)


def node_table(population: Population, outcome: Outcome) -> Table:
    config = population.config
    n, nodes = config.nodes, outcome.node
    reward = config.fee - config.ledger.verification_fee
    spend = _spend(population, outcome)
    order = np.arange(len(nodes), dtype=np.int64)

    def per_node(values: np.ndarray) -> np.ndarray:
        return np.bincount(nodes, weights=values, minlength=n)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(nodes[mask], minlength=n).astype(np.int64)

    income = np.zeros(n, dtype=np.int64)
    np.add.at(income, nodes, outcome.node_income)
    slashed = np.int64(config.node_bond) - outcome.node_stake
    compute = per_node(spend)
    profit = income - compute - slashed
    jobs = count(np.ones(len(nodes), dtype=bool))
    honest_equivalent = jobs * reward - per_node(outcome.cost)
    first_cheat = _first(outcome.cheated, order, nodes, n)
    caught = _first(outcome.verdict == FRAUD, order, nodes, n)
    detected = caught >= 0
    first_epoch = np.where(first_cheat >= 0, outcome.epoch[np.maximum(first_cheat, 0)], -1)
    caught_epoch = np.where(detected, outcome.epoch[np.maximum(caught, 0)], -1)
    cheated_rows = np.flatnonzero(outcome.cheated)
    owner = nodes[cheated_rows]
    cheats_before = np.bincount(owner[cheated_rows <= caught[owner]], minlength=n)
    return {
        "node": np.arange(n, dtype=np.int64),
        "kind": np.array(population.node_kind, dtype=object),
        "group": population.node_group,
        "cost": population.node_cost,
        "jobs": jobs,
        "cheated": count(outcome.cheated),
        "sampled": count(outcome.sampled),
        "caught": count(outcome.verdict == FRAUD),
        "falsely_accused": count(outcome.verdict == VALID),
        "income": income,
        "compute": compute,
        "slashed": slashed.astype(np.int64),
        "profit": profit,
        "cheat_gain": profit - honest_equivalent,
        "stake": outcome.node_stake,
        "balance": outcome.node_balance,
        "slashed_out": outcome.node_slashed_out,
        "first_cheat_epoch": first_epoch.astype(np.int64),
        "detected_epoch": caught_epoch.astype(np.int64),
        "time_to_detection": np.where(detected, caught_epoch - first_epoch, -1).astype(np.int64),
        "cheats_to_detection": np.where(detected, cheats_before, -1).astype(np.int64),
    }


def caught_within(caught_at: np.ndarray, cheats: np.ndarray, most: int) -> np.ndarray:
    """P(a cheater is caught within n of its cheated jobs), n = 1..most.

    The Kaplan–Meier estimate (Kaplan and Meier, JASA 53, 1958): a cheater
    that stopped cheating uncaught (jailed, offline, out of jobs) leaves the
    risk set instead of counting as never caught. ``caught_at`` is the cheat
    on which each cheater was caught (-1: never), ``cheats`` how many jobs
    it cheated on. Once every cheater is caught the estimate stays 1; past
    the last cheater still cheating uncaught it is undefined (NaN).
    """
    out = np.full(most, np.nan)
    surviving = 1.0
    for n in range(1, most + 1):
        at_risk = int(((caught_at >= n) | ((caught_at < 0) & (cheats >= n))).sum())
        if at_risk == 0:
            if surviving == 0.0:
                out[n - 1:] = 1.0
            break
        surviving *= 1.0 - int((caught_at == n).sum()) / at_risk
        out[n - 1] = 1.0 - surviving
    return out


def validator_table(population: Population, outcome: Outcome) -> Table:
    config = population.config
    m = config.validators
    audited = outcome.auditor >= 0
    accusers = outcome.auditor[audited & outcome.accused]
    false = outcome.auditor[audited & outcome.accused & (outcome.verdict == VALID)]
    compute = outcome.validator_reexecutions * config.cost
    slashed = np.int64(config.validator_bond) - outcome.validator_stake
    return {
        "validator": np.arange(m, dtype=np.int64),
        "kind": np.array(population.validator_kind, dtype=object),
        "group": population.validator_group,
        "audits": outcome.validator_audits,
        "reexecutions": outcome.validator_reexecutions,
        "accusations": np.bincount(accusers, minlength=m).astype(np.int64),
        "false_accusations": np.bincount(false, minlength=m).astype(np.int64),
        "income": outcome.validator_balance,
        "compute": compute.astype(np.float64),
        "slashed": slashed.astype(np.int64),
        "profit": outcome.validator_balance - compute - slashed,
        "stake": outcome.validator_stake,
        "slashed_out": outcome.validator_slashed_out,
    }


def epoch_table(population: Population, outcome: Outcome) -> Table:
    config = population.config
    e = config.epochs
    epochs = outcome.epoch
    reward = config.fee - config.ledger.verification_fee
    spend = _spend(population, outcome)
    cheater = population.node_strategy[outcome.node] >= 0

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(epochs, weights=values, minlength=e)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(epochs[mask], minlength=e).astype(np.int64)

    job_profit = outcome.node_income - spend - outcome.node_slash
    honest_cost = total(outcome.cost)
    valid_jobs = count(~outcome.cheated)
    with np.errstate(invalid="ignore", divide="ignore"):
        overhead = np.where(
            honest_cost > 0, 100.0 * total(outcome.reexecutions * config.cost) / honest_cost, 0.0
        )
        fee_per_valid = np.where(
            valid_jobs > 0, total(outcome.client_cost) / np.maximum(valid_jobs, 1), 0.0
        )
    false_slash = ((outcome.verdict == FRAUD) & ~outcome.cheated) | (
        (outcome.verdict == VALID) & outcome.cheated
    )
    return {
        "epoch": np.arange(e, dtype=np.int64),
        "online": outcome.online,
        "active": outcome.active,
        "auditors": outcome.auditors,
        "arrived": arrivals(population),
        "jobs": count(np.ones(len(epochs), dtype=bool)),
        "cheated": count(outcome.cheated),
        "sampled": count(outcome.sampled),
        "accusations": count(outcome.accused),
        "fraud": count(outcome.verdict == FRAUD),
        "false_accusations": count(outcome.verdict == VALID),
        "inconclusive": count(outcome.verdict == INCONCLUSIVE),
        "refused": count(outcome.verdict == REFUSED),
        "honest_false_slashes": count(false_slash),
        "cheater_profit": total(np.where(cheater, job_profit, 0.0)),
        "cheat_gain": total(np.where(cheater, job_profit - (reward - outcome.cost), 0.0)),
        "verification_overhead_pct": overhead,
        "fee_per_valid_job": fee_per_valid,
        "validator_profit": total(
            outcome.validator_income
            - outcome.reexecutions * config.cost
            - outcome.validator_slash
        ),
        "burned": np.bincount(epochs, weights=outcome.burned, minlength=e).astype(np.int64),
    }


def summary(population: Population, outcome: Outcome, nodes: Table, validators: Table) -> dict[
    str, Any
]:
    """One row of scalars per run: what a sweep tabulates."""
    config = population.config
    cheaters = nodes["kind"] != "honest"
    cheated = int(outcome.cheated.sum())
    valid_jobs = int((~outcome.cheated).sum())
    honest_cost = float(outcome.cost.sum())
    detected = cheaters & (nodes["time_to_detection"] >= 0)
    honest_jobs = int(nodes["jobs"][~cheaters].sum())
    held = (
        int(outcome.node_balance.sum() + outcome.node_stake.sum())
        + int(outcome.validator_balance.sum() + outcome.validator_stake.sum())
        + int(outcome.client_balance.sum())
        + outcome.total_burned
        + outcome.operator
    )
    false_slashes = ((outcome.verdict == FRAUD) & ~outcome.cheated) | (
        (outcome.verdict == VALID) & outcome.cheated
    )

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else float("nan")

    catch = theory.catch_probabilities(population)
    per_node_cheats = nodes["cheated"].astype(np.float64)
    expected_gain = np.array(
        [theory.cheat_gain(population, i, catch[i]) for i in np.flatnonzero(per_node_cheats)]
    )

    def per_cheated_job(values: np.ndarray) -> float:
        weights = per_node_cheats[per_node_cheats > 0]
        return float((values * weights).sum() / cheated) if cheated else float("nan")

    return {
        "jobs": len(outcome.node),
        "unserved_jobs": int(arrivals(population).sum()) - len(outcome.node),
        "cheated": cheated,
        "sampled": int(outcome.sampled.sum()),
        "unaudited_samples": int((outcome.sampled & (outcome.auditor < 0)).sum()),
        "fraud": int((outcome.verdict == FRAUD).sum()),
        "false_accusations": int((outcome.verdict == VALID).sum()),
        "refused": int((outcome.verdict == REFUSED).sum()),
        "detection_per_cheated_job": (
            float((outcome.verdict == FRAUD).sum() / cheated) if cheated else float("nan")
        ),
        "cheat_gain_per_cheated_job": (
            float(nodes["cheat_gain"][cheaters].sum() / cheated) if cheated else float("nan")
        ),
        "theory_detection_per_cheated_job": per_cheated_job(catch[per_node_cheats > 0]),
        "theory_cheat_gain_per_cheated_job": per_cheated_job(expected_gain),
        "sampled_cheated": int((outcome.sampled & outcome.cheated).sum()),
        "cheater_profit": float(nodes["profit"][cheaters].sum()),
        "honest_profit_per_job": (
            float(nodes["profit"][~cheaters].sum() / honest_jobs) if honest_jobs else float("nan")
        ),
        "cheaters": int(cheaters.sum()),
        "cheaters_detected": int(detected.sum()),
        "cheaters_slashed_out": int((cheaters & outcome.node_slashed_out).sum()),
        "mean_time_to_detection": mean(nodes["time_to_detection"][detected]),
        "mean_cheats_to_detection": mean(nodes["cheats_to_detection"][detected]),
        "honest_false_slashes": int(false_slashes.sum()),
        "validators_slashed_out": int(outcome.validator_slashed_out.sum()),
        "honest_validators_slashed_out": int(
            (outcome.validator_slashed_out & (validators["kind"] == HONEST)).sum()),
        "verification_overhead_pct": (
            100.0 * float(outcome.reexecutions.sum()) * config.cost / honest_cost
            if honest_cost
            else 0.0
        ),
        "fee_per_valid_job": (
            float(outcome.client_cost.sum() / valid_jobs) if valid_jobs else float("nan")
        ),
        "validator_profit": float(validators["profit"].sum()),
        "burned": outcome.total_burned,
        "conserved": held == outcome.minted,
    }
