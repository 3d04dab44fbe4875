"""A watch on the event loop: says when a callback held it longer than allowed.

The loop carries the relay and status; a callback that blocks it (an nft run,
a netlink dump, a big status) delays every packet behind it. A thread posts a
probe to the loop every PROBE_EVERY seconds; a probe that runs late by more
than the limit is logged as "event loop blocked". The lab runs every daemon
with LOXGW_LOOP_GUARD_MS set and fails a test whose daemon logged it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

log = logging.getLogger("loxgw")

PROBE_EVERY = 0.005
ENV = "LOXGW_LOOP_GUARD_MS"


class LoopGuard:
    """Measures how late the loop runs a probe posted from another thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self.loop = loop
        self.limit = limit
        self.worst = 0.0
        self.blocked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="loxgw-loopguard", daemon=True)

    @classmethod
    def from_environment(cls, loop: asyncio.AbstractEventLoop) -> LoopGuard | None:
        text = os.environ.get(ENV, "")
        return cls(loop, float(text) / 1000) if text.strip() else None

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _probe(self) -> None:
        while not self._stop.wait(PROBE_EVERY):
            try:
                self.loop.call_soon_threadsafe(self._arrived, time.monotonic())
            except RuntimeError:  # the loop is closed
                return

    def _arrived(self, posted: float) -> None:
        late = time.monotonic() - posted
        self.worst = max(self.worst, late)
        if late > self.limit:
            self.blocked += 1
            log.error("event loop blocked for %.0f ms (limit %.0f ms)", late * 1000, self.limit * 1000)
