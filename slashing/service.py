"""The devnet's ledger service: the SQLite ledger and the beacon behind a libp2p endpoint.

One process owns the event log (:class:`slashing.Ledger`) and the devnet
beacon key. Its nursery runs the host and one ticker that reveals a beacon
round every ``round_seconds``, appends it and gossips it on
``/assay/1/beacon/msgpack``. Everything else arrives on the ledger protocol as
one framed request per stream:

``{"op": "record_job" | "attest" | "accuse", ...}``
    transactions named by the signed protocol messages they carry (a request
    and a commitment, an attestation, evidence), from anyone: the rules check
    the signatures. The service builds the ledger event, so the roles never
    see the event format.
``{"op": "accuse_invalid_proof", "evidence", "request"}``
    ``INVALID_PROOF`` evidence on a zk job with the job's signed request; the
    rule re-checks the proof with the checker the composition root installed
    (``slashing.rules.install_proof_checker``) and slashes the node or the
    accuser on the spot.
``{"op": "bond", "role", "amount"}``
    bonds the *sender's* tokens: the Noise handshake authenticated the
    sender's key, which is the account. ``Mint``, ``RegisterZkModel`` and the
    genesis events never come from the network: the operator's zk models
    (:attr:`Genesis.zk_models`) are registered when the service starts, each
    once, and a start whose key for a model differs from the logged one fails.
``{"op": "status" | "job" | "dispute" | "beacon" | "account", ...}``
    read-only queries answered from the folded state (``status`` carries the
    chain id every message must name; a job's ``zk`` says whether it is a zk
    job, and ``auditor`` whom the ledger assigned to audit it).
``{"op": "duties", "validator"}``
    what the ledger awaits from a validator: the jobs it is assigned to audit
    (each with its signed commitment and the round that drew it) and the
    disputes whose current committee it sits on. Validators learn their work
    here, from the ledger, not from gossip: a colluder that opens a dispute
    and tells nobody still has it decided by the committee the ledger drew.
``{"op": "jobs_since", "after": row}``
    the commitments recorded after log row ``after``, read from the log, so a
    validator that missed their gossip (or was down) can catch up.
``{"op": "zk_model", "model_id"}``
    the hashes of a zk model's registered verifying key, settings and SRS, so
    a node can refuse to serve, and a validator to check with, a key other
    than the one the ledger judges proofs under.

A refused transaction changes nothing (the rules are all-or-nothing) and is
counted in ``assay_ledger_tx_total{outcome="refused"}``; a request that does
not even decode is counted in ``assay_requests_dropped_total``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import trio

from protocol.beacon import DevnetBeacon
from protocol.economics import max_slash_stake_at_risk, min_slash_fabrication, min_slash_posp
from protocol.errors import MalformedMessage, ProtocolError
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.net import wire
from protocol.net.host import PeerHost
from protocol.net.metrics import Metrics
from slashing import (
    Accuse,
    AccuseInvalidProof,
    Attest,
    BeaconRound,
    Bond,
    Ledger,
    LedgerParams,
    Mint,
    RecordJob,
    RegisterBeacon,
    RegisterZkModel,
    SetParams,
)
from slashing import constants as c
from slashing.events import Event
from slashing.rules import open_dispute_of
from slashing.state import JobStatus

log = logging.getLogger("assay.ledger")

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
        ledger: Ledger,
        beacon: DevnetBeacon,
        genesis: Genesis,
        round_seconds: float,
        metrics: Metrics,
    ) -> None:
        self.host = host
        self.ledger = ledger
        self.beacon = beacon
        self.round_seconds = round_seconds
        self.metrics = metrics
        if ledger.length == 0:
            self._genesis(genesis)
        self._catch_up_beacon()
        self._register_zk_models(genesis.zk_models)
        self.commitments: dict[bytes, bytes] = {}
        """Signed commitments of the jobs not yet final, by job id, for ``duties``."""
        self._remember_pending_commitments()
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
    ) -> LedgerService:
        host = PeerHost(key, listen, bootstrap, metrics)
        return cls(host, Ledger.open(database), DevnetBeacon(beacon_secret), genesis,
                   round_seconds, metrics)

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

    def _remember_pending_commitments(self) -> None:
        """Read the commitments of the jobs still pending back from the log (after a restart)."""
        jobs = self.ledger.state.jobs
        for entry in self.ledger.events(0):
            event = entry.event
            if isinstance(event, RecordJob):
                job = jobs.get(event.job_id)
                if job is not None and job.status is JobStatus.PENDING:
                    self.commitments[event.job_id] = event.commitment

    def _forget_final_commitments(self) -> None:
        jobs = self.ledger.state.jobs
        for job_id in [j for j in self.commitments if jobs[j].status is not JobStatus.PENDING]:
            del self.commitments[job_id]

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
        self.metrics.beacon_round.set(revealed.round)
        self._forget_final_commitments()
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

    # -- requests ------------------------------------------------------------------------------
    async def handle(self, data: bytes, sender: bytes) -> bytes:
        request = wire.decode_map(data, wire.MAX_REQUEST_BYTES[wire.PROTOCOL_LEDGER])
        op = request.get("op")
        if isinstance(op, str) and op in TRANSACTIONS:
            return TRANSACTIONS[op](self, request, sender)
        if isinstance(op, str) and op in QUERIES:
            return QUERIES[op](self, request)
        raise MalformedMessage(f"unknown ledger op {op!r}")

    def _append(self, event: Event) -> bytes:
        try:
            entry = self.ledger.append(event)
        except ProtocolError as exc:
            self.metrics.ledger_tx.labels(event.TYPE, "refused").inc()
            return wire.error_response(str(exc))
        self.metrics.ledger_tx.labels(event.TYPE, "accepted").inc()
        return wire.ok_response(seq=entry.seq)

    def _record_job(self, request: dict[str, Any], sender: bytes) -> bytes:
        event = RecordJob(request=_blob(request, "request"),
                          commitment=_blob(request, "commitment"))
        reply = self._append(event)
        job = self.ledger.state.jobs.get(event.job_id)
        if job is not None and job.commitment_id == event.sealed_commitment.content_id:
            self.commitments[event.job_id] = event.commitment
        return reply

    def _attest(self, request: dict[str, Any], sender: bytes) -> bytes:
        return self._append(Attest(attestation=_blob(request, "attestation")))

    def _accuse(self, request: dict[str, Any], sender: bytes) -> bytes:
        return self._append(Accuse(evidence=_blob(request, "evidence")))

    def _accuse_invalid_proof(self, request: dict[str, Any], sender: bytes) -> bytes:
        return self._append(AccuseInvalidProof(evidence=_blob(request, "evidence"),
                                               request=_blob(request, "request")))

    def _bond(self, request: dict[str, Any], sender: bytes) -> bytes:
        """Bond the sender's own tokens: Noise authenticated the sender as the account."""
        role, amount = request.get("role"), request.get("amount")
        if not isinstance(amount, int):
            raise MalformedMessage("bond amount must be an integer")
        return self._append(Bond(account=sender, role=str(role), amount=amount))

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
            sample_ppm=params.sample_ppm, committee_size=params.committee_size,
            verification_fee=params.verification_fee, reward=params.reward,
            nodes=sorted(nodes), validators=sorted(validators), length=self.ledger.length,
        )

    def _job(self, request: dict[str, Any]) -> bytes:
        job = self.ledger.state.jobs.get(_bytes(request, "job_id"))
        if job is None:
            return wire.ok_response(found=False)
        dispute = open_dispute_of(self.ledger.state, job)
        return wire.ok_response(
            found=True, node=job.node, commitment_id=job.commitment_id,
            recorded_round=job.recorded_round, sample_round=job.sample_round,
            status=str(job.status), open_dispute=_hex(dispute.dispute_id if dispute else None),
            attested_by=[v for v, _ in job.attestations], zk=job.zk, sampled=job.sampled,
            auditor=_hex(job.auditor), assigned_round=job.assigned_round or 0,
        )

    def _dispute(self, request: dict[str, Any]) -> bytes:
        dispute = self.ledger.state.disputes.get(_bytes(request, "dispute_id"))
        if dispute is None:
            return wire.ok_response(found=False)
        return wire.ok_response(
            found=True, job_id=dispute.job_id, committee=list(dispute.committee),
            opened_round=dispute.opened_round, drawn_round=dispute.drawn_round or 0,
            drawn=dispute.drawn_round is not None, accusers=list(dispute.accusers),
            open=dispute.is_open, outcome=str(dispute.outcome or ""),
        )

    def _duties(self, request: dict[str, Any]) -> bytes:
        """The audits and committee votes the ledger awaits from ``validator``."""
        me = _bytes(request, "validator")
        state = self.ledger.state
        audits = []
        for job_id in sorted(state.open_audits):
            job = state.jobs[job_id]
            if job.auditor == me and job_id in self.commitments:
                audits.append({"job_id": job_id, "commitment": self.commitments[job_id],
                               "round": job.assigned_round or 0, "zk": job.zk})
        votes = []
        for dispute_id in sorted(state.open_disputes):
            dispute = state.disputes[dispute_id]
            voted = me in dispute.voters()
            if me in dispute.committee and not voted and dispute.job_id in self.commitments:
                votes.append({"dispute_id": dispute_id, "job_id": dispute.job_id,
                              "commitment": self.commitments[dispute.job_id],
                              "round": dispute.drawn_round or 0})
        return wire.ok_response(audits=audits, votes=votes, round=state.current_round)

    def _beacon(self, request: dict[str, Any]) -> bytes:
        number = request.get("round")
        state = self.ledger.state
        if not isinstance(number, int) or not state.first_round <= number <= state.current_round:
            return wire.ok_response(found=False)
        revealed = self.beacon.get(number)
        return wire.ok_response(found=True, round=number, signature=revealed.signature,
                                randomness=revealed.randomness)

    def _account(self, request: dict[str, Any]) -> bytes:
        account = self.ledger.state.accounts.get(_bytes(request, "account"))
        if account is None:
            return wire.ok_response(found=False)
        return wire.ok_response(
            found=True, balance=account.balance, node_stake=account.node.amount,
            node_slashed_out=account.node.slashed_out, validator_stake=account.validator.amount,
            validator_slashed_out=account.validator.slashed_out,
        )

    def _zk_model(self, request: dict[str, Any]) -> bytes:
        model = self.ledger.state.zk_models.get(_bytes(request, "model_id"))
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
            self.metrics.ready.set(1)
            task_status.started()

    def close(self) -> None:
        self.ledger.close()


