"""The KNX service: KNX-IP routing telegrams copied between the zones of `config knx` (opt-in).

The core (core.knx) decides; the socket (edges.knxnet) reads on the event
loop and sends what the core hands back. The service arms the core's timer
(held-back copies, when another loxgw on the same segments leads) and sends
the presence hello every HELLO_INTERVAL; before the timer runs, it reads the
socket, so a leader's copy already received cancels the held-back one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any, Protocol

from loxgw.core.config import Config
from loxgw.core.knx import GLOBAL_RATE, HELLO_INTERVAL, Copy, KnxInterface, KnxRouter
from loxgw.core.relaylimit import RateLimiter
from loxgw.edges import clock

log = logging.getLogger("loxgw")


class Sockets(Protocol):
    """What the service needs from edges.knxnet.KnxSockets (or a test double)."""

    counters: Counter[str]

    async def start(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def close(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def drain(self) -> None: ...
    def send(self, copies: list[Copy]) -> None: ...


OpenSockets = Callable[..., Sockets]


def _open_sockets(*args: Any) -> Sockets:
    from loxgw.edges import knxnet

    return knxnet.KnxSockets(*args)


def _settings(config: Config) -> tuple[object, ...]:
    """What the running router depends on: a change restarts it."""
    return (config.knx, config.knx_interfaces())


class KnxService:
    """Runs the KNX router while `config knx` is enabled."""

    def __init__(self, config: Config, open_sockets: OpenSockets = _open_sockets) -> None:
        self.config = config
        self.open_sockets = open_sockets
        self.core: KnxRouter | None = None
        self.sockets: Sockets | None = None
        self.last_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._when: float | None = None
        self._hello: asyncio.TimerHandle | None = None

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the socket; a refusal is logged and shown in status, not fatal."""
        self._loop = loop
        names = self.config.knx_interfaces()
        if not names:
            return
        knx = self.config.knx
        self.core = KnxRouter(frozenset(names), RateLimiter(knx.rate_limit, GLOBAL_RATE))
        sockets = self.open_sockets(names, knx.ttl, self._receive, self._interfaces)
        try:
            await sockets.start(loop)
        except OSError as exc:
            sockets.close(loop)
            self.core = None
            self.last_error = f"knx: opening the socket on UDP 3671: {exc}"
            log.error("%s; KNX routing telegrams are not copied", self.last_error)
            return
        self.sockets = sockets
        self.last_error = None
        self._say_hello()
        log.info("knx: routing telegrams copied between %s (TTL %d)", ", ".join(names), knx.ttl)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for handle in (self._timer, self._hello):
            if handle is not None:
                handle.cancel()
        self._timer = self._hello = self._when = None
        if self.sockets is not None:
            self.sockets.close(loop)
            self.sockets = None
        self.core = None

    async def reconfigure(self, config: Config) -> None:
        """Restart when `config knx` or its zones' interfaces changed."""
        old, self.config = self.config, config
        if _settings(old) == _settings(config) or self._loop is None:
            return
        self.close(self._loop)
        await self.start(self._loop)

    # --- what the socket hands in ------------------------------------------------------

    def _interfaces(self, interfaces: list[KnxInterface], own: frozenset[IPv4Address]) -> None:
        if self.core is not None:
            self.core.set_interfaces(interfaces, own)

    def _receive(self, ifindex: int, src: IPv4Address, dst: IPv4Address, data: bytes, tos: int) -> list[Copy]:
        core = self.core
        if core is None:
            return []
        copies = core.receive(ifindex, src, dst, data, tos, clock.now())
        if core.timer_changed:
            self._arm(core.get_timer())
        return copies

    def _arm(self, when: float | None) -> None:
        if when == self._when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._when = when
        self._timer = None if when is None or self._loop is None else self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._when = None
        if self.sockets is None or self.core is None:
            return
        self.sockets.drain()  # a leader's copy that arrived meanwhile cancels before the hold-off ends
        self.sockets.send(self.core.handle_timer(clock.now()))
        self._arm(self.core.get_timer())

    def _say_hello(self) -> None:
        """Tell another loxgw on the same segments that this one copies too (core.knx)."""
        self._hello = None
        if self.sockets is None or self.core is None or self._loop is None:
            return
        self.sockets.send(self.core.hellos())
        self._hello = self._loop.call_later(HELLO_INTERVAL, self._say_hello)

    def status(self) -> dict[str, Any]:
        if self.core is None:
            return {"active": False, "last_error": self.last_error}
        state = self.core.status(clock.now())
        if self.sockets is not None:
            state["counters"] = dict(Counter(state["counters"]) + self.sockets.counters)
        return {"active": self.sockets is not None, **state, "last_error": self.last_error}
