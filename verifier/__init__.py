"""Everything a validator does: sampling policy, re-execution, verdicts."""
