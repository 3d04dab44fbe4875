"""The typed configuration: UCI text in, frozen dataclasses out, every error with file:line.

Nothing downstream of this module sees a raw string from the config file.
Each option is one schema row: a dataclass field holding its attribute name
and default, with its UCI name, value parser and doc as the field's metadata
(see configschema). Parsing, defaults and the README's option table read them.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from loxgw.core import configschema as cs
from loxgw.core import uci
from loxgw.core.catalog import DEVICE_PRODUCTS, PortRange, Product
from loxgw.core.configschema import option
from loxgw.core.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DEFAULT_PATH = "/etc/config/loxgw"
DEFAULT_STATUS_SOCKET = "/var/run/loxgw/status.sock"
MAX_BYTES = 1 << 20  # a config file's size cap; the sample configs are about 1 KB

FirewallMode = Literal["auto", "fw4", "standalone"]
DnsMode = Literal["inline", "passive", "off"]
DnsHold = Literal["connection", "answer"]  # what waits for loxgw in a devices zone (inline mode)
LogLevel = Literal["debug", "info", "notice", "warning", "error"]
ZoneRole = Literal["devices", "clients"]
# How a device product reaches the internet: `catalog` (exactly the catalogue's names and
# ports), `resolved` (any name it resolves opens that address, TCP and UDP, any port),
# `open` (plain internet, the user's explicit choice).
EgressMode = Literal["catalog", "resolved", "open"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_WEEK = 7 * 86400
_DAY = 86400


@dataclass(frozen=True)
class MainConfig:
    """`config loxgw 'main'`: daemon-wide settings."""

    enabled: bool = field(default=True, metadata=option(
        "enabled", cs.boolean, "`0`: loxgw installs no firewall table (and removes the one it installed)"))
    log_level: LogLevel = field(default="info", metadata=option(
        "log_level", cs.choice(*get_args(LogLevel)), "`debug`, `info`, `notice`, `warning`, `error`"))
    firewall: FirewallMode = field(default="auto", metadata=option(
        "firewall", cs.choice(*get_args(FirewallMode)), "`auto` (fw4 where installed), `fw4`, `standalone`"))
    dns_mode: DnsMode = field(default="inline", metadata=option(
        "dns_mode", cs.choice(*get_args(DnsMode)),
        "`inline` (no first connection can race its grant), `passive`, `off`"))
    dns_hold: DnsHold = field(default="connection", metadata=option(
        "dns_hold", cs.choice(*get_args(DnsHold)),
        "what waits in a devices zone with `inline`: `connection` (the device's first packet to an address it "
        "has no grant for, until loxgw has read the answer) or `answer` (the DNS answer, until its grants are in)"))
    min_timeout: int = field(default=60, metadata=option(
        "min_timeout", cs.int_range(1, _WEEK), "floor of TTL-derived set timeouts, seconds"))
    max_timeout: int = field(default=86400, metadata=option(
        "max_timeout", cs.int_range(1, _WEEK), "ceiling of TTL-derived set timeouts, seconds"))
    trusted_resolvers: tuple[IPAddress, ...] = field(default=(), metadata=option(
        "trusted_resolver", cs.ip, "extra resolvers whose answers may open the firewall", is_list=True))
    allowed_targets: tuple[IPNetwork, ...] = field(default=(), metadata=option(
        "allowed_target", cs.network, "networks answers may open although private or special "
        "(e.g. `10.20.0.0/16` for a cloud name resolving into a VPN)", is_list=True))
    redirect_dns: bool = field(default=True, metadata=option(
        "redirect_dns", cs.boolean, "send DNS from devices zones to the router's own resolver"))
    queue_num: int = field(default=7053, metadata=option(
        "queue_num", cs.int_range(0, 65535), "NFQUEUE number of held first packets and NFLOG group of DNS "
        "copies; `queue_num + 1` holds clients zones' answers"))
    status_socket: str = field(default=DEFAULT_STATUS_SOCKET, metadata=option(
        "status_socket", cs.absolute_path, "Unix socket for `loxgw status`"))
    table: str = field(default="loxgw", metadata=option(
        "table", cs.table_name, "name of loxgw's `inet` table"))
    device_grace: int = field(default=300, metadata=option(
        "device_grace", cs.int_range(0, _WEEK), "seconds a device that went away keeps its pinholes"))
    probe_interval: int = field(default=60, metadata=option(
        "probe_interval", cs.int_range(0, _DAY), "seconds between LoxLIVE and SSDP searches in devices zones "
        "(`0` off)"))
    dhcp_leases: str = field(default="/tmp/dhcp.leases", metadata=option(
        "dhcp_leases", cs.absolute_path, "dnsmasq lease file read for devices"))
    egress_miniserver: EgressMode = field(default="catalog", metadata=option(
        "egress_miniserver", cs.choice(*get_args(EgressMode)), "how Miniservers reach the internet: `catalog` "
        "(the catalogue's names and ports), `resolved` (any name they resolve, any port), `open`"))
    egress_intercom: EgressMode = field(default="catalog", metadata=option(
        "egress_intercom", cs.choice(*get_args(EgressMode)), "the same for Intercoms"))
    egress_intercom_gen1: EgressMode = field(default="catalog", metadata=option(
        "egress_intercom_gen1", cs.choice(*get_args(EgressMode)), "the same for Intercoms Gen. 1"))
    egress_audioserver: EgressMode = field(default="resolved", metadata=option(
        "egress_audioserver", cs.choice(*get_args(EgressMode)), "the same for Audioservers: `resolved` by "
        "default, for internet radio, Spotify and Loxone Radio, whose servers no list names"))
    egress_stereo_extension: EgressMode = field(default="resolved", metadata=option(
        "egress_stereo_extension", cs.choice(*get_args(EgressMode)), "the same for Stereo Extensions"))
    rebind_exception: bool = field(default=True, metadata=option(
        "rebind_exception", cs.boolean, "on OpenWrt, keep `dyndns.loxonecloud.com` in dnsmasq's rebind_domain "
        "list, so the App's local TLS names resolve to the Miniserver's private address"))


@dataclass(frozen=True)
class Zone:
    """`config zone NAME`: a set of interfaces holding Loxone devices or their clients."""

    name: str
    role: ZoneRole = field(metadata=option(
        "role", cs.choice(*get_args(ZoneRole)), "`devices` (Loxone gear) or `clients` (App, Config)"))
    interfaces: tuple[str, ...] = field(default=(), metadata=option(
        "interface", cs.ifname, "Linux interfaces of the zone (it needs interfaces, networks or both)",
        is_list=True))
    networks: tuple[str, ...] = field(default=(), metadata=option(
        "network", cs.name, "OpenWrt networks of the zone (resolved through netifd)", is_list=True))
    cloud: bool = field(default=False, metadata=option(
        "cloud", cs.boolean, "`1`: the zone may reach the catalogue's cloud endpoints"))
    other_hosts: bool = field(default=False, metadata=option(
        "other_hosts", cs.boolean, "devices zone: `1` gives hosts that are not Loxone devices (no Loxone MAC, "
        "no `config device`) the Loxone devices' cloud entries too; `0`: they get nothing"))


@dataclass(frozen=True)
class StaticDevice:
    """`config device NAME`: a Loxone device declared by hand; always wins over detection."""

    name: str
    product: Product = field(metadata=option(
        "type", cs.choice(*DEVICE_PRODUCTS), ", ".join(f"`{p}`" for p in DEVICE_PRODUCTS)))
    mac: str | None = field(default=None, metadata=option(
        "mac", cs.mac, "its MAC address (a device needs a `mac`, an `ip` or both)"))
    ip: IPAddress | None = field(default=None, metadata=option(
        "ip", cs.ip, "its IP address"))
    http_port: int = field(default=80, metadata=option(
        "http_port", cs.int_range(1, 65535), "the Miniserver's HTTP port"))
    label: str = field(default="", metadata=option("name", cs.text, "a label"))
    zone: str | None = field(default=None, metadata=option("zone", cs.name, "its `config zone`"))


@dataclass(frozen=True)
class Relay:
    """`config relay`: which discovery broadcasts to carry between which interfaces."""

    name: str
    enabled: bool = field(default=True, metadata=option("enabled", cs.boolean, "`0`: this relay is off"))
    ports: tuple[PortRange, ...] = field(default=(PortRange(7070, 7077), PortRange(7079, 7079)), metadata=option(
        "port", cs.port_range, "discovery ports it relays", is_list=True))
    interfaces: tuple[str, ...] = field(default=(), metadata=option(
        "interface", cs.ifname, "interfaces it relays between", is_list=True))
    zones: tuple[str, ...] = field(default=(), metadata=option(
        "zone", cs.name, "zones whose interfaces it relays between", is_list=True))
    rate_limit: int = field(default=20, metadata=option(
        "rate_limit", cs.int_range(1, 100000), "packets/s per source"))
    global_rate: int = field(default=2000, metadata=option(
        "global_rate", cs.int_range(1, 1000000), "packets/s for all sources"))
    allow_upstream: bool = field(default=False, metadata=option(
        "allow_upstream", cs.boolean, "also relay to/from the interface with the default route"))


@dataclass(frozen=True)
class Upnp:
    """`config upnp`: one upstream port mapping for a device's remote access."""

    name: str
    enabled: bool = field(default=False, metadata=option(
        "enabled", cs.boolean, "`1`: map a port on the upstream IGD"))
    device: str | None = field(default=None, metadata=option(
        "device", cs.name, "the `config device` it maps to (needed when enabled)"))
    internal_port: int = field(default=443, metadata=option(
        "internal_port", cs.int_range(1, 65535), "the device's port"))
    external_port: int | None = field(default=None, metadata=option(
        "external_port", cs.int_range(1, 65535), "upstream (and this router's WAN) port (needed when enabled)"))
    lease: int = field(default=3600, metadata=option(
        "lease", cs.int_range(0, _WEEK), "lease asked for, seconds"))
    proto: Literal["tcp", "udp"] = field(default="tcp", metadata=option(
        "proto", cs.choice("tcp", "udp"), "`tcp` or `udp`"))
    check_interval: int = field(default=60, metadata=option(
        "check_interval", cs.int_range(1, _DAY), "seconds between checks that the upstream still holds the mapping"))


