"""The fast path: the reference path's decisions, with the money in numpy arrays.

What stays exactly as in the network: whether a job is sampled
(:func:`protocol.sampling.sampled` on the beacon value of its sample round),
who audits it (:func:`verifier.sampling.assigned_validator` over the bonded
validators' real public keys), who sits on a dispute's committee
(:func:`protocol.sampling.draw_committee` keyed by
:func:`slashing.rules.committee_seed`), the strict-majority outcome, and the
amounts and standing: slashes capped by the stake left, shares in basis
points rounded down per recipient with the dust burned, the slashed role
jailed for ``jail_period`` rounds and slashed out (tombstoned) below the
minimum stake or at its ``tombstone_offences``-th offence, the node paid
``fee − verification fee`` at settlement and the verification fee paid to
the VALID auditor or returned to the client.

What changes: no messages are built or signed and no ``State`` is folded.
Jobs are handled an epoch at a time as arrays; only sampled jobs (a fraction
p) go through a Python loop, because an accusation can slash a validator out
and so change who audits the next one. Settlement is one vectorised pass at
the end, which gives the same balances because a settlement only adds to
balances and never depends on them.

Jobs are named by their real content ids (:class:`netsim.jobs.JobIds`), so
every draw keyed by a job is the reference path's.
``tests/test_netsim_equivalence.py`` runs both paths on random small
configurations and on every example configuration and requires every
per-job column and every final balance and stake to be equal.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from netsim import behaviour, jobs
from netsim.beacon import ChainBeacon
from netsim.genesis import check_params, client_funds
from netsim.outcome import FRAUD, INCONCLUSIVE, REFUSED, VALID, Outcome
from netsim.population import Population
from protocol.messages import Verdict
from protocol.sampling import draw_committee, sampled
from slashing import LedgerParams
from slashing import constants as c
from slashing.rules import committee_seed
from verifier.sampling import assigned_validator


class Stakes:
    """One role's stakes and standing, changed exactly as ``slash_stake`` and ``punish`` do."""

    def __init__(self, count: int, bond: int, role: str, params: LedgerParams) -> None:
        self.minimum = c.MIN_STAKE[role]
        self.params = params
        self.amount = np.full(count, bond, dtype=np.int64)
        self.out = np.zeros(count, dtype=bool)
        """Slashed out, i.e. tombstoned: never acts again."""
        self.jailed_until = np.zeros(count, dtype=np.int64)
        self.offences = np.zeros(count, dtype=np.int64)

    def bonded(self, current_round: int) -> np.ndarray:
        """Who may act in ``current_round``: not slashed out, at the minimum, not jailed."""
        return ~self.out & (self.amount >= self.minimum) & (self.jailed_until <= current_round)

    def punish(self, index: int, amount: int, current_round: int) -> int:
        """Slash up to ``amount``, jail, and tombstone at the last allowed offence."""
        taken = min(int(self.amount[index]), amount)
        self.amount[index] -= taken
        self.offences[index] += 1
        self.out[index] = (
            self.out[index]
            or self.amount[index] < self.minimum
            or self.offences[index] >= self.params.tombstone_offences
        )
        if self.params.jail_period:
            release = current_round + self.params.jail_period + 1
            self.jailed_until[index] = max(release, int(self.jailed_until[index]))
        return taken


