"""Which Loxone devices are on the network: observations in, a bounded inventory out.

Sources (each an adapter elsewhere): static `config device` sections (always
win), the kernel neighbour table, DHCP leases, LoxLIVE discovery replies. The
MAC prefix 50:4F:94 says "Loxone"; discovery data or static config says which
product. A Loxone device whose product is unknown gets a conservative default
(see pinholes) and is flagged in status.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from loxgw.core.catalog import Product
from loxgw.core.config import StaticDevice
from loxgw.core.errors import RemoteDataError

IPv4 = ipaddress.IPv4Address
LOXONE_OUI = "50:4f:94"
MAX_DEVICES = 256  # an attacker can invent MACs and LoxLIVE replies; the inventory stays bounded
MAX_LOXLIVE_BYTES = 512

Source = str  # "static", "neighbour", "dhcp", "loxlive", "ssdp"


def is_loxone_mac(mac: str | None) -> bool:
    return mac is not None and mac.lower().startswith(LOXONE_OUI)


@dataclass(frozen=True)
class LoxLive:
    """A Miniserver's answer to a discovery search."""

    name: str
    ip: IPv4
    port: int
    serial: str
    firmware: str


_LOXLIVE = re.compile(
    r"^LoxLIVE: (?P<name>.*?) (?P<ip>\d{1,3}(?:\.\d{1,3}){3}):(?P<port>\d{1,5}) "
    r"(?P<serial>[0-9A-Fa-f]{12}) (?P<firmware>[0-9.]+)(?: |$)"
)


def parse_loxlive(payload: bytes) -> LoxLive:
    """Parse `LoxLIVE: <name> <ip>:<port> <serial> <firmware> ...`; names contain spaces.

    Anchored on `ip:port` followed by a 12-hex-digit serial, so a name with
    spaces (or even digits and colons) cannot shift the fields.
    """
    if len(payload) > MAX_LOXLIVE_BYTES:
        raise RemoteDataError("oversized")
    try:
        text = payload.decode("utf-8").strip("\x00\r\n ")
    except UnicodeDecodeError:
        raise RemoteDataError("malformed", "not UTF-8") from None
    match = _LOXLIVE.match(text)
    if match is None:
        raise RemoteDataError("malformed", "not a LoxLIVE reply")
    try:
        ip = IPv4(match["ip"])
    except ValueError:
        raise RemoteDataError("malformed", "bad address") from None
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise RemoteDataError("malformed", "bad port")
    name = match["name"].strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise RemoteDataError("malformed", "bad name")
    return LoxLive(name, ip, port, match["serial"].upper(), match["firmware"])


def parse_dhcp_leases(text: str) -> list[tuple[str, IPv4, str]]:
    """dnsmasq/OpenWrt lease lines `<expiry> <mac> <ip> <hostname> <client-id>` -> (mac, ip, name).

    Lines that do not parse are skipped (the file is written by dnsmasq, but
    hostnames come from clients).
    """
    leases = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", parts[1]):
            continue
        try:
            ip = IPv4(parts[2])
        except ValueError:
            continue
        leases.append((parts[1].lower(), ip, "" if parts[3] == "*" else parts[3][:64]))
    return leases


@dataclass(frozen=True)
class Device:
    """One Loxone device as loxgw believes it is now."""

    key: str  # the MAC, or "ip:<address>" for a device known only by address
    mac: str | None
    ip: IPv4 | None
    product: Product | None  # None: a Loxone device of unknown product
    name: str = ""
    http_port: int = 80
    sources: frozenset[Source] = frozenset()
    first_seen: float = 0.0
    last_seen: float = 0.0
    present: bool = True  # False while in its grace period after it went away
    serial: str = ""
    firmware: str = ""

    @property
    def static(self) -> bool:
        return "static" in self.sources


