"""Validation of gossiped messages before they are relayed or used.

libp2p calls :meth:`GossipValidator.libp2p_validator` for every message on a
topic, ours included, before it is relayed to the mesh or delivered to our
subscription. It checks, in order: the size bound, that the publisher carries
an Ed25519 key, that the bytes were not accepted before (a replay under a
fresh libp2p sequence number), and then the topic's own ``validate`` function,
which decodes the schema, checks signatures and asks whether the sender is
staked. A refused message is counted in ``assay_gossip_dropped_total`` under
its reason and goes no further; an exception of any kind is a refusal, never
a crash. The decoded message is kept until the subscription task takes it, so
nothing is decoded twice.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from libp2p.peer.id import ID

from protocol.errors import (
    BadSignature,
    MalformedMessage,
    OversizedMessage,
    ProtocolError,
    ReplayedMessage,
    UnsupportedVersion,
)
from protocol.hashing import sha256
from protocol.net import wire
from protocol.net.identity import public_key_of
from protocol.net.metrics import Metrics

log = logging.getLogger("assay.net")

SEEN_LIMIT = 100_000
"""Content hashes remembered for replay detection, oldest forgotten first."""
PENDING_LIMIT = 4_096


class UnknownSender(ProtocolError):
    """The publisher is not a staked participant allowed to send on this topic."""


class OtherNetwork(ProtocolError):
    """The message is signed for another chain id than this network's ledger."""


Validate = Callable[[bytes, bytes], Any]
"""(message bytes, publisher's Ed25519 key) → the decoded message, or raise ProtocolError."""


def drop_reason(exc: BaseException) -> str:
    """The metric label for a refused message."""
    for kind, reason in (
        (OversizedMessage, "oversized"),
        (UnsupportedVersion, "bad_version"),
        (MalformedMessage, "malformed"),
        (BadSignature, "bad_signature"),
        (ReplayedMessage, "replayed"),
        (UnknownSender, "unknown_sender"),
        (OtherNetwork, "other_network"),
        (ProtocolError, "invalid"),
    ):
        if isinstance(exc, kind):
            return reason
    return "internal"


class GossipValidator:
    def __init__(self, topic: str, validate: Validate, metrics: Metrics) -> None:
        self.topic = topic
        self.validate = validate
        self.metrics = metrics
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._pending: OrderedDict[bytes, Any] = OrderedDict()

    def count_drop(self, reason: str) -> None:
        self.metrics.gossip_dropped.labels(self.topic, reason).inc()

    def check(self, data: bytes, sender: bytes) -> Any:
        """Validate one message; raises ProtocolError, records it as seen when accepted."""
        if len(data) > wire.MAX_GOSSIP_BYTES:
            raise OversizedMessage(f"{len(data)} bytes exceed {wire.MAX_GOSSIP_BYTES}")
        digest = sha256(data)
        if digest in self._seen:
            raise ReplayedMessage("these bytes were already accepted on this topic")
        decoded = self.validate(data, sender)
        self._seen[digest] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        self._pending[digest] = decoded
        if len(self._pending) > PENDING_LIMIT:
            self._pending.popitem(last=False)
        return decoded

    def libp2p_validator(self, forwarder: ID, message: Any) -> bool:
        try:
            self.check(bytes(message.data), public_key_of(ID(bytes(message.from_id))))
        except Exception as exc:  # everything a peer sends is refused, never raised
            self.count_drop(drop_reason(exc))
            log.debug("dropped gossip on %s from %s: %s", self.topic, forwarder, exc)
            return False
        self.metrics.gossip_received.labels(self.topic).inc()
        return True

    def take(self, data: bytes) -> Any:
        """The decoded form of an accepted message, once; None if it was never accepted."""
        return self._pending.pop(sha256(data), None)
