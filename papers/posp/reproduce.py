"""Reproduce Proof of Sampling (Zhang et al., arXiv 2405.00295) on the real ledger rules.

Three measurements, all with netsim's fast path (whose per-job decisions and
money equal the reference ledger rules, tests/test_netsim_equivalence.py),
each repeated over SEEDS independent seeds and reported as the mean with its
95 % Student-t interval over the seeds (netsim.intervals):

1. Sign change. PoSP: a node that skips the work saves C and, when caught
   with probability p(1−r), loses R and the slash S, so cheating pays exactly
   when C > p(1−r)(R+S). We run networks in which every node skips every job
   (q = 1, saving = 1) over a grid of R, S and r, measure the threshold
   C* = C − gain per cheated job, and read the sign of the gain at C = 0.5,
   0.9, 1.1 and 2 times p(1−r)(R+S). C changes no draw and no ledger
   decision, only the node's own accounting, so the gain at every C is
   C − C* of the same run; the script checks this on one cell. Our ledger
   also sends each accusation to a committee of k = 3; colluders who win a
   committee majority (probability κ) clear the cheat, and the honest
   accuser's false-accusation slash and forfeited bond pay the cheater the
   wronged node's share W, so the threshold we expect is p(1−r)(1−κ)(R+S) − p(1−r)κW
   (netsim.theory).
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
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))

from readme_results import publish  # noqa: E402

from netsim.config import resolve  # noqa: E402
from netsim.grid import Point, point_config, run_points  # noqa: E402
from netsim.intervals import INTERVAL, Estimate, estimate  # noqa: E402
from netsim.metrics import caught_within  # noqa: E402
from netsim.output import jsonable  # noqa: E402
from netsim.population import share_count  # noqa: E402
from netsim.simulation import run_tables  # noqa: E402
from slashing import LedgerParams  # noqa: E402
from slashing.service import safe_params  # noqa: E402

SEEDS = 10
P = 0.1
VALIDATORS = 20
COMMITTEE = 3
REWARDS = (50, 100, 200)
SLASHES = (2_000, 5_000, 10_000)
CASES = ((0.0, False), (0.1, False), (0.3, False), (0.3, True))
"""(r, validators never slashed out): the last case holds r fixed for the whole run."""
C_MULTIPLES = (0.5, 0.9, 1.1, 2.0)
JOBS = 20_000
DETECTION_NODES = 1_000
DETECTION_JOBS = 100_000
DETECTION_N = (1, 5, 10, 20, 50)
OVERHEAD_JOBS = 20_000
HUGE_BOND = 10**12
"""No cheater is ever slashed out, so every job is one more independent draw."""
NO_JAIL = {"jail_period": 0, "tombstone_offences": 255}
"""PoSP's game has no jail: a caught node keeps working. The ledger's defaults jail a
slashed role for 8 rounds and tombstone it at its 3rd offence; detection shows both."""


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


def interval(e: Estimate, digits: int = 1) -> dict[str, Any]:
    return {"mean": round(e.mean, digits), "low": round(e.low, digits),
            "high": round(e.high, digits), "seeds": e.n}


def shown(cell: dict[str, Any], digits: int = 1) -> str:
    """``mean [low, high]``, and ``spans 0`` when the interval leaves the sign open."""
    spans = ", spans 0" if cell["low"] < 0 < cell["high"] else ""
    return (f"{cell['mean']:.{digits}f} [{cell['low']:.{digits}f}, "
            f"{cell['high']:.{digits}f}]{spans}")


def verdict(gain: Estimate, cheating_pays: bool) -> str:
    """``agrees``/``disagrees`` when the interval settles the sign, else ``inconclusive``."""
    if gain.inconclusive:
        return "inconclusive"
    return "agrees" if (gain.mean > 0) == cheating_pays else "disagrees"


def sign_change(workers: int) -> dict[str, Any]:
    points, keys = [], []
    for reward in REWARDS:
        for slash in SLASHES:
            for r, fixed in CASES:
                threshold = P * (1 - r) * (reward + slash)
                bond = HUGE_BOND if fixed else 20_000
                overrides = {"R": reward, "slash": slash, "C": round(threshold, 3), "r": r,
                             "validators.bond": bond}
                points.append(Point(len(points), overrides))
                keys.append((reward, slash, r, fixed, threshold))
    tree = cheating_network(P, 0.0, jobs=JOBS, nodes=40, seed=1)
    rows = run_points(tree, points, SEEDS, workers)
    assert all(row["status"] == "ok" for row in rows), rows
    # C changes no draw: the threshold measured at 0.5× and 2× C is the same, seed by seed
    first = points[0].overrides
    same = [
        round(c - run_tables(point_config(tree, {**first, "C": c, "seed": 1 + s}))
              .summary["cheat_gain_per_cheated_job"], 6)
        for c in (0.5 * first["C"], 2 * first["C"]) for s in range(2)
    ]
    assert same[:2] == same[2:], same
    cells, tallies = [], {"posp": {}, "committee": {}}
    low_cells = low_agree = 0
    for index, (reward, slash, r, fixed, threshold) in enumerate(keys):
        mine = [row for row in rows if row["point"] == index]
        cost = points[index].overrides["C"]
        measured = [cost - row["cheat_gain_per_cheated_job"] for row in mine]
        # netsim.theory: C* = π(R+S) − ρW, with π = p(1−r)(1−κ) and ρW what captured
        # committees pay the cheater out of the slashed accuser's stake
        committee = cost - float(mine[0]["theory_cheat_gain_per_cheated_job"])
        for multiple in C_MULTIPLES:
            at = multiple * threshold
            gain = estimate(at - m for m in measured)
            for name, line in (("posp", threshold), ("committee", committee)):
                said = verdict(gain, at > line)
                tallies[name][said] = tallies[name].get(said, 0) + 1
            if r <= 0.1:
                low_cells += 1
                low_agree += verdict(gain, at > threshold) == "agrees"
        cells.append({
            "R": reward, "S": slash, "r": r, "fixed_validators": fixed,
            "posp_threshold": round(threshold, 3), "committee_threshold": round(committee, 3),
            "kappa": round(capture(r), 4),
            "measured_threshold": interval(estimate(measured)),
            "detection": interval(estimate(row["detection_per_cheated_job"] for row in mine), 5),
            "honest_validators_slashed_out": interval(
                estimate(row["honest_validators_slashed_out"] for row in mine)),
            "colluding_validators_slashed_out": interval(
                estimate(row["validators_slashed_out"] - row["honest_validators_slashed_out"]
                         for row in mine)),
            "gains": {str(m): interval(estimate(m * threshold - x for x in measured))
                      for m in C_MULTIPLES},
        })
    inside = sum(c["measured_threshold"]["low"] <= c["committee_threshold"]
                 <= c["measured_threshold"]["high"] for c in cells)
    return {"cells": cells, "points": len(cells) * len(C_MULTIPLES), "seeds": SEEDS,
            "inside": inside,
            "posp": tallies["posp"], "committee": tallies["committee"],
            "low_r_points": low_cells, "agrees_low_r": low_agree, "c_changes_no_draw": True}


def caught_shares(task: tuple[float, bool, bool, int]) -> list[float]:
    """One seed of a detection case: the share of nodes caught within each n of DETECTION_N.

    Kaplan–Meier, since a node jailed (ledger defaults) stops cheating before n."""
    r, fixed, defaults, seed = task
    config = resolve(cheating_network(0.05, r, jobs=DETECTION_JOBS, nodes=DETECTION_NODES,
                                      seed=seed, fixed_validators=fixed,
                                      ledger_defaults=defaults))
    nodes = run_tables(config).nodes
    curve = caught_within(nodes["cheats_to_detection"], nodes["cheated"], max(DETECTION_N))
    return [float(curve[n - 1]) for n in DETECTION_N]


def detection(workers: int) -> dict[str, Any]:
    p = 0.05
    cases = [*((r, f, False) for r, f in CASES), (0.1, False, True)]
    tasks = [(r, f, d, 2 + s) for r, f, d in cases for s in range(SEEDS)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        shares = list(pool.map(caught_shares, tasks))
    out = []
    for c, (r, fixed, defaults) in enumerate(cases):
        mine = shares[c * SEEDS:(c + 1) * SEEDS]
        per_job = p * (1 - r) * (1 - capture(r))
        for i, n in enumerate(DETECTION_N):
            out.append({
                "p": p, "r": r, "fixed_validators": fixed, "ledger_defaults": defaults, "n": n,
                "measured": interval(estimate(s[i] for s in mine), 4),
                "posp": round(1 - (1 - p * (1 - r)) ** n, 4),
                "committee": round(1 - (1 - per_job) ** n, 4),
            })
    return {"nodes": DETECTION_NODES, "jobs": DETECTION_JOBS, "seeds": SEEDS, "rows": out}


def fitted_slash(p: float, slash: int) -> int:
    """``slash``, or the nearest fraud slash every economic condition allows at ``p``."""
    ppm = round(p * 1_000_000)
    params = replace(LedgerParams.default(), sample_ppm=ppm, fraud_slash=slash)
    return safe_params(params).fraud_slash


def overhead(workers: int) -> dict[str, Any]:
    tree = {
        "seed": 3, "epochs": 10, "jobs": OVERHEAD_JOBS,
        "nodes": {"count": 100, "cost_spread": 0.2},
        "validators": {"count": VALIDATORS},
        "ledger": {"fraud_slash": 10_000},
    }
    ps = (0.01, 0.05, 0.1, 0.2, 1.0)
    # S = 10 000 where the stake-at-risk condition allows it (p·S·D within the minimum stake)
    points = [Point(i, {"p": p, "slash": fitted_slash(p, 10_000)}) for i, p in enumerate(ps)]
    rows = run_points(tree, points, SEEDS, workers)
    out = []
    for i, p in enumerate(ps):
        mine = [row for row in rows if row["point"] == i]
        out.append({
            "p": p, "predicted_pct": round(100 * p, 2),
            "measured_pct": interval(estimate(r["verification_overhead_pct"] for r in mine), 2),
            "fee_per_valid_job": interval(estimate(r["fee_per_valid_job"] for r in mine), 2),
        })
    return {"jobs": OVERHEAD_JOBS, "seeds": SEEDS, "rows": out}


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts.get(k, 0)} {k}" for k in ("agrees", "inconclusive", "disagrees"))


def markdown(results: dict[str, Any]) -> str:
    sign = results["sign_change"]
    lines = [
        f"Every figure is the mean over {SEEDS} seeds with its {INTERVAL} "
        "in brackets.",
        "",
        f"**1. Sign change** ({len(sign['cells'])} networks × {SEEDS} seeds: "
        f"R ∈ {list(REWARDS)}, S ∈ {list(SLASHES)}, "
        f"r ∈ {{0, 0.1, 0.3, 0.3 with validators never slashed out}}, p = {P}, "
        f"{JOBS:,} jobs each; the gain read at C ∈ {list(C_MULTIPLES)} × p(1−r)(R+S)).",
        "",
        f"- sign of the measured gain against PoSP's `C > p(1−r)(R+S)`, "
        f"{sign['points']} cells: **{_tally(sign['posp'])}** "
        f"(r ≤ 0.1: **{sign['agrees_low_r']}/{sign['low_r_points']}** agree)",
        f"- against our protocol's `C > p(1−r)(1−κ)(R+S) − p(1−r)κW`: "
        f"**{_tally(sign['committee'])}**",
        f"- our predicted C* inside the measured interval: **{sign['inside']}/"
        f"{len(sign['cells'])}** networks",
        "",
        "Threshold C* where the gain changes sign (measured = C − gain per cheated job):",
        "",
        "| R | S | r | PoSP p(1−r)(R+S) | ours p(1−r)((1−κ)(R+S) − κW) | measured C* | "
        "validators slashed out: honest, colluding |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in sign["cells"]:
        r = f"{cell['r']}" + (" (fixed)" if cell["fixed_validators"] else "")
        lines.append(
            f"| {cell['R']} | {cell['S']} | {r} | {cell['posp_threshold']:.1f} | "
            f"{cell['committee_threshold']:.1f} | {shown(cell['measured_threshold'])} | "
            f"{cell['honest_validators_slashed_out']['mean']:.1f}, "
            f"{cell['colluding_validators_slashed_out']['mean']:.1f} |"
        )
    detect = results["detection"]
    lines += [
        "",
        f"**2. Detection against cheated jobs** ({detect['nodes']:,} always-cheating nodes, "
        f"{detect['jobs']:,} jobs, p = 0.05, × {SEEDS} seeds): share caught within n "
        "cheated jobs.",
        "",
        "| r | n | PoSP 1−(1−p(1−r))ⁿ | with committee | measured |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in detect["rows"]:
        r = f"{row['r']}" + (" (fixed)" if row["fixed_validators"] else "") + (
            " (jail, tombstone)" if row["ledger_defaults"] else "")
        lines.append(f"| {r} | {row['n']} | {row['posp']:.4f} | {row['committee']:.4f} | "
                     f"{shown(row['measured'], 4)} |")
    lines += [
        "",
        f"**3. Verification overhead** (honest network, {results['overhead']['jobs']:,} jobs, "
        f"compute costs ±20 %, × {SEEDS} seeds):",
        "",
        "| p | expected (p × one re-execution) | measured | fee per valid job |",
        "|---:|---:|---:|---:|",
    ]
    for row in results["overhead"]["rows"]:
        lines.append(f"| {row['p']} | {row['predicted_pct']:.1f} % | "
                     f"{shown(row['measured_pct'], 2)} % | "
                     f"{shown(row['fee_per_valid_job'], 2)} |")
    return "\n".join(lines)


def figures(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caption = (f"Every node skips every job (q = 1, s = 1); {VALIDATORS} validators, committee "
               f"k = {COMMITTEE}, no jail\nmean over {SEEDS} seeds, bars: {INTERVAL}")
    cells = results["sign_change"]["cells"]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for r, fixed in CASES:
        mine = [c for c in cells if c["r"] == r and c["fixed_validators"] == fixed]
        xs, ys, lows, highs = [], [], [], []
        for c in mine:
            for m in C_MULTIPLES:
                gain = c["gains"][str(m)]
                xs.append(m)
                ys.append(gain["mean"] / c["posp_threshold"])
                lows.append((gain["mean"] - gain["low"]) / c["posp_threshold"])
                highs.append((gain["high"] - gain["mean"]) / c["posp_threshold"])
        name = f"r = {r}" + (" (validators fixed)" if fixed else "")
        drawn = ax.errorbar(xs, ys, yerr=[lows, highs], fmt="o", markersize=3, capsize=2,
                            label=f"measured, {name}")
        ratio = sum(c["committee_threshold"] / c["posp_threshold"] for c in mine) / len(mine)
        ax.plot([0.4, 2.1], [0.4 - ratio, 2.1 - ratio], ":", linewidth=1,
                color=drawn.lines[0].get_color(), label=f"ours (κ, W), {name}")
    ax.plot([0.4, 2.1], [-0.6, 1.1], "--", color="grey", linewidth=0.8,
            label="PoSP: gain = C − p(1−r)(R+S)")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(1, color="grey", linestyle=":", linewidth=0.8)
    ax.set(xlabel="C / p(1−r)(R+S)", ylabel="gain per cheated job / p(1−r)(R+S)",
           title="Does cheating pay exactly when C > p(1−r)(R+S)?")
    ax.legend(fontsize=7)
    fig.text(0.01, 0.01, f"p = {P}, R ∈ {list(REWARDS)}, S ∈ {list(SLASHES)}, {JOBS:,} jobs per "
             f"run\n{caption}", fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(HERE / "sign_change.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for r, fixed in CASES:
        rows = [x for x in results["detection"]["rows"]
                if x["r"] == r and x["fixed_validators"] == fixed and not x["ledger_defaults"]]
        name = f"r = {r}" + (" fixed" if fixed else "")
        n = [x["n"] for x in rows]
        every = list(range(1, max(DETECTION_N) + 1))
        per_job = 0.05 * (1 - r) * (1 - capture(r))
        line = ax.plot(every, [1 - (1 - per_job) ** k for k in every], "--",
                       label=f"1−(1−p(1−r)(1−κ))ⁿ, {name}")
        ax.errorbar(n, [x["measured"]["mean"] for x in rows],
                    yerr=[[x["measured"]["mean"] - x["measured"]["low"] for x in rows],
                          [x["measured"]["high"] - x["measured"]["mean"] for x in rows]],
                    fmt="o", color=line[0].get_color(), capsize=3, label=f"measured, {name}")
    ax.set(xlabel="cheated jobs n", ylabel="share of cheaters caught within n", ylim=(0, 1),
           title="How many cheated jobs until a cheater is caught?")
    ax.legend(fontsize=7)
    fig.text(0.01, 0.01, f"p = 0.05, {DETECTION_NODES:,} nodes, {DETECTION_JOBS:,} jobs per "
             f"run\n{caption}", fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(HERE / "detection.png", dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="fail unless README.md already shows these numbers")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = {"sign_change": sign_change(args.workers), "detection": detection(args.workers),
               "overhead": overhead(args.workers)}
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
