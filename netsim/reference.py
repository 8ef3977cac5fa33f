"""The reference path: every job is a real signed message judged by the real ledger rules.

Clients sign :class:`JobRequest`\\ s, nodes sign :class:`Commitment`\\ s, validators
sign :class:`Attestation`\\ s and :class:`Evidence`, and each is recorded as a
``slashing`` event folded into one :class:`slashing.State` with
:func:`slashing.rules.process_event` (the SQLite log is left out: it adds a
disk write per event and no rule). Accusations go through
:func:`slashing.apply_event`, which leaves the state untouched when the ledger
refuses one. Sampling and the auditor are drawn with
:func:`protocol.sampling.sampled` and :func:`verifier.sampling.assigned_validator`
on the beacon values in the ledger's state; committees are drawn by the ledger
itself. Nothing here computes money: balances and stakes are read back from
the state.

Each epoch e is one beacon round: jobs are recorded in round e, round e+1 is
revealed, and the validators audit the jobs it sampled, as in ``assay demo``.
After the last epoch the beacon runs on until every challenge window has
closed and every fee is settled. About 1 ms a job: for checking the fast path
and for small runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from netsim import behaviour, jobs
from netsim.beacon import ChainBeacon
from netsim.genesis import check_params, client_funds
from netsim.outcome import FRAUD, INCONCLUSIVE, NO_DISPUTE, REFUSED, VALID, Outcome
from netsim.population import Population, client_key, node_key, validator_key
from protocol.messages import Attestation, Commitment, Evidence, Offence, Verdict
from protocol.sampling import sampled
from slashing import (
    Accuse,
    Attest,
    BeaconRound,
    Bond,
    Event,
    LedgerRuleError,
    Mint,
    RecordJob,
    RegisterBeacon,
    SetParams,
    State,
    apply_event,
)
from slashing import constants as c
from slashing.rules import is_bonded_node, is_bonded_validator, process_event
from slashing.state import JobStatus
from verifier.sampling import assigned_validator

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
        self.record(RegisterBeacon(public_key=self.beacon.public_key, first_round=0))
        self.record(SetParams(params=self.params))
        funds = client_funds(self.config, total_jobs)
        if funds:
            for key in self.client_keys:
                self.record(Mint(account=key.public.raw, amount=funds))
        for key, role, bond in [
            *((k, c.NODE, self.config.node_bond) for k in self.node_keys),
            *((k, c.VALIDATOR, self.config.validator_bond) for k in self.validator_keys),
        ]:
            self.record(Mint(account=key.public.raw, amount=bond))
            self.record(Bond(account=key.public.raw, role=role, amount=bond))
        self.reveal(0)

    def bonded_validators(self) -> list[bytes]:
        """Validators the ledger lets act now (bonded, not jailed, not slashed out)."""
        ids = (k.public.raw for k in self.validator_keys)
        return [v for v in ids if is_bonded_validator(self.state, v)]

    def bonded_nodes(self) -> np.ndarray:
        return np.array(
            [is_bonded_node(self.state, k.public.raw) for k in self.node_keys], dtype=bool
        )

    def money(self, node: int) -> tuple[int, int, int, int, int]:
        """(node balance, node stake, validators' balances, validators' stakes, burned)."""
        accounts = self.state.accounts
        account = accounts[self.node_keys[node].public.raw]
        validators = [accounts[k.public.raw] for k in self.validator_keys]
        return (
            account.balance,
            account.node.amount,
            sum(a.balance for a in validators),
            sum(a.validator.amount for a in validators),
            self.state.burned,
        )


def run_reference(
    population: Population, on_epoch: Callable[[int], None] | None = None
) -> Outcome:
    config = population.config
    net = ReferenceRun(population)
    counts = behaviour.arrivals(population)
    net.genesis(int(counts.sum()))
    n, m = config.nodes, config.validators
    params = config.ledger
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "epoch", "node", "cheated", "cost", "sampled", "auditor", "accused", "verdict",
            "reexecutions", "node_income", "node_slash", "validator_income", "validator_slash",
            "burned",
        )
    }
    job_ids: list[bytes] = []
    identity = jobs.JobIds(population)
    audits = np.zeros(m, dtype=np.int64)
    reexecuted = np.zeros(m, dtype=np.int64)
    online = np.ones(n, dtype=bool)
    streak = np.zeros(n, dtype=np.int64)
    online_log, active_log, auditors_log = [], [], []
    index = 0
    for epoch in range(config.epochs):
        active = online & net.bonded_nodes()
        online_log.append(int(online.sum()))
        active_log.append(int(active.sum()))
        draw = behaviour.draw_epoch(population, epoch, int(counts[epoch]), active, streak)
        served = []
        for node, cheated in zip(draw.node.tolist(), draw.cheated.tolist(), strict=True):
            client = net.client_keys[index % config.clients]
            request = jobs.request(population, index).signed(client)
            commitment = jobs.commitment(population, request, node, cheated).signed(
                net.node_keys[node]
            )
            assert identity.ids(index, node, cheated) == (request.job_id, commitment.content_id)
            net.record(RecordJob(request=request.encode(), commitment=commitment.encode()))
            served.append(commitment)
            job_ids.append(request.job_id)
            index += 1
        net.reveal(epoch + 1)
        auditors_log.append(len(net.bonded_validators()))
        epoch_sampled = np.zeros(len(served), dtype=bool)
        for j, commitment in enumerate(served):
            node, cheated = int(draw.node[j]), bool(draw.cheated[j])
            row = {
                "epoch": epoch, "node": node, "cheated": cheated,
                "cost": float(population.node_cost[node]), "sampled": False, "auditor": -1,
                "accused": False, "verdict": NO_DISPUTE, "reexecutions": 0, "node_income": 0,
                "node_slash": 0, "validator_income": 0, "validator_slash": 0, "burned": 0,
            }
            job = net.state.jobs[commitment.job_id]
            beacon_value = net.state.beacon_value(job.sample_round)
            assert beacon_value is not None
            if sampled(beacon_value, job.job_id, job.commitment_id, params.sample_ppm):
                row["sampled"] = epoch_sampled[j] = True
                _audit(net, population, row, job.sample_round, commitment, float(draw.grief[j]),
                       audits, reexecuted)
            for name, value in row.items():
                columns[name].append(value)
        streak = behaviour.next_streak(population, streak, draw.node, epoch_sampled)
        online = behaviour.next_online(population, online, draw.churn)
        if on_epoch is not None:
            on_epoch(1)
    for extra in range(params.challenge_window + 2):
        net.reveal(config.epochs + 1 + extra)
    return _outcome(
        net, columns, job_ids, audits, reexecuted, online_log, active_log, auditors_log
    )


def _audit(
    net: ReferenceRun,
    population: Population,
    row: dict[str, Any],
    sample_round: int,
    commitment: Commitment,
    grief: float,
    audits: np.ndarray,
    reexecuted: np.ndarray,
) -> None:
    """The assigned validator audits a sampled job; a mismatch goes to a committee."""
    node, cheated = int(row["node"]), bool(row["cheated"])
    job_id, commitment_id = commitment.job_id, commitment.content_id
    beacon_value = net.state.beacon_value(sample_round)
    assert beacon_value is not None
    chosen = assigned_validator(beacon_value, job_id, commitment_id, net.bonded_validators())
    if chosen is None:
        return
    v = net.validator_index[chosen]
    row["auditor"] = v
    audits[v] += 1
    accuse, reexec = behaviour.audit_action(population, v, node, cheated, grief)
    if reexec:
        row["reexecutions"] = 1
        reexecuted[v] += 1
    key = net.validator_keys[v]
    if not accuse:
        attestation = Attestation(
            job_id=job_id, commitment_id=commitment_id, validator=chosen, verdict=Verdict.VALID,
            beacon_round=sample_round,
            observed_hash=jobs.honest_output(job_id) if reexec else b"",
        ).signed(key)
        net.record(Attest(attestation=attestation.encode()))
        return
    row["accused"] = True
    observed = jobs.honest_output(job_id) if cheated else jobs.griefing_output(job_id)
    evidence = Evidence(
        offence=Offence.MISMATCH, job_id=job_id, accuser=chosen, commitment=commitment.encode(),
        observed_hash=observed, beacon_round=sample_round,
    ).signed(key)
    before = net.money(node)
    try:
        net.state = apply_event(net.state, Accuse(evidence=evidence.encode()))
    except LedgerRuleError:
        row["verdict"] = REFUSED
        return
    dispute = net.state.disputes[evidence.content_id]
    for member in dispute.committee:
        w = net.validator_index[member]
        verdict, member_reexec = behaviour.committee_vote(population, w, node, cheated)
        if member_reexec:
            row["reexecutions"] += 1
            reexecuted[w] += 1
        vote = Attestation(
            job_id=job_id, commitment_id=commitment_id, validator=member, verdict=verdict,
            beacon_round=dispute.opened_round,
            observed_hash=jobs.output_hash(job_id, cheated) if member_reexec else b"",
        ).signed(net.validator_keys[w])
        net.record(Attest(attestation=vote.encode()))
    outcome = net.state.disputes[evidence.content_id].outcome
    assert outcome is not None, "the last committee vote resolves the dispute"
    row["verdict"] = _VERDICT_CODES[outcome]
    after = net.money(node)
    row["node_income"] = after[0] - before[0]
    row["node_slash"] = before[1] - after[1]
    row["validator_income"] = after[2] - before[2]
    row["validator_slash"] = before[3] - after[3]
    row["burned"] = after[4] - before[4]


def _outcome(
    net: ReferenceRun,
    columns: dict[str, list[Any]],
    job_ids: list[bytes],
    audits: np.ndarray,
    reexecuted: np.ndarray,
    online: list[int],
    active: list[int],
    auditors: list[int],
) -> Outcome:
    """Settlement read back from the ledger: who the escrow went to, job by job."""
    params = net.params
    fee, verification_fee = net.config.fee, params.verification_fee
    client_cost = []
    for j, job_id in enumerate(job_ids):
        job = net.state.jobs[job_id]
        if job.status is JobStatus.SETTLED:
            columns["node_income"][j] += fee - verification_fee
            if job.verifier is not None:
                columns["validator_income"][j] += verification_fee
                client_cost.append(fee)
            else:
                client_cost.append(fee - verification_fee)
        else:
            assert job.status is JobStatus.REFUNDED, f"job {j} is still {job.status}"
            client_cost.append(0)
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
        node_balance=np.array([a.balance for a in nodes], dtype=np.int64),
        node_stake=np.array([a.node.amount for a in nodes], dtype=np.int64),
        node_slashed_out=np.array([a.node.slashed_out for a in nodes], dtype=bool),
        validator_balance=np.array([a.balance for a in validators], dtype=np.int64),
        validator_stake=np.array([a.validator.amount for a in validators], dtype=np.int64),
        validator_slashed_out=np.array([a.validator.slashed_out for a in validators], dtype=bool),
        validator_audits=audits,
        validator_reexecutions=reexecuted,
        client_balance=np.array(
            [accounts[k.public.raw].balance if k.public.raw in accounts else 0
             for k in net.client_keys],
            dtype=np.int64,
        ),
        online=np.array(online, dtype=np.int64),
        active=np.array(active, dtype=np.int64),
        auditors=np.array(auditors, dtype=np.int64),
        minted=net.state.minted,
        total_burned=net.state.burned,
    )
