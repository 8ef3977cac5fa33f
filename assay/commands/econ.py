"""``assay econ``: whether a choice of R, C, p, r and S makes honest work the best response.

It prints the least slash S that satisfies each condition of DESIGN decision
6 — ``p(1−r)(R+S) > C`` from Proof of Sampling (arXiv 2405.00295) and
``S ≥ R(1−p)/p`` against zero-cost fabrication (Pocket Network's
probabilistic proofs) — whether the given S meets them, what verification
costs, how soon a cheat is caught, and how often canaries must come for a
validator to gain nothing by attesting without re-executing (Truebit's
forced errors), and what stake a node needs for its throughput: the ledger
keeps a node's unsettled jobs within ``stake / (p·S)``, and each stays
unsettled for the detection latency D = W + 2 rounds, so T jobs a round need
``stake ≥ p·S·T·D`` (stake at risk covers liability). The defaults are the
ledger's genesis defaults; exit status 1 means the parameters break a
condition, which is what the ledger would refuse.
"""

from __future__ import annotations

import argparse
import json

from assay.arguments import positive_int, rate_ppm
from protocol.economics import (
    EconomicParams,
    fabrication_condition_holds,
    in_flight_limit,
    min_slash_fabrication,
    min_slash_posp,
    posp_condition_holds,
    stake_at_risk_holds,
    stake_for_throughput,
    violations,
)
from protocol.sampling import PPM

DETECTION_JOBS: tuple[int, ...] = (1, 10, 50, 100, 500, 1_000)
THROUGHPUTS: tuple[int, ...] = (1, 10, 100, 400)
CHEAT_RATES_PPM: tuple[int, ...] = (10_000, 100_000, 500_000, 1_000_000)

# The ledger's genesis defaults (slashing.constants), repeated so `assay --help` stays light;
# tests/test_econ_cli.py checks they agree.
DEFAULT_REWARD = 100
DEFAULT_COMPUTE_COST = 50
DEFAULT_SAMPLE_PPM = 50_000
DEFAULT_COLLUSION_PPM = 100_000
DEFAULT_SLASH = 5_000
DEFAULT_COMMITTEE_SIZE = 5
DEFAULT_LAZY_SLASH = 5_000
DEFAULT_MIN_STAKE = 10_000
DEFAULT_WINDOW = 4


def detection_probability(sample_ppm: int, collusion_ppm: int, cheat_ppm: int, jobs: int) -> float:
    """Chance that at least one cheat in ``jobs`` jobs is caught: ``1 − (1 − q·p(1−r))^n``.

    A job is a cheat with probability q, sampled with probability p, and
    checked by an honest validator with probability 1 − r.
    """
    caught = cheat_ppm / PPM * sample_ppm / PPM * (1 - collusion_ppm / PPM)
    return 1.0 - (1.0 - caught) ** jobs


