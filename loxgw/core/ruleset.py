"""The nftables ruleset loxgw wants, rendered as one `nft -f` script.

Pure: config (and later devices and DNS entries) in, text out. The script
creates loxgw's table if missing, flushes its rules and re-declares everything
in one transaction, so a reload never leaves a half-applied firewall and never
drops set elements (`flush table` empties chains, not sets).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from loxgw.core import catalog
from loxgw.core.catalog import PortRange
from loxgw.core.config import Config, ZoneRole
from loxgw.core.dns import REFUSED_TARGETS, Profile, all_profiles, build_policy, name_needles
from loxgw.core.pinholes import Pinhole

ResolvedFirewall = Literal["fw4", "standalone"]
QueueMode = Literal["nft", "xtables", "passive", "off"]

DNS_PORT = 53
# The packet mark bit loxgw sets on what it allows, for firewall4 to accept (fw4 mode).
# The include files under openwrt/net/loxgw/files/ spell the same value.
FW4_MARK = 0x10000000
# Set by the hold chain on a first packet that must wait for loxgw (xtables mode, where the
# queue itself is an iptables rule); loxgw clears it again in its verdict.
HOLD_MARK = 0x20000000
# Beyond this rate first packets are not held: they go straight to the allow rules (and may
# race a grant, a TCP retransmission later finding it), so a flood cannot stall loxgw.
HOLD_RATE = "2000/second burst 500 packets"
COPY_PREFIX: dict[ZoneRole, str] = {"devices": "loxgw-devices", "clients": "loxgw-clients"}
RELAY_ANSWERS = "relay_answers4"
PIN_INBOUND = "pin_in4"
PIN_DEVICE = "pin_dev4"
PIN_CLIENT = "pin_client4"
ROUTER_PING = "router_ping4"
PIN_SETS = (
    (PIN_INBOUND, "ipv4_addr . inet_proto . inet_service", "device . proto . ports open from clients zones"),
    (PIN_DEVICE, "ipv4_addr . ipv4_addr . inet_proto . inet_service", "device . device . proto . ports"),
    (PIN_CLIENT, "ipv4_addr . inet_proto . inet_service", "device . proto . ports to clients-zone hosts"),
)


def cloud_set_name(index: int, family: int) -> str:
    """Set of (device . address) pairs granted one catalogue profile (see loxgw.core.dns)."""
    return f"cloud{family}_{index}"


@dataclass(frozen=True)
class UpnpForward:
    """Traffic the upstream IGD maps to this router, passed on to a device."""

    router_address: str
    proto: str
    port: int
    device: str
    device_port: int


@dataclass(frozen=True)
class Ruleset:
    """The rendered script and the table it owns."""

    table: str
    script: str


def _ifset(names: tuple[str, ...]) -> str:
    return "{ " + ", ".join(f'"{n}"' for n in names) + " }"


def render(config: Config, firewall: ResolvedFirewall, queue: QueueMode = "off",
           pinholes: Sequence[Pinhole] = (), forwards: Sequence[UpnpForward] = (),
           copies: bool = True) -> Ruleset:
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
    packet to an address it has no grant for (see dns_queue_rules and
    hold_rules); it only delays, the chains above decide.
    """
    table = config.main.table
    device_ifs = config.interfaces_with_role("devices")
    client_ifs = config.interfaces_with_role("clients")
    standalone = firewall == "standalone"
    allow = "accept" if standalone else f"meta mark set meta mark | {FW4_MARK:#010x}"
    established = "ct state established,related accept" if standalone else \
        "ct state established,related return"
    final = 'counter drop comment "loxgw: not allowed"' if standalone else \
        'return comment "loxgw: fw4 zone policy decides"'

    profiles = all_profiles(catalog.load())
    lines = [
        f"# loxgw ruleset ({firewall}) for {config.path}",
        f"table inet {table}",
        f"flush table inet {table}",
        f"table inet {table} {{",
    ]
    for index, profile in enumerate(profiles):
        for family, addr in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            lines += [
                f"\tset {cloud_set_name(index, family)} {{",
                f"\t\ttype {addr} . {addr}",
                "\t\tflags timeout",
                f'\t\tcomment "device . address granted {profile.describe()} by DNS"',
                "\t}",
            ]
    lines += [
        f"\tset {RELAY_ANSWERS} {{",
        "\t\ttype ipv4_addr . inet_service",
        "\t\tflags timeout",
        '\t\tcomment "asker . port a relayed discovery request may be answered on"',
        "\t}",
    ]
    for name, key_type, comment in PIN_SETS:
        lines += [f"\tset {name} {{", f"\t\ttype {key_type}", "\t\tflags interval",
                  f'\t\tcomment "{comment}"', "\t}"]
    lines += [f"\tset {ROUTER_PING} {{", "\t\ttype ipv4_addr",
              '\t\tcomment "devices whose gateway ping the router must answer"', "\t}"]
    lines += ["", "\tchain allow_from_devices {", f"\t\t{established}"]
    lines.append(f"\t\tip saddr . ip daddr . meta l4proto . th dport @{PIN_DEVICE} {allow}")
    if client_ifs:
        lines.append(f"\t\toifname {_ifset(client_ifs)} ip saddr . meta l4proto . th dport @{PIN_CLIENT} {allow}")
    lines += [f"\t\t{rule} {allow}" for rule in _profile_rules(profiles)]
    relay_ports = sorted({p for r in config.relays if r.enabled for p in r.ports})
    if relay_ports:
        ports = ", ".join(p.nft() for p in relay_ports)
        lines.append(f"\t\tudp sport {{ {ports} }} ip daddr . udp dport @{RELAY_ANSWERS} {allow}")
    lines += [
        f"\t\t{final}",
        "\t}",
        "",
        "\tchain allow_into_devices {",
        f"\t\t{established}",
        f"\t\tip daddr . meta l4proto . th dport @{PIN_INBOUND} {allow}",
        f"\t\t{final}",
        "\t}",
        "",
    ]
    if queue == "nft":
        lines += _native_queue_chains(config, copies)
    held = hold_rules(config, queue, profiles) if copies else []
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
            f"\t\tiifname {_ifset(redirect_ifs)} meta l4proto {{ tcp, udp }} th dport {DNS_PORT} "
            "fib daddr type != local redirect",
            "\t}",
            "",
        ]
    if forwards:
        lines += ["\tchain upnp_dnat {", "\t\ttype nat hook prerouting priority dstnat; policy accept;"]
        lines += [f"\t\tip daddr {f.router_address} {f.proto} dport {f.port} dnat ip to {f.device}:{f.device_port}"
                  for f in forwards]
        lines += ["\t}", ""]
    if not standalone:
        lines += [
            "\tchain input {",
            "\t\ttype filter hook input priority filter - 5; policy accept;",
            f"\t\tmeta mark set meta mark & {~FW4_MARK & 0xFFFFFFFF:#010x}",
        ]
        if device_ifs:
            lines.append(f"\t\tiifname {_ifset(device_ifs)} ip saddr @{ROUTER_PING} icmp type echo-request {allow}")
        lines += ["\t}", ""]
    lines += [
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter" + ("" if standalone else " - 5") + "; policy accept;",
    ]
    if not standalone:
        lines.append(f"\t\tmeta mark set meta mark & {~FW4_MARK & 0xFFFFFFFF:#010x}")
    same_segment = tuple(dict.fromkeys((*device_ifs, *client_ifs)))
    if same_segment:
        # Traffic within one VLAN is bridged, not routed; with br_netfilter loaded the bridge
        # still runs it through this hook (in and out are then the same bridge). Not ours.
        pairs = ", ".join(f'"{i}" . "{i}"' for i in same_segment)
        lines.append(f"\t\tiifname . oifname {{ {pairs} }} accept")
    lines += [f"\t\tct status dnat ip daddr {f.device} {f.proto} dport {f.device_port} {allow}" for f in forwards]
    if device_ifs:
        lines.append(f"\t\tiifname {_ifset(device_ifs)} jump allow_from_devices")
        if client_ifs:
            lines.append(f"\t\tiifname {_ifset(client_ifs)} oifname {_ifset(device_ifs)} jump allow_into_devices")
    lines.append("\t}")
    lines.append("}")
    lines += _pinhole_elements(table, pinholes)
    return Ruleset(table=table, script="\n".join(lines) + "\n")