class FastLedger:
    """Balances and stakes as arrays, changed only the way the ledger rules change them."""

    def __init__(self, population: Population) -> None:
        config = population.config
        self.params = config.ledger
        self.node_balance = np.zeros(config.nodes, dtype=np.int64)
        self.nodes = Stakes(config.nodes, config.node_bond, c.NODE, self.params)
        self.validator_balance = np.zeros(config.validators, dtype=np.int64)
        self.validators = Stakes(config.validators, config.validator_bond, c.VALIDATOR,
                                 self.params)
        self.burned = 0
        self.ids = population.validator_ids
        self.index = {v: i for i, v in enumerate(self.ids)}
        self.round = 0
        self.bonded: list[bytes] = []

    def reveal(self, round_number: int) -> None:
        self.round = round_number
        self.refresh()

    def refresh(self) -> None:
        """The bonded validators, as ``bonded_validators(state)`` lists them now."""
        self.bonded = [self.ids[i] for i in np.flatnonzero(self.validators.bonded(self.round))]

    def share(self, amount: int, share_bps: int, recipients: int) -> int:
        """Each recipient's part of a slash, as ``distribute`` rounds it."""
        return amount * share_bps // c.BPS // recipients

    def resolve(
        self, node: int, accuser: int, votes: list[tuple[int, Verdict]]
    ) -> tuple[int, int, int, int, int, int]:
        """Apply a dispute's outcome.

        Returns (verdict code, node slash, validator slash, node income,
        validator income, burned).
        """
        params = self.params
        size = len(votes)
        fraud = sum(1 for _, v in votes if v is Verdict.FRAUD)
        valid = sum(1 for _, v in votes if v is Verdict.VALID)
        if 2 * fraud > size:
            verdict = Verdict.FRAUD
        elif 2 * valid > size:
            verdict = Verdict.VALID
        else:
            return INCONCLUSIVE, 0, 0, 0, 0, 0
        majority = [w for w, v in votes if v is verdict]
        if verdict is Verdict.FRAUD:
            taken = self.nodes.punish(node, params.fraud_slash, self.round)
            accuser_part = self.share(taken, params.accuser_share_bps, 1)
            committee_each = self.share(taken, params.committee_share_bps, len(majority))
            self.validator_balance[accuser] += accuser_part
            for w in majority:
                self.validator_balance[w] += committee_each
            paid = accuser_part + committee_each * len(majority)
            self.burned += taken - paid
            return FRAUD, taken, 0, 0, paid, taken - paid
        taken = self.validators.punish(accuser, params.false_accusation_slash, self.round)
        self.refresh()
        wronged = self.share(taken, params.wronged_node_share_bps, 1)
        committee_each = self.share(taken, params.committee_share_bps, len(majority))
        self.node_balance[node] += wronged
        for w in majority:
            self.validator_balance[w] += committee_each
        paid = wronged + committee_each * len(majority)
        self.burned += taken - paid
        return VALID, 0, taken, wronged, committee_each * len(majority), taken - paid


