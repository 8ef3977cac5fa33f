"""A Noise-only py-libp2p host with gossipsub and request/response protocols.

The host's libp2p identity is the operator's Ed25519 key (DESIGN decision 2),
so a peer id names the key that signs a node's commitments and a stream's
remote peer, authenticated by the Noise handshake, is that key. py-libp2p's
default security options also accept plaintext and secio; this host offers
Noise alone, so a peer that will not speak Noise cannot connect.

Gossipsub is set up with explicit parameters: py-libp2p's defaults are a
120 s heartbeat (meshes form and repair slowly) and 10 messages per second per
peer per topic, above which messages are silently dropped. Every topic has a
validator that runs before a message is relayed or delivered
(:class:`protocol.net.gossip.GossipValidator`), and subscriptions are drained by
their own task, because py-libp2p drops deliveries once 32 are queued.

Everything runs in the nursery of :meth:`PeerHost.running`, including one
task that keeps dialling the bootstrap peers, so a restarted ledger or node is
reconnected without anyone noticing more than a failed request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub import pubsub as libp2p_pubsub
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.tools.anyio_service import background_trio_service

from protocol import codec
from protocol.errors import OversizedMessage, ProtocolError
from protocol.keys import SigningKey
from protocol.net import wire
from protocol.net.gossip import GossipValidator, Validate, drop_reason
from protocol.net.identity import peer_id_of, public_key_of
from protocol.net.metrics import Metrics

log = logging.getLogger("assay.net")

# py-libp2p's yamux sends a WINDOW_UPDATE frame after *every* read by default,
# and pubsub reads each RPC's varint length one byte at a time, so every
# gossiped message cost its receiver two or three extra encrypted writes.
# Releasing credit in half-window batches is go-yamux's behaviour; the library
# reads this knob at call time (an operator may still set it to 1).
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")

SUBSCRIPTION_QUEUE = 4096
"""Deliveries py-libp2p queues per subscription before dropping (its default is 32)."""
OUTBOUND_HIGH_WATER = 16
BACKPRESSURE_MAX_WAIT_S = 2.0
RECONNECT_INTERVAL_S = 1.0
DIAL_TIMEOUT_S = 3.0
SHUTDOWN_CLOSE_S = 2.0
POOL_STREAMS = 4
"""Request streams kept open per peer and protocol."""
POOL_IDLE_S = 10.0
"""A kept stream idle longer than this is closed, well before the server's ``STREAM_IDLE_S``."""


async def _reset(stream: Any) -> None:
    """Abandon a stream whatever state it is in (shielded: also used while cancelled)."""
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await stream.reset()
        except Exception as exc:  # already gone
            log.debug("resetting a stream failed: %s", exc)


class PeerUnavailable(ProtocolError):
    """A request could not reach the peer, or the peer did not answer in time."""


@dataclass(frozen=True)
class GossipParams:
    """Gossipsub settings, all explicit (see the module docstring for why)."""

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval_s: int = 1
    fanout_ttl_s: int = 30
    gossip_window: int = 3
    gossip_history: int = 5
    max_messages_per_topic_per_s: float = 2000.0
    seen_ttl_s: int = 120
    adaptive_degree: bool = False
    """py-libp2p's own extension: widens the mesh bounds when it judges the network unhealthy,
    which on a small network grows the mesh to every peer and multiplies every message."""
    ip_diversity: bool = False
    """py-libp2p's eclipse protection grafts peers from distinct IPs beyond ``degree_high``;
    a devnet's peers share one address."""


GossipHandler = Callable[[Any, bytes], Awaitable[None]]
"""(the validated, decoded message, its publisher's key) → None."""

BATCH_QUEUE = 4096
"""Items a :class:`BatchPublisher` holds before :meth:`BatchPublisher.submit` waits."""


