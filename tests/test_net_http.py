"""The node's OpenAI-compatible API, streamed and not, read by the official ``openai`` client.

The node runs in-process against a real ledger service on loopback (its jobs
are paid for, recorded and gossiped as on a network), and every answer's
``assay`` field is a receipt that :mod:`protocol.receipt` checks.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from starlette.testclient import TestClient

from protocol.config import NodeConfig
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal
from protocol.messages import Commitment
from protocol.net.host import PeerHost
from protocol.net.http import api_key_matches, is_loopback, warn_if_exposed
from protocol.net.identity import peer_address
from protocol.net.metrics import Metrics
from protocol.receipt import ReceiptError, check_receipt, read_receipt
from protocol.text import stream_texts
from prover.node import InferenceNode, load_registered_llms, load_registered_models
from prover.service import NodeService
from slashing.transactions import transaction_signer
from tests.net_helpers import UNLIMITED, free_port, network, zoo_registry

LEDGER = SigningKey.derive("http/ledger")


def client(service: NodeService) -> openai.AsyncOpenAI:
    """The official client over an in-process ASGI transport, on this thread's trio loop."""
    transport = httpx.ASGITransport(app=service.app())
    return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="x", max_retries=0,
                              http_client=httpx.AsyncClient(transport=transport))


def check_assay(assay: dict[str, Any], node: bytes) -> Commitment:
    commitment = Commitment.decode(base64.b64decode(assay["commitment"])).verify()
    assert commitment.node == node and commitment.job_id.hex() == assay["job_id"]
    return commitment


def test_completions_streamed_and_not_carry_receipts_that_check(tmp_path: Path) -> None:
    """Both endpoints, streamed and whole, against a real ledger; each answer is a receipt."""
    results: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with network(tmp_path, nursery, validator_classes=(),
                               node_settings=UNLIMITED) as net:
                node = net.nodes[0]
                api = client(node)
                results["whole"] = await api.completions.create(
                    model="gpt2", prompt="Hello", max_tokens=8, seed=7, temperature=0)
                stream = await api.completions.create(
                    model="gpt2", prompt="Hello", max_tokens=8, seed=7, temperature=0,
                    stream=True)
                results["chunks"] = [chunk async for chunk in stream]
                messages: Any = [{"role": "user", "content": "hi"}]
                results["chat"] = await api.chat.completions.create(
                    model="gpt2", messages=messages, max_tokens=6, seed=3, temperature=0)
                stream = await api.chat.completions.create(
                    model="gpt2", messages=messages, max_tokens=6, seed=3, temperature=0,
                    stream=True)
                results["chat_chunks"] = [chunk async for chunk in stream]
                results["node"] = node.node.node_id
                job_id = bytes.fromhex((results["whole"].model_extra or {})["assay"]["job_id"])
                results["recorded"] = (await net.client.job(job_id)).found
            nursery.cancel_scope.cancel()

    trio.run(main)
    node = results["node"]
    whole, chunks = results["whole"], results["chunks"]
    assert results["recorded"]  # recorded before the output was released
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    check_assay((chunks[-1].model_extra or {})["assay"], node)
    chat, chat_chunks = results["chat"], results["chat_chunks"]
    assert chat_chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chat_chunks)
    assert text == chat.choices[0].message.content
    check_assay((chat_chunks[-1].model_extra or {})["assay"], node)

    # every saved answer is a receipt that checks; one with its text changed does not
    for saved in (whole.model_dump_json(), chat.model_dump_json(),
                  "".join(f"data: {c.model_dump_json()}\n\n" for c in chunks) + "data: [DONE]\n"):
        check_receipt(read_receipt(saved))
    tampered = json.loads(whole.model_dump_json())
    tampered["choices"][0]["text"] += "!"
    try:
        check_receipt(read_receipt(json.dumps(tampered)))
    except ReceiptError as exc:
        assert "text shown" in str(exc)
    else:
        raise AssertionError("a receipt with its text changed checked")


def test_stream_texts_never_split_a_character() -> None:
    ids = list("é€x".encode())
    assert stream_texts(ids) == ["é", "€", "x"]
    assert "".join(stream_texts([0xE2, 0x82])) == "\ufffd"  # a truncated character at the end


def offline_node(tmp: Path, **settings: Any) -> NodeService:
    """A node with no ledger: everything it refuses, it refuses before asking one."""
    registry = zoo_registry(tmp)
    key = SigningKey.derive("http/node")
    node = InferenceNode(key, load_registered_models(registry),
                         llms=load_registered_llms(registry))
    host = PeerHost(key, f"/ip4/127.0.0.1/tcp/{free_port()}", (), Metrics())
    config = NodeConfig(ledger=peer_address("127.0.0.1", 1, LEDGER.public.raw), **settings)
    return NodeService(config, node, key, registry.list(), host,
                       SigningJournal(tmp / "journal.sqlite"), host.metrics,
                       transaction_signer(key))


