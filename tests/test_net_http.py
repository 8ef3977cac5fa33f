"""The node's OpenAI-compatible API, streamed and not, read by the official ``openai`` client.

The node runs in-process with the ledger stubbed (recording always succeeds),
so this checks the HTTP shapes, not the network.
"""

from __future__ import annotations

import base64
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
from protocol.net.identity import peer_address
from protocol.net.metrics import Metrics
from prover import zoo
from prover.model_store import save_model
from prover.node import InferenceNode, load_registered_llms, load_registered_models
from prover.registry import ModelRegistry
from prover.service import NodeService, stream_texts
from tests.net_helpers import free_port

KEY = SigningKey.derive("http/node")
LEDGER = SigningKey.derive("http/ledger")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> NodeService:
    tmp = tmp_path_factory.mktemp("http")
    registry = ModelRegistry(tmp / "registry")
    built = zoo.build("gpt2", seed=1)
    save_model(tmp / "gpt2", built.module, built.kind, built.config)
    registry.add(tmp / "gpt2", mode="llm", name="gpt2")
    config = NodeConfig(ledger=peer_address("127.0.0.1", 1, LEDGER.public.raw))
    node = InferenceNode(KEY, load_registered_models(registry),
                         llms=load_registered_llms(registry))
    metrics = Metrics()
    host = PeerHost(KEY, f"/ip4/127.0.0.1/tcp/{free_port()}", (), metrics)
    service = NodeService(config, node, KEY, registry.list(), host,
                          SigningJournal(tmp / "journal.sqlite"), metrics)

    async def recorded(op: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        return {"ok": True, "seq": 1}

    service.ledger.call = recorded  # type: ignore[method-assign]
    service.ledger.status = {"chain_id": b"\x0c" * 32, "round": 0}  # as the ledger would say
    return service


def client(service: NodeService) -> openai.AsyncOpenAI:
    """The official client over an in-process ASGI transport, on this thread's trio loop."""
    transport = httpx.ASGITransport(app=service.app())
    return openai.AsyncOpenAI(base_url="http://testserver/v1", api_key="x", max_retries=0,
                              http_client=httpx.AsyncClient(transport=transport))


def check_assay(assay: dict[str, Any], node: bytes) -> Commitment:
    commitment = Commitment.decode(base64.b64decode(assay["commitment"])).verify()
    assert commitment.node == node and commitment.job_id.hex() == assay["job_id"]
    return commitment


def test_streamed_completions_match_the_unstreamed_ones(service: NodeService) -> None:
    async def main() -> tuple[Any, list[Any]]:
        api = client(service)
        whole = await api.completions.create(model="gpt2", prompt="Hello", max_tokens=8,
                                             seed=7, temperature=0)
        stream = await api.completions.create(model="gpt2", prompt="Hello", max_tokens=8,
                                              seed=7, temperature=0, stream=True)
        return whole, [chunk async for chunk in stream]

    whole, chunks = trio.run(main)
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    last = chunks[-1]
    assert last.choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert last.usage is not None and last.usage.completion_tokens == 8
    check_assay((last.model_extra or {})["assay"], KEY.public.raw)


def test_streamed_chat_completions_carry_the_commitment_last(service: NodeService) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]

    async def main() -> tuple[Any, list[Any]]:
        api = client(service)
        whole = await api.chat.completions.create(model="gpt2", messages=messages,
                                                  max_tokens=6, seed=3, temperature=0)
        stream = await api.chat.completions.create(model="gpt2", messages=messages,
                                                   max_tokens=6, seed=3, temperature=0,
                                                   stream=True)
        return whole, [chunk async for chunk in stream]

    whole, chunks = trio.run(main)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"
    check_assay((chunks[-1].model_extra or {})["assay"], KEY.public.raw)


def test_stream_texts_never_split_a_character() -> None:
    ids = list("é€x".encode())
    assert stream_texts(ids) == ["é", "€", "x"]
    assert "".join(stream_texts([0xE2, 0x82])) == "\ufffd"  # a truncated character at the end


def test_a_non_boolean_stream_is_refused(service: NodeService) -> None:
    with TestClient(service.app(), backend="trio") as http:
        response = http.post("/v1/completions",
                             json={"model": "gpt2", "prompt": "x", "stream": "yes"})
    assert response.status_code == 400
