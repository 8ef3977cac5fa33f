"""The validator as a long-running service: follow, sample, re-execute, attest, accuse, vote.

Its nursery runs the libp2p host, the ledger status refresher, and one worker
that does the slow part (fetch job data, re-execute) one job at a time. The
gossip handlers only file work:

* a commitment (``/assay/1/commitments``) is remembered until the beacon round
  that samples it is known;
* a beacon round (checked against the BLS chain) settles which remembered
  jobs are sampled; those assigned to this validator are queued;
* evidence opens a dispute on the ledger; if this validator sits on its
  committee, a vote is queued.

Every attestation, evidence and vote is written to the signing journal
*before* it is sent, keyed by job: a restarted validator that meets the same
job again re-sends what it signed, never a second verdict.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import trio

from assay.beacon import BeaconRound, DevnetBeaconVerifier
from assay.config import ValidatorConfig
from assay.errors import ProtocolError
from assay.keystore import SigningJournal
from assay.messages import Attestation, Commitment, Evidence, JobRequest
from assay.net import validate, wire
from assay.net.host import PeerHost
from assay.net.http import metrics_app, serve_http
from assay.net.ledger_client import LedgerClient
from assay.net.metrics import Metrics
from verifier.sampling import assigned_validator, sampled
from verifier.validator import Validator

log = logging.getLogger("assay.validator")

AUDIT, VOTE = "audit", "vote"
PENDING_LIMIT = 100_000
PENDING_TTL_S = 120.0
QUEUE_LIMIT = 1_000
DISPUTE_LOOKUPS = 20


@dataclass(frozen=True)
class Work:
    kind: str  # AUDIT or VOTE
    commitment: Commitment
    beacon_round: int


class ValidatorService:
    def __init__(
        self,
        config: ValidatorConfig,
        validator: Validator,
        host: PeerHost,
        journal: SigningJournal,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.validator = validator
        self.host = host
        self.journal = journal
        self.metrics = metrics
        self.ledger = LedgerClient(host, config.ledger)
        self.pending: dict[bytes, tuple[Commitment, float]] = {}
        self.rounds: dict[int, BeaconRound] = {}
        self._beacon: DevnetBeaconVerifier | None = None
        self._send, self._receive = trio.open_memory_channel[Work](QUEUE_LIMIT)
        host.subscribe(wire.TOPIC_COMMITMENTS, validate.commitments(self.ledger),
                       self.on_commitment)
        host.subscribe(wire.TOPIC_BEACON, validate.beacon_rounds(self.ledger), self.on_beacon)
        host.subscribe(wire.TOPIC_EVIDENCE, validate.evidence(self.ledger), self.on_evidence)
        host.subscribe(wire.TOPIC_ATTESTATIONS, validate.attestations(self.ledger),
                       self.on_attestation)

    @property
    def me(self) -> bytes:
        return self.validator.validator_id

    def _enqueue(self, work: Work) -> None:
        try:
            self._send.send_nowait(work)
        except trio.WouldBlock:
            self.metrics.gossip_dropped.labels(wire.TOPIC_COMMITMENTS, "backlog").inc()

    # -- gossip handlers -----------------------------------------------------------------------
    async def on_commitment(self, commitment: Commitment, sender: bytes) -> None:
        if len(self.pending) >= PENDING_LIMIT:
            self.metrics.gossip_dropped.labels(wire.TOPIC_COMMITMENTS, "backlog").inc()
            return
        self.pending[commitment.job_id] = (commitment, time.monotonic())

    async def on_attestation(self, attestation: Attestation, sender: bytes) -> None:
        """Other validators' verdicts are counted (by the validator) and otherwise left alone."""

    async def _beacon_round(self, number: int) -> BeaconRound | None:
        """Round ``number``, fetched from the ledger if gossip missed it, checked on the chain."""
        if number in self.rounds:
            return self.rounds[number]
        reply = await self.ledger.call("beacon", round=number)
        if not reply.get("found"):
            return None
        candidate = BeaconRound(number, reply["signature"], reply["randomness"])
        return candidate if await self._accept_round(candidate) else None

    async def _accept_round(self, candidate: BeaconRound) -> bool:
        if self._beacon is None:
            self._beacon = DevnetBeaconVerifier(self.ledger.status["beacon_key"])
        if candidate.round == 0:
            previous = self._beacon.genesis_seed
        else:
            before = await self._beacon_round(candidate.round - 1)
            if before is None:
                return False
            previous = before.signature
        if not self._beacon.verify(candidate, previous):
            self.metrics.gossip_dropped.labels(wire.TOPIC_BEACON, "bad_signature").inc()
            return False
        self.rounds[candidate.round] = candidate
        self.metrics.beacon_round.set(candidate.round)
        return True

    async def on_beacon(self, value: dict[str, Any], sender: bytes) -> None:
        if not self.ledger.reachable():
            return
        candidate = BeaconRound(value["round"], value["signature"], value["randomness"])
        if candidate.round - 1 not in self.rounds and self.rounds:
            for missing in range(max(self.rounds) + 1, candidate.round):
                await self._beacon_round(missing)
        if not self.rounds:
            # Chain verification needs the previous round; trust starts at the ledger's copy
            reply = await self.ledger.call("beacon", round=candidate.round - 1)
            if reply.get("found"):
                self.rounds[candidate.round - 1] = BeaconRound(
                    candidate.round - 1, reply["signature"], reply["randomness"]
                )
        if await self._accept_round(candidate):
            await self._settle_pending()

    async def _settle_pending(self) -> None:
        """Decide, for every remembered job whose sample round is known, whether we audit it."""
        now = time.monotonic()
        rate = self.ledger.status.get("sample_ppm", 0)
        for job_id, (commitment, seen) in list(self.pending.items()):
            if now - seen > PENDING_TTL_S:
                del self.pending[job_id]
                continue
            job = await self.ledger.call("job", job_id=job_id)
            if not job.get("found"):
                continue
            if job["commitment_id"] != commitment.content_id:
                del self.pending[job_id]
                continue
            round_ = self.rounds.get(job["sample_round"])
            if round_ is None:
                continue
            del self.pending[job_id]
            if not sampled(round_.randomness, job_id, commitment.content_id, rate):
                continue
            chosen = assigned_validator(round_.randomness, job_id, commitment.content_id,
                                        self.ledger.validators)
            if chosen == self.me:
                self.metrics.sampled.inc()
                self._enqueue(Work(AUDIT, commitment, round_.round))

    async def on_evidence(self, evidence: Evidence, sender: bytes) -> None:
        if evidence.accuser == self.me:
            return
        for _ in range(DISPUTE_LOOKUPS):
            dispute = await self.ledger.call("dispute", dispute_id=evidence.content_id)
            if dispute.get("found"):
                if self.me in dispute["committee"] and dispute["open"]:
                    self._enqueue(Work(VOTE, evidence.accused(), dispute["opened_round"]))
                return
            await trio.sleep(0.25)

    # -- the worker ----------------------------------------------------------------------------
    async def _fetch(self, commitment: Commitment) -> tuple[JobRequest, Any]:
        reply = await self.host.request(
            commitment.node, wire.PROTOCOL_JOB_DATA,
            wire.encode_map({"job_id": commitment.job_id}),
        )
        request = JobRequest.decode(reply["request"]).verify()
        if request.job_id != commitment.job_id:
            raise ProtocolError("the node sent job data for another job")
        return request, reply["output"]

    async def _sign_once(self, work: Work) -> tuple[str, bytes]:
        """The message to send for ``work``: the journalled one, or a new one, journalled first."""
        kept = self.journal.get(work.kind, work.commitment.job_id)
        if kept is not None:
            return kept[1].decode(), kept[0]
        started = time.perf_counter()
        request, output = await self._fetch(work.commitment)
        if work.kind == AUDIT:
            finding: Attestation | Evidence = await trio.to_thread.run_sync(
                self.validator.audit, request, work.commitment, work.beacon_round, output
            )
        else:
            finding = await trio.to_thread.run_sync(
                self.validator.vote, request, work.commitment, work.beacon_round, output
            )
            self.metrics.votes.inc()
        self.metrics.verify_latency.observe(time.perf_counter() - started)
        if isinstance(finding, Evidence):
            self.metrics.mismatches.inc()
            self.metrics.verified.labels("FRAUD").inc()
            op = "accuse"
        else:
            self.metrics.verified.labels(str(finding.verdict)).inc()
            op = "attest"
        return op, self.journal.record(work.kind, work.commitment.job_id, finding.encode(),
                                       op.encode())

    async def _submit(self, op: str, message: bytes) -> None:
        fields: dict[str, Any] = {"evidence" if op == "accuse" else "attestation": message}
        try:
            await self.ledger.call(op, **fields)
        except wire.RemoteError as exc:
            log.info("ledger refused %s: %s", op, exc)
        topic = wire.TOPIC_EVIDENCE if op == "accuse" else wire.TOPIC_ATTESTATIONS
        await self.host.publish(topic, message)

    async def _work(self) -> None:
        async for work in self._receive:
            try:
                op, message = await self._sign_once(work)
                await self._submit(op, message)
            except ProtocolError as exc:
                log.warning("%s of job %s failed: %s", work.kind,
                            work.commitment.job_id.hex()[:16], exc)

    async def _bond(self) -> None:
        while True:
            await self.ledger.wait_reachable()
            try:
                account = await self.ledger.call("account", account=self.me)
                stake = int(account.get("validator_stake", 0)) if account.get("found") else 0
                if stake < self.config.stake:
                    await self.ledger.call("bond", role="validator",
                                           amount=self.config.stake - stake)
                return
            except ProtocolError as exc:
                log.warning("bonding failed, retrying: %s", exc)
                await trio.sleep(1.0)

    async def run(self, shutdown: trio.Event) -> None:
        stop_http = trio.Event()
        async with self.host.running(), trio.open_nursery() as nursery:
            nursery.start_soon(self.ledger.keep_fresh)
            nursery.start_soon(self._bond)
            nursery.start_soon(self._work)
            if self.config.metrics:
                nursery.start_soon(serve_http, metrics_app(self.metrics),
                                   self.config.metrics_host, self.config.metrics_port, stop_http)
            self.metrics.ready.set(1)
            await shutdown.wait()
            stop_http.set()
            nursery.cancel_scope.cancel()
        self.journal.close()
