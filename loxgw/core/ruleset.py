"""The nftables ruleset loxgw wants, rendered as `nft -f` scripts.

Pure: config, the DNS path and desired set elements in, text out. The
declaration script creates loxgw's table if missing, flushes its rules and
re-declares everything in one transaction, so a reload never leaves a
half-applied firewall; `flush table` empties chains, not sets, so no set
element is lost or re-added. Set contents change by element diffs
(render_element_changes), never by a flush and re-add: with 250 devices a
flush and re-add of the pinhole sets took the kernel 32 s.
"""

from __future__ import annotations

from collections.abc import Sequence

from loxgw.core import catalog, firewall, relay, relaykernel
from loxgw.core.catalog import Entry, PortRange, Product, merge_ranges
from loxgw.core.config import Config
from loxgw.core.dns import Profile, all_profiles
from loxgw.core.dnspath import OFF, DnsPath
from loxgw.core.dnsrules import (
    declares_held_answer_buckets,
    hold_rules,
    ifset,
    native_queue_chains,
    retired_held_answer_buckets,
)
from loxgw.core.firewall import (
    ADDRESS_SETS,
    DNS_PORT,
    FW4_MARK,
    OBSOLETE_SETS,
    PIN_PORT,
    PIN_SETS,
    RELAY_ANSWERS,
    ROUTER_PING,
    SEARCH_ANSWERS,
    QueueMode,
    ResolvedFirewall,
    cloud_set_name,
)
from loxgw.core.knx import KNX_GROUP, KNX_PORT
from loxgw.core.pinholes import Elements, product_flows
from loxgw.core.record import record


@record
class UpnpForward:
    """Traffic the upstream IGD maps to this router, passed on to a device."""

    router_address: str
    proto: str
    port: int
    device: str
    device_port: int


@record
class Ruleset:
    """The rendered script and the table it owns."""

    table: str
    script: str




