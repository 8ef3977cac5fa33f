"""How nodes, validators and the CLI talk to the ledger service over the ledger protocol.

Transactions are named by what they carry: ``record_job`` (a request and a
commitment), ``attest``, ``accuse``, ``accuse_invalid_proof``, ``serve_data``
(a reported job's output); the account's own transactions (``bond``,
``unbond``, ``withdraw``, ``report_unavailable``) travel signed by the
account with its next nonce (:meth:`LedgerClient.transact`), so the log
proves who asked for each. Queries answer from the ledger's state and come
back as the typed, checked records of :mod:`protocol.net.ledger_replies`.

Signing an account transaction needs the ledger's event encoding, which
``protocol`` does not own: the composition root passes a
:data:`SignTransaction` built on the ledger's events, so a change to their
format reaches every signer at once. Each names the network's chain id, which
the client learns from the ledger's status (EIP-155: a transaction signed for
one network is void on another).

A background task refreshes the ledger's status every ``STATUS_INTERVAL_S``:
it tells who is staked (which gossip validation asks) and whether the ledger
is reachable (which ``/health`` asks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from protocol.errors import ProtocolError
from protocol.messages import JobRequest
from protocol.net import wire
from protocol.net.host import PeerHost, PeerUnavailable
from protocol.net.identity import public_key_of
from protocol.net.ledger_replies import (
    AccountInfo,
    DisputeInfo,
    Duty,
    JobData,
    JobInfo,
    Offence,
    Status,
    parse_beacon,
    parse_challenges,
    parse_duties,
    parse_payable,
    parse_record,
)

log = logging.getLogger("assay.net")

STATUS_INTERVAL_S = 0.5
STALE_AFTER_S = 5.0
RETRY_S = 0.5
UNREACHABLE_AFTER_FAILURES = 2

SignTransaction = Callable[[str, int, Mapping[str, Any]], bytes]
"""(transaction type, nonce, fields) → the canonical bytes of the transaction signed by the
account; the account's own key field is filled in by the signer, the chain id is among the
fields."""


class LedgerClient:
    def __init__(self, host: PeerHost, address: str, sign: SignTransaction | None = None) -> None:
        self.host = host
        self.key = public_key_of(info_from_p2p_addr(multiaddr.Multiaddr(address)).peer_id)
        self.sign = sign
        self.status: Status | None = None
        self._status_at = 0.0
        self._failures = 0
        self.nodes: frozenset[bytes] = frozenset()
        self.validators: frozenset[bytes] = frozenset()
        self._transacting = trio.Lock()

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

    # -- account transactions ----------------------------------------------------------------
    async def transact(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Sign ``kind`` with this account's next nonce and send it; see the module docstring.

        One at a time per process, so this process's transactions never take
        each other's nonce. A nonce taken meanwhile by another process of the
        same account (``assay stake`` beside a running node) is refused by the
        ledger and raised, not re-signed: a transaction that landed although
        its answer was lost must not be sent twice.
        """
        if self.sign is None:
            raise ProtocolError(f"this client holds no key to sign a {kind} transaction")
        async with self._transacting:
            account = await self.account(self.host.public_key, timeout)
            if not self.chain_id:
                await self.refresh()
            tx = self.sign(kind, account.nonce + 1, {**fields, "chain_id": self.chain_id})
            return await self.call(kind, timeout, tx=tx)

    # -- queries -------------------------------------------------------------------------------
    async def job(self, job_id: bytes, timeout: float = 10.0) -> JobInfo:
        return JobInfo.parse(await self.call("job", timeout, job_id=job_id))

    async def job_data(self, job_id: bytes, timeout: float = 10.0) -> JobData:
        return JobData.parse(await self.call("job_data", timeout, job_id=job_id))

    async def account(self, account: bytes, timeout: float = 10.0) -> AccountInfo:
        return AccountInfo.parse(await self.call("account", timeout, account=account))

    async def beacon(self, number: int) -> tuple[bytes, bytes] | None:
        return parse_beacon(await self.call("beacon", round=number))

    async def dispute(self, dispute_id: bytes, timeout: float = 10.0) -> DisputeInfo:
        return DisputeInfo.parse(await self.call("dispute", timeout, dispute_id=dispute_id))

    async def record(self, job_id: bytes, timeout: float = 10.0) -> list[bytes]:
        """The node's record before the job (:func:`slashing.rules.record_of`), oldest first."""
        return parse_record(await self.call("record", timeout, job_id=job_id))

    async def duties(self, validator: bytes) -> tuple[list[Duty], list[Duty]]:
        """The audits and committee votes the ledger awaits from ``validator``."""
        return parse_duties(await self.call("duties", validator=validator))

    async def open_challenges(self, node: bytes) -> list[bytes]:
        """Jobs of ``node`` reported unavailable whose output is not yet on the log."""
        return parse_challenges(await self.call("open_challenges", node=node))

    async def can_pay(self, request: JobRequest, held: int = 0, in_flight: int = 0
                      ) -> tuple[bool, str]:
        """Whether the ledger would record ``request`` now (its fee, nonce and expiry, its
        node's room for another job), with ``held`` more of the client's balance spoken for by
        its jobs running at the asker and ``in_flight`` jobs the asker runs unrecorded; and why
        not."""
        return parse_payable(await self.call(
            "can_pay", client=request.client, nonce=request.nonce, fee=request.fee,
            node=request.node, expiry_round=request.expiry_round, held=held,
            in_flight=in_flight,
        ))

    async def offences(self, account: bytes) -> list[Offence]:
        return Offence.parse_list(await self.call("offences", account=account))

    # -- status ------------------------------------------------------------------------------
    async def refresh(self) -> None:
        status = Status.parse(await self.call("status", timeout=1.0))
        self.status = status
        self.nodes = status.nodes
        self.validators = status.validators
        self._status_at = time.monotonic()
        self._failures = 0

    def reachable(self) -> bool:
        fresh = time.monotonic() - self._status_at < STALE_AFTER_S
        return self.status is not None and fresh and self._failures < UNREACHABLE_AFTER_FAILURES

    @property
    def round(self) -> int:
        return self.status.round if self.status is not None else -1

    @property
    def chain_id(self) -> bytes:
        """The network's chain id, which every message this role signs must name (empty until
        the first status answer)."""
        return self.status.chain_id if self.status is not None else b""

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
