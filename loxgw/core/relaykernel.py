"""The relay's per-packet copy in the kernel: the `table netdev <table>_relay` script, sans I/O.

What core.relay decides per datagram, as nftables rules (measured in the
lab with bench.relay_kernel: 0.12-0.18 s of CPU per 10,000 copies against
the Python path's 0.59-0.66, no loss at 30,000/s, copies byte for byte
what core.relaywire.CopyTemplate builds):

- a netdev ingress chain per relayed interface takes a discovery broadcast
  (link-layer broadcast, relayed port, not a relay's copy: DSCP != 5),
  checks it as core.relay does (size, no fragments, broadcast destination,
  source neither 0.0.0.0 nor the router, per-source and global token
  buckets), then marks it and `dup`s it to every other interface;
- a netdev egress chain per interface rewrites the marked copies only:
  source MAC, the segment's broadcast address, DSCP 5, IP id = the relay's
  tag, DF; the kernel finishes the IP and UDP checksums. TTL, source
  address and ports stay, as in the Python path;
- the original leaves with RELAY_ORIGINAL_MARK, from which table inet
  loxgw's relay_windows chain (core.ruleset) opens the answer windows.

Marks are set and cleared under a mask (core.firewall): other bits of the
mark belong to others. The egress hook needs Linux 5.16 (OpenWrt 24.10) and
kmod-nft-netdev; the relay service (daemon.relaykernel) keeps the Python path
where the kernel refuses the table. Not done here, so left to
the Python path: arbitration with a second relay (core.relaypeers),
datagrams with IP options.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from loxgw.core import relaywire
from loxgw.core.catalog import PortRange, merge_ranges
from loxgw.core.firewall import RELAY_COPY_MARK, RELAY_ORIGINAL_MARK
from loxgw.core.record import record
from loxgw.core.relay import PORT_COLUMNS, RelayInterface
from loxgw.core.relaylimit import LIMIT_BUCKETS

ALL_BITS = 0xFFFFFFFF
SOURCE_MEMORY = 10  # seconds a per-source bucket is kept after its last datagram
# Per ingress interface: drop reasons counted by the kernel, as core.relay names them.
DROPS = ("dropped_oversized", "dropped_not_broadcast", "dropped_own_or_unspecified_source",
         "dropped_rate_source", "dropped_rate_global")


def table_name(table: str) -> str:
    """The netdev table of the relay's kernel path, named after loxgw's inet table."""
    return f"{table}_relay"


@record
class KernelRelay:
    """The rendered script and the status name of each named counter it declares."""

    table: str
    script: str
    # nft counter name -> status name: "interface:port:received|relayed" as core.relay names its own,
    # "interface:dropped_REASON", "ingress>egress:copies"
    counters: dict[str, str]

    @property
    def removal(self) -> str:
        """Remove this table whether or not it exists."""
        return f"table netdev {self.table}\ndelete table netdev {self.table}\n"


def removal(table: str) -> str:
    """Remove the relay's netdev table whether or not it exists."""
    name = table_name(table)
    return f"table netdev {name}\ndelete table netdev {name}\n"


def kernel_interfaces(interfaces: Iterable[RelayInterface], allow_upstream: bool) -> tuple[RelayInterface, ...]:
    """The interfaces the kernel relays between: as core.relay, never the upstream one unless allowed."""
    return tuple(sorted((i for i in interfaces if allow_upstream or not i.upstream), key=lambda i: i.name))


def unsupported(interfaces: Sequence[RelayInterface]) -> str:
    """Why the kernel cannot relay between these interfaces ("" if it can)."""
    for iface in interfaces:
        if len(iface.mac) != 6:
            return f"{iface.name} is not an Ethernet interface (the kernel rewrites Ethernet frames)"
    return ""


