"""The reflector service: mDNS and SSDP between devices zones and clients zones, scoped to Loxone devices.

Two sans-I/O cores (core.reflectmdns, core.reflectssdp) share one Scope: the
zone interfaces (from edges.mdnsnet) and the addresses of the detected
Loxone devices. Those come from the inventory, read again whenever the
daemon builds a desired state (every inventory change does) and at most a
second after a device's datagram arrives otherwise. Only devices with
evidence count (a Loxone MAC from the neighbour table or a lease, or a
`config device`): a forged discovery answer alone never lets a host's
records cross.

The ports devices announce (SRV, LOCATION) are inbound pinholes while their
records live; when that set changes the service calls `on_change` (the
daemon's reconcile), which reads `announced()` into the desired state.

Active when the config has both a devices zone and a clients zone and
`config reflector` (all defaults: on) does not turn it off. `mdns` and
`ssdp` turn either protocol off (its datagrams are then ignored), `allow_host`
lets named hosts' records cross as a Loxone device's do, `rate_limit` bounds
each sender; caps are the constants below.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any, Protocol

from loxgw.core.config import Config
from loxgw.core.devices import LOXONE_MAC, Inventory, evidence_rank
from loxgw.core.pinholes import Pinhole
from loxgw.core.reflect import CLIENTS, DEVICES, ReflectInterface, Scope, Transmit
from loxgw.core.reflectmdns import MdnsReflector
from loxgw.core.reflectssdp import SsdpReflector
from loxgw.core.relay import RateLimiter
from loxgw.edges import clock

log = logging.getLogger("loxgw")

RATE_GLOBAL = 500.0  # datagrams/s per protocol for all senders together
DEVICE_REFRESH = 1.0  # seconds a device's datagram may wait on an inventory the daemon has not handed over


class Sockets(Protocol):
    """What the service needs from edges.mdnsnet.ReflectorSockets (or a test double)."""

    counters: Counter[str]

    async def start(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def close(self, loop: asyncio.AbstractEventLoop) -> None: ...


OpenSockets = Callable[..., Sockets]


def _open_sockets(*args: Any) -> Sockets:
    from loxgw.edges import mdnsnet

    return mdnsnet.ReflectorSockets(*args)


class ReflectorService:
    """Runs the two reflectors while the config has zones of both roles."""

    def __init__(self, config: Config, inventory: Inventory, on_change: Callable[[], None],
                 open_sockets: OpenSockets = _open_sockets) -> None:
        self.config = config
        self.inventory = inventory
        self.on_change = on_change
        self.open_sockets = open_sockets
        self.scope = Scope()
        rate = config.reflector.rate_limit
        self.mdns = MdnsReflector(self.scope, RateLimiter(rate, RATE_GLOBAL))
        self.ssdp = SsdpReflector(self.scope, RateLimiter(rate, RATE_GLOBAL))
        self.sockets: Sockets | None = None
        self.last_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._when: float | None = None
        self._devices_read = float("-inf")

    @property
    def wanted(self) -> bool:
        section = self.config.reflector
        return bool(section.enabled and (section.mdns or section.ssdp) and self.config.interfaces_with_role(DEVICES)
                    and self.config.interfaces_with_role(CLIENTS))

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the sockets; a refusal (a responder holding 5353 without SO_REUSEADDR) is logged, not fatal."""
        self._loop = loop
        if not self.wanted:
            log.info("reflector: off (it needs a devices zone, a clients zone and config reflector enabled)")
            return
        roles = self.config.interface_roles()
        sockets = self.open_sockets(roles, self._receive, self._after_batch, self._interfaces)
        try:
            await sockets.start(loop)
        except OSError as exc:
            sockets.close(loop)
            self.last_error = f"reflector: opening sockets: {exc}"
            log.error("%s; mDNS and SSDP are not reflected", self.last_error)
            return
        self.sockets = sockets
        self.last_error = None
        log.info("reflector: %s of Loxone devices from %s to %s", self._protocols(),
                 ", ".join(self.config.interfaces_with_role(DEVICES)),
                 ", ".join(self.config.interfaces_with_role(CLIENTS)))

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._when = None
        if self.sockets is not None:
            self.sockets.close(loop)
            self.sockets = None
        self.scope.set_interfaces(())

    async def reconfigure(self, config: Config) -> None:
        """Restart when the zones or `config reflector` changed (a changed section takes new cores)."""
        old, self.config = self.config, config
        if (old.zones, old.reflector) == (config.zones, config.reflector) or self._loop is None:
            return
        self.close(self._loop)
        if old.reflector != config.reflector:  # new rates; a protocol turned off takes its ports now
            rate = config.reflector.rate_limit
            self.mdns = MdnsReflector(self.scope, RateLimiter(rate, RATE_GLOBAL))
            self.ssdp = SsdpReflector(self.scope, RateLimiter(rate, RATE_GLOBAL))
        self.refresh_devices(clock.now())  # an allow_host removed takes its records and ports with it
        await self.start(self._loop)
        self.on_change()

    def _protocols(self) -> str:
        section = self.config.reflector
        return " and ".join(name for name, on in (("mDNS", section.mdns), ("SSDP", section.ssdp)) if on)

    # --- devices and pinholes ----------------------------------------------------

    def refresh_devices(self, now: float) -> None:
        """Read the Loxone devices (with evidence) from the inventory; records of those gone go with them."""
        self._devices_read = now
        addresses = [d.ip for d in self.inventory.devices()
                     if isinstance(d.ip, IPv4Address) and evidence_rank(d) >= LOXONE_MAC]
        gone = self.scope.set_devices([*addresses, *self.config.reflector.allow_hosts])
        self.mdns.forget(gone)
        self.ssdp.forget(gone)

    def announced(self) -> tuple[Pinhole, ...]:
        """Inbound pinholes for the ports the devices' live records announce (the daemon's desired state)."""
        self.refresh_devices(clock.now())
        self.mdns.ledger.take_changed()
        self.ssdp.ledger.take_changed()
        return self.mdns.ledger.pinholes() + self.ssdp.ledger.pinholes()

    # --- what the sockets hand in ------------------------------------------------------

    def _interfaces(self, interfaces: list[ReflectInterface], own: list[IPv4Address]) -> None:
        self.scope.set_interfaces(interfaces, own)

    def _receive(self, via: str, ifindex: int, src: IPv4Address, sport: int, data: bytes,
                 tos: int) -> list[Transmit]:
        now = clock.now()
        if now - self._devices_read >= DEVICE_REFRESH:
            self.refresh_devices(now)
        section = self.config.reflector
        if via == "mdns":
            return self.mdns.receive(ifindex, src, sport, data, now, tos) if section.mdns else []
        if not section.ssdp:
            return []
        return self.ssdp.receive(ifindex, src, sport, data, now, tos, proxy=via == "ssdp-proxy")

    def _after_batch(self) -> None:
        """After a read (or a timer): a changed set of ports goes to the firewall; the timer follows the cores."""
        changed = self.mdns.ledger.take_changed()
        if self.ssdp.ledger.take_changed() or changed:
            self.on_change()  # the daemon's reconcile reads announced()
        times = [t for t in (self.mdns.get_timer(), self.ssdp.get_timer()) if t is not None]
        when = min(times, default=None)
        if when == self._when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._when = when
        self._timer = None if when is None or self._loop is None else self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._when = None
        now = clock.now()
        self.mdns.handle_timer(now)
        self.ssdp.handle_timer(now)
        self._after_batch()

    def status(self) -> dict[str, Any]:
        now = clock.now()
        counters: Counter[str] = Counter()
        if self.sockets is not None:
            counters.update(self.sockets.counters)
        return {
            "active": self.sockets is not None,
            "interfaces": {i.name: i.role for i in sorted(self.scope.interfaces.values(), key=lambda i: i.name)},
            "devices": sorted(str(d) for d in self.scope.devices),
            "announced": [h.describe() for h in self.mdns.ledger.pinholes() + self.ssdp.ledger.pinholes()],
            "mdns": self.mdns.status(now),
            "ssdp": self.ssdp.status(now),
            "counters": dict(counters),
            "last_error": self.last_error,
        }
