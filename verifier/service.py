"""The validator as a long-running service: learn duties from the ledger, audit, accuse, vote.

Its nursery runs the libp2p host, the ledger status refresher, the account
watcher, a duties poller, ``/health`` and a worker that audits each job in a
task of its own.

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

**An audit never depends on the node for the job itself.** The request and
commitment are taken from the ledger's record (``job_data``), so ``exact``,
``tensor`` and zk jobs are re-executed whatever the node does. An ``llm``
audit also needs the tokens the node served: the validator fetches them
(``FETCH_ATTEMPTS`` tries with backoff, each reply schema-checked and its
output hashed against the commitment, while ``ANSWER_MARGIN`` rounds are left
before the auditor's deadline and the job's window close), and a node that withholds
them, or answers with anything else (an error, a missing or mistyped field,
garbage, another output), is reported: a signed ``report_unavailable``,
which holds the auditor's deadline until the output is served. The node
must then post the output on the ledger (``serve_data``) within the
availability window, where the validator reads it and audits as usual (with
a fresh deadline); if it does not, the ledger slashes it S and refunds the
client. A duty that cannot be done while it is still awaited is answered
INCONCLUSIVE, which slashes nobody and spares the liveness penalty.

**A record is read from the ledger.** An audit of a node whose jobs deviate
persistently in this validator's audits (:meth:`Validator.wants_record`), and
a vote on a ``RECORD`` dispute, are given the node's record: the job ids the
ledger lists (``record``), each job's request and commitment from the
ledger, and its output from the ledger, the node or the validators that
audited it (every audited ``llm`` output is kept in the journal and served
on the job-data protocol to staked validators), for ``RECORD_FETCH_S`` at
most. A job whose output nobody serves adds nothing to the record. The journal
keeps the newest ``outputs_kept`` outputs (pruned at start and every
``OUTPUT_PRUNE_EVERY`` audits), so its disk stays bounded; an output pruned too
early only leaves a record member without it, which votes INCONCLUSIVE.

A committee member needs the same tokens, and the rules take no report while
a dispute is open. The output is self-authenticating (it must hash to the
committed output hash), so it may come from anyone who holds it: the member
tries the ledger, then the node, then each accuser. An accuser of an ``llm``
job re-executed it from those tokens, so it keeps them (in its journal,
before it accuses) and serves them on the job-data protocol to staked
validators: a node that served its auditor and withholds from the committee
still meets a committee that judges its output. Only when nobody serves it
does a member vote INCONCLUSIVE, which slashes nobody.

**A job never ends the service.** Each audit or vote runs in its own task
(``CONCURRENT_JOBS`` at a time; one re-execution at a time): any exception is
counted in ``assay_job_errors_total{kind,error}``, logged with the job id,
and the job retried with backoff up to ``WORK_ATTEMPTS`` times, then handed
back to the duties poller. Attempts are also counted in the journal, so a job
that keeps failing (even one that kills the process) is given up after
``ATTEMPTS_EVER`` attempts across restarts and attested INCONCLUSIVE: the
ledger then draws another auditor without penalty, and the service never
meets the same poisoned job in a loop. Every long-running task is restarted,
not fatal, when it raises (:mod:`protocol.net.supervise`).

Every attestation, evidence and vote is written to the signing journal
*before* it is sent, keyed by job (a vote by job and committee round): a
restarted validator that meets the same duty again re-sends what it signed,
never a second verdict.

**zk jobs are checked 100%.** The ledger assigns an auditor to every zk job
(its model was registered with ``RegisterZkModel`` before the job was
recorded), sampled or not, because checking a proof costs milliseconds and a
failing proof is self-contained evidence. A zk job whose proof fails gives
``INVALID_PROOF`` evidence, which the ledger judges itself from the job's
request: it is sent as ``accuse_invalid_proof`` with the request (journalled
with the evidence), not as a plain ``accuse`` that would open a dispute.

Before it checks any job the service compares each zk key it holds with the
ledger's registration (``zk_model``: the hashes of the verifying key, the
settings and the SRS). A key that differs would judge honest proofs invalid
and make this validator a false accuser, so it is dropped: that model's jobs
are attested INCONCLUSIVE (never slashing), the mismatch is logged, and the
service reports not ready (``/health`` 503, ``assay_ready`` 0), as a node does.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from protocol import codec
from protocol.beacon import BeaconRound, DevnetBeaconVerifier
from protocol.codec import Tensor
from protocol.config import ConfigError, ValidatorConfig
from protocol.errors import MalformedMessage, ProtocolError
from protocol.hashing import sha256
from protocol.keystore import SigningJournal
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence
from protocol.net import schema, validate, wire
from protocol.net.backoff import Backoff
from protocol.net.gossip import drop_reason
from protocol.net.host import PeerHost
from protocol.net.http import health_app, metrics_app, serve_http
from protocol.net.ledger_client import LedgerClient, SignTransaction
from protocol.net.ledger_replies import Duty, JobInfo
from protocol.net.metrics import Metrics
from protocol.net.standing import Standing
from protocol.net.supervise import keep_running
from prover.zk import file_sha256
from verifier.validator import RecordJob, Validator

log = logging.getLogger("assay.validator")

AUDIT, VOTE, REPORT, OUTPUT = "audit", "vote", "report", "output"
ACCUSE, ACCUSE_INVALID_PROOF, ATTEST = "accuse", "accuse_invalid_proof", "attest"
QUEUE_LIMIT = 1_000
DUTIES_INTERVAL_S = 0.5
QUEUED_LIMIT = 200_000
"""Duties remembered as taken up, oldest forgotten first."""
ZK_CHECK_RETRY_S = 1.0
CONCURRENT_JOBS = 16
"""Audits and votes in progress at once (fetching, waiting for a served output); they
re-execute one at a time."""
WORK_ATTEMPTS = 3
"""Tries of one audit or vote in this process, with backoff, before it is handed back to the
duties poller."""
WORK_BACKOFF = (1.0, 8.0)
ATTEMPTS_EVER = 5
"""Tries of one audit or vote across restarts (counted in the journal) before it is attested
INCONCLUSIVE: a job that kills the process must not do so forever."""
FETCH_ATTEMPTS = 4
FETCH_BACKOFF = (0.25, 2.0)
FETCH_TIMEOUT_S = 5.0
ANSWER_MARGIN = 2
"""Rounds kept before a duty's deadline for what follows a failed fetch (the report, or the
accusers' copy): the ledger's round is known to a status refresh late. Reporting early costs
an honest node nothing but posting its output."""
SERVED_POLL_S = 0.5
RECORD_FETCH_S = 60.0
"""How long a record's outputs are fetched for before its remaining jobs are judged without
them (they add nothing)."""
READY_REFRESH_S = 1.0
OUTPUT_PRUNE_EVERY = 256
"""Audited outputs journalled between two prunings to ``outputs_kept``."""


class OutputUnavailable(ProtocolError):
    """The job's output could not be had from the node, the ledger or an accuser."""


