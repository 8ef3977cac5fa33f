"""The ledger's store: an append-only, hash-chained event log in SQLite (DESIGN decision 7).

Tables:

* ``events(seq, prev_hash, hash, event)``: ``event`` is the canonical bytes
  of a :mod:`slashing.events` event and ``hash = sha256(prev_hash ‖ event)``,
  with 32 zero bytes before the first row. This is the ledger; everything
  else can be rebuilt from it.
* ``snapshots(seq, head_hash, state_hash, state)``: every
  ``snapshot_interval`` events, the canonical state after row ``seq``
  (:func:`slashing.state.encode_state`), the chain hash of that row and the
  state hash. The newest few are kept.
* ``touches(account, seq)``: which rows name an account or changed its
  record, for ``history``; written in the same transaction as the rows.

Opening checks every row's chain link, takes the newest snapshot whose
state hashes to its ``state_hash`` and whose ``head_hash`` is the chain's
hash at its row, and replays the rows after it through the rules: the
replay is at most one interval long however long the log. :meth:`verify`
trusts no snapshot: it replays from genesis and checks every snapshot and
the state in memory against the replay.

A row changed on disk breaks the chain at that row, and a log rewritten with
a consistent chain must still pass every rule (and every signature) again,
on :meth:`verify` and for every row after the last snapshot on opening.

Writes: an event is applied to the state in place (the state journals what
it changes) and written in one transaction; a refused event is undone and
never written. :meth:`Ledger.append_batch` applies each event of a batch in
turn — each is accepted or refused on its own, against the state the
accepted ones before it left — and writes all the accepted ones in a single
transaction, so a batch costs one fsync. The file runs in WAL mode with
``synchronous=FULL``: a transaction that returned is on disk, and readers
never block the writer. One process writes; a write checks inside its
transaction that nobody else extended the log.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Self

from protocol.errors import MalformedMessage, OversizedMessage, ProtocolError
from protocol.hashing import sha256
from slashing import constants as c
from slashing.events import Event, SignatureCheck, decode_event
from slashing.rules import process_event
from slashing.signatures import SignaturePool, pipelined
from slashing.state import State, decode_state, encode_state, state_hash

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events ("
    "seq INTEGER PRIMARY KEY, prev_hash BLOB NOT NULL, hash BLOB NOT NULL, event BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshots ("
    "seq INTEGER PRIMARY KEY, head_hash BLOB NOT NULL, state_hash BLOB NOT NULL, "
    "state BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS touches ("
    "account BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (account, seq)) WITHOUT ROWID",
)
_ROWS = "SELECT seq, prev_hash, hash, event FROM events WHERE seq > ? ORDER BY seq"
_INSERT_EVENT = "INSERT INTO events (seq, prev_hash, hash, event) VALUES (?, ?, ?, ?)"
_INSERT_TOUCH = "INSERT OR IGNORE INTO touches (account, seq) VALUES (?, ?)"
REPLAY_CHUNK = 2_048
"""Rows decoded, signature-checked and applied together when replaying."""
PIPELINE_GROUP = 128
"""Events of a batch whose signatures are checked together, while the rules apply earlier ones."""

Row = tuple[object, object, object, object]


class LedgerCorrupt(Exception):
    """The log on disk does not verify; the message names the first bad row."""


class BatchRefused(ProtocolError):
    """An all-or-nothing batch had an event the rules refuse; nothing of it was written."""

    def __init__(self, index: int, event: Event, error: ProtocolError) -> None:
        super().__init__(f"event {index} of the batch ({event.TYPE}) is refused: {error}")
        self.index = index
        self.error = error


@dataclass(frozen=True)
class LogEntry:
    seq: int
    prev_hash: bytes
    hash: bytes
    event: Event


def chain_hash(prev_hash: bytes, event_bytes: bytes) -> bytes:
    return sha256(prev_hash + event_bytes)


def _link(row: Row, seq: int, prev_hash: bytes) -> tuple[bytes, bytes]:
    """Verify one row continues the chain; return its hash and its event bytes."""
    row_seq, row_prev, row_hash, data = row
    if row_seq != seq:
        raise LedgerCorrupt(f"row seq {row_seq}: expected seq {seq} (rows missing or reordered)")
    blobs = isinstance(row_prev, bytes) and isinstance(row_hash, bytes)
    if not (blobs and isinstance(data, bytes)):
        raise LedgerCorrupt(f"row seq {seq}: prev_hash, hash and event must be blobs")
    assert isinstance(row_hash, bytes) and isinstance(data, bytes)
    if row_prev != prev_hash:
        raise LedgerCorrupt(f"row seq {seq}: prev_hash does not match the hash of row {seq - 1}")
    if row_hash != chain_hash(prev_hash, data):
        raise LedgerCorrupt(f"row seq {seq}: hash does not match its event bytes (tampered row)")
    return row_hash, data


def _decode(seq: int, data: bytes) -> Event:
    try:
        return decode_event(data)
    except ProtocolError as exc:
        raise LedgerCorrupt(f"row seq {seq}: event does not decode: {exc}") from exc


def _checks(events: Iterable[Event]) -> list[SignatureCheck]:
    return [check for event in events for check in event.signature_checks()]


def _touched(event: Event, changed: Iterable[bytes]) -> list[bytes]:
    """Accounts an event names or whose record it replaced, each once, in a fixed order."""
    return list(dict.fromkeys([*event.parties(), *changed]))


@dataclass
class _Replay:
    state: State
    seq: int
    head: bytes


def _replay(
    db: sqlite3.Connection,
    start: _Replay,
    pool: SignaturePool | None,
    at_seq: dict[int, bytes] | None = None,
) -> tuple[_Replay, list[tuple[bytes, int]]]:
    """Check and apply every row after ``start.seq`` through the rules, in place.

    Returns where it ended and the (account, seq) touches of the rows it
    applied. ``at_seq``, when given, maps seqs to state hashes the replay must
    reach after those rows (the snapshots'), and raises if it does not.
    """
    replay = start
    touches: list[tuple[bytes, int]] = []
    cursor = db.execute(_ROWS, (replay.seq,))
    while chunk := cursor.fetchmany(REPLAY_CHUNK):
        rows: list[tuple[int, bytes, Event]] = []
        head, seq = replay.head, replay.seq
        for row in chunk:
            seq += 1
            head, data = _link(row, seq, head)
            rows.append((seq, head, _decode(seq, data)))
        groups = [rows[i : i + PIPELINE_GROUP] for i in range(0, len(rows), PIPELINE_GROUP)]
        checks = [_checks(event for _, _, event in group) for group in groups]
        for index in pipelined(checks, pool):
            for seq, head, event in groups[index]:
                point = replay.state.savepoint()
                try:
                    process_event(replay.state, event)
                except ProtocolError as exc:
                    replay.state.rollback(point)
                    message = f"row seq {seq}: the rules refuse its event: {exc}"
                    raise LedgerCorrupt(message) from exc
                changed = list(replay.state.changed_accounts(point))
                replay.state.release(point)
                touches += [(a, seq) for a in _touched(event, changed)]
                replay.seq, replay.head = seq, head
                if at_seq and seq in at_seq and state_hash(replay.state) != at_seq[seq]:
                    raise LedgerCorrupt(
                        f"the snapshot after row seq {seq} differs from the replayed state"
                    )
    return replay, touches


def _chain_hashes(db: sqlite3.Connection, wanted: set[int]) -> tuple[int, bytes, dict[int, bytes]]:
    """Check every row's link; return the last seq, its hash, and the hashes at ``wanted``."""
    head, seq, found = c.GENESIS_PREV_HASH, 0, {}
    cursor = db.execute(_ROWS, (0,))
    while chunk := cursor.fetchmany(REPLAY_CHUNK):
        for row in chunk:
            seq += 1
            head, _ = _link(row, seq, head)
            if seq in wanted:
                found[seq] = head
    return seq, head, found


def _latest_snapshot(db: sqlite3.Connection) -> tuple[_Replay, int]:
    """Verify the chain; return the newest snapshot that checks out (or genesis) and the length."""
    snapshots = db.execute(
        "SELECT seq, head_hash, state_hash, state FROM snapshots ORDER BY seq DESC"
    ).fetchall()
    length, _, heads = _chain_hashes(db, {row[0] for row in snapshots})
    for seq, head_hash, digest, blob in snapshots:
        if heads.get(seq) != head_hash or sha256(c.STATE_HASH_TAG + blob) != digest:
            continue  # written for another log, or damaged: an older one (or genesis) will do
        try:
            return _Replay(decode_state(blob), seq, head_hash), length
        except MalformedMessage:
            continue
    return _Replay(State(), 0, c.GENESIS_PREV_HASH), length


LEDGER_GC_THRESHOLDS = (50_000, 20, 100)
"""CPython collector thresholds for a process that holds a ledger (defaults: 700, 10, 10)."""


def tune_gc_for_ledger() -> None:
    """Collect reference cycles less often, for a process whose heap is mostly the ledger state.

    The state is a large, long-lived graph of frozen records, tuples and
    bytes that holds no reference cycles, and it grows with every job. Under
    CPython's default thresholds the cyclic collector rescans it again and
    again as it grows: in ``bench/ledger.py`` collection took 0.8–1.4 s of a
    5 s batched run (15–25%), and about 0.08 s with these thresholds. Garbage
    without cycles is freed by reference counting as before; only cycles
    (an exception and its traceback, say) wait longer. Process-wide, so it is
    the process owner's choice — ``assay ledger run`` and the benchmark make
    it — and never :meth:`Ledger.open`'s.
    """
    gc.set_threshold(*LEDGER_GC_THRESHOLDS)


class Ledger:
    """The event log on disk and the state it folds to. Open with :meth:`Ledger.open`."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        replay: _Replay,
        snapshot_interval: int,
        pool: SignaturePool | None,
    ) -> None:
        self._db = connection
        self._state = replay.state
        self._seq = replay.seq
        self._head = replay.head
        self._snapshot_interval = snapshot_interval
        self._pool = pool
        (last,) = connection.execute("SELECT COALESCE(MAX(seq), 0) FROM snapshots").fetchone()
        self._last_snapshot = int(last)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        snapshot_interval: int = c.SNAPSHOT_INTERVAL,
        signature_workers: int = 0,
    ) -> Ledger:
        """Open (or create) the log at ``path``, verify its chain and rebuild the state.

        ``signature_workers`` > 0 checks the signatures of replays and batches
        in that many worker threads (:mod:`slashing.signatures`).
        """
        if snapshot_interval < 1:
            raise ValueError(f"snapshot interval must be at least 1, got {snapshot_interval}")
        db = sqlite3.connect(path, isolation_level=None)
        pool = SignaturePool(signature_workers) if signature_workers > 0 else None
        try:
            (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() != "wal":
                raise LedgerCorrupt(f"{os.fspath(path)!r} cannot run in WAL mode (got {mode!r})")
            db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                db.execute(statement)
            start, length = _latest_snapshot(db)
            replay, touches = _replay(db, start, pool)
            if replay.seq != length:
                raise LedgerCorrupt(f"the log changed while it was opened ({length} rows)")
            if touches:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(_INSERT_TOUCH, touches)
                db.execute("COMMIT")
        except sqlite3.OperationalError:
            db.close()
            if pool is not None:
                pool.close()
            raise  # locked, unwritable, wrong schema: the operator's to fix, not corruption
        except sqlite3.DatabaseError as exc:
            db.close()
            if pool is not None:
                pool.close()
            raise LedgerCorrupt(f"{os.fspath(path)!r} is not a ledger database: {exc}") from exc
        except BaseException:
            db.close()
            if pool is not None:
                pool.close()
            raise
        return cls(db, replay, snapshot_interval, pool)

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

    def state_hash(self) -> bytes:
        """The hash of the current state (:func:`slashing.state.state_hash`)."""
        return state_hash(self._state)

    def append(self, event: Event) -> LogEntry:
        """Apply the rules to ``event`` and, only if they accept it, write it in one transaction.

        A refused event raises a :class:`ProtocolError` and changes nothing, in
        memory or on disk.
        """
        (result,) = self.append_batch([event])
        if isinstance(result, ProtocolError):
            raise result
        return result

    def append_batch(
        self, events: Sequence[Event], atomic: bool = False
    ) -> list[LogEntry | ProtocolError]:
        """Apply each event in turn and write every accepted one in a single transaction.

        Returns, for each event in order, its log entry or the error that
        refused it; a refused event changes nothing and later events see the
        state without it. ``atomic`` makes the batch all-or-nothing instead:
        the first refusal raises :class:`BatchRefused` and nothing is written.
        If the write itself fails, nothing of the batch is applied, in memory
        or on disk, and the exception propagates.
        """
        state = self._state
        results: list[LogEntry | ProtocolError] = []
        rows: list[tuple[int, bytes, bytes, bytes]] = []
        touches: list[tuple[bytes, int]] = []
        seq, head = self._seq, self._head
        batch = state.savepoint()
        groups = [events[i : i + PIPELINE_GROUP] for i in range(0, len(events), PIPELINE_GROUP)]
        try:
            for index in pipelined([_checks(group) for group in groups], self._pool):
                for event in groups[index]:
                    data = event.encode()
                    point = state.savepoint()
                    try:
                        if len(data) > c.MAX_EVENT_BYTES:
                            raise OversizedMessage(
                                f"{event.TYPE} event is {len(data)} bytes; "
                                f"the bound is {c.MAX_EVENT_BYTES}"
                            )
                        process_event(state, event)
                    except ProtocolError as exc:
                        state.rollback(point)
                        if atomic:
                            raise BatchRefused(len(results), event, exc) from exc
                        results.append(exc)
                        continue
                    changed = list(state.changed_accounts(point))
                    state.release(point)
                    entry = LogEntry(seq + 1, head, chain_hash(head, data), event)
                    seq, head = entry.seq, entry.hash
                    rows.append((entry.seq, entry.prev_hash, entry.hash, data))
                    touches += [(a, entry.seq) for a in _touched(event, changed)]
                    results.append(entry)
            if rows:
                self._write(rows, touches)
        except BaseException:
            state.rollback(batch)
            raise
        state.release(batch)
        self._seq, self._head = seq, head
        if self._seq - self._last_snapshot >= self._snapshot_interval:
            with contextlib.suppress(sqlite3.Error):
                # The batch is durable already; a snapshot that cannot be written now is
                # tried again after the next batch, and opening replays a little more.
                self.snapshot()
        return results

    def _write(
        self, rows: list[tuple[int, bytes, bytes, bytes]], touches: list[tuple[bytes, int]]
    ) -> None:
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
            self._db.executemany(_INSERT_EVENT, rows)
            self._db.executemany(_INSERT_TOUCH, touches)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def snapshot(self) -> None:
        """Write the current state as a snapshot and drop all but the newest few."""
        blob = encode_state(self._state)
        digest = sha256(c.STATE_HASH_TAG + blob)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO snapshots (seq, head_hash, state_hash, state) "
                "VALUES (?, ?, ?, ?)",
                (self._seq, self._head, digest, blob),
            )
            self._db.execute(
                "DELETE FROM snapshots WHERE seq NOT IN "
                "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
                (c.SNAPSHOTS_KEPT,),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._last_snapshot = self._seq

    def verify(self) -> int:
        """Replay the whole log from genesis, trusting no snapshot, and compare with memory.

        Checks every row's chain link and rule, every stored snapshot against
        the replayed state at its row, and the state in memory against the end
        of the replay. Returns the number of events; raises
        :class:`LedgerCorrupt` on any difference.
        """
        try:
            snapshots = {}
            for seq, digest, blob in self._db.execute(
                "SELECT seq, state_hash, state FROM snapshots"
            ):
                if sha256(c.STATE_HASH_TAG + blob) != digest:
                    raise LedgerCorrupt(f"the snapshot after row seq {seq} is damaged")
                snapshots[seq] = digest
            genesis = _Replay(State(), 0, c.GENESIS_PREV_HASH)
            replay, _ = _replay(self._db, genesis, self._pool, at_seq=snapshots)
        except sqlite3.DatabaseError as exc:
            raise LedgerCorrupt(f"the ledger database cannot be read: {exc}") from exc
        if (replay.seq, replay.head) != (self._seq, self._head):
            raise LedgerCorrupt(
                f"the log on disk has {replay.seq} events, the ledger in memory {self._seq}"
            )
        if unreached := [seq for seq in snapshots if seq > replay.seq]:
            raise LedgerCorrupt(f"snapshots after rows {unreached} are beyond the end of the log")
        if replay.state != self._state or state_hash(replay.state) != self.state_hash():
            raise LedgerCorrupt("the log on disk folds to a different state than the one in memory")
        return replay.seq

    def events(self, after: int = 0) -> Iterator[LogEntry]:
        """Every logged event after row ``after``, in order, each link checked as it is read."""
        head = c.GENESIS_PREV_HASH
        if after:
            row = self._db.execute("SELECT hash FROM events WHERE seq = ?", (after,)).fetchone()
            if row is None:
                raise LedgerCorrupt(f"row seq {after} is missing from the log on disk")
            head = row[0]
        for seq, row in enumerate(self._db.execute(_ROWS, (after,)), start=after + 1):
            digest, data = _link(row, seq, head)
            yield LogEntry(seq, head, digest, _decode(seq, data))
            head = digest

    def history(self, account: bytes) -> list[LogEntry]:
        """The events that name ``account`` or changed its balance or stake, in order."""
        rows = self._db.execute(
            "SELECT e.seq, e.prev_hash, e.hash, e.event FROM touches t "
            "JOIN events e ON e.seq = t.seq WHERE t.account = ? ORDER BY t.seq",
            (account,),
        ).fetchall()
        entries = []
        for seq, prev_hash, digest, data in rows:
            if digest != chain_hash(prev_hash, data):
                raise LedgerCorrupt(f"row seq {seq}: hash does not match its event bytes")
            entries.append(LogEntry(seq, prev_hash, digest, _decode(seq, data)))
        return entries

    def close(self) -> None:
        self._db.close()
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# -- JSON lines ----------------------------------------------------------------------------------


def export_jsonl(ledger: Ledger, out: IO[str]) -> int:
    """Write every row as one JSON object per line; returns the number of rows.

    Each line is ``{"seq", "prev_hash", "hash", "type", "event"}`` with the
    hashes and the canonical event bytes in hex, so an import can check the
    chain and replay the very bytes that were hashed.
    """
    count = 0
    for entry in ledger.events():
        line = {
            "seq": entry.seq,
            "prev_hash": entry.prev_hash.hex(),
            "hash": entry.hash.hex(),
            "type": entry.event.TYPE,
            "event": entry.event.encode().hex(),
        }
        out.write(json.dumps(line, sort_keys=True) + "\n")
        count += 1
    return count


def _parse_line(number: int, text: str) -> tuple[int, bytes, bytes, Event]:
    try:
        line = json.loads(text)
        seq, prev_hash = line["seq"], bytes.fromhex(line["prev_hash"])
        digest, data = bytes.fromhex(line["hash"]), bytes.fromhex(line["event"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedMessage(f"line {number}: not an exported ledger row: {exc}") from exc
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise MalformedMessage(f"line {number}: seq must be an integer")
    if digest != chain_hash(prev_hash, data):
        raise LedgerCorrupt(f"line {number} (seq {seq}): hash does not match its event bytes")
    try:
        return seq, prev_hash, digest, decode_event(data)
    except ProtocolError as exc:
        raise LedgerCorrupt(f"line {number} (seq {seq}): event does not decode: {exc}") from exc


def import_jsonl(ledger: Ledger, lines: Iterable[str], batch: int = 1_000) -> int:
    """Append an exported log to an empty ledger, checking every link and every rule.

    Raises :class:`LedgerCorrupt` when the lines do not chain or a rule refuses
    an event; the batches before the bad line are written by then, so import
    into a new file and discard it on error (``assay ledger import`` does).
    Returns the rows added.
    """
    if ledger.length:
        raise LedgerCorrupt(
            f"the ledger already holds {ledger.length} events; import into an empty one"
        )
    pending: list[tuple[int, bytes, bytes, Event]] = []
    head, seq = c.GENESIS_PREV_HASH, 0

    def flush() -> None:
        try:
            results = ledger.append_batch([event for _, _, _, event in pending], atomic=True)
        except BatchRefused as exc:
            line_seq = pending[exc.index][0]
            raise LedgerCorrupt(f"seq {line_seq}: the rules refuse its event: {exc.error}") from exc
        for (line_seq, _, digest, _), result in zip(pending, results, strict=True):
            assert isinstance(result, LogEntry)
            if result.hash != digest:
                raise LedgerCorrupt(f"seq {line_seq}: the imported row hashes differently")
        pending.clear()

    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        row = _parse_line(number, text)
        seq += 1
        if row[0] != seq or row[1] != head:
            raise LedgerCorrupt(f"line {number}: expected seq {seq} chained to the line before")
        head = row[2]
        pending.append(row)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return seq
