"""The conditions under which honest work is the best response (DESIGN decision 6).

Symbols follow Proof of Sampling (Zhang et al., arXiv 2405.00295): reward R per
job, compute cost C of doing the job honestly, sampling probability p, the
share r of validators colluding with a cheater, slash S.

* PoSP Nash condition: a node that skips the work saves C and, when caught
  (probability p(1−r)), loses the reward and the slash. Honesty is the unique
  best response when ``p(1−r)(R+S) > C``.
* Zero-cost fabrication (Pocket Network's probabilistic proofs): an output
  made up at no cost earns R when unsampled; it is unprofitable when
  ``S ≥ R(1−p)/p``.

* Stake at risk: both conditions assume a caught cheat pays S in full. A
  node's unsettled jobs are its liability: with J of them, all cheated, the
  expected slash is p·J·S, and a slash can take no more than the node holds.
  The ledger bounds J by the node's stake, ``J ≤ stake / (p·S)``
  (:func:`in_flight_limit`), and a job stays unsettled for the detection
  latency D (the rounds from recording to settlement, in which a cheat can
  still be proven), so serving T jobs a round needs ``stake ≥ p·S·T·D``
  (:func:`stake_for_throughput`). Genesis refuses parameters under which a
  node at the minimum stake could not keep even one job a round in flight.

Amounts are integer token units; p and r are integer parts per million, so the
conditions are checked in exact integer arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.sampling import PPM


@dataclass(frozen=True)
class EconomicParams:
    reward: int  # R, token units paid to the node per valid job
    compute_cost: int  # C, token units an honest node spends per job
    sample_ppm: int  # p, parts per million
    collusion_ppm: int  # r, parts per million
    slash: int  # S, token units
    min_stake: int = 0  # the least stake a node bonds, token units (0: not checked)
    detection_rounds: int = 0  # D, rounds a job stays unsettled and can be proven a cheat

    def __post_init__(self) -> None:
        for name in ("reward", "compute_cost", "slash", "min_stake", "detection_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not 0 < self.sample_ppm <= PPM:
            raise ValueError(f"sample_ppm must be in 1..{PPM}, got {self.sample_ppm}")
        if not 0 <= self.collusion_ppm < PPM:
            raise ValueError(f"collusion_ppm must be in 0..{PPM - 1}, got {self.collusion_ppm}")


def posp_condition_holds(e: EconomicParams) -> bool:
    """``p(1−r)(R+S) > C``, scaled by PPM² to stay in integers."""
    return e.sample_ppm * (PPM - e.collusion_ppm) * (e.reward + e.slash) > e.compute_cost * PPM**2


def fabrication_condition_holds(e: EconomicParams) -> bool:
    """``S ≥ R(1−p)/p``, i.e. ``S·p ≥ R·(1−p)``."""
    return e.slash * e.sample_ppm >= e.reward * (PPM - e.sample_ppm)


def min_slash_posp(e: EconomicParams) -> int:
    """The least integer S with ``p(1−r)(R+S) > C``."""
    denom = e.sample_ppm * (PPM - e.collusion_ppm)
    # smallest S with denom*(R+S) > C*PPM^2  ⇔  R+S > C*PPM^2/denom
    need = e.compute_cost * PPM**2 // denom + 1
    return max(0, need - e.reward)


def min_slash_fabrication(e: EconomicParams) -> int:
    """The least integer S with ``S·p ≥ R·(1−p)``."""
    num = e.reward * (PPM - e.sample_ppm)
    return -(-num // e.sample_ppm)


def in_flight_limit(stake: int, sample_ppm: int, slash: int) -> int:
    """The most unsettled jobs a node with ``stake`` may have: ``stake / (p·S)``, rounded down.

    With that many jobs in flight, all cheated, the expected slash p·J·S is
    the stake itself: the liability never outgrows what can be taken.
    """
    if slash <= 0 or sample_ppm <= 0:
        raise ValueError("the in-flight limit needs a positive slash and sampling rate")
    return stake * PPM // (sample_ppm * slash)


def stake_for_throughput(e: EconomicParams, jobs_per_round: int) -> int:
    """The least stake that keeps ``jobs_per_round`` jobs a round in flight: ``p·S·T·D``."""
    return -(-e.sample_ppm * e.slash * jobs_per_round * e.detection_rounds // PPM)


def max_slash_stake_at_risk(e: EconomicParams) -> int:
    """The largest S with which a node at the minimum stake keeps a job a round in flight:
    ``p·S·D ≤ stake``."""
    return e.min_stake * PPM // (e.sample_ppm * max(e.detection_rounds, 1))


def stake_at_risk_holds(e: EconomicParams) -> bool:
    """A node at the minimum stake may keep one job a round in flight for D rounds."""
    return in_flight_limit(e.min_stake, e.sample_ppm, e.slash) >= e.detection_rounds


def violations(e: EconomicParams) -> list[str]:
    """Human-readable reasons the parameters are unsafe; empty when both conditions hold."""
    out: list[str] = []
    p = e.sample_ppm / PPM
    r = e.collusion_ppm / PPM
    if not posp_condition_holds(e):
        out.append(
            f"PoSP condition p(1-r)(R+S) > C fails: {p:g}*(1-{r:g})*({e.reward}+{e.slash}) = "
            f"{p * (1 - r) * (e.reward + e.slash):.6g} <= C = {e.compute_cost}; "
            f"need slash >= {min_slash_posp(e)}"
        )
    if not fabrication_condition_holds(e):
        out.append(
            f"fabrication condition S >= R(1-p)/p fails: S = {e.slash} < "
            f"{e.reward}*(1-{p:g})/{p:g} = {e.reward * (1 - p) / p:.6g}; "
            f"need slash >= {min_slash_fabrication(e)}"
        )
    if e.min_stake and e.slash and not stake_at_risk_holds(e):
        out.append(
            f"stake at risk fails: the minimum stake {e.min_stake} covers "
            f"{in_flight_limit(e.min_stake, e.sample_ppm, e.slash)} unsettled jobs "
            f"(stake/(p*S)), fewer than the {e.detection_rounds} a node serving one job a round "
            f"keeps in flight; need p*S*D <= {e.min_stake}"
        )
    return out


def detection_probability(sample_ppm: int, cheated_jobs: int) -> float:
    """Chance that at least one of ``cheated_jobs`` cheats is sampled: 1 − (1−p)^n."""
    return 1.0 - (1.0 - sample_ppm / PPM) ** cheated_jobs
