"""The fast path: the reference path's decisions, with the money in numpy arrays.

What stays exactly as in the network: whether a job is sampled
(:func:`protocol.sampling.sampled` on the beacon value of its sample round),
who audits it (:func:`protocol.sampling.draw_auditor` over the validators
bonded in that round, drawn again from a later round when an auditor cannot
decide), who sits on a dispute's committee
(:func:`protocol.sampling.draw_dispute_committee`, keyed by the job, from the
round after the accusation, drawn again while a committee has no strict
majority), the in-flight limit (a node keeps at most ``stake / (p·S)`` jobs
unsettled), the accuser's bond, and the amounts and standing: slashes taken
from the stake and then from the node's locked earnings, shares in basis
points rounded down per recipient with the dust burned, the slashed role
jailed for ``jail_period`` rounds and slashed out (tombstoned) below the
minimum stake or at its ``tombstone_offences``-th offence, and each settled
job paying ``fee − verification fee`` into the node's locked earnings and
the verification fee to the VALID auditor or back to the client.

What changes: no messages are built or signed and no ``State`` is folded.
Jobs are recorded an epoch at a time as arrays; only sampled jobs (a
fraction p) and disputes go through Python loops, and settlement is a
queue of job indices per round, as the ledger keeps one.

Jobs are named by their real content ids (:class:`netsim.jobs.JobIds`), so
every draw keyed by a job is the reference path's.
``tests/test_netsim_equivalence.py`` runs both paths on random small
configurations and on every example configuration and requires every
per-job column and every final balance and stake to be equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np

from netsim import behaviour, jobs
from netsim.beacon import ChainBeacon
from netsim.genesis import (
    CANARY_NODES,
    CANARY_STAKE,
    canary_funds,
    check_params,
    client_funds,
)
from netsim.outcome import FRAUD, INCONCLUSIVE, NO_DISPUTE, REFUSED, VALID, Outcome
from netsim.population import Population
from protocol.economics import in_flight_limit
from protocol.messages import Verdict
from protocol.sampling import PPM, draw_auditor, draw_dispute_committee, sampled
from slashing import LedgerParams
from slashing import constants as c
from slashing.rules import liability_horizon

PENDING, SETTLED, REFUNDED = 0, 1, 2


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

    def is_bonded(self, index: int, current_round: int) -> bool:
        return bool(not self.out[index] and self.amount[index] >= self.minimum
                    and self.jailed_until[index] <= current_round)

    def punish(self, index: int, taken: int, current_round: int) -> None:
        """After a slash took ``taken`` from the stake: jail, and tombstone at the last offence."""
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


@dataclass
class Dispute:
    job: int
    accuser: int
    draws: int = 0
    drawn_round: int | None = None
    committee: list[int] = field(default_factory=list)
    votes: list[tuple[int, Verdict]] = field(default_factory=list)


class FastRun:
    """Balances, stakes and jobs as arrays, changed only the way the ledger rules change them."""

    def __init__(self, population: Population, total: int) -> None:
        config = population.config
        self.population = population
        self.config = config
        self.params = p = config.ledger
        self.beacon = ChainBeacon(config.seed)
        n, m = config.nodes, config.validators
        nodes = n + CANARY_NODES  # the operator's canary nodes follow the clients' nodes
        self.node_balance = np.zeros(nodes, dtype=np.int64)
        self.locked: list[dict[int, int]] = [{} for _ in range(nodes)]
        """Per node: release round → earnings still slashable, in the order they came."""
        self.nodes = Stakes(nodes, config.node_bond, c.NODE, p)
        self.nodes.amount[n:] = CANARY_STAKE
        self.node_jobs = np.zeros(nodes, dtype=np.int64)
        self.canary = np.zeros(total, dtype=bool)
        self.canary_count = 0
        self.canary_spent = 0
        """Fees the operator's canary client paid for canaries that settled."""
        self.planted: list[tuple[int, int]] = []
        """Canaries committed to this epoch, recorded the next: (number, canary node)."""
        self.canaries: list[int] = []
        """Recorded canary jobs not yet revealed, in order."""
        self.validator_balance = np.zeros(m, dtype=np.int64)
        self.validators = Stakes(m, config.validator_bond, c.VALIDATOR, p)
        self.burned = 0
        self.ids = population.validator_ids
        self.index_of = {v: i for i, v in enumerate(self.ids)}
        self.round = 0
        # per recorded job
        self.node = np.zeros(total, dtype=np.int64)
        self.cheated = np.zeros(total, dtype=bool)
        self.epoch = np.zeros(total, dtype=np.int64)
        self.routed = np.zeros(total, dtype=np.int64)
        """The job's place among all jobs routed to a node (its request's nonce)."""
        self.grief = np.zeros(total)
        self.recorded_round = np.zeros(total, dtype=np.int64)
        self.status = np.zeros(total, dtype=np.int64)
        self.verifier = np.full(total, -1, dtype=np.int64)
        self.is_sampled = np.zeros(total, dtype=bool)
        self.auditor = np.full(total, -1, dtype=np.int64)
        self.accused = np.zeros(total, dtype=bool)
        self.verdict = np.full(total, NO_DISPUTE, dtype=np.int64)
        self.reexecutions = np.zeros(total, dtype=np.int64)
        self.money = {
            name: np.zeros(total, dtype=np.int64)
            for name in ("node_income", "node_slash", "validator_income", "validator_slash",
                         "burned")
        }
        self.job_ids: list[tuple[bytes, bytes]] = []
        self.count = 0
        self.audits = np.zeros(m, dtype=np.int64)
        self.reexecuted = np.zeros(m, dtype=np.int64)
        self.auditors: dict[int, list[int]] = {}
        """Sampled job → every validator drawn to audit it, in order."""
        self.audit_round: dict[int, int] = {}
        """Sampled job → the round whose value drew its current auditor (answer awaited)."""
        self.redraw: dict[int, list[int]] = defaultdict(list)
        """Round → jobs whose auditor could not decide, to draw another for."""
        self.disputes: dict[int, Dispute] = {}
        self.open: list[int] = []
        """Jobs with an open dispute, in the order they were opened."""
        self.settle_queue: dict[int, list[int]] = defaultdict(list)
        self.drawn_upto = 0
        """Jobs before this index have had their sample round."""
        self.unlocks: dict[int, set[int]] = defaultdict(set)
        """Round → nodes with locked earnings released in it."""

    def within_limits(self, nodes: np.ndarray) -> np.ndarray:
        """Which of a round's jobs (``nodes``, in arrival order) each node's in-flight limit
        lets it take, as ``process_record_job`` would one by one; counts them in flight."""
        kept = np.zeros(len(nodes), dtype=bool)
        if not len(nodes):
            return kept
        p = self.params  # in_flight_limit's stake·10^6 // (p·S), over the array of stakes
        limit = self.nodes.amount[nodes] * PPM // (p.sample_ppm * p.fraud_slash)
        order = np.argsort(nodes, kind="stable")
        ranked = nodes[order]
        nth = np.arange(len(nodes)) - np.searchsorted(ranked, ranked, side="left")
        kept[order] = nth < (limit - self.node_jobs[nodes])[order]
        np.add.at(self.node_jobs, nodes[kept], 1)
        return kept

    # -- the ledger's clock --------------------------------------------------------------------
    def bonded_ids(self, excluded: Collection[int]) -> list[bytes]:
        """The ids of the validators bonded now, but for ``excluded``."""
        bonded: list[int] = np.flatnonzero(self.validators.bonded(self.round)).tolist()
        return [self.ids[i] for i in bonded if i not in excluded]

    def reveal(self, round_number: int) -> None:
        """What ``process_beacon_round`` does in round ``round_number``, in its order."""
        self.round = round_number
        new_jobs = range(self.drawn_upto, self.count)  # recorded last round: their sample round
        self.drawn_upto = self.count
        beacon = self.beacon.value(round_number)
        for job in self.open:  # a committee for each dispute awaiting one
            dispute = self.disputes[job]
            if dispute.drawn_round is None:
                self.draw_committee(dispute, beacon)
        for g in new_jobs:  # sample draws of the jobs recorded last round
            job_id, commitment_id = self.job_ids[g]
            if sampled(beacon, job_id, commitment_id, self.params.sample_ppm):
                self.is_sampled[g] = True
                self.auditors[g] = []
                self.assign(g, beacon)
        for g in self.redraw.pop(round_number, []):
            if self.status[g] == PENDING:
                self.assign(g, beacon)
        for node in self.unlocks.pop(round_number, ()):  # earnings whose lock has run out
            self.node_balance[node] += self.locked[node].pop(round_number, 0)
        due = np.array(self.settle_queue.pop(round_number, []), dtype=np.int64)
        if len(due):
            self.settle(due[self.settleable(due)])

    def settleable(self, due: np.ndarray) -> np.ndarray:
        """``is_settleable_job`` for each of ``due``: pending, window closed, nothing held."""
        held = set(self.audit_round) | set(self.open)
        for later in self.redraw.values():
            held.update(later)
        ok = (self.status[due] == PENDING) & (
            self.round > self.recorded_round[due] + 1 + self.params.challenge_window)
        if held:
            ok &= ~np.isin(due, np.fromiter(held, dtype=np.int64))
        return np.asarray(ok, dtype=bool)

    def assign(self, g: int, beacon: bytes) -> None:
        drawn = self.auditors[g]
        chosen = None
        if len(drawn) < c.MAX_AUDIT_DRAWS:
            ids = self.bonded_ids(drawn)
            chosen = draw_auditor(beacon, self.job_ids[g][0], len(drawn), ids)
        if chosen is None:
            self.audit_round.pop(g, None)  # nobody is left to ask: it settles unaudited
            self.reschedule(g, in_beacon_round=True)
            return
        drawn.append(self.index_of[chosen])
        self.audit_round[g] = self.round

    def window_end(self, g: int) -> int:
        return int(self.recorded_round[g]) + 1 + self.params.challenge_window

    def reschedule(self, g: int, in_beacon_round: bool) -> None:
        """``reschedule_settlement``: once what held the job is resolved."""
        earliest = self.window_end(g) + 1
        soonest = self.round if in_beacon_round else self.round + 1
        first_try = int(self.recorded_round[g]) + 1 + self.params.challenge_window + 1
        if max(earliest, soonest) > first_try:
            self.settle_queue[max(earliest, soonest)].append(g)

    def settle(self, jobs_: np.ndarray) -> None:
        """``settle_job`` for each of ``jobs_``: rewards locked, verification fees paid."""
        if not len(jobs_):
            return
        p = self.params
        reward = self.config.fee - p.verification_fee
        verifier = self.verifier[jobs_]
        canaries = self.canary[jobs_]
        self.canary_spent += int(canaries.sum()) * self.config.fee - int(
            (canaries & (verifier < 0)).sum()) * p.verification_fee
        release = self.round + p.unbonding_period
        nodes = self.node[jobs_]
        counts = np.bincount(nodes, minlength=len(self.locked))
        for node in np.flatnonzero(counts).tolist():
            held = self.locked[node]
            held[release] = held.get(release, 0) + int(counts[node]) * reward
            self.unlocks[release].add(node)
        paid = verifier[verifier >= 0]
        np.add.at(self.validator_balance, paid, p.verification_fee)
        self.status[jobs_] = SETTLED
        self.node_jobs -= counts

    def slash_node(self, node: int, amount: int) -> int:
        """``slash_stake`` on a node: the stake first, then its locked earnings, oldest first."""
        taken = min(int(self.nodes.amount[node]), amount)
        from_stake = taken
        held = self.locked[node]
        for release in sorted(held):
            take = min(held[release], amount - taken)
            taken += take
            held[release] -= take
            if not held[release]:
                del held[release]
        self.nodes.punish(node, from_stake, self.round)
        return taken

    def slash_validator(self, v: int, amount: int) -> int:
        taken = min(int(self.validators.amount[v]), amount)
        self.validators.punish(v, taken, self.round)
        return taken

    def share(self, amount: int, share_bps: int, recipients: int) -> int:
        return amount * share_bps // c.BPS // recipients

    # -- disputes --------------------------------------------------------------------------
    def candidates(self, dispute: Dispute) -> list[bytes]:
        excluded = {dispute.accuser, *self.auditors.get(dispute.job, [])}
        return self.bonded_ids(excluded)

    def draw_committee(self, dispute: Dispute, beacon: bytes) -> None:
        candidates = self.candidates(dispute)
        k = self.params.committee_size
        if len(candidates) < k:
            return
        committee = draw_dispute_committee(beacon, self.job_ids[dispute.job][0], dispute.draws,
                                           candidates, k)
        dispute.committee = [self.index_of[v] for v in committee]
        dispute.drawn_round = self.round
        dispute.draws += 1

    def vote(self, dispute: Dispute) -> None:
        """Every member votes; the last vote decides, or another committee is drawn."""
        g = dispute.job
        node, cheated = int(self.node[g]), bool(self.cheated[g])
        votes = []
        for w in dispute.committee:
            verdict, member_reexec = behaviour.committee_vote(
                self.population, w, -1 if self.canary[g] else node, cheated)
            if member_reexec:
                self.reexecutions[g] += 1
                self.reexecuted[w] += 1
            votes.append((w, verdict))
        size = len(votes)
        fraud = sum(1 for _, v in votes if v is Verdict.FRAUD)
        valid = sum(1 for _, v in votes if v is Verdict.VALID)
        outcome = (Verdict.FRAUD if 2 * fraud > size else
                   Verdict.VALID if 2 * valid > size else Verdict.INCONCLUSIVE)
        if outcome is Verdict.INCONCLUSIVE and dispute.draws < c.MAX_COMMITTEE_DRAWS:
            dispute.drawn_round, dispute.committee = None, []
            return
        dispute.votes = votes
        self.resolve(dispute, outcome, votes)

    def resolve(self, dispute: Dispute, outcome: Verdict, votes: list[tuple[int, Verdict]]
                ) -> None:
        p = self.params
        g, v = dispute.job, dispute.accuser
        node = int(self.node[g])
        bond = p.accuser_bond
        money = self.money
        majority = [w for w, verdict in votes if verdict is outcome]
        if outcome is Verdict.FRAUD:
            taken = self.slash_node(node, p.fraud_slash)
            accuser_part = self.share(taken, p.accuser_share_bps, 1)
            each = self.share(taken, p.committee_share_bps, len(majority)) if majority else 0
            self.validator_balance[v] += accuser_part + bond
            for w in majority:
                self.validator_balance[w] += each
            paid = accuser_part + each * len(majority)
            self.burned += taken - paid
            money["node_slash"][g] += taken
            money["validator_income"][g] += paid
            money["burned"][g] += taken - paid
            for w in dict.fromkeys(w for w, verdict in votes if verdict is Verdict.VALID):
                lazy = self.slash_validator(w, p.lazy_validator_slash)  # VALID on a fraud
                self.burned += lazy
                money["validator_slash"][g] += lazy
                money["burned"][g] += lazy
            self.status[g] = REFUNDED
            self.node_jobs[node] -= 1
            self.verdict[g] = FRAUD
        elif outcome is Verdict.VALID:
            taken = self.slash_validator(v, p.false_accusation_slash)
            pot = taken + bond
            wronged = self.share(pot, p.wronged_node_share_bps, 1)
            each = self.share(pot, p.committee_share_bps, len(majority)) if majority else 0
            self.node_balance[node] += wronged
            for w in majority:
                self.validator_balance[w] += each
            paid = wronged + each * len(majority)
            self.burned += pot - paid
            money["node_income"][g] += wronged
            money["validator_income"][g] += each * len(majority)
            money["validator_slash"][g] += pot
            money["burned"][g] += pot - paid
            self.verdict[g] = VALID
        else:
            self.validator_balance[v] += bond
            self.verdict[g] = INCONCLUSIVE
        self.open.remove(g)
        if self.status[g] == PENDING:
            self.reschedule(g, in_beacon_round=False)

    # -- audits ----------------------------------------------------------------------------
    def audit(self, g: int) -> None:
        v = self.auditors[g][-1]
        del self.audit_round[g]
        self.auditor[g] = v
        self.audits[v] += 1
        node, cheated = int(self.node[g]), bool(self.cheated[g])
        accuse, reexec = behaviour.audit_action(self.population, v,
                                                -1 if self.canary[g] else node, cheated,
                                                float(self.grief[g]))
        if reexec:
            self.reexecutions[g] += 1
            self.reexecuted[v] += 1
        if accuse:
            self.accused[g] = True
            dispute = Dispute(job=g, accuser=v)
            k = self.params.committee_size
            if self.validators.is_bonded(v, self.round) and len(self.candidates(dispute)) >= k:
                self.validator_balance[v] -= self.params.accuser_bond
                self.disputes[g] = dispute
                self.open.append(g)
                self.reschedule_if_late(g)
                return
            self.verdict[g] = REFUSED  # it cannot be judged: the auditor says so
            self.redraw[self.round + 1].append(g)
            return
        self.verifier[g] = v
        self.reschedule_if_late(g)

    def reschedule_if_late(self, g: int) -> None:
        """``answer_audit``: a decisive answer lets the job settle on time, or later."""
        if g not in self.disputes or g not in self.open:
            self.reschedule(g, in_beacon_round=False)

    def act(self) -> None:
        """As the reference path: committees drawn this round vote, then auditors audit, then
        final canaries are revealed."""
        drawn = [g for g in self.open if self.disputes[g].drawn_round == self.round]
        for g in sorted(drawn):
            self.vote(self.disputes[g])
        for g in sorted(j for j, r in self.audit_round.items() if r == self.round):
            self.audit(g)
        for g in list(self.canaries):
            if self.status[g] != PENDING:
                self.reveal_canary(g)

    # -- the operator's canaries ------------------------------------------------------------
    def plant(self, count: int) -> None:
        first = self.config.nodes
        bonded = [k for k in range(first, first + CANARY_NODES)
                  if self.nodes.is_bonded(k, self.round)]
        if not bonded:
            return
        for _ in range(count):
            self.planted.append((self.canary_count, bonded[0]))
            self.canary_count += 1

    def record_canaries(self) -> None:
        p = self.params
        for number, k in self.planted:
            limit = in_flight_limit(int(self.nodes.amount[k]), p.sample_ppm, p.fraud_slash)
            if not self.nodes.is_bonded(k, self.round) or self.node_jobs[k] >= limit:
                continue  # the canary is lost
            self.node_jobs[k] += 1
            g = self.count
            self.count += 1
            node_id = self.population.canary_node_ids[k - self.config.nodes]
            self.job_ids.append(jobs.canary_ids(self.population, number, node_id))
            self.node[g], self.cheated[g], self.canary[g] = k, True, True
            self.epoch[g], self.grief[g], self.recorded_round[g] = -1, 1.0, self.round
            self.settle_queue[self.round + p.challenge_window + 2].append(g)
            self.canaries.append(g)
        self.planted = []

    def reveal_canary(self, g: int) -> None:
        """Everyone that called the canary VALID is slashed, all of it burned."""
        p = self.params
        wrong = [int(self.verifier[g])] if self.verifier[g] >= 0 else []
        dispute = self.disputes.get(g)
        if dispute is not None:
            wrong += [w for w, verdict in dispute.votes if verdict is Verdict.VALID]
        for w in dict.fromkeys(wrong):
            self.burned += self.slash_validator(w, p.lazy_validator_slash)
        self.canaries.remove(g)


