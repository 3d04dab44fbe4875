"""Which Loxone devices are on the network: observations in, a bounded inventory out.

Sources (each an adapter elsewhere): static `config device` sections (always
win), the kernel neighbour table, DHCP leases, LoxLIVE and SSDP discovery
answers. The MAC prefix 50:4F:94 says "Loxone"; discovery data or static
config says which product. A Loxone device whose product is unknown gets a
conservative default (see pinholes) and is flagged in status.

Everything a device says about itself is untrusted: names and fields pass
`clean_text` where they enter, and admission ranks evidence (static > Loxone
MAC from the neighbour table or a lease > discovery answers alone), so a flood
of forged answers can fill only the places no better-evidenced device needs.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from loxgw.core.catalog import Product
from loxgw.core.config import Config, StaticDevice
from loxgw.core.errors import RemoteDataError
from loxgw.core.record import record

IPv4 = ipaddress.IPv4Address
LOXONE_OUI = "50:4f:94"
MAX_DEVICES = 256  # an attacker can invent MACs and LoxLIVE replies; the inventory stays bounded
MAX_TEXT = 64  # characters of a name or field a device reports
MAX_TEXT_INPUT = 4096  # characters clean_text looks at, whatever it is given
# A Miniserver lists its extensions in the `IPv6:` field (~20 bytes each), so answers grow past
# 512 bytes; every field loxgw uses comes before that list, so only this prefix is parsed.
MAX_LOXLIVE_BYTES = 512
MAX_DISCOVERY_DATAGRAM = 2048  # what a discovery socket reads; longer datagrams are truncated
MAX_JSON_BYTES = 1024  # an Audioserver's JSON answer is ~150 bytes; refused before json.loads above this
DISCOVERY_TTL = 900.0  # seconds a device known only from discovery answers outlives its last answer

Source = str  # "static", "neighbour", "dhcp", "loxlive", "ssdp"

_MARKUP = frozenset("<>&\"'`")


def clean_text(raw: str, limit: int = MAX_TEXT) -> str:
    """What a device calls itself, made safe to keep and show.

    Printable characters only (control and format characters, bidi overrides
    included, are dropped), no markup characters (`<>&"'` and backtick), runs
    of whitespace collapsed to one space, at most `limit` characters. Views
    escape what they show as well; this keeps stored data harmless for views
    that forget.
    """
    out: list[str] = []
    space = False
    for char in raw[:MAX_TEXT_INPUT]:
        if char.isspace():
            space = bool(out)
            continue
        if char in _MARKUP or not char.isprintable():
            continue
        if space:
            if len(out) + 1 >= limit:
                break
            out.append(" ")
            space = False
        out.append(char)
        if len(out) >= limit:
            break
    return "".join(out)


def is_loxone_mac(mac: str | None) -> bool:
    return mac is not None and mac.lower().startswith(LOXONE_OUI)


def mac_of_serial(serial: str) -> str | None:
    """A Loxone serial (12 hex digits, the Miniserver's MAC) as a MAC address; None if not one."""
    if len(serial) != 12 or not all(c in "0123456789abcdefABCDEF" for c in serial):
        return None
    return ":".join(serial[i:i + 2] for i in range(0, 12, 2)).lower()


@record
class LoxLive:
    """A Loxone device's answer to a discovery search (UDP 7070)."""

    name: str
    ip: IPv4
    port: int
    serial: str
    firmware: str
    product: Product = "miniserver"


_LOXLIVE = re.compile(
    rb"LoxLIVE: (?P<name>.*?) (?P<ip>\d{1,3}(?:\.\d{1,3}){3}):(?P<port>\d{1,5}) "
    rb"(?P<serial>[0-9A-Fa-f]{12}) (?P<firmware>[0-9.]{1,32})(?: |$)"
)
_PADDING = b"\x00\r\n\t "
# The JSON answer's "t" (type) to the catalogue's product; other types are refused until known.
_JSON_TYPES: dict[str, Product] = {"audioserver": "audioserver"}


def parse_loxlive(payload: bytes, src: IPv4 | None = None) -> LoxLive:
    """A LoxLIVE text answer, or an Audioserver's JSON answer (which needs `src`: it names no address).

    Text: `LoxLIVE: <name> <ip>:<port> <serial> <firmware> ...`. Names contain
    spaces, so the match is anchored on `ip:port` followed by a 12-hex-digit
    serial. Names are UTF-8 or, failing that, Latin-1 (the encoding is not
    documented; public clients decode Latin-1).
    """
    head = payload[:MAX_LOXLIVE_BYTES].strip(_PADDING)
    if head.startswith(b"{"):
        return _parse_json_answer(payload.strip(_PADDING), src)
    match = _LOXLIVE.match(head)
    if match is None:
        raise RemoteDataError("malformed", "not a LoxLIVE reply")
    try:
        ip = IPv4(match["ip"].decode("ascii"))
    except ValueError:
        raise RemoteDataError("malformed", "bad address") from None
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise RemoteDataError("malformed", "bad port")
    raw_name = match["name"]
    try:
        text = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        text = raw_name.decode("latin-1")
    name = clean_text(text)
    if not name:
        raise RemoteDataError("malformed", "bad name")
    return LoxLive(name, ip, port, match["serial"].decode("ascii").upper(), match["firmware"].decode("ascii"))


def _parse_json_answer(payload: bytes, src: IPv4 | None) -> LoxLive:
    """`{"t":"Audioserver","n":name,"s":"50:4F:94:..","v":firmware,"p":"7091",...}` (lox-audioserver)."""
    if len(payload) > MAX_JSON_BYTES:
        raise RemoteDataError("oversized")
    if src is None:
        raise RemoteDataError("malformed", "a JSON answer names no address: its source is needed")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RemoteDataError("malformed", "not JSON") from None
    if not isinstance(data, dict):
        raise RemoteDataError("malformed", "not a JSON object")
    kind, name, mac, firmware, port = (data.get(k) for k in ("t", "n", "s", "v", "p"))
    product = _JSON_TYPES.get(kind.lower()) if isinstance(kind, str) else None
    if product is None:
        raise RemoteDataError("unknown_product")
    serial = mac.replace(":", "").replace("-", "") if isinstance(mac, str) else ""
    if mac_of_serial(serial) is None:
        raise RemoteDataError("malformed", "bad serial")
    if port is None:
        port = 7091
    if isinstance(port, str) and port.isascii() and port.isdigit() and len(port) <= 5:
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise RemoteDataError("malformed", "bad port")
    name = clean_text(name) if isinstance(name, str) else ""
    if not name:
        raise RemoteDataError("malformed", "bad name")
    firmware = clean_text(firmware, 32) if isinstance(firmware, str) else ""
    return LoxLive(name, src, port, serial.upper(), firmware, product)


_LEASE_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def parse_dhcp_leases(text: str) -> list[tuple[str, IPv4, str]]:
    """dnsmasq/OpenWrt lease lines `<expiry> <mac> <ip> <hostname> <client-id>` -> (mac, ip, name).

    Lines that do not parse are skipped (the file is written by dnsmasq, but
    hostnames come from clients, so they pass clean_text).
    """
    leases = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or not _LEASE_MAC.fullmatch(parts[1]):
            continue
        try:
            ip = IPv4(parts[2])
        except ValueError:
            continue
        leases.append((parts[1].lower(), ip, "" if parts[3] == "*" else clean_text(parts[3])))
    return leases


@record
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
    announced: str = ""  # the name the device itself announces (LoxLIVE, SSDP), cleaned
    @property
    def static(self) -> bool:
        return "static" in self.sources


# Evidence ranks: a forged packet alone can only ever reach DISCOVERY.
STATIC, LOXONE_MAC, DISCOVERY = 3, 2, 1
_MAC_SOURCES = frozenset({"neighbour", "dhcp"})


def evidence_rank(device: Device) -> int:
    """How sure loxgw is that `device` is real: STATIC, LOXONE_MAC (neighbour table or lease) or DISCOVERY."""
    if device.static:
        return STATIC
    if is_loxone_mac(device.mac) and device.sources & _MAC_SOURCES:
        return LOXONE_MAC
    return DISCOVERY


@dataclass
class Inventory:
    """The devices loxgw knows; pure state changed only through methods that take `now`."""

    static: tuple[StaticDevice, ...] = ()
    grace: float = 300.0
    capacity: int = MAX_DEVICES
    discovery_ttl: float = DISCOVERY_TTL
    refusals: Counter[str] = field(default_factory=Counter)  # "refused_<reason>": answers and devices turned away
    evicted: int = 0  # discovery-only devices that made room for better-evidenced ones
    _devices: dict[str, Device] = field(default_factory=dict)
    _gone_since: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.set_static(self.static, 0.0)

    @property
    def refused(self) -> int:
        """Devices turned away because the inventory was full of at least as well-evidenced ones."""
        return self.refusals["refused_cap"]

    def set_static(self, static: Iterable[StaticDevice], now: float) -> None:
        """Install the config's devices; they replace detected devices with the same MAC or IP."""
        self.static = tuple(static)
        for key in [k for k, d in self._devices.items() if d.static]:
            del self._devices[key]
        # One pass over the detected devices, not one per static section (250 sections: 15 ms).
        macs = {dev.mac for dev in self.static if dev.mac}
        ips = {dev.ip for dev in self.static if dev.ip}
        for other in [k for k, d in self._devices.items() if d.mac in macs or d.ip in ips]:
            del self._devices[other]
        for dev in self.static:
            key = dev.mac or f"ip:{dev.ip}"
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

    def _make_room(self, rank: int) -> bool:
        """At capacity, evict the weakest discovery-only device for a better-evidenced newcomer."""
        # Static sections do not count: the cap bounds what detection (and so an attacker) can add.
        if len(self._devices) - len(self.static) < self.capacity:
            return True
        if rank > DISCOVERY:
            victims = [d for d in self._devices.values() if evidence_rank(d) == DISCOVERY]
            if victims:
                victim = min(victims, key=lambda d: (d.present, d.last_seen, d.key))
                del self._devices[victim.key]
                self._gone_since.pop(victim.key, None)
                self.evicted += 1
                return True
        self.refusals["refused_cap"] += 1
        return False

    def observe(self, source: Source, now: float, *, mac: str | None = None, ip: IPv4 | None = None,
                product: Product | None = None, name: str = "", http_port: int | None = None,
                serial: str = "", firmware: str = "") -> bool:
        """Record one observation; returns True if what the firewall needs changed."""
        name, serial, firmware = clean_text(name), clean_text(serial, 32), clean_text(firmware, 32)
        mac = mac.lower() if mac else None
        if mac is None and serial:
            mac = mac_of_serial(serial)  # Loxone serial = MAC
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
            rank = LOXONE_MAC if source in _MAC_SOURCES else DISCOVERY
            if not self._make_room(rank):
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
                              present=True, serial=serial or current.serial, firmware=firmware or current.firmware,
                              announced=name if source in ("loxlive", "ssdp") and name else current.announced)
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
        """Forget detected devices gone longer than the grace period, and discovery-only ones gone silent."""
        changed = False
        for key, since in list(self._gone_since.items()):
            if now - since >= self.grace:
                del self._gone_since[key]
                dev = self._devices.get(key)
                if dev is not None and not dev.static:
                    del self._devices[key]
                    changed = True
        for key, dev in list(self._devices.items()):
            if evidence_rank(dev) == DISCOVERY and now - dev.last_seen >= self.discovery_ttl:
                del self._devices[key]
                self._gone_since.pop(key, None)
                changed = True
        return changed


def inventory_for(config: Config) -> Inventory:
    """The inventory a daemon keeps for `config`: its configured devices; a device known from discovery
    answers alone outlives three probe rounds at least."""
    return Inventory(config.devices, grace=config.main.device_grace,
                     discovery_ttl=max(DISCOVERY_TTL, 3 * config.main.probe_interval))
