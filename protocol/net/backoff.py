"""Capped exponential backoff: how long a service waits before it tries again.

Retrying every second forever floods a peer that is down and says nothing
useful; doubling the wait up to a cap, and saying why it waits, is what an
operator can read.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    initial_s: float = 1.0
    cap_s: float = 60.0
    _next_s: float = 0.0

    def next(self) -> float:
        """The next wait: ``initial_s``, then doubled each time, at most ``cap_s``."""
        wait = self._next_s or self.initial_s
        self._next_s = min(wait * 2, self.cap_s)
        return wait
