"""The validator as a long-running service: learn duties from the ledger, audit, accuse, vote.

Its nursery runs the libp2p host, the ledger status refresher, a duties
poller and one worker that does the slow part (fetch job data, re-execute)
one job at a time.

**The ledger says what to do.** The ledger draws each sampled job's auditor
(and every zk job's) in the job's sample round, draws a replacement when an
auditor stays silent past its deadline, and draws each dispute's committee
from a round revealed after the dispute opened. The service asks the ledger
for its duties (``duties``) every ``DUTIES_INTERVAL_S`` and whenever a new
beacon round arrives: the jobs it is assigned to audit, each with its signed
commitment and the round that drew it, and the disputes whose committee it
sits on. It never draws anything itself and never learns of a dispute from
gossip: a colluder that opens a dispute and tells nobody cannot keep the
committee from hearing of it. Gossip topics are still followed (validated
and relayed, so the mesh stays dense) and beacon rounds are checked against
the BLS chain.

Every attestation, evidence and vote is written to the signing journal
*before* it is sent, keyed by job (a vote by job and committee round): a
restarted validator that meets the same duty again re-sends what it signed,
never a second verdict.

**zk jobs are checked 100%.** The ledger assigns an auditor to every zk job
(its model was registered with ``RegisterZkModel`` before the job was
recorded), sampled or not, because checking a proof costs milliseconds and a
failing proof is self-contained evidence. A zk job whose proof fails gives
``INVALID_PROOF`` evidence, which the ledger judges itself from the job's
request: it is sent as ``accuse_invalid_proof`` with the request the
validator fetched (journalled with the evidence), not as a plain ``accuse``
that would open a dispute.

Before it checks any job the service compares each zk key it holds with the
ledger's registration (``zk_model``: the hashes of the verifying key, the
settings and the SRS). A key that differs would judge honest proofs invalid
and make this validator a false accuser, so it is dropped: that model's jobs
are attested INCONCLUSIVE (never slashing), the mismatch is logged, and the
service reports not ready (``assay_ready`` 0), as a node does.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import trio

from protocol.beacon import BeaconRound, DevnetBeaconVerifier
from protocol.config import ValidatorConfig
from protocol.errors import ProtocolError
from protocol.hashing import sha256
from protocol.keystore import SigningJournal
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence
from protocol.net import validate, wire
from protocol.net.gossip import drop_reason
from protocol.net.host import PeerHost
from protocol.net.http import metrics_app, serve_http
from protocol.net.ledger_client import LedgerClient
from protocol.net.metrics import Metrics
from prover.zk import file_sha256
from verifier.validator import Validator

log = logging.getLogger("assay.validator")

AUDIT, VOTE = "audit", "vote"
ACCUSE, ACCUSE_INVALID_PROOF, ATTEST = "accuse", "accuse_invalid_proof", "attest"
QUEUE_LIMIT = 1_000
DUTIES_INTERVAL_S = 0.5
QUEUED_LIMIT = 200_000
"""Duties remembered as queued, oldest forgotten first."""
ZK_CHECK_RETRY_S = 1.0


@dataclass(frozen=True)
class Work:
    kind: str  # AUDIT or VOTE
    commitment: Commitment
    beacon_round: int

    @property
    def key(self) -> bytes:
        """The journal's key: the job for an audit, the job and committee round for a vote
        (a dispute may draw this validator again, for a later committee)."""
        if self.kind == AUDIT:
            return self.commitment.job_id
        return sha256(self.commitment.job_id + self.beacon_round.to_bytes(8, "big"))


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
        self.rounds: dict[int, BeaconRound] = {}
        self.queued: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        """Duties already handed to the worker, by (kind, journal key)."""
        self.zk_checked = trio.Event()
        """Set once the zk keys were compared with the ledger's registration."""
        self.zk_refused: dict[bytes, str] = {}
        """zk models whose key this validator dropped (the ledger registered another), and why."""
        self._duties_lock = trio.Lock()
        self._beacon: DevnetBeaconVerifier | None = None
        self._send, self._receive = trio.open_memory_channel[Work](QUEUE_LIMIT)
        host.subscribe(wire.TOPIC_COMMITMENTS, validate.commitments(self.ledger), self._relay)
        host.subscribe(wire.TOPIC_COMMITMENT_BATCHES, validate.commitment_batches(self.ledger),
                       self._relay)
        host.subscribe(wire.TOPIC_BEACON, validate.beacon_rounds(self.ledger), self.on_beacon)
        host.subscribe(wire.TOPIC_EVIDENCE, validate.evidence(self.ledger), self._relay)
        host.subscribe(wire.TOPIC_ATTESTATIONS, validate.attestations(self.ledger), self._relay)

    @property
    def me(self) -> bytes:
        return self.validator.validator_id

    def _enqueue(self, work: Work) -> None:
        try:
            self._send.send_nowait(work)
        except trio.WouldBlock:
            self.metrics.gossip_dropped.labels("duties", "backlog").inc()
            return
        self.queued[(work.kind, work.key)] = None
        if len(self.queued) > QUEUED_LIMIT:
            self.queued.popitem(last=False)

    async def _relay(self, message: Any, sender: bytes) -> None:
        """Validated gossip is relayed; the ledger, not gossip, says what to do."""

    # -- duties from the ledger ----------------------------------------------------------------
    async def do_duties(self) -> int:
        """Queue every audit and vote the ledger awaits from us; returns how many were new."""
        async with self._duties_lock:
            reply = await self.ledger.call("duties", validator=self.me)
            new = 0
            for kind, items in ((AUDIT, reply.get("audits", [])), (VOTE, reply.get("votes", []))):
                for item in items:
                    try:
                        commitment = Commitment.decode(item["commitment"]).verify()
                        work = Work(kind, commitment, int(item["round"]))
                    except (ProtocolError, KeyError, TypeError, ValueError) as exc:
                        self.metrics.gossip_dropped.labels("duties", drop_reason(exc)).inc()
                        continue
                    if (kind, work.key) in self.queued:
                        continue
                    self.metrics.duties.labels(kind).inc()
                    if kind == AUDIT:
                        self.metrics.sampled.inc()
                    self._enqueue(work)
                    new += 1
            return new

    async def _keep_doing_duties(self) -> None:
        while True:
            await self.ledger.wait_reachable()
            try:
                await self.do_duties()
            except ProtocolError as exc:
                log.info("asking the ledger for duties failed: %s", exc)
            await trio.sleep(DUTIES_INTERVAL_S)

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
        """Check ``candidate`` against the round before it (the ledger's copy if we lack it).

        Devnet rounds are unique BLS signatures chained on the previous one, so
        a round that verifies against any predecessor was signed by the beacon
        key; the ledger's copy of the predecessor is the trust anchor, as it is
        for the first round a validator hears.
        """
        if self._beacon is None:
            self._beacon = DevnetBeaconVerifier(self.ledger.status["beacon_key"])
        if candidate.round == 0:
            previous = self._beacon.genesis_seed
        else:
            before = self.rounds.get(candidate.round - 1)
            if before is None:
                reply = await self.ledger.call("beacon", round=candidate.round - 1)
                if not reply.get("found"):
                    return False
                before = BeaconRound(candidate.round - 1, reply["signature"],
                                     reply["randomness"])
            previous = before.signature
        if not self._beacon.verify(candidate, previous):
            self.metrics.gossip_dropped.labels(wire.TOPIC_BEACON, "bad_signature").inc()
            return False
        self.rounds[candidate.round] = candidate
        self.metrics.beacon_round.set(max(self.rounds))
        return True

    async def on_beacon(self, value: dict[str, Any], sender: bytes) -> None:
        if not self.ledger.reachable():
            return
        candidate = BeaconRound(value["round"], value["signature"], value["randomness"])
        if candidate.round - 1 not in self.rounds and self.rounds:
            for missing in range(max(max(self.rounds) + 1, candidate.round - 16), candidate.round):
                await self._beacon_round(missing)
        if await self._accept_round(candidate):
            try:
                await self.do_duties()  # the round may have drawn us
            except ProtocolError as exc:
                log.info("asking the ledger for duties failed: %s", exc)

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

    async def _sign_once(self, work: Work) -> tuple[str, bytes, bytes]:
        """The op, message (and, for ``accuse_invalid_proof``, the job's request) to send for
        ``work``: the journalled ones, or new ones, journalled first."""
        kept = self.journal.get(work.kind, work.key)
        if kept is not None:
            op, _, request_bytes = kept[1].partition(b"\n")
            return op.decode(), kept[0], request_bytes
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
        request_bytes = b""
        if isinstance(finding, Evidence):
            self.metrics.mismatches.inc()
            self.metrics.verified.labels("FRAUD").inc()
            op = ACCUSE
            if finding.offence is Offence.INVALID_PROOF:
                op, request_bytes = ACCUSE_INVALID_PROOF, request.encode()
        else:
            self.metrics.verified.labels(str(finding.verdict)).inc()
            op = ATTEST
        extra = op.encode() + (b"\n" + request_bytes if request_bytes else b"")
        kept = self.journal.record(work.kind, work.key, finding.encode(), extra)
        return op, kept, request_bytes

    async def _submit(self, op: str, message: bytes, request: bytes = b"") -> None:
        fields: dict[str, Any]
        if op == ATTEST:
            fields = {"attestation": message}
        elif op == ACCUSE_INVALID_PROOF:
            fields = {"evidence": message, "request": request}
        else:
            fields = {"evidence": message}
        try:
            await self.ledger.call(op, **fields)
        except wire.RemoteError as exc:
            log.info("ledger refused %s: %s", op, exc)
        topic = wire.TOPIC_ATTESTATIONS if op == ATTEST else wire.TOPIC_EVIDENCE
        await self.host.publish(topic, message)

    async def _work(self) -> None:
        await self.zk_checked.wait()  # never check a proof with a key the ledger would not use
        async for work in self._receive:
            try:
                op, message, request = await self._sign_once(work)
                await self._submit(op, message, request)
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

    async def check_zk_keys(self) -> None:
        """Compare each zk key's hashes with the ledger's registration; drop those that differ.

        A model the ledger has not registered keeps its key (its jobs are not
        zk jobs there, so they are checked only when sampled, and the ledger
        would refuse INVALID_PROOF evidence on them), with a warning.
        """
        keys = self.validator.zk_keys
        ours: dict[bytes, tuple[object, ...]] = {}
        for model_id, key in list(keys.items()):
            try:
                settings = await trio.to_thread.run_sync(file_sha256, key.settings_path)
                srs = await trio.to_thread.run_sync(file_sha256, key.srs_path)
            except OSError as exc:
                keys.pop(model_id)
                self.zk_refused[model_id] = (
                    f"not checking zk model {model_id.hex()[:16]}…: its key's files cannot be "
                    f"read ({exc}); its jobs are attested INCONCLUSIVE"
                )
                log.error("%s", self.zk_refused[model_id])
                continue
            ours[model_id] = (key.vk_sha256, settings, srs)
        while not self.zk_checked.is_set():
            await self.ledger.wait_reachable()
            try:
                for model_id, hashes in ours.items():
                    reply = await self.ledger.call("zk_model", model_id=model_id)
                    if not reply.get("found"):
                        log.warning("zk model %s is not registered on the ledger: its jobs "
                                    "are not zk jobs there", model_id.hex()[:16])
                        continue
                    theirs = (reply.get("vk_sha256"), reply.get("settings_sha256"),
                              reply.get("srs_sha256"))
                    if theirs != hashes:
                        keys.pop(model_id, None)
                        self.zk_refused[model_id] = (
                            f"not checking zk model {model_id.hex()[:16]}… with the local key: "
                            "the ledger registered verifying key, settings and SRS "
                            f"{_hashes(theirs)}, the zk store holds {_hashes(hashes)}; its "
                            "jobs are attested INCONCLUSIVE (re-run `assay zk setup` with the "
                            "network's SRS)"
                        )
                        log.error("%s", self.zk_refused[model_id])
                self.zk_checked.set()
            except ProtocolError as exc:
                log.warning("checking zk keys with the ledger failed, retrying: %s", exc)
                await trio.sleep(ZK_CHECK_RETRY_S)

    async def _check_zk_keys_then_ready(self) -> None:
        if self.validator.zk_keys:
            await self.check_zk_keys()
        self.zk_checked.set()
        self.metrics.ready.set(0 if self.zk_refused else 1)

    async def run(self, shutdown: trio.Event) -> None:
        stop_http = trio.Event()
        async with self.host.running(), trio.open_nursery() as nursery:
            nursery.start_soon(self.ledger.keep_fresh)
            nursery.start_soon(self._bond)
            nursery.start_soon(self._work)
            nursery.start_soon(self._keep_doing_duties)
            if self.config.metrics:
                nursery.start_soon(serve_http, metrics_app(self.metrics),
                                   self.config.metrics_host, self.config.metrics_port, stop_http)
            nursery.start_soon(self._check_zk_keys_then_ready)
            await shutdown.wait()
            stop_http.set()
            nursery.cancel_scope.cancel()
        self.journal.close()


def _hashes(values: tuple[object, ...]) -> str:
    return " / ".join(
        v.hex()[:16] + "…" if isinstance(v, bytes) else repr(v) for v in values
    )
