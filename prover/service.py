"""The inference node as a long-running service: libp2p, an OpenAI-compatible HTTP API, metrics.

:class:`NodeService` wraps an :class:`~prover.node.InferenceNode`. A job, from
the job protocol or from HTTP, goes through :meth:`NodeService.execute`:

1. if the signing journal already holds a commitment for the job id, that one
   is returned (a retried request never makes the node sign twice: two
   commitments to one job are equivocation);
2. the model runs in a worker thread, one job at a time (exact mode computes
   every job alone), so the event loop keeps serving;
3. the commitment, request and output are journalled, the ledger records the
   job (``record_job``), and the commitment is queued for gossip: a
   :class:`~protocol.net.host.BatchPublisher` sends it on
   ``/assay/1/commitment-batches`` with whatever else queued meanwhile, so
   the client's answer never waits on gossip (validators that miss it find
   it in the ledger's log).

HTTP jobs are signed by the node's *client key*, the account that pays the
fees of its HTTP users (a gateway account): OpenAI clients do not sign. Text
uses a byte-level tokenizer (UTF-8 bytes are token ids), which is the real
vocabulary of the zoo's 256-token GPT-2 and Llama. Completions run as ``llm``
mode jobs: the commitment binds the generated tokens and a sketch of the
hidden states, and every response carries it in an ``assay`` field. With
``stream: true`` the answer is server-sent events in the OpenAI chunk shape,
one token's text per chunk, the last chunk carrying ``usage`` and ``assay``;
the job is generated and committed first, so streaming saves the client no
time to the first token (the runtime generates a job whole).

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
import codecs
import copy
import itertools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
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
from protocol.net import validate, wire
from protocol.net.host import BatchPublisher, PeerHost, PeerUnavailable
from protocol.net.http import HttpError, metrics_app, read_json, serve_http
from protocol.net.ledger_client import LedgerClient
from protocol.net.metrics import Metrics
from protocol.sampling import PPM
from prover.adversary import SubstituteModel
from prover.embedder import EMBEDDER_KIND, TextEncoder, TextTooLong
from prover.model_store import read_meta
from prover.node import LLM_MODE, InferenceNode, JobRejected
from prover.registry import RegistryEntry

log = logging.getLogger("assay.node")

COMMITMENT = "commitment"
SHUTDOWN_GRACE_S = 30.0
GOSSIP_FLUSH_S = 2.0
BOND_RETRY_S = 1.0
MAX_PROMPT_TOKENS = 1024
EXPIRY_ROUNDS = 1_000
"""Rounds after the ledger's current one in which an HTTP job's request may still be recorded:
room for a long generation or proof (a quarter of an hour of the devnet's one-second rounds)."""


class NodeUnavailable(ProtocolError):
    """The node is shutting down or not ready; the client should go elsewhere."""


def encode_text(text: str) -> list[int]:
    """Byte-level tokenization: each UTF-8 byte is one token id (vocabulary 256)."""
    return list(text.encode("utf-8"))


def decode_tokens(ids: Sequence[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def stream_texts(ids: Sequence[int]) -> list[str]:
    """One text piece per token, holding back bytes until they complete a UTF-8 character."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(bytes([token])) for token in ids]
    pieces.append(decoder.decode(b"", final=True))
    return [piece for piece in pieces if piece]


@dataclass(frozen=True)
class EventStream:
    """Chunks sent as server-sent events in the OpenAI shape, then ``data: [DONE]``.

    The job is generated and committed before the first event, so every
    chunk comes from a committed output and the last carries the commitment.
    """

    chunks: list[dict[str, Any]]

    async def lines(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()
        yield b"data: [DONE]\n\n"


def _stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise HttpError(400, "malformed", "stream must be true or false")
    return stream


def chat_prompt(messages: Any) -> str:
    """A plain chat template: one ``role: content`` line per message, then ``assistant:``."""
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "malformed", "messages must be a non-empty list")
    lines = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise HttpError(400, "malformed", "each message needs a string content")
        lines.append(f"{message.get('role', 'user')}: {message['content']}")
    return "\n".join([*lines, "assistant:"])


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
EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "user", "dimensions"})


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
        self.ledger = LedgerClient(host, config.ledger)
        self.accepting = True
        self.bonded = False
        self.in_flight = 0
        self.zk_checked = not node.zk_provers
        """Whether the zk models' keys were compared with the ledger's registered ones."""
        self.zk_refused: dict[bytes, str] = {}
        """zk models this node will not serve (the ledger registered another key), and why."""
        self._job_lock = trio.Lock()
        self._nonces = itertools.count(time.time_ns())
        self.gossip = BatchPublisher(host, wire.TOPIC_COMMITMENT_BATCHES)
        host.subscribe(wire.TOPIC_COMMITMENTS, validate.commitments(self.ledger), self._ignore)
        host.subscribe(wire.TOPIC_COMMITMENT_BATCHES, validate.commitment_batches(self.ledger),
                       self._ignore)
        host.subscribe(wire.TOPIC_BEACON, validate.beacon_rounds(self.ledger), self._ignore)
        host.serve(wire.PROTOCOL_JOB, self.handle_job)
        host.serve(wire.PROTOCOL_JOB_DATA, self.handle_job_data)

    async def _ignore(self, message: Any, sender: bytes) -> None:
        """Nodes relay these topics (validated) so the mesh is dense; they act on none."""

    # -- jobs ----------------------------------------------------------------------------------
    def recorded(self, job_id: bytes) -> tuple[JobRequest, Tensor, Commitment] | None:
        kept = self.journal.get(COMMITMENT, job_id)
        if kept is None:
            return None
        data = codec.decode(kept[1])
        return JobRequest.decode(data["request"]), data["output"], Commitment.decode(kept[0])

    async def execute(self, request: JobRequest) -> tuple[Tensor, Commitment]:
        """Run, journal, record and gossip one job (see the module docstring)."""
        if not self.accepting:
            raise NodeUnavailable("this node is shutting down; send the job to another node")
        if request.chain_id != self.ledger.chain_id:
            raise JobRejected(
                f"the request is signed for chain {request.chain_id.hex()[:16]}…; this node's "
                f"ledger is chain {self.ledger.chain_id.hex()[:16]}…"
            )
        if request.model_id in self.node.zk_provers:
            if request.model_id in self.zk_refused:
                raise JobRejected(self.zk_refused[request.model_id])
            if not self.zk_checked:
                raise NodeUnavailable(
                    "this node has not yet checked its zk keys against the ledger's; retry"
                )
        self.in_flight += 1
        started = time.perf_counter()
        try:
            async with self._job_lock:
                kept = self.recorded(request.job_id)
                if kept is None:
                    result = await trio.to_thread.run_sync(self.node.handle, request)
                    extra = codec.encode({"request": request.encode(), "output": result.output})
                    self.journal.record(COMMITMENT, request.job_id, result.commitment.encode(),
                                        extra)
                    output, commitment = result.output, result.commitment
                    fresh = True
                else:
                    _, output, commitment = kept
                    fresh = False
            try:
                await self.ledger.call("record_job", request=request.encode(),
                                       commitment=commitment.encode())
            except wire.RemoteError as exc:
                if fresh or "already recorded" not in str(exc):
                    raise JobRejected(f"the ledger refused the job: {exc}") from exc
            await self.gossip.submit(commitment.encode())
            self.metrics.jobs_committed.labels(commitment.mode).inc()
            if commitment.mode == LLM_MODE:
                self.metrics.tokens_generated.inc(output.numel)
            self.metrics.job_latency.observe(time.perf_counter() - started)
            return output, commitment
        except ProtocolError as exc:
            self.metrics.jobs_failed.labels(type(exc).__name__).inc()
            raise
        finally:
            self.in_flight -= 1

    async def handle_job(self, data: bytes, sender: bytes) -> bytes:
        request = JobRequest.decode(data, wire.MAX_REQUEST_BYTES[wire.PROTOCOL_JOB]).verify()
        try:
            output, commitment = await self.execute(request)
        except (JobRejected, NodeUnavailable, PeerUnavailable) as exc:
            return wire.error_response(str(exc))
        return wire.ok_response(output=output, commitment=commitment.encode())

    async def handle_job_data(self, data: bytes, sender: bytes) -> bytes:
        """Job data for re-execution, to staked validators only."""
        request = wire.decode_map(data, wire.MAX_REQUEST_BYTES[wire.PROTOCOL_JOB_DATA])
        job_id = request.get("job_id")
        if not isinstance(job_id, bytes) or len(job_id) != 32:
            raise ProtocolError("job_id must be 32 bytes")
        if sender not in self.ledger.validators:
            return wire.error_response("job data is served to staked validators only")
        kept = self.recorded(job_id)
        if kept is None:
            return wire.error_response(f"no served job {job_id.hex()[:16]}…")
        job_request, output, _ = kept
        return wire.ok_response(request=job_request.encode(), output=output)

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
            raise HttpError(503, "unavailable", "the node has not heard from its ledger yet")
        return JobRequest(
            model_id=served.entry.model_id, input=tensor, client=self.client_key.public.raw,
            node=self.node.node_id, nonce=next(self._nonces), fee=self.config.fee,
            expiry_round=max(self.ledger.round, 0) + EXPIRY_ROUNDS,
            chain_id=self.ledger.chain_id, params=tuple(params.items()),
        ).signed(self.client_key)

    def _assay_field(self, commitment: Commitment) -> dict[str, Any]:
        return {
            "job_id": commitment.job_id.hex(),
            "commitment_id": commitment.content_id.hex(),
            "commitment": base64.b64encode(commitment.encode()).decode(),
            "signature": commitment.signature.hex(),
            "node": commitment.node.hex(),
            "mode": commitment.mode,
        }

    async def _run_http(self, request: JobRequest) -> tuple[Tensor, Commitment]:
        try:
            return await self.execute(request)
        except NodeUnavailable as exc:
            raise HttpError(503, "unavailable", str(exc)) from exc
        except (JobRejected, PeerUnavailable) as exc:
            raise HttpError(502, "job_failed", str(exc)) from exc
        except ProtocolError as exc:
            raise HttpError(400, "invalid_job", str(exc)) from exc

    def _generation_params(self, body: dict[str, Any]) -> dict[str, Any]:
        def number(name: str, default: float, low: float, high: float) -> float:
            value = body.get(name, default)
            if value is None:
                value = default
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise HttpError(400, "malformed", f"{name} must be a number")
            if not low <= value <= high:
                raise HttpError(400, "malformed", f"{name} must be in {low}..{high}")
            return float(value)

        max_tokens = int(number("max_tokens", 16, 1, self.config.max_new_tokens))
        seed = body.get("seed")
        if seed is None:
            seed = secrets.randbelow(2**63)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise HttpError(400, "malformed", "seed must be an unsigned 64-bit integer")
        return {
            "max_new_tokens": max_tokens,
            "dtype": "float32",
            "seed": seed,
            "temperature_milli": round(number("temperature", 1.0, 0.0, 2.0) * 1000),
            "top_k": int(number("top_k", 0, 0, 256)),
            "top_p_ppm": round(number("top_p", 1.0, 0.0, 1.0) * PPM) or PPM,
        }

    async def _generate(
        self, body: dict[str, Any], prompt: str
    ) -> tuple[ServedModel, list[int], list[int], Commitment, dict[str, Any]]:
        served = self._model(body.get("model"), LLM_MODE)
        ids = encode_text(prompt)
        if not 1 <= len(ids) <= MAX_PROMPT_TOKENS:
            raise HttpError(400, "malformed", f"prompt must be 1..{MAX_PROMPT_TOKENS} bytes")
        params = self._generation_params(body)
        tensor = Tensor.from_torch(torch.tensor([ids], dtype=torch.int64))
        output, commitment = await self._run_http(self._request(served, tensor, params))
        generated = [int(t) for t in output.to_torch().reshape(-1).tolist()]
        return served, ids, generated, commitment, params

    @staticmethod
    def _usage(prompt: list[int], generated: list[int]) -> dict[str, int]:
        return {"prompt_tokens": len(prompt), "completion_tokens": len(generated),
                "total_tokens": len(prompt) + len(generated)}

    async def completions(self, body: dict[str, Any]) -> dict[str, Any] | EventStream:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise HttpError(400, "malformed", "prompt must be a string")
        stream = _stream_flag(body)
        served, ids, generated, commitment, params = await self._generate(body, prompt)
        head = {"id": f"cmpl-{commitment.job_id.hex()[:24]}", "object": "text_completion",
                "created": int(time.time()), "model": served.name}
        usage = self._usage(ids, generated)
        assay = {**self._assay_field(commitment), "seed": params["seed"]}
        if stream:
            chunks = [{**head, "choices": [{"index": 0, "text": text, "logprobs": None,
                                            "finish_reason": None}]}
                      for text in stream_texts(generated)]
            chunks.append({**head, "choices": [{"index": 0, "text": "", "logprobs": None,
                                                "finish_reason": "length"}],
                           "usage": usage, "assay": assay})
            return EventStream(chunks)
        return {
            **head,
            "choices": [{"index": 0, "text": decode_tokens(generated), "logprobs": None,
                         "finish_reason": "length"}],
            "usage": usage, "assay": assay,
        }

    async def chat_completions(self, body: dict[str, Any]) -> dict[str, Any] | EventStream:
        stream = _stream_flag(body)
        prompt = chat_prompt(body.get("messages"))
        served, ids, generated, commitment, params = await self._generate(body, prompt)
        job = commitment.job_id.hex()[:24]
        usage = self._usage(ids, generated)
        assay = {**self._assay_field(commitment), "seed": params["seed"]}
        if stream:
            head = {"id": f"chatcmpl-{job}", "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": served.name}

            def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
                return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish}]}

            chunks = [chunk({"role": "assistant", "content": ""}, None)]
            chunks += [chunk({"content": text}, None) for text in stream_texts(generated)]
            chunks.append({**chunk({}, "length"), "usage": usage, "assay": assay})
            return EventStream(chunks)
        return {
            "id": f"chatcmpl-{job}", "object": "chat.completion",
            "created": int(time.time()), "model": served.name,
            "choices": [{"index": 0, "finish_reason": "length", "logprobs": None,
                         "message": {"role": "assistant", "content": decode_tokens(generated)}}],
            "usage": usage, "assay": assay,
        }

    async def infer(self, body: dict[str, Any]) -> dict[str, Any]:
        """A tensor job: ``input`` is ``{dtype, shape, data}`` with ``data`` base64."""
        served = self._model(body.get("model"), None)
        raw = body.get("input")
        try:
            assert isinstance(raw, dict)
            tensor = Tensor(str(raw["dtype"]), tuple(int(d) for d in raw["shape"]),
                            base64.b64decode(raw["data"], validate=True))
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
        unknown = sorted(set(body) - EMBEDDING_FIELDS)
        if unknown:
            raise HttpError(400, "unsupported_field", f"unknown field {unknown[0]!r}",
                            param=unknown[0])
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
        checks = {
            "models_loaded": bool(self.models),
            "ledger_reachable": self.ledger.reachable(),
            "bonded": self.bonded,
            "peers": len(self.host.connected()),
            "accepting_jobs": self.accepting,
        }
        if self.node.zk_provers:
            checks["zk_keys_match"] = self.zk_checked and not self.zk_refused
        ready = all(v for v in checks.values())
        self.metrics.ready.set(1 if ready else 0)
        return ready, checks

    def app(self) -> Starlette:
        def endpoint(path: str, method: Any, needs_body: bool = True) -> Route:
            async def handle(request: Request) -> Response:
                try:
                    self._authorise(request)
                    body = await read_json(request) if needs_body else {}
                    result = await method(body)
                except HttpError as exc:
                    self.metrics.http_rejected.labels(path, exc.reason).inc()
                    self.metrics.http_requests.labels(path, str(exc.status)).inc()
                    return exc.response()
                self.metrics.http_requests.labels(path, "200").inc()
                if isinstance(result, EventStream):
                    return StreamingResponse(result.lines(), media_type="text/event-stream",
                                             headers={"cache-control": "no-cache"})
                return JSONResponse(result)

            return Route(path, handle, methods=["POST" if needs_body else "GET"])

        async def models(body: dict[str, Any]) -> dict[str, Any]:
            return {"object": "list", "data": [m.card() for m in self.served]}

        async def health(request: Request) -> Response:
            ready, checks = self.health()
            return JSONResponse({"status": "ready" if ready else "not ready", **checks},
                                status_code=200 if ready else 503)

        return Starlette(routes=[
            Route("/health", health),
            endpoint("/v1/models", models, needs_body=False),
            endpoint("/v1/completions", self.completions),
            endpoint("/v1/chat/completions", self.chat_completions),
            endpoint("/v1/infer", self.infer),
            endpoint("/v1/embeddings", self.embeddings),
        ])

    def _authorise(self, request: Request) -> None:
        if not self.config.api_key:
            return
        if request.headers.get("authorization") != f"Bearer {self.config.api_key}":
            raise HttpError(401, "unauthorised", "a valid API key is required")

    # -- lifetime ------------------------------------------------------------------------------
    async def _bond(self) -> None:
        me = self.node.node_id
        while True:
            await self.ledger.wait_reachable()
            try:
                account = await self.ledger.call("account", account=me)
                stake = int(account.get("node_stake", 0)) if account.get("found") else 0
                if stake < self.config.stake:
                    await self.ledger.call("bond", role="node", amount=self.config.stake - stake)
                    log.info("bonded %d as a node", self.config.stake - stake)
                self.bonded = True
                return
            except ProtocolError as exc:
                log.warning("bonding failed, retrying: %s", exc)
                await trio.sleep(BOND_RETRY_S)

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
                await trio.sleep(BOND_RETRY_S)

    async def run(self, shutdown: trio.Event) -> None:
        """Serve until ``shutdown`` is set, then drain in-flight jobs and return."""
        http_done = trio.Event()
        stop_http = trio.Event()
        async with self.host.running(), trio.open_nursery() as nursery:
            nursery.start_soon(self.ledger.keep_fresh)
            nursery.start_soon(self._bond)
            nursery.start_soon(self.check_zk_keys)
            nursery.start_soon(self.gossip.run)

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