def report(args: argparse.Namespace) -> dict[str, object]:
    e = EconomicParams(
        reward=args.reward,
        compute_cost=args.compute_cost,
        sample_ppm=args.p,
        collusion_ppm=args.collusion,
        slash=args.slash,
        min_stake=args.stake,
        detection_rounds=args.window + 2,
    )
    p, r = e.sample_ppm / PPM, e.collusion_ppm / PPM
    return {
        "reward": e.reward,
        "compute_cost": e.compute_cost,
        "sample_ppm": e.sample_ppm,
        "collusion_ppm": e.collusion_ppm,
        "slash": e.slash,
        "conditions": {
            "posp": {
                "formula": "p(1-r)(R+S) > C",
                "source": "Proof of Sampling, arXiv 2405.00295",
                "min_slash": min_slash_posp(e),
                "expected_loss": p * (1 - r) * (e.reward + e.slash),
                "holds": posp_condition_holds(e),
            },
            "fabrication": {
                "formula": "S >= R(1-p)/p",
                "source": "Pocket Network probabilistic proofs",
                "min_slash": min_slash_fabrication(e),
                "unsampled_gain": e.reward * (1 - p) / p,
                "holds": fabrication_condition_holds(e),
            },
        },
        "min_safe_slash": max(min_slash_posp(e), min_slash_fabrication(e)),
        "violations": violations(e),
        "stake_at_risk": {
            "formula": "stake >= p*S*T*D",
            "stake": e.min_stake,
            "detection_rounds": e.detection_rounds,
            "in_flight_limit": in_flight_limit(e.min_stake, e.sample_ppm, e.slash),
            "jobs_per_round": in_flight_limit(e.min_stake, e.sample_ppm, e.slash)
            // e.detection_rounds,
            "stake_for_jobs_per_round": {
                str(t): stake_for_throughput(e, t) for t in THROUGHPUTS
            },
            "holds": stake_at_risk_holds(e),
        },
        "verification_overhead": p,
        "dispute_reexecutions": args.committee,
        "min_canary_share_ppm": -(-e.compute_cost * PPM // args.lazy_slash),
        "detection": [
            {
                "jobs": n,
                **{
                    f"q={q / PPM:g}": detection_probability(e.sample_ppm, e.collusion_ppm, q, n)
                    for q in CHEAT_RATES_PPM
                },
            }
            for n in DETECTION_JOBS
        ],
    }


def _print(out: dict[str, object]) -> None:
    p, r = int(str(out["sample_ppm"])) / PPM, int(str(out["collusion_ppm"])) / PPM
    conditions = out["conditions"]
    assert isinstance(conditions, dict)
    posp, fab = conditions["posp"], conditions["fabrication"]
    reward, cost, slash = out["reward"], out["compute_cost"], out["slash"]
    print(f"R = {reward} (reward)  C = {cost} (compute cost)  S = {slash} (slash)")
    print(f"p = {p:g} (sample rate)  r = {r:g} (colluding share of validators)")
    print()
    print(f"{'honest work is the best response when':<38} {'least S':>8}  with S = {slash}")
    verdict = "holds" if posp["holds"] else "FAILS"
    print(f"{'p(1-r)(R+S) > C         [1]':<38} {posp['min_slash']:>8}  {verdict}: "
          f"{p:g}*{1 - r:g}*({reward}+{slash}) = {posp['expected_loss']:.6g} vs C = {cost}")
    verdict = "holds" if fab["holds"] else "FAILS"
    print(f"{'S >= R(1-p)/p           [2]':<38} {fab['min_slash']:>8}  {verdict}: "
          f"{slash} vs {reward}*(1-{p:g})/{p:g} = {fab['unsampled_gain']:.6g}")
    print(f"least safe S: {out['min_safe_slash']}")
    print("[1] Proof of Sampling, arXiv 2405.00295  [2] Pocket Network, zero-cost fabrication")
    print()
    risk = out["stake_at_risk"]
    assert isinstance(risk, dict)
    verdict = "holds" if risk["holds"] else "FAILS"
    print(f"stake at risk: a node keeps at most stake/(p*S) jobs unsettled, each for "
          f"D = W+2 = {risk['detection_rounds']} rounds")
    print(f"  with stake {risk['stake']}: {risk['in_flight_limit']} in flight, "
          f"{risk['jobs_per_round']} jobs a round ({verdict}: at least 1)")
    needs = "  ".join(f"T={t}: {v}" for t, v in risk["stake_for_jobs_per_round"].items())
    print(f"  stake for T jobs a round, p*S*T*D:  {needs}")
    print()
    print(f"verification overhead: p = {p:.1%} of inference compute is re-executed,")
    print(f"  plus {out['dispute_reexecutions']} re-executions per dispute")
    share = int(str(out["min_canary_share_ppm"])) / PPM
    print(f"lazy validators: VALID without re-executing saves C = {cost}; it loses when canaries")
    print(f"  are at least C/L = {share:.2%} of the sampled jobs a validator attests")
    print()
    print("chance a cheat is caught within n jobs, 1 - (1 - q*p*(1-r))^n, for cheat rate q:")
    detection = out["detection"]
    assert isinstance(detection, list)
    header = [k for k in detection[0] if k != "jobs"]
    print(f"{'n':>6}  " + "  ".join(f"{h:>9}" for h in header))
    for row in detection:
        print(f"{row['jobs']:>6}  " + "  ".join(f"{row[h]:>9.4f}" for h in header))
    for problem in out["violations"]:  # type: ignore[attr-defined]
        print(f"UNSAFE: {problem}")


def cmd_econ(args: argparse.Namespace) -> int:
    if args.p == 0:
        raise ValueError("p must be above 0: with no sampling no slash deters anything")
    if args.collusion >= PPM:
        raise ValueError("r must be below 1: with every validator colluding nothing is caught")
    if args.lazy_slash == 0:
        raise ValueError("the lazy-validator slash must be above 0")
    out = report(args)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(out)
    return 0 if not out["violations"] else 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    econ = commands.add_parser(
        "econ",
        help="check R, C, p, r and S against the honesty conditions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    econ.add_argument("--reward", "-R", type=positive_int, default=DEFAULT_REWARD,
                      help=f"R: what a node earns per job ({DEFAULT_REWARD})")
    econ.add_argument("--compute-cost", "-C", type=positive_int, default=DEFAULT_COMPUTE_COST,
                      help=f"C: what an honest node spends per job ({DEFAULT_COMPUTE_COST})")
    econ.add_argument("-p", "--sample-rate", dest="p", type=rate_ppm, default=DEFAULT_SAMPLE_PPM,
                      help=f"p: probability a job is re-executed ({DEFAULT_SAMPLE_PPM / PPM:g})")
    econ.add_argument("-r", "--collusion", type=rate_ppm, default=DEFAULT_COLLUSION_PPM,
                      help=f"r: share of validators colluding with a cheat "
                           f"({DEFAULT_COLLUSION_PPM / PPM:g})")
    econ.add_argument("--slash", "-S", type=positive_int, default=DEFAULT_SLASH,
                      help=f"S: slash for confirmed fraud ({DEFAULT_SLASH})")
    econ.add_argument("--committee", type=positive_int, default=DEFAULT_COMMITTEE_SIZE,
                      help=f"k: validators re-executing a disputed job ({DEFAULT_COMMITTEE_SIZE})")
    econ.add_argument("--lazy-slash", type=positive_int, default=DEFAULT_LAZY_SLASH,
                      help=f"L: slash for VALID on a canary ({DEFAULT_LAZY_SLASH})")
    econ.add_argument("--stake", type=positive_int, default=DEFAULT_MIN_STAKE,
                      help=f"a node's stake (the minimum, {DEFAULT_MIN_STAKE})")
    econ.add_argument("--window", "-W", type=positive_int, default=DEFAULT_WINDOW,
                      help=f"W: the challenge window in rounds ({DEFAULT_WINDOW})")
    econ.add_argument("--json", action="store_true", help="print the report as JSON")
    econ.set_defaults(func=cmd_econ)