def test_refusals_have_the_openai_shape_and_the_right_status(tmp_path: Path) -> None:
    service = offline_node(tmp_path, rate_limit=1.0, rate_burst=3, api_key="sekret")
    auth = {"authorization": "Bearer sekret"}
    with TestClient(service.app(), backend="trio") as http:
        assert http.post("/v1/completions", json={}).status_code == 401
        bad = http.post("/v1/completions", headers=auth,
                        json={"model": "gpt2", "prompt": "x", "stream": "yes"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "malformed"
        empty = http.post("/v1/infer", headers=auth, json={"model": "mlp", "input": {
            "dtype": "float32", "shape": [0, 2**40], "data": ""}})
        assert empty.status_code == 400 and "at least 1" in empty.json()["error"]["message"]
        huge = http.post("/v1/infer", headers=auth, json={"model": "mlp", "input": {
            "dtype": "float32", "shape": [0, 2**70], "data": ""}})
        assert huge.status_code == 400
        # a well-formed job on a node that is not ready: 503 with the reason and Retry-After
        unready = http.post("/v1/completions", headers=auth,
                            json={"model": "gpt2", "prompt": "x", "max_tokens": 1})
        assert unready.status_code == 429  # the burst of 3 is spent: rate limited first
        assert int(unready.headers["retry-after"]) >= 1
        assert unready.json()["error"]["type"] == "rate_limit_error"
    service.limiter = type(service.limiter)(1e9, 10**9)
    with TestClient(service.app(), backend="trio") as http:
        unready = http.post("/v1/completions", headers=auth,
                            json={"model": "gpt2", "prompt": "x", "max_tokens": 1})
        assert unready.status_code == 503 and unready.headers["retry-after"]
        assert "not ready" in unready.json()["error"]["message"]
        health = http.get("/health")
        assert health.status_code == 503 and "reason" in health.json()
    service.journal.close()


REFUSED_FIELDS = [
    ("/v1/completions", {"frobnicate": 1}, "frobnicate", "unknown field"),
    ("/v1/completions", {"best_of": 2}, "best_of", "must be 1"),
    ("/v1/completions", {"best_of": True}, "best_of", "must be 1"),
    ("/v1/completions", {"echo": True}, "echo", "must be false"),
    ("/v1/completions", {"suffix": "x"}, "suffix", "must be null"),
    ("/v1/completions", {"presence_penalty": 0.5}, "presence_penalty", "must be 0"),
    ("/v1/chat/completions", {"tools": [{"type": "function"}]}, "tools", "must be null"),
    ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format",
     "not supported"),
    ("/v1/chat/completions", {"logit_bias": {"1": 5}}, "logit_bias", "not supported"),
    ("/v1/chat/completions", {"prompt": "x"}, "prompt", "unknown field"),
    ("/v1/infer", {"temperature": 1}, "temperature", "unknown field"),
]
NEUTRAL_FIELDS = {
    "/v1/completions": {"best_of": 1, "echo": False, "suffix": None, "presence_penalty": 0,
                        "user": "u", "stream_options": {"include_usage": True}},
    "/v1/chat/completions": {"tools": [], "tool_choice": "none", "logprobs": False,
                             "response_format": {"type": "text"}, "max_completion_tokens": 1},
}


def test_unknown_and_unsupported_fields_are_400s_naming_the_field(tmp_path: Path) -> None:
    """A field the node would ignore is refused, in OpenAI's shape, before anything runs; the
    OpenAI fields it does not implement pass at the values that change nothing."""
    service = offline_node(tmp_path, rate_limit=1e9, rate_burst=10**9)

    def body(path: str) -> dict[str, Any]:
        if "chat" in path:
            return {"model": "gpt2", "messages": [{"role": "user", "content": "x"}]}
        if "infer" in path:
            return {"model": "mlp", "input": {}}
        return {"model": "gpt2", "prompt": "x", "max_tokens": 1}

    with TestClient(service.app(), backend="trio") as http:
        for path, extra, param, words in REFUSED_FIELDS:
            answer = http.post(path, json={**body(path), **extra})
            assert answer.status_code == 400, (path, extra, answer.text)
            error = answer.json()["error"]
            assert error["param"] == param and error["type"] == "invalid_request_error"
            assert error["code"] == "unsupported_field" and words in error["message"], error
        for path, neutral in NEUTRAL_FIELDS.items():  # not ready: the fields were taken
            answer = http.post(path, json={**body(path), **neutral})
            assert answer.status_code == 503, (path, answer.text)
    assert service.journal.count("commitment") == 0
    service.journal.close()


def test_api_keys_compare_in_constant_time_and_exposure_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert api_key_matches("Bearer k", "k")
    assert not api_key_matches("Bearer K", "k") and not api_key_matches(None, "k")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    log = logging.getLogger("assay.test")
    with caplog.at_level(logging.WARNING, "assay.test"):
        warn_if_exposed("127.0.0.1", 8000, "", log)
        warn_if_exposed("0.0.0.0", 8000, "key", log)
        assert not caplog.records
        warn_if_exposed("0.0.0.0", 8000, "", log)
    assert "beyond loopback, with no API key" in caplog.records[0].getMessage()