# Section type -> its dataclass, in the order the README lists them.
SECTIONS: dict[str, type[DataclassInstance]] = {
    "loxgw": MainConfig, "zone": Zone, "device": StaticDevice, "relay": Relay, "upnp": Upnp,
}


@dataclass(frozen=True)
class Config:
    """The whole parsed configuration."""

    path: str
    main: MainConfig = field(default_factory=MainConfig)
    zones: tuple[Zone, ...] = ()
    devices: tuple[StaticDevice, ...] = ()
    relays: tuple[Relay, ...] = ()
    upnp: tuple[Upnp, ...] = ()

    def egress(self, product: Product) -> EgressMode:
        """The egress mode of a device product."""
        mode: EgressMode = getattr(self.main, f"egress_{product}", "catalog")
        return mode

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


def _main(check: cs.Checker, section: uci.RawSection, values: dict[str, Any]) -> MainConfig:
    main = MainConfig(**values)
    if main.min_timeout > main.max_timeout:
        culprit = section.options.get("min_timeout", section.options.get("max_timeout"))
        check.problem(
            culprit.line if culprit else section.line,
            f"min_timeout ({main.min_timeout}) is larger than max_timeout ({main.max_timeout})",
        )
    return main


def _zone(check: cs.Checker, section: uci.RawSection, name: str, values: dict[str, Any]) -> Zone:
    zone = Zone(name=name, **values)
    if not {"interface", "network"} & section.options.keys():
        check.problem(section.line, f"zone {uci.quote(name)} names no interface or network")
    return zone


