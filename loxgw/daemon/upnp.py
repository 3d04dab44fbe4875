"""The UPnP service: remote-access mappings on the upstream IGD, each following core.upnp's table.

The blocking miniupnpc calls run in a worker thread; a mapping that becomes
active (or changes) hands the reconciler a new forward (DNAT and pinhole).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from loxgw.core import upnp
from loxgw.core.config import Config, Upnp
from loxgw.core.devices import Inventory
from loxgw.core.errors import LoxgwError
from loxgw.core.ruleset import UpnpForward
from loxgw.daemon.logs import log_failure
from loxgw.edges import clock

log = logging.getLogger("loxgw")

STEP = 1.0  # seconds between looks at the mappings' timers


class UpnpService:
    """Owns one upstream mapping per enabled `config upnp` section."""

    def __init__(self, config: Config, inventory: Inventory, on_forwards: Callable[[], None],
                 client: Any = None) -> None:
        self.config = config
        self.inventory = inventory
        self.on_forwards = on_forwards
        self._client = client  # edges.upnpc or a test double; None: imported when first needed
        self.mappings: dict[str, upnp.Mapping] = {}
        self.forwards: dict[str, UpnpForward] = {}
        self._task: asyncio.Task[None] | None = None

    def client(self) -> Any:
        if self._client is None:
            from loxgw.edges import upnpc

            self._client = upnpc
        return self._client

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.remove_mappings(self.config.upnp)

    async def reconfigure(self, config: Config) -> None:
        old, self.config = self.config, config
        if old.upnp != config.upnp:
            await self.remove_mappings(old.upnp)
            self.on_forwards()

    def _device_ip(self, section: Upnp) -> str | None:
        static = next((d for d in self.config.devices if d.name == section.device), None)
        if static is None:
            return None
        key = static.mac or f"ip:{static.ip}"
        found = next((d for d in self.inventory.devices() if d.key == key), None)
        return str(found.ip) if found is not None and found.ip is not None else None

    async def step(self) -> None:
        """Advance every enabled mapping whose time has come (blocking calls in a thread)."""
        client = self.client()
        for section in self.config.upnp:
            if not section.enabled or section.external_port is None:
                continue
            mapping = self.mappings.setdefault(section.name, upnp.Mapping())
            now = clock.now()
            action = upnp.next_action(mapping, now)
            if action == "wait":
                continue
            device_ip = self._device_ip(section)
            upnp.begin(mapping, action, now)
            if device_ip is None:
                upnp.failed(mapping, clock.now(), f"device '{section.device}' has no address yet")
                continue
            try:
                gateway = await asyncio.to_thread(client.ensure, section.external_port, section.proto, section.lease)
            except LoxgwError as exc:
                conflict = str(getattr(exc, "conflict", ""))
                upnp.failed(mapping, clock.now(), str(exc), conflict)
                level = logging.WARNING if mapping.failures == 1 or conflict else logging.DEBUG
                log.log(level, "upnp %s: %s (retry in %.0fs)", section.name, exc, mapping.next_at - clock.now())
                continue
            was = mapping.external_ip
            upnp.succeeded(mapping, clock.now(), gateway.external_ip, section.lease, section.check_interval)
            forward = UpnpForward(gateway.our_address, section.proto, section.external_port, device_ip,
                                  section.internal_port)
            if self.forwards.get(section.name) != forward:
                self.forwards[section.name] = forward
                self.on_forwards()
            if was != gateway.external_ip or action == "map":
                log.info("upnp %s: %s:%d -> %s:%d (%s)", section.name, gateway.external_ip,
                         section.external_port, device_ip, section.internal_port, section.proto)

    async def _forever(self) -> None:
        while True:
            try:
                await self.step()
            except Exception as exc:  # the loop must outlive any one failure
                log_failure(log, "upnp", exc)
            await asyncio.sleep(STEP)

    async def remove_mappings(self, sections: tuple[Upnp, ...]) -> None:
        """Delete our upstream mappings for `sections` (stop, or a config change)."""
        client = self.client() if self.mappings else None
        for section in sections:
            mapping = self.mappings.pop(section.name, None)
            self.forwards.pop(section.name, None)
            if mapping is None or section.external_port is None or client is None:
                continue
            if mapping.state in ("active", "renewing", "failed", "requested"):
                try:
                    await asyncio.wait_for(asyncio.to_thread(client.remove, section.external_port, section.proto), 10)
                    log.info("upnp %s: mapping removed", section.name)
                except (LoxgwError, TimeoutError) as exc:
                    log.warning("upnp %s: could not remove the mapping: %s", section.name, exc)
            upnp.removed(mapping, clock.now())

    def status(self) -> list[dict[str, Any]]:
        now = clock.now()
        out = []
        for section in self.config.upnp:
            mapping = self.mappings.get(section.name, upnp.Mapping())
            out.append(asdict(section) | {
                "state": mapping.state if section.enabled else "disabled",
                # A failed or removed mapping's old address would mislead: shown only while it holds.
                "external_ip": (mapping.external_ip or None) if mapping.state in ("active", "renewing") else None,
                "last_error": mapping.last_error or None,
                "conflict": mapping.conflict or None,
                "failures": mapping.failures,
                "next_in": round(max(0.0, mapping.next_at - now), 1) if mapping.next_at != float("inf") else None,
            })
        return out