def merge_ranges(ranges: Iterable[PortRange]) -> list[PortRange]:
    """Overlapping or adjacent ranges joined: concatenated interval sets refuse overlaps."""
    merged: list[PortRange] = []
    for r in sorted(ranges):
        if merged and r.first <= merged[-1].last + 1:
            merged[-1] = PortRange(merged[-1].first, max(merged[-1].last, r.last))
        else:
            merged.append(r)
    return merged


def _pinhole_elements(table: str, pinholes: Sequence[Pinhole]) -> list[str]:
    """Replace the pinhole sets' contents (they hold desired state only, unlike the DNS sets)."""
    ranges: dict[tuple[str, str], list[PortRange]] = {}
    pings: list[str] = []
    for hole in pinholes:
        if hole.kind == "router":
            pings.append(str(hole.src))
            continue
        if hole.ports is None:
            continue
        if hole.kind == "inbound":
            key = (PIN_INBOUND, f"{hole.dst} . {hole.proto}")
        elif hole.kind == "device":
            key = (PIN_DEVICE, f"{hole.src} . {hole.dst} . {hole.proto}")
        else:
            key = (PIN_CLIENT, f"{hole.src} . {hole.proto}")
        ranges.setdefault(key, []).append(hole.ports)
    by_set: dict[str, list[str]] = {PIN_INBOUND: [], PIN_DEVICE: [], PIN_CLIENT: [],
                                    ROUTER_PING: list(dict.fromkeys(pings))}
    for (name, prefix), port_ranges in ranges.items():
        by_set[name] += [f"{prefix} . {r.nft()}" for r in merge_ranges(port_ranges)]
    lines = []
    for name, elements in by_set.items():
        lines.append(f"flush set inet {table} {name}")
        if elements:
            lines.append(f"add element inet {table} {name} {{ {', '.join(elements)} }}")
    return lines


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


