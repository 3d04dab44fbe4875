"""The typed configuration: UCI text in, frozen dataclasses out, every error with file:line.

Nothing downstream of this module sees a raw string from the config file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

from loxgw.core import uci
from loxgw.core.catalog import DEVICE_PRODUCTS, PortRange, Product
from loxgw.core.errors import ConfigError, ConfigProblem

DEFAULT_PATH = "/etc/config/loxgw"
DEFAULT_STATUS_SOCKET = "/var/run/loxgw/status.sock"

FirewallMode = Literal["auto", "fw4", "standalone"]
DnsMode = Literal["inline", "passive", "off"]
DnsHold = Literal["connection", "answer"]  # what waits for loxgw in a devices zone (inline mode)
LogLevel = Literal["debug", "info", "notice", "warning", "error"]
ZoneRole = Literal["devices", "clients"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class MainConfig:
    """`config loxgw 'main'`: daemon-wide settings."""

    enabled: bool = True
    log_level: LogLevel = "info"
    firewall: FirewallMode = "auto"
    dns_mode: DnsMode = "inline"
    dns_hold: DnsHold = "connection"
    min_timeout: int = 60  # seconds; floor for TTL-derived set timeouts
    max_timeout: int = 86400  # seconds; ceiling for TTL-derived set timeouts
    trusted_resolvers: tuple[IPAddress, ...] = ()
    allowed_targets: tuple[IPNetwork, ...] = ()  # private/special ranges answers may open after all
    redirect_dns: bool = True  # send devices zones' DNS to the router's own resolver
    queue_num: int = 7053  # NFQUEUE of held first packets and NFLOG group of DNS copies; +1: clients answers
    status_socket: str = DEFAULT_STATUS_SOCKET
    table: str = "loxgw"  # nftables table (inet family) loxgw owns
    device_grace: int = 300  # seconds a detected device keeps its pinholes after it went away
    probe_interval: int = 60  # seconds between LoxLIVE searches in devices zones; 0: never
    dhcp_leases: str = "/tmp/dhcp.leases"  # dnsmasq lease file (OpenWrt's default path)


@dataclass(frozen=True)
class Zone:
    """`config zone NAME`: a set of interfaces holding Loxone devices or their clients."""

    name: str
    role: ZoneRole
    interfaces: tuple[str, ...]
    networks: tuple[str, ...] = ()  # OpenWrt network names, resolved to devices at run time
    cloud: bool = False


@dataclass(frozen=True)
class StaticDevice:
    """`config device NAME`: a Loxone device declared by hand; always wins over detection."""

    name: str
    product: Product
    mac: str | None
    ip: IPAddress | None
    http_port: int = 80
    label: str = ""
    zone: str | None = None


@dataclass(frozen=True)
class Relay:
    """`config relay`: which discovery broadcasts to carry between which interfaces."""

    name: str
    enabled: bool = True
    ports: tuple[PortRange, ...] = (PortRange(7070, 7077), PortRange(7079, 7079))
    interfaces: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    rate_limit: int = 20  # packets per second per source
    global_rate: int = 2000  # packets per second over all sources
    allow_upstream: bool = False  # relay to/from the interface holding the default route


@dataclass(frozen=True)
class Upnp:
    """`config upnp`: one upstream port mapping for a device's remote access."""

    name: str
    enabled: bool = False
    device: str | None = None
    internal_port: int = 443
    external_port: int | None = None
    lease: int = 3600  # seconds
    proto: Literal["tcp", "udp"] = "tcp"
    check_interval: int = 60  # seconds between checks that the upstream still holds the mapping


