"""Crash safety: SIGKILL the ledger process at random moments while a client streams events.

Each run starts the writer (``tests/ledger_crash_writer.py``) on a ledger file,
streams the rest of a fixed valid event stream to it in random-sized pieces,
records every acknowledgement, and kills the process with SIGKILL after a
random delay — during start-up and replay, mid-batch, mid-commit or
mid-snapshot (snapshots are taken every few dozen events to put them in
harm's way). After each kill the ledger is opened again and must hold every
acknowledged event at its acknowledged seq and hash, be a prefix of the
stream, verify its chain, and equal a fresh replay from genesis. A file is
continued across kills until the whole stream is in, then a new one starts.

The default suite runs a few kills; the ``slow`` test runs until 200 kills have landed mid-stream.
"""

from __future__ import annotations

import contextlib
import functools
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from slashing import Ledger, state_hash
from slashing.workload import Workload, events

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_INTERVAL = 40
MAX_KILL_DELAY_S = 0.9


@functools.cache
def stream() -> tuple[bytes, ...]:
    """The canonical bytes of a valid stream of about 1,500 events."""
    return tuple(e.encode() for e in events(Workload(jobs=1_200, jobs_per_round=40, seed=3)))


@dataclass
class CrashStats:
    runs: int = 0
    killed_before_ready: int = 0
    killed_while_streaming: int = 0
    finished_before_kill: int = 0
    acked: int = 0
    files: int = 0
    lengths_at_restart: list[int] = field(default_factory=list)


def _feed(process: subprocess.Popen[bytes], frames: tuple[bytes, ...], rng: random.Random) -> None:
    """Write the frames in random-sized pieces; stop quietly when the process dies."""
    assert process.stdin is not None
    i = 0
    try:
        while i < len(frames):
            n = rng.randint(1, 120)
            piece = b"".join(len(f).to_bytes(4, "big") + f for f in frames[i : i + n])
            process.stdin.write(piece)
            process.stdin.flush()
            i += n
            time.sleep(rng.random() * 0.004)
        process.stdin.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _one_run(path: Path, rng: random.Random, acked: dict[int, str], stats: CrashStats) -> int:
    """Start, stream, kill; return the log length the restarted writer reported (-1: none)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ledger_crash_writer", str(path), str(SNAPSHOT_INTERVAL)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    # A quarter of the runs may be killed while the writer opens and replays its log; the rest
    # are killed a random time after it is ready, however long starting took on a busy machine.
    killer = threading.Timer(rng.random() * MAX_KILL_DELAY_S, process.kill)
    early = rng.random() < 0.25
    if early:
        killer.start()
    assert process.stdout is not None
    ready = process.stdout.readline().decode()
    if not early:
        killer.start()
    feeder = None
    length = -1
    if ready.startswith("ready "):
        length = int(ready.split()[1])
        feeder = threading.Thread(target=_feed, args=(process, stream()[length:], rng))
        feeder.start()
        for line in process.stdout:
            kind, *rest = line.decode().split()
            assert kind == "ok", f"the writer refused a valid event: {line!r}"
            acked[int(rest[0])] = rest[1]
            stats.acked += 1
    else:
        stats.killed_before_ready += 1
    process.wait()
    killer.cancel()
    if length >= 0:
        if process.returncode == -signal.SIGKILL:
            stats.killed_while_streaming += 1
        else:
            stats.finished_before_kill += 1
    if feeder is not None:
        feeder.join()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None and not pipe.closed:
            with contextlib.suppress(BrokenPipeError):
                pipe.close()
    return length


def _check_after_crash(path: Path, acked: dict[int, str], checked: int) -> int:
    """Every acknowledged event is there, the log is a prefix of the stream, replay agrees."""
    with Ledger.open(path) as ledger:
        assert ledger.length <= len(stream())
        assert all(seq <= ledger.length for seq in acked), "an acknowledged event is missing"
        for entry in ledger.events(after=max(0, checked - 1)):
            assert entry.event.encode() == stream()[entry.seq - 1], f"row {entry.seq} differs"
            if entry.seq in acked:
                assert entry.hash.hex() == acked[entry.seq], f"row {entry.seq} hash differs"
        opened = state_hash(ledger.state)
        assert ledger.verify() == ledger.length  # replays from genesis, checks every snapshot
        assert ledger.state_hash() == opened
        return ledger.length


def crash_runs(tmp_path: Path, kills: int, seed: int, max_runs: int) -> CrashStats:
    """Run until `kills` runs were SIGKILLed mid-stream (at most `max_runs` runs in all)."""
    rng = random.Random(seed)
    stats = CrashStats()
    acked: dict[int, str] = {}
    path, checked = tmp_path / "ledger-0.db", 0
    while stats.killed_while_streaming < kills and stats.runs < max_runs:
        if checked == len(stream()):
            stats.files += 1
            path, acked, checked = tmp_path / f"ledger-{stats.files}.db", {}, 0
        reported = _one_run(path, rng, acked, stats)
        stats.runs += 1
        if reported >= 0:
            assert reported == checked, "the restarted writer sees another log than was checked"
            stats.lengths_at_restart.append(reported)
        checked = _check_after_crash(path, acked, checked)
    return stats


def test_killed_ledger_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    stats = crash_runs(tmp_path, kills=3, seed=1, max_runs=30)
    assert stats.killed_while_streaming == 3


@pytest.mark.slow
def test_two_hundred_kills(tmp_path: Path) -> None:
    # Counted are kills that land while the client streams; a kill before the
    # writer is ready, or a stream that ends first, is a run but not one of them.
    stats = crash_runs(tmp_path, kills=200, seed=2026, max_runs=600)
    print(
        f"\ncrash runs {stats.runs}: killed while streaming {stats.killed_while_streaming}, "
        f"killed before ready {stats.killed_before_ready}, stream finished before the kill "
        f"{stats.finished_before_kill}; events acknowledged {stats.acked}, "
        f"ledger files completed {stats.files}"
    )
    assert stats.killed_while_streaming == 200
