"""Adapter: rtnetlink change notifications, turned into one callback per burst of changes.

The relay (links, addresses, routes) and device detection (neighbours) both
re-read kernel state when it changes instead of polling; this is their
shared subscription.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Awaitable, Callable

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40


class ChangeWatch:
    """Runs `on_change` `settle` seconds after the first of a burst of notifications."""

    def __init__(self, groups: int, on_change: Callable[[], Awaitable[None]], settle: float,
                 counters: Counter[str], name: str) -> None:
        self.groups = groups
        self.on_change = on_change
        self.settle = settle
        self.counters = counters
        self.name = name
        self._sock: socket.socket | None = None
        self._pending: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        sock.bind((0, self.groups))
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_readable)
        self._sock = sock

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: notifications were lost; the re-read catches up anyway
                self.counters[f"{self.name}_event_errors"] += 1
                break
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._settle_and_call())

    async def _settle_and_call(self) -> None:
        await asyncio.sleep(self.settle)
        await self.on_change()
