"""Per-peer token buckets: how many jobs one caller may start, on every path.

A node answers jobs from libp2p peers (keyed by their Noise-authenticated
key) and from HTTP callers (keyed by their address); each key has a bucket of
``burst`` tokens refilled at ``rate_per_s``, and a job takes one. A caller
past its rate is refused with how long to wait, before anything is computed.
At most ``max_keys`` buckets are kept, the least recently used forgotten
first, so a flood of new keys costs bounded memory (a forgotten key starts
with a full bucket, which a flood of fresh identities could always have).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, got "
                             f"{rate_per_s}/s and {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, key: Hashable) -> float:
        """Take one token for ``key``: 0 when allowed, else the seconds until one is free."""
        now = self.clock()
        tokens, since = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - since) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate_per_s
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
