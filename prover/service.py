"""The inference node as a long-running service: libp2p, an OpenAI-compatible HTTP API, metrics.

:class:`NodeService` wraps an :class:`~prover.node.InferenceNode`. A job, from
the job protocol or from HTTP, goes through :meth:`NodeService.execute`:

1. it is refused before anything is computed when the node cannot take it:
   shutting down, or not in good standing on the ledger (unbonded, jailed,
   tombstoned: 503 with the reason), the caller past its rate
   (``rate_limit``/``rate_burst`` per libp2p peer or HTTP address: 429), too
   many jobs waiting (``max_queued_jobs``: 429), an input the node will not
   run (a model it does not serve, ``max_new_tokens`` above the operator's
   limit, a prompt or tensor out of bounds, a request for another node or
   chain or already expired: 400), or a job the ledger would not record
   (``can_pay``: the client's balance, counting the fees of its jobs already
   running here, and this node's room under its in-flight limit): nobody gets
   tokens generated for free;
2. if the signing journal already holds a commitment for the job id, that one
   is returned (a retried request never makes the node sign twice: two
   commitments to one job are equivocation);
3. an ``llm`` job joins its model's running batch (:mod:`prover.running_batch`),
   which jobs join and leave at every decoding step, each token handed to the
   job's caller as it comes; any other job runs in a worker thread, one at a
   time (exact mode computes every job alone); either way the event loop keeps
   serving;
4. the commitment, request and output are journalled, the ledger records the
   job (``record_job``) *before* the output is released (a stream's tokens go
   out as they come, after the fee check; its commitment only now), and the commitment
   is queued for gossip: a :class:`~protocol.net.host.BatchPublisher` sends it
   on ``/assay/1/commitment-batches`` with whatever else queued meanwhile, so
   the client's answer never waits on gossip (validators that miss it find
   it in the ledger's log).

HTTP jobs are signed by the node's *client key*, the account that pays the
fees of its HTTP users (a gateway account): OpenAI clients do not sign. So
that a user need not trust the node for that, every response carries a
receipt in its ``assay`` field: the signed request, the signed commitment and
the output's canonical bytes, which :mod:`protocol.receipt` (``assay receipt
verify``) checks against each other and against the ledger's record of the
job. Completions and chat (:mod:`prover.completion_api`) use the model's own
tokenizer and chat template; each choice is an ``llm`` mode job whose
commitment binds the generated tokens and a sketch of the hidden states.
A request's jobs are admitted all or none, then run in the service's nursery
apart from the HTTP request, so a client that stops reading or goes away
never holds the batch or the queue (one that goes away has its jobs dropped,
uncommitted). With ``stream: true`` the answer is server-sent events in the
OpenAI chunk shape, each token's text as soon as the step that chose it ends,
a choice's last chunk carrying its ``assay`` receipt and the last of all
``usage``. Refusals use the OpenAI error shape: 400 for the request (an
unknown field, or an OpenAI field the node does not implement at a value
that would change the answer, is refused naming it: :mod:`prover.openai_fields`),
401 without the API key (compared in constant time), 429 and 503 with
``Retry-After``; anything unforeseen is a 500 in the same shape, counted.

The node answers reports of unavailability itself: it polls the ledger for
its jobs reported unavailable (``open_challenges``) and posts each one's
output (``serve_data``) from its journal, so an honest node is never slashed
because one validator could not reach it.

``/health`` is 200 only while the node can serve: models loaded, the ledger
reachable, the node bonded and neither jailed nor tombstoned (as the ledger
says now, polled every second: :mod:`protocol.net.standing`), the gateway
account able to pay a fee, and zk keys matching the ledger's; otherwise 503
with every check and the reason. A slash is logged at WARNING with the
ledger's evidence.

A node that proves a zk model first asks the ledger for the model's
registered verifying-key hash (``zk_model``): if it differs from the node's
own key, the ledger would judge the node's honest proofs under another key and
find them invalid, so the node refuses that model's jobs, says why in its log,
and reports not ready on ``/health`` (``zk_keys_match``). Until the answer
comes, zk jobs are refused as not ready.

Shutdown (SIGTERM): stop accepting jobs, let in-flight ones finish, close
the journal, return; the command then exits 0.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from torch import nn

from protocol import codec
from protocol.codec import Tensor
from protocol.config import NodeConfig
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal
from protocol.messages import Commitment, JobRequest
from protocol.net import schema, validate, wire
from protocol.net.host import BatchPublisher, PeerHost, PeerUnavailable
from protocol.net.http import (
    HttpError,
    api_key_matches,
    health_response,
    metrics_app,
    read_json,
    serve_http,
    unavailable,
    warn_if_exposed,
)
from protocol.net.ledger_client import LedgerClient, SignTransaction
from protocol.net.metrics import Metrics
from protocol.net.rate_limit import RateLimiter
from protocol.net.standing import Standing
from protocol.net.supervise import keep_running
from protocol.sampling import PPM
from prover.adversary import SubstituteModel
from prover.completion_api import Choice, Generation, parse_generation, usage
from prover.embedder import EMBEDDER_KIND, TextEncoder, TextTooLong
from prover.llm.commit import prompt_of
from prover.llm.engine import QueueFull, StepToken
from prover.llm.job import LLMJobError, parse_job
from prover.llm.model import GenerationError
from prover.model_store import read_meta
from prover.node import LLM_MODE, InferenceNode, JobRejected, JobResult
from prover.openai_fields import CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS, INFER, check_fields
from prover.registry import RegistryEntry
from prover.running_batch import RunningBatches

log = logging.getLogger("assay.node")

COMMITMENT = "commitment"
SHUTDOWN_GRACE_S = 30.0
GOSSIP_FLUSH_S = 2.0
ZK_CHECK_RETRY_S = 1.0
REPORTS_POLL_S = 0.5
"""How often the node asks the ledger for its jobs reported unavailable (the availability
window is a couple of rounds)."""
GATEWAY_POLL_S = 2.0
MAX_PROMPT_TOKENS = 1024
EXPIRY_ROUNDS = 1_000
"""Rounds after the ledger's current one in which an HTTP job's request may still be recorded:
room for a long generation or proof (a quarter of an hour of the devnet's one-second rounds)."""
RETRY_AFTER_S = 5.0


class NodeUnavailable(ProtocolError):
    """The node is shutting down or not ready; the client should go elsewhere (503)."""


class TooManyJobs(ProtocolError):
    """The caller is past its rate, or too many jobs wait for the model (429)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unpaid(JobRejected):
    """The ledger would not record the job (its client cannot pay, it expired, or the node has
    as many jobs in flight as its stake covers): nothing was computed."""


OnToken = Callable[[StepToken], None]
Event = tuple[int, "StepToken | tuple[Tensor, Commitment] | HttpError"]
"""What an HTTP job tells its answer: a token, its output and commitment, or its failure."""


@dataclass(frozen=True)
class EventStream:
    """Chunks sent as server-sent events in the OpenAI shape as they come, then
    ``data: [DONE]``; ``close`` runs however the stream ends (the client may go away)."""

    chunks: AsyncIterator[dict[str, Any]]
    close: Callable[[], None]

    async def lines(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.chunks:
                yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()
        except HttpError as exc:  # a job failed after the answer began: say so in the stream
            error = {"message": exc.message, "type": "server_error" if exc.status >= 500
                     else "invalid_request_error", "param": exc.param, "code": exc.reason}
            yield f"data: {json.dumps({'error': error})}\n\n".encode()
        yield b"data: [DONE]\n\n"


class EventResponse(StreamingResponse):
    """A streamed answer whose jobs are dropped however the response ends."""

    def __init__(self, stream: EventStream) -> None:
        super().__init__(stream.lines(), media_type="text/event-stream",
                         headers={"cache-control": "no-cache"})
        self.stream = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.close()


def _http_error(exc: ProtocolError) -> HttpError:
    """A job's refusal or failure as the HTTP answer it gets."""
    if isinstance(exc, NodeUnavailable):
        return unavailable(str(exc))
    if isinstance(exc, TooManyJobs):
        return HttpError(429, "overloaded", str(exc), retry_after_s=exc.retry_after_s)
    if isinstance(exc, Unpaid):
        return unavailable(f"{exc}; nothing was computed (the operator funds the gateway "
                           "account, or bonds more stake)", 60.0)
    if isinstance(exc, PeerUnavailable):
        return unavailable(f"the ledger is unreachable: {exc}")
    return HttpError(400, "invalid_job", str(exc))


def cheating_substitutes(models: Mapping[bytes, nn.Module]) -> dict[bytes, nn.Module]:
    """For a devnet cheater: each model with its first weight tensor slightly changed.

    Float weights are scaled by 1.05; an integer model's int8 weights move one
    step (they are buffers, not parameters).
    """
    out = {}
    for model_id, module in models.items():
        cheap = copy.deepcopy(module)
        with torch.no_grad():
            floats = list(cheap.parameters())
            if floats:
                floats[0].mul_(1.05)
            else:
                weight = next(b for name, b in cheap.named_buffers() if name.endswith("weight"))
                weight.copy_((weight.to(torch.int16) + 1).clamp(-127, 127).to(weight.dtype))
        out[model_id] = cheap
    return out


MAX_EMBEDDING_INPUTS = 2048
"""Texts per embeddings request, as OpenAI's API allows."""


@dataclass(frozen=True)
class ServedModel:
    entry: RegistryEntry
    text: TextEncoder | None = None  # for embedders: text → token ids

    @property
    def name(self) -> str:
        return self.entry.name

    def card(self) -> dict[str, Any]:
        return {
            "id": self.entry.name, "object": "model", "created": self.entry.added_at,
            "owned_by": "assay",
            "assay": {"model_id": self.entry.model_id.hex(), "mode": self.entry.mode,
                      "kind": self.entry.kind},
        }


class NodeService:
    def __init__(
        self,
        config: NodeConfig,
        node: InferenceNode,
        client_key: SigningKey,
        entries: Sequence[RegistryEntry],
        host: PeerHost,
        journal: SigningJournal,
        metrics: Metrics,
        sign_tx: SignTransaction,
    ) -> None:
        self.config = config
        self.node = node
        self.client_key = client_key
        self.served = [
            ServedModel(e, TextEncoder(e.path, read_meta(e.path).config)
                        if e.kind == EMBEDDER_KIND else None)
            for e in entries
        ]
        self.models = {m.name: m for m in self.served}
        self.models.update({m.entry.model_id.hex(): m for m in self.served})
        self.host = host
        self.journal = journal
        self.metrics = metrics
        self.ledger = LedgerClient(host, config.ledger, sign_tx)
        self.standing = Standing(self.ledger, node.node_id, "node", log)
        self.gateway_balance: int | None = None
        """The gateway (client key) account's balance, as the ledger last said."""
        self.accepting = True
        self.in_flight = 0
        self.held: dict[bytes, int] = {}
        """Fees of jobs in flight here, by client: ``can_pay`` must cover them too."""
        self.limiter = RateLimiter(config.rate_limit, config.rate_burst)
        self.zk_checked = not node.zk_provers
        """Whether the zk models' keys were compared with the ledger's registered ones."""
        self.zk_refused: dict[bytes, str] = {}
        """zk models this node will not serve (the ledger registered another key), and why."""
        self._job_lock = trio.Lock()
        self.batches = RunningBatches(
            {model_id: llm for model_id, (llm, _) in node.llms.items()}, metrics,
            attention=node.llm_attention, threads=node.runtime.threads,
            max_num_seqs=config.max_num_seqs, max_model_len=config.max_model_len,
            max_waiting=config.max_queued_jobs)
        self._generating: set[bytes] = set()
        """Job ids in a running batch now (a job is generated once, however often asked)."""
        self._jobs: trio.Nursery | None = None
        """Where HTTP jobs run, apart from their clients' requests, while the node serves."""
        self._nonces = itertools.count(time.time_ns())
        self.gossip = BatchPublisher(host, wire.TOPIC_COMMITMENT_BATCHES)
        host.subscribe(wire.TOPIC_COMMITMENTS, validate.commitments(self.ledger), self._ignore)
        host.subscribe(wire.TOPIC_COMMITMENT_BATCHES, validate.commitment_batches(self.ledger),
                       self._ignore)
        host.subscribe(wire.TOPIC_BEACON, validate.beacon_rounds(self.ledger), self._ignore)
        host.serve(wire.PROTOCOL_JOB, self.handle_job)
        host.serve(wire.PROTOCOL_JOB_DATA, self.handle_job_data)

    @property
    def bonded(self) -> bool:
        return self.standing.bonded

    async def _ignore(self, message: Any, sender: bytes) -> None:
        """Nodes relay these topics (validated) so the mesh is dense; they act on none."""

    # -- jobs ----------------------------------------------------------------------------------
    def recorded(self, job_id: bytes) -> tuple[JobRequest, Tensor, Commitment] | None:
        kept = self.journal.get(COMMITMENT, job_id)
        if kept is None:
            return None
        data = codec.decode(kept[1])
        return JobRequest.decode(data["request"]), data["output"], Commitment.decode(kept[0])

    def not_ready(self) -> list[str]:
        """Why this node cannot take jobs now (empty: it can)."""
        reasons = [] if self.ledger.reachable() else ["the ledger is unreachable"]
        reasons += self.standing.problems()
        return reasons

    def _admit(self, request: JobRequest, caller: object) -> None:
        """Refuse, before anything is computed, a job this node cannot or will not run."""
        if not self.accepting:
            raise NodeUnavailable("this node is shutting down; send the job to another node")
        self._check_input(request)
        reasons = self.not_ready()
        if reasons:
            raise NodeUnavailable(f"this node is not ready: {'; '.join(reasons)}")
        if request.model_id in self.node.zk_provers and not self.zk_checked:
            raise NodeUnavailable(
                "this node has not yet checked its zk keys against the ledger's; retry"
            )
        wait = self.limiter.take(caller) if caller is not None else 0.0
        if wait:
            raise TooManyJobs(f"rate limit: at most {self.config.rate_limit:g} jobs/s "
                              f"(bursts of {self.config.rate_burst}) per caller", wait)
        if self.in_flight >= self.config.max_queued_jobs:
            raise TooManyJobs(f"{self.in_flight} jobs are waiting for the model; retry later",
                              RETRY_AFTER_S)

    def _check_input(self, request: JobRequest) -> None:
        """The operator's bounds, on every path: the request is for this node and network and
        not expired, and the model, prompt and generation length and tensor shapes are ones
        this node serves."""
        if request.node != self.node.node_id:
            raise JobRejected(f"the request is for node {request.node.hex()[:16]}…, not this "
                              f"one ({self.node.node_id.hex()[:16]}…)")
        if request.chain_id != self.ledger.chain_id:
            raise JobRejected(
                f"the request is signed for chain {request.chain_id.hex()[:16]}…; this node's "
                f"ledger is chain {self.ledger.chain_id.hex()[:16]}…"
            )
        if request.expiry_round < self.ledger.round:
            raise JobRejected(f"the request expired after round {request.expiry_round}; the "
                              f"ledger is at round {self.ledger.round}")
        model = request.model_id
        if not any(model in held for held in (self.node.models, self.node.llms,
                                              self.node.zk_provers, self.node.tensors)):
            raise JobRejected(f"this node does not serve model {model.hex()[:16]}…")
        if model in self.zk_refused:
            raise JobRejected(self.zk_refused[model])
        if 0 in request.input.shape or not request.input.shape:
            raise JobRejected(f"input shape {list(request.input.shape)} is empty: every "
                              "dimension must be at least 1")
        if model in self.node.llms:
            try:
                job = parse_job(request)
            except LLMJobError as exc:
                raise JobRejected(str(exc)) from exc
            if job.max_new_tokens > self.config.max_new_tokens:
                raise JobRejected(f"max_new_tokens {job.max_new_tokens} exceeds this node's "
                                  f"limit {self.config.max_new_tokens}")
            if request.input.numel > MAX_PROMPT_TOKENS:
                raise JobRejected(f"the prompt has {request.input.numel} tokens; this node "
                                  f"takes at most {MAX_PROMPT_TOKENS}")

    async def _hold_fee(self, request: JobRequest) -> None:
        """Ask the ledger whether it would record the job, counting the client's fees already
        held here and this node's other jobs not yet recorded."""
        held = self.held.get(request.client, 0)
        payable, reason = await self.ledger.can_pay(request, held, self.in_flight - 1)
        if not payable:
            self.metrics.jobs_refused_unpaid.inc()
            raise Unpaid(f"the ledger would not record the job: {reason}")
        self.held[request.client] = held + request.fee

    def _release_fee(self, request: JobRequest) -> None:
        left = self.held.get(request.client, 0) - request.fee
        if left > 0:
            self.held[request.client] = left
        else:
            self.held.pop(request.client, None)

    async def execute(self, request: JobRequest, caller: object = None,
                      top_logprobs: int | None = None, on_token: OnToken | None = None
                      ) -> tuple[Tensor, Commitment]:
        """Check, run, journal, record and gossip one job (see the module docstring)."""
        held = await self._take(request, caller)
        try:
            return await self._run_taken(request, top_logprobs, on_token)
        finally:
            self._let_go(request, held)

    async def _take(self, request: JobRequest, caller: object) -> bool:
        """Admit a job and hold its fee; whether a fee is held (a journalled job holds none)."""
        self._admit(request, caller)
        self.in_flight += 1
        try:
            if self.recorded(request.job_id) is None:
                await self._hold_fee(request)
                return True
            return False
        except BaseException:
            self.in_flight -= 1
            raise

    def _let_go(self, request: JobRequest, held: bool) -> None:
        self.in_flight -= 1
        if held:
            self._release_fee(request)

    async def _run_taken(self, request: JobRequest, top_logprobs: int | None,
                         on_token: OnToken | None) -> tuple[Tensor, Commitment]:
        started = time.perf_counter()
        try:
            output, commitment, fresh = await self._compute(request, top_logprobs, on_token)
            try:
                await self.ledger.call("record_job", request=request.encode(),
                                       commitment=commitment.encode())
            except wire.RemoteError as exc:
                if fresh or "already recorded" not in str(exc):
                    raise NodeUnavailable(f"the ledger refused the job: {exc}") from exc
            await self.gossip.submit(commitment.encode())
            self.metrics.jobs_committed.labels(commitment.mode).inc()
            if commitment.mode == LLM_MODE:
                self.metrics.tokens_generated.inc(output.numel)
            self.metrics.job_latency.observe(time.perf_counter() - started)
            return output, commitment
        except ProtocolError as exc:
            self.metrics.jobs_failed.labels(type(exc).__name__).inc()
            raise

    async def _compute(self, request: JobRequest, top_logprobs: int | None,
                       on_token: OnToken | None) -> tuple[Tensor, Commitment, bool]:
        """The job's output and commitment, and whether they were computed now (not kept)."""
        kept = self.recorded(request.job_id)
        if kept is not None:
            return kept[1], kept[2], False
        if self.node.cheat is None and self.batches.serves(request.model_id):
            output, commitment = await self._generate_batched(request, top_logprobs, on_token)
            return output, commitment, True
        async with self._job_lock:
            kept = self.recorded(request.job_id)
            if kept is not None:
                return kept[1], kept[2], False
            result = await trio.to_thread.run_sync(self.node.handle, request)
            self._journal(request, result)
            return result.output, result.commitment, True

    def _journal(self, request: JobRequest, result: JobResult) -> None:
        extra = codec.encode({"request": request.encode(), "output": result.output})
        self.journal.record(COMMITMENT, request.job_id, result.commitment.encode(), extra)

    async def _generate_batched(self, request: JobRequest, top_logprobs: int | None,
                                on_token: OnToken | None) -> tuple[Tensor, Commitment]:
        """Generate in the model's running batch, each token handed to ``on_token`` as it
        comes; then sign and journal the commitment."""
        job_id = request.job_id
        if job_id in self._generating:
            raise TooManyJobs("this job is being generated now; retry for its commitment",
                              RETRY_AFTER_S)
        job = parse_job(request)
        started = time.perf_counter()
        self._generating.add(job_id)
        try:
            try:
                tokens = self.batches.submit(request.model_id, job_id, prompt_of(request), job,
                                             top_logprobs)
            except QueueFull as exc:
                raise TooManyJobs(str(exc), RETRY_AFTER_S) from exc
            except GenerationError as exc:
                raise JobRejected(str(exc)) from exc
            generated = None
            try:
                async for produced in tokens:
                    if on_token is not None:
                        on_token(produced.token)
                    generated = produced.result or generated
            finally:
                if generated is None:
                    self.batches.cancel(job_id)
            if generated is None:
                raise JobRejected("the job was cancelled before it finished (its client went "
                                  "away); nothing was committed")
            result = self.node.commit_generated(request, generated, time.perf_counter() - started)
            self._journal(request, result)
            return result.output, result.commitment
        finally:
            self._generating.discard(job_id)


    async def handle_job(self, data: bytes, sender: bytes) -> bytes:
        request = JobRequest.decode(data, wire.MAX_REQUEST_BYTES[wire.PROTOCOL_JOB]).verify()
        try:
            output, commitment = await self.execute(request, sender)
        except (JobRejected, NodeUnavailable, TooManyJobs, PeerUnavailable) as exc:
            return wire.error_response(str(exc))
        return wire.ok_response(output=output, commitment=commitment.encode())

    async def handle_job_data(self, data: bytes, sender: bytes) -> bytes:
        """A job's output, for re-execution, to staked validators only.

        The request is not sent: validators take it from the ledger's record.
        """
        request = schema.check_map(
            wire.decode_map(data, wire.MAX_REQUEST_BYTES[wire.PROTOCOL_JOB_DATA]), "job data",
            {"job_id": schema.digest})
        if sender not in self.ledger.validators:
            return wire.error_response("job data is served to staked validators only")
        kept = self.recorded(request["job_id"])
        if kept is None:
            return wire.error_response(f"no served job {request['job_id'].hex()[:16]}…")
        return wire.ok_response(output=kept[1])

    async def answer_reports(self) -> None:
        """Post the output of every job of ours reported unavailable (see the module docstring)."""
        given_up: set[bytes] = set()
        while True:
            await self.ledger.wait_reachable()
            try:
                reported = await self.ledger.open_challenges(self.node.node_id)
            except ProtocolError as exc:
                log.warning("asking the ledger for reports of unavailability failed: %s", exc)
                reported = []
            for job_id in reported:
                if job_id not in given_up:
                    await self._serve_reported(job_id, given_up)
            await trio.sleep(REPORTS_POLL_S)

    async def _serve_reported(self, job_id: bytes, given_up: set[bytes]) -> None:
        kept = self.recorded(job_id)
        if kept is None:
            given_up.add(job_id)
            log.error("job %s is reported unavailable, but this node's journal does not hold "
                      "it: the node will be slashed for it", job_id.hex()[:16])
            return
        try:
            await self.ledger.call("serve_data", job_id=job_id, output=codec.encode(kept[1]))
        except wire.RemoteError as exc:
            given_up.add(job_id)
            log.error("the ledger refused the output of reported job %s: %s", job_id.hex()[:16],
                      exc)
            return
        except ProtocolError as exc:  # unreachable for now: the next poll tries again
            log.warning("posting the output of reported job %s failed: %s", job_id.hex()[:16],
                        exc)
            return
        self.metrics.served_data.inc()
        log.warning("job %s was reported unavailable; posted its output on the ledger",
                    job_id.hex()[:16])

    # -- HTTP ----------------------------------------------------------------------------------
    def _model(self, name: Any, mode: str | None) -> ServedModel:
        served = self.models.get(name) if isinstance(name, str) else None
        if served is None:
            raise HttpError(404, "unknown_model", f"model {name!r} is not served by this node")
        if mode == LLM_MODE and served.entry.mode != LLM_MODE:
            raise HttpError(400, "wrong_mode", f"model {name!r} is not a text model; use /v1/infer")
        if mode != LLM_MODE and served.entry.mode == LLM_MODE:
            raise HttpError(400, "wrong_mode", f"model {name!r} generates text; use completions")
        return served

    def _request(self, served: ServedModel, tensor: Tensor, params: dict[str, Any]) -> JobRequest:
        if not self.ledger.chain_id:
            raise unavailable("this node is not ready: it has not heard from its ledger yet")
        return JobRequest(
            model_id=served.entry.model_id, input=tensor, client=self.client_key.public.raw,
            node=self.node.node_id, nonce=next(self._nonces), fee=self.config.fee,
            expiry_round=max(self.ledger.round, 0) + EXPIRY_ROUNDS,
            chain_id=self.ledger.chain_id, params=tuple(params.items()),
        ).signed(self.client_key)

    def _assay_field(self, commitment: Commitment) -> dict[str, Any]:
        """The receipt every response carries: signed request, signed commitment, output bytes
        (from the journal, where the job was kept before it was recorded); see
        :mod:`protocol.receipt`."""
        kept = self.recorded(commitment.job_id)
        assert kept is not None, "a released output is always journalled first"
        request, output, _ = kept
        return {
            "job_id": commitment.job_id.hex(),
            "commitment_id": commitment.content_id.hex(),
            "commitment": base64.b64encode(commitment.encode()).decode(),
            "signature": commitment.signature.hex(),
            "node": commitment.node.hex(),
            "mode": commitment.mode,
            "request": base64.b64encode(request.encode()).decode(),
            "output": base64.b64encode(codec.encode(output)).decode(),
        }

    async def _run_http(self, request: JobRequest) -> tuple[Tensor, Commitment]:
        """Run an HTTP job (the caller's rate was taken when the request came in)."""
        try:
            return await self.execute(request)
        except ProtocolError as exc:
            raise _http_error(exc) from exc

    async def completions(self, body: dict[str, Any]) -> dict[str, Any] | EventStream:
        check_fields(body, COMPLETIONS)
        return await self._generation(body, chat=False)

    async def chat_completions(self, body: dict[str, Any]) -> dict[str, Any] | EventStream:
        check_fields(body, CHAT_COMPLETIONS)
        return await self._generation(body, chat=True)

    async def _generation(self, body: dict[str, Any], chat: bool) -> dict[str, Any] | EventStream:
        """Parse, admit every choice's job (all or none), start them in the running batch,
        and answer whole or as a stream (see the module docstring)."""
        served = self._model(body.get("model"), LLM_MODE)
        llm, _ = self.node.llms[served.entry.model_id]
        if llm.tokenizer is None:
            raise HttpError(400, "wrong_mode", f"model {served.name!r} has no tokenizer",
                            param="model")
        model_len = (self.batches.max_model_len(served.entry.model_id)
                     if self.batches.serves(served.entry.model_id) else llm.max_positions)
        generation = parse_generation(
            body, chat, llm.tokenizer, llm.chat_template, llm.eos_token_ids,
            self.config.max_new_tokens, model_len, MAX_PROMPT_TOKENS,
            self.config.max_num_seqs, secrets.randbelow(2**63))
        requests = [
            self._request(served, Tensor.from_torch(torch.tensor(
                [generation.prompt_of(i)], dtype=torch.int64)), job.to_params())
            for i, job in enumerate(generation.jobs)
        ]
        if self._jobs is None:
            raise unavailable("this node is not serving yet")
        held: list[tuple[JobRequest, bool]] = []
        try:
            for request in requests:
                held.append((request, await self._take(request, None)))
        except ProtocolError as exc:
            for request, fee in held:
                self._let_go(request, fee)
            raise _http_error(exc) from exc
        choices = [Choice(i, llm.tokenizer, job.stop_strings)
                   for i, job in enumerate(generation.jobs)]
        send, events = trio.open_memory_channel[Event](math.inf)
        async with send:
            for (request, fee), choice in zip(held, choices, strict=True):
                self._jobs.start_soon(self._http_job, request, fee, choice,
                                      generation.top_logprobs, send.clone())
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{requests[0].job_id.hex()[:24]}",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": served.name}
        keys = [r.job_id for r in requests]
        if generation.stream:
            return EventStream(self._chunks(head, generation, choices, events),
                               lambda: self._abandon(keys, events))
        try:
            async for _ in self._settled(choices, events):
                pass
        finally:
            self._abandon(keys, events)
        return self._whole(head, generation, choices)

    def _abandon(self, keys: list[bytes], events: trio.MemoryReceiveChannel[Event]) -> None:
        """The answer is done or its client went away: jobs still generating are dropped."""
        events.close()
        for key in keys:
            self.batches.cancel(key)

    async def _http_job(self, request: JobRequest, held: bool, choice: Choice,
                        top_logprobs: int | None,
                        events: trio.MemorySendChannel[Event]) -> None:
        """One admitted HTTP job, run in the service's nursery so a client that stops reading
        never holds a place in the batch or the queue once its job is done."""
        def tell(event: Event) -> None:
            # a client that went away closed its channel; its job was cancelled
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                events.send_nowait(event)

        def on_token(token: StepToken) -> None:
            now = time.perf_counter()
            if choice.last_token_at is None:
                self.metrics.time_to_first_token.observe(now - choice.started)
            else:
                self.metrics.time_per_output_token.observe(now - choice.last_token_at)
            choice.last_token_at = now
            tell((choice.index, token))

        async with events:
            try:
                output, commitment = await self._run_taken(request, top_logprobs, on_token)
                tell((choice.index, (output, commitment)))
            except ProtocolError as exc:
                tell((choice.index, _http_error(exc)))
            except Exception:  # a bug costs this job, never the service
                log.exception("an HTTP job failed")
                tell((choice.index, HttpError(500, "internal", "internal error")))
            finally:
                self._let_go(request, held)

    async def _settled(self, choices: list[Choice], events: trio.MemoryReceiveChannel[Event]
                       ) -> AsyncIterator[tuple[Choice, str, bool]]:
        """Each event as ``(choice, new text, finished)``; a job's failure fails the answer."""
        left = len(choices)
        async for index, event in events:
            choice = choices[index]
            if isinstance(event, HttpError):
                raise event
            if isinstance(event, StepToken):
                yield choice, choice.add(event), False
                continue
            output, commitment = event
            tokens = [int(t) for t in output.to_torch().reshape(-1).tolist()]
            llm, _ = self.node.llms[commitment.model_id]
            rest = choice.settle(tokens, llm.eos_token_ids)
            choice.assay = {**self._assay_field(commitment), "seed": self._seed(commitment),
                            "tokens": tokens}
            yield choice, rest, True
            left -= 1
            if not left:
                return

    def _seed(self, commitment: Commitment) -> int:
        kept = self.recorded(commitment.job_id)
        assert kept is not None
        return int(dict(kept[0].params)["seed"])

    def _whole(self, head: dict[str, Any], generation: Generation, choices: list[Choice]
               ) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for choice in choices:
            body: dict[str, Any] = {"index": choice.index, "finish_reason": choice.finish_reason}
            if generation.chat:
                body["message"] = {"role": "assistant", "content": choice.text}
                body["logprobs"] = choice.chat_logprobs()
            else:
                body["text"] = choice.text
                body["logprobs"] = choice.completion_logprobs()
            body["assay"] = {**(choice.assay or {}),
                             "prompt_tokens": generation.prompt_of(choice.index)}
            out.append(body)
        answer = {**head, "object": "chat.completion" if generation.chat else "text_completion",
                  "choices": out, "usage": usage(choices, generation)}
        if len(out) == 1:
            answer["assay"] = out[0]["assay"]
        return answer

    async def _chunks(self, head: dict[str, Any], generation: Generation, choices: list[Choice],
                      events: trio.MemoryReceiveChannel[Event]) -> AsyncIterator[dict[str, Any]]:
        """The stream: text as each token releases it; a choice's last chunk carries its
        finish reason and receipt; the last chunk of all, ``usage``."""
        def chunk(choice: Choice, text: str, finish: str | None, logprobs: Any
                  ) -> dict[str, Any]:
            if generation.chat:
                part: dict[str, Any] = {"delta": {"content": text} if text or finish is None
                                        else {}}
            else:
                part = {"text": text}
            return {**head, "choices": [{"index": choice.index, **part, "logprobs": logprobs,
                                         "finish_reason": finish}]}

        if generation.chat:
            for choice in choices:
                yield {**head, "choices": [{"index": choice.index, "logprobs": None,
                                            "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]}
        left = len(choices)
        async for choice, text, finished in self._settled(choices, events):
            logprobs = None
            if not finished and choice.logprobs:
                last = len(choice.logprobs) - 1
                logprobs = (choice.chat_logprobs(last) if generation.chat else
                            Choice(0, choice.tokenizer, (), logprobs=choice.logprobs[last:])
                            .completion_logprobs(len(choice.text) - len(text)))
            if not finished:
                if text or logprobs is not None:
                    yield chunk(choice, text, None, logprobs)
                continue
            left -= 1
            last_chunk = chunk(choice, text, choice.finish_reason, None)
            last_chunk["assay"] = {**(choice.assay or {}),
                                   "prompt_tokens": generation.prompt_of(choice.index)}
            if not left:
                last_chunk["usage"] = usage(choices, generation)
            yield last_chunk

    async def infer(self, body: dict[str, Any]) -> dict[str, Any]:
        """A tensor job: ``input`` is ``{dtype, shape, data}`` with ``data`` base64."""
        check_fields(body, INFER)
        served = self._model(body.get("model"), None)
        raw = body.get("input")
        try:
            assert isinstance(raw, dict)
            tensor = Tensor(str(raw["dtype"]), tuple(int(d) for d in raw["shape"]),
                            base64.b64decode(raw["data"], validate=True))
            if not tensor.shape or 0 in tensor.shape:
                raise ValueError(f"shape {list(tensor.shape)} is empty: every dimension must be "
                                 "at least 1")
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise HttpError(400, "malformed",
                            f"input must be {{dtype, shape, data (base64)}}: {exc}") from exc
        output, commitment = await self._run_http(self._request(served, tensor, {}))
        return {
            "model": served.name,
            "output": {"dtype": output.dtype, "shape": list(output.shape),
                       "data": base64.b64encode(output.data).decode()},
            "assay": self._assay_field(commitment),
        }

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/embeddings`` in the OpenAI shape; every embedding is a tensor-mode job.

        ``input`` is a string, a list of strings, a list of token ids or a
        list of such lists; each one is a job with its own commitment, in its
        item's ``assay`` field with the token ids it committed to.
        """
        check_fields(body, EMBEDDINGS)
        served = self._model(body.get("model"), None)
        if served.text is None:
            raise HttpError(400, "wrong_mode", f"model {served.name!r} does not embed text",
                            param="model")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise HttpError(400, "malformed", "encoding_format must be 'float' or 'base64'",
                            param="encoding_format")
        dimensions = body.get("dimensions")
        width = int(read_meta(served.entry.path).config["hidden_size"])
        if dimensions is not None and dimensions != width:
            raise HttpError(400, "unsupported_field",
                            f"dimensions: this model's embeddings have {width}, not shortened",
                            param="dimensions")
        token_lists = self._embedding_inputs(served.text, body.get("input"))
        data, total = [], 0
        for index, ids in enumerate(token_lists):
            tensor = Tensor.from_torch(torch.tensor([ids], dtype=torch.int64))
            output, commitment = await self._run_http(self._request(served, tensor, {}))
            vector = output.to_torch().reshape(-1)
            embedding: Any = (base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode()
                              if encoding == "base64" else vector.tolist())
            data.append({"object": "embedding", "index": index, "embedding": embedding,
                         "assay": {**self._assay_field(commitment), "input_tokens": ids}})
            total += len(ids)
        return {"object": "list", "data": data, "model": served.name,
                "usage": {"prompt_tokens": total, "total_tokens": total}}

    @staticmethod
    def _embedding_inputs(text: TextEncoder, raw: Any) -> list[list[int]]:
        """The token ids of each input, refusing anything OpenAI's API would (naming which)."""
        def is_ids(value: Any) -> bool:
            return isinstance(value, list) and bool(value) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in value)

        if isinstance(raw, str) or is_ids(raw):
            items = [raw]
        elif isinstance(raw, list) and raw:
            items = raw
        else:
            raise HttpError(400, "malformed",
                            "input must be a non-empty string, list of strings or token ids",
                            param="input")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise HttpError(400, "malformed",
                            f"input has {len(items)} items, more than {MAX_EMBEDDING_INPUTS}",
                            param="input")
        out = []
        for i, item in enumerate(items):
            where = "input" if len(items) == 1 else f"input[{i}]"
            try:
                if isinstance(item, str) and item:
                    ids = text.encode(item)
                elif is_ids(item):
                    ids = text.check_ids(item)
                else:
                    raise HttpError(400, "malformed",
                                    f"{where} must be a non-empty string or list of token ids",
                                    param="input")
            except TextTooLong as exc:
                raise HttpError(400, "invalid_input", f"{where}: {exc}", param="input") from exc
            out.append(ids)
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        problems = self.not_ready()
        gateway_funded = (self.gateway_balance is not None
                          and self.gateway_balance >= self.config.fee)
        if not gateway_funded:
            problems.append(
                f"the gateway account {self.client_key.public.hex()[:16]}… cannot pay a fee of "
                f"{self.config.fee}" + ("" if self.gateway_balance is None
                                        else f" (balance {self.gateway_balance})")
            )
        if not self.models:
            problems.append("no models loaded")
        if not self.accepting:
            problems.append("shutting down")
        checks: dict[str, Any] = {
            "models_loaded": bool(self.models),
            "ledger_reachable": self.ledger.reachable(),
            "bonded": self.bonded and not self.standing.problems(),
            "gateway_funded": gateway_funded,
            "peers": len(self.host.connected()),
            "accepting_jobs": self.accepting,
        }
        if self.node.zk_provers:
            checks["zk_keys_match"] = self.zk_checked and not self.zk_refused
            if not checks["zk_keys_match"]:
                problems.append("zk keys not (yet) matched with the ledger's")
        if not checks["peers"]:
            problems.append("no libp2p peers")
        ready = not problems and all(v for v in checks.values())
        if not ready:
            checks["reason"] = "; ".join(problems) or "starting"
        self.metrics.ready.set(1 if ready else 0)
        return ready, checks

    def app(self) -> Starlette:
        def endpoint(path: str, method: Any, needs_body: bool = True) -> Route:
            async def handle(request: Request) -> Response:
                try:
                    self._authorise(request)
                    if needs_body:
                        self._limit(request)
                    body = await read_json(request) if needs_body else {}
                    result = await method(body)
                except HttpError as exc:
                    self.metrics.http_rejected.labels(path, exc.reason).inc()
                    self.metrics.http_requests.labels(path, str(exc.status)).inc()
                    return exc.response()
                except Exception as exc:  # a bug must cost this request, in the API's shape
                    log.exception("%s failed", path)
                    self.metrics.http_requests.labels(path, "500").inc()
                    return HttpError(500, "internal", f"internal error: {type(exc).__name__}"
                                     ).response()
                self.metrics.http_requests.labels(path, "200").inc()
                if isinstance(result, EventStream):
                    return EventResponse(result)
                return JSONResponse(result)

            return Route(path, handle, methods=["POST" if needs_body else "GET"])

        async def models(body: dict[str, Any]) -> dict[str, Any]:
            return {"object": "list", "data": [m.card() for m in self.served]}

        async def health(request: Request) -> Response:
            return health_response(*self.health())

        return Starlette(routes=[
            Route("/health", health),
            endpoint("/v1/models", models, needs_body=False),
            endpoint("/v1/completions", self.completions),
            endpoint("/v1/chat/completions", self.chat_completions),
            endpoint("/v1/infer", self.infer),
            endpoint("/v1/embeddings", self.embeddings),
        ])

    def _authorise(self, request: Request) -> None:
        if self.config.api_key and not api_key_matches(request.headers.get("authorization"),
                                                       self.config.api_key):
            raise HttpError(401, "unauthorised", "a valid API key is required")

    def _limit(self, request: Request) -> None:
        """An HTTP caller's rate, by address, taken before its body is read."""
        caller = ("http", request.client.host if request.client else "")
        wait = self.limiter.take(caller)
        if wait:
            raise HttpError(429, "rate_limited",
                            f"rate limit: at most {self.config.rate_limit:g} jobs/s "
                            f"(bursts of {self.config.rate_burst}) per caller",
                            retry_after_s=wait)

    # -- lifetime ------------------------------------------------------------------------------
    async def check_zk_keys(self) -> None:
        """Compare each zk model's verifying-key hash with the one the ledger registered."""
        while not self.zk_checked:
            await self.ledger.wait_reachable()
            try:
                for model_id, prover in self.node.zk_provers.items():
                    reply = await self.ledger.call("zk_model", model_id=model_id)
                    ours = prover.artifacts.vk_sha256
                    if not reply.get("found"):
                        log.warning("zk model %s is not registered on the ledger: its jobs "
                                    "are not zk jobs there", model_id.hex()[:16])
                    elif reply.get("vk_sha256") != ours:
                        theirs = reply.get("vk_sha256")
                        self.zk_refused[model_id] = (
                            f"refusing zk model {model_id.hex()[:16]}…: the ledger registered "
                            f"verifying key {theirs.hex() if isinstance(theirs, bytes) else theirs}"
                            f", this node proves with {ours.hex()}; its proofs would be judged "
                            "invalid"
                        )
                        log.error("%s", self.zk_refused[model_id])
                self.zk_checked = True
            except ProtocolError as exc:
                log.warning("checking zk keys with the ledger failed, retrying: %s", exc)
                await trio.sleep(ZK_CHECK_RETRY_S)

    async def watch_gateway(self) -> None:
        """Keep the gateway account's balance fresh (``/health`` says when it cannot pay)."""
        while True:
            try:
                account = await self.ledger.account(self.client_key.public.raw)
                self.gateway_balance = account.balance
            except ProtocolError as exc:
                log.debug("reading the gateway account failed: %s", exc)
            await trio.sleep(GATEWAY_POLL_S)

    async def run(self, shutdown: trio.Event) -> None:
        """Serve until ``shutdown`` is set, then drain in-flight jobs and return."""
        http_done = trio.Event()
        stop_http = trio.Event()
        warn_if_exposed(self.config.http_host, self.config.http_port, self.config.api_key, log)

        def supervised(name: str, task: Callable[[], Awaitable[None]]) -> None:
            nursery.start_soon(keep_running, name, task, self.metrics, log)

        async with self.host.running(), trio.open_nursery() as nursery:
            supervised("ledger_status", self.ledger.keep_fresh)
            supervised("standing", self.standing.watch)
            supervised("bond", lambda: self.standing.bond(self.config.stake))
            supervised("zk_keys", self.check_zk_keys)
            supervised("gossip", self.gossip.run)
            supervised("reports", self.answer_reports)
            supervised("gateway", self.watch_gateway)
            supervised("running_batches", self.batches.run)
            self._jobs = nursery

            async def http() -> None:
                await serve_http(self.app(), self.config.http_host, self.config.http_port,
                                 stop_http)
                http_done.set()

            nursery.start_soon(http)
            if self.config.metrics:
                nursery.start_soon(serve_http, metrics_app(self.metrics),
                                   self.config.metrics_host, self.config.metrics_port, stop_http)
            log.info("node %s serving %d models", self.node.node_id.hex()[:16], len(self.served))
            await shutdown.wait()
            log.info("shutting down: no new jobs, %d in flight", self.in_flight)
            self.accepting = False
            with trio.move_on_after(SHUTDOWN_GRACE_S):
                while self.in_flight:
                    await trio.sleep(0.05)
            with trio.move_on_after(GOSSIP_FLUSH_S):
                while self.gossip.pending():
                    await trio.sleep(0.05)
            stop_http.set()
            with trio.move_on_after(5):
                await http_done.wait()
            nursery.cancel_scope.cancel()
        self.journal.close()


def build_cheat(
    models: Mapping[bytes, nn.Module], rate: float, seed: int
) -> SubstituteModel | None:
    """A devnet cheater runs a changed model on ``rate`` of its jobs."""
    if rate <= 0:
        return None
    return SubstituteModel(cheating_substitutes(models), round(rate * PPM), seed)
