"""The sketch limits hold what they promise for honest deviations of any shape, and no more.

A judged job's sketch limits follow from bounds on the hidden-state deviations, not on the
projections calibration happened to draw. These tests build deviations of the shapes that
matter (independent blocks; every block along one direction, as a systematic bfloat16 error
is; one block alone), draw the sketch's projections many times, and count how often the
committed-value deviations pass the limits computed at a loose false-positive level, where
the count can be checked; and they check the bounds calibration stores cover each of its
jobs at that job's own energy.
"""

from __future__ import annotations

import math

import pytest
import torch

from prover.llm.job import (
    DEFAULT_TOLERANCES,
    GAP_SUM_TOKENS,
    Calibration,
    LLMJobError,
    Tolerances,
    sketch_rms_factor,
    sketch_tail_z,
)
from prover.llm.sketch import BLOCK, PROJECTIONS, block_values, n_blocks
from verifier.calibrate import Deviation, deviation_shape

D = 96
N = 64
DRAWS = 3000


def _deviations(shape: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Node and verifier hidden states ``[N, D]`` whose difference has ``shape``."""
    verifier = torch.randn(N, D, generator=g, dtype=torch.float64)
    if shape == "independent":
        diff = 0.01 * torch.randn(N, D, generator=g, dtype=torch.float64)
    elif shape == "one direction":
        direction = torch.randn(D, generator=g, dtype=torch.float64)
        diff = 0.01 * torch.randn(N, 1, generator=g, dtype=torch.float64).abs() * direction
    else:  # one block
        diff = torch.zeros(N, D, dtype=torch.float64)
        diff[BLOCK:2 * BLOCK] = 0.01 * torch.randn(BLOCK, D, generator=g, dtype=torch.float64)
    return verifier + diff, verifier


@pytest.mark.parametrize("shape", ["independent", "one direction", "one block"])
def test_honest_deviations_pass_the_limits_as_often_as_promised(shape: str) -> None:
    g = torch.Generator().manual_seed(7)
    node, verifier = _deviations(shape, g)
    seen = deviation_shape(node, verifier)
    alpha = 0.02
    values = n_blocks(N) * PROJECTIONS
    value_limit = sketch_tail_z(values, alpha) * seen["block_norm"]
    rms_limit = sketch_rms_factor(seen["spread"], seen["concentration"], alpha) * \
        seen["block_energy"]
    over_value = over_rms = 0
    rms_seen = []
    for seed in range(DRAWS):  # each seed is another job's projection directions
        dev = block_values(node, seed) - block_values(verifier, seed)
        over_value += float(dev.abs().max()) > value_limit
        rms = float(dev.pow(2).mean().sqrt())
        rms_seen.append(rms)
        over_rms += rms > rms_limit
    assert over_value <= alpha * DRAWS and over_rms <= alpha * DRAWS, (over_value, over_rms)
    # the rms concentrates around the energy: the limit is not vacuous
    mean_square = sum(r * r for r in rms_seen) / DRAWS
    assert mean_square == pytest.approx(seen["block_energy"] ** 2, rel=0.1)


def test_a_shape_known_to_be_spread_gets_a_tighter_rms_limit_than_one_direction() -> None:
    assert sketch_rms_factor(0.5, 0.25) < sketch_rms_factor(1.0, 1.0)
    # one direction leaves K = PROJECTIONS degrees of freedom: the chi-square bound
    x = math.log(1e10)
    k = PROJECTIONS
    assert sketch_rms_factor(1.0, 1.0) ** 2 == pytest.approx(1 + 2 * math.sqrt(x / k) + 2 * x / k)


def test_stored_bounds_cover_every_calibration_job_at_its_own_energy() -> None:
    """Calibration stores one shape; weighted by each job's share of the largest energy, the
    bound it gives is at least each job's own bound (1 + a·s + b·c is linear in the shape)."""
    g = torch.Generator().manual_seed(3)
    deviations = []
    for shape, scale in (("independent", 1.0), ("one direction", 0.3), ("one block", 0.6)):
        node, verifier = _deviations(shape, g)
        node = verifier + scale * (node - verifier)
        deviations.append(Deviation(logit_dev=0.0, gap=0.0, block_dev=0.0, block_rms=0.0,
                                    tokens=N, **deviation_shape(node, verifier)))
    worst = max(d.block_energy for d in deviations)
    spread = max(d.spread * (d.block_energy / worst) ** 2 for d in deviations)
    concentration = max(d.concentration * (d.block_energy / worst) ** 2 for d in deviations)
    for d in deviations:
        assert sketch_rms_factor(spread, concentration) * worst >= \
            sketch_rms_factor(d.spread, d.concentration) * d.block_energy * (1 - 1e-12)


def test_short_jobs_are_held_to_a_looser_rms_limit_never_a_tighter_one() -> None:
    tol = DEFAULT_TOLERANCES["bfloat16"]
    limits = [tol.sketch_rms_limit(n) for n in (1, 16, 32, 48, 64, 256, 4096)]
    assert limits == sorted(limits, reverse=True)
    assert tol.sketch_rms_limit(1) == pytest.approx(
        sketch_rms_factor(1.0, 1.0) * tol.sketch_energy_tau + 0.5)


def test_an_entry_calibrated_before_the_bounds_keeps_its_64_token_thresholds() -> None:
    stored = Calibration(tolerances=DEFAULT_TOLERANCES, record={}).to_json()
    for t in stored["tolerances"].values():
        for key in ("sketch_norm_tau", "sketch_energy_tau", "sketch_spread",
                    "sketch_concentration"):
            del t[key]
        t["sketch_tau"], t["sketch_rms_tau"] = 8.7, 3.4
    old: Tolerances = Calibration.from_json(stored).for_dtype("float32")
    assert old.sketch_value_limit(GAP_SUM_TOKENS) == pytest.approx(8.7)
    assert old.sketch_rms_limit(GAP_SUM_TOKENS) == pytest.approx(3.4)


@pytest.mark.parametrize(("key", "value"), [("sketch_norm_tau", float("nan")),
                                            ("sketch_energy_tau", -1.0),
                                            ("sketch_energy_tau", float("inf")),
                                            ("sketch_spread", 1.5),
                                            ("sketch_concentration", float("nan"))])
def test_a_stored_bound_that_would_pass_every_sketch_is_refused(key: str, value: float) -> None:
    """A NaN, negative, infinite or out-of-range bound in a calibration entry (one published
    with a model, say) would make the sketch checks pass anything: the entry is refused,
    naming the field."""
    stored = Calibration(tolerances=DEFAULT_TOLERANCES, record={}).to_json()
    stored["tolerances"]["bfloat16"][key] = value
    with pytest.raises(LLMJobError, match=key):
        Calibration.from_json(stored)
