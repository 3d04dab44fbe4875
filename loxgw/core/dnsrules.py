"""Which DNS packets loxgw must see, and how (copied or held), in nft and iptables spelling.

Pure: config in, rules out. The DNS path table (core.dnspath) says which
row applies; this module spells the rules of that row.
"""

from __future__ import annotations

from typing import Literal

from loxgw.core import catalog
from loxgw.core.config import Config, ZoneRole
from loxgw.core.dns import REFUSED_TARGETS, Profile, build_policy, name_needles
from loxgw.core.dnspath import DnsPath
from loxgw.core.firewall import (
    COPY_PREFIX,
    DNS_PORT,
    HELD_ANSWERS_IN_ALL,
    HELD_ANSWERS_LIMIT,
    HELD_ANSWERS_OFFSET,
    HELD_ANSWERS_PER_DEVICE,
    HELD_ANSWERS_PER_FAMILY,
    HELD_ANSWERS_SET,
    HOLD_MARK,
    HOLD_RATE,
    QueueMode,
    cloud_set_name,
)
from loxgw.core.record import record


def ifset(names: tuple[str, ...]) -> str:
    """An nft anonymous set of interface names."""
    return "{ " + ", ".join(f'"{n}"' for n in names) + " }"


@record
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
    # Held only while answers of this IP family come slowly enough (core.firewall.HELD_ANSWERS_*); faster
    # ones fall through to the next rule, a copy.
    held_up_to_a_rate: int | None = None

    def nft(self) -> str:
        ifs = f"{'iifname' if self.incoming else 'oifname'} {ifset(self.interfaces)}"
        addr = ""
        if self.family is not None:
            ip = "ip" if self.family == 4 else "ip6"
            addr = f" {ip} {'daddr' if self.incoming else 'saddr'} {{ {', '.join(self.resolvers)} }}"
        port = (f"meta l4proto {{ tcp, udp }} th dport {DNS_PORT}" if self.incoming
                else f"meta l4proto {{ tcp, udp }} th sport {DNS_PORT} ct direction reply")
        if self.held_up_to_a_rate is not None:
            family = self.held_up_to_a_rate
            ip, nfproto = ("ip", "ipv4") if family == 4 else ("ip6", "ipv6")
            per_device, burst = HELD_ANSWERS_PER_DEVICE
            return (f"{ifs}{addr} {port} meta nfproto {nfproto} update @{HELD_ANSWERS_SET[family]} "
                    f"{{ {ip} daddr limit rate {per_device}/second burst {burst} packets }} "
                    f'limit name "{HELD_ANSWERS_LIMIT}" queue num {self.qnum} bypass')
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
        if self.held_up_to_a_rate is not None:
            # One bucket (no --hashlimit-mode: a single entry, its table never fills) per IP family
            # for all devices (core.firewall.HELD_ANSWERS_PER_FAMILY says why not one per device).
            # After the payload match, so only a catalogue answer takes a token.
            rate, burst = HELD_ANSWERS_PER_FAMILY
            target = ["-m", "hashlimit", "--hashlimit-upto", f"{rate}/sec", "--hashlimit-burst", str(burst),
                      "--hashlimit-name", "loxgw_held", *target]
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


