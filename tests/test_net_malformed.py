"""10,000 malformed inputs to every handler of every service, and every service serves after.

On one running network (real ledger service, node service and validator
services on loopback): each ledger op, the node's job and job-data
protocols, the validator's job-data protocol (where an accuser serves a
disputed job's output) and the node's three HTTP job endpoints get 10,000
malformed requests
each — well-formed msgpack (or JSON) with a field missing, an unknown field
or a field of another type, random bytes, truncations and bit flips — and
the validator's parsers get 10,000 malformed replies each: the node's job-data
answer, over a real libp2p stream from a hostile peer, and every typed ledger
reply. Each must be refused (a :class:`ProtocolError`, an error reply, a 4xx)
and change nothing; afterwards a real job goes through the node over libp2p,
is recorded, audited by a validator and attested VALID.

Slow: about 300,000 requests.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from protocol import codec
from protocol.codec import Tensor
from protocol.errors import MalformedMessage, ProtocolError
from protocol.keys import SigningKey
from protocol.messages import Commitment
from protocol.net import wire
from protocol.net.host import PeerHost
from protocol.net.identity import peer_address
from protocol.net.ledger_replies import (
    AccountInfo,
    DisputeInfo,
    JobData,
    JobInfo,
    Offence,
    Status,
    parse_beacon,
    parse_challenges,
    parse_duties,
    parse_payable,
)
from prover.service import COMMITMENT
from slashing.service import OPS
from tests.net_helpers import (
    UNLIMITED,
    dial,
    free_port,
    llm_request,
    malformed_maps,
    network,
    node_address,
)
from tests.test_ledger_service import GOOD_FIELDS, answer_all

pytestmark = pytest.mark.slow

N = 10_000
EVIL = SigningKey.derive("malformed/peer")


def malformed_bodies(good: dict[str, Any], required: list[str], rng: random.Random, n: int
                     ) -> list[bytes]:
    """JSON bodies that break ``good``: a required field missing or of another type (with an
    unknown field or not), or not JSON at all. (Optional fields left out take their defaults,
    which would make a valid job.)"""
    names = required
    wrong: list[Any] = [None, True, -1, 2**70, "x", "", [], {}, [[[]]], {"a": 1}, 1e308]
    out = []
    for i in range(n):
        body = dict(good)
        kind = i % 4
        if kind == 0:
            del body[rng.choice(names)]
        elif kind == 1:
            name = rng.choice(names)
            body[name] = rng.choice([v for v in wrong if type(v) is not type(good[name])])
        elif kind == 2:
            out.append(rng.randbytes(rng.randrange(0, 80)))
            continue
        else:
            text = json.dumps(good).encode()
            out.append(text[: rng.randrange(0, len(text))])
            continue
        if rng.random() < 0.5:
            body[rng.choice(["zzz", "logit_bias", "n"])] = rng.choice(wrong)
        out.append(json.dumps(body).encode())
    return out


GOOD_BODIES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "/v1/completions": ({"model": "gpt2", "prompt": "x", "max_tokens": 1}, ["model", "prompt"]),
    "/v1/chat/completions": ({"model": "gpt2", "max_tokens": 1,
                              "messages": [{"role": "user", "content": "x"}]},
                             ["model", "messages"]),
    "/v1/infer": ({"model": "mlp", "input": {"dtype": "float32", "shape": [1, 4],
                                             "data": "AAAAAAAAAAAAAAAAAAAAAA=="}},
                  ["model", "input"]),
}
REPLY_PARSERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "status": Status.parse, "job": JobInfo.parse, "job_data": JobData.parse,
    "account": AccountInfo.parse, "offences": Offence.parse_list,
    "duties": parse_duties, "dispute": DisputeInfo.parse, "open_challenges": parse_challenges,
    "can_pay": parse_payable, "beacon": parse_beacon,
}


def test_every_handler_refuses_10000_malformed_inputs_and_every_service_serves_after(
    tmp_path: Path,
) -> None:
    rng = random.Random(2024)

    async def body(net: Any) -> None:
        node, validator = net.nodes[0], net.validators[0]
        before = net.ledger.ledger.length

        # the ledger: every op
        for op, spec in OPS.items():
            good = {"op": op, **{name: GOOD_FIELDS[c] for name, c in spec.required.items()}}
            refused = await answer_all(net.ledger.handle, malformed_maps(good, rng, N),
                                       EVIL.public.raw)
            assert refused >= N * 0.8, op  # a bit flip inside an id leaves a valid query
        assert net.ledger.ledger.length - before <= 10  # only beacon rounds meanwhile

        # the node's libp2p handlers
        job = llm_request(node, net.model("gpt2"), 1)
        good_job = codec.decode(job.encode())
        for handler, good in ((node.handle_job, good_job),
                              (node.handle_job_data, {"job_id": job.job_id}),
                              (validator.handle_job_data, {"job_id": job.job_id})):
            refused = await answer_all(handler, malformed_maps(good, rng, N), EVIL.public.raw)
            assert refused >= N * 0.8
        assert node.journal.count(COMMITMENT) == 0

        # the node's HTTP job endpoints
        transport = httpx.ASGITransport(app=node.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
            for path, (good, required) in GOOD_BODIES.items():
                for payload in malformed_bodies(good, required, rng, N):
                    answer = await http.post(path, content=payload,
                                             headers={"content-type": "application/json"})
                    assert 400 <= answer.status_code < 500, (path, payload[:80], answer.text)
        assert node.journal.count(COMMITMENT) == 0

        # the validator's job-data parser, answered by a hostile peer over libp2p
        replies = malformed_maps({"ok": True, "output": Tensor("int64", (1, 2), bytes(16))},
                                 rng, N)
        served = iter(replies)
        port = free_port()
        hostile = PeerHost(EVIL, f"/ip4/127.0.0.1/tcp/{port}", (), node.metrics)

        async def answer(data: bytes, sender: bytes) -> bytes:
            return next(served)

        hostile.serve(wire.PROTOCOL_JOB_DATA, answer)
        commitment = Commitment(job_id=job.job_id, model_id=job.model_id,
                                input_hash=bytes(32), output_hash=bytes(32),
                                node=EVIL.public.raw, chain_id=job.chain_id)
        async with hostile.running():
            await dial(validator.host, peer_address("127.0.0.1", port, EVIL.public.raw))
            for _ in range(N):
                with pytest.raises(ProtocolError):
                    await validator.fetch_output(commitment)

        # every typed ledger reply: real ones from the running ledger, and two made up
        bases = {
            "status": await net.client.call("status"),
            "account": await net.client.call("account", account=node.node.node_id),
            "beacon": await net.client.call("beacon", round=0),
            "can_pay": await net.client.call("can_pay", client=EVIL.public.raw, nonce=1, fee=1,
                                             node=node.node.node_id, expiry_round=1),
            "offences": {"ok": True, "offences": [{"kind": "fraud", "role": "node",
                                                   "job_id": bytes(32), "evidence": b""}]},
            "duties": {"ok": True, "round": 5, "audits": [
                {"job_id": bytes(32), "commitment": b"c", "round": 4, "zk": False}],
                "votes": [{"dispute_id": bytes(32), "job_id": bytes(32), "commitment": b"c",
                           "round": 5}]},
            "dispute": {"ok": True, "found": True, "job_id": bytes(32), "committee": [],
                        "accusers": [bytes(32)], "opened_round": 3, "drawn_round": 0,
                        "drawn": False, "open": True, "outcome": "", "voted": []},
            "open_challenges": {"ok": True, "jobs": [bytes(32)]},
            "job": {"ok": True, "found": True, "node": bytes(32), "commitment_id": bytes(32),
                    "recorded_round": 3, "sample_round": 4, "status": "pending",
                    "open_dispute": b"", "attested_by": [], "zk": False, "sampled": True,
                    "auditor": bytes(32), "assigned_round": 4, "window_end": 12,
                    "reported": False, "reported_round": 0, "served": False},
            "job_data": {"ok": True, "found": True, "request": b"r", "commitment": b"c"},
        }
        for name, parse in REPLY_PARSERS.items():
            parse(bases[name])  # the base parses
            refused = 0
            for payload in malformed_maps(bases[name], rng, N):
                try:
                    parse(wire.decode_map(payload, 1 << 20))
                except MalformedMessage:  # wire.decode_map raises these too
                    refused += 1
            assert refused >= N // 2, name  # the rest: flips inside a value, or "found": false

        # and everyone still serves: a job over libp2p, recorded, audited, attested VALID
        assert validator.health()[0] and node.health()[0]
        client = PeerHost(SigningKey.derive("malformed/client"),
                          f"/ip4/127.0.0.1/tcp/{free_port()}")
        async with client.running():
            await dial(client, node_address(node))
            reply = await client.request(node.node.node_id, wire.PROTOCOL_JOB, job.encode(), 60)
        assert Commitment.decode(reply["commitment"]).verify().job_id == job.job_id
        with trio.fail_after(60):
            while not (await net.client.job(job.job_id)).attested_by:
                await trio.sleep(0.3)
        assert sum((v.metrics.registry.get_sample_value(
            "assay_validator_verified_total", {"verdict": "VALID"}) or 0)
            for v in net.validators) == 1

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with network(tmp_path, nursery, node_settings=UNLIMITED,
                               round_seconds=1.0) as net:
                await body(net)
            nursery.cancel_scope.cancel()
        net.ledger.close()

    trio.run(main)
