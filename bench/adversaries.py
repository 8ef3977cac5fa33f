"""What each attack of the ledger review earns, over colluding shares and sampling rates.

Every attack of :mod:`netsim.attacks` (shield, grinding, burst, lazy, silent,
replay) is played on the real ledger rules with real signed messages against
its honest counterfactual, for each colluding share r ∈ {0.05, 0.1, 0.2, 0.33}
and sampling rate p ∈ {0.01, 0.05, 0.2}, 30 validators, the defaults
otherwise (S fitted to p as a genesis would: 9 900 at p = 0.01). For each
attack the result holds ``attacker_profit`` (per attacked job, at the default
r = 0.1 and p = 0.05; negative: the attack loses), ``honest_slashed`` (honest
nodes and validators the attack made lose stake to an offence, over the
points r ≤ 0.1 at p = 0.05), ``unprofitable_up_to_r`` (the largest r below
which every r swept loses, at each p) and every point.

    python bench/adversaries.py [--quick] [--workers N]

``--quick`` plays 20 rounds and one seed (under a minute on two cores);
the full run 40 rounds and three seeds (about four minutes). Prints a table and writes
bench/results/adversaries.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netsim.attacks import (
    ATTACKS,
    LAZY_SAMPLED,
    RATES_PPM,
    SHARES,
    VALIDATORS,
    AttackResult,
    AttackSpec,
    run_attack,
    run_lazy,
)
from slashing import LedgerParams

RESULTS = Path(__file__).resolve().parent / "results" / "adversaries.json"
DEFAULT_SHARE = 0.1
DEFAULT_RATE = LedgerParams.default().sample_ppm


def play(spec: AttackSpec, lazy_sampled: int) -> AttackResult:
    if spec.attack == "lazy":
        return run_lazy(spec, lazy_sampled)
    return run_attack(spec)


def merge(runs: list[AttackResult]) -> AttackResult:
    """One point over its seeds: profits weighted by what each seed attacked."""
    weights = [max(r.attacked, 1) for r in runs]
    profit = sum(r.attacker_profit * w for r, w in zip(runs, weights, strict=True))
    keys = sorted({k for r in runs for k in r.details})
    return dataclasses.replace(
        runs[0],
        attacked=sum(r.attacked for r in runs),
        attacker_profit=profit / sum(weights),
        honest_slashed=sum(r.honest_slashed for r in runs),
        details={k: sum(r.details.get(k, 0.0) for r in runs) for k in keys},
    )


def unprofitable_up_to(points: list[AttackResult], rate: int) -> float | None:
    """The largest r swept such that the attack loses at it and at every smaller r."""
    best = None
    for point in sorted((p for p in points if p.sample_ppm == rate), key=lambda p: p.colluding):
        if point.attacked == 0:
            continue  # nothing was attacked at this point: no evidence either way
        if point.attacker_profit > 0 or (point.attack != "replay" and point.attacker_profit == 0):
            break
        best = point.colluding
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 rounds, one seed")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes playing points side by side")
    args = parser.parse_args()
    rounds, seeds = (20, 1) if args.quick else (40, 3)
    lazy_sampled = LAZY_SAMPLED // 2 if args.quick else LAZY_SAMPLED
    specs = [AttackSpec(attack, share, rate, rounds, seed)
             for attack in ATTACKS for share in SHARES for rate in RATES_PPM
             for seed in range(seeds)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        played = list(pool.map(play, specs, [lazy_sampled] * len(specs)))
    seconds = time.perf_counter() - started
    points: dict[tuple[str, float, int], list[AttackResult]] = {}
    for result in played:
        points.setdefault((result.attack, result.colluding, result.sample_ppm), []).append(result)
    merged = {key: merge(runs) for key, runs in points.items()}

    attacks: dict[str, object] = {}
    for attack in ATTACKS:
        mine = [p for (a, _, _), p in merged.items() if a == attack]
        default = merged[(attack, DEFAULT_SHARE, DEFAULT_RATE)]
        attacks[attack] = {
            "attacker_profit": round(default.attacker_profit, 2),
            "honest_slashed": sum(p.honest_slashed for p in mine
                                  if p.colluding <= DEFAULT_SHARE
                                  and p.sample_ppm == DEFAULT_RATE),
            "unprofitable_up_to_r": unprofitable_up_to(mine, DEFAULT_RATE),
            "unprofitable_up_to_r_by_p": {
                str(rate / 1_000_000): unprofitable_up_to(mine, rate) for rate in RATES_PPM
            },
            "points": [
                {"r": p.colluding, "p": p.sample_ppm / 1_000_000, "attacked": p.attacked,
                 "attacker_profit": round(p.attacker_profit, 2),
                 "honest_slashed": p.honest_slashed,
                 "details": {k: round(v, 2) for k, v in sorted(p.details.items())}}
                for p in sorted(mine, key=lambda p: (p.sample_ppm, p.colluding))
            ],
        }
    result: dict[str, object] = {
        "attacks": attacks,
        "shares": list(SHARES),
        "sample_rates": [r / 1_000_000 for r in RATES_PPM],
        "default_r": DEFAULT_SHARE,
        "default_p": DEFAULT_RATE / 1_000_000,
        "validators": VALIDATORS,
        "rounds": rounds,
        "seeds": seeds,
        "lazy_sampled_jobs": lazy_sampled,
        "quick": args.quick,
        "seconds": round(seconds, 1),
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"attacker profit per attacked unit at p = {DEFAULT_RATE / 1_000_000:g} "
          "(negative: the attack loses), by colluding share r")
    print(f"{'attack':<10}" + "".join(f"{'r=' + format(s, 'g'):>12}" for s in SHARES)
          + f"{'honest slashed':>16}{'loses up to r':>15}")
    for attack in ATTACKS:
        row = attacks[attack]
        assert isinstance(row, dict)
        cells = "".join(f"{merged[(attack, s, DEFAULT_RATE)].attacker_profit:>12.1f}"
                        for s in SHARES)
        print(f"{attack:<10}{cells}{row['honest_slashed']:>16}"
              f"{row['unprofitable_up_to_r']!s:>15}")
    print(f"{len(specs)} runs (each against its honest counterfactual), {rounds} rounds, "
          f"{seeds} seed(s), {seconds:.0f} s on {args.workers} worker(s), "
          f"load average {result['load_average_1m']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
