"""Settlement: what the ledger service, and through it every node, validator and CLI call,
asks of the ledger it runs on.

Two backends stand behind it, chosen by the ledger service's ``ledger_backend``
setting: ``"sqlite"``, :class:`slashing.store.Ledger` itself (the event log over
SQLite with snapshots, the default for ``make demo`` and ``assay devnet up``),
and ``"evm"``, :class:`slashing.evm.settlement.ChainSettlement`, which keeps
that log as its admission check and index and settles every event it accepts
on the :mod:`slashing.evm` contracts. Both apply the same rules
(``tests/test_chain_differential.py``), so the service answers queries from
:attr:`Settlement.state` whichever it runs on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from slashing.events import Event
from slashing.state import State
from slashing.store import LogEntry

BACKENDS = ("sqlite", "evm")
"""The values of the ``ledger_backend`` setting."""


class Settlement(Protocol):
    """The ledger as the service uses it: append an event, read the state and the log."""

    @property
    def state(self) -> State:
        """The rules' state after every event appended so far."""

    @property
    def length(self) -> int:
        """Events on the log."""

    def append(self, event: Event) -> LogEntry:
        """Apply ``event`` by the rules and log it; a refusal raises and changes nothing."""

    def events(self, after: int = 0) -> Iterator[LogEntry]:
        """The logged events after row ``after``, oldest first."""

    def close(self) -> None:
        """Flush and release what the backend holds."""
