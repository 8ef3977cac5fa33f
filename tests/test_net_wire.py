"""The wire layer in one process: Noise-only hosts, validated gossip, hostile requests.

The fast slice of the hostile-input tests runs here; ``test_net_hostile_full``
(slow) sends over 100,000 messages the same way.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from types import SimpleNamespace

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.messages import Commitment
from protocol.net import validate, wire
from protocol.net.gossip import GossipValidator
from protocol.net.host import PeerHost, PeerUnavailable
from protocol.net.identity import peer_address, peer_id_of
from protocol.net.ledger_client import LedgerClient
from protocol.net.metrics import Metrics
from slashing.transactions import transaction_signer
from tests.net_helpers import connected, free_port, hostile_maps, ledger_service, random_frames
from tests.strategies import commitments

NODE = SigningKey.derive("net-test/node")
OTHER = SigningKey.derive("net-test/other")


def commitment(key: SigningKey, n: int, chain_id: bytes = b"\x0c" * 32) -> Commitment:
    return Commitment(job_id=bytes([n]) * 32, model_id=b"\x02" * 32, input_hash=b"\x03" * 32,
                      output_hash=b"\x04" * 32, node=key.public.raw,
                      chain_id=chain_id).signed(key)


def test_noise_is_the_only_security_transport() -> None:
    host = PeerHost(NODE, f"/ip4/127.0.0.1/tcp/{free_port()}")
    upgrader = host.host.get_network().upgrader  # type: ignore[attr-defined]
    offered = list(upgrader.security_multistream.transports)
    assert [str(p) for p in offered] == ["/noise"]
    assert host.router.heartbeat_interval == 1
    assert host.router.max_messages_per_topic_per_second >= 1000


def test_gossip_validates_before_delivery_and_counts_drops(tmp_path: Path) -> None:
    """A staked node's commitment arrives; forged, replayed, unstaked ones and ones signed for
    another network are dropped."""
    delivered: list[Commitment] = []
    chains: list[bytes] = []

    async def main() -> None:
        ledger, address = ledger_service(tmp_path, [NODE.public.raw])
        port = free_port()
        publisher = PeerHost(NODE, f"/ip4/127.0.0.1/tcp/{port}", [address])
        listener = PeerHost(OTHER, f"/ip4/127.0.0.1/tcp/{free_port()}",
                            [address, peer_address("127.0.0.1", port, NODE.public.raw)])
        clients = [LedgerClient(h, address, transaction_signer(k))
                   for h, k in ((publisher, NODE), (listener, OTHER))]

        async def keep(message: Commitment, sender: bytes) -> None:
            delivered.append(message)

        async def ignore(message: Commitment, sender: bytes) -> None:
            return None

        publisher.subscribe(wire.TOPIC_COMMITMENTS, validate.commitments(clients[0]), ignore)
        listener.subscribe(wire.TOPIC_COMMITMENTS, validate.commitments(clients[1]), keep)
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            async with publisher.running(), listener.running():
                for client in clients:
                    nursery.start_soon(client.keep_fresh)
                await connected(listener, NODE.public.raw)
                with trio.fail_after(10):
                    while NODE.public.raw not in clients[1].nodes:
                        await clients[0].transact("bond", role="node", amount=20_000)
                        await trio.sleep(0.6)
                await trio.sleep(1.5)  # one gossipsub heartbeat builds the mesh
                chains.append(clients[0].chain_id)
                good = commitment(NODE, 1, chains[0])
                await publisher.publish(wire.TOPIC_COMMITMENTS, good.encode())
                forged = Commitment(**{**good.__dict__, "output_hash": b"\x05" * 32})
                await publisher.publish(wire.TOPIC_COMMITMENTS, forged.encode())
                await publisher.publish(wire.TOPIC_COMMITMENTS, b"\xc1garbage")
                unstaked = commitment(OTHER, 2, chains[0])
                await publisher.publish(wire.TOPIC_COMMITMENTS, unstaked.encode())
                elsewhere = commitment(NODE, 3, b"\x0d" * 32)
                await publisher.publish(wire.TOPIC_COMMITMENTS, elsewhere.encode())
                with trio.fail_after(10):
                    while not delivered:
                        await trio.sleep(0.05)
                await publisher.publish(wire.TOPIC_COMMITMENTS, good.encode())  # a replay
                await trio.sleep(0.5)
                nursery.cancel_scope.cancel()
        ledger.close()
        dropped = publisher.metrics.gossip_dropped
        for reason in ("bad_signature", "malformed", "unknown_sender", "replayed",
                       "other_network"):
            assert dropped.labels(wire.TOPIC_COMMITMENTS, reason)._value.get() >= 1, reason

    trio.run(main)
    assert [c.content_id for c in delivered] == [commitment(NODE, 1, chains[0]).content_id]


def test_ledger_protocol_survives_hostile_requests(tmp_path: Path) -> None:
    """Malformed, truncated, oversized and forged requests: all refused, counted, no change."""

    async def main() -> None:
        ledger, address = ledger_service(tmp_path, [NODE.public.raw], round_seconds=60)
        attacker = PeerHost(OTHER, f"/ip4/127.0.0.1/tcp/{free_port()}", [address])
        client = LedgerClient(attacker, address, transaction_signer(OTHER))
        rng = random.Random(5)
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            async with attacker.running():
                await connected(attacker, client.key)
                before = ledger.ledger.length
                frames = random_frames(rng, 120)
                for payload in frames:
                    with contextlib.suppress(wire.RemoteError, PeerUnavailable):
                        await attacker.request(client.key, wire.PROTOCOL_LEDGER, payload, 5)
                # a frame that announces more than the bound, and one that stops short
                for raw in (b"\xff\xff\xff\xff", b"\x00\x00\x01\x00abc"):
                    stream = await attacker.host.new_stream(
                        peer_id_of(client.key), [wire.PROTOCOL_LEDGER])
                    await stream.write(raw)
                    await stream.close()
                # a bond the attacker has no tokens for
                with contextlib.suppress(wire.RemoteError):
                    await client.transact("bond", role="node", amount=10)
                await trio.sleep(0.5)
                assert ledger.ledger.length == before
                status = await client.call("status")
                assert status["ok"] is True
                nursery.cancel_scope.cancel()
        metrics = ledger.metrics
        dropped = sum(
            s.value for f in metrics.requests_dropped.collect() for s in f.samples
            if s.name.endswith("_total")
        )
        refused = sum(
            s.value for f in metrics.ledger_tx.collect() for s in f.samples
            if s.name.endswith("_total")
        )
        assert dropped + refused >= 120
        assert metrics.requests_dropped.labels(wire.PROTOCOL_LEDGER, "oversized")._value.get() >= 1
        ledger.close()

    trio.run(main)


def _fake(data: bytes, publisher: SigningKey) -> SimpleNamespace:
    return SimpleNamespace(data=data, from_id=peer_id_of(publisher.public.raw).to_bytes())


def staked_client(*nodes: SigningKey) -> LedgerClient:
    client = LedgerClient.__new__(LedgerClient)
    client.nodes = frozenset(k.public.raw for k in nodes)
    client.validators = frozenset()
    client.key = b"\x00" * 32
    client.status = None
    return client


HOSTILE = st.one_of(
    st.binary(max_size=512),
    hostile_maps.map(codec.encode),
    commitments().map(lambda c: c.encode()),  # validly shaped, unsigned or unstaked
    st.binary(min_size=wire.MAX_GOSSIP_BYTES + 1, max_size=wire.MAX_GOSSIP_BYTES + 2),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=HOSTILE)
def test_every_hostile_gossip_message_is_dropped_and_counted(data: bytes) -> None:
    metrics = Metrics()
    validators = [
        GossipValidator(topic, check(staked_client(NODE)), metrics)
        for topic, check in (
            (wire.TOPIC_COMMITMENTS, validate.commitments),
            (wire.TOPIC_COMMITMENT_BATCHES, validate.commitment_batches),
            (wire.TOPIC_ATTESTATIONS, validate.attestations),
            (wire.TOPIC_EVIDENCE, validate.evidence),
            (wire.TOPIC_BEACON, validate.beacon_rounds),
        )
    ]
    for v in validators:
        assert v.libp2p_validator(None, _fake(data, OTHER)) is False  # type: ignore[arg-type]
    assert metrics.dropped_total() == len(validators)


def test_a_tensor_round_trips_through_a_frame() -> None:
    payload = wire.ok_response(output=Tensor("float32", (1, 2), b"\x00" * 8))
    value = wire.decode_map(wire.frame(payload)[4:], 1024)
    assert value["output"] == Tensor("float32", (1, 2), b"\x00" * 8)


def test_requests_reuse_a_kept_stream_and_survive_a_stale_one() -> None:
    """Sequential requests share one stream; a kept stream that died is replaced transparently."""

    async def main() -> None:
        port = free_port()
        server = PeerHost(NODE, f"/ip4/127.0.0.1/tcp/{port}")

        async def echo(data: bytes, sender: bytes) -> bytes:
            return wire.ok_response(n=wire.decode_map(data, 1024)["n"])

        server.serve(wire.PROTOCOL_LEDGER, echo)
        client = PeerHost(OTHER, f"/ip4/127.0.0.1/tcp/{free_port()}",
                          [peer_address("127.0.0.1", port, NODE.public.raw)])
        async with server.running(), client.running():
            await connected(client, NODE.public.raw)
            for n in range(5):
                reply = await client.request(NODE.public.raw, wire.PROTOCOL_LEDGER,
                                             wire.encode_map({"n": n}))
                assert reply["n"] == n
            kept = client._streams[(NODE.public.raw, wire.PROTOCOL_LEDGER)]
            assert len(kept) == 1
            assert server.metrics.requests.labels(wire.PROTOCOL_LEDGER, "ok")._value.get() == 5
            await kept[0][0].reset()  # the kept stream dies while idle
            reply = await client.request(NODE.public.raw, wire.PROTOCOL_LEDGER,
                                         wire.encode_map({"n": 9}))
            assert reply["n"] == 9

    trio.run(main)
