"""The typed configuration: UCI text in, frozen dataclasses out, every error with file:line.

Nothing downstream of this module sees a raw string from the config file.
The section types and their schema rows live in core.configsections (and
are re-exported here); this module parses a file into them and answers the
questions several services ask of the whole config.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import field
from functools import cache
from typing import Any

from loxgw.core import catalog, uci
from loxgw.core import configschema as cs
from loxgw.core.catalog import PortRange, Product
from loxgw.core.configsections import (
    SECTIONS,
    DnsHold,
    DnsMode,
    EgressMode,
    FirewallMode,
    IPAddress,
    IPNetwork,
    Knx,
    LogLevel,
    MainConfig,
    Reflector,
    Relay,
    StaticDevice,
    Upnp,
    Zone,
    ZoneRole,
)
from loxgw.core.defaults import DEFAULT_PATH, DEFAULT_STATUS_SOCKET
from loxgw.core.record import record
from loxgw.core.uci import MAX_BYTES, read_config_text

__all__ = ["DEFAULT_PATH", "DEFAULT_STATUS_SOCKET", "MAX_BYTES", "SECTIONS", "Config", "DnsHold", "DnsMode",
           "EgressMode", "FirewallMode", "IPAddress", "IPNetwork", "Knx", "LogLevel", "MainConfig", "Reflector",
           "Relay", "StaticDevice", "Upnp", "Zone", "ZoneRole", "gen1_broadcast_ports", "load_config",
           "parse_config", "read_config_text"]

SINGLE = ("loxgw", "knx", "reflector")  # section types a file holds at most once


@cache
def gen1_broadcast_ports() -> tuple[PortRange, ...]:
    """The Intercom Gen. 1's search and status broadcast ports, as the catalogue lists them, merged."""
    return _merged(p for e in catalog.load() if e.product == "intercom_gen1" and e.direction == "broadcast"
                   for p in e.ports)


def _merged(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Overlapping and adjacent ranges as one, in port order."""
    out: list[PortRange] = []
    for r in sorted(ranges, key=lambda r: (r.first, r.last)):
        if out and r.first <= out[-1].last + 1:
            out[-1] = PortRange(out[-1].first, max(out[-1].last, r.last))
        else:
            out.append(r)
    return tuple(out)


@record
class Config:
    """The whole parsed configuration."""

    path: str
    main: MainConfig = field(default_factory=MainConfig)
    zones: tuple[Zone, ...] = ()
    devices: tuple[StaticDevice, ...] = ()
    relays: tuple[Relay, ...] = ()
    upnp: tuple[Upnp, ...] = ()
    knx: Knx = field(default_factory=Knx)
    reflector: Reflector = field(default_factory=Reflector)

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

    def relay_ports(self, relay: Relay) -> tuple[PortRange, ...]:
        """The ports a relay carries: its own list, plus the Intercom Gen. 1's broadcast ports when a
        `config device` of type `intercom_gen1` exists.

        Only then: UDP 5000 is too common (UPnP servers, NAS admin pages, dev servers) to
        relay between every pair of VLANs for everyone.
        """
        if not any(d.product == "intercom_gen1" for d in self.devices):
            return relay.ports
        own = {p for r in relay.ports for p in range(r.first, r.last + 1)}
        extra = (PortRange(p, p) for r in gen1_broadcast_ports() for p in range(r.first, r.last + 1) if p not in own)
        return (*relay.ports, *_merged(extra))

    def knx_interfaces(self) -> tuple[str, ...]:
        """The interfaces KNX routing telegrams are copied between (none unless enabled)."""
        if not self.knx.enabled:
            return ()
        return tuple(dict.fromkeys(i for z in self.zones if z.name in self.knx.zones for i in z.interfaces))

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


def _knx(check: cs.Checker, section: uci.RawSection, values: dict[str, Any]) -> Knx:
    knx = Knx(**values)
    if "zone" in section.options:
        check.refs.extend((section.options["zone"].line, "zone", z) for z in knx.zones)
    if knx.enabled and len(set(knx.zones)) < 2:
        check.problem(section.line, "enabled config knx needs two zones or more (list zone) to copy between")
    return knx


def parse_config(text: str, path: str) -> Config:
    """Parse and validate UCI text; raises ConfigError listing every problem."""
    _package, sections = uci.parse(text, path)
    check = cs.Checker(path)
    main: MainConfig | None = None
    single_seen: set[str] = set()
    knx: Knx | None = None
    reflector: Reflector | None = None
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
        if section.type in SINGLE:
            if section.type in single_seen:
                check.problem(section.line, f"only one 'config {section.type}' section is allowed")
                continue
            single_seen.add(section.type)
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
        elif section.type == "knx":
            knx = _knx(check, section, values)
        elif section.type == "reflector":
            reflector = Reflector(**values)
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
        knx=knx or Knx(),
        reflector=reflector or Reflector(),
    )


def load_config(path: str) -> Config:
    """Read and parse a config file; an unreadable or unsuitable file is a ConfigError too."""
    return parse_config(read_config_text(path), path)
