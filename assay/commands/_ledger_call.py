"""One short exchange with the ledger service, for commands that read or send a few things.

:func:`with_ledger` starts a libp2p host under ``key`` (the account that
signs any transaction sent), waits until the ledger is connected, runs
``action`` with a :class:`~protocol.net.ledger_client.LedgerClient` and
returns its result. A refusal or an unreachable ledger is a ``CommandError``
naming it (raised inside the host's nursery it would reach ``trio.run``
wrapped in an exception group).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from protocol.keys import SigningKey
    from protocol.net.ledger_client import LedgerClient

T = TypeVar("T")
CONNECT_TIMEOUT_S = 20.0


def with_ledger(key: SigningKey, address: str,
                action: Callable[[LedgerClient], Awaitable[T]]) -> T:
    import trio

    from assay.arguments import CommandError
    from protocol.errors import ProtocolError
    from protocol.net.host import PeerHost
    from protocol.net.ledger_client import LedgerClient
    from slashing.transactions import transaction_signer

    try:
        host = PeerHost(key, "/ip4/127.0.0.1/tcp/0", [address])
        client = LedgerClient(host, address, transaction_signer(key))
    except Exception as exc:  # multiaddr and libp2p raise many types for a bad address
        raise CommandError(f"--ledger {address!r} is not a /p2p/ address: {exc}") from exc

    async def main() -> tuple[T | None, str]:
        async with host.running():
            with trio.move_on_after(CONNECT_TIMEOUT_S):
                while client.key not in host.connected():
                    await trio.sleep(0.05)
            if client.key not in host.connected():
                return None, f"could not connect to the ledger at {address}"
            try:
                return await action(client), ""
            except CommandError as exc:
                return None, str(exc)
            except ProtocolError as exc:
                return None, f"the ledger refused: {exc}"

    result, failure = trio.run(main)
    if failure:
        raise CommandError(failure)
    return result  # type: ignore[return-value]