@dataclass(frozen=True)
class Config:
    """The whole parsed configuration."""

    path: str
    main: MainConfig = field(default_factory=MainConfig)
    zones: tuple[Zone, ...] = ()
    devices: tuple[StaticDevice, ...] = ()
    relays: tuple[Relay, ...] = ()
    upnp: tuple[Upnp, ...] = ()

    def zones_with_role(self, role: ZoneRole) -> tuple[Zone, ...]:
        """Zones of one role, in file order."""
        return tuple(z for z in self.zones if z.role == role)

    def relay_interfaces(self, relay: Relay) -> tuple[str, ...]:
        """A relay's interfaces: its own list plus those of the zones it names."""
        seen: dict[str, None] = dict.fromkeys(relay.interfaces)
        for zone in self.zones:
            if zone.name in relay.zones:
                seen.update(dict.fromkeys(zone.interfaces))
        return tuple(seen)

    def interface_roles(self) -> dict[str, str]:
        """Zone role of each zone interface."""
        return {ifname: zone.role for zone in self.zones for ifname in zone.interfaces}

    def interfaces_with_role(self, role: ZoneRole) -> tuple[str, ...]:
        """Linux interface names of all zones of one role, deduplicated, in file order."""
        seen: dict[str, None] = {}
        for zone in self.zones_with_role(role):
            for ifname in zone.interfaces:
                seen[ifname] = None
        return tuple(seen)


# --- value parsers: text -> value, ValueError with a message for the user ---

T = TypeVar("T")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "yes", "on", "true", "enabled"):
        return True
    if lowered in ("0", "no", "off", "false", "disabled"):
        return False
    raise ValueError(f"expected a boolean (1/0, yes/no, on/off, true/false), got {text!r}")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return text

    return parse


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"\d+", text):
            raise ValueError(f"expected a whole number, got {text!r}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}, got {value}")
        return value

    return parse


def _ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not an IP network: {text!r}") from None


def _ifname(text: str) -> str:
    if not _IFNAME.match(text):
        raise ValueError(f"not a Linux interface name: {text!r}")
    return text


def _mac(text: str) -> str:
    lowered = text.lower().replace("-", ":")
    if not _MAC.match(lowered):
        raise ValueError(f"not a MAC address: {text!r}")
    return lowered


def _ident(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_]+", text):
        raise ValueError(f"not a name (letters, digits, _): {text!r}")
    return text


def _text(text: str) -> str:
    return text


def _port_range(text: str) -> PortRange:
    return PortRange.parse(text)


def _absolute_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"expected an absolute path, got {text!r}")
    return text


def _table_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", text):
        raise ValueError(f"not an nftables table name: {text!r}")
    return text


@dataclass(frozen=True)
class _Opt:
    parse: Callable[[str], object]
    is_list: bool = False
    required: bool = False


_SCHEMA: dict[str, dict[str, _Opt]] = {
    "loxgw": {
        "enabled": _Opt(_bool),
        "log_level": _Opt(_choice("debug", "info", "notice", "warning", "error")),
        "firewall": _Opt(_choice("auto", "fw4", "standalone")),
        "dns_mode": _Opt(_choice("inline", "passive", "off")),
        "dns_hold": _Opt(_choice("connection", "answer")),
        "min_timeout": _Opt(_int_range(1, 7 * 86400)),
        "max_timeout": _Opt(_int_range(1, 7 * 86400)),
        "trusted_resolver": _Opt(_ip, is_list=True),
        "allowed_target": _Opt(_network, is_list=True),
        "redirect_dns": _Opt(_bool),
        "queue_num": _Opt(_int_range(0, 65535)),
        "status_socket": _Opt(_absolute_path),
        "table": _Opt(_table_name),
        "device_grace": _Opt(_int_range(0, 7 * 86400)),
        "probe_interval": _Opt(_int_range(0, 86400)),
        "dhcp_leases": _Opt(_absolute_path),
    },
    "zone": {
        "role": _Opt(_choice("devices", "clients"), required=True),
        "interface": _Opt(_ifname, is_list=True),
        "network": _Opt(_ident, is_list=True),
        "cloud": _Opt(_bool),
    },
    "device": {
        "type": _Opt(_choice(*DEVICE_PRODUCTS), required=True),
        "mac": _Opt(_mac),
        "ip": _Opt(_ip),
        "http_port": _Opt(_int_range(1, 65535)),
        "name": _Opt(_text),
        "zone": _Opt(_ident),
    },
    "relay": {
        "enabled": _Opt(_bool),
        "port": _Opt(_port_range, is_list=True),
        "interface": _Opt(_ifname, is_list=True),
        "zone": _Opt(_ident, is_list=True),
        "rate_limit": _Opt(_int_range(1, 100000)),
        "global_rate": _Opt(_int_range(1, 1000000)),
        "allow_upstream": _Opt(_bool),
    },
    "upnp": {
        "enabled": _Opt(_bool),
        "device": _Opt(_ident),
        "internal_port": _Opt(_int_range(1, 65535)),
        "external_port": _Opt(_int_range(1, 65535)),
        "lease": _Opt(_int_range(0, 604800)),
        "proto": _Opt(_choice("tcp", "udp")),
        "check_interval": _Opt(_int_range(1, 86400)),
    },
}