def _bytes(request: dict[str, Any], name: str) -> bytes:
    value = request.get(name)
    if not isinstance(value, bytes) or len(value) != 32:
        raise MalformedMessage(f"{name} must be 32 bytes")
    return value


def _blob(request: dict[str, Any], name: str) -> bytes:
    value = request.get(name)
    if not isinstance(value, bytes) or not value:
        raise MalformedMessage(f"{name} must be the bytes of a signed message")
    return value


JOBS_SINCE_SCAN = 4096
"""Log rows one ``jobs_since`` query reads at most; the reply's cursor says where it stopped."""
JOBS_SINCE_LIMIT = 512


def _jobs_since(service: LedgerService, request: dict[str, Any]) -> bytes:
    """Commitments of the jobs recorded after row ``after``, oldest first, one page at a time."""
    after, length = request.get("after", 0), service.ledger.length
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= length:
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


TRANSACTIONS = {
    "record_job": LedgerService._record_job,
    "attest": LedgerService._attest,
    "accuse": LedgerService._accuse,
    "accuse_invalid_proof": LedgerService._accuse_invalid_proof,
    "bond": LedgerService._bond,
}
QUERIES = {
    "status": LedgerService._status,
    "duties": LedgerService._duties,
    "job": LedgerService._job,
    "dispute": LedgerService._dispute,
    "beacon": LedgerService._beacon,
    "account": LedgerService._account,
    "jobs_since": _jobs_since,
    "zk_model": LedgerService._zk_model,
}
