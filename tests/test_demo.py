"""The one-command demo: the cheater is caught and slashed, honest nodes never are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.cli import main
from assay.demo import DemoConfig, DemoConfigError, run_demo
from slashing import Ledger


def test_default_demo_slashes_the_cheater_and_nobody_else(tmp_path: Path) -> None:
    summary = run_demo(DemoConfig(), workdir=tmp_path)
    assert summary.jobs == 240
    assert summary.cheaters == 1
    assert summary.cheaters_slashed == 1
    assert summary.honest_slashed == 0
    assert summary.validators_slashed == 0
    assert summary.disputes_valid == 0 and summary.disputes_fraud >= 1
    assert summary.supply_conserved
    assert 0 < summary.sampled < summary.jobs
    assert 0 < summary.verification_overhead < 1
    for node in summary.nodes:
        assert node.slashed == node.cheater
        if not node.cheater:
            assert node.mismatches == 0 and node.earnings > 0
    # the ledger file it leaves behind reopens, verifies and folds to the same state
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.verify() == summary.ledger_events


def test_demo_is_deterministic_by_seed() -> None:
    config = DemoConfig(jobs=48, seed=3)
    first, second = run_demo(config).to_json(), run_demo(config).to_json()
    for volatile in ("inference_seconds", "verification_seconds", "wall_seconds",
                     "verification_overhead"):
        first.pop(volatile)
        second.pop(volatile)
    assert first == second


def test_without_cheaters_nobody_is_slashed() -> None:
    summary = run_demo(DemoConfig(cheaters=0, jobs=60, sample_ppm=500_000))
    assert summary.disputes == summary.canaries_caught  # the only disputes are over canaries
    assert summary.cheaters_slashed == summary.honest_slashed == 0
    assert summary.sampled > 0


def test_json_summary_has_the_promised_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--jobs", "24", "--json", "-p", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("jobs", "sampled", "cheaters", "cheaters_slashed", "honest_slashed",
                "verification_overhead"):
        assert key in out
    assert out["jobs"] == 24 and out["honest_slashed"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 0}, "nodes must be at least 1"),
        ({"cheaters": 5}, "cheaters must be between 0 and nodes"),
        ({"jobs": 0}, "jobs must be at least 1"),
        ({"validators": 2}, "validators must be at least 7"),
        ({"lazy_validators": 7}, "lazy validators must be between 0 and validators - 1"),
        ({"sample_ppm": 0}, "sample rate p must be above 0"),
        ({"cheat_rate_ppm": 2_000_000}, "cheat_rate_ppm"),
        ({"models": ("resnet",)}, "models must come from"),
    ],
)
def test_bad_demo_options_name_the_problem(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DemoConfigError, match=message):
        DemoConfig(**kwargs)  # type: ignore[arg-type]


def test_canaries_run_and_a_lazy_validator_pays_for_them() -> None:
    """The operator plants canaries on the network; a validator that attests VALID without
    re-executing is slashed once one it called VALID is revealed, and nobody honest is."""
    summary = run_demo(DemoConfig(jobs=120, cheaters=0, lazy_validators=2,
                                  canary_rate_ppm=200_000, models=("mlp",)))
    assert summary.canaries > 0 and summary.canaries_sampled > 0
    assert summary.lazy_slashed >= 1
    assert summary.honest_slashed == 0 and summary.validators_slashed == 0
    assert summary.supply_conserved
