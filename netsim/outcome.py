"""What a run produced, in the same shape whichever protocol path produced it.

Per job: who served it, whether it was cheated, sampled, audited by whom,
accused, and how its dispute ended, and where its money went. Per account:
the final balance and stake as the ledger holds them. The equivalence test
compares two outcomes array by array; :mod:`netsim.metrics` derives every
table from one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

# Verdict codes of the ``verdict`` column
NO_DISPUTE = 0
FRAUD = 1
VALID = 2
INCONCLUSIVE = 3
REFUSED = 4
"""The ledger refused the accusation (too few validators for a committee)."""


@dataclass
class Outcome:
    # -- per job, in the order jobs were recorded
    epoch: np.ndarray
    node: np.ndarray
    cheated: np.ndarray
    cost: np.ndarray
    """C of the job on its node's hardware (what honest work would have cost)."""
    sampled: np.ndarray
    auditor: np.ndarray
    """Validator drawn to audit the job; -1 when not sampled or nobody was bonded."""
    accused: np.ndarray
    verdict: np.ndarray
    reexecutions: np.ndarray
    """Re-executions spent on the job by validators (auditor and committee)."""
    node_income: np.ndarray
    """Paid to the serving node: its share of the fee, plus a wronged-node share."""
    node_slash: np.ndarray
    validator_income: np.ndarray
    """Paid to validators: verification fee and shares of any slash."""
    validator_slash: np.ndarray
    client_cost: np.ndarray
    """The fee less a refund and any unearned verification fee returned."""
    burned: np.ndarray
    # -- per account at the end of the run
    node_balance: np.ndarray
    node_stake: np.ndarray
    node_slashed_out: np.ndarray
    validator_balance: np.ndarray
    validator_stake: np.ndarray
    validator_slashed_out: np.ndarray
    validator_audits: np.ndarray
    validator_reexecutions: np.ndarray
    client_balance: np.ndarray
    # -- per epoch
    online: np.ndarray
    active: np.ndarray
    """Nodes online and bonded (not jailed, not slashed out) when the epoch's jobs arrive."""
    auditors: np.ndarray
    """Validators bonded when auditors are drawn for the epoch's sampled jobs."""
    # -- totals
    minted: int
    total_burned: int
    operator: int = 0
    """What the operator's canary nodes and canary client hold at the end."""

    def arrays(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def differences(self, other: Outcome) -> list[str]:
        """Names of the fields in which two outcomes differ (empty when equal)."""
        out = []
        for name, mine in self.arrays().items():
            theirs = getattr(other, name)
            if isinstance(mine, np.ndarray):
                if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
                    out.append(name)
            elif mine != theirs:
                out.append(name)
        return out
