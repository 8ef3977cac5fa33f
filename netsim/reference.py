"""The reference path: every job is a real signed message judged by the real ledger rules.

Clients sign :class:`JobRequest`\\ s, nodes sign :class:`Commitment`\\ s, validators
sign :class:`Attestation`\\ s and :class:`Evidence`, and each is recorded as a
``slashing`` event folded into one :class:`slashing.State` with
:func:`slashing.rules.apply_event_in_place` (the SQLite log is left out: it
adds a disk write per event and no rule). The ledger itself samples each job,
assigns its auditor and draws every committee; the validators do what it
awaits from them, as the validator service does with the ledger's
``duties``. Nothing here computes money: balances, stakes and locked earnings
are read back from the state.

Each epoch e is one beacon round: jobs are recorded in round e (a job the
ledger refuses because its node's stake covers no more jobs in flight is
dropped, as a client would take it elsewhere), round e+1 is revealed, and
then every validator acts on it: committee members drawn in it vote, in the
order the jobs were recorded, and the auditors it assigned audit. An auditor
whose evidence the ledger refuses (too few validators for a committee, or it
is jailed) answers INCONCLUSIVE, and the ledger draws another. After the last
epoch the beacon runs on until every job is final. About 1 ms a job: for
checking the fast path and for small runs.

**Canaries run.** With ``canaries`` above 0 the operator plants, each epoch,
commitments to that share of canary jobs (``PlantCanary``), records them the
next epoch from its own client to the first of its canary nodes that may
take them, with a wrong output, and reveals each (``RevealCanary``) in the
round it is final: every validator that called it VALID, auditor or
committee member, is slashed. Canary jobs are audited and disputed like any
other; they are left out of the per-job columns (they are no client's), and
the operator's tokens are reported as ``operator``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from netsim import behaviour, jobs
from netsim.beacon import ChainBeacon
from netsim.genesis import (
    CANARY_NODES,
    CANARY_STAKE,
    canary_funds,
    check_params,
    client_funds,
    genesis_events,
    validator_float,
)
from netsim.outcome import FRAUD, INCONCLUSIVE, NO_DISPUTE, REFUSED, VALID, Outcome
from netsim.population import (
    Population,
    canary_client_key,
    canary_node_key,
    client_key,
    node_key,
    validator_key,
)
from protocol.errors import ProtocolError
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence, Verdict
from slashing import (
    Accuse,
    Attest,
    BeaconRound,
    Bond,
    Event,
    InFlightLimit,
    LedgerRuleError,
    Mint,
    PlantCanary,
    RecordJob,
    RevealCanary,
    State,
    apply_event_in_place,
    canary_digest,
)
from slashing import constants as c
from slashing.rules import bonded_validators, is_bonded_node, liability_horizon, process_event
from slashing.state import Job, JobStatus

_VERDICT_CODES = {Verdict.FRAUD: FRAUD, Verdict.VALID: VALID, Verdict.INCONCLUSIVE: INCONCLUSIVE}


class ReferenceRun:
    def __init__(self, population: Population) -> None:
        config = population.config
        self.population = population
        self.config = config
        self.params = config.ledger
        self.beacon = ChainBeacon(config.seed)
        self.state = State()
        self.node_keys = [node_key(config.seed, i) for i in range(config.nodes)]
        self.validator_keys = [validator_key(config.seed, i) for i in range(config.validators)]
        self.client_keys = [client_key(config.seed, i) for i in range(config.clients)]
        self.validator_index = {k.public.raw: i for i, k in enumerate(self.validator_keys)}
        self.float = 0
        self.commitments: dict[bytes, Commitment] = {}
        self.rows: dict[bytes, dict[str, Any]] = {}
        """Job id → its row of the outcome, in the order the jobs were recorded."""
        self.audits = np.zeros(config.validators, dtype=np.int64)
        self.reexecuted = np.zeros(config.validators, dtype=np.int64)
        self.canary_nodes = [canary_node_key(config.seed, i) for i in range(CANARY_NODES)]
        self.canary_client = canary_client_key(config.seed)
        self.canary_count = 0
        self.planted: list[JobRequest] = []
        self.canaries: list[bytes] = []
        """Canary job ids recorded and not yet revealed, in order."""

    def record(self, event: Event) -> None:
        """An event the run expects the ledger to accept; a refusal is a netsim bug."""
        process_event(self.state, event)

    def reveal(self, round_number: int) -> None:
        signature = self.beacon.signature(round_number)
        self.record(
            BeaconRound(
                round=round_number, signature=signature, randomness=self.beacon.value(round_number)
            )
        )

    def genesis(self, total_jobs: int) -> None:
        check_params(self.config)
        for event in genesis_events(self.config):
            self.record(event)
        funds = client_funds(self.config, total_jobs)
        if funds:
            for key in self.client_keys:
                self.record(Mint(account=key.public.raw, amount=funds))
        self.float = validator_float(self.config, total_jobs)
        canary_money = canary_funds(self.config, total_jobs)
        if canary_money:
            self.record(Mint(account=self.canary_client.public.raw, amount=canary_money))
        for key in self.canary_nodes:
            self.record(Mint(account=key.public.raw, amount=CANARY_STAKE))
            self.record(Bond(account=key.public.raw, role=c.NODE, amount=CANARY_STAKE))
        for key, role, bond, extra in [
            *((k, c.NODE, self.config.node_bond, 0) for k in self.node_keys),
            *((k, c.VALIDATOR, self.config.validator_bond, self.float)
              for k in self.validator_keys),
        ]:
            self.record(Mint(account=key.public.raw, amount=bond + extra))
            self.record(Bond(account=key.public.raw, role=role, amount=bond))
        self.reveal(0)

    def bonded_nodes(self) -> np.ndarray:
        return np.array(
            [is_bonded_node(self.state, k.public.raw) for k in self.node_keys], dtype=bool
        )

    def money(self, node: int) -> tuple[int, int, int, int, int]:
        """(node balance and locked earnings, node stake, validators' balances, validators'
        stakes, burned)."""
        accounts = self.state.accounts
        account = accounts[self.node_keys[node].public.raw]
        validators = [accounts[k.public.raw] for k in self.validator_keys]
        return (
            account.balance + account.locked_total,
            account.node.amount,
            sum(a.balance for a in validators),
            sum(a.validator.amount for a in validators),
            self.state.burned,
        )

    def sign(self, v: int, message: Attestation | Evidence) -> Attestation | Evidence:
        return message.signed(self.validator_keys[v])

    def operator(self) -> int:
        """Everything the operator's canary nodes and canary client hold."""
        total = 0
        for key in (*self.canary_nodes, self.canary_client):
            account = self.state.accounts.get(key.public.raw)
            if account is not None:
                total += account.balance + account.bonded + account.locked_total
        return total

    # -- the operator's canaries ----------------------------------------------------------------
    def plant_canaries(self, count: int) -> None:
        """Commit to ``count`` canaries for the first canary node that may take jobs now."""
        node = next((k for k in self.canary_nodes if is_bonded_node(self.state, k.public.raw)),
                    None)
        if node is None:
            return
        for _ in range(count):
            request = jobs.canary_request(self.population, self.canary_count, node.public.raw)
            self.canary_count += 1
            self.record(PlantCanary(digest=canary_digest(jobs.canary_salt(request.job_id),
                                                         request.job_id)))
            self.planted.append(request.signed(self.canary_client))

    def record_canaries(self) -> None:
        """Record last epoch's canaries, unless their node may not take them now."""
        for request in self.planted:
            commitment = jobs.canary_commitment(request).signed(
                self.canary_nodes[self._canary_index(request.node)])
            try:
                apply_event_in_place(self.state, RecordJob(request=request.encode(),
                                                           commitment=commitment.encode()))
            except LedgerRuleError:
                continue  # jailed since, or past its in-flight limit: the canary is lost
            self.commitments[request.job_id] = commitment
            self.rows[request.job_id] = {**_row(-1, -1, -1, True, 0.0, 1.0), "canary": True}
            self.canaries.append(request.job_id)
        self.planted = []

    def _canary_index(self, node: bytes) -> int:
        return next(i for i, k in enumerate(self.canary_nodes) if k.public.raw == node)

    def reveal_canaries(self) -> None:
        """Open every final canary's commitment: whoever called it VALID is slashed."""
        for job_id in list(self.canaries):
            if self.state.jobs[job_id].status is not JobStatus.PENDING:
                self.record(RevealCanary(job_id=job_id, salt=jobs.canary_salt(job_id)))
                self.canaries.remove(job_id)

    # -- what the validators do in a round, as the ledger's duties tell them --------------------
    def act(self) -> None:
        """Committees drawn this round vote, then the auditors assigned this round audit."""
        state = self.state
        now = state.current_round
        drawn = [state.disputes[d] for d in state.open_disputes
                 if state.disputes[d].drawn_round == now]
        for dispute in sorted(drawn, key=lambda d: self.rows[d.job_id]["index"]):
            self.vote(dispute.dispute_id)
        assigned = [j for j in self.rows if self._awaits(state.jobs[j], now)]
        for job_id in assigned:
            self.audit(state.jobs[job_id])

    @staticmethod
    def _awaits(job: Job, now: int) -> bool:
        return job.audit_deadline is not None and job.assigned_round == now

    def vote(self, dispute_id: bytes) -> None:
        dispute = self.state.disputes[dispute_id]
        row = self.rows[dispute.job_id]
        node, cheated = int(row["node"]), bool(row["cheated"])
        commitment = self.commitments[dispute.job_id]
        before = self.money(max(node, 0))
        for member in dispute.committee:
            w = self.validator_index[member]
            verdict, member_reexec = behaviour.committee_vote(self.population, w, node, cheated)
            if member_reexec:
                row["reexecutions"] += 1
                self.reexecuted[w] += 1
            vote = self.sign(w, Attestation(
                job_id=dispute.job_id, commitment_id=commitment.content_id, validator=member,
                verdict=verdict, beacon_round=dispute.drawn_round or 0,
                chain_id=commitment.chain_id,
                observed_hash=jobs.output_hash(dispute.job_id, cheated) if member_reexec else b"",
            ))
            self.record(Attest(attestation=vote.encode()))
        decided = self.state.disputes[dispute_id]
        if decided.outcome is None or row.get("canary"):
            return  # no majority yet (another committee comes next round), or a canary
        after = self.money(node)
        bonds = decided.bond * len(decided.accusers)
        returned = bonds if decided.outcome is not Verdict.VALID else 0
        forfeited = bonds - returned
        row["verdict"] = _VERDICT_CODES[decided.outcome]
        row["node_income"] += after[0] - before[0]
        row["node_slash"] += before[1] - after[1]
        row["validator_income"] += after[2] - before[2] - returned
        row["validator_slash"] += before[3] - after[3] + forfeited
        row["burned"] += after[4] - before[4]

    def audit(self, job: Job) -> None:
        """The assigned auditor re-executes (or not) and attests, or accuses."""
        row = self.rows[job.job_id]
        node, cheated = int(row["node"]), bool(row["cheated"])
        commitment = self.commitments[job.job_id]
        auditor = job.auditors[-1]
        v = self.validator_index[auditor]
        row["auditor"] = v
        self.audits[v] += 1
        accuse, reexec = behaviour.audit_action(self.population, v, node, cheated, row["grief"])
        if reexec:
            row["reexecutions"] += 1
            self.reexecuted[v] += 1
        observed = jobs.honest_output(job.job_id) if reexec else b""
        if accuse:
            row["accused"] = True
            claimed = (jobs.honest_output(job.job_id) if cheated
                       else jobs.griefing_output(job.job_id))
            evidence = self.sign(v, Evidence(
                offence=Offence.MISMATCH, job_id=job.job_id, accuser=auditor,
                commitment=commitment.encode(), chain_id=commitment.chain_id,
                observed_hash=claimed, beacon_round=job.sample_round,
            ))
            try:
                apply_event_in_place(self.state, Accuse(evidence=evidence.encode()))
                return
            except ProtocolError:
                row["verdict"] = REFUSED  # it cannot be judged: the auditor says so
        verdict = Verdict.INCONCLUSIVE if accuse else Verdict.VALID
        attestation = self.sign(v, Attestation(
            job_id=job.job_id, commitment_id=commitment.content_id, validator=auditor,
            verdict=verdict, beacon_round=job.assigned_round or 0, chain_id=commitment.chain_id,
            observed_hash=observed,
        ))
        self.record(Attest(attestation=attestation.encode()))


