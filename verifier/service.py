"""The validator as a long-running service: follow, sample, re-execute, attest, accuse, vote.

Its nursery runs the libp2p host, the ledger status refresher, and one worker
that does the slow part (fetch job data, re-execute) one job at a time. The
gossip handlers only file work:

* a commitment (``/assay/1/commitments``, or one of a batch on
  ``/assay/1/commitment-batches``) is remembered until the beacon round that
  samples it is known;
* a beacon round (checked against the BLS chain) settles which remembered
  jobs are sampled; those assigned to this validator are queued;
* evidence opens a dispute on the ledger; if this validator sits on its
  committee, a vote is queued.

Gossip is not the only way in: a reconciler asks the ledger every
``RECONCILE_INTERVAL_S`` for the commitments recorded since its cursor
(``jobs_since``, read from the ledger's log), from row 0 when the validator
starts, so a commitment whose gossip was lost, or that was recorded while the
validator was down, is sampled all the same. Jobs already decided are
remembered, so gossip and the reconciler never file one job twice.

Every attestation, evidence and vote is written to the signing journal
*before* it is sent, keyed by job: a restarted validator that meets the same
job again re-sends what it signed, never a second verdict.

**zk jobs are checked 100%.** A job the ledger recorded as a zk job (its
model was registered with ``RegisterZkModel`` first: the ledger's ``job``
answer says ``zk``) is audited whatever the sampling draw, because checking a
proof costs milliseconds and a failing proof is self-contained evidence. The
flag is the ledger's, not the commitment's ``mode``: the node writes the mode,
and a node that committed a zk model's job as ``exact`` to dodge the check is
still checked, and accused by a validator holding the model's key (the
commitment carries no valid proof). A commitment
that says ``zk`` for a model the ledger did not register is an ordinary job,
audited only if sampled: the ledger accepts attestations on unsampled jobs
only for zk jobs, and judges INVALID_PROOF evidence only on them. Each zk job
is still checked by one validator, the one :func:`~verifier.sampling.assigned_validator`
draws from the job's sample round as for a sampled job: one check is all a
proof needs (every validator holding the registered key reaches the same
verdict, and the ledger re-checks any accusation itself), so more would only
add duplicate attestations to the log and split the work no better. Catch-up
from ``jobs_since`` files commitments into the same pending set, so zk jobs
missed on gossip are checked all the same. They count in
``assay_validator_sampled_total`` like sampled jobs.

A zk job whose proof fails gives ``INVALID_PROOF`` evidence, which the ledger
judges itself from the job's request: it is sent as ``accuse_invalid_proof``
with the request the validator fetched (journalled with the evidence), not as
a plain ``accuse`` that would open a dispute.

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
from protocol.keystore import SigningJournal
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence
from protocol.net import validate, wire
from protocol.net.gossip import drop_reason
from protocol.net.host import PeerHost
from protocol.net.http import metrics_app, serve_http
from protocol.net.ledger_client import LedgerClient
from protocol.net.metrics import Metrics
from prover.zk import file_sha256
from verifier.sampling import assigned_validator, sampled
from verifier.validator import Validator

log = logging.getLogger("assay.validator")

AUDIT, VOTE = "audit", "vote"
ACCUSE, ACCUSE_INVALID_PROOF, ATTEST = "accuse", "accuse_invalid_proof", "attest"
PENDING_LIMIT = 100_000
PENDING_TTL_S = 120.0
QUEUE_LIMIT = 1_000
DISPUTE_LOOKUPS = 20
RECONCILE_INTERVAL_S = 2.0
DECIDED_LIMIT = 200_000
"""Job ids remembered as decided (sampled for someone, or not), oldest forgotten first."""
ZK_CHECK_RETRY_S = 1.0


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
        self.decided: OrderedDict[bytes, None] = OrderedDict()
        self.cursor = 0
        """The ledger log row up to which recorded jobs have been reconciled."""
        self.caught_up = trio.Event()
        self.zk_checked = trio.Event()
        """Set once the zk keys were compared with the ledger's registration."""
        self.zk_refused: dict[bytes, str] = {}
        """zk models whose key this validator dropped (the ledger registered another), and why."""
        self._settling = trio.Lock()
        self._beacon: DevnetBeaconVerifier | None = None
        self._send, self._receive = trio.open_memory_channel[Work](QUEUE_LIMIT)
        host.subscribe(wire.TOPIC_COMMITMENTS, validate.commitments(self.ledger),
                       self.on_commitment)
        host.subscribe(wire.TOPIC_COMMITMENT_BATCHES, validate.commitment_batches(self.ledger),
                       self.on_commitment_batch)
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
        self._remember(commitment)

    async def on_commitment_batch(self, batch: tuple[Commitment, ...], sender: bytes) -> None:
        for commitment in batch:
            self._remember(commitment)

    def _remember(self, commitment: Commitment, recorded: bool = False) -> bool:
        """File a commitment until its sample round is known; False if it was already filed.

        ``recorded`` commitments come from the ledger's log and replace a
        different gossiped commitment for the same job (an equivocation).
        """
        if commitment.job_id in self.decided:
            return False
        filed = self.pending.get(commitment.job_id)
        if filed is not None and (not recorded or filed[0].content_id == commitment.content_id):
            return False
        if len(self.pending) >= PENDING_LIMIT:
            self.metrics.gossip_dropped.labels(wire.TOPIC_COMMITMENTS, "backlog").inc()
            return False
        self.pending[commitment.job_id] = (commitment, time.monotonic())
        return True

    def _decide(self, job_id: bytes) -> None:
        self.pending.pop(job_id, None)
        self.decided[job_id] = None
        if len(self.decided) > DECIDED_LIMIT:
            self.decided.popitem(last=False)

    # -- catching up from the ledger -----------------------------------------------------------
    async def reconcile(self) -> int:
        """File every commitment the ledger recorded since the cursor; returns how many were new."""
        new = 0
        while True:
            reply = await self.ledger.call("jobs_since", after=self.cursor)
            for data in reply.get("jobs", []):
                try:
                    commitment = Commitment.decode(data).verify()
                except ProtocolError as exc:  # the ledger checked it; count, never crash
                    self.metrics.gossip_dropped.labels("jobs_since", drop_reason(exc)).inc()
                    continue
                if self._remember(commitment, recorded=True):
                    new += 1
                    self.metrics.caught_up.inc()
            cursor = reply.get("cursor")
            if not isinstance(cursor, int) or cursor <= self.cursor:
                return new
            self.cursor = cursor
            length = reply.get("length")
            if not isinstance(length, int) or self.cursor >= length:
                return new

    async def _keep_reconciling(self) -> None:
        while True:
            await self.ledger.wait_reachable()
            try:
                if await self.reconcile():
                    await self._settle_pending()
                self.caught_up.set()
            except ProtocolError as exc:
                log.info("catching up from the ledger failed: %s", exc)
            await trio.sleep(RECONCILE_INTERVAL_S)

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
            await self._settle_pending()

    async def _settle_pending(self) -> None:
        """Decide, for every remembered job whose sample round is known, whether we audit it."""
        async with self._settling:  # beacon gossip and the reconciler both call this
            await self._settle_pending_locked()

    async def _settle_pending_locked(self) -> None:
        now = time.monotonic()
        rate = self.ledger.status.get("sample_ppm", 0)
        for job_id, (commitment, seen) in list(self.pending.items()):
            if now - seen > PENDING_TTL_S:
                self.pending.pop(job_id, None)
                continue
            job = await self.ledger.call("job", job_id=job_id)
            if not job.get("found"):
                continue
            if job["commitment_id"] != commitment.content_id:
                self.pending.pop(job_id, None)
                continue
            if job.get("status") != "pending" or self.me in job.get("attested_by", []):
                self._decide(job_id)  # final, or already attested by us before a restart
                continue
            number = job["sample_round"]
            round_ = self.rounds.get(number)
            if round_ is None and number <= self.ledger.round:
                round_ = await self._beacon_round(number)
            if round_ is None:
                continue
            self._decide(job_id)
            if not job.get("zk") and not sampled(round_.randomness, job_id,
                                                 commitment.content_id, rate):
                continue  # zk jobs are checked whatever the draw (module docstring)
            chosen = assigned_validator(round_.randomness, job_id, commitment.content_id,
                                        self.ledger.validators)
            if chosen == self.me:
                self.metrics.sampled.inc()
                self._enqueue(Work(AUDIT, commitment, round_.round))

    async def on_evidence(self, evidence: Evidence, sender: bytes) -> None:
        if evidence.accuser == self.me or evidence.offence is Offence.INVALID_PROOF:
            return  # an invalid proof is judged by the ledger alone: no committee to sit on
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

    async def _sign_once(self, work: Work) -> tuple[str, bytes, bytes]:
        """The op, message (and, for ``accuse_invalid_proof``, the job's request) to send for
        ``work``: the journalled ones, or new ones, journalled first."""
        kept = self.journal.get(work.kind, work.commitment.job_id)
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
        kept = self.journal.record(work.kind, work.commitment.job_id, finding.encode(), extra)
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
            nursery.start_soon(self._keep_reconciling)
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