def run_fast(population: Population, on_epoch: Callable[[int], None] | None = None) -> Outcome:
    config = population.config
    params = config.ledger
    check_params(config)
    counts = behaviour.arrivals(population)
    total = int(counts.sum())
    funds = client_funds(config, total)
    run = FastRun(population, total + (total if config.canaries else 0))  # room for canaries
    n, m = config.nodes, config.validators
    job_ids = jobs.JobIds(population)
    online = np.ones(n, dtype=bool)
    streak = np.zeros(n, dtype=np.int64)
    online_log, active_log, auditors_log = [], [], []
    routed = 0
    for e in range(config.epochs):
        run.round = e
        active = online & run.nodes.bonded(e)[:n]
        online_log.append(int(online.sum()))
        active_log.append(int(active.sum()))
        draw = behaviour.draw_epoch(population, e, int(counts[e]), active, streak)
        start = run.count
        kept = run.within_limits(draw.node)
        taken = np.flatnonzero(kept)
        for j, k, x in zip(taken.tolist(), draw.node[kept].tolist(), draw.cheated[kept].tolist(),
                           strict=True):
            index = routed + j
            run.job_ids.append(job_ids.ids(index, k, x))
        recorded = slice(start, start + int(kept.sum()))
        run.count = recorded.stop
        run.node[recorded], run.cheated[recorded] = draw.node[kept], draw.cheated[kept]
        run.epoch[recorded], run.recorded_round[recorded] = e, e
        run.routed[recorded] = routed + taken
        run.grief[recorded] = draw.grief[kept]
        run.settle_queue[e + params.challenge_window + 2].extend(range(start, recorded.stop))
        routed += len(draw.node)
        regular = run.count
        run.record_canaries()
        run.plant(draw.canaries)
        run.reveal(e + 1)
        auditors_log.append(int(run.validators.bonded(run.round).sum()))
        run.act()
        epoch_sampled = np.zeros(len(draw.node), dtype=bool)
        epoch_sampled[kept] = run.is_sampled[start:regular]
        streak = behaviour.next_streak(population, streak, draw.node, epoch_sampled)
        online = behaviour.next_online(population, online, draw.churn)
        if on_epoch is not None:
            on_epoch(1)
    round_number = config.epochs
    limit = round_number + liability_horizon(params) + 2
    run.record_canaries()
    while run.canaries or (run.status[: run.count] == PENDING).any():
        round_number += 1
        assert round_number <= limit, "a job outlived the liability horizon"
        run.reveal(round_number)
        run.act()

    # Settlement money, per job, from the final status; canaries are the operator's
    clients_jobs = ~run.canary[: run.count]
    fee, verification_fee = config.fee, params.verification_fee

    def jobs_of(values: np.ndarray) -> np.ndarray:
        return values[: run.count][clients_jobs]

    status, verifier = jobs_of(run.status), jobs_of(run.verifier)
    settled = status == SETTLED
    verified = settled & (verifier >= 0)
    money = {name: jobs_of(values) for name, values in run.money.items()}
    money["node_income"][settled] += fee - verification_fee
    money["validator_income"][verified] += verification_fee
    client_cost = np.where(settled, np.where(verified, fee, fee - verification_fee), 0)
    client_balance = np.full(config.clients, funds, dtype=np.int64)
    np.subtract.at(client_balance, jobs_of(run.routed) % config.clients, client_cost)
    locked = np.array([sum(held.values()) for held in run.locked], dtype=np.int64)
    operator = (
        canary_funds(config, total) - run.canary_spent
        + int(run.node_balance[n:].sum() + locked[n:].sum() + run.nodes.amount[n:].sum())
    )
    minted = (funds * config.clients if funds else 0) + canary_funds(config, total)
    minted += CANARY_STAKE * CANARY_NODES
    return Outcome(
        epoch=jobs_of(run.epoch),
        node=jobs_of(run.node),
        cheated=jobs_of(run.cheated),
        cost=population.node_cost[jobs_of(run.node)].astype(np.float64),
        sampled=jobs_of(run.is_sampled),
        auditor=jobs_of(run.auditor),
        accused=jobs_of(run.accused),
        verdict=jobs_of(run.verdict),
        reexecutions=jobs_of(run.reexecutions),
        client_cost=client_cost.astype(np.int64),
        node_income=money["node_income"],
        node_slash=money["node_slash"],
        validator_income=money["validator_income"],
        validator_slash=money["validator_slash"],
        burned=money["burned"],
        node_balance=(run.node_balance + locked)[:n],
        node_stake=run.nodes.amount[:n],
        node_slashed_out=run.nodes.out[:n],
        validator_balance=run.validator_balance,
        validator_stake=run.validators.amount,
        validator_slashed_out=run.validators.out,
        validator_audits=run.audits,
        validator_reexecutions=run.reexecuted,
        client_balance=client_balance,
        online=np.array(online_log, dtype=np.int64),
        active=np.array(active_log, dtype=np.int64),
        auditors=np.array(auditors_log, dtype=np.int64),
        minted=minted + n * config.node_bond + m * config.validator_bond,
        total_burned=run.burned,
        operator=operator,
    )
