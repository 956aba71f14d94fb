"""Token buckets: each key (a partner, or a client address that keeps presenting bad credentials)
may spend `rate` tokens per second, with bursts up to `burst`."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from .bounded import BoundedMap


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float  # monotonic seconds

    def take(self, cost: float, now: float) -> float:
        """Spends `cost` tokens if there are enough: returns 0.0. Otherwise spends nothing and
        returns the seconds until there will be enough."""
        wait = self.wait(cost, now)
        if wait == 0.0:
            self.tokens -= cost
        return wait

    def wait(self, cost: float, now: float) -> float:
        """Seconds until `cost` tokens are there (0.0: they are now); spends nothing."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return 0.0 if self.tokens >= cost else (cost - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key, at most `max_keys` of them (the least recently used go first: a
    forgotten bucket restarts full, which only ever errs towards allowing a burst)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate, self._burst = rate, burst
        self._buckets: BoundedMap[str, TokenBucket] = BoundedMap(max_keys, lru=True)
        self._lock = threading.Lock()

    def retry_after(self, key: str, cost: float, now: float) -> int:
        """0 when the checks may proceed (and are counted); else whole seconds to wait (>= 1)."""
        cost = min(cost, self._burst)  # a batch larger than the burst is never refused forever
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(self._rate, self._burst, self._burst, now)
                self._buckets.put(key, bucket)
            wait = bucket.take(cost, now)
        return _whole_seconds(wait)

    def blocked_for(self, key: str, now: float) -> int:
        """0 when `key` has a token left; else whole seconds until it has one. Spends nothing:
        for keys that are charged only after the fact (a failed credential costs one token)."""
        with self._lock:
            bucket = self._buckets.get(key)
            wait = bucket.wait(1, now) if bucket is not None else 0.0
        return _whole_seconds(wait)


def _whole_seconds(wait: float) -> int:
    return 0 if wait == 0 else max(1, math.ceil(wait))
