"""Reproduce Pocket Network's probabilistic-proof numbers on the real ledger rules.

Pocket Network asks for an on-chain proof of a claim only with probability
p (ProofRequestProbability); a supplier that fabricated the work cannot
prove it and is slashed. Two published results:

1. Probabilistic Proofs (Morse), Olshansky and Rodríguez Colmeiro, 2023:
   with p = 0.25 an attacker that fabricates every claim is caught within
   k = 16 claims with probability Pr(X ≤ k) = 1 − (1 − p)^k = 0.99.
2. Probabilistic Proofs (Shannon): fabrication is unprofitable when the
   penalty is at least R(1 − p)/p; with p = 0.01 and claims worth R = 20 POKT
   this is the 2,000 POKT penalty they propose (exactly 1,980).

In Assay terms a fabricated job is a cheated job that costs nothing (C = 0,
saving = 1): it earns R when unsampled and loses S (and R) when sampled.
Our ledger's ``SetParams`` rule enforces the same bound (DESIGN decision 6),
so below it the network refuses to start; we record that, and measure the
fabricator's profit at and above the bound, where it is linear in S for a
fixed sequence of audits, so the measured break-even S is where that line
crosses zero.

    python papers/pocket/reproduce.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))

from readme_results import publish  # noqa: E402

from netsim.config import resolve  # noqa: E402
from netsim.genesis import ParamsRefused, check_params  # noqa: E402
from netsim.output import jsonable  # noqa: E402
from netsim.run import run_tables  # noqa: E402

HUGE_BOND = 10**12


def fabricators(p: float, reward: int, slash: int, nodes: int, jobs: int) -> dict[str, Any]:
    """Every node fabricates every job; no compute cost, so the ledger's C estimate is 0."""
    return {
        "seed": 4,
        "epochs": 10,
        "jobs": jobs,
        "nodes": {
            "count": nodes,
            "bond": HUGE_BOND,
            "cost": 0.0,
            "strategy": [{"kind": "cheater", "share": 1.0, "rate": 1.0, "saving": 1.0}],
        },
        "validators": {"count": 10},
        "ledger": {
            "sample_ppm": round(p * 1_000_000),
            "reward": reward,
            "fraud_slash": slash,
            "compute_cost": 0,
            "collusion_ppm": 0,
            # Pocket keeps a slashed supplier in service; our default jail would not
            "jail_period": 0,
            "tombstone_offences": 255,
        },
    }


def caught_within() -> list[dict[str, Any]]:
    rows = []
    for p, k in ((0.25, 16), (0.01, 459)):
        jobs_per_node = 2 * k + 100
        nodes = 2_000
        config = resolve(fabricators(p, 20, 5_000 if p > 0.1 else 2_000, nodes,
                                     nodes * jobs_per_node))
        caught_at = run_tables(config).nodes["cheats_to_detection"]
        rows.append({
            "p": p, "k": k, "claimed": round(1 - (1 - p) ** k, 4),
            "measured": round(float(((caught_at > 0) & (caught_at <= k)).mean()), 4),
            "nodes": nodes,
        })
    return rows


def break_even() -> dict[str, Any]:
    p, reward = 0.01, 20
    bound = reward * (1 - p) / p
    admitted = {}
    for slash in (1_979, 1_980):
        try:
            check_params(resolve(fabricators(p, reward, slash, 1, 0)))
            admitted[str(slash)] = "accepted"
        except ParamsRefused:
            admitted[str(slash)] = "refused"
    points = []
    for slash in (1_980, 3_000, 5_000):
        tables = run_tables(resolve(fabricators(p, reward, slash, 100, 1_000_000)))
        fabricated = tables.summary["cheated"]
        points.append({
            "S": slash,
            "expected": round((1 - p) * reward - p * slash, 3),
            "measured": round(tables.summary["cheater_profit"] / fabricated, 3),
            "detection": round(tables.summary["detection_per_cheated_job"], 6),
        })
    # profit(S) = (1 − d)R − dS is a line in S; its zero is the measured break-even penalty
    (s0, y0), (s1, y1) = ((q["S"], q["measured"]) for q in (points[0], points[-1]))
    measured_bound = s0 - y0 * (s1 - s0) / (y1 - y0)
    return {"p": p, "R": reward, "bound": bound, "measured_bound": round(measured_bound, 1),
            "ledger": admitted, "points": points}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "**1. Caught within k fabricated claims** (2,000 nodes fabricating every job):",
        "",
        "| p | k | published Pr(X ≤ k) | measured |",
        "|---:|---:|---:|---:|",
    ]
    for row in results["caught_within"]:
        lines.append(f"| {row['p']} | {row['k']} | {row['claimed']:.4f} | {row['measured']:.4f} |")
    even = results["break_even"]
    lines += [
        "",
        f"**2. Break-even penalty** (p = {even['p']}, R = {even['R']}, 100 nodes, "
        "1,000,000 fabricated jobs per run):",
        "",
        f"- published: S = R(1−p)/p = **{even['bound']:.0f}** (proposed: 2,000 POKT)",
        f"- measured: fabrication profit crosses zero at S = **{even['measured_bound']:.0f}**",
        f"- our ledger's SetParams: S = 1,979 {even['ledger']['1979']}, "
        f"S = 1,980 {even['ledger']['1980']}",
        "",
        "| S | expected profit per fabricated job (1−p)R − pS | measured | detection |",
        "|---:|---:|---:|---:|",
    ]
    for q in even["points"]:
        lines.append(f"| {q['S']} | {q['expected']:.3f} | {q['measured']:.3f} | "
                     f"{q['detection']:.6f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="fail unless README.md already shows these numbers")
    args = parser.parse_args()
    results = {"caught_within": caught_within(), "break_even": break_even()}
    text = markdown(results)
    print(text)
    if not publish(HERE / "README.md", text, check=args.check):
        print("README.md results differ from this run", file=sys.stderr)
        return 1
    if not args.check:
        (HERE / "results.json").write_text(json.dumps(jsonable(results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