def render(table: str, interfaces: Sequence[RelayInterface], ports: Sequence[PortRange], rate_limit: int,
           global_rate: int, copy_to: frozenset[str] | None = None) -> KernelRelay:
    """The whole netdev table, deleted and created in one transaction.

    `interfaces`: those to relay between (kernel_interfaces), all Ethernet.
    `copy_to`: the interfaces the kernel may copy to (None: all of them).
    """
    name = table_name(table)
    chosen = sorted(interfaces, key=lambda i: i.name)
    targets = [i for i in chosen if copy_to is None or i.name in copy_to]
    port_list = ", ".join(p.nft() for p in merge_ranges(ports))
    lines = [
        f"table netdev {name}",
        f"delete table netdev {name}",
        f"table netdev {name} {{",
        '\tcomment "loxgw: discovery relay copies (core.relaykernel); the relay service installs and removes it"',
        "\tset sources {",
        "\t\ttype ipv4_addr",
        f"\t\tsize {LIMIT_BUCKETS}",
        "\t\tflags dynamic,timeout",
        f"\t\ttimeout {SOURCE_MEMORY}s",
        '\t\tcomment "per-source token buckets (relay rate_limit)"',
        "\t}",
        f"\tlimit global_rate {{ rate over {global_rate}/second burst {global_rate} packets; "
        'comment "all sources (relay global_rate)"; }',
    ]
    columns = port_columns(ports)
    counters = _counters(chosen, targets, columns)
    lines += [f'\tcounter {counter} {{ comment "{label}"; }}' for counter, label in counters.items()]
    for n, iface in enumerate(chosen):
        copies = [(m, other) for m, other in enumerate(chosen) if other is not iface and other in targets]
        if copies:
            lines += _ingress(n, iface, copies, port_list, _by_port("received", n, columns), rate_limit)
    for n, iface in enumerate(chosen):
        if iface in targets:
            lines += _egress(n, iface, _by_port("relayed", n, columns))
    lines.append("}")
    return KernelRelay(name, "\n".join(lines) + "\n", counters)


def port_columns(ports: Sequence[PortRange]) -> list[tuple[str, str]]:
    """(nft key, status label) of each port counted apart; beyond PORT_COLUMNS ports, each range (as core.relay)."""
    ranges = relaywire.merged(ports)
    if sum(last - first + 1 for first, last in ranges) <= PORT_COLUMNS:
        return [(str(port), str(port)) for first, last in ranges for port in range(first, last + 1)]
    return [(f"{first}-{last}", f"{first}-{last}") if first != last else (str(first), str(first))
            for first, last in ranges]


def _counters(chosen: list[RelayInterface], targets: list[RelayInterface],
              columns: list[tuple[str, str]]) -> dict[str, str]:
    """Every named counter and its status name: per port as core.relay names them (received where a
    datagram came in, relayed where its copy left), per drop reason, per pair of interfaces."""
    counters: dict[str, str] = {}
    for n, iface in enumerate(chosen):
        for i, (_, label) in enumerate(columns):
            counters[f"received_{n}_{i}"] = f"{iface.name}:{label}:received"
            if iface in targets:
                counters[f"relayed_{n}_{i}"] = f"{iface.name}:{label}:relayed"
        for kind in DROPS:
            counters[f"{kind}_{n}"] = f"{iface.name}:{kind}"
        for m, other in enumerate(chosen):
            if other is not iface and other in targets:
                counters[f"copies_{n}_{m}"] = f"{iface.name}>{other.name}:copies"
    return counters


def _by_port(kind: str, n: int, columns: list[tuple[str, str]]) -> str:
    """`counter name udp dport map {...}`: the port's counter of interface n."""
    pairs = ", ".join(f'{key} : "{kind}_{n}_{i}"' for i, (key, _) in enumerate(columns))
    return f"counter name udp dport map {{ {pairs} }}"