class BatchPublisher:
    """Publish items as msgpack lists: each batch is whatever queued while the last was sent.

    Idle, every item goes out alone at once (no added latency); under load,
    :meth:`PeerHost.publish` waits for the peers' queues, items pile up
    meanwhile, and the next batch carries up to ``max_items`` of them.
    """

    def __init__(self, host: PeerHost, topic: str, max_items: int = wire.MAX_BATCH) -> None:
        self.host = host
        self.topic = topic
        self.max_items = max_items
        self._send, self._receive = trio.open_memory_channel[bytes](BATCH_QUEUE)
        self.published = 0

    async def submit(self, item: bytes) -> None:
        """Queue one item; waits only when ``BATCH_QUEUE`` items are already waiting."""
        await self._send.send(item)

    def pending(self) -> int:
        return self._receive.statistics().current_buffer_used

    async def run(self) -> None:
        budget = wire.MAX_GOSSIP_BYTES - 16  # the list header and slack
        held: bytes | None = None
        while True:
            batch = [held if held is not None else await self._receive.receive()]
            held = None
            size = len(batch[0])
            while len(batch) < self.max_items:
                try:
                    item = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                if size + len(item) + 8 > budget:
                    held = item
                    break
                batch.append(item)
                size += len(item) + 8
            try:
                await self.host.publish(self.topic, codec.encode(batch))
                self.published += len(batch)
            except Exception as exc:  # no peers yet, or shutting down: the ledger keeps the job
                log.warning("publishing %d items on %s failed: %s", len(batch), self.topic, exc)


