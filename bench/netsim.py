"""netsim at scale: 10,000 nodes and 1,000,000 jobs on the fast path.

Runs ``netsim/examples/bench.toml`` (10,000 nodes, 100 validators, 1,000,000
jobs over 100 epochs, p = 5 %, cheaters, an adaptive cheater, a colluding
group, lazy and griefing validators, churn) on the fast path, in one
process, and times it including the tables. Jobs carry their real message
ids (the fast path computes them from the canonical encoding without
building messages), so the run is the one the reference path would make. For scale, it also times
the reference path (real signed messages through the ledger rules) on a
small slice of the same network. ``--quick`` runs 1,000 nodes and 100,000
jobs.

    python bench/netsim.py [--quick]

Prints a table and writes bench/results/netsim.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netsim.config import load_config
from netsim.output import jsonable
from netsim.simulation import run_tables

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "netsim" / "examples" / "bench.toml"
RESULTS = ROOT / "bench" / "results" / "netsim.json"
TARGET_SECONDS = 60
"""10,000 nodes × 1,000,000 jobs on the fast path, tables included, on 2 cores."""
REFERENCE_SLICE = {"nodes.count": 100, "validators.count": 20, "jobs": 2_000, "epochs": 10}


def timed(overrides: dict[str, object]) -> tuple[float, dict[str, object]]:
    config = load_config(CONFIG, overrides)
    started = time.perf_counter()
    tables = run_tables(config)
    return time.perf_counter() - started, {
        "nodes": config.nodes,
        "validators": config.validators,
        "jobs": int(tables.summary["jobs"]),
        "epochs": config.epochs,
        "path": config.path,
        "summary": tables.summary,
        "warnings": list(tables.warnings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 nodes × 100,000 jobs")
    args = parser.parse_args()
    scale = {"nodes.count": 1_000, "jobs": 100_000} if args.quick else {}
    load_before = os.getloadavg()[0]
    seconds, fast = timed(scale)
    load_after = os.getloadavg()[0]
    ref_seconds, reference = timed({**REFERENCE_SLICE, "path": "reference"})
    result = {
        "benchmark": "netsim",
        "quick": args.quick,
        "path": "fast (numpy arrays, real message ids, one process)",
        "nodes": fast["nodes"],
        "validators": fast["validators"],
        "jobs": fast["jobs"],
        "epochs": fast["epochs"],
        "seconds": round(seconds, 3),
        "target_seconds": TARGET_SECONDS,
        "jobs_per_s": round(fast["jobs"] / seconds),
        "load_average_1m": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "reference_jobs": reference["jobs"],
        "reference_seconds": round(ref_seconds, 3),
        "reference_jobs_per_s": round(reference["jobs"] / ref_seconds),
        "summary": jsonable(fast["summary"]),
        "warnings": fast["warnings"],
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    print(f"{'path':<10} {'nodes':>7} {'jobs':>10} {'seconds':>9} {'jobs/s':>10}")
    print(f"{'fast':<10} {fast['nodes']:>7} {fast['jobs']:>10} {seconds:>9.2f} "
          f"{result['jobs_per_s']:>10}")
    print(f"{'reference':<10} {reference['nodes']:>7} {reference['jobs']:>10} "
          f"{ref_seconds:>9.2f} {result['reference_jobs_per_s']:>10}")
    verdict = "within" if seconds <= TARGET_SECONDS else "OVER"
    print(f"fast path {verdict} the {TARGET_SECONDS} s target; load average (1 min) "
          f"{load_before:.2f} before, {load_after:.2f} after")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