def run_fast(population: Population, on_epoch: Callable[[int], None] | None = None) -> Outcome:
    config = population.config
    params = config.ledger
    check_params(config)
    counts = behaviour.arrivals(population)
    total = int(counts.sum())
    funds = client_funds(config, total)
    beacon = ChainBeacon(config.seed)
    ledger = FastLedger(population)
    n, m = config.nodes, config.validators
    job_ids = jobs.JobIds(population)

    epoch = np.zeros(total, dtype=np.int64)
    node = np.zeros(total, dtype=np.int64)
    cheated = np.zeros(total, dtype=bool)
    is_sampled = np.zeros(total, dtype=bool)
    auditor = np.full(total, -1, dtype=np.int64)
    verifier = np.full(total, -1, dtype=np.int64)
    accused = np.zeros(total, dtype=bool)
    verdict = np.zeros(total, dtype=np.int64)
    reexecutions = np.zeros(total, dtype=np.int64)
    money = {
        name: np.zeros(total, dtype=np.int64)
        for name in ("node_income", "node_slash", "validator_income", "validator_slash", "burned")
    }
    audits = np.zeros(m, dtype=np.int64)
    reexecuted = np.zeros(m, dtype=np.int64)
    online = np.ones(n, dtype=bool)
    streak = np.zeros(n, dtype=np.int64)
    online_log, active_log, auditors_log = [], [], []
    start = 0
    for e in range(config.epochs):
        active = online & ledger.nodes.bonded(e)
        online_log.append(int(online.sum()))
        active_log.append(int(active.sum()))
        draw = behaviour.draw_epoch(population, e, int(counts[e]), active, streak)
        size = len(draw.node)
        here = slice(start, start + size)
        epoch[here], node[here], cheated[here] = e, draw.node, draw.cheated
        served = zip(range(start, start + size), draw.node.tolist(), draw.cheated.tolist(),
                     strict=True)
        ids = [job_ids.ids(g, k, x) for g, k, x in served]
        beacon_value = beacon.value(e + 1)
        ledger.reveal(e + 1)
        auditors_log.append(len(ledger.bonded))
        hit = np.array(
            [sampled(beacon_value, job_id, cid, params.sample_ppm) for job_id, cid in ids],
            dtype=bool,
        )
        is_sampled[here] = hit
        for j in np.flatnonzero(hit).tolist():
            g = start + j
            job_id, commitment_id = ids[j]
            chosen = assigned_validator(beacon_value, job_id, commitment_id, ledger.bonded)
            if chosen is None:
                continue
            v = ledger.index[chosen]
            auditor[g] = v
            audits[v] += 1
            k, x = int(draw.node[j]), bool(draw.cheated[j])
            accuse, reexec = behaviour.audit_action(population, v, k, x, float(draw.grief[j]))
            if reexec:
                reexecutions[g] += 1
                reexecuted[v] += 1
            if not accuse:
                verifier[g] = v
                continue
            accused[g] = True
            candidates = [b for b in ledger.bonded if b != chosen]
            if len(candidates) < params.committee_size:
                verdict[g] = REFUSED
                continue
            committee = draw_committee(
                beacon_value, committee_seed(job_id, chosen), candidates, params.committee_size
            )
            votes = []
            for member in committee:
                w = ledger.index[member]
                vote, member_reexec = behaviour.committee_vote(population, w, k, x)
                if member_reexec:
                    reexecutions[g] += 1
                    reexecuted[w] += 1
                votes.append((w, vote))
            result = ledger.resolve(k, v, votes)
            verdict[g] = result[0]
            for name, value in zip(
                ("node_slash", "validator_slash", "node_income", "validator_income", "burned"),
                result[1:],
                strict=True,
            ):
                money[name][g] = value
        streak = behaviour.next_streak(population, streak, draw.node, hit)
        online = behaviour.next_online(population, online, draw.churn)
        start += size
        if on_epoch is not None:
            on_epoch(1)

    # Jobs that found no active node to serve them were never recorded
    recorded = slice(0, start)
    epoch, node, cheated = epoch[recorded], node[recorded], cheated[recorded]
    is_sampled, auditor, verifier = is_sampled[recorded], auditor[recorded], verifier[recorded]
    accused, verdict = accused[recorded], verdict[recorded]
    reexecutions = reexecutions[recorded]
    money = {name: values[recorded] for name, values in money.items()}

    # Settlement: every job not refunded for fraud pays out once its window closes
    fee, verification_fee = config.fee, params.verification_fee
    settled = verdict != FRAUD
    verified = settled & (verifier >= 0)
    money["node_income"][settled] += fee - verification_fee
    money["validator_income"][verified] += verification_fee
    client_cost = np.where(settled, np.where(verified, fee, fee - verification_fee), 0)
    ledger.node_balance += np.bincount(node[settled], minlength=n) * (fee - verification_fee)
    ledger.validator_balance += np.bincount(verifier[verified], minlength=m) * verification_fee
    client_balance = np.full(config.clients, funds, dtype=np.int64)
    np.subtract.at(client_balance, np.arange(start) % config.clients, client_cost)
    minted = funds * config.clients if funds else 0
    return Outcome(
        epoch=epoch,
        node=node,
        cheated=cheated,
        cost=population.node_cost[node].astype(np.float64),
        sampled=is_sampled,
        auditor=auditor,
        accused=accused,
        verdict=verdict,
        reexecutions=reexecutions,
        client_cost=client_cost.astype(np.int64),
        **money,
        node_balance=ledger.node_balance,
        node_stake=ledger.nodes.amount,
        node_slashed_out=ledger.nodes.out,
        validator_balance=ledger.validator_balance,
        validator_stake=ledger.validators.amount,
        validator_slashed_out=ledger.validators.out,
        validator_audits=audits,
        validator_reexecutions=reexecuted,
        client_balance=client_balance,
        online=np.array(online_log, dtype=np.int64),
        active=np.array(active_log, dtype=np.int64),
        auditors=np.array(auditors_log, dtype=np.int64),
        minted=minted + n * config.node_bond + m * config.validator_bond,
        total_burned=ledger.burned,
    )