class PeerHost:
    """One process's presence on the network; see the module docstring."""

    def __init__(
        self,
        key: SigningKey,
        listen: str,
        bootstrap: Sequence[str] = (),
        metrics: Metrics | None = None,
        gossip: GossipParams | None = None,
    ) -> None:
        self.key = key
        self.metrics = metrics or Metrics()
        self.listen = multiaddr.Multiaddr(listen)
        self.bootstrap = [multiaddr.Multiaddr(a) for a in bootstrap]
        self._bootstrap_peers = [info_from_p2p_addr(a) for a in self.bootstrap]
        key_pair = create_new_key_pair(key.seed())
        noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        self.host = new_host(
            key_pair=key_pair,
            sec_opt={NOISE_PROTOCOL_ID: noise},
            listen_addrs=[self.listen],
        )
        params = gossip or GossipParams()
        self.router = GossipSub(
            [PROTOCOL_ID_V11],
            degree=params.degree,
            degree_low=params.degree_low,
            degree_high=params.degree_high,
            time_to_live=params.fanout_ttl_s,
            gossip_window=params.gossip_window,
            gossip_history=params.gossip_history,
            heartbeat_interval=params.heartbeat_interval_s,
            max_messages_per_topic_per_second=params.max_messages_per_topic_per_s,
            adaptive_gossip_enabled=params.adaptive_degree,
            eclipse_protection_enabled=params.ip_diversity,
        )
        self.pubsub = Pubsub(
            self.host, self.router, seen_ttl=params.seen_ttl_s,
            max_inbound_rpc_size=4 * wire.MAX_GOSSIP_BYTES,
        )
        self._topics: dict[str, tuple[GossipValidator, GossipHandler]] = {}
        self._streams: dict[tuple[bytes, str], list[tuple[Any, float]]] = {}
        self.ready = trio.Event()

    @property
    def public_key(self) -> bytes:
        return self.key.public.raw

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    def addresses(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()]

    def connected(self) -> list[bytes]:
        out = []
        for peer in self.host.get_connected_peers():
            try:
                out.append(public_key_of(peer))
            except ProtocolError:
                continue
        return out

    # -- gossip --------------------------------------------------------------------------------
    def subscribe(self, topic: str, validate: Validate, handler: GossipHandler) -> None:
        """Validate every message on ``topic`` before relay; hand valid ones to ``handler``."""
        validator = GossipValidator(topic, validate, self.metrics)
        self.pubsub.set_topic_validator(topic, validator.libp2p_validator, False)
        self._topics[topic] = (validator, handler)

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish, first waiting (bounded) while any peer's outbound queue is nearly full.

        py-libp2p queues at most 32 RPCs per peer and drops the rest silently,
        so a burst faster than the slowest peer drains would be lost.
        """
        if len(data) > wire.MAX_GOSSIP_BYTES:
            raise OversizedMessage(f"{len(data)} bytes exceed the gossip bound")
        with trio.move_on_after(BACKPRESSURE_MAX_WAIT_S):
            while any(len(q) >= OUTBOUND_HIGH_WATER for q in self.pubsub.peer_queues.values()):
                await trio.sleep(0.002)
        await self.pubsub.publish(topic, data)

    async def _drain(self, topic: str) -> None:
        validator, handler = self._topics[topic]
        libp2p_pubsub.SUBSCRIPTION_CHANNEL_SIZE = SUBSCRIPTION_QUEUE  # read when subscribing
        subscription = await self.pubsub.subscribe(topic)
        me = self.peer_id.to_bytes()
        while True:
            message = await subscription.get()
            if message.from_id == me:
                continue
            accepted = validator.take(bytes(message.data))
            if accepted is None:
                continue
            try:
                await handler(accepted, public_key_of(ID(message.from_id)))
            except Exception as exc:  # a handler bug must not stop the topic
                validator.count_drop("handler_error")
                log.warning("handler for %s failed: %s", topic, exc)

    # -- requests ------------------------------------------------------------------------------
    def serve(self, protocol: str, handler: wire.Handler) -> None:
        """Answer framed requests on ``protocol`` with ``handler``, each stream until it ends.

        The first request must arrive within ``STREAM_TIMEOUT_S``; a kept
        stream may then wait ``STREAM_IDLE_S`` for the next. A frame that
        cannot be read (oversized, truncated, too slow) ends the stream.
        """
        max_bytes = wire.MAX_REQUEST_BYTES[protocol]
        metrics = self.metrics

        async def on_stream(stream: Any) -> None:
            first = True
            while True:
                reason = None
                answered = False
                try:
                    sender = public_key_of(stream.muxed_conn.peer_id)
                    if first:
                        with trio.fail_after(wire.STREAM_TIMEOUT_S):
                            data = await wire.read_frame(stream, max_bytes)
                    else:
                        try:
                            data = await wire.read_frame(stream, max_bytes, wire.STREAM_IDLE_S)
                        except (wire.StreamEnded, trio.TooSlowError):
                            break  # the client closed, or left a kept stream idle
                    try:
                        response = await handler(data, sender)
                    except ProtocolError as exc:
                        reason = drop_reason(exc)
                        response = wire.error_response(str(exc))
                    with trio.fail_after(wire.STREAM_TIMEOUT_S):
                        await stream.write(wire.frame(response))
                    answered = True
                except trio.TooSlowError:
                    reason = "timeout"
                except ProtocolError as exc:
                    reason = drop_reason(exc)
                except Exception as exc:  # stream resets and anything a peer can provoke
                    reason = "stream_error"
                    log.debug("stream on %s failed: %s", protocol, exc)
                if reason is None:
                    metrics.requests.labels(protocol, "ok").inc()
                else:
                    metrics.requests_dropped.labels(protocol, reason).inc()
                if not answered:
                    break
                first = False
            with trio.move_on_after(1):
                try:
                    await stream.close()
                except Exception:
                    log.debug("closing a stream on %s failed", protocol)

        self.host.set_stream_handler(TProtocol(protocol), on_stream)

    def forget_failed_dials(self, peer: bytes) -> None:
        """Let ``peer`` be dialled again at once.

        py-libp2p refuses for 60 s to redial a peer whose addresses all failed,
        which outlasts a restart of the ledger; a client that knows the peer is
        worth retrying clears that before it retries.
        """
        unblock = getattr(self.host.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(peer_id_of(peer))

    async def request(
        self, peer: bytes, protocol: str, payload: bytes, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send one request and return the peer's ``ok`` response map.

        Streams are kept open and reused (``POOL_STREAMS`` per peer and
        protocol, each for at most ``POOL_IDLE_S`` idle), which saves a yamux
        stream and a multistream-select negotiation per request. A kept stream
        that turns out closed before a byte of the answer came back is dropped
        and the request sent once more on a new one: the peer never read it.

        Raises :class:`PeerUnavailable` when the peer cannot be reached or is
        too slow, and :class:`wire.RemoteError` when it refuses the request.
        """
        try:
            with trio.fail_after(timeout):
                while True:
                    stream, reused = await self._checkout(peer, protocol)
                    try:
                        await stream.write(wire.frame(payload))
                        data = await wire.read_frame(stream, wire.MAX_RESPONSE_BYTES)
                    except BaseException as exc:
                        await _reset(stream)
                        if reused and isinstance(exc, (wire.StreamEnded, EOFError, StreamError,
                                                       MuxedStreamError)):
                            continue
                        raise
                    await self._checkin(peer, protocol, stream)
                    break
        except trio.TooSlowError as exc:
            raise PeerUnavailable(f"{protocol}: no answer within {timeout} s") from exc
        except ProtocolError:
            raise
        except Exception as exc:  # dial failures, resets: py-libp2p raises many types
            raise PeerUnavailable(f"{protocol}: {type(exc).__name__}: {exc}") from exc
        return dict(wire.check_response(wire.decode_map(data, wire.MAX_RESPONSE_BYTES)))

    async def _checkout(self, peer: bytes, protocol: str) -> tuple[Any, bool]:
        """A kept stream to ``peer`` on ``protocol`` (True), or a new one (False)."""
        kept = self._streams.get((peer, protocol), [])
        now = trio.current_time()
        while kept:
            stream, since = kept.pop()
            if now - since < POOL_IDLE_S:
                return stream, True
            await _reset(stream)
        stream = await self.host.new_stream(peer_id_of(peer), [TProtocol(protocol)])
        return stream, False

    async def _checkin(self, peer: bytes, protocol: str, stream: Any) -> None:
        kept = self._streams.setdefault((peer, protocol), [])
        if len(kept) < POOL_STREAMS:
            kept.append((stream, trio.current_time()))
            return
        with trio.move_on_after(1):
            try:
                await stream.close()
            except Exception as exc:  # already gone
                log.debug("closing a stream failed: %s", exc)

    # -- lifetime ------------------------------------------------------------------------------
    async def _keep_connected(self) -> None:
        while True:
            connected = set(self.host.get_connected_peers())
            for address, info in zip(self.bootstrap, self._bootstrap_peers, strict=True):
                if info.peer_id == self.peer_id or info.peer_id in connected:
                    continue
                with trio.move_on_after(DIAL_TIMEOUT_S):
                    try:
                        await self.host.connect(info)
                    except Exception as exc:  # the peer is down: try again next round
                        log.debug("dial %s failed: %s", address, exc)
            self.metrics.peers.set(len(self.host.get_connected_peers()))
            await trio.sleep(RECONNECT_INTERVAL_S)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PeerHost]:
        """Listen, start gossipsub, subscribe, keep dialling bootstrap peers; stop on exit."""
        async with (
            self.host.run([self.listen]),
            background_trio_service(self.pubsub),
            background_trio_service(self.router),
            trio.open_nursery() as nursery,
        ):
            await self.pubsub.wait_until_ready()
            for topic in self._topics:
                nursery.start_soon(self._drain, topic)
            nursery.start_soon(self._keep_connected)
            self.ready.set()
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()
                await self._disconnect_all()

    async def _disconnect_all(self) -> None:
        """Close every connection before gossipsub stops.

        A connection still open when the pubsub service has stopped delivers
        its next message into a closed nursery, and py-libp2p raises that out
        of the host's context (``RuntimeError: Nursery is closed``).
        """
        network = self.host.get_network()
        with trio.move_on_after(SHUTDOWN_CLOSE_S) as scope:
            scope.shield = True
            for peer in list(self.host.get_connected_peers()):
                try:
                    await network.close_peer(peer)
                except Exception as exc:  # already gone: nothing to close
                    log.debug("closing %s failed: %s", peer, exc)