@dataclass
class Inventory:
    """The devices loxgw knows; pure state changed only through methods that take `now`."""

    static: tuple[StaticDevice, ...] = ()
    grace: float = 300.0
    capacity: int = MAX_DEVICES
    refused: int = 0
    _devices: dict[str, Device] = field(default_factory=dict)
    _gone_since: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.set_static(self.static, 0.0)

    def set_static(self, static: Iterable[StaticDevice], now: float) -> None:
        """Install the config's devices; they replace detected devices with the same MAC or IP."""
        self.static = tuple(static)
        for key in [k for k, d in self._devices.items() if d.static]:
            del self._devices[key]
        for dev in self.static:
            key = dev.mac or f"ip:{dev.ip}"
            for other in [k for k, d in self._devices.items()
                          if (dev.mac and d.mac == dev.mac) or (dev.ip and d.ip == dev.ip)]:
                del self._devices[other]
            self._devices[key] = Device(
                key, dev.mac, dev.ip if isinstance(dev.ip, IPv4) else None, dev.product, dev.label or dev.name,
                dev.http_port, frozenset({"static"}), now, now,
            )

    def devices(self) -> list[Device]:
        return sorted(self._devices.values(), key=lambda d: (d.ip is None, d.ip or IPv4(0), d.key))

    def _release_ip(self, ip: IPv4, keeper: str) -> None:
        """An address belongs to one device: the newest claim wins (static devices keep theirs)."""
        for key, dev in list(self._devices.items()):
            if key != keeper and dev.ip == ip and not dev.static:
                self._devices[key] = replace(dev, ip=None)

    def observe(self, source: Source, now: float, *, mac: str | None = None, ip: IPv4 | None = None,
                product: Product | None = None, name: str = "", http_port: int | None = None,
                serial: str = "", firmware: str = "") -> bool:
        """Record one observation; returns True if what the firewall needs changed."""
        mac = mac.lower() if mac else None
        if mac is None and serial and len(serial) == 12:
            mac = ":".join(serial[i:i + 2] for i in range(0, 12, 2)).lower()  # Loxone serial = MAC
        if mac is None and ip is not None:
            mac = next((d.mac for d in self._devices.values() if d.ip == ip and d.mac), None)
        key = mac or (f"ip:{ip}" if ip else None)
        if key is None:
            return False
        current = self._devices.get(key)
        if current is None and ip is not None and mac is not None:
            # Known so far only by address: adopt it under its MAC.
            by_ip = self._devices.pop(f"ip:{ip}", None)
            current = replace(by_ip, key=key, mac=mac) if by_ip else None
        if current is None:
            if not (is_loxone_mac(mac) or source in ("loxlive", "ssdp")):
                return False
            if len(self._devices) >= self.capacity:
                self.refused += 1
                return False
            current = Device(key, mac, ip, product, name, http_port or 80, frozenset(), now, now)
            changed = True
        else:
            changed = not current.present
        self._gone_since.pop(key, None)
        if current.static:
            # Config wins for product, name and port; an address it leaves open comes from detection.
            configured_ip = next((d.ip for d in self.static if (d.mac or f"ip:{d.ip}") == key), None)
            new_ip = current.ip if configured_ip is not None else (ip or current.ip)
            updated = replace(current, ip=new_ip, sources=current.sources | {source}, last_seen=now,
                              present=True, serial=serial or current.serial, firmware=firmware or current.firmware)
            if new_ip is not None and new_ip != current.ip:
                self._release_ip(new_ip, key)
            self._devices[key] = updated
            return changed or new_ip != current.ip
        updated = replace(
            current,
            ip=ip or current.ip,
            product=product or current.product,
            name=name or current.name,
            http_port=http_port or current.http_port,
            sources=current.sources | {source},
            last_seen=now,
            present=True,
            serial=serial or current.serial,
            firmware=firmware or current.firmware,
        )
        if ip is not None:
            self._release_ip(ip, key)
        changed = changed or (updated.ip, updated.product, updated.http_port) != (
            current.ip, current.product, current.http_port)
        self._devices[key] = updated
        return changed

    def sync_neighbours(self, entries: Iterable[tuple[str, IPv4]], now: float) -> bool:
        """The complete live neighbour table (mac, ip); devices missing from it start their grace."""
        changed = False
        seen: set[str] = set()
        for mac, ip in entries:
            if self.observe("neighbour", now, mac=mac, ip=ip):
                changed = True
            seen.add(mac.lower())
        for key, dev in self._devices.items():
            if "neighbour" in dev.sources and dev.mac not in seen and dev.present:
                self._devices[key] = replace(dev, present=False)
                self._gone_since.setdefault(key, now)
        return self.expire(now) or changed

    def expire(self, now: float) -> bool:
        """Forget detected devices gone longer than the grace period."""
        changed = False
        for key, since in list(self._gone_since.items()):
            if now - since >= self.grace:
                del self._gone_since[key]
                dev = self._devices.get(key)
                if dev is not None and not dev.static:
                    del self._devices[key]
                    changed = True
        return changed
