"""A watch on the event loop: says when a callback held it longer than allowed.

The loop carries the relay and status; a callback that blocks it (an nft run,
a netlink dump, a big status) delays every packet behind it. A thread posts a
probe to the loop every PROBE_EVERY seconds; a probe that runs late by more
than the limit is logged as "event loop blocked". The lab runs every daemon
with LOXGW_LOOP_GUARD_MS set and fails a test whose daemon logged it.

Lateness that is the scheduler's, not the loop's, is taken off: the time the
loop's thread spent waiting on a run queue (/proc/.../schedstat) while the
probe was pending. On a loaded machine a probe can arrive 80 ms late with
the loop idle; what is left after that is time the loop spent in callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback

log = logging.getLogger("loxgw")

PROBE_EVERY = 0.005
ENV = "LOXGW_LOOP_GUARD_MS"
DEBUG_ENV = "LOXGW_LOOP_DEBUG"  # also log the loop thread's stack while a probe is late (for hunting)


class LoopGuard:
    """Measures how late the loop runs a probe posted from another thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self.loop = loop
        self.limit = limit
        self.worst = 0.0
        self.blocked = 0
        self._stop = threading.Event()
        self._schedstat = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        self._loop_thread = threading.get_ident()
        self.hunting = False  # debug mode: log the loop thread's stack when a probe is late
        self._thread = threading.Thread(target=self._probe, name="loxgw-loopguard", daemon=True)

    @classmethod
    def from_environment(cls, loop: asyncio.AbstractEventLoop) -> LoopGuard | None:
        text = os.environ.get(ENV, "")
        if not text.strip():
            return None
        guard = cls(loop, float(text) / 1000)
        guard.hunting = bool(os.environ.get(DEBUG_ENV))
        return guard

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started (a start-up stopped early never starts it)
            self._thread.join(timeout=1)

    def _probe(self) -> None:
        pending: list[float] = []
        while not self._stop.wait(PROBE_EVERY):
            now = time.monotonic()
            if self.hunting and pending and now - pending[0] > self.limit:
                self._show_culprit()
                pending.clear()  # one stack per stall
            if not pending:
                pending.append(now)  # the oldest probe not yet run
            try:
                self.loop.call_soon_threadsafe(self._arrived_clearing, now, self._queued(), pending)
            except RuntimeError:  # the loop is closed
                return

    def _arrived_clearing(self, posted: float, queued: float, pending: list[float]) -> None:
        if pending and pending[0] == posted:
            pending.clear()
        self._arrived(posted, queued)

    def _show_culprit(self) -> None:
        """Debug mode: what the loop's thread is doing while a probe waits too long."""
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident != threading.get_ident():
                log.error("event loop late; thread %s is in:\n%s", names.get(ident, ident),
                          "".join(traceback.format_stack(frame)[-6:]))

    def _queued(self) -> float:
        """Seconds the loop's thread has waited on a run queue so far (0 where the kernel does not say)."""
        try:
            with open(self._schedstat, encoding="ascii") as handle:
                return int(handle.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    def _arrived(self, posted: float, queued: float) -> None:
        if self._stop.is_set():
            return  # posted before close: it ran behind the shutdown's own (blocking) clean-up
        late = time.monotonic() - posted - max(0.0, self._queued() - queued)
        self.worst = max(self.worst, late)
        if late > self.limit:
            self.blocked += 1
            log.error("event loop blocked for %.0f ms (limit %.0f ms)", late * 1000, self.limit * 1000)