def render(config: Config, mode: ResolvedFirewall, queue: QueueMode = "off", path: DnsPath = OFF,
           forwards: Sequence[UpnpForward] = (), elements: Elements | None = None,
           relay_kernel: bool | None = None) -> Ruleset:
    """Render the complete ruleset for a config.

    Standalone: loxgw is the firewall of its zones. Forwarded traffic from a
    devices zone, and from a clients zone into a devices zone, is dropped
    unless established/related or allowed by a loxgw set; everything else is
    left to whatever other tables decide.

    fw4: loxgw's chains run just before fw4's (priority filter - 5) and only
    mark what loxgw allows (FW4_MARK); fw4's forward and input chains accept
    marked packets through two include files the package installs, and fw4's
    zone policies decide everything else. The include files hold one rule on
    the mark and no reference into loxgw's table, so fw4 re-reads them on every
    reload and restart: nothing of loxgw can be lost when fw4 rebuilds its
    table, and loxgw's sets live in loxgw's table, which fw4 never touches.

    With a queue and NFLOG copies, chain `hold` holds a devices zone's first
    packet to an address it has no grant for (see core.dnsrules); it only
    delays, the chains above decide.

    `elements`: the desired pinhole and address sets, for a script that
    starts from nothing (`loxgw render`, the first apply); the daemon adds
    them as a diff instead.

    `relay_kernel`: False keeps out chain relay_windows, where the originals
    the relay copies in the kernel open their answer windows; None: wherever
    an enabled relay's `kernel` option allows the kernel path. The chain costs one
    mark test per packet to the router while the Python path runs.
    """
    table = config.main.table
    device_ifs = config.interfaces_with_role("devices")
    client_ifs = config.interfaces_with_role("clients")
    standalone = mode == "standalone"
    allow = "accept" if standalone else f"meta mark set meta mark | {FW4_MARK:#010x}"
    established = "ct state established,related accept" if standalone else \
        "ct state established,related return"
    final = 'counter drop comment "loxgw: not allowed"' if standalone else \
        'return comment "loxgw: fw4 zone policy decides"'

    profiles = all_profiles(catalog.load())
    lines = [
        f"# loxgw ruleset ({mode}) for {config.path}",
        f"table inet {table}",
        f"flush table inet {table}",
        f"table inet {table} {{",
    ]
    for index, profile in enumerate(profiles):
        for family, addr in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            lines += [
                f"\tset {cloud_set_name(index, family)} {{",
                f"\t\ttype {addr} . {addr}",
                f"\t\tsize {firewall.CLOUD_SET_SIZE}",
                "\t\tflags timeout",
                f'\t\tcomment "device . address granted {profile.describe()} by DNS"',
                "\t}",
            ]
    lines += [
        f"\tset {RELAY_ANSWERS} {{",
        "\t\ttype ifname . ipv4_addr . inet_service",
        # dynamic: the kernel path's relay_windows chain writes it from the packet path, and the kernel
        # marks a set so written dynamic; declared so always, a reload's declaration matches it.
        "\t\tflags dynamic,timeout",
        '\t\tcomment "devices interface . asker . port a relayed discovery request may be answered on"',
        "\t}",
        f"\tset {firewall.MEDIA} {{",
        "\t\ttype ipv4_addr . ipv4_addr",
        "\t\tflags timeout",
        '\t\tcomment "app host . intercom with a live signalling session: UDP media both ways"',
        "\t}",
        f"\tset {SEARCH_ANSWERS} {{",
        "\t\ttype ifname . inet_service",
        "\t\tflags timeout",
        '\t\tcomment "interface . port a search loxgw sent may be answered on, for a few seconds"',
        "\t}",
    ]
    for name, key_type, comment in PIN_SETS:
        lines += [f"\tset {name} {{", f"\t\ttype {key_type}", f'\t\tcomment "{comment}"', "\t}"]
    for name, comment in ADDRESS_SETS:
        lines += [f"\tset {name} {{", "\t\ttype ipv4_addr", f'\t\tcomment "{comment}"', "\t}"]
    invalid = ['\t\tct state invalid drop comment "loxgw: conntrack-invalid, never allowed"'] if standalone else []
    lines += ["", "\tchain allow_from_devices {", f"\t\t{established}", *invalid]
    rules = ProductRules.of(catalog.load())
    lines += [f"\t\tip saddr @{firewall.products_set(source)} ip daddr @{firewall.products_set(target)} "
              f"meta l4proto . th dport {_ports_set(ports)} {allow} comment \"{firewall.device_rule(source, target)}\""
              for (source, target), ports in rules.device.items()]
    if client_ifs:
        lines += [f"\t\toifname {ifset(client_ifs)} ip saddr @{firewall.products_set(product)} "
                  f"meta l4proto . th dport {_ports_set(ports)} {allow} comment \"{firewall.client_rule(product)}\""
                  for product, ports in rules.client.items()]
    lines += [f"\t\t{rule} {allow}" for rule in _profile_rules(profiles)]
    lines.append(f"\t\tmeta l4proto udp ip daddr . ip saddr @{firewall.MEDIA} {allow}"
                 ' comment "loxgw: intercom media to an app host in a live session"')
    local_ifs = tuple(dict.fromkeys((*device_ifs, *client_ifs)))
    if local_ifs:
        lines.append(f"\t\tip saddr @{firewall.EGRESS_OPEN} oifname != {ifset(local_ifs)} {allow}"
                     ' comment "loxgw: egress mode open, the internet but not the other zones"')
    if any(r.enabled for r in config.relays):
        # Keyed by the answering segment and the asker, not by the answer's source port: an
        # Audioserver answers from its own 7091, a Miniserver from 7070.
        lines.append(f"\t\tiifname . ip daddr . udp dport @{RELAY_ANSWERS} {allow}"
                     ' comment "loxgw: answers to a relayed discovery request"')
    lines += [
        _sample_blocked(config, "from_devices"),
        f"\t\t{final}",
        "\t}",
        "",
        "\tchain allow_into_devices {",
        f"\t\t{established}",
        *invalid,
        *(f"\t\tip daddr @{firewall.products_set(product)} meta l4proto . th dport {_ports_set(ports)} {allow} "
          f'comment "{firewall.inbound_rule(product)}"' for product, ports in rules.inbound.items()),
        f"\t\tip daddr . meta l4proto . th dport @{PIN_PORT} {allow}",
        f"\t\tmeta l4proto udp ip saddr . ip daddr @{firewall.MEDIA} {allow}"
        ' comment "loxgw: app host media to an intercom in a live session"',
        _sample_blocked(config, "into_devices"),
        f"\t\t{final}",
        "\t}",
        "",
    ]
    if queue == "nft":
        lines += native_queue_chains(config, path)
    held = hold_rules(config, path, queue, profiles)
    if held:
        # Before iptables' mangle chains (-150), where the xtables queue rule sits.
        lines += ["\tchain hold {", "\t\ttype filter hook forward priority mangle - 10; policy accept;"]
        lines += [f"\t\t{rule}" for rule in held]
        lines += ["\t}", ""]
    redirect_ifs = tuple(i for z in config.zones if z.role == "devices" and z.cloud for i in z.interfaces)
    if config.main.redirect_dns and config.main.dns_mode != "off" and redirect_ifs:
        # Every answer that opens the firewall must come from a resolver we trust: a device
        # configured with its own DNS server is answered by the router's resolver instead.
        lines += [
            "\tchain dns_redirect {",
            "\t\ttype nat hook prerouting priority dstnat; policy accept;",
            f"\t\tiifname {ifset(redirect_ifs)} meta l4proto {{ tcp, udp }} th dport {DNS_PORT} "
            "fib daddr type != local redirect",
            "\t}",
            "",
        ]
    if forwards:
        lines += ["\tchain upnp_dnat {", "\t\ttype nat hook prerouting priority dstnat; policy accept;"]
        lines += [f"\t\tip daddr {f.router_address} {f.proto} dport {f.port} dnat ip to {f.device}:{f.device_port}"
                  for f in forwards]
        lines += ["\t}", ""]
    lines += _relay_window_chain(config, relay_kernel)
    if not standalone:
        lines += [
            "\tchain input {",
            "\t\ttype filter hook input priority filter - 5; policy accept;",
            f"\t\tmeta mark set meta mark & {~FW4_MARK & 0xFFFFFFFF:#010x}",
            '\t\tct state invalid return comment "loxgw: conntrack-invalid, never marked"',
        ]
        if device_ifs:
            lines.append(f"\t\tiifname {ifset(device_ifs)} ip saddr @{ROUTER_PING} icmp type echo-request {allow}"
                         ' comment "loxgw: the Audioserver\'s gateway ping"')
            lines.append(f"\t\tiifname . udp dport @{SEARCH_ANSWERS} {allow}"
                         ' comment "loxgw: answers to its own LoxLIVE and SSDP searches"')
        lines += _relay_input_rules(config, allow)
        lines += _reflector_input_rules(config, allow)
        knx_ifs = config.knx_interfaces()
        if knx_ifs:
            lines.append(f"\t\tiifname {ifset(knx_ifs)} ip daddr {KNX_GROUP} udp dport {KNX_PORT} {allow}"
                         ' comment "loxgw: KNX-IP routing telegrams for the KNX router"')
        lines += ["\t}", ""]
    lines += [
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter" + ("" if standalone else " - 5") + "; policy accept;",
    ]
    if not standalone:
        lines.append(f"\t\tmeta mark set meta mark & {~FW4_MARK & 0xFFFFFFFF:#010x}")
        lines.append('\t\tct state invalid return comment "loxgw: conntrack-invalid, never marked"')
    same_segment = tuple(dict.fromkeys((*device_ifs, *client_ifs)))
    if same_segment:
        # Traffic within one VLAN is bridged, not routed; with br_netfilter loaded the bridge
        # still runs it through this hook (in and out are then the same bridge). Not ours.
        pairs = ", ".join(f'"{i}" . "{i}"' for i in same_segment)
        lines.append(f"\t\tiifname . oifname {{ {pairs} }} accept")
    lines += [f"\t\tct status dnat ip daddr {f.device} {f.proto} dport {f.device_port} {allow}" for f in forwards]
    if device_ifs:
        lines.append(f"\t\tiifname {ifset(device_ifs)} jump allow_from_devices")
        if client_ifs:
            lines.append(f"\t\tiifname {ifset(client_ifs)} oifname {ifset(device_ifs)} jump allow_into_devices")
    lines.append("\t}")
    lines.append("}")
    for name, key_type, flags in OBSOLETE_SETS:
        # Declared as an earlier version did, then deleted: gone whether or not it was there.
        lines += [f"add set inet {table} {name} {{ type {key_type}; flags {flags}; }}",
                  f"delete set inet {table} {name}"]
    if not declares_held_answer_buckets(config, path, queue):
        lines += retired_held_answer_buckets(table)
    if elements is not None:
        lines += [f"flush set inet {table} {name}" for name in firewall.DESIRED_SETS]
        lines += render_element_changes(table, {}, elements).splitlines()
    return Ruleset(table=table, script="\n".join(lines) + "\n")


