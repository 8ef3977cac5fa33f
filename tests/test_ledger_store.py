"""The ledger's store: batches, snapshots, parallel signature checks, JSON lines, history."""

from __future__ import annotations

import dataclasses
import enum
import io
import sqlite3
from pathlib import Path

import pytest

from protocol import codec
from protocol.errors import BadSignature, ProtocolError
from slashing import constants as c
from slashing import store
from slashing.events import Event, Mint, RecordJob, decode_event
from slashing.rules import LedgerRuleError
from slashing.state import State, encode_state, state_hash
from slashing.store import BatchRefused, Ledger, LedgerCorrupt, export_jsonl, import_jsonl
from slashing.workload import Workload, events
from tests.test_ledger import CLIENT, STRANGER, commit, forge, pk, record, request, scenario

WORKLOAD = Workload(jobs=240, jobs_per_round=20, seed=9)


def stream() -> list[Event]:
    return list(events(WORKLOAD))


def fold(evs: list[Event]) -> State:
    state = State()
    for event in evs:
        store.process_event(state, event)
    return state


def test_a_batch_accepts_and_refuses_event_by_event(tmp_path: Path) -> None:
    evs = stream()
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.append_batch(evs[:30])
        bad = Mint(pk(STRANGER), c.MAX_SUPPLY)
        results = ledger.append_batch([evs[30], bad, evs[31], evs[30]])
        assert [type(r).__name__ for r in results] == [
            "LogEntry", "AmountOutOfRange", "LogEntry", "ReplayedMessage"]
        assert ledger.length == 32
        assert ledger.state == fold(evs[:32])
        assert [e.event for e in ledger.events()] == evs[:32]


def test_an_atomic_batch_writes_nothing_when_one_event_is_refused(tmp_path: Path) -> None:
    evs = stream()
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.append_batch(evs[:30])
        state, length = ledger.state, ledger.length
        with pytest.raises(BatchRefused, match="event 1 of the batch") as refused:
            ledger.append_batch([evs[30], Mint(pk(STRANGER), c.MAX_SUPPLY), evs[31]],
                                atomic=True)
        assert isinstance(refused.value.error, LedgerRuleError)
        assert ledger.state == state and ledger.length == length
        assert ledger.verify() == length


def test_a_failed_write_undoes_the_whole_batch_in_memory(tmp_path: Path) -> None:
    evs = stream()
    path = tmp_path / "l.db"
    with Ledger.open(path) as first:
        first.append_batch(evs[:30])
        with Ledger.open(path) as second:
            second.append(evs[30])
        state = first.state
        with pytest.raises(LedgerCorrupt, match="another process wrote to it"):
            first.append_batch(evs[30:40])
        assert first.state == state and first.length == 30


def test_opening_replays_only_from_the_newest_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evs = stream()
    path = tmp_path / "l.db"
    with Ledger.open(path, snapshot_interval=50) as ledger:
        for start in range(0, len(evs), 7):
            ledger.append_batch(evs[start : start + 7])
        final, digest = ledger.state, ledger.state_hash()
    db = sqlite3.connect(path)
    seqs = [seq for (seq,) in db.execute("SELECT seq FROM snapshots ORDER BY seq")]
    db.close()
    assert len(seqs) == c.SNAPSHOTS_KEPT and seqs[-1] >= len(evs) - 56
    applied: list[Event] = []
    original = store.process_event

    def counting(state: State, event: Event) -> None:
        applied.append(event)
        original(state, event)

    monkeypatch.setattr(store, "process_event", counting)
    with Ledger.open(path) as reopened:
        assert reopened.state == final and reopened.state_hash() == digest
        assert len(applied) == len(evs) - seqs[-1]
        applied.clear()
        assert reopened.verify() == len(evs)
        assert len(applied) == len(evs)  # verify trusts no snapshot


def _snapshot_rows(path: Path) -> list[tuple[int, bytes, bytes]]:
    db = sqlite3.connect(path)
    rows = db.execute("SELECT seq, state_hash, state FROM snapshots ORDER BY seq").fetchall()
    db.close()
    return rows


def test_a_damaged_snapshot_is_passed_over_on_opening_and_named_by_verify(tmp_path: Path) -> None:
    evs = stream()
    path = tmp_path / "l.db"
    with Ledger.open(path, snapshot_interval=100) as ledger:
        ledger.append_batch(evs)
        final = ledger.state
    seq, _, blob = _snapshot_rows(path)[-1]
    db = sqlite3.connect(path)
    db.execute("UPDATE snapshots SET state = ? WHERE seq = ?", (blob[:-1] + b"\x00", seq))
    db.commit()
    db.close()
    with Ledger.open(path) as reopened:
        assert reopened.state == final
        with pytest.raises(LedgerCorrupt, match=f"snapshot after row seq {seq} is damaged"):
            reopened.verify()