class _Checker:
    """Collects problems while typing raw sections; never stops at the first."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[ConfigProblem] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(ConfigProblem(self.path, line, message))

    def values(self, section: uci.RawSection) -> dict[str, object]:
        """Typed option values of a section; unknown or bad options are reported."""
        schema = _SCHEMA[section.type]
        typed: dict[str, object] = {}
        for name, raw in section.options.items():
            spec = schema.get(name)
            if spec is None:
                self.problem(raw.line, f"unknown option {name!r} in {section.label}")
                continue
            if raw.is_list and not spec.is_list:
                self.problem(raw.line, f"{name!r} takes one value: use 'option', not 'list'")
                continue
            parsed: list[object] = []
            for value in raw.values:
                try:
                    parsed.append(spec.parse(value))
                except ValueError as exc:
                    self.problem(raw.line, f"{name}: {exc}")
            if len(parsed) == len(raw.values):
                typed[name] = tuple(parsed) if spec.is_list else parsed[-1]
        for name, spec in schema.items():
            if spec.required and name not in section.options:
                self.problem(section.line, f"{section.label} needs option {name!r}")
        return typed


def _get(values: dict[str, object], key: str, default: T) -> T:
    return cast(T, values.get(key, default))


def parse_config(text: str, path: str) -> Config:
    """Parse and validate UCI text; raises ConfigError listing every problem."""
    _package, sections = uci.parse(text, path)
    check = _Checker(path)
    main: MainConfig | None = None
    zones: list[Zone] = []
    devices: list[StaticDevice] = []
    relays: list[Relay] = []
    upnps: list[Upnp] = []
    names: dict[tuple[str, str], int] = {}
    refs: list[tuple[int, str, str]] = []  # (line, kind, name) to resolve once all are read

    for index, section in enumerate(sections):
        if section.type not in _SCHEMA:
            check.problem(
                section.line,
                f"unknown section type {section.type!r} (expected one of {', '.join(_SCHEMA)})",
            )
            continue
        if section.name is not None:
            key = (section.type, section.name)
            if key in names:
                check.problem(
                    section.line,
                    f"duplicate {section.type} name {section.name!r} (first at line {names[key]})",
                )
                continue
            names[key] = section.line
        values = check.values(section)
        name = section.name or f"{section.type}{index}"

        if section.type == "loxgw":
            if main is not None:
                check.problem(section.line, "only one 'config loxgw' section is allowed")
                continue
            main = MainConfig(
                enabled=_get(values, "enabled", True),
                log_level=_get(values, "log_level", "info"),
                firewall=_get(values, "firewall", "auto"),
                dns_mode=_get(values, "dns_mode", "inline"),
                dns_hold=_get(values, "dns_hold", "connection"),
                min_timeout=_get(values, "min_timeout", 60),
                max_timeout=_get(values, "max_timeout", 86400),
                trusted_resolvers=_get(values, "trusted_resolver", ()),
                allowed_targets=_get(values, "allowed_target", ()),
                redirect_dns=_get(values, "redirect_dns", True),
                queue_num=_get(values, "queue_num", 7053),
                status_socket=_get(values, "status_socket", DEFAULT_STATUS_SOCKET),
                table=_get(values, "table", "loxgw"),
                device_grace=_get(values, "device_grace", 300),
                probe_interval=_get(values, "probe_interval", 60),
                dhcp_leases=_get(values, "dhcp_leases", "/tmp/dhcp.leases"),
            )
            if main.min_timeout > main.max_timeout:
                culprit = section.options.get("min_timeout", section.options.get("max_timeout"))
                check.problem(
                    culprit.line if culprit else section.line,
                    f"min_timeout ({main.min_timeout}) is larger than max_timeout "
                    f"({main.max_timeout})",
                )
        elif section.type == "zone":
            if section.name is None:
                check.problem(section.line, "a zone needs a name: config zone 'NAME'")
                continue
            zone = Zone(
                name=section.name,
                role=_get(values, "role", "devices"),
                interfaces=_get(values, "interface", ()),
                networks=_get(values, "network", ()),
                cloud=_get(values, "cloud", False),
            )
            if not {"interface", "network"} & section.options.keys() and "role" in values:
                check.problem(section.line, f"zone '{zone.name}' names no interface or network")
            zones.append(zone)
        elif section.type == "device":
            device = StaticDevice(
                name=name,
                product=_get(values, "type", "miniserver"),
                mac=_get(values, "mac", None),
                ip=_get(values, "ip", None),
                http_port=_get(values, "http_port", 80),
                label=_get(values, "name", ""),
                zone=_get(values, "zone", None),
            )
            if not {"mac", "ip"} & section.options.keys() and "type" in values:
                check.problem(section.line, f"{section.label} needs a mac or an ip")
            if device.zone is not None:
                refs.append((section.options["zone"].line, "zone", device.zone))
            devices.append(device)
        elif section.type == "relay":
            relay = Relay(
                name=name,
                enabled=_get(values, "enabled", True),
                ports=_get(values, "port", Relay.ports),
                interfaces=_get(values, "interface", ()),
                zones=_get(values, "zone", ()),
                rate_limit=_get(values, "rate_limit", 20),
                global_rate=_get(values, "global_rate", 2000),
                allow_upstream=_get(values, "allow_upstream", False),
            )
            if "zone" in section.options:
                refs.extend((section.options["zone"].line, "zone", z) for z in relay.zones)
            relays.append(relay)
        elif section.type == "upnp":
            upnp = Upnp(
                name=name,
                enabled=_get(values, "enabled", False),
                device=_get(values, "device", None),
                internal_port=_get(values, "internal_port", 443),
                external_port=_get(values, "external_port", None),
                lease=_get(values, "lease", 3600),
                proto=_get(values, "proto", "tcp"),
                check_interval=_get(values, "check_interval", 60),
            )
            if upnp.enabled and upnp.device is None and "device" not in section.options:
                check.problem(section.line, f"enabled {section.label} needs option 'device'")
            if upnp.enabled and upnp.external_port is None and "external_port" not in section.options:
                check.problem(section.line, f"enabled {section.label} needs option 'external_port'")
            if upnp.device is not None:
                refs.append((section.options["device"].line, "device", upnp.device))
            upnps.append(upnp)

    zone_names = {z.name for z in zones}
    device_names = {d.name for d in devices}
    for line, kind, ref in refs:
        known = zone_names if kind == "zone" else device_names
        if ref not in known:
            check.problem(line, f"{kind} {ref!r} is not defined (no config {kind} '{ref}')")
    claimed: dict[str, str] = {}
    for zone in zones:
        for ifname in zone.interfaces:
            if ifname in claimed and claimed[ifname] != zone.name:
                line = next(s.options["interface"].line for s in sections
                            if s.type == "zone" and s.name == zone.name)
                check.problem(
                    line, f"interface {ifname!r} is in both zone '{claimed[ifname]}' and '{zone.name}'"
                )
            claimed[ifname] = zone.name
    if check.problems:
        raise ConfigError(check.problems)
    return Config(
        path=path,
        main=main or MainConfig(),
        zones=tuple(zones),
        devices=tuple(devices),
        relays=tuple(relays),
        upnp=tuple(upnps),
    )


def load_config(path: str) -> Config:
    """Read and parse a config file; an unreadable file is a ConfigError too."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, 0, f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(path, 0, f"not UTF-8 text: {exc.reason}")]) from exc
    return parse_config(text, path)
