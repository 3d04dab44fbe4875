"""The one clock loxgw reads; everything else takes `now` as an argument."""

from __future__ import annotations

import time


def now() -> float:
    """Monotonic seconds: immune to wall-clock jumps (NTP, a router without RTC)."""
    return time.monotonic()


def wall() -> float:
    """Wall-clock seconds, for display only."""
    return time.time()
