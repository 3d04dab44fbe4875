"""The relay service: one relay per enabled `config relay`, with its own netlink set writer.

A relayed search opens a short window for its answer (core.relay decides,
edges.nftset writes the element). The writer is the relay's own: it shares
no lock with the DNS thread, so a burst of DNS answers never delays a copy.
LoxLIVE answers the relay sees go to the devices service through a queue,
never handled inside the relay's packet handler.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from loxgw.core.config import Config
from loxgw.core.errors import KernelError
from loxgw.core.firewall import RELAY_ANSWERS
from loxgw.edges import clock

log = logging.getLogger("loxgw")

AnswerSink = Callable[[ipaddress.IPv4Address, bytes], None]


class RelayService:
    """Runs the configured relays; restarts them when their config or zones change."""

    def __init__(self, config: Config, open_writer: Callable[[], Any], on_loxlive: AnswerSink) -> None:
        self.config = config
        self.open_writer = open_writer
        self.on_loxlive = on_loxlive
        self.relays: list[Any] = []  # edges.relaynet.RelaySockets
        self.writer: Any = None
        self.counters: Counter[str] = Counter()
        self.last_error: str | None = None

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """One RelaySockets per enabled relay section with two interfaces or more."""
        from loxgw.core import relay
        from loxgw.edges import relaynet

        config = self.config
        roles = config.interface_roles()
        for section in config.relays:
            names = config.relay_interfaces(section)
            if not section.enabled:
                continue
            if len(names) < 2:
                log.warning("relay %s has fewer than two interfaces; nothing to relay", section.name)
                continue
            sockets = relaynet.RelaySockets(
                relay.RelayPolicy(section.ports, frozenset(names), section.allow_upstream),
                relay.RateLimiter(section.rate_limit, section.global_rate),
                roles, self._allow_answers, clock.now, self.on_loxlive,
            )
            try:
                await sockets.start(loop)
            except OSError as exc:
                sockets.close(loop)
                raise KernelError(f"relay {section.name}: opening sockets", exc.errno, exc.strerror or "") from exc
            self.relays.append(sockets)
            log.info("relay %s: ports %s between %s", section.name,
                     ",".join(str(p) for p in section.ports), ", ".join(names))

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for sockets in self.relays:
            sockets.close(loop)
        self.relays.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def reconfigure(self, config: Config) -> None:
        """Restart the relays if their sections or the zones changed."""
        old, self.config = self.config, config
        if (old.relays, old.zones, old.main.table) == (config.relays, config.zones, config.main.table):
            return
        loop = asyncio.get_running_loop()
        self.close(loop)
        try:
            await self.start(loop)
            self.last_error = None
        except KernelError as exc:
            self.last_error = str(exc)
            log.error("%s", exc)

    def owns_answer_port(self, port: int) -> bool:
        return any(any(port in r for r in s.policy.ports) for s in self.relays)

    def _allow_answers(self, pairs: list[tuple[ipaddress.IPv4Address, int]]) -> None:
        """Let the devices zone answer a relayed request: (asker . port) for a short window."""
        from loxgw.core import relay

        elements = [(RELAY_ANSWERS, ip.packed + struct.pack("!H2x", port), relay.ANSWER_WINDOW)
                    for ip, port in pairs]
        try:
            if self.writer is None:
                self.writer = self.open_writer()
            self.writer.add_elements(elements)
        except (KernelError, OSError) as exc:
            self.counters["relay_answer_errors"] += 1
            log.debug("relay answer pinhole failed: %s", exc)

    def status(self) -> dict[str, Any]:
        counters: Counter[str] = Counter()
        for sockets in self.relays:
            counters.update(sockets.counters)
        counters.update(self.counters)
        return {
            "interfaces": sorted({i.name for r in self.relays for i in r.interfaces}),
            "counters": dict(counters),
        }