@dataclass(frozen=True)
class QueueRule:
    """One class of DNS packets loxgw must see, independent of nft or iptables spelling."""

    hook: Literal["input", "output", "forward"]
    interfaces: tuple[str, ...]
    incoming: bool  # match the interface the packet came in on (queries) or leaves by (answers)
    family: int | None  # restrict to resolver addresses of this family
    resolvers: tuple[str, ...]
    qnum: int  # the NFQUEUE number, or the NFLOG group when `copy` is set
    needles: tuple[bytes, ...] = ()  # packets without any of these labels stay in the kernel
    copy: bool = False  # hand loxgw a copy (NFLOG) and let the packet go on: it need not wait
    prefix: str = ""  # a copy's NFLOG prefix: the asker's zone role

    def nft(self) -> str:
        ifs = f"{'iifname' if self.incoming else 'oifname'} {_ifset(self.interfaces)}"
        addr = ""
        if self.family is not None:
            ip = "ip" if self.family == 4 else "ip6"
            addr = f" {ip} {'daddr' if self.incoming else 'saddr'} {{ {', '.join(self.resolvers)} }}"
        port = (f"meta l4proto {{ tcp, udp }} th dport {DNS_PORT}" if self.incoming
                else f"meta l4proto {{ tcp, udp }} th sport {DNS_PORT} ct direction reply")
        if self.copy:
            # queue-threshold 1: each copy is in loxgw's socket before the packet goes on.
            return f'{ifs}{addr} {port} log prefix "{self.prefix}" group {self.qnum} queue-threshold 1'
        # bypass: with no loxgw listening the kernel accepts, so DNS never breaks.
        return f"{ifs}{addr} {port} queue num {self.qnum} bypass"

    def xtables(self, interface: str) -> list[list[str]]:
        """iptables arguments (after the chain) for one interface of this rule: per protocol and needle.

        Only xtables has a payload string match (xt_string, usable through
        iptables-nft); nft has none, so native mode queues every DNS packet.
        Without a needle a TCP handshake segment is never queued either.
        """
        if self.copy:
            target = ["-j", "NFLOG", "--nflog-group", str(self.qnum), "--nflog-threshold", "1",
                      "--nflog-prefix", self.prefix]
        else:
            target = ["-j", "NFQUEUE", "--queue-num", str(self.qnum), "--queue-bypass"]
        rules = []
        for proto in ("udp", "tcp"):
            match = self._xtables_match(interface, proto)
            if not self.needles:
                rules.append([*match, *target])
                continue
            rules += [[*match, "-m", "string", "--algo", "bm", "--icase", "--hex-string",
                       "|" + needle.hex() + "|", *target] for needle in self.needles]
        return rules

    def _xtables_match(self, interface: str, proto: str) -> list[str]:
        args = ["-i" if self.incoming else "-o", interface, "-p", proto]
        if self.family is not None:
            args += ["-d" if self.incoming else "-s", ",".join(self.resolvers)]
        if self.incoming:
            args += ["--dport", str(DNS_PORT)]
        else:
            args += ["--sport", str(DNS_PORT), "-m", "conntrack", "--ctdir", "REPLY"]
        return args