def test_a_forged_snapshot_with_a_consistent_hash_is_caught_by_verify(tmp_path: Path) -> None:
    evs = stream()
    path = tmp_path / "l.db"
    with Ledger.open(path, snapshot_interval=len(evs)) as ledger:
        ledger.append_batch(evs)
    seq, _, _ = _snapshot_rows(path)[-1]
    forged = fold(evs)
    store.process_event(forged, Mint(pk(STRANGER), 1_000_000))
    from slashing.state import encode_state

    blob = encode_state(forged)
    db = sqlite3.connect(path)
    db.execute("UPDATE snapshots SET state = ?, state_hash = ? WHERE seq = ?",
               (blob, state_hash(forged), seq))
    db.commit()
    db.close()
    with Ledger.open(path) as reopened:  # opening trusts a snapshot that checks out ...
        assert pk(STRANGER) in reopened.state.accounts
        with pytest.raises(LedgerCorrupt, match=f"snapshot after row seq {seq} differs"):
            reopened.verify()  # ... verify does not


def test_parallel_signature_checks_agree_with_the_rules(tmp_path: Path) -> None:
    evs = stream()
    req = dataclasses.replace(request(9_999), chain_id=fold(evs[:2]).chain_id or b"")
    forged = record(req, forge(commit(req), CLIENT))
    with Ledger.open(tmp_path / "a.db", signature_workers=2) as pooled, \
            Ledger.open(tmp_path / "b.db") as plain:
        for ledger in (pooled, plain):
            results = ledger.append_batch([*evs, forged])
            assert isinstance(results[-1], BadSignature)
            assert all(not isinstance(r, ProtocolError) for r in results[:-1])
        assert pooled.state_hash() == plain.state_hash()
        assert pooled.verify() == plain.verify() == len(evs)


def test_export_and_import_rebuild_the_same_ledger(tmp_path: Path) -> None:
    evs = stream()
    with Ledger.open(tmp_path / "a.db") as ledger:
        ledger.append_batch(evs)
        out = io.StringIO()
        assert export_jsonl(ledger, out) == len(evs)
        head, digest = ledger.head_hash, ledger.state_hash()
    lines = out.getvalue().splitlines()
    with Ledger.open(tmp_path / "b.db") as copy:
        assert import_jsonl(copy, lines, batch=64) == len(evs)
        assert (copy.head_hash, copy.state_hash()) == (head, digest)
        with pytest.raises(LedgerCorrupt, match="import into an empty one"):
            import_jsonl(copy, lines)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda lines: [lines[0].replace('"seq": 1', '"seq": 2'), *lines[1:]], "expected seq 1"),
        (lambda lines: [lines[1], lines[0], *lines[2:]], "expected seq 1"),
        (lambda lines: [*lines[:5], lines[5].replace('"event": "8', '"event": "9'),
                        *lines[6:]], "hash does not match"),
    ],
    ids=["renumbered", "reordered", "tampered"],
)
def test_a_bad_export_is_refused(tmp_path: Path, change: object, match: str) -> None:
    evs = stream()[:20]
    with Ledger.open(tmp_path / "a.db") as ledger:
        ledger.append_batch(evs)
        out = io.StringIO()
        export_jsonl(ledger, out)
    assert callable(change)
    with Ledger.open(tmp_path / "b.db") as copy, pytest.raises(LedgerCorrupt, match=match):
        import_jsonl(copy, change(out.getvalue().splitlines()))


def test_history_survives_snapshots_and_reopening(tmp_path: Path) -> None:
    evs = stream()
    path = tmp_path / "l.db"
    client = WORKLOAD.key("client", 0).public.raw
    with Ledger.open(path, snapshot_interval=40) as ledger:
        ledger.append_batch(evs)
        history = [e.seq for e in ledger.history(client)]
    with Ledger.open(path) as reopened:
        assert [e.seq for e in reopened.history(client)] == history
    jobs = [e for e in evs if isinstance(e, RecordJob) and e.request_message.client == client]
    assert len(history) >= len(jobs) + 1  # its mint, its jobs, and the settlements that paid it


def test_a_decoded_event_keeps_its_bytes() -> None:
    event = stream()[-1]
    data = event.encode()
    assert decode_event(data).encode() == data


def _plain_value(value: object) -> object:
    """The state's canonical value space, walked the plain way: the reference for snapshots."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return [[_plain_value(k), _plain_value(v)] for k, v in sorted(value.items())]
    if isinstance(value, (set, frozenset)):
        return [_plain_value(v) for v in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    return value


@pytest.mark.parametrize("case", ["workload", "disputes", "beyond_int64"])
def test_the_snapshot_encoding_is_the_plain_walk_of_the_state(case: str) -> None:
    """The fast encoder of snapshots and state hashes writes exactly the reference bytes.

    An amount past int64 (a valid uint64) takes codec's own path; same bytes.
    """
    evs = scenario() if case == "disputes" else stream()
    if case == "beyond_int64":
        evs = [*evs, Mint(pk(STRANGER), 2**63 + 5)]
    state = fold(evs)
    assert state.jobs and bool(state.disputes) == (case == "disputes")
    assert encode_state(state) == codec.encode(_plain_value(state))


def test_the_snapshot_encoding_follows_the_state_as_it_changes() -> None:
    """Records unchanged since the last encoding are reused; changed ones, and counters, are not."""
    evs = stream()
    state = State()
    for start in range(0, len(evs), 50):
        for event in evs[start : start + 50]:
            store.process_event(state, event)
        assert encode_state(state) == codec.encode(_plain_value(state))
        copy = state.copy()  # shares every record with the state
        assert encode_state(copy) == encode_state(state)
