"""The config's section types: one frozen dataclass per UCI section type, one field per option.

Each option is one schema row: a dataclass field holding its attribute name
and default, with its UCI name, value parser and doc as the field's metadata
(see configschema). Parsing (core.config), the defaults and the README's
option table (core.configdoc) all read these rows.
"""

from __future__ import annotations

import ipaddress
from dataclasses import field
from typing import TYPE_CHECKING, Literal, get_args

from loxgw.core import configschema as cs
from loxgw.core.catalog import DEVICE_PRODUCTS, PortRange, Product
from loxgw.core.configschema import option
from loxgw.core.defaults import DEFAULT_STATUS_SOCKET
from loxgw.core.record import record

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


FirewallMode = Literal["auto", "fw4", "standalone"]
DnsMode = Literal["inline", "passive", "off"]
DnsHold = Literal["auto", "connection", "answer"]  # what waits for loxgw in a devices zone (inline mode)
# Whether the relay may copy in the kernel (core.relaykernel): `auto` where the kernel takes it.
RelayKernel = Literal["auto", "off"]
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


@record
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
        "has no grant for, until loxgw has read the answer), `answer` (the DNS answer, until its grants are in) "
        "or `auto` (the answer while answers come slowly enough, beyond that the connection)"))
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
        "copies; `queue_num + 1` holds clients zones' answers, `queue_num + 2` devices zones' with `dns_hold 'auto'`"))
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


@record
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


@record
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


@record
class Relay:
    """`config relay`: which discovery broadcasts to carry between which interfaces."""

    name: str
    enabled: bool = field(default=True, metadata=option("enabled", cs.boolean, "`0`: this relay is off"))
    ports: tuple[PortRange, ...] = field(default=(PortRange(7070, 7077), PortRange(7079, 7079)), metadata=option(
        "port", cs.port_range, "discovery ports it relays; while a `config device` of type `intercom_gen1` "
        "exists, also the Gen. 1 Intercom's UDP 5000, 8110 and 8112-8113 (not for everyone: 5000 is a "
        "common port)", is_list=True))
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
    kernel: RelayKernel = field(default="auto", metadata=option(
        "kernel", cs.choice(*get_args(RelayKernel)),
        "`auto`: copy in the kernel (an nftables `netdev` table) where it takes the table and no second "
        "relay copies on the same segments, else in loxgw's process; `off`: always in loxgw's process"))


@record
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


@record
class Knx:
    """`config knx`: KNXnet/IP routing multicast (224.0.23.12:3671) copied between zones; opt-in, one section."""

    name: str = "knx"
    enabled: bool = field(default=False, metadata=option(
        "enabled", cs.boolean, "`1`: copy KNX-IP routing telegrams between the zones listed"))
    zones: tuple[str, ...] = field(default=(), metadata=option(
        "zone", cs.name, "zones whose interfaces it copies between (two or more when enabled)", is_list=True))
    ttl: int = field(default=16, metadata=option(
        "ttl", cs.int_range(1, 255), "IP TTL of the copies (senders often use 1, which no router forwards)"))
    rate_limit: int = field(default=50, metadata=option(
        "rate_limit", cs.int_range(1, 10000), "telegrams/s copied per sender (KNXnet/IP routing allows a "
        "device 50/s)"))


@record
class Reflector:
    """`config reflector`: mDNS and SSDP of Loxone devices from devices zones into clients zones; one section."""

    name: str = "reflector"
    enabled: bool = field(default=True, metadata=option(
        "enabled", cs.boolean, "`0`: nothing is reflected (it runs only with a devices zone and a clients zone)"))
    mdns: bool = field(default=True, metadata=option(
        "mdns", cs.boolean, "reflect mDNS (224.0.0.251:5353): AirPlay, Spotify Connect"))
    ssdp: bool = field(default=True, metadata=option(
        "ssdp", cs.boolean, "reflect SSDP (239.255.255.250:1900): the App's UPnP search"))
    allow_hosts: tuple[ipaddress.IPv4Address, ...] = field(default=(), metadata=option(
        "allow_host", cs.ipv4, "IPv4 addresses in devices zones whose records cross as a Loxone device's do, "
        "e.g. a TV (their announced ports are not opened: the firewall's zone rules decide)", is_list=True))
    rate_limit: int = field(default=20, metadata=option(
        "rate_limit", cs.int_range(1, 10000), "datagrams/s reflected per sender and protocol"))


# Section type -> its dataclass, in the order the README lists them.
SECTIONS: dict[str, type[DataclassInstance]] = {
    "loxgw": MainConfig, "zone": Zone, "device": StaticDevice, "relay": Relay, "upnp": Upnp, "knx": Knx,
    "reflector": Reflector,
}


