"""The rule that picks a zk proof or sampled re-execution per model, branch by branch."""

from __future__ import annotations

import pytest

from prover.mode_choice import (
    SAMPLED,
    ZK,
    MeasuredCosts,
    NetworkTerms,
    choose_check,
    estimate_prove_seconds,
    is_zk_eligible,
)

TERMS = NetworkTerms(sample_rate=0.05, challenge_window=4, latency_budget=10.0, round_seconds=3.0)
SMALL = MeasuredCosts(inference=1e-4, prove=2.0, verify=0.03, reexecute=1e-4)


def test_only_a_proof_meets_a_budget_shorter_than_the_challenge_window() -> None:
    # sampled jobs are final after (1 + 4) × 3 s = 15 s > 10 s; a proof takes 2.03 s
    suggestion = choose_check(SMALL, TERMS)
    assert suggestion.check == ZK and "15 s" in suggestion.reason


def test_a_late_proof_loses_to_sampling() -> None:
    slow = MeasuredCosts(inference=1e-4, prove=30.0, verify=0.03, reexecute=1e-4)
    suggestion = choose_check(slow, TERMS)
    assert suggestion.check == SAMPLED and "more than the 10 s accepted" in suggestion.reason


def test_when_both_are_in_time_the_cheaper_wins() -> None:
    patient = NetworkTerms(0.05, 4, latency_budget=60.0)
    assert choose_check(SMALL, patient).check == SAMPLED  # 2.03 s against 5 µs
    heavy = MeasuredCosts(inference=2.0, prove=0.05, verify=0.03, reexecute=2.0)
    suggestion = choose_check(heavy, patient)
    assert suggestion.check == ZK and suggestion.zk_cost == pytest.approx(0.08)


def test_no_circuit_means_sampling() -> None:
    none = MeasuredCosts(inference=1e-3, prove=None, verify=0.0, reexecute=1e-3)
    assert choose_check(none, TERMS).check == SAMPLED
    assert not is_zk_eligible("gpt2", 12) and not is_zk_eligible("mlp", None)
    assert is_zk_eligible("cnn", 17) and not is_zk_eligible("mlp", 30)


def test_estimate_doubles_per_log_row_and_rates_are_checked() -> None:
    assert estimate_prove_seconds(13) == pytest.approx(2 * estimate_prove_seconds(12))
    with pytest.raises(ValueError):
        choose_check(SMALL, NetworkTerms(0.0, 4, 10.0))