def _device(check: cs.Checker, section: uci.RawSection, name: str, values: dict[str, Any]) -> StaticDevice:
    device = StaticDevice(name=name, **values)
    if not {"mac", "ip"} & section.options.keys():
        check.problem(section.line, f"{section.label} needs a mac or an ip")
    if device.zone is not None:
        check.refs.append((section.options["zone"].line, "zone", device.zone))
    return device


def _relay(check: cs.Checker, section: uci.RawSection, name: str, values: dict[str, Any]) -> Relay:
    relay = Relay(name=name, **values)
    if "zone" in section.options:
        check.refs.extend((section.options["zone"].line, "zone", z) for z in relay.zones)
    return relay


def _upnp(check: cs.Checker, section: uci.RawSection, name: str, values: dict[str, Any]) -> Upnp:
    upnp = Upnp(name=name, **values)
    for needed in ("device", "external_port"):
        if upnp.enabled and needed not in section.options:
            check.problem(section.line, f"enabled {section.label} needs option {needed!r}")
    if upnp.device is not None:
        check.refs.append((section.options["device"].line, "device", upnp.device))
    return upnp


def parse_config(text: str, path: str) -> Config:
    """Parse and validate UCI text; raises ConfigError listing every problem."""
    _package, sections = uci.parse(text, path)
    check = cs.Checker(path)
    main: MainConfig | None = None
    main_seen = False
    zones: list[tuple[Zone, uci.RawSection]] = []
    devices: list[StaticDevice] = []
    relays: list[Relay] = []
    upnps: list[Upnp] = []
    names: dict[tuple[str, str], int] = {}

    for index, section in enumerate(sections):
        if section.type not in SECTIONS:
            check.problem(
                section.line,
                f"unknown section type {uci.quote(section.type)} (expected one of {', '.join(SECTIONS)})",
            )
            continue
        if section.name is not None:
            key = (section.type, section.name)
            if key in names:
                check.problem(
                    section.line,
                    f"duplicate {section.type} name {uci.quote(section.name)} (first at line {names[key]})",
                )
                continue
            names[key] = section.line
        values = check.values(section, cs.rows(SECTIONS[section.type]))
        if section.type == "loxgw" and main_seen:
            check.problem(section.line, "only one 'config loxgw' section is allowed")
            continue
        main_seen = main_seen or section.type == "loxgw"
        if section.type == "zone" and section.name is None:
            check.problem(section.line, "a zone needs a name: config zone 'NAME'")
            continue
        if values is None:
            continue
        name = section.name or f"{section.type}{index}"
        if section.type == "loxgw":
            main = _main(check, section, values)
        elif section.type == "zone":
            zones.append((_zone(check, section, name, values), section))
        elif section.type == "device":
            devices.append(_device(check, section, name, values))
        elif section.type == "relay":
            relays.append(_relay(check, section, name, values))
        else:
            upnps.append(_upnp(check, section, name, values))

    known = {kind: {n for (t, n) in names if t == kind} for kind in ("zone", "device")}
    known["device"].update(d.name for d in devices)
    for line, kind, ref in check.refs:
        if ref not in known[kind]:
            check.problem(line, f"{kind} {uci.quote(ref)} is not defined (no config {kind} {uci.quote(ref)})")
    claimed: dict[str, str] = {}
    for zone, section in zones:
        for interface in zone.interfaces:
            if claimed.get(interface, zone.name) != zone.name:
                check.problem(
                    section.options["interface"].line,
                    f"interface {interface!r} is in both zone {uci.quote(claimed[interface])} "
                    f"and {uci.quote(zone.name)}",
                )
            claimed[interface] = zone.name
    if check.problems:
        raise uci.config_error(check.problems)
    return Config(
        path=path,
        main=main or MainConfig(),
        zones=tuple(zone for zone, _ in zones),
        devices=tuple(devices),
        relays=tuple(relays),
        upnp=tuple(upnps),
    )