def dns_queue_rules(config: Config, copies: bool = True) -> list[QueueRule]:
    """Every DNS packet loxgw must see, and how: as a copy, or held until loxgw is done.

    Queries (to remember what was asked) and answers (to grant) of cloud
    zones: answers from the router's own resolver leave via output, answers
    from trusted resolvers elsewhere are forwarded; answers only in the
    conntrack reply direction.

    With NFLOG (`copies`), nothing bound for a devices zone waits: queries
    and answers are copied (group queue_num, the prefix naming the role),
    and the device's first packet to an address not yet granted is held
    instead (hold_rules), until loxgw has read the answer's copy. A devices
    zone is loxgw's to filter, so holding its new flows is exact and rare.
    Clients zones (phones, PCs) mostly reach the internet past loxgw, so
    holding their flows would delay everything; their catalogue answers are
    held instead (queue_num + 1). Devices zones' answers are held too with
    `dns_hold 'answer'` (queue_num), and in every zone without NFLOG, where
    queries are queued as well.
    """
    out: list[QueueRule] = []
    trusted = {
        4: tuple(str(a) for a in config.main.trusted_resolvers if a.version == 4),
        6: tuple(str(a) for a in config.main.trusted_resolvers if a.version == 6),
    }
    roles: tuple[ZoneRole, ...] = ("devices", "clients")
    for offset, role in enumerate(roles):
        ifs = tuple(i for z in config.zones if z.role == role and z.cloud for i in z.interfaces)
        if not ifs:
            continue
        needles = name_needles(build_policy(catalog.load(), role))
        copy = (config.main.queue_num, needles, True, COPY_PREFIX[role])
        held = (config.main.queue_num + offset, needles, False, COPY_PREFIX[role])
        query = copy if copies else held
        answer = copy if copies and role == "devices" and config.main.dns_hold == "connection" else held
        out.append(QueueRule("input", ifs, True, None, (), *query))
        out.append(QueueRule("output", ifs, False, None, (), *answer))
        for family, resolvers in trusted.items():
            if resolvers:
                out.append(QueueRule("forward", ifs, True, family, resolvers, *query))
                out.append(QueueRule("forward", ifs, False, family, resolvers, *answer))
    return out


def hold_interfaces(config: Config) -> tuple[str, ...]:
    """Interfaces of devices zones whose new flows wait for loxgw (see dns_queue_rules)."""
    if config.main.dns_mode != "inline" or config.main.dns_hold != "connection":
        return ()
    return tuple(i for z in config.zones if z.role == "devices" and z.cloud for i in z.interfaces)


def hold_rules(config: Config, queue: QueueMode, profiles: tuple[Profile, ...]) -> list[str]:
    """The hold chain's rules: a first packet from a devices zone to an address it has no grant for.

    It waits in queue_num (native queue) or is marked for the iptables queue
    rule (xtables). Holding never decides anything: loxgw reads the DNS
    copies already delivered, inserts their grants, and lets the packet go
    on to the allow rules, which alone accept or drop. Bypass: without loxgw
    the packet goes on at once. Targets a grant can never open (private,
    loopback, ...) are not held, unless the user allows some.
    """
    ifs = hold_interfaces(config)
    if not ifs or queue not in ("nft", "xtables"):
        return []
    action = (f"queue num {config.main.queue_num} bypass" if queue == "nft"
              else f"meta mark set meta mark | {HOLD_MARK:#010x}")
    rules = []
    for family, ip in ((4, "ip"), (6, "ip6")):
        never = "" if config.main.allowed_targets else \
            f" {ip} daddr != {{ {', '.join(str(n) for n in REFUSED_TARGETS if n.version == family)} }}"
        granted = " ".join(f"{ip} saddr . {ip} daddr != @{cloud_set_name(i, family)}" for i in range(len(profiles)))
        rules.append(f"iifname {_ifset(ifs)} ct state new meta nfproto {'ipv4' if family == 4 else 'ipv6'}"
                     f"{never} {granted} limit rate {HOLD_RATE} {action}")
    return rules


def hold_xtables_rule(config: Config) -> list[str] | None:
    """iptables arguments (FORWARD, mangle) that queue what the hold chain marked, if anything is held."""
    if not hold_interfaces(config):
        return None
    return ["-m", "mark", "--mark", f"{HOLD_MARK:#x}/{HOLD_MARK:#x}", "-j", "NFQUEUE",
            "--queue-num", str(config.main.queue_num), "--queue-bypass"]


def _native_queue_chains(config: Config, copies: bool) -> list[str]:
    lines: list[str] = []
    rules = dns_queue_rules(config, copies)
    for hook in ("input", "output", "forward"):
        chosen = [r for r in rules if r.hook == hook]
        if not chosen:
            continue
        lines += [f"\tchain dns_{hook} {{", f"\t\ttype filter hook {hook} priority mangle; policy accept;"]
        lines += [f"\t\t{r.nft()}" for r in chosen]
        lines += ["\t}", ""]
    return lines


def render_removal(table: str) -> str:
    """A script that removes loxgw's table whether or not it exists."""
    return f"table inet {table}\ndelete table inet {table}\n"
