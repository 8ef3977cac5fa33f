"""Durable ledger throughput: single transactions, batches, and replay.

The workload is :mod:`slashing.workload`'s honest devnet — mostly
``RecordJob`` (a client's and a node's signature to check, a fee to escrow),
a VALID attestation on each sampled job (p = 0.2) and a beacon round per 50
jobs that settles the jobs whose window closed. Every number is durable: an
event counts once its transaction has committed with ``synchronous=FULL``.

* ``single_tx_per_s``: one ``Ledger.append`` per event (one fsync each);
* ``batched_tx_per_s``: ``Ledger.append_batch`` of ``--batch`` events, with
  signatures checked in ``--workers`` threads; the median of ``--repeat``
  runs on fresh files (``batched_tx_per_s_runs`` lists them all: thread
  scheduling on two cores moves a single run by ±15%);
* ``replay_events_per_s``: ``Ledger.verify``, which replays the whole log
  from genesis through the rules, signatures included, with the same workers;
  ``replay_events_per_s_one_process`` without them (every check in the
  applying thread).

    python bench/ledger.py [--quick] [--workers N] [--batch N]

The process tunes CPython's cyclic collector as ``assay ledger run`` does
(:func:`slashing.store.tune_gc_for_ledger`).

Prints a table and writes bench/results/ledger.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slashing import Ledger
from slashing.events import Event, RecordJob
from slashing.store import tune_gc_for_ledger
from slashing.workload import Workload, events

RESULTS = Path(__file__).resolve().parent / "results" / "ledger.json"
GENESIS_EVENTS = 2 + 4 + 2 * (4 + 5)
"""RegisterBeacon, SetParams, four client mints, a mint and a bond per node and validator."""


def _fresh(directory: Path, name: str, workers: int) -> Ledger:
    return Ledger.open(directory / name, signature_workers=workers)


def measure_single(stream: list[Event], count: int, directory: Path) -> float:
    with _fresh(directory, "single.db", 0) as ledger:
        ledger.append_batch(stream[:GENESIS_EVENTS])
        body = stream[GENESIS_EVENTS : GENESIS_EVENTS + count]
        started = time.perf_counter()
        for event in body:
            ledger.append(event)
        return len(body) / (time.perf_counter() - started)


def measure_batched(stream: list[Event], batch: int, workers: int, directory: Path) -> float:
    with _fresh(directory, "batched.db", workers) as ledger:
        started = time.perf_counter()
        for start in range(0, len(stream), batch):
            results = ledger.append_batch(stream[start : start + batch])
            refused = [r for r in results if isinstance(r, Exception)]
            if refused:
                raise RuntimeError(f"the workload was refused: {refused[0]}")
        return len(stream) / (time.perf_counter() - started)


def measure_replay(directory: Path, workers: int) -> tuple[float, int]:
    with Ledger.open(directory / "batched.db", signature_workers=workers) as ledger:
        started = time.perf_counter()
        count = ledger.verify()
        return count / (time.perf_counter() - started), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, under a minute")
    parser.add_argument("--workers", type=int, default=2, help="signature worker threads (2)")
    parser.add_argument("--batch", type=int, default=1_000, help="events per batch (1000)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="batched runs, each on a fresh file; the median is reported "
                        "(5, or 1 with --quick)")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 5)
    jobs, single = (2_000, 150) if args.quick else (20_000, 600)

    tune_gc_for_ledger()  # as `assay ledger run` does
    made = time.perf_counter()
    stream = list(events(Workload(jobs=jobs)))
    made = time.perf_counter() - made
    with tempfile.TemporaryDirectory(prefix="assay-bench-ledger-") as tmp:
        directory = Path(tmp)
        single_rate = measure_single(stream, single, directory)
        batched_runs = []
        for _ in range(repeat):
            (directory / "batched.db").unlink(missing_ok=True)
            for suffix in ("-wal", "-shm"):
                (directory / f"batched.db{suffix}").unlink(missing_ok=True)
            batched_runs.append(measure_batched(stream, args.batch, args.workers, directory))
        batched_rate = statistics.median(batched_runs)
        replay_rate, replayed = measure_replay(directory, args.workers)
        replay_one, _ = measure_replay(directory, 0)
    record_jobs = sum(isinstance(e, RecordJob) for e in stream)
    result: dict[str, object] = {
        "single_tx_per_s": round(single_rate, 1),
        "batched_tx_per_s": round(batched_rate, 1),
        "batched_tx_per_s_runs": [round(r, 1) for r in batched_runs],
        "replay_events_per_s": round(replay_rate, 1),
        "replay_events_per_s_one_process": round(replay_one, 1),
        "events": len(stream),
        "record_jobs": record_jobs,
        "single_events": single,
        "batch": args.batch,
        "signature_workers": args.workers,
        "replayed_events": replayed,
        "workload_seconds": round(made, 2),
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"{'measure':<34} {'value':>12}")
    for key in ("single_tx_per_s", "batched_tx_per_s", "replay_events_per_s",
                "replay_events_per_s_one_process"):
        print(f"{key:<34} {result[key]:>12}")
    print(f"{len(stream)} events ({record_jobs} RecordJob), batches of {args.batch}, "
          f"{args.workers} signature workers, {os.cpu_count()} CPUs, "
          f"load average {result['load_average_1m']}")
    print(f"batched runs (median reported): {result['batched_tx_per_s_runs']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