PortList = tuple[tuple[str, PortRange], ...]  # (proto, ports), merged and sorted


@record
class ProductRules:
    """The ports of every device of a product, grouped as the rules match them (core.pinholes.product_flows)."""

    inbound: dict[Product, PortList]  # from clients zones to devices of the product
    device: dict[tuple[Product, Product], PortList]  # (source product, target product)
    client: dict[Product, PortList]  # from devices of the product to clients-zone hosts

    @classmethod
    def of(cls, entries: tuple[Entry, ...]) -> ProductRules:
        inbound: dict[Product, list[tuple[str, PortRange]]] = {}
        device: dict[tuple[Product, Product], list[tuple[str, PortRange]]] = {}
        client: dict[Product, list[tuple[str, PortRange]]] = {}
        for product in catalog.DEVICE_PRODUCTS:
            for flow in product_flows(product, entries):
                if flow.ports is None:
                    continue
                if flow.kind == "inbound":
                    inbound.setdefault(product, []).append((flow.proto, flow.ports))
                elif flow.kind == "device" and flow.source is not None:
                    device.setdefault((flow.source, product), []).append((flow.proto, flow.ports))
                elif flow.kind == "client":
                    client.setdefault(product, []).append((flow.proto, flow.ports))
        return cls({k: _merged(v) for k, v in inbound.items()}, {k: _merged(v) for k, v in device.items()},
                   {k: _merged(v) for k, v in client.items()})


