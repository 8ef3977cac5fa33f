"""Warnings for a run that did not run what its configuration says.

A network can wear itself out: jail and tombstones take every node or
validator out, jobs then find nobody to serve or audit them, and the
figures describe a few epochs instead of the configured run, with nothing
in them to show it. These checks read a run's tables and say so in words:

* active nodes (online, bonded, not jailed) fell to zero in some epochs;
* bonded validators fell to zero, so sampled jobs went unaudited, or
  accusations were refused for want of a committee;
* fewer jobs were served than arrived;
* an effective sample below :data:`MIN_EFFECTIVE_SAMPLE`: the audits of
  cheated jobs (or of any job, in a network without cheats) that every
  detection and gain figure rests on, summed over a point's seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MIN_EFFECTIVE_SAMPLE = 30
"""Below this many audits, a detection rate's relative error exceeds about 1/√30 ≈ 18 %."""


def epoch_ranges(epochs: np.ndarray) -> str:
    """``[3, 4, 5, 9]`` as ``3–5, 9``."""
    parts: list[str] = []
    values = [int(e) for e in epochs]
    start = previous = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(f"{start}" if start == previous else f"{start}–{previous}")
        if value is not None:
            start = previous = value
    return ", ".join(parts)


def run_warnings(epochs: Mapping[str, np.ndarray], summary: Mapping[str, Any]) -> list[str]:
    """What went wrong in one run, read from its epoch table and summary."""
    out = []
    idle = np.flatnonzero(epochs["active"] == 0)
    if len(idle):
        out.append(f"active nodes fell to zero in epochs {epoch_ranges(idle)} "
                   f"of {len(epochs['epoch'])}")
    unaudited = np.flatnonzero(epochs["auditors"] == 0)
    if len(unaudited):
        out.append(f"bonded validators fell to zero in epochs {epoch_ranges(unaudited)} "
                   f"of {len(epochs['epoch'])}")
    arrived, served = int(epochs["arrived"].sum()), int(epochs["jobs"].sum())
    if served < arrived:
        out.append(f"only {served} of the {arrived} jobs that arrived were served")
    if summary["unaudited_samples"]:
        out.append(f"{summary['unaudited_samples']} sampled jobs had no validator to audit them")
    if summary["refused"]:
        out.append(f"{summary['refused']} accusations were refused: too few bonded validators "
                   "for a committee")
    return out


def effective_sample(summaries: Sequence[Mapping[str, Any]]) -> int:
    """Audits the estimates rest on, over seeds: of cheated jobs, or of all jobs if none cheated."""
    if any(s["cheated"] for s in summaries):
        return sum(int(s["sampled_cheated"]) for s in summaries)
    return sum(int(s["sampled"]) for s in summaries)


def sample_warning(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    size = effective_sample(summaries)
    if size >= MIN_EFFECTIVE_SAMPLE:
        return []
    what = "audits of cheated jobs" if any(s["cheated"] for s in summaries) else "audits"
    return [f"effective sample {size} {what} over {len(summaries)} seed(s), below "
            f"{MIN_EFFECTIVE_SAMPLE}: too few to estimate detection or gain"]
