"""The devices service: the inventory of Loxone devices, fed by the detection sources.

Observations (neighbour table, leases, LoxLIVE, SSDP) change the inventory
on the event loop; a change calls `on_change`, which hands the reconciler a
new desired state and returns at once. Answers that arrive on another
service's socket (the relay owns UDP 7071 when it relays it) are queued with
`submit_loxlive` and handled on the next loop iteration, never inside that
service's packet handler.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from loxgw.core import devices
from loxgw.core.config import Config
from loxgw.core.errors import RemoteDataError
from loxgw.edges import clock

log = logging.getLogger("loxgw")

MAX_QUEUED_ANSWERS = 256  # answers handed in by other services, waiting for the next loop turn


class DeviceService:
    """Owns the inventory and the detector."""

    def __init__(self, config: Config, on_change: Callable[[], None], detect: bool = True) -> None:
        self.config = config
        self.on_change = on_change
        self.detect = detect
        self.inventory = devices.Inventory(config.devices, grace=config.main.device_grace)
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
            self.config.main.probe_interval, self.on_neighbours, self.on_lease, self.on_loxlive, self.on_ssdp)
        await self.detector.start(loop, own_answer_socket=own_answer_socket)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.detector is not None:
            self.detector.close(loop)
            self.detector = None

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
            self.on_loxlive(src, payload)

    def on_loxlive(self, src: Any, payload: bytes) -> None:
        """A LoxLIVE answer; it must come from the address it claims, or a spoofer could move a device."""
        try:
            found = devices.parse_loxlive(payload)
        except RemoteDataError as exc:
            self.counters[f"loxlive_bad_{exc.reason}"] += 1
            return
        if found.ip != src:
            self.counters["loxlive_refused_spoofed"] += 1
            return
        self.counters["loxlive_answers"] += 1
        self._changed(self.inventory.observe(
            "loxlive", clock.now(), ip=found.ip, product="miniserver", name=found.name,
            http_port=found.port, serial=found.serial, firmware=found.firmware))

    def on_ssdp(self, src: Any, description: Any) -> None:
        """A UPnP root device answered an SSDP search; Loxone ones name their product."""
        from loxgw.core import ssdp

        if not ssdp.is_loxone(description):
            self.counters["ssdp_not_loxone"] += 1
            return
        self.counters["ssdp_loxone"] += 1
        serial = description.serial.replace(":", "").upper()
        self._changed(self.inventory.observe(
            "ssdp", clock.now(), ip=src, product=ssdp.product_of(description), name=description.model,
            serial=serial if len(serial) == 12 else ""))

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._changed(self.inventory.expire(clock.now()))

    # --- status --------------------------------------------------------------------

    def status(self, pinholes_per_device: dict[str, int], entries_per_device: dict[str, int]) -> list[dict[str, Any]]:
        """One summary line per device: O(devices)."""
        now = clock.now()
        out = []
        for dev in self.inventory.devices():
            address = str(dev.ip) if dev.ip else None
            out.append({
                "name": dev.name, "product": dev.product or "unknown", "product_known": dev.product is not None,
                "mac": dev.mac, "ip": address, "source": ",".join(sorted(dev.sources)),
                "last_seen": round(now - dev.last_seen, 1), "present": dev.present,
                "serial": dev.serial, "firmware": dev.firmware,
                "pinhole_count": pinholes_per_device.get(address or "", 0),
                "dns_entry_count": entries_per_device.get(address or "", 0),
            })
        return out