def _merged(ports: list[tuple[str, PortRange]]) -> PortList:
    """Per protocol, overlapping ranges joined: an interval set refuses overlaps."""
    protos = sorted({proto for proto, _ in ports})
    return tuple((proto, r) for proto in protos for r in merge_ranges(p for q, p in ports if q == proto))


def _ports_set(ports: PortList) -> str:
    """An anonymous set of `proto . ports` (a constant of the rule: it changes with the catalogue only)."""
    return "{ " + ", ".join(f"{proto} . {r.nft()}" for proto, r in ports) + " }"


def _sample_blocked(config: Config, chain: str) -> str:
    """A rate-limited NFLOG copy of what the chain does not allow (the kernel keeps the rate)."""
    group = config.main.queue_num + firewall.BLOCKED_GROUP_OFFSET
    return (f"\t\tlimit rate {firewall.BLOCKED_SAMPLE_RATE} log prefix \"{firewall.BLOCKED_PREFIX[chain]}\" "
            f'group {group} comment "loxgw: a sample of what is not allowed, for loxgw doctor"')


def _reflector_input_rules(config: Config, allow: str) -> list[str]:
    """fw4 mode: the reflector's sockets must receive mDNS and SSDP multicast of the zones (those it reflects)."""
    device_ifs, client_ifs = config.interfaces_with_role("devices"), config.interfaces_with_role("clients")
    section = config.reflector
    if not device_ifs or not client_ifs or not section.enabled:
        return []
    both = ifset(tuple(dict.fromkeys((*device_ifs, *client_ifs))))
    rules = []
    if section.mdns:
        rules.append(f"\t\tiifname {both} ip daddr 224.0.0.251 udp dport 5353 {allow}"
                     ' comment "loxgw: mDNS for the reflector"')
    if section.ssdp:
        rules.append(f"\t\tiifname {both} ip daddr 239.255.255.250 udp dport 1900 {allow}"
                     ' comment "loxgw: SSDP for the reflector"')
    return rules