def dns_queue_rules(config: Config, path: DnsPath) -> list[QueueRule]:
    """Every DNS packet loxgw must see, and how: as a copy, or held until loxgw is done.

    Queries (to remember what was asked) and answers (to grant) of cloud
    zones: answers from the router's own resolver leave via output, answers
    from trusted resolvers elsewhere are forwarded; answers only in the
    conntrack reply direction.

    With NFLOG (path.copies), nothing bound for a devices zone waits: queries
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
        # A device in egress mode `resolved` may resolve any name: its zone's DNS cannot be prefiltered.
        resolved = role == "devices" and any(config.egress(p) == "resolved" for p in catalog.DEVICE_PRODUCTS)
        needles = () if resolved else name_needles(build_policy(catalog.load(), role))
        copy = (config.main.queue_num, needles, True, COPY_PREFIX[role])
        held = (config.main.queue_num + offset, needles, False, COPY_PREFIX[role])
        query = held if path.held_queries else copy
        answer = held if role in path.held_answers else copy
        # Answers held up to a rate: these rules first, the copy after them takes the rest.
        up_to_a_rate = role == "devices" and path.answers_held_up_to_a_rate
        rated = (config.main.queue_num + HELD_ANSWERS_OFFSET, needles, False, COPY_PREFIX[role])
        out.append(QueueRule("input", ifs, True, None, (), *query))
        if up_to_a_rate:
            out += [QueueRule("output", ifs, False, None, (), *rated, held_up_to_a_rate=f) for f in (4, 6)]
        out.append(QueueRule("output", ifs, False, None, (), *answer))
        for family, resolvers in trusted.items():
            if resolvers:
                out.append(QueueRule("forward", ifs, True, family, resolvers, *query))
                if up_to_a_rate:
                    out.append(QueueRule("forward", ifs, False, family, resolvers, *rated, held_up_to_a_rate=family))
                out.append(QueueRule("forward", ifs, False, family, resolvers, *answer))
    return out


def hold_interfaces(config: Config, path: DnsPath) -> tuple[str, ...]:
    """Interfaces of devices zones whose new flows wait for loxgw (see dns_queue_rules)."""
    if not path.hold_first_packets:
        return ()
    return tuple(i for z in config.zones if z.role == "devices" and z.cloud for i in z.interfaces)


def hold_rules(config: Config, path: DnsPath, queue: QueueMode, profiles: tuple[Profile, ...]) -> list[str]:
    """The hold chain's rules: a first packet from a devices zone to an address it has no grant for.

    It waits in queue_num (native queue) or is marked for the iptables queue
    rule (xtables). Holding never decides anything: loxgw reads the DNS
    copies already delivered, inserts their grants, and lets the packet go
    on to the allow rules, which alone accept or drop. Bypass: without loxgw
    the packet goes on at once. Targets a grant can never open (private,
    loopback, ...) are not held, unless the user allows some.
    """
    ifs = hold_interfaces(config, path)
    if not ifs or queue not in ("nft", "xtables"):
        return []
    action = (f"queue num {config.main.queue_num} bypass" if queue == "nft"
              else f"meta mark set meta mark | {HOLD_MARK:#010x}")
    rules = []
    for family, ip in ((4, "ip"), (6, "ip6")):
        never = "" if config.main.allowed_targets else \
            f" {ip} daddr != {{ {', '.join(str(n) for n in REFUSED_TARGETS if n.version == family)} }}"
        granted = " ".join(f"{ip} saddr . {ip} daddr != @{cloud_set_name(i, family)}" for i in range(len(profiles)))
        rules.append(f"iifname {ifset(ifs)} ct state new meta nfproto {'ipv4' if family == 4 else 'ipv6'}"
                     f"{never} {granted} limit rate {HOLD_RATE} {action}")
    return rules


def hold_xtables_rule(config: Config, path: DnsPath) -> list[str] | None:
    """iptables arguments (FORWARD, mangle) that queue what the hold chain marked, if anything is held."""
    if not hold_interfaces(config, path):
        return None
    return ["-m", "mark", "--mark", f"{HOLD_MARK:#x}/{HOLD_MARK:#x}", "-j", "NFQUEUE",
            "--queue-num", str(config.main.queue_num), "--queue-bypass"]


# The buckets of `dns_hold 'auto'` on native nft (kind, name, declaration).
HELD_ANSWER_BUCKETS = (
    *(("set", HELD_ANSWERS_SET[family], f"type {key}; size 4096; flags dynamic,timeout; timeout 10s;")
      for family, key in ((4, "ipv4_addr"), (6, "ipv6_addr"))),
    ("limit", HELD_ANSWERS_LIMIT,
     f"rate {HELD_ANSWERS_IN_ALL[0]}/second burst {HELD_ANSWERS_IN_ALL[1]} packets;"),
)


def declares_held_answer_buckets(config: Config, path: DnsPath, queue: QueueMode) -> bool:
    return queue == "nft" and any(r.held_up_to_a_rate is not None for r in dns_queue_rules(config, path))


def retired_held_answer_buckets(table: str) -> list[str]:
    """Script lines that remove `auto`'s buckets from a table declared without them: `flush table` keeps sets
    and named limits. Each is declared as `auto` declares it, then deleted: gone whether or not it was there."""
    return [line for kind, name, spec in HELD_ANSWER_BUCKETS
            for line in (f"add {kind} inet {table} {name} {{ {spec} }}", f"delete {kind} inet {table} {name}")]


def native_queue_chains(config: Config, path: DnsPath) -> list[str]:
    """The chains that copy or queue DNS with nft's own `log group` and `queue` (OpenWrt), and the buckets
    of answers held up to a rate (each device's, in a set that forgets quiet devices; all answers')."""
    lines: list[str] = []
    rules = dns_queue_rules(config, path)
    if any(r.held_up_to_a_rate is not None for r in rules):
        lines += [f"\t{kind} {name} {{ {spec} }}" for kind, name, spec in HELD_ANSWER_BUCKETS] + [""]
    for hook in ("input", "output", "forward"):
        chosen = [r for r in rules if r.hook == hook]
        if not chosen:
            continue
        lines += [f"\tchain dns_{hook} {{", f"\t\ttype filter hook {hook} priority mangle; policy accept;"]
        lines += [f"\t\t{r.nft()}" for r in chosen]
        lines += ["\t}", ""]
    return lines