def _row(index: int, epoch: int, node: int, cheated: bool, cost: float, grief: float
         ) -> dict[str, Any]:
    return {
        "index": index, "grief": grief,
        "epoch": epoch, "node": node, "cheated": cheated, "cost": cost, "sampled": False,
        "auditor": -1, "accused": False, "verdict": NO_DISPUTE, "reexecutions": 0,
        "node_income": 0, "node_slash": 0, "validator_income": 0, "validator_slash": 0,
        "burned": 0,
    }


def run_reference(
    population: Population, on_epoch: Callable[[int], None] | None = None
) -> Outcome:
    config = population.config
    net = ReferenceRun(population)
    counts = behaviour.arrivals(population)
    net.genesis(int(counts.sum()))
    n = config.nodes
    identity = jobs.JobIds(population)
    online = np.ones(n, dtype=bool)
    streak = np.zeros(n, dtype=np.int64)
    online_log, active_log, auditors_log = [], [], []
    index = 0
    for epoch in range(config.epochs):
        active = online & net.bonded_nodes()
        online_log.append(int(online.sum()))
        active_log.append(int(active.sum()))
        draw = behaviour.draw_epoch(population, epoch, int(counts[epoch]), active, streak)
        recorded: list[bytes] = []
        for j, (node, cheated) in enumerate(zip(draw.node.tolist(), draw.cheated.tolist(),
                                                strict=True)):
            client = net.client_keys[index % config.clients]
            request = jobs.request(population, index, node).signed(client)
            commitment = jobs.commitment(population, request, node, cheated).signed(
                net.node_keys[node]
            )
            assert identity.ids(index, node, cheated) == (request.job_id, commitment.content_id)
            index += 1
            try:
                apply_event_in_place(net.state, RecordJob(request=request.encode(),
                                                          commitment=commitment.encode()))
            except InFlightLimit:
                continue  # the node's stake covers no more jobs in flight: the client goes
            net.commitments[request.job_id] = commitment
            net.rows[request.job_id] = _row(index - 1, epoch, node, cheated,
                                            float(population.node_cost[node]),
                                            float(draw.grief[j]))
            recorded.append(request.job_id)
        net.record_canaries()
        net.plant_canaries(draw.canaries)
        net.reveal(epoch + 1)
        auditors_log.append(len(bonded_validators(net.state)))
        for job_id in recorded:
            net.rows[job_id]["sampled"] = net.state.jobs[job_id].sampled
        net.act()
        net.reveal_canaries()
        epoch_sampled = np.zeros(len(draw.node), dtype=bool)
        positions = {net.rows[j]["index"]: j for j in recorded}
        first = index - len(draw.node)
        for position in range(len(draw.node)):
            kept = positions.get(first + position)
            epoch_sampled[position] = kept is not None and net.rows[kept]["sampled"]
        streak = behaviour.next_streak(population, streak, draw.node, epoch_sampled)
        online = behaviour.next_online(population, online, draw.churn)
        if on_epoch is not None:
            on_epoch(1)
    round_number = config.epochs
    limit = round_number + liability_horizon(net.params) + 2
    net.record_canaries()
    while net.canaries or any(net.state.jobs[j].status is JobStatus.PENDING for j in net.rows):
        round_number += 1
        assert round_number <= limit, "a job outlived the liability horizon"
        net.reveal(round_number)
        net.act()
        net.reveal_canaries()
    return _outcome(net, online_log, active_log, auditors_log)


