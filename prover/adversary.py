"""How a dishonest node cheats, for the demo, the devnet and the tests.

The cheat Assay exists to catch: run a cheaper or different model and pocket
the fee. :class:`SubstituteModel` does exactly that on a seeded fraction of
jobs, then commits honestly to the wrong output, so only re-execution can
tell. Keeping cheats in the prover package means they run through the same
node code path as honest work.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Protocol

from torch import nn

from protocol.messages import JobRequest
from protocol.sampling import PPM, check_rate_ppm


class CheatStrategy(Protocol):
    cheated: set[bytes]
    """Ids of the jobs this strategy cheated on, for reports and tests."""

    def choose_model(self, request: JobRequest, honest: nn.Module) -> nn.Module:
        """The module the node actually runs for this job."""


class SubstituteModel:
    """Runs ``substitutes[model_id]`` instead of the real model on ``rate_ppm`` of jobs."""

    def __init__(self, substitutes: Mapping[bytes, nn.Module], rate_ppm: int, seed: int) -> None:
        self.substitutes = dict(substitutes)
        self.rate_ppm = check_rate_ppm(rate_ppm)
        self._rng = random.Random(seed)
        self.cheated: set[bytes] = set()

    def choose_model(self, request: JobRequest, honest: nn.Module) -> nn.Module:
        substitute = self.substitutes.get(request.model_id)
        if substitute is None or self._rng.randrange(PPM) >= self.rate_ppm:
            return honest
        self.cheated.add(request.job_id)
        return substitute
