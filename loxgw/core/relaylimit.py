"""Token buckets for what a flood may cause: per source (bounded, least recently used) and overall.

The relay admits broadcasts with them, and device detection (core.discovery)
admits discovery answers with them; both take `now`, neither trusts the
number of sources an attacker can make up. The DNS thread (edges.dnsqueue)
spends a TokenBucket on reading DNS copies the moment they come.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

LIMIT_BUCKETS = 4096  # per-source buckets kept; attackers choose the source addresses


class TokenBucket:
    """One bucket: `rate` tokens a second, at most `burst` kept; take() spends one if there is one."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated: float | None = None

    def take(self, now: float) -> bool:
        if self._updated is not None:
            tokens = self._tokens + (now - self._updated) * self.rate
            self._tokens = tokens if tokens < self.burst else self.burst
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class RateLimiter:
    """Per-source token buckets (rate/s, burst of the same) and one global bucket; bounded, LRU."""

    def __init__(self, per_source: float, global_rate: float, capacity: int = LIMIT_BUCKETS) -> None:
        self.per_source = per_source
        self.global_rate = global_rate
        self.capacity = capacity
        self._sources: OrderedDict[Hashable, list[float]] = OrderedDict()  # [tokens, updated]
        self._global = TokenBucket(global_rate, global_rate)

    def allow(self, source: Hashable, now: float) -> str:
        """"" if allowed, else the reason ("rate_source" or "rate_global")."""
        rate = self.per_source
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = self._sources[source] = [rate, now]
            if len(self._sources) > self.capacity:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
            tokens = bucket[0] + (now - bucket[1]) * rate
            bucket[0] = tokens if tokens < rate else rate
            bucket[1] = now
        if bucket[0] < 1.0:
            return "rate_source"
        bucket[0] -= 1.0
        return "" if self._global.take(now) else "rate_global"

    def __len__(self) -> int:
        return len(self._sources)

