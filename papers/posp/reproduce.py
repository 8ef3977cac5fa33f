"""Reproduce Proof of Sampling (Zhang et al., arXiv 2405.00295) on the real ledger rules.

Three measurements, all with netsim's fast path (whose per-job decisions and
money equal the reference ledger rules, tests/test_netsim_equivalence.py):

1. Sign change. PoSP: a node that skips the work saves C and, when caught
   with probability p(1−r), loses R and the slash S, so cheating pays exactly
   when C > p(1−r)(R+S). We run networks in which every node skips every job
   (q = 1, saving = 1) over a grid of R, S, r and C around that threshold and
   record the sign of the measured gain per cheated job. Our ledger also
   sends each accusation to a committee of k = 3; colluders who win a
   committee majority (probability κ) clear the cheat, so the threshold we
   expect is p(1−r)(1−κ)(R+S).
2. Detection against jobs: the share of always-cheating nodes caught within
   n cheated jobs, against 1 − (1 − p(1−r)(1−κ))ⁿ.
3. Verification overhead: validators' re-execution compute as a share of
   the inference compute, for p from 1 % to full replication (p = 1).

    python papers/posp/reproduce.py [--check]

writes papers/posp/results.json and the figures, and rewrites the results
section of papers/posp/README.md (``--check`` only verifies it is current).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))

from readme_results import publish  # noqa: E402

from netsim.config import resolve  # noqa: E402
from netsim.output import jsonable  # noqa: E402
from netsim.population import share_count  # noqa: E402
from netsim.run import run_tables  # noqa: E402
from netsim.sweep import Point, run_points  # noqa: E402

P = 0.1
VALIDATORS = 20
COMMITTEE = 3
REWARDS = (50, 100, 200)
SLASHES = (2_000, 5_000, 10_000)
CASES = ((0.0, False), (0.1, False), (0.3, False), (0.3, True))
"""(r, validators never slashed out): the last case holds r fixed for the whole run."""
C_MULTIPLES = (0.5, 0.9, 1.1, 2.0)
JOBS = 20_000
HUGE_BOND = 10**12
NO_JAIL = {"jail_period": 0, "tombstone_offences": 255}
"""PoSP's game has no jail: a caught node keeps working. The ledger's defaults jail a
slashed role for 8 rounds and tombstone it at its 3rd offence; detection shows both."""
"""No cheater is ever slashed out, so every job is one more independent draw."""


def cheating_network(
    p: float, r: float, jobs: int, nodes: int, seed: int, fixed_validators: bool = False,
    ledger_defaults: bool = False,
) -> dict[str, Any]:
    """Every node skips every job; a share r of validators covers for all of them.

    With ``fixed_validators`` validators are bonded so deep that false-accusation
    slashes never slash one out, so the colluding share stays r. Unless
    ``ledger_defaults``, jail and tombstones are off, as in PoSP's model.
    """
    return {
        "seed": seed,
        "epochs": 10,
        "jobs": jobs,
        "nodes": {
            "count": nodes,
            "bond": HUGE_BOND,
            "strategy": [{"kind": "colluding", "share": 1.0, "rate": 1.0, "saving": 1.0}],
        },
        "validators": {
            "count": VALIDATORS,
            "colluding": r,
            "bond": HUGE_BOND if fixed_validators else 20_000,
        },
        # The ledger refuses p(1-r)(R+S) <= C for its own estimate of C; setting that
        # estimate to 1 lets us run the unsafe side of the threshold on purpose.
        "ledger": {
            "sample_ppm": round(p * 1_000_000),
            "compute_cost": 1,
            "collusion_ppm": 0,
            "committee_size": COMMITTEE,
            **({} if ledger_defaults else NO_JAIL),
        },
    }


def capture(r: float, k: int = COMMITTEE, validators: int = VALIDATORS) -> float:
    """κ: chance that a committee of k, drawn from the validators other than an honest
    accuser, has a colluding majority (hypergeometric)."""
    colluders = share_count(r, validators)
    pool = validators - 1
    total = math.comb(pool, k)
    return sum(
        math.comb(colluders, j) * math.comb(pool - colluders, k - j)
        for j in range(k // 2 + 1, k + 1)
    ) / total


def sign_change(workers: int) -> dict[str, Any]:
    points, keys = [], []
    for reward in REWARDS:
        for slash in SLASHES:
            for r, fixed in CASES:
                threshold = P * (1 - r) * (reward + slash)
                bond = HUGE_BOND if fixed else 20_000
                for multiple in C_MULTIPLES:
                    overrides = {"R": reward, "slash": slash, "C": round(multiple * threshold, 3),
                                 "r": r, "validators.bond": bond}
                    points.append(Point(len(points), overrides, seed=1))
                    keys.append((reward, slash, r, fixed, multiple, threshold))
    tree = cheating_network(P, 0.0, jobs=JOBS, nodes=40, seed=1)
    rows = run_points(tree, points, workers)
    cells = []
    agree = agree_refined = 0
    for row, (reward, slash, r, fixed, multiple, threshold) in zip(rows, keys, strict=True):
        assert row["status"] == "ok", row
        gain = row["cheat_gain_per_cheated_job"]
        refined = threshold * (1 - capture(r))
        cost = row["C"]
        agree += (gain > 0) == (cost > threshold)
        agree_refined += (gain > 0) == (cost > refined)
        cells.append({
            "R": reward, "S": slash, "r": r, "fixed_validators": fixed, "C": cost,
            "C_over_posp_threshold": multiple,
            "posp_threshold": round(threshold, 3), "committee_threshold": round(refined, 3),
            "measured_threshold": round(cost - gain, 3), "gain_per_cheated_job": round(gain, 3),
            "detection": round(row["detection_per_cheated_job"], 5),
            "honest_false_slashes": row["honest_false_slashes"],
            "validators_slashed_out": row["validators_slashed_out"],
        })
    low = [c for c in cells if c["r"] <= 0.1]
    agrees_low = sum((c["gain_per_cheated_job"] > 0) == (c["C"] > c["posp_threshold"])
                     for c in low)
    return {"cells": cells, "points": len(cells), "sign_agrees_posp": agree,
            "sign_agrees_committee": agree_refined, "low_r_points": len(low),
            "agrees_low_r": agrees_low}


def detection() -> dict[str, Any]:
    out = []
    p = 0.05
    for r, fixed, defaults in (*((r, f, False) for r, f in CASES), (0.1, False, True)):
        config = resolve(cheating_network(p, r, jobs=300_000, nodes=2_000, seed=2,
                                          fixed_validators=fixed, ledger_defaults=defaults))
        nodes = run_tables(config).nodes
        caught_at = nodes["cheats_to_detection"]
        per_job = p * (1 - r) * (1 - capture(r))
        for n in (1, 5, 10, 20, 50):
            measured = float(((caught_at > 0) & (caught_at <= n)).mean())
            out.append({
                "p": p, "r": r, "fixed_validators": fixed, "ledger_defaults": defaults, "n": n,
                "measured": round(measured, 4),
                "posp": round(1 - (1 - p * (1 - r)) ** n, 4),
                "committee": round(1 - (1 - per_job) ** n, 4),
            })
    return {"nodes": 2_000, "rows": out}


def overhead() -> dict[str, Any]:
    rows = []
    for p in (0.01, 0.05, 0.1, 0.2, 1.0):
        tree = {
            "seed": 3, "epochs": 10, "jobs": 50_000,
            "nodes": {"count": 100, "cost_spread": 0.2},
            "validators": {"count": VALIDATORS},
            "ledger": {"sample_ppm": round(p * 1_000_000), "fraud_slash": 10_000},
        }
        summary = run_tables(resolve(tree)).summary
        rows.append({
            "p": p, "predicted_pct": round(100 * p, 2),
            "measured_pct": round(summary["verification_overhead_pct"], 2),
            "fee_per_valid_job": round(summary["fee_per_valid_job"], 2),
        })
    return {"rows": rows}


def markdown(results: dict[str, Any]) -> str:
    sign = results["sign_change"]
    lines = [
        f"**1. Sign change** ({sign['points']} runs: R ∈ {list(REWARDS)}, S ∈ {list(SLASHES)}, "
        f"r ∈ {{0, 0.1, 0.3, 0.3 with validators never slashed out}}, "
        f"C ∈ {list(C_MULTIPLES)} × p(1−r)(R+S), p = {P}, {JOBS:,} jobs each).",
        "",
        f"- sign of the measured gain agrees with PoSP's `C > p(1−r)(R+S)`: "
        f"**{sign['sign_agrees_posp']}/{sign['points']}** "
        f"(r ≤ 0.1: **{sign['agrees_low_r']}/{sign['low_r_points']}**)",
        f"- agrees with the committee-corrected `C > p(1−r)(1−κ)(R+S)`: "
        f"**{sign['sign_agrees_committee']}/{sign['points']}**",
        "",
        "Threshold C* where the gain changes sign (measured = C − gain, one row per R, S, r):",
        "",
        "| R | S | r | PoSP p(1−r)(R+S) | with committee (1−κ) | measured | "
        "honest validators slashed out |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in sign["cells"]:
        if cell["C_over_posp_threshold"] == C_MULTIPLES[0]:
            r = f"{cell['r']}" + (" (fixed)" if cell["fixed_validators"] else "")
            lines.append(
                f"| {cell['R']} | {cell['S']} | {r} | {cell['posp_threshold']:.1f} | "
                f"{cell['committee_threshold']:.1f} | {cell['measured_threshold']:.1f} | "
                f"{cell['validators_slashed_out']} |"
            )
    lines += [
        "",
        f"**2. Detection against cheated jobs** ({results['detection']['nodes']} always-cheating "
        "nodes, p = 0.05): share caught within n cheated jobs.",
        "",
        "| r | n | PoSP 1−(1−p(1−r))ⁿ | with committee | measured |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in results["detection"]["rows"]:
        r = f"{row['r']}" + (" (fixed)" if row["fixed_validators"] else "") + (
            " (jail, tombstone)" if row["ledger_defaults"] else "")
        lines.append(f"| {r} | {row['n']} | {row['posp']:.4f} | {row['committee']:.4f} | "
                     f"{row['measured']:.4f} |")
    lines += [
        "",
        "**3. Verification overhead** (honest network, 50,000 jobs, compute costs ±20 %):",
        "",
        "| p | expected (p × one re-execution) | measured | fee per valid job |",
        "|---:|---:|---:|---:|",
    ]
    for row in results["overhead"]["rows"]:
        lines.append(f"| {row['p']} | {row['predicted_pct']:.1f} % | {row['measured_pct']:.2f} % "
                     f"| {row['fee_per_valid_job']:.2f} |")
    return "\n".join(lines)


def figures(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = results["sign_change"]["cells"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r, fixed in CASES:
        mine = [c for c in cells if c["r"] == r and c["fixed_validators"] == fixed]
        ax.scatter([c["C"] / c["posp_threshold"] for c in mine],
                   [c["gain_per_cheated_job"] / c["posp_threshold"] for c in mine],
                   label=f"r = {r}" + (" (fixed)" if fixed else ""), s=16)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.axvline(1, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="C / p(1−r)(R+S)", ylabel="gain per cheated job / p(1−r)(R+S)",
           title="Gain from cheating around the PoSP threshold")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "sign_change.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r, fixed in CASES:
        rows = [x for x in results["detection"]["rows"]
                if x["r"] == r and x["fixed_validators"] == fixed and not x["ledger_defaults"]]
        name = f"r={r}" + (" fixed" if fixed else "")
        line = ax.plot([x["n"] for x in rows], [x["committee"] for x in rows], "-",
                       label=f"1−(1−p(1−r)(1−κ))ⁿ, {name}")
        ax.plot([x["n"] for x in rows], [x["measured"] for x in rows], "o",
                color=line[0].get_color(), label=f"measured, {name}")
    ax.set(xlabel="cheated jobs n", ylabel="share caught", title="Detection against jobs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "detection.png", dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="fail unless README.md already shows these numbers")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = {"sign_change": sign_change(args.workers), "detection": detection(),
               "overhead": overhead()}
    text = markdown(results)
    print(text)
    if not publish(HERE / "README.md", text, check=args.check):
        print("README.md results differ from this run", file=sys.stderr)
        return 1
    if not args.check:
        (HERE / "results.json").write_text(json.dumps(jsonable(results), indent=1) + "\n")
        figures(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