@dataclass(frozen=True)
class Work:
    kind: str  # AUDIT or VOTE
    commitment: Commitment
    beacon_round: int
    """The round whose value drew this validator: its attestation names it."""
    dispute_id: bytes = b""
    """For a vote, the dispute."""
    attempt: int = 0

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
        sign_tx: SignTransaction,
    ) -> None:
        self.config = config
        self.validator = validator
        self.host = host
        self.journal = journal
        self.metrics = metrics
        self.ledger = LedgerClient(host, config.ledger, sign_tx)
        self.standing = Standing(self.ledger, validator.validator_id, "validator", log)
        self.rounds: dict[int, BeaconRound] = {}
        self.queued: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        """Duties taken up, by (kind, journal key): the poller does not hand them out twice."""
        self.duties_known = trio.Event()
        """Set once the ledger answered a ``duties`` query."""
        self.zk_checked = trio.Event()
        """Set once the zk keys were compared with the ledger's registration."""
        self.zk_refused: dict[bytes, str] = {}
        """zk models whose key this validator dropped (the ledger registered another), and why."""
        self._duties_lock = trio.Lock()
        self._cpu = trio.Lock()
        self._slots = trio.Semaphore(CONCURRENT_JOBS)
        self._beacon: DevnetBeaconVerifier | None = None
        self._send, self._receive = trio.open_memory_channel[Work](QUEUE_LIMIT)
        if config.outputs_kept < 0:
            raise ConfigError(f"outputs_kept must not be negative, got {config.outputs_kept}")
        self._outputs_noted = 0
        self._prune_outputs()
        host.subscribe(wire.TOPIC_COMMITMENTS, validate.commitments(self.ledger), self._relay)
        host.subscribe(wire.TOPIC_COMMITMENT_BATCHES, validate.commitment_batches(self.ledger),
                       self._relay)
        host.subscribe(wire.TOPIC_BEACON, validate.beacon_rounds(self.ledger), self.on_beacon)
        host.subscribe(wire.TOPIC_EVIDENCE, validate.evidence(self.ledger), self._relay)
        host.subscribe(wire.TOPIC_ATTESTATIONS, validate.attestations(self.ledger), self._relay)
        host.serve(wire.PROTOCOL_JOB_DATA, self.handle_job_data)

    def _prune_outputs(self) -> None:
        dropped = self.journal.keep_newest(OUTPUT, self.config.outputs_kept)
        if dropped:
            log.info("pruned %d journalled outputs, keeping the newest %d", dropped,
                     self.config.outputs_kept)

    @property
    def me(self) -> bytes:
        return self.validator.validator_id

    def _enqueue(self, work: Work) -> None:
        try:
            self._send.send_nowait(work)
        except trio.WouldBlock:
            self.metrics.gossip_dropped.labels("duties", "backlog").inc()
            self.queued.pop((work.kind, work.key), None)  # the poller hands it out again
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
            audits, votes = await self.ledger.duties(self.me)
            self.duties_known.set()
            new = 0
            for kind, duties in ((AUDIT, audits), (VOTE, votes)):
                for duty in duties:
                    work = self._work_for(kind, duty)
                    if work is None or (kind, work.key) in self.queued:
                        continue
                    self.metrics.duties.labels(kind).inc()
                    if kind == AUDIT:
                        self.metrics.sampled.inc()
                    self._enqueue(work)
                    new += 1
            return new

    def _work_for(self, kind: str, duty: Duty) -> Work | None:
        try:
            commitment = Commitment.decode(duty.commitment).verify()
        except ProtocolError as exc:  # the ledger checked it; count, never crash
            self.metrics.gossip_dropped.labels("duties", drop_reason(exc)).inc()
            return None
        if commitment.job_id != duty.job_id:
            self.metrics.gossip_dropped.labels("duties", "invalid").inc()
            return None
        return Work(kind, commitment, duty.round, duty.dispute_id)

    async def _keep_doing_duties(self) -> None:
        while True:
            await self.ledger.wait_reachable()
            try:
                await self.do_duties()
            except ProtocolError as exc:
                log.info("asking the ledger for duties failed: %s", exc)
            await trio.sleep(DUTIES_INTERVAL_S)

    # -- beacon rounds -------------------------------------------------------------------------
    async def _beacon_round(self, number: int) -> BeaconRound | None:
        """Round ``number``, fetched from the ledger if gossip missed it, checked on the chain."""
        if number in self.rounds:
            return self.rounds[number]
        revealed = await self.ledger.beacon(number)
        if revealed is None:
            return None
        candidate = BeaconRound(number, *revealed)
        return candidate if await self._accept_round(candidate) else None

    async def _accept_round(self, candidate: BeaconRound) -> bool:
        """Check ``candidate`` against the round before it (the ledger's copy if we lack it).

        Devnet rounds are unique BLS signatures chained on the previous one, so
        a round that verifies against any predecessor was signed by the beacon
        key; the ledger's copy of the predecessor is the trust anchor, as it is
        for the first round a validator hears.
        """
        if self._beacon is None:
            if self.ledger.status is None:
                raise ProtocolError("the ledger's beacon key is not known yet")
            self._beacon = DevnetBeaconVerifier(self.ledger.status.beacon_key)
        if candidate.round == 0:
            previous = self._beacon.genesis_seed
        else:
            before = self.rounds.get(candidate.round - 1)
            if before is None:
                revealed = await self.ledger.beacon(candidate.round - 1)
                if revealed is None:
                    return False
                before = BeaconRound(candidate.round - 1, *revealed)
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
    async def _work(self) -> None:
        await self.zk_checked.wait()  # never check a proof with a key the ledger would not use
        async with trio.open_nursery() as nursery:
            async for work in self._receive:
                await self._slots.acquire()
                nursery.start_soon(self._isolated, work)

    async def _isolated(self, work: Work) -> None:
        """One try of one audit or vote; whatever it raises is this job's, never the service's."""
        failed: Exception | None = None
        try:
            await self._run(work)
        except Exception as exc:  # counted, logged, retried: see the module docstring
            failed = exc
        finally:
            self._slots.release()
        if failed is None:
            return
        self.metrics.job_errors.labels(work.kind, type(failed).__name__).inc()
        attempt = work.attempt + 1
        log.warning("%s of job %s failed (try %d of %d): %s: %s", work.kind,
                    work.commitment.job_id.hex()[:16], attempt, WORK_ATTEMPTS,
                    type(failed).__name__, failed)
        if attempt < WORK_ATTEMPTS:
            await trio.sleep(min(WORK_BACKOFF[0] * 2 ** work.attempt, WORK_BACKOFF[1]))
            self._enqueue(dataclasses.replace(work, attempt=attempt))
        else:
            log.error("giving up the %s of job %s after %d tries; the duties poller hands it "
                      "out again", work.kind, work.commitment.job_id.hex()[:16], attempt)
            self.queued.pop((work.kind, work.key), None)

    async def _run(self, work: Work) -> None:
        journalled = self.journal.get(work.kind, work.key)
        if journalled is not None:
            kept: tuple[str, bytes, bytes] | None = _journalled(journalled)
        elif self.journal.count_attempt(work.kind, work.key) > ATTEMPTS_EVER:
            reason = f"this validator's {work.kind} failed {ATTEMPTS_EVER} times"
            log.error("%s of job %s: %s; attesting INCONCLUSIVE", work.kind,
                      work.commitment.job_id.hex()[:16], reason)
            kept = self._keep(work, ATTEST, self.validator.inconclusive(
                work.commitment, work.beacon_round, reason), b"")
        else:
            kept = await self._find(work)
        if kept is not None:
            await self._submit(*kept)

    async def _find(self, work: Work) -> tuple[str, bytes, bytes] | None:
        """Re-execute and sign what was found, journalled; None when there is nothing to sign
        (the job is final, or its output was withheld and reported)."""
        request = await self._recorded_request(work)
        if request is None:
            return None
        output: Tensor | None = None
        if self.validator.needs_output(request, work.commitment):
            try:
                output = await self._output(work)
            except OutputUnavailable as exc:
                if not (await self.ledger.job(work.commitment.job_id)).pending:
                    log.info("%s of job %s stops: %s", work.kind,
                             work.commitment.job_id.hex()[:16], exc)
                    return None
                # still awaited: INCONCLUSIVE never slashes, and answering spares the penalty
                return self._keep(work, ATTEST, self.validator.inconclusive(
                    work.commitment, work.beacon_round, str(exc)), b"")
        on_record = work.kind == VOTE and (await self.ledger.dispute(work.dispute_id)).on_record
        record: list[RecordJob] | None = None
        unknown = 0
        give_up: Callable[[], bool] | None = None
        if on_record or (work.kind == AUDIT
                         and self.validator.wants_record(request, work.commitment)):
            # fetched and scored only while a round is left before the duty's deadline
            answer_by = self._answer_by(work, await self.ledger.job(work.commitment.job_id))

            def give_up() -> bool:
                return self.ledger.round >= answer_by - 1

            record, unknown = await self._record(work.commitment, give_up)
        started = time.perf_counter()
        async with self._cpu:
            if work.kind == AUDIT:
                flagged = set(self.validator.flagged())
                finding: Attestation | Evidence = await trio.to_thread.run_sync(
                    self.validator.audit, request, work.commitment, work.beacon_round, output,
                    record, give_up,
                )
                now = self.validator.flagged()
                self.metrics.flagged.set(len(now))
                for node, model_id, dtype in set(now) - flagged:
                    log.warning("node %s flagged: its %s jobs of model %s deviate persistently "
                                "across this validator's audits (%s)", node.hex()[:16], dtype,
                                model_id.hex()[:16], finding.detail if isinstance(
                                    finding, Evidence) else finding.reason)
            else:
                finding = await trio.to_thread.run_sync(
                    self.validator.vote, request, work.commitment, work.beacon_round, output,
                    record, on_record, give_up, unknown,
                )
                self.metrics.votes.inc()
        self.metrics.verify_latency.observe(time.perf_counter() - started)
        if output is not None and work.kind == AUDIT:
            # a committee may need it from us: over this job, or over a record that holds it
            self.journal.record(OUTPUT, work.commitment.job_id, codec.encode(output))
            self._outputs_noted += 1
            if self._outputs_noted % OUTPUT_PRUNE_EVERY == 0:
                self._prune_outputs()
        if isinstance(finding, Evidence):
            self.metrics.mismatches.inc()
            self.metrics.verified.labels("FRAUD").inc()
            if finding.offence is Offence.INVALID_PROOF:
                return self._keep(work, ACCUSE_INVALID_PROOF, finding, request.encode())
            return self._keep(work, ACCUSE, finding, b"")
        self.metrics.verified.labels(str(finding.verdict)).inc()
        return self._keep(work, ATTEST, finding, b"")

    def _keep(self, work: Work, op: str, finding: Attestation | Evidence, request: bytes
              ) -> tuple[str, bytes, bytes]:
        """Journal a finding before it is sent; returns what the journal holds (the first)."""
        extra = op.encode() + (b"\n" + request if request else b"")
        self.journal.record(work.kind, work.key, finding.encode(), extra)
        kept = self.journal.get(work.kind, work.key)
        assert kept is not None
        return _journalled(kept)

    async def _recorded_request(self, work: Work) -> JobRequest | None:
        """The job's signed request as the ledger recorded it, or None once the job is final."""
        job_id = work.commitment.job_id
        data = await self.ledger.job_data(job_id)
        if not data.found or not data.pending:
            log.info("job %s is no longer pending on the ledger; nothing to %s", job_id.hex()[:16],
                     work.kind)
            return None
        request = JobRequest.decode(data.request).verify()
        if request.job_id != job_id:
            raise MalformedMessage("ledger job_data: the request is for another job")
        if Commitment.decode(data.commitment).content_id != work.commitment.content_id:
            raise MalformedMessage("ledger job_data: the ledger recorded another commitment")
        return request

    async def _output(self, work: Work) -> Tensor:
        """The node's output for an ``llm`` job: from the ledger if posted, else fetched from the
        node (and, for a vote, from the accusers); a node that does not serve it to its auditor
        is reported (see the module docstring)."""
        commitment = work.commitment
        job_id = commitment.job_id
        posted = (await self.ledger.job_data(job_id)).output
        if posted is not None:
            return _posted_output(posted, commitment)
        job = await self.ledger.job(job_id)
        output = await self._fetch_with_retries(commitment, self._answer_by(work, job))
        if output is not None:
            return output
        if work.kind == VOTE:
            return await self._from_accusers(work)
        if not job.reported:
            await self._report(job_id, commitment.node)
        return await self._await_posted(commitment)

    async def _from_accusers(self, work: Work) -> Tensor:
        """A disputed job's output from the validators that accused it, checked against the
        commitment: the node withheld it from this committee member."""
        dispute = await self.ledger.dispute(work.dispute_id)
        for accuser in dispute.accusers:
            if accuser == self.me:
                continue
            try:
                return await self.fetch_output(work.commitment, accuser)
            except ProtocolError as exc:
                self.metrics.fetch_failures.labels(drop_reason(exc)).inc()
                log.info("fetching the output of job %s from accuser %s failed: %s",
                         work.commitment.job_id.hex()[:16], accuser.hex()[:16], exc)
        raise OutputUnavailable("neither the node nor an accuser served the job's output to "
                                "this committee member, and it is not on the ledger")

    async def _record(self, commitment: Commitment, give_up: Callable[[], bool]
                      ) -> tuple[list[RecordJob], int]:
        """The node's record before this job, as the ledger lists it, each job with the output
        its node served: from the ledger, the node or the validators that audited it (a job
        whose score this validator keeps needs none), and how many listed jobs the ledger
        could not give. Newest first, as they are scored: outputs are fetched for
        ``RECORD_FETCH_S`` at most, and not once ``give_up`` says the duty's time is nearly
        out; a job without one is not judged (a vote on a record not judged whole is never
        VALID)."""
        stop_at = trio.current_time() + RECORD_FETCH_S
        found: list[RecordJob] = []
        unknown = 0
        for job_id in reversed(await self.ledger.record(commitment.job_id)):
            data = await self.ledger.job_data(job_id)
            if not data.found:
                unknown += 1  # gone from the ledger's index: not judged
                continue
            request = JobRequest.decode(data.request).verify()
            recorded = Commitment.decode(data.commitment).verify()
            if request.job_id != job_id or recorded.job_id != job_id:
                raise MalformedMessage("ledger job_data: a record's job is another job")
            output: Tensor | None = None
            if not self.validator.has_score(recorded):
                if data.output is not None:
                    output = _posted_output(data.output, recorded)
                elif trio.current_time() < stop_at and not give_up():
                    output = await self._record_output(recorded)
            found.append(RecordJob(request, recorded, output))
        found.reverse()
        return found, unknown

    async def _record_output(self, commitment: Commitment) -> Tensor | None:
        """A record job's output: kept from this validator's own audit, else from its node,
        then from each validator that attested it."""
        kept = self.journal.get(OUTPUT, commitment.job_id)
        if kept is not None:
            return schema.tensor("kept output", codec.decode(kept[0]))
        job = await self.ledger.job(commitment.job_id)
        for peer in dict.fromkeys((commitment.node, *job.attested_by, job.auditor)):
            if not peer or peer == self.me:
                continue
            try:
                return await self.fetch_output(commitment, peer)
            except ProtocolError as exc:
                self.metrics.fetch_failures.labels(drop_reason(exc)).inc()
                log.info("fetching the output of record job %s from %s failed: %s",
                         commitment.job_id.hex()[:16], peer.hex()[:16], exc)
        return None

    def _answer_by(self, work: Work, job: JobInfo) -> int:
        """The last round this duty may be answered in: the auditor's deadline (and the job's
        window, to report in), or the end of the committee's vote window."""
        status = self.ledger.status
        if status is None:
            return work.beacon_round
        if work.kind == AUDIT:
            return min(job.window_end, work.beacon_round + status.audit_window)
        return work.beacon_round + status.vote_window

    async def _fetch_with_retries(self, commitment: Commitment, answer_by: int
                                  ) -> Tensor | None:
        """The node's output, tried ``FETCH_ATTEMPTS`` times while ``ANSWER_MARGIN`` rounds are
        left before ``answer_by`` to report it or to ask the accusers."""
        backoff = Backoff(*FETCH_BACKOFF)
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                return await self.fetch_output(commitment)
            except ProtocolError as exc:
                self.metrics.fetch_failures.labels(drop_reason(exc)).inc()
                log.info("fetching the output of job %s from node %s failed (try %d of %d): %s",
                         commitment.job_id.hex()[:16], commitment.node.hex()[:16], attempt,
                         FETCH_ATTEMPTS, exc)
            if attempt == FETCH_ATTEMPTS or self.ledger.round >= answer_by - ANSWER_MARGIN:
                break  # keep time to report, or to ask the accusers
            await trio.sleep(backoff.next())
        return None

    async def fetch_output(self, commitment: Commitment, peer: bytes | None = None) -> Tensor:
        """The answer of the node (or of ``peer``) on the job-data protocol, checked: an output
        tensor that hashes to the committed output hash, or a :class:`ProtocolError` naming
        what is wrong."""
        reply = await self.host.request(
            peer or commitment.node, wire.PROTOCOL_JOB_DATA,
            wire.encode_map({"job_id": commitment.job_id}), FETCH_TIMEOUT_S,
        )
        output = schema.get(reply, "output", schema.tensor, "job data reply")
        if sha256(codec.encode(output)) != commitment.output_hash:
            raise MalformedMessage("job data reply: the output does not hash to the committed "
                                   "output hash")
        return output

    async def _report(self, job_id: bytes, node: bytes) -> None:
        """Report the job's output unavailable, once (a repeat would be refused anyway)."""
        if self.journal.get(REPORT, job_id) is not None:
            return
        try:
            await self.ledger.transact("report_unavailable", job_id=job_id)
        except wire.RemoteError as exc:  # reported by someone else, or too late: the ledger says
            log.info("the ledger refused the report on job %s: %s", job_id.hex()[:16], exc)
        else:
            self.metrics.reports.inc()
            log.warning("reported job %s unavailable: node %s served no usable output",
                        job_id.hex()[:16], node.hex()[:16])
        self.journal.record(REPORT, job_id, b"reported")

    async def _await_posted(self, commitment: Commitment) -> Tensor:
        """The output once the node posts it on the ledger, until the availability window ends."""
        while True:
            job = await self.ledger.job(commitment.job_id)
            if not job.pending:
                raise OutputUnavailable(f"the job is {job.status or 'gone'}; its output was never "
                                        "served")
            posted = (await self.ledger.job_data(commitment.job_id)).output
            if posted is not None:
                return _posted_output(posted, commitment)
            status = self.ledger.status
            if (job.reported and status is not None
                    and self.ledger.round > job.reported_round + status.availability_window):
                raise OutputUnavailable("the node did not post the output in the availability "
                                        "window; the ledger slashes it")
            if not job.reported and self.ledger.round > job.window_end:
                raise OutputUnavailable("the job's challenge window closed unreported")
            await trio.sleep(SERVED_POLL_S)

    async def handle_job_data(self, data: bytes, sender: bytes) -> bytes:
        """The output of an ``llm`` job this validator audited, to a staked validator (a
        committee member the node withholds it from, over the job or a record that holds it);
        nothing else is served."""
        request = schema.check_map(
            wire.decode_map(data, wire.MAX_REQUEST_BYTES[wire.PROTOCOL_JOB_DATA]), "job data",
            {"job_id": schema.digest})
        if sender not in self.ledger.validators:
            return wire.error_response("job data is served to staked validators only")
        kept = self.journal.get(OUTPUT, request["job_id"])
        if kept is None:
            return wire.error_response(f"this validator holds no output of job "
                                       f"{request['job_id'].hex()[:16]}…")
        return wire.ok_response(output=codec.decode(kept[0]))

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
        try:
            await self.host.publish(topic, message)
        except Exception as exc:  # no peers: the ledger holds it anyway
            log.debug("publishing %s failed: %s", op, exc)

    # -- zk keys -------------------------------------------------------------------------------
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

    async def _check_zk_keys(self) -> None:
        if self.validator.zk_keys:
            await self.check_zk_keys()
        self.zk_checked.set()

    # -- health and lifetime -------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        problems = [] if self.ledger.reachable() else ["the ledger is unreachable"]
        problems += self.standing.problems()
        if not self.zk_checked.is_set():
            problems.append("zk keys not yet compared with the ledger's")
        problems += list(self.zk_refused.values())
        peers = len(self.host.connected())
        if not peers:
            problems.append("no libp2p peers")
        checks: dict[str, Any] = {
            "ledger_reachable": self.ledger.reachable(),
            "bonded": self.standing.bonded and not self.standing.problems(),
            "zk_keys_match": self.zk_checked.is_set() and not self.zk_refused,
            "peers": peers,
            "duties_known": self.duties_known.is_set(),
        }
        ready = not problems
        if not ready:
            checks["reason"] = "; ".join(problems)
        self.metrics.ready.set(1 if ready else 0)
        return ready, checks

    async def _keep_ready_metric(self) -> None:
        while True:
            self.health()
            await trio.sleep(READY_REFRESH_S)

    async def run(self, shutdown: trio.Event) -> None:
        stop_http = trio.Event()

        def supervised(name: str, task: Callable[[], Awaitable[None]]) -> None:
            nursery.start_soon(keep_running, name, task, self.metrics, log)

        async with self.host.running(), trio.open_nursery() as nursery:
            supervised("ledger_status", self.ledger.keep_fresh)
            supervised("standing", self.standing.watch)
            supervised("bond", lambda: self.standing.bond(self.config.stake))
            supervised("work", self._work)
            supervised("duties", self._keep_doing_duties)
            supervised("zk_keys", self._check_zk_keys)
            supervised("ready", self._keep_ready_metric)
            nursery.start_soon(serve_http, health_app(self.health), self.config.http_host,
                               self.config.http_port, stop_http)
            if self.config.metrics:
                nursery.start_soon(serve_http, metrics_app(self.metrics),
                                   self.config.metrics_host, self.config.metrics_port, stop_http)
            await shutdown.wait()
            stop_http.set()
            nursery.cancel_scope.cancel()
        self.journal.close()


def _journalled(kept: tuple[bytes, bytes]) -> tuple[str, bytes, bytes]:
    """(op, message, request) from a journal row: the op and request live in its ``extra``."""
    op, _, request = kept[1].partition(b"\n")
    return op.decode(), kept[0], request


def _posted_output(data: bytes, commitment: Commitment) -> Tensor:
    """An output posted on the ledger (``serve_data``), which checked its hash; checked again."""
    if sha256(data) != commitment.output_hash:
        raise MalformedMessage("the posted output does not hash to the committed output hash")
    return schema.tensor("posted output", codec.decode(data))


def _hashes(values: tuple[object, ...]) -> str:
    return " / ".join(
        v.hex()[:16] + "…" if isinstance(v, bytes) else repr(v) for v in values
    )
