"""Which ports each Loxone device gets, from the catalogue and nothing else.

- inbound: from clients zones to the device (the App, Config, AirPlay senders);
- device: from one Loxone device to another (only matters across VLANs);
- client: from the device back to clients-zone hosts (the Debug Monitor);
- router: the Audioserver pings its gateway and reboots when it gets no answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from loxgw.core.catalog import Entry, PortRange, Product, Proto
from loxgw.core.devices import Device

IPv4 = ipaddress.IPv4Address

# A Loxone device whose product nobody told us: its web interface, nothing else.
UNKNOWN_PRODUCT_PORTS: tuple[tuple[Proto, PortRange], ...] = (
    ("tcp", PortRange(80, 80)), ("tcp", PortRange(443, 443)),
)
# Device-to-device entries name the target product; this is who opens the connection.
DEVICE_FLOW_SOURCE: dict[str, Product] = {
    "as-miniserver": "miniserver",
    "ic-miniserver": "miniserver",
    "icg1-miniserver": "miniserver",
    "ms-trust-local": "miniserver",
    "as-streams": "audioserver",
    "as-extension-boot-tcp": "audioserver",
    "as-extension-boot-udp": "audioserver",
}
# Client-program entries that open a port on a device product (the seed lists SIP under the App).
CLIENT_TO_PRODUCT: dict[str, Product] = {"app-sip": "intercom"}
HTTP_PORT_ENTRIES = frozenset({"ms-http"})


@dataclass(frozen=True)
class Pinhole:
    """One allowed flow. `src` None: any host of the clients zones; `dst` None: any client host."""

    kind: str  # "inbound", "device", "client", "router"
    src: IPv4 | None
    dst: IPv4 | None
    proto: Proto
    ports: PortRange | None  # None for ICMP
    entry: str  # catalogue id (or "default" for unknown products)

    def describe(self) -> str:
        ports = f"/{self.ports}" if self.ports else ""
        src = str(self.src) if self.src else "clients"
        dst = str(self.dst) if self.dst else ("router" if self.kind == "router" else "clients")
        return f"{self.kind}: {src} -> {dst} {self.proto}{ports} ({self.entry})"


def _ports(entry: Entry, device: Device) -> tuple[PortRange, ...]:
    if entry.id in HTTP_PORT_ENTRIES:
        return (PortRange(device.http_port, device.http_port),)
    return entry.ports


def plan(devices: Iterable[Device], entries: Iterable[Entry]) -> list[Pinhole]:
    """Every pinhole the current devices need; sorted, without duplicates."""
    entries = tuple(entries)
    live = [d for d in devices if d.ip is not None]
    holes: set[Pinhole] = set()
    for device in live:
        assert device.ip is not None
        if device.product is None:
            holes.update(Pinhole("inbound", None, device.ip, proto, ports, "default")
                         for proto, ports in UNKNOWN_PRODUCT_PORTS)
            continue
        for entry in entries:
            target = CLIENT_TO_PRODUCT.get(entry.id, entry.product)
            if target != device.product or entry.proto == "igmp":
                continue
            if entry.direction == "inbound" and entry.proto in ("tcp", "udp"):
                holes.update(Pinhole("inbound", None, device.ip, entry.proto, p, entry.id)
                             for p in _ports(entry, device))
            elif entry.direction == "device" and entry.proto in ("tcp", "udp"):
                source_product = DEVICE_FLOW_SOURCE.get(entry.id, device.product)
                for source in live:
                    if source.product == source_product and source.key != device.key:
                        assert source.ip is not None
                        holes.update(Pinhole("device", source.ip, device.ip, entry.proto, p, entry.id)
                                     for p in entry.ports)
            elif entry.direction == "client" and entry.proto in ("tcp", "udp"):
                holes.update(Pinhole("client", device.ip, None, entry.proto, p, entry.id)
                             for p in entry.ports)
            elif entry.direction == "router" and entry.proto == "icmp":
                holes.add(Pinhole("router", device.ip, None, "icmp", None, entry.id))
    return sorted(holes, key=lambda h: (h.kind, str(h.src), str(h.dst), h.proto, str(h.ports), h.entry))
