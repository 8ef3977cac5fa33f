"""Names and framing of everything Assay sends over libp2p (DESIGN decision 8).

Gossip topics are ``/assay/1/<name>/msgpack``; request/response protocols are
libp2p stream protocols ``/assay/1/<name>/msgpack``: a request frame, then
its response frame, and again, as long as the client keeps the stream open
(a client may send one request per stream and close it; keeping streams
open saves a stream negotiation per request). A frame is a 4-byte big-endian
length and that many bytes of canonical msgpack (:mod:`protocol.codec`). The
length is checked against the protocol's bound before a byte of the body is
read, and a peer that stalls is cut off by a deadline, so a hostile peer
costs at most one bound and one timeout per frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio

from protocol import codec
from protocol.errors import MalformedMessage, OversizedMessage, ProtocolError

VERSION = 1


def topic(name: str) -> str:
    return f"/assay/{VERSION}/{name}/msgpack"


TOPIC_COMMITMENTS = topic("commitments")
TOPIC_COMMITMENT_BATCHES = topic("commitment-batches")
"""A msgpack list of 1..MAX_BATCH signed commitments, each exactly as on ``commitments``, all
signed by the publisher. Nodes publish here: one gossip message per batch amortises libp2p's
per-message cost (framing, Noise, the envelope and message signatures) over its commitments."""
TOPIC_ATTESTATIONS = topic("attestations")
TOPIC_EVIDENCE = topic("evidence")
TOPIC_BEACON = topic("beacon")
TOPICS = (TOPIC_COMMITMENTS, TOPIC_COMMITMENT_BATCHES, TOPIC_ATTESTATIONS, TOPIC_EVIDENCE,
          TOPIC_BEACON)
MAX_BATCH = 64

PROTOCOL_JOB = topic("job")
PROTOCOL_JOB_DATA = topic("jobdata")
PROTOCOL_LEDGER = topic("ledger")

MAX_GOSSIP_BYTES = 64 * 1024
"""Gossiped messages are headers (commitments, attestations, beacon rounds) or evidence."""
MAX_REQUEST_BYTES: Mapping[str, int] = {
    PROTOCOL_JOB: 4 * 1024 * 1024,
    PROTOCOL_JOB_DATA: 4 * 1024,
    PROTOCOL_LEDGER: 256 * 1024,
}
MAX_RESPONSE_BYTES = codec.MAX_MESSAGE_BYTES
FRAME_HEADER_BYTES = 4
STREAM_TIMEOUT_S = 10.0
"""How long a peer may take to send one frame before its stream is reset."""
STREAM_IDLE_S = 30.0
"""How long a served stream waits for its next request before it is closed."""


class Stream(Protocol):
    """The part of a libp2p stream this module uses."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


class StreamEnded(MalformedMessage):
    """The stream ended before the first byte of a read: a clean end between frames."""


async def read_exactly(stream: Stream, n: int) -> bytes:
    """Read ``n`` bytes; a stream that ends first is a truncated frame."""
    chunks: list[bytes] = []
    need = n
    while need:
        try:
            chunk = await stream.read(need)
        except EOFError:  # py-libp2p raises where a socket would return b""
            chunk = b""
        if not chunk:
            if need == n:
                raise StreamEnded(f"stream ended before a {n}-byte read")
            raise MalformedMessage(f"stream ended {need} bytes short of a {n}-byte read")
        chunks.append(chunk)
        need -= len(chunk)
    return b"".join(chunks)


async def read_frame(stream: Stream, max_bytes: int, first_byte_s: float | None = None) -> bytes:
    """One length-prefixed frame, refused before reading if it exceeds ``max_bytes``.

    With ``first_byte_s``, the wait for the header may last that long (an idle
    kept stream) and the rest of the frame must follow within ``STREAM_TIMEOUT_S``.
    """
    if first_byte_s is None:
        header = await read_exactly(stream, FRAME_HEADER_BYTES)
    else:
        with trio.fail_after(first_byte_s):
            header = await read_exactly(stream, 1)
        with trio.fail_after(STREAM_TIMEOUT_S):
            header += await read_exactly(stream, FRAME_HEADER_BYTES - 1)
    size = int.from_bytes(header, "big")
    if size > max_bytes:
        raise OversizedMessage(f"frame announces {size} bytes; the bound is {max_bytes}")
    return await read_exactly(stream, size) if size else b""


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(FRAME_HEADER_BYTES, "big") + payload


def encode_map(value: Mapping[str, Any]) -> bytes:
    return codec.encode(dict(value))


def decode_map(data: bytes, max_bytes: int) -> dict[str, Any]:
    """Decode a canonical map, or raise a :class:`ProtocolError` naming what is wrong."""
    value = codec.decode(data, max_bytes)
    if not isinstance(value, dict):
        raise MalformedMessage(f"expected a map, got {type(value).__name__}")
    return value


def error_response(message: str) -> bytes:
    return encode_map({"ok": False, "error": message[:512]})


def ok_response(**fields: Any) -> bytes:
    return encode_map({"ok": True, **fields})


class RemoteError(ProtocolError):
    """The peer answered a request with an error; the message is the peer's."""


def check_response(response: Mapping[str, Any]) -> Mapping[str, Any]:
    if response.get("ok") is True:
        return response
    error = response.get("error")
    raise RemoteError(error if isinstance(error, str) else "peer refused the request")


Handler = Callable[[bytes, bytes], Awaitable[bytes]]
"""(request bytes, the sender's 32-byte Ed25519 key) → response bytes."""


async def with_deadline(seconds: float, coro: Awaitable[bytes]) -> bytes:
    with trio.fail_after(seconds):
        return await coro
