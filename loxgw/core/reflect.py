"""What the mDNS and SSDP reflectors share: interfaces, who is a Loxone device, own copies, announced ports.

A reflector receives on every zone interface and copies from devices zones
to clients zones (answers, announcements) or from clients zones to devices
zones (questions, searches), never within a zone and never back out of the
interface a packet came in on. Its copies leave from the router's own
sockets, so a copy's source is the router's address on the egress segment.

Loops (RFC 6762 section 14 leaves them to the implementer):
- a copy carries DSCP 5 (as the discovery relay's do) and a marked packet is
  never reflected, by this router or another loxgw on the same segments;
- a packet whose source is one of this router's own addresses is dropped
  (a second router's copies come from its address, which is no Loxone device);
- direction alone ends every cycle: answers only ever go devices -> clients
  and questions clients -> devices, so a copy never qualifies to go back.

Announced ports: a device's SRV record (mDNS) or LOCATION URL (SSDP) names a
port the client then connects to; it becomes an inbound pinhole to that
device for the record's lifetime (the Ledger), and goes with the device.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Final, Literal

from loxgw.core.catalog import PortRange, Proto
from loxgw.core.pinholes import Pinhole
from loxgw.core.record import record
from loxgw.core.relaywire import DSCP_MASK, RELAY_TOS

COPY_TOS = RELAY_TOS  # loxgw's copies are marked alike, whichever service sends them
MAX_PORTS_PER_DEVICE = 32  # announced ports one device may open at once
MAX_LEDGER = 1024  # announced (device, port, record) entries in all
GOODBYE_DELAY = 1.0  # RFC 6762 section 10.1: a record with TTL 0 goes after one second
DEVICES: Final[Literal["devices"]] = "devices"
CLIENTS: Final[Literal["clients"]] = "clients"


@record
class ReflectInterface:
    """A zone interface as the kernel reports it now."""

    name: str
    index: int
    address: IPv4Address
    network: IPv4Network
    role: str  # DEVICES or CLIENTS


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send `payload` to `dst`:`port`; out of `ifindex` (0: as routed) from socket `via`."""

    ifindex: int
    dst: IPv4Address
    port: int
    payload: bytes
    via: str  # "mdns", "ssdp" (the well-known ports) or "ssdp-proxy" (the searches' own port)


def marked(tos: int) -> bool:
    """Whether a received packet is a loxgw copy."""
    return tos & DSCP_MASK == COPY_TOS


class Scope:
    """The interfaces a reflector serves and the Loxone devices whose records may cross."""

    def __init__(self) -> None:
        self.interfaces: dict[int, ReflectInterface] = {}
        self.own: frozenset[IPv4Address] = frozenset()
        self.devices: frozenset[IPv4Address] = frozenset()
        self.egress: dict[str, tuple[ReflectInterface, ...]] = {DEVICES: (), CLIENTS: ()}

    def set_interfaces(self, interfaces: Iterable[ReflectInterface], own: Iterable[IPv4Address] = ()) -> None:
        """The zone interfaces now, and every address of this router (own copies are recognised by them)."""
        found = {i.index: i for i in interfaces if i.role in (DEVICES, CLIENTS)}
        self.interfaces = found
        self.own = frozenset(own) | {i.address for i in found.values()}
        self.egress = {role: tuple(sorted((i for i in found.values() if i.role == role), key=lambda i: i.name))
                       for role in (DEVICES, CLIENTS)}

    def set_devices(self, addresses: Iterable[IPv4Address]) -> frozenset[IPv4Address]:
        """The addresses of detected Loxone devices; returns those that are gone."""
        new = frozenset(addresses)
        gone = self.devices - new
        self.devices = new
        return gone

    def admit(self, ifindex: int, src: IPv4Address, tos: int) -> ReflectInterface | str:
        """The ingress interface, or why the packet is dropped before it is read."""
        iface = self.interfaces.get(ifindex)
        if iface is None:
            return "not_zone_interface"
        if marked(tos) or src in self.own:
            return "own_copy"
        if src not in iface.network:
            return "off_link"  # RFC 6762 section 11: only answers from the local link count
        return iface


class Ledger:
    """Ports devices announced, each open until its record expires (or the device goes).

    Keyed by (device, proto, port, record): one port announced by two
    records stays open until both are gone. `changed` is set when the set of
    (device, proto, port) changes, not when a lifetime is merely extended.
    """

    def __init__(self, entry: str, capacity: int = MAX_LEDGER, per_device: int = MAX_PORTS_PER_DEVICE) -> None:
        self.entry = entry  # the pinholes' catalogue id ("mdns-srv", "ssdp-location")
        self.capacity = capacity
        self.per_device = per_device
        self.changed = False
        self.counters: Counter[str] = Counter()
        self._entries: dict[tuple[IPv4Address, Proto, int, bytes], tuple[float, float]] = {}  # -> (expires, seen)
        self._holes: Counter[tuple[IPv4Address, Proto, int]] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, device: IPv4Address, proto: Proto, port: int, record: bytes, expires: float, now: float,
            flush: bool = False) -> None:
        """`device` announced `port` in `record` until `expires`; `flush` replaces what `record` said before."""
        if flush:  # RFC 6762 section 10.2: records of the set older than one second are stale
            for key, (_, seen) in list(self._entries.items()):
                if key[0] == device and key[3] == record and key[1:3] != (proto, port) and seen < now - 1.0:
                    self._drop(key)
        key = (device, proto, port, record)
        if key not in self._entries:
            if len(self._entries) >= self.capacity:
                self.counters["ledger_full"] += 1
                return
            if (device, proto, port) not in self._holes and \
                    sum(1 for d, _, _ in self._holes if d == device) >= self.per_device:
                self.counters["ports_per_device_capped"] += 1
                return
            self._holes[key[:3]] += 1
            self.changed = self.changed or self._holes[key[:3]] == 1
        self._entries[key] = (expires, now)

    def goodbye(self, device: IPv4Address, record: bytes, now: float) -> None:
        """The record is withdrawn: its ports close after GOODBYE_DELAY."""
        for key, (expires, seen) in list(self._entries.items()):
            if key[0] == device and key[3] == record:
                self._entries[key] = (min(expires, now + GOODBYE_DELAY), seen)

    def _drop(self, key: tuple[IPv4Address, Proto, int, bytes]) -> None:
        del self._entries[key]
        hole = key[:3]
        self._holes[hole] -= 1
        if self._holes[hole] <= 0:
            del self._holes[hole]
            self.changed = True

    def forget(self, devices: Iterable[IPv4Address]) -> None:
        """Devices that went: their ports close now."""
        gone = frozenset(devices)
        for key in [k for k in self._entries if k[0] in gone]:
            self._drop(key)

    def expire(self, now: float) -> None:
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            self._drop(key)

    def next_expiry(self) -> float | None:
        return min((expires for expires, _ in self._entries.values()), default=None)

    def pinholes(self) -> tuple[Pinhole, ...]:
        return tuple(Pinhole("inbound", None, device, proto, PortRange(port, port), self.entry)
                     for device, proto, port in sorted(self._holes, key=lambda h: (h[0], h[1], h[2])))

    def take_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed

    def status(self, now: float) -> list[dict[str, object]]:
        return [{"device": str(d), "proto": p, "port": port, "expires_in": round(expires - now, 1)}
                for (d, p, port, _), (expires, _) in sorted(self._entries.items(), key=lambda kv: kv[0][:3])]