def _ingress(n: int, iface: RelayInterface, copies: list[tuple[int, RelayInterface]], port_list: str,
             received: str, rate_limit: int) -> list[str]:
    """Interface n's ingress chain (a discovery broadcast?) and admit chain (core.relay's checks, then copies)."""
    keep = ALL_BITS & ~RELAY_COPY_MARK
    return [
        "",
        f"\tchain ingress_{n} {{",
        f'\t\ttype filter hook ingress device "{iface.name}" priority 0; policy accept;',
        f"\t\tmeta pkttype broadcast ether type ip ip protocol udp udp dport {{ {port_list} }} "
        f"ip dscp != {relaywire.RELAY_DSCP} jump admit_{n} "
        "comment \"loxgw: a discovery broadcast, not a relay's copy\"",
        "\t}",
        "",
        f"\tchain admit_{n} {{",
        f"\t\t{received}",
        '\t\tip hdrlength != 5 return comment "loxgw: IP options, not copied"',
        "\t\tip frag-off & 0x3fff != 0 return",
        f"\t\tudp length > {8 + relaywire.MAX_RELAY_PAYLOAD} counter name dropped_oversized_{n} return",
        f"\t\tip daddr != {{ 255.255.255.255, {iface.broadcast} }} counter name dropped_not_broadcast_{n} return",
        f"\t\tip saddr {{ 0.0.0.0, {iface.address} }} counter name dropped_own_or_unspecified_source_{n} return",
        f"\t\tupdate @sources {{ ip saddr limit rate over {rate_limit}/second burst {rate_limit} packets }} "
        f"counter name dropped_rate_source_{n} return",
        f"\t\tlimit name global_rate counter name dropped_rate_global_{n} return",
        *(f"\t\tmeta mark set meta mark | {RELAY_COPY_MARK:#010x} dup to \"{other.name}\" counter name copies_{n}_{m}"
          for m, other in copies),
        f"\t\tmeta mark set meta mark & {keep:#010x} | {RELAY_ORIGINAL_MARK:#010x} "
        'comment "loxgw: relayed original; table inet loxgw opens its answer windows"',
        "\t}",
    ]


def _egress(n: int, iface: RelayInterface, relayed: str) -> list[str]:
    """Interface n's egress chain: a marked duplicate becomes the copy core.relaywire.CopyTemplate builds."""
    keep = ALL_BITS & ~RELAY_COPY_MARK
    tag = relaywire.CopyTemplate(int(iface.address), int(iface.broadcast), iface.mac).tag
    mac = ":".join(f"{b:02x}" for b in iface.mac)
    return [
        "",
        f"\tchain egress_{n} {{",
        f'\t\ttype filter hook egress device "{iface.name}" priority 0; policy accept;',
        f"\t\tmeta mark & {RELAY_COPY_MARK:#010x} == {RELAY_COPY_MARK:#010x} ether saddr set {mac} "
        f"ip daddr set {iface.broadcast} ip dscp set {relaywire.RELAY_DSCP} ip id set {tag:#06x} "
        f"ip frag-off set {relaywire.IP_DF:#06x} meta mark set meta mark & {keep:#010x} {relayed} "
        'comment "loxgw: a relay copy, as core.relaywire.CopyTemplate builds it"',
        "\t}",
    ]


def answer_window_rules(pairs: Iterable[tuple[str, str]], timeout: int, search_port: int,
                        answer_port: int, set_name: str) -> list[str]:
    """table inet loxgw's rules (core.ruleset) that open answer windows from a relayed original.

    `pairs`: (clients interface, devices interface). The same keys the
    Python path writes (core.relay._open_windows): the asker's source port,
    and for a LoxLIVE search also the answer port.
    """
    rules = []
    for clients, devices in pairs:
        rules.append(f'iifname "{clients}" update @{set_name} {{ "{devices}" . ip saddr . udp sport '
                     f'timeout {timeout}s }} comment "loxgw: answers to a search the kernel relayed to {devices}"')
        rules.append(f'iifname "{clients}" udp dport {search_port} udp sport != {answer_port} '
                     f'update @{set_name} {{ "{devices}" . ip saddr . {answer_port} timeout {timeout}s }}')
    return rules
