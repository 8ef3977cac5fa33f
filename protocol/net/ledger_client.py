"""How nodes and validators talk to the ledger service over the ledger protocol.

Transactions are named by the protocol message they carry (``record_job``
with a request and a commitment, ``attest``, ``accuse``, ``bond``), so the
roles never build ledger events themselves; queries answer from the ledger's
folded state. A background task refreshes the ledger's status every
``STATUS_INTERVAL_S``: it tells who is staked (which gossip validation asks)
and whether the ledger is reachable (which ``/health`` asks).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from protocol.errors import ProtocolError
from protocol.net import wire
from protocol.net.host import PeerHost, PeerUnavailable
from protocol.net.identity import public_key_of

log = logging.getLogger("assay.net")

STATUS_INTERVAL_S = 0.5
STALE_AFTER_S = 5.0
RETRY_S = 0.5
UNREACHABLE_AFTER_FAILURES = 2


class LedgerClient:
    def __init__(self, host: PeerHost, address: str) -> None:
        self.host = host
        self.key = public_key_of(info_from_p2p_addr(multiaddr.Multiaddr(address)).peer_id)
        self.status: dict[str, Any] = {}
        self._status_at = 0.0
        self._failures = 0
        self.nodes: frozenset[bytes] = frozenset()
        self.validators: frozenset[bytes] = frozenset()

    async def call(self, op: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """One request, retried while the ledger is unreachable (it may be restarting).

        Raises PeerUnavailable once ``timeout`` has passed, or RemoteError at
        once when the ledger refuses (a refused transaction is not retried).
        """
        payload = wire.encode_map({"op": op, **fields})
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return await self.host.request(self.key, wire.PROTOCOL_LEDGER, payload,
                                               max(left, 0.1))
            except PeerUnavailable:
                if left <= RETRY_S:
                    raise
                self.host.forget_failed_dials(self.key)
                await trio.sleep(RETRY_S)

    async def refresh(self) -> None:
        status = await self.call("status", timeout=1.0)
        self.status = status
        self.nodes = frozenset(status.get("nodes", []))
        self.validators = frozenset(status.get("validators", []))
        self._status_at = time.monotonic()
        self._failures = 0

    def reachable(self) -> bool:
        fresh = time.monotonic() - self._status_at < STALE_AFTER_S
        return bool(self.status) and fresh and self._failures < UNREACHABLE_AFTER_FAILURES

    @property
    def round(self) -> int:
        value = self.status.get("round", -1)
        return value if isinstance(value, int) else -1

    @property
    def chain_id(self) -> bytes:
        """The network's chain id, which every message this role signs must name (empty until
        the first status answer)."""
        value = self.status.get("chain_id", b"")
        return value if isinstance(value, bytes) else b""

    async def keep_fresh(self) -> None:
        while True:
            try:
                await self.refresh()
            except ProtocolError as exc:
                self._failures += 1
                log.debug("ledger status failed: %s", exc)
            await trio.sleep(STATUS_INTERVAL_S)

    async def wait_reachable(self) -> None:
        while not self.reachable():
            await trio.sleep(0.1)
