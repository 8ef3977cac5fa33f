"""The ledger's store: an append-only, hash-chained event log in SQLite (DESIGN decision 7).

One table, ``events(seq, prev_hash, hash, event)``: ``event`` is the canonical
bytes of a :mod:`slashing.events` event and ``hash = sha256(prev_hash ‖
event)``, with 32 zero bytes before the first row. The state is never stored;
it is the fold of the log through :mod:`slashing.rules`, rebuilt and checked
row by row whenever the file is opened. So a row changed on disk breaks the
chain at that row, and a log rewritten with a consistent chain still has to
pass every rule again.

The file runs in WAL mode with ``synchronous=FULL``: an append that returned
is on disk, and readers never block the writer. One process writes; an
append checks inside its transaction that nobody else extended the log.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from assay.errors import OversizedMessage, ProtocolError
from assay.hashing import sha256
from slashing import constants as c
from slashing.events import Event, decode_event
from slashing.rules import apply_event, process_event
from slashing.state import Account, State

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events ("
    "seq INTEGER PRIMARY KEY, prev_hash BLOB NOT NULL, hash BLOB NOT NULL, event BLOB NOT NULL)"
)
_ROWS = "SELECT seq, prev_hash, hash, event FROM events ORDER BY seq"

Row = tuple[object, object, object, object]


class LedgerCorrupt(Exception):
    """The log on disk does not verify; the message names the first bad row."""


@dataclass(frozen=True)
class LogEntry:
    seq: int
    prev_hash: bytes
    hash: bytes
    event: Event


def chain_hash(prev_hash: bytes, event_bytes: bytes) -> bytes:
    return sha256(prev_hash + event_bytes)


def _touched(
    event: Event, before: Mapping[bytes, Account], after: Mapping[bytes, Account]
) -> list[bytes]:
    """Accounts an event names or whose record it replaced (records are immutable)."""
    changed = [a for a, record in after.items() if before.get(a) is not record]
    return list(dict.fromkeys([*event.parties(), *changed]))


def _check_row(row: Row, seq: int, prev_hash: bytes) -> tuple[bytes, Event]:
    """Verify one row continues the chain; return its hash and its decoded event."""
    row_seq, row_prev, row_hash, data = row
    if row_seq != seq:
        raise LedgerCorrupt(f"row seq {row_seq}: expected seq {seq} (rows missing or reordered)")
    blobs = isinstance(row_prev, bytes) and isinstance(row_hash, bytes)
    if not (blobs and isinstance(data, bytes)):
        raise LedgerCorrupt(f"row seq {seq}: prev_hash, hash and event must be blobs")
    if row_prev != prev_hash:
        raise LedgerCorrupt(f"row seq {seq}: prev_hash does not match the hash of row {seq - 1}")
    if row_hash != chain_hash(prev_hash, data):
        raise LedgerCorrupt(f"row seq {seq}: hash does not match its event bytes (tampered row)")
    try:
        event = decode_event(data)
    except ProtocolError as exc:
        raise LedgerCorrupt(f"row seq {seq}: event does not decode: {exc}") from exc
    return row_hash, event


@dataclass
class _Fold:
    state: State
    seq: int
    head: bytes
    history: dict[bytes, list[int]]


def _fold(rows: Iterable[Row]) -> _Fold:
    """Check the chain and replay every event through the rules, in place on one state."""
    fold = _Fold(State(), 0, c.GENESIS_PREV_HASH, {})
    for row in rows:
        seq = fold.seq + 1
        digest, event = _check_row(row, seq, fold.head)
        before = dict(fold.state.accounts)
        try:
            process_event(fold.state, event)
        except ProtocolError as exc:
            raise LedgerCorrupt(f"row seq {seq}: the rules refuse its event: {exc}") from exc
        for account in _touched(event, before, fold.state.accounts):
            fold.history.setdefault(account, []).append(seq)
        fold.seq, fold.head = seq, digest
    return fold


class Ledger:
    """The event log on disk and the state it folds to. Open with :meth:`Ledger.open`."""

    def __init__(self, connection: sqlite3.Connection, fold: _Fold) -> None:
        self._db = connection
        self._state = fold.state
        self._seq = fold.seq
        self._head = fold.head
        self._history = fold.history

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Ledger:
        """Open (or create) the log at ``path``, verify all of it and rebuild the state."""
        db = sqlite3.connect(path, isolation_level=None)
        try:
            (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() != "wal":
                raise LedgerCorrupt(f"{os.fspath(path)!r} cannot run in WAL mode (got {mode!r})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            fold = _fold(db.execute(_ROWS))
        except sqlite3.OperationalError:
            db.close()
            raise  # locked, unwritable, wrong schema: the operator's to fix, not corruption
        except sqlite3.DatabaseError as exc:
            db.close()
            raise LedgerCorrupt(f"{os.fspath(path)!r} is not a ledger database: {exc}") from exc
        except BaseException:
            db.close()
            raise
        return cls(db, fold)

    @property
    def state(self) -> State:
        """A copy of the current state: reading it never changes the ledger."""
        return self._state.copy()

    @property
    def length(self) -> int:
        """How many events the log holds; the last one has this seq."""
        return self._seq

    @property
    def head_hash(self) -> bytes:
        """The hash of the last row (32 zero bytes for an empty log)."""
        return self._head

    def append(self, event: Event) -> LogEntry:
        """Apply the rules to ``event`` and, only if they accept it, write it in one transaction.

        A refused event raises a :class:`ProtocolError` and changes nothing, in
        memory or on disk.
        """
        data = event.encode()
        if len(data) > c.MAX_EVENT_BYTES:
            raise OversizedMessage(
                f"{event.TYPE} event is {len(data)} bytes; the bound is {c.MAX_EVENT_BYTES}"
            )
        after = apply_event(self._state, event)
        entry = LogEntry(self._seq + 1, self._head, chain_hash(self._head, data), event)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            tip = self._db.execute(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            if (tip or (0, c.GENESIS_PREV_HASH)) != (self._seq, self._head):
                raise LedgerCorrupt(
                    f"the log on disk ends at {tip[0] if tip else 0}, not at seq {self._seq}: "
                    "another process wrote to it; reopen the ledger"
                )
            self._db.execute(
                "INSERT INTO events (seq, prev_hash, hash, event) VALUES (?, ?, ?, ?)",
                (entry.seq, entry.prev_hash, entry.hash, data),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for account in _touched(event, self._state.accounts, after.accounts):
            self._history.setdefault(account, []).append(entry.seq)
        self._state, self._seq, self._head = after, entry.seq, entry.hash
        return entry

    def verify(self) -> int:
        """Re-read the whole log from disk, check chain and rules, and compare with memory.

        Returns the number of events; raises :class:`LedgerCorrupt` on any difference.
        """
        try:
            fold = _fold(self._db.execute(_ROWS))
        except sqlite3.DatabaseError as exc:
            raise LedgerCorrupt(f"the ledger database cannot be read: {exc}") from exc
        if (fold.seq, fold.head) != (self._seq, self._head):
            raise LedgerCorrupt(
                f"the log on disk has {fold.seq} events, the ledger in memory {self._seq}"
            )
        if fold.state != self._state:
            raise LedgerCorrupt("the log on disk folds to a different state than the one in memory")
        return fold.seq

    def events(self) -> Iterator[LogEntry]:
        """Every logged event in order, each row's chain link checked as it is read."""
        head = c.GENESIS_PREV_HASH
        for seq, row in enumerate(self._db.execute(_ROWS), start=1):
            digest, event = _check_row(row, seq, head)
            yield LogEntry(seq, head, digest, event)
            head = digest

    def history(self, account: bytes) -> list[LogEntry]:
        """The events that name ``account`` or changed its balance or stake, in order."""
        entries = []
        for seq in self._history.get(account, []):
            row = self._db.execute(
                "SELECT prev_hash, hash, event FROM events WHERE seq = ?", (seq,)
            ).fetchone()
            if row is None:
                raise LedgerCorrupt(f"row seq {seq} is missing from the log on disk")
            prev_hash, digest, data = row
            try:
                event = decode_event(data)
            except ProtocolError as exc:
                raise LedgerCorrupt(f"row seq {seq}: event does not decode: {exc}") from exc
            entries.append(LogEntry(seq, prev_hash, digest, event))
        return entries

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