def _relay_input_rules(config: Config, allow: str) -> list[str]:
    """fw4 mode: the relay's sockets must receive the discovery broadcasts of its interfaces.

    A locked-down zone's input policy (REJECT, only DHCP and DNS) would drop
    them before the relay sees them; only broadcasts to the relayed ports are
    let through, nothing addressed to the router itself.
    """
    rules = []
    for section in config.relays:
        names = config.relay_interfaces(section)
        if not section.enabled or len(names) < 2:
            continue
        # With a Gen. 1 Intercom configured, its search and status ports too (Config.relay_ports).
        ports = ", ".join(p.nft() for p in config.relay_ports(section))
        rules.append(f"\t\tiifname {ifset(names)} meta pkttype broadcast udp dport {{ {ports} }} {allow}"
                     f' comment "loxgw: discovery broadcasts for relay {section.name}"')
    return rules


def _relay_window_chain(config: Config, relay_kernel: bool | None) -> list[str]:
    """The relay's kernel path: a relayed original (RELAY_ORIGINAL_MARK, core.relaykernel) opens its answer windows.

    In the input hook, not prerouting: where br_netfilter runs the inet
    hooks for bridged frames, prerouting sees them before the netdev hook
    has marked them.
    """
    kernel = [r for r in config.relays if r.enabled and r.kernel != "off" and len(config.relay_interfaces(r)) >= 2]
    if not kernel or relay_kernel is False:
        return []
    roles = config.interface_roles()
    pairs = dict.fromkeys((clients, devices) for r in kernel for clients in config.relay_interfaces(r)
                          for devices in config.relay_interfaces(r)
                          if roles.get(clients) == "clients" and roles.get(devices) == "devices")
    mark = firewall.RELAY_ORIGINAL_MARK
    rules = relaykernel.answer_window_rules(pairs, relay.ANSWER_WINDOW, relay.SEARCH_PORT, relay.ANSWER_PORT,
                                            RELAY_ANSWERS)
    return [
        "\tchain relay_windows {",
        "\t\ttype filter hook input priority filter - 10; policy accept;",
        f'\t\tmeta mark & {mark:#010x} == 0 return comment "loxgw: not an original the kernel relayed"',
        f"\t\tmeta mark set meta mark & {~mark & 0xFFFFFFFF:#010x}",
        *(f"\t\t{rule}" for rule in rules),
        "\t}",
        "",
    ]


def render_element_changes(table: str, delete: Elements, add: Elements) -> str:
    """One transaction that deletes, then adds, the given elements (empty if there is nothing to do)."""
    lines = [f"delete element inet {table} {name} {{ {', '.join(sorted(found))} }}"
             for name, found in delete.items() if found]
    lines += [f"add element inet {table} {name} {{ {', '.join(sorted(found))} }}"
              for name, found in add.items() if found]
    return "".join(line + "\n" for line in lines)


def _profile_rules(profiles: tuple[Profile, ...]) -> list[str]:
    """The match part of one rule per DNS profile set and family (the caller adds the verdict)."""
    rules = []
    for index, profile in enumerate(profiles):
        for family, ip in ((4, "ip"), (6, "ip6")):
            match = f"{ip} saddr . {ip} daddr @{cloud_set_name(index, family)}"
            if profile.proto == "icmp":
                icmp = "icmp" if family == 4 else "icmpv6"
                rules.append(f"{match} {icmp} type echo-request")
            elif profile.proto in ("tcp", "udp"):
                ports = ", ".join(p.nft() for p in profile.ports)
                rules.append(f"{match} {profile.proto} dport {{ {ports} }}")
    return rules


def render_removal(table: str) -> str:
    """A script that removes loxgw's table whether or not it exists."""
    return f"table inet {table}\ndelete table inet {table}\n"