def _outcome(
    net: ReferenceRun, online: list[int], active: list[int], auditors: list[int]
) -> Outcome:
    """Settlement read back from the ledger: who the escrow went to, job by job."""
    params = net.params
    fee, verification_fee = net.config.fee, params.verification_fee
    names = ("epoch", "node", "cheated", "cost", "sampled", "auditor", "accused", "verdict",
             "reexecutions", "node_income", "node_slash", "validator_income", "validator_slash",
             "burned")
    columns: dict[str, list[Any]] = {name: [] for name in names}
    client_cost = []
    for job_id, row in net.rows.items():
        if row.get("canary"):
            continue
        job = net.state.jobs[job_id]
        if job.status is JobStatus.SETTLED:
            row["node_income"] += fee - verification_fee
            if job.verifier is not None:
                row["validator_income"] += verification_fee
                client_cost.append(fee)
            else:
                client_cost.append(fee - verification_fee)
        else:
            assert job.status is JobStatus.REFUNDED, f"job {row['index']} is still {job.status}"
            client_cost.append(0)
        for name in names:
            columns[name].append(row[name])
    accounts = net.state.accounts
    nodes = [accounts[k.public.raw] for k in net.node_keys]
    validators = [accounts[k.public.raw] for k in net.validator_keys]
    dtypes = {"cheated": bool, "sampled": bool, "accused": bool, "cost": np.float64}
    arrays = {
        name: np.array(values, dtype=dtypes.get(name, np.int64))
        for name, values in columns.items()
    }
    return Outcome(
        **arrays,
        client_cost=np.array(client_cost, dtype=np.int64),
        node_balance=np.array([a.balance + a.locked_total for a in nodes], dtype=np.int64),
        node_stake=np.array([a.node.amount for a in nodes], dtype=np.int64),
        node_slashed_out=np.array([a.node.slashed_out for a in nodes], dtype=bool),
        validator_balance=np.array([a.balance - net.float for a in validators], dtype=np.int64),
        validator_stake=np.array([a.validator.amount for a in validators], dtype=np.int64),
        validator_slashed_out=np.array([a.validator.slashed_out for a in validators], dtype=bool),
        validator_audits=net.audits,
        validator_reexecutions=net.reexecuted,
        client_balance=np.array(
            [accounts[k.public.raw].balance if k.public.raw in accounts else 0
             for k in net.client_keys],
            dtype=np.int64,
        ),
        online=np.array(online, dtype=np.int64),
        active=np.array(active, dtype=np.int64),
        auditors=np.array(auditors, dtype=np.int64),
        minted=net.state.minted - net.float * len(net.validator_keys),
        total_burned=net.state.burned,
        operator=net.operator(),
    )
