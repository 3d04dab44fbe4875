"""The devices service: the inventory of Loxone devices, fed by the detection sources.

Observations (neighbour table, leases, LoxLIVE, SSDP) change the inventory
on the event loop; a change calls `on_change`, which hands the reconciler a
new desired state and returns at once. Discovery answers count only with
evidence (core.discovery): solicited by a search loxgw sent on that segment
moments before, from a sender whose neighbour entry matches. Answers that
arrive on another service's socket (the relay owns UDP 7071 when it relays
it) are queued with `submit_loxlive` and handled on the next loop iteration
by the same checks, never inside that service's packet handler.

In fw4 mode each search opens, for a few seconds, the port its answers come
back to (set search_answers4): a locked-down zone's input policy would
otherwise drop them before loxgw's sockets see them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from loxgw.core import devices, discovery
from loxgw.core.config import Config
from loxgw.core.errors import LoxgwError
from loxgw.core.firewall import SEARCH_ANSWERS, SEARCH_WINDOW
from loxgw.edges import clock

log = logging.getLogger("loxgw")

MAX_QUEUED_ANSWERS = 256  # answers handed in by other services, waiting for the next loop turn
ANSWER_PORT = 7071  # where Miniservers answer a LoxLIVE search, whatever port it came from
IFNAMSIZ = 16
# A real device looks up the router's MAC before it answers, which puts its own entry in the
# router's neighbour table: an answer from a sender with no entry is taken for spoofed.
NEIGHBOUR_REQUIRED = True


class DeviceService:
    """Owns the inventory and the detector."""

    def __init__(self, config: Config, on_change: Callable[[], None], detect: bool = True,
                 open_writer: Callable[[], Any] | None = None, inventory: devices.Inventory | None = None) -> None:
        self.config = config
        self.on_change = on_change
        self.detect = detect
        self.open_writer = open_writer  # the search-answer windows' set writer (fw4 mode)
        self.open_answer_windows = False  # set by the daemon: fw4 mode
        self.writer: Any = None
        self.inventory = inventory or devices.inventory_for(config)
        self.solicitations = discovery.Solicitations()
        self.counters: Counter[str] = Counter()
        self.detector: Any = None  # edges.detect.Detector while running
        self._expiry: asyncio.Task[None] | None = None
        self._queued: list[tuple[ipaddress.IPv4Address, bytes]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ---------------------------------------------------------------

    async def start(self, loop: asyncio.AbstractEventLoop, own_answer_socket: bool) -> None:
        """Start detection; `own_answer_socket`: no relay owns UDP 7071, so detection binds it."""
        self._loop = loop
        self._expiry = loop.create_task(self._expire_forever())
        if not self.detect:
            return
        from loxgw.edges import detect

        self.detector = detect.Detector(
            self.config.interfaces_with_role("devices"), self.config.main.dhcp_leases,
            self.config.main.probe_interval, self.on_neighbours, self.on_lease, self._unused_loxlive, None,
            on_answer=self.on_answer, solicitations=self.solicitations, refusals=self.inventory.refusals,
            on_search=self.on_search)
        await self.detector.start(loop, own_answer_socket=own_answer_socket)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.detector is not None:
            self.detector.close(loop)
            self.detector = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def reconfigure(self, config: Config) -> None:
        """A new config: static sections and grace period (detection keeps running)."""
        self.config = config
        self.inventory.grace = config.main.device_grace
        self.inventory.set_static(config.devices, clock.now())
        self._changed(True)

    # --- observations --------------------------------------------------------------

    def _changed(self, changed: bool) -> None:
        if changed:
            self.counters["device_changes"] += 1
            self.on_change()

    def on_neighbours(self, neighbours: list[tuple[str, Any]]) -> None:
        self._changed(self.inventory.sync_neighbours(neighbours, clock.now()))

    def on_lease(self, mac: str, ip: Any, name: str) -> None:
        self._changed(self.inventory.observe("dhcp", clock.now(), mac=mac, ip=ip, name=name))

    def submit_loxlive(self, src: ipaddress.IPv4Address, payload: bytes) -> None:
        """A LoxLIVE answer seen by another service: handled on the next loop turn, bounded."""
        if len(self._queued) >= MAX_QUEUED_ANSWERS or self._loop is None:
            self.counters["loxlive_queue_full"] += 1
            return
        self._queued.append((src, payload))
        if len(self._queued) == 1:
            self._loop.call_soon(self._drain_queued)

    def _drain_queued(self) -> None:
        queued, self._queued = self._queued, []
        for src, payload in queued:
            if self.detector is not None:
                self.detector.on_discovery_answer(src, payload)
            else:
                self.counters["loxlive_without_detection"] += 1

    def on_answer(self, answer: discovery.Answer) -> None:
        """A parsed discovery answer with its evidence; the inventory takes it only if the evidence holds."""
        self._changed(discovery.admit(self.inventory, answer, clock.now(), neighbour_required=NEIGHBOUR_REQUIRED))

    def _unused_loxlive(self, src: Any, payload: bytes) -> None:
        """Detector's plain LoxLIVE callback: not used, answers come with their evidence (on_answer)."""

    def on_search(self, ifname: str, port: int) -> None:
        """A search went out of `ifname` from `port`: in fw4 mode, let its answers in for a few seconds."""
        if not self.open_answer_windows or self.open_writer is None:
            return
        name = ifname.encode()[:IFNAMSIZ].ljust(IFNAMSIZ, b"\0")
        elements = [(SEARCH_ANSWERS, name + struct.pack("!H2x", p), SEARCH_WINDOW) for p in {port, ANSWER_PORT}]
        try:
            if self.writer is None:
                self.writer = self.open_writer()
            self.writer.add_elements(elements)
        except (OSError, LoxgwError) as exc:
            self.counters["search_window_errors"] += 1
            log.debug("search answer window on %s failed: %s", ifname, exc)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._changed(self.inventory.expire(clock.now()))

    # --- status --------------------------------------------------------------------

    def status(self, pinholes_per_device: dict[str, int], entries_per_device: dict[str, int]) -> list[dict[str, Any]]:
        """One summary line per device: O(devices)."""
        now = clock.now()
        labelled = {d.mac or f"ip:{d.ip}" for d in self.config.devices if d.label}
        out = []
        for dev in self.inventory.devices():
            address = str(dev.ip) if dev.ip else None
            # A static section's name is the user's handle; the name the device announces says more,
            # unless the user gave it a label of their own.
            name = dev.announced if dev.static and dev.announced and dev.key not in labelled else dev.name
            out.append({
                "name": name, "section": dev.name if dev.static else None,
                "product": dev.product or "unknown", "product_known": dev.product is not None,
                "mac": dev.mac, "ip": address, "source": ",".join(sorted(dev.sources)),
                "last_seen": round(now - dev.last_seen, 1), "present": dev.present,
                "serial": dev.serial, "firmware": dev.firmware,
                "egress": self.config.egress(dev.product or "miniserver"),
                "pinhole_count": pinholes_per_device.get(address or "", 0),
                "dns_entry_count": entries_per_device.get(address or "", 0),
            })
        return out
