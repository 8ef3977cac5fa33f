"""The devnet's ledger service: the ledger and the beacon behind a libp2p endpoint.

One process owns the event log (:class:`slashing.Ledger`), settled there or on
an EVM chain (:class:`slashing.settlement.Settlement`), and the devnet beacon
key. Its nursery runs the host and one ticker that reveals a beacon
round every ``round_seconds``, appends it and gossips it on
``/assay/1/beacon/msgpack``. Everything else arrives on the ledger protocol as
framed requests, each a map ``{"op", fields…}`` checked whole before use
(:data:`OPS`: a missing, mistyped or unknown field is refused, naming it):

``record_job`` (request, commitment), ``attest`` (attestation), ``accuse`` (evidence)
    transactions named by the signed protocol messages they carry, from
    anyone: the rules check the signatures. The service builds the ledger
    event, so the roles never see the event format.
``accuse_invalid_proof`` (evidence, request)
    ``INVALID_PROOF`` evidence on a zk job with the job's signed request; the
    rule re-checks the proof with the checker the composition root installed
    (``slashing.rules.install_proof_checker``) and slashes the node or the
    accuser on the spot.
``bond``, ``unbond``, ``withdraw``, ``report_unavailable`` (tx)
    the account's own transactions, signed by it with its next nonce
    (:mod:`slashing.transactions`): the log proves who asked. An unsigned one
    would be the operator's, and the network never sends those.
``serve_data`` (job_id, output)
    a reported job's output, from anyone: the rule checks it against the
    committed output hash.
``mint`` (account, amount)
    the devnet faucet: only from the keys the operator listed (``faucet``),
    at most ``faucet_limit`` a time. ``RegisterZkModel`` and the genesis
    events never come from the network: the operator's zk models
    (:attr:`Genesis.zk_models`) are registered when the service starts, each
    once, and a start whose key for a model differs from the logged one fails.
``status``, ``job``, ``dispute``, ``beacon``, ``account``, ``zk_model``
    read-only queries answered from the folded state (``status`` carries the
    chain id every message must name; a job's ``zk`` says whether it is a zk
    job, and ``auditor`` whom the ledger assigned to audit it).
``duties`` (validator)
    what the ledger awaits from a validator: the jobs it is assigned to audit
    (each with its signed commitment and the round that drew it) and the
    disputes whose current committee it sits on. Validators learn their work
    here, from the ledger, not from gossip: a colluder that opens a dispute
    and tells nobody still has it decided by the committee the ledger drew.
``job_data`` (job_id)
    a pending job's signed request and commitment as the log recorded them,
    and its output if it was posted (:mod:`slashing.job_records`): validators
    re-execute from these, not from what the node sends. The newest settled
    sampled jobs of each node and model are kept too, for records
    (``pending`` false).
``record`` (job_id)
    the node's record before the job, as a ``RECORD`` dispute over it is
    judged (:func:`slashing.rules.record_of`): the ids of the node's last
    sampled jobs of the model, oldest first.
``jobs_since`` (after)
    the commitments recorded after log row ``after``, read from the log, so a
    validator that missed their gossip (or was down) can catch up.
``open_challenges`` (node)
    a node's jobs reported unavailable and not yet served (the node answers
    them with ``serve_data``).
``can_pay`` (client, nonce, fee, node, expiry_round)
    whether ``record_job`` would take this fee from this client for this
    node's job now, so a node checks before it computes.
``offences`` (account)
    what the ledger holds against an account and the evidence that proved
    it, so a slashed operator is told why.
``zk_model`` (model_id)
    the hashes of a zk model's registered verifying key, settings and SRS, so
    a node can refuse to serve, and a validator to check with, a key other
    than the one the ledger judges proofs under.

A refused transaction changes nothing (the rules are all-or-nothing) and is
counted in ``assay_ledger_tx_total{outcome="refused"}``; a request that does
not even decode, or whose fields are wrong, is counted in
``assay_requests_dropped_total``. ``/health`` (on ``http_port``) is 503 until
the beacon ticks, and again if it stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import trio

from protocol.beacon import DevnetBeacon
from protocol.economics import (
    in_flight_limit,
    max_slash_stake_at_risk,
     min_slash_fabrication,
    min_slash_posp,
)
from protocol.errors import MalformedMessage, ProtocolError
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Verdict
from protocol.net import schema, wire
from protocol.net.host import PeerHost
from protocol.net.metrics import Metrics
from slashing import (
    Accuse,
    AccuseInvalidProof,
    Attest,
    BeaconRound,
    Ledger,
    LedgerParams,
    Mint,
    RecordJob,
    RegisterBeacon,
    RegisterZkModel,
    ServeData,
    SetParams,
)
from slashing import constants as c
from slashing.events import AccountTx, Event, decode_event
from slashing.job_records import JobRecords
from slashing.rules import is_bonded, open_dispute_of, record_of
from slashing.settlement import Settlement
from slashing.state import JobStatus, State
from slashing.transactions import ACCOUNT_TRANSACTIONS

log = logging.getLogger("assay.ledger")

TICK_STALE_ROUNDS = 3
"""The beacon counts as stopped (``/health`` 503) after this many round lengths without a round."""
DEFAULT_FAUCET_LIMIT = 1_000_000


@dataclass(frozen=True)
class Genesis:
    """What a new ledger starts with: parameters and initial balances."""

    params: LedgerParams
    mints: tuple[tuple[bytes, int], ...]
    zk_models: tuple[RegisterZkModel, ...] = ()
    """The operator's zk models, registered at every start unless already on the log."""

    @classmethod
    def from_toml(cls, data: dict[str, Any]) -> Genesis:
        """``[params]`` overrides of the defaults and ``[[mint]]`` tables of account and amount."""
        overrides = data.get("params", {})
        known = {f.name for f in fields(LedgerParams)}
        if not isinstance(overrides, dict) or set(overrides) - known:
            raise MalformedMessage(f"genesis [params] may only set {sorted(known)}")
        params = safe_params(LedgerParams(**{**LedgerParams.default().__dict__, **overrides}))
        mints = []
        for entry in data.get("mint", []):
            try:
                mints.append((bytes.fromhex(entry["account"]), int(entry["amount"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise MalformedMessage(f"genesis [[mint]] entry {entry!r}: {exc}") from exc
        return cls(params=params, mints=tuple(mints))


def safe_params(params: LedgerParams) -> LedgerParams:
    """Move the fraud slash into the range every economic condition allows.

    Raised to the least value that keeps honest work the best response, or
    lowered to the most a node at the minimum stake can cover while keeping a
    job a round in flight (``p·S·D ≤`` the minimum stake). When the two cross,
    no slash suits p, and that is said.
    """
    e = params.economics()
    needed = max(min_slash_posp(e), min_slash_fabrication(e))
    most = max_slash_stake_at_risk(e)
    if needed > most:
        raise MalformedMessage(
            f"no fraud slash suits these parameters: honest work needs S >= {needed}, a node at "
            f"the minimum stake covers S <= {most} (p*S*D <= the minimum stake)"
        )
    slash = min(max(needed, params.fraud_slash), most)
    return LedgerParams(**{**params.__dict__, "fraud_slash": slash})


def _hex(value: bytes | None) -> bytes:
    return value if value is not None else b""


class LedgerService:
    def __init__(
        self,
        host: PeerHost,
        ledger: Settlement,
        beacon: DevnetBeacon,
        genesis: Genesis,
        round_seconds: float,
        metrics: Metrics,
        faucet: frozenset[bytes] = frozenset(),
        faucet_limit: int = DEFAULT_FAUCET_LIMIT,
    ) -> None:
        self.host = host
        self.ledger = ledger
        self.beacon = beacon
        self.round_seconds = round_seconds
        self.metrics = metrics
        self.faucet = faucet
        self.faucet_limit = faucet_limit
        if ledger.length == 0:
            self._genesis(genesis)
        self._catch_up_beacon()
        self._register_zk_models(genesis.zk_models)
        self.records = JobRecords(ledger)
        self._last_tick = 0.0
        host.serve(wire.PROTOCOL_LEDGER, self.handle)

    @classmethod
    def open(
        cls,
        key: SigningKey,
        database: Path,
        beacon_secret: int,
        genesis: Genesis,
        listen: str,
        round_seconds: float,
        metrics: Metrics,
        bootstrap: tuple[str, ...] = (),
        faucet: frozenset[bytes] = frozenset(),
        faucet_limit: int = DEFAULT_FAUCET_LIMIT,
        settle: Callable[[Ledger, DevnetBeacon], Settlement] | None = None,
    ) -> LedgerService:
        """``settle`` puts the opened log under another backend (the chain's); without it the
        service settles in the SQLite log alone."""
        host = PeerHost(key, listen, bootstrap, metrics)
        beacon = DevnetBeacon(beacon_secret)
        ledger = Ledger.open(database)
        try:
            settlement = settle(ledger, beacon) if settle is not None else ledger
        except BaseException:
            ledger.close()
            raise
        return cls(host, settlement, beacon, genesis, round_seconds, metrics, faucet,
                   faucet_limit)

    def _genesis(self, genesis: Genesis) -> None:
        self.ledger.append(RegisterBeacon(public_key=self.beacon.public_key, first_round=0))
        self.ledger.append(SetParams(params=genesis.params))
        for account, amount in genesis.mints:
            self.ledger.append(Mint(account=account, amount=amount))

    def _register_zk_models(self, models: tuple[RegisterZkModel, ...]) -> None:
        """Log each operator zk model not yet registered; refuse one logged with other keys."""
        for event in models:
            logged = self.ledger.state.zk_models.get(event.model_id)
            if logged is None:
                self.ledger.append(event)
                log.info("registered zk model %s", event.model_id.hex()[:16])
                continue
            ours = (sha256(event.verifying_key), sha256(event.settings), event.srs_sha256)
            if ours != (logged.vk_sha256, logged.settings_sha256, logged.srs_sha256):
                raise MalformedMessage(
                    f"zk model {event.model_id.hex()} is registered on the ledger with "
                    f"verifying key {logged.vk_sha256.hex()[:16]}…, settings "
                    f"{logged.settings_sha256.hex()[:16]}… and SRS {logged.srs_sha256.hex()[:16]}…;"
                    " the operator's artifacts differ (a model is registered once)"
                )

    def _catch_up_beacon(self) -> None:
        """Re-derive the revealed chain after a restart and check it is the one logged."""
        state = self.ledger.state
        if state.beacon_key != self.beacon.public_key:
            raise MalformedMessage("the beacon secret does not match the ledger's beacon key")
        for number in range(state.first_round, state.current_round + 1):
            revealed = self.beacon.reveal(number)
            if revealed.randomness != state.beacon_value(number):
                raise MalformedMessage(f"beacon round {number} differs from the logged one")

    # -- beacon --------------------------------------------------------------------------------
    def advance_round(self) -> BeaconRound:
        revealed = self.beacon.reveal(self.ledger.state.current_round + 1)
        event = BeaconRound(
            round=revealed.round, signature=revealed.signature, randomness=revealed.randomness
        )
        self.ledger.append(event)
        self.records.prune(self.ledger.state)
        self.metrics.beacon_round.set(revealed.round)
        self._last_tick = time.monotonic()
        return event

    async def _tick(self) -> None:
        while True:
            event = self.advance_round()
            payload = wire.encode_map(
                {"round": event.round, "signature": event.signature,
                 "randomness": event.randomness}
            )
            try:
                await self.host.publish(wire.TOPIC_BEACON, payload)
            except Exception as exc:  # no peers yet: rounds are also served on request
                log.debug("publishing round %d failed: %s", event.round, exc)
            await trio.sleep(self.round_seconds)

    def health(self) -> tuple[bool, dict[str, Any]]:
        ticking = time.monotonic() - self._last_tick < TICK_STALE_ROUNDS * self.round_seconds + 1
        checks: dict[str, Any] = {"beacon_ticking": self._last_tick > 0 and ticking,
                                  "listening": self.host.ready.is_set()}
        ready = all(checks.values())
        if not ready:
            checks["reason"] = "the beacon has not ticked yet" if not self._last_tick else (
                "the beacon stopped ticking" if not ticking else "the libp2p host is not up")
        self.metrics.ready.set(1 if ready else 0)
        return ready, {**checks, "round": self.ledger.state.current_round,
                       "length": self.ledger.length}

    # -- requests ------------------------------------------------------------------------------
    async def handle(self, data: bytes, sender: bytes) -> bytes:
        request = wire.decode_map(data, wire.MAX_REQUEST_BYTES[wire.PROTOCOL_LEDGER])
        op = request.get("op")
        if not isinstance(op, str) or op not in OPS:
            raise MalformedMessage(f"unknown ledger op {op!r:.40}; known: {sorted(OPS)}")
        spec = OPS[op]
        checked = schema.check_map(request, f"ledger {op}", {"op": schema.text, **spec.required},
                                   spec.optional)
        del checked["op"]
        return spec.answer(self, checked, sender)

    def _append(self, event: Event) -> bytes:
        try:
            entry = self.ledger.append(event)
        except ProtocolError as exc:
            self.metrics.ledger_tx.labels(event.TYPE, "refused").inc()
            return wire.error_response(str(exc))
        self.records.note(entry)
        self.metrics.ledger_tx.labels(event.TYPE, "accepted").inc()
        return wire.ok_response(seq=entry.seq)

    def _record_job(self, request: dict[str, Any], sender: bytes) -> bytes:
        return self._append(RecordJob(request=request["request"],
                                      commitment=request["commitment"]))

    def _attest(self, request: dict[str, Any], sender: bytes) -> bytes:
        return self._append(Attest(attestation=request["attestation"]))

    def _accuse(self, request: dict[str, Any], sender: bytes) -> bytes:
        return self._append(Accuse(evidence=request["evidence"]))

    def _accuse_invalid_proof(self, request: dict[str, Any], sender: bytes) -> bytes:
        return self._append(AccuseInvalidProof(evidence=request["evidence"],
                                               request=request["request"]))

    def _serve_data(self, request: dict[str, Any], sender: bytes) -> bytes:
        return self._append(ServeData(job_id=request["job_id"], output=request["output"]))

    def _mint(self, request: dict[str, Any], sender: bytes) -> bytes:
        """The devnet faucet: the operator's listed keys may mint, a bounded amount at a time."""
        if sender not in self.faucet:
            raise MalformedMessage(f"{sender.hex()[:16]}… is not a faucet key of this ledger")
        if not 1 <= request["amount"] <= self.faucet_limit:
            raise MalformedMessage(f"a faucet mint is 1..{self.faucet_limit} tokens")
        log.info("faucet: %s mints %d for %s", sender.hex()[:16], request["amount"],
                 request["account"].hex()[:16])
        return self._append(Mint(account=request["account"], amount=request["amount"]))

    def _status(self, request: dict[str, Any]) -> bytes:
        state = self.ledger.state
        params = state.params
        assert params is not None
        nodes = [a for a, acc in state.accounts.items()
                 if acc.node.amount >= c.MIN_STAKE[c.NODE] and not acc.node.slashed_out]
        validators = [a for a, acc in state.accounts.items()
                      if acc.validator.amount >= c.MIN_STAKE[c.VALIDATOR]
                      and not acc.validator.slashed_out]
        return wire.ok_response(
            round=state.current_round, beacon_key=_hex(state.beacon_key),
            chain_id=_hex(state.chain_id), audit_window=params.audit_window,
            vote_window=params.vote_window,
            sample_ppm=params.sample_ppm, committee_size=params.committee_size,
            challenge_window=params.challenge_window,
            availability_window=params.availability_window,
            unbonding_period=params.unbonding_period,
            verification_fee=params.verification_fee, reward=params.reward,
            min_node_stake=c.MIN_STAKE[c.NODE], min_validator_stake=c.MIN_STAKE[c.VALIDATOR],
            nodes=sorted(nodes), validators=sorted(validators), length=self.ledger.length,
        )

    def _job(self, request: dict[str, Any]) -> bytes:
        state = self.ledger.state
        job = state.jobs.get(request["job_id"])
        if job is None:
            return wire.ok_response(found=False)
        params = state.params
        assert params is not None
        dispute = open_dispute_of(state, job)
        return wire.ok_response(
            found=True, node=job.node, commitment_id=job.commitment_id,
            recorded_round=job.recorded_round, sample_round=job.sample_round,
            status=str(job.status), open_dispute=_hex(dispute.dispute_id if dispute else None),
            attested_by=[v for v, _ in job.attestations], zk=job.zk, sampled=job.sampled,
            auditor=_hex(job.auditor), assigned_round=job.assigned_round or 0,
            window_end=job.window_end(params.challenge_window),
            reported=job.unavailable_since is not None,
            reported_round=job.unavailable_since or 0, served=job.served_round is not None,
        )

    def _job_data(self, request: dict[str, Any]) -> bytes:
        record = self.records.record(request["job_id"])
        if record is None:
            return wire.ok_response(found=False)
        served = self.records.served(request["job_id"])
        extra = {"output": served} if served is not None else {}
        job = self.ledger.state.jobs.get(request["job_id"])
        return wire.ok_response(found=True, request=record.request,
                                commitment=record.commitment,
                                pending=job is not None and job.status is JobStatus.PENDING,
                                **extra)

    def _dispute(self, request: dict[str, Any]) -> bytes:
        dispute = self.ledger.state.disputes.get(request["dispute_id"])
        if dispute is None:
            return wire.ok_response(found=False)
        return wire.ok_response(
            found=True, job_id=dispute.job_id, committee=list(dispute.committee),
            opened_round=dispute.opened_round, drawn_round=dispute.drawn_round or 0,
            drawn=dispute.drawn_round is not None, accusers=list(dispute.accusers),
            open=dispute.is_open, outcome=str(dispute.outcome or ""),
            voted=list(dispute.voters()), on_record=dispute.on_record,
        )

    def _record(self, request: dict[str, Any]) -> bytes:
        """The record a ``RECORD`` dispute over the job is judged on (:func:`record_of`)."""
        if request["job_id"] not in self.ledger.state.jobs:
            return wire.ok_response(found=False, jobs=[])
        state = self.ledger.state
        job = state.jobs[request["job_id"]]
        return wire.ok_response(found=True, jobs=record_of(
            state, job.job_id, newest_first=self.records.order.earlier(job)))

    def _duties(self, request: dict[str, Any]) -> bytes:
        """The audits and committee votes the ledger awaits from ``validator``, at most
        ``DUTIES_PAGE`` of each (the rest come once these are answered)."""
        me = request["validator"]
        state = self.ledger.state
        audits: list[dict[str, Any]] = []
        for job_id in sorted(state.open_audits):
            job = state.jobs[job_id]
            record = self.records.record(job_id) if job.auditor == me else None
            if record is not None:
                audits.append({"job_id": job_id, "commitment": record.commitment,
                               "round": job.assigned_round or 0, "zk": job.zk})
                if len(audits) == DUTIES_PAGE:
                    break
        votes: list[dict[str, Any]] = []
        for dispute_id in sorted(state.open_disputes):
            dispute = state.disputes[dispute_id]
            seated = me in dispute.committee and me not in dispute.voters()
            record = self.records.record(dispute.job_id) if seated else None
            if record is not None:
                votes.append({"dispute_id": dispute_id, "job_id": dispute.job_id,
                              "commitment": record.commitment,
                              "round": dispute.drawn_round or 0})
                if len(votes) == DUTIES_PAGE:
                    break
        return wire.ok_response(audits=audits, votes=votes, round=state.current_round)

    def _open_challenges(self, request: dict[str, Any]) -> bytes:
        state = self.ledger.state
        jobs = sorted(j for j in state.open_challenges if state.jobs[j].node == request["node"])
        return wire.ok_response(jobs=jobs[:OPEN_CHALLENGES_PAGE])

    def _beacon(self, request: dict[str, Any]) -> bytes:
        number = request["round"]
        state = self.ledger.state
        if not state.first_round <= number <= state.current_round:
            return wire.ok_response(found=False)
        revealed = self.beacon.get(number)
        return wire.ok_response(found=True, round=number, signature=revealed.signature,
                                randomness=revealed.randomness)

    def _account(self, request: dict[str, Any]) -> bytes:
        state = self.ledger.state
        account = state.accounts.get(request["account"])
        if account is None:
            return wire.ok_response(found=False, round=state.current_round)
        roles = {}
        for role in c.ROLES:
            stake = account.stake(role)
            roles.update({f"{role}_stake": stake.amount, f"{role}_slashed_out": stake.slashed_out,
                          f"{role}_jailed_until": stake.jailed_until or 0,
                          f"{role}_offences": stake.offences})
        return wire.ok_response(
            found=True, round=state.current_round, balance=account.balance, nonce=account.nonce,
            unbonding=[{"role": e.role, "amount": e.amount, "release_round": e.release_round}
                       for e in account.unbonding],
            **roles,
        )

    def _can_pay(self, request: dict[str, Any]) -> bytes:
        reason = payment_refusal(self.ledger.state, request)
        return wire.ok_response(payable=reason is None, reason=reason or "")

    def _offences(self, request: dict[str, Any]) -> bytes:
        return wire.ok_response(offences=offences(self.ledger.state, request["account"]))

    def _zk_model(self, request: dict[str, Any]) -> bytes:
        model = self.ledger.state.zk_models.get(request["model_id"])
        if model is None:
            return wire.ok_response(found=False)
        return wire.ok_response(
            found=True, vk_sha256=model.vk_sha256, settings_sha256=model.settings_sha256,
            srs_sha256=model.srs_sha256, registered_round=model.registered_round,
        )

    # -- lifetime ------------------------------------------------------------------------------
    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; the log is flushed on every append, so stopping is safe."""
        async with self.host.running(), trio.open_nursery() as nursery:
            nursery.start_soon(self._tick)
            task_status.started()

    def close(self) -> None:
        self.ledger.close()


def payment_refusal(state: State, request: Mapping[str, Any]) -> str | None:
    """Why ``record_job`` would refuse a job with these terms now, or None if it would take it.

    ``request`` is a ``can_pay`` query: the client, its nonce and fee, the node
    and the request's expiry round, with ``held`` more of the client's balance
    spoken for by its jobs running at the node and ``in_flight`` jobs the node
    is running and has not recorded yet. The node asks before it computes: the
    same checks as the rule, on the state as it is (the client may still spend
    in between, so a node can lose at most one job's compute per client to a
    race). The fee is escrowed only when the job is recorded.
    """
    params = state.params
    assert params is not None
    client, nonce, fee = request["client"], request["nonce"], request["fee"]
    node, held = request["node"], request.get("held", 0)
    if state.current_round > request["expiry_round"]:
        return (f"the request expired after round {request['expiry_round']}; the ledger is at "
                f"round {state.current_round}")
    if not params.verification_fee <= fee <= params.verification_fee + params.reward:
        return (f"fee {fee} is outside {params.verification_fee}.."
                f"{params.verification_fee + params.reward} (verification fee plus at most R)")
    if (client, nonce) in state.request_nonces:
        return f"client {client.hex()[:16]}… already used nonce {nonce}"
    if not is_bonded(state, node, c.NODE):
        return f"node {node.hex()[:16]}… is not bonded as a node (or is jailed or slashed out)"
    stake = state.accounts[node].node.amount
    limit = in_flight_limit(stake, params.sample_ppm, params.fraud_slash)
    in_flight = state.node_jobs.get(node, 0) + request.get("in_flight", 0)
    if in_flight >= limit:
        return (f"node {node.hex()[:16]}… has {in_flight} jobs in flight, the most its stake "
                f"of {stake} covers (stake/(p*S) = {limit})")
    account = state.accounts.get(client)
    if account is None:
        return f"client {client.hex()[:16]}… has no account on the ledger (no tokens)"
    if account.balance < fee + held:
        return (f"client {client.hex()[:16]}… has balance {account.balance}, less than fee {fee}"
                + (f" plus {held} held for its jobs in flight" if held else ""))
    return None


def offences(state: State, account: bytes) -> list[dict[str, Any]]:
    """Every offence the state holds against ``account``: kind, role, job and evidence id
    (the dispute's, where a committee decided it)."""
    out: list[dict[str, Any]] = []
    for dispute in state.disputes.values():
        job = state.jobs[dispute.job_id]
        if dispute.outcome is Verdict.FRAUD:
            if dispute.node == account:
                out.append({"kind": "record" if dispute.on_record else "fraud", "role": c.NODE,
                            "job_id": dispute.job_id, "evidence": dispute.dispute_id})
            # on a record, the auditor's VALID on the job alone is not wrong (the rules')
            wrong = set() if dispute.on_record else {
                v for v, verdict in job.attestations if verdict is Verdict.VALID}
            wrong |= {v.validator for v in dispute.votes if v.verdict is Verdict.VALID}
            if account in wrong:
                out.append({"kind": "wrong_valid", "role": c.VALIDATOR,
                            "job_id": dispute.job_id, "evidence": dispute.dispute_id})
        elif dispute.outcome is Verdict.VALID and account in dispute.accusers:
            out.append({"kind": "false_accusation", "role": c.VALIDATOR,
                        "job_id": dispute.job_id, "evidence": dispute.dispute_id})
    for node, job_id in sorted(state.equivocations):
        if node == account:
            out.append({"kind": "equivocation", "role": c.NODE, "job_id": job_id,
                        "evidence": b""})
    for job in state.jobs.values():
        if job.node == account and job.job_id in state.proof_frauds:
            out.append({"kind": "invalid_proof", "role": c.NODE, "job_id": job.job_id,
                        "evidence": b""})
        if (job.node == account and job.availability_reporter is not None
                and job.served_round is None and job.status is JobStatus.REFUNDED):
            out.append({"kind": "unavailable", "role": c.NODE, "job_id": job.job_id,
                        "evidence": b""})
        if job.job_id in state.revealed_canaries and any(
                v == account and verdict is Verdict.VALID for v, verdict in job.attestations):
            out.append({"kind": "lazy_validator", "role": c.VALIDATOR, "job_id": job.job_id,
                        "evidence": b""})
    return out


JOBS_SINCE_SCAN = 4096
"""Log rows one ``jobs_since`` query reads at most; the reply's cursor says where it stopped."""
JOBS_SINCE_LIMIT = 512
OPEN_CHALLENGES_PAGE = 256
DUTIES_PAGE = 64
"""Audits (and votes) one ``duties`` answer lists at most: each carries a signed commitment,
which may hold a tensor output or a proof."""


def _jobs_since(service: LedgerService, request: dict[str, Any]) -> bytes:
    """Commitments of the jobs recorded after row ``after``, oldest first, one page at a time."""
    after, length = request["after"], service.ledger.length
    if not 0 <= after <= length:
        raise MalformedMessage(f"after must be a log row in 0..{length}")
    jobs: list[bytes] = []
    cursor = after
    for entry in service.ledger.events(after):
        cursor = entry.seq
        if isinstance(entry.event, RecordJob):
            jobs.append(entry.event.commitment)
        if len(jobs) >= JOBS_SINCE_LIMIT or cursor - after >= JOBS_SINCE_SCAN:
            break
    return wire.ok_response(jobs=jobs, cursor=cursor, length=length)


@dataclass(frozen=True)
class Op:
    """One ledger op: its fields (each checked) and how it is answered."""

    required: Mapping[str, schema.Check]
    answer: Callable[[LedgerService, dict[str, Any], bytes], bytes]
    optional: Mapping[str, schema.Check] | None = None


def _query(method: Callable[[LedgerService, dict[str, Any]], bytes]
           ) -> Callable[[LedgerService, dict[str, Any], bytes], bytes]:
    return lambda service, request, sender: method(service, request)


def _account_tx(kind: str) -> Callable[[LedgerService, dict[str, Any], bytes], bytes]:
    """The op for one kind of account transaction: the signed event, appended as sent."""
    expected = ACCOUNT_TRANSACTIONS[kind]

    def send(service: LedgerService, request: dict[str, Any], sender: bytes) -> bytes:
        event = decode_event(request["tx"])
        if not isinstance(event, expected):
            raise MalformedMessage(f"ledger {kind}: tx is a {event.TYPE}, not a {kind}")
        assert isinstance(event, AccountTx)
        if not event.is_signed:
            raise MalformedMessage(f"ledger {kind}: tx must be signed by its {event.SIGNER}")
        return service._append(event)

    return send


_ID = schema.digest
OPS: Mapping[str, Op] = {
    "record_job": Op({"request": schema.blob, "commitment": schema.blob},
                     LedgerService._record_job),
    "attest": Op({"attestation": schema.blob}, LedgerService._attest),
    "accuse": Op({"evidence": schema.blob}, LedgerService._accuse),
    "accuse_invalid_proof": Op({"evidence": schema.blob, "request": schema.blob},
                               LedgerService._accuse_invalid_proof),
    "serve_data": Op({"job_id": _ID, "output": schema.blob}, LedgerService._serve_data),
    "mint": Op({"account": _ID, "amount": schema.uint}, LedgerService._mint),
    **{kind: Op({"tx": schema.blob}, _account_tx(kind)) for kind in ACCOUNT_TRANSACTIONS},
    "status": Op({}, _query(LedgerService._status)),
    "job": Op({"job_id": _ID}, _query(LedgerService._job)),
    "job_data": Op({"job_id": _ID}, _query(LedgerService._job_data)),
    "dispute": Op({"dispute_id": _ID}, _query(LedgerService._dispute)),
    "record": Op({"job_id": _ID}, _query(LedgerService._record)),
    "duties": Op({"validator": _ID}, _query(LedgerService._duties)),
    "open_challenges": Op({"node": _ID}, _query(LedgerService._open_challenges)),
    "beacon": Op({"round": schema.uint}, _query(LedgerService._beacon)),
    "account": Op({"account": _ID}, _query(LedgerService._account)),
    "can_pay": Op({"client": _ID, "nonce": schema.uint, "fee": schema.uint, "node": _ID,
                   "expiry_round": schema.uint},
                  _query(LedgerService._can_pay), {"held": schema.uint, "in_flight": schema.uint}),
    "offences": Op({"account": _ID}, _query(LedgerService._offences)),
    "jobs_since": Op({"after": schema.uint}, _query(_jobs_since)),
    "zk_model": Op({"model_id": _ID}, _query(LedgerService._zk_model)),
}