_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_config_text(path: str) -> str:
    """A config file's text: a regular file of at most MAX_BYTES of UTF-8, else a one-line ConfigError.

    Opened with O_NONBLOCK and checked with fstat before any read: a FIFO
    would block `check`, `run` and `status` for good, and /dev/zero would grow
    memory without end.
    """

    def fail(message: str, line: int = 0) -> ConfigError:
        return ConfigError([ConfigProblem(path, line, message)])

    chunks: list[bytes] = []
    total = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from exc
    except ValueError as exc:  # a NUL in the path
        raise fail(f"cannot read: {exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((kind for test, kind in _FILE_TYPES if test(info.st_mode)), "a special file")
            raise fail(f"not a regular file but {kind}; loxgw reads its config only from a regular file")
        if info.st_size > MAX_BYTES:
            raise fail(f"{info.st_size} bytes, more than the {MAX_BYTES}-byte limit of a config file")
        while total <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_BYTES:  # it grew after fstat
        raise fail(f"more than the {MAX_BYTES}-byte limit of a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise fail(f"not UTF-8 text: {exc.reason} at byte {exc.start}", line) from exc


def load_config(path: str) -> Config:
    """Read and parse a config file; an unreadable or unsuitable file is a ConfigError too."""
    return parse_config(read_config_text(path), path)
