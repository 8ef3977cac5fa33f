"""Hostile input against every handler: nothing crashes, nothing changes, everything is counted.

The default run sends a few hundred messages of each kind; the slow test
sends over 100,000 (random bytes and hypothesis-drawn maps and messages).
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.testclient import TestClient

from protocol import codec
from protocol.config import NodeConfig
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal
from protocol.messages import Commitment
from protocol.net import validate, wire
from protocol.net.gossip import GossipValidator
from protocol.net.host import PeerHost
from protocol.net.identity import peer_address, peer_id_of
from protocol.net.ledger_client import LedgerClient
from protocol.net.metrics import Metrics
from prover import zoo
from prover.model_store import save_model
from prover.node import InferenceNode, load_registered_llms, load_registered_models
from prover.registry import ModelRegistry
from prover.service import COMMITMENT, NodeService
from slashing.transactions import transaction_signer
from tests.net_helpers import UNLIMITED, free_port, random_frames
from tests.strategies import KEYS

KEY = SigningKey.derive("hostile/node")
LEDGER = SigningKey.derive("hostile/ledger")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> NodeService:
    tmp = tmp_path_factory.mktemp("hostile")
    registry = ModelRegistry(tmp / "registry")
    for name, kind, mode in (("mlp", "mlp-int8", "exact"), ("gpt2", "gpt2", "llm")):
        built = zoo.build(kind, seed=1)
        save_model(tmp / name, built.module, built.kind, built.config)
        registry.add(tmp / name, mode=mode, name=name)
    config = NodeConfig(ledger=peer_address("127.0.0.1", 1, LEDGER.public.raw), **UNLIMITED)
    node = InferenceNode(KEY, load_registered_models(registry),
                         llms=load_registered_llms(registry))
    metrics = Metrics()
    host = PeerHost(KEY, f"/ip4/127.0.0.1/tcp/{free_port()}", (), metrics)
    journal = SigningJournal(tmp / "journal.sqlite")
    return NodeService(config, node, KEY, registry.list(), host, journal, metrics,
                       transaction_signer(KEY))


def hostile_bodies(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    paths = ["/v1/completions", "/v1/chat/completions", "/v1/infer"]
    shapes: list[object] = [
        {"model": "nope", "prompt": "x"},
        {"model": "gpt2", "prompt": 5},
        {"model": "gpt2", "prompt": "x", "max_tokens": -1},
        {"model": "gpt2", "prompt": "x", "temperature": "hot"},
        {"model": "gpt2", "prompt": "x", "seed": -3},
        {"model": "gpt2", "prompt": "", "max_tokens": 2},
        {"model": "gpt2", "prompt": "x", "stream": "yes"},
        {"model": "gpt2", "messages": "hi"},
        {"model": "gpt2", "messages": [{"role": "user"}]},
        {"model": "mlp", "input": {"dtype": "float32", "shape": [1, 3], "data": "AAAA"}},
        {"model": "mlp", "input": {"dtype": "complex", "shape": [1], "data": ""}},
        {"model": "mlp", "input": "zzz"},
        {"model": "gpt2", "input": {"dtype": "int64", "shape": [1], "data": "AAAAAAAAAAA="}},
        {"model": "mlp", "prompt": "text for a tensor model"},
        [1, 2, 3],
        None,
    ]
    out = []
    for i in range(n):
        path = paths[i % len(paths)]
        kind = i % 4
        if kind == 0:
            out.append((path, rng.randbytes(rng.randrange(0, 200))))
        elif kind == 1:
            out.append((path, json.dumps(rng.choice(shapes)).encode()))
        elif kind == 2:
            text = json.dumps(rng.choice(shapes)).encode()
            out.append((path, text[: rng.randrange(0, len(text) + 1)] or b"{"))
        else:
            out.append((path, b'{"prompt": "' + b"a" * (1024 * 1024 + 10) + b'"}'
                        if i % 40 == 3 else b"[" * 100_000))
    return out


def send_http(service: NodeService, bodies: list[tuple[str, bytes]]) -> None:
    before = service.metrics.dropped_total()
    with TestClient(service.app(), backend="trio") as http:
        for path, body in bodies:
            response = http.post(path, content=body, headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500, (path, body[:80], response.text)
        assert http.get("/v1/models").status_code == 200
        assert http.get("/health").status_code == 503  # no ledger in this test: not ready
    assert service.metrics.dropped_total() - before == len(bodies)
    assert service.journal.count(COMMITMENT) == 0


def test_http_endpoints_refuse_hostile_bodies(service: NodeService) -> None:
    send_http(service, hostile_bodies(random.Random(1), 80))


def test_job_protocol_handlers_refuse_hostile_requests(service: NodeService) -> None:
    import trio

    async def main() -> int:
        refused = 0
        for payload in random_frames(random.Random(2), 300):
            for handler in (service.handle_job, service.handle_job_data):
                try:
                    response = await handler(payload, LEDGER.public.raw)
                    assert wire.decode_map(response, 1 << 20)["ok"] is False
                except (wire.ProtocolError, ValueError):
                    pass
                refused += 1
        return refused

    assert trio.run(main) == 600
    assert service.journal.count(COMMITMENT) == 0


def gossip_validators(metrics: Metrics) -> list[GossipValidator]:
    staked = LedgerClient.__new__(LedgerClient)
    staked.nodes = frozenset({KEY.public.raw})
    staked.validators = frozenset({KEY.public.raw})
    staked.key = LEDGER.public.raw
    staked.status = None
    return [
        GossipValidator(topic, check(staked), metrics)
        for topic, check in (
            (wire.TOPIC_COMMITMENTS, validate.commitments),
            (wire.TOPIC_COMMITMENT_BATCHES, validate.commitment_batches),
            (wire.TOPIC_ATTESTATIONS, validate.attestations),
            (wire.TOPIC_EVIDENCE, validate.evidence),
            (wire.TOPIC_BEACON, validate.beacon_rounds),
        )
    ]


def gossip_payloads(rng: random.Random, n: int) -> list[bytes]:
    """Random bytes, truncations and bit flips of signed messages, forged and stray maps."""
    signer = KEYS[1]
    drawn = [
        Commitment(job_id=rng.randbytes(32), model_id=rng.randbytes(32),
                   input_hash=rng.randbytes(32), output_hash=rng.randbytes(32),
                   node=signer.public.raw, chain_id=rng.randbytes(32)).signed(signer).encode()
        for _ in range(20)
    ] + [codec.encode({rng.choice(["kind", "v", "round", "node"]): rng.randbytes(8)})
         for _ in range(20)]
    out = []
    for i in range(n):
        base = drawn[i % len(drawn)]
        kind = i % 5
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(0, 400)))
        elif kind == 1:
            out.append(base[: rng.randrange(0, len(base))])
        elif kind == 2:
            flipped = bytearray(base)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            out.append(bytes(flipped))
        elif kind == 3:
            out.append(base)  # well-formed but forged: signed by nobody, or not by the sender
        else:
            out.append(rng.randbytes(wire.MAX_GOSSIP_BYTES + 1) if i % 1000 == 4 else base + b"\0")
    return out


def send_gossip(n: int) -> None:
    metrics = Metrics()
    validators = gossip_validators(metrics)
    stranger = peer_id_of(SigningKey.derive("hostile/stranger").public.raw).to_bytes()
    payloads = gossip_payloads(random.Random(3), n)
    for i, data in enumerate(payloads):
        message = SimpleNamespace(data=data, from_id=stranger)
        validator = validators[i % len(validators)]
        assert validator.libp2p_validator(None, message) is False  # type: ignore[arg-type]
    assert metrics.dropped_total() == n


def test_gossip_validators_refuse_hostile_messages() -> None:
    send_gossip(2_000)


@pytest.mark.slow
def test_more_than_100000_hostile_messages(service: NodeService, tmp_path: Path) -> None:
    send_gossip(100_000)
    send_http(service, hostile_bodies(random.Random(11), 3_000))
    import trio

    async def main() -> None:
        for payload in random_frames(random.Random(12), 3_000):
            for handler in (service.handle_job, service.handle_job_data):
                with contextlib.suppress(wire.ProtocolError, ValueError):
                    await handler(payload, LEDGER.public.raw)

    trio.run(main)
    assert service.journal.count(COMMITMENT) == 0
