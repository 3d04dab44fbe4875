"""Blocked attempts: the kernel's samples of what loxgw did not allow, folded into a bounded table.

The kernel does the sampling (`limit rate 20/second burst 20 packets log
group queue_num + 2` before each allow chain's final verdict, see
core.firewall), so user space sees at most 40 packets a second whatever
devices send. Each sample is parsed here (any bytes: a Sample or None,
never an exception) and counted in one row per (direction, source,
destination, protocol, port); rows are explained by core.explain when they
are new or their explanation is stale. Memory is bounded twice: `capacity`
rows in all and `per_source` rows per sender, the least recently seen going
first, so one device sending to random addresses can only churn its own rows.

The DNS ledger forgets a grant when it expires, but "grant expired 40 s ago"
is the most useful thing to say about the attempt that follows; GrantMemory
keeps the grants it saw in the ledger, and for a while those that went away.
"""

from __future__ import annotations

import ipaddress
import math
import operator
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from loxgw.core.config import IPAddress
from loxgw.core.dns import Profile
from loxgw.core.firewall import BLOCKED_PREFIX

if TYPE_CHECKING:  # core.explain explains the rows; only the daemon's diagnose service needs it, and late
    from loxgw.core.explain import Verdict


class GrantSeen(NamedTuple):
    """A DNS grant as the ledger held it: `until` in the daemon's clock, in the past once expired.

    A NamedTuple rather than a frozen dataclass: doctor builds one per ledger entry (20,000: 160
    ms as a dataclass on the event loop)."""

    device: IPAddress
    address: IPAddress
    name: str
    profile: Profile
    until: float


def describe_port(proto: str, port: int | None) -> str:
    """"TCP 443", "ICMP echo", "proto 47"."""
    if proto in ("icmp", "icmpv6"):
        return "ICMP echo"
    if port is None:
        return proto.upper() if not proto.isdigit() else f"IP protocol {proto}"
    return f"{proto.upper()} {port}"


Direction = Literal["out", "in"]
DIRECTION_OF_PREFIX: dict[str, Direction] = {BLOCKED_PREFIX["from_devices"]: "out",
                                             BLOCKED_PREFIX["into_devices"]: "in"}
IP_PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
PORTED = frozenset({6, 17, 132, 136})  # protocols whose header starts with source and destination port
IPV6_SKIPPED = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options: (next, length) headers
IPV6_FRAGMENT = 44
MAX_IPV6_HEADERS = 8
ECHO_REQUEST = {"icmp": 8, "icmpv6": 128}


class Sample(NamedTuple):
    """One sampled packet: which chain, who to whom, protocol and destination port (None without one)."""

    direction: Direction
    src: IPAddress
    dst: IPAddress
    proto: str
    port: int | None


def parse_sample(prefix: str, packet: bytes) -> Sample | None:
    """A sample from an NFLOG copy (its prefix and the packet from its IP header); None if it is not one.

    Only the headers are read. A non-first fragment has no transport header
    (port None); an ICMP packet other than an echo request is not a new flow
    of its own and is refused, as is anything truncated before its ports.
    """
    direction = DIRECTION_OF_PREFIX.get(prefix)
    if direction is None or len(packet) < 20:
        return None
    version = packet[0] >> 4
    l4: int | None
    if version == 4:
        header = (packet[0] & 0x0F) * 4
        if header < 20 or len(packet) < header:
            return None
        number = packet[9]
        src: IPAddress = ipaddress.IPv4Address(packet[12:16])
        dst: IPAddress = ipaddress.IPv4Address(packet[16:20])
        l4 = header if int.from_bytes(packet[6:8], "big") & 0x1FFF == 0 else None
    elif version == 6:
        if len(packet) < 40:
            return None
        src, dst = ipaddress.IPv6Address(packet[8:24]), ipaddress.IPv6Address(packet[24:40])
        found = _ipv6_transport(packet)
        if found is None:
            return None
        number, l4 = found
    else:
        return None
    proto = IP_PROTOS.get(number, str(number))
    port = None
    if l4 is not None and number in PORTED:
        if len(packet) < l4 + 4:
            return None
        port = int.from_bytes(packet[l4 + 2 : l4 + 4], "big")
    elif l4 is not None and proto in ECHO_REQUEST and (len(packet) <= l4 or packet[l4] != ECHO_REQUEST[proto]):
        return None
    return Sample(direction, src, dst, proto, port)


def _ipv6_transport(packet: bytes) -> tuple[int, int | None] | None:
    """(transport protocol, its offset or None for a later fragment) after IPv6's extension headers."""
    number, offset = packet[6], 40
    for _ in range(MAX_IPV6_HEADERS):
        if number in IPV6_SKIPPED:
            if len(packet) < offset + 8:
                return None
            number, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        elif number == IPV6_FRAGMENT:
            if len(packet) < offset + 8:
                return None
            later = int.from_bytes(packet[offset + 2 : offset + 4], "big") >> 3
            number, offset = packet[offset], offset + 8
            if later:
                return number, None
        else:
            return number, offset
    return None


# --- the table -----------------------------------------------------------------------


@dataclass
class Attempt:
    """One row: a flow loxgw did not allow, how often, since when, and why."""

    sample: Sample
    count: int
    first_seen: float
    last_seen: float
    verdict: Verdict | None = None
    explained_at: float = -math.inf

    @property
    def device(self) -> IPAddress:
        """The devices-zone end: the sender of an outgoing attempt, the target of an incoming one."""
        return self.sample.src if self.sample.direction == "out" else self.sample.dst

    def as_json(self, now: float, names: dict[IPAddress, str] | None = None) -> dict[str, object]:
        s = self.sample
        out: dict[str, object] = {
            "direction": s.direction, "src": str(s.src), "dst": str(s.dst), "proto": s.proto, "port": s.port,
            "device": str(self.device), "device_name": (names or {}).get(self.device, ""),
            "flow": describe_port(s.proto, s.port), "count": self.count,
            "first_seen": round(now - self.first_seen, 1), "last_seen": round(now - self.last_seen, 1),
        }
        verdict = self.verdict
        out |= {"reason": verdict.code, "why": verdict.text, "name": verdict.name, "entries": list(verdict.entries),
                "rule": verdict.rule} if verdict is not None else {"reason": "", "why": "", "name": "", "entries": []}
        return out


class BlockedTable:
    """Attempts by (direction, source, destination, protocol, port); bounded in all and per sender."""

    def __init__(self, capacity: int = 256, per_source: int = 32) -> None:
        self.capacity = capacity
        self.per_source = per_source
        self._rows: OrderedDict[Sample, Attempt] = OrderedDict()  # least recently seen first
        self._per_source: dict[IPAddress, int] = {}
        self.samples = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._rows)

    def note(self, sample: Sample, now: float) -> Attempt:
        """Count one sample; returns its row (new rows have no verdict yet)."""
        self.samples += 1
        row = self._rows.get(sample)
        if row is not None:
            row.count += 1
            row.last_seen = now
            self._rows.move_to_end(sample)
            return row
        if self._per_source.get(sample.src, 0) >= self.per_source:
            oldest = next(k for k in self._rows if k.src == sample.src)
            self._drop(oldest)
        elif len(self._rows) >= self.capacity:
            self._drop(next(iter(self._rows)))
        row = Attempt(sample, 1, now, now)
        self._rows[sample] = row
        self._per_source[sample.src] = self._per_source.get(sample.src, 0) + 1
        return row

    def _drop(self, key: Sample) -> None:
        del self._rows[key]
        self.evicted += 1
        left = self._per_source[key.src] - 1
        if left:
            self._per_source[key.src] = left
        else:
            del self._per_source[key.src]

    def recent(self, count: int | None = None, since: float = -math.inf) -> list[Attempt]:
        """The most recently seen rows first (at most `count`, last seen at or after `since`)."""
        out: list[Attempt] = []
        for row in reversed(self._rows.values()):
            if row.last_seen < since or (count is not None and len(out) >= count):
                break
            out.append(row)
        return out


def format_attempts(attempts: Iterable[Mapping[str, object]]) -> list[str]:
    """Lines for `loxgw status` and `loxgw doctor` from Attempt.as_json records."""
    lines = []
    for a in attempts:
        arrow = "->" if a.get("direction") == "out" else "<-"
        peer = a.get("dst") if a.get("direction") == "out" else a.get("src")
        label = a.get("device_name") or a.get("device")
        lines.append(f"  {label} {arrow} {peer} {a.get('flow')}: {a.get('count')}x, last {a.get('last_seen')} s ago: "
                     f"{a.get('why') or a.get('reason')}")
    return lines


# --- grants, remembered past their expiry -----------------------------------------------


until_of = operator.attrgetter("until")


class Listed(NamedTuple):
    """What the ledger lists for one device, sorted for GrantMemory.sync_devices: the live entries by
    address, every (address, profile) listed, and those listed past their expiry."""

    live: dict[IPAddress, list[GrantSeen]]
    keys: set[tuple[IPAddress, Profile]]
    expired: list[GrantSeen]

    @staticmethod
    def of(entries: Iterable[GrantSeen], now: float) -> Listed:
        """Pure: the daemon builds these in a thread for doctor's thousands of entries."""
        live: dict[IPAddress, list[GrantSeen]] = {}
        keys: set[tuple[IPAddress, Profile]] = set()
        expired: list[GrantSeen] = []
        for grant in entries:
            keys.add((grant.address, grant.profile))
            if grant.until > now:
                live.setdefault(grant.address, []).append(grant)
            else:
                expired.append(grant)  # the ledger drops an expired entry only when it needs the room
        return Listed(live, keys, expired)


class GrantMemory:
    """The DNS grants of the devices questions were asked about, and those that left, for `keep` seconds.

    Nothing is mirrored ahead of a question. Before one (a blocked attempt
    explained, `loxgw explain`, doctor), the daemon syncs the devices it
    concerns from the ledger's entries for them alone (`sync_device`), and
    hands over the entries the ledger dropped meanwhile (`remember`, from
    GrantLedger.departed). So the cost follows questions and departures, not
    the ledger's size: a full mirror of 2,460 expiring entries, rebuilt
    whenever one changed, cost 6-7 ms of CPU a second here above idle
    (bench.router_class --dns-entries), a tenth of a router's core.

    An entry the ledger still lists past its expiry is gone at its expiry;
    one that was live at a device's last sync and is no longer listed at the
    next is gone at its expiry or then, whichever came first. Bounded:
    `per_device` remembered grants per device (oldest first out) for at most
    `devices` devices; the live mirror holds what the ledger held for the
    devices synced, which has its own caps.
    """

    def __init__(self, keep: float = 3600.0, per_device: int = 32, devices: int = 256) -> None:
        self.keep = keep
        self.per_device = per_device
        self.devices = devices
        self._live: dict[IPAddress, dict[IPAddress, list[GrantSeen]]] = {}
        self._gone: OrderedDict[IPAddress, OrderedDict[tuple[IPAddress, Profile], GrantSeen]] = OrderedDict()

    def sync_device(self, device: IPAddress, entries: Iterable[GrantSeen], now: float) -> None:
        """Take what the ledger lists for `device` now (live, or expired and not dropped yet)."""
        self.sync_devices({device: Listed.of(entries, now)}, now)

    def sync_devices(self, listed: Mapping[IPAddress, Listed], now: float) -> None:
        """sync_device for several devices at once (doctor: every device), each listing prepared by
        Listed.of (which may run in a thread), pruning once."""
        for device, entries in listed.items():
            self._sync_one(device, entries, now)
        self._prune_gone(now)

    def _sync_one(self, device: IPAddress, listed: Listed, now: float) -> None:
        ended = list(listed.expired)
        for address, seen in self._live.pop(device, {}).items():
            # Live at the last sync and not listed now: removed before its expiry, or dropped (then
            # `remember` had it first, with the same expiry).
            ended += [g._replace(until=min(g.until, now)) for g in seen if (address, g.profile) not in listed.keys]
        self._remember_all(ended, now, one_device=True)
        if listed.live:
            self._live[device] = listed.live
            self._forget_live_again(device, listed.live)

    def remember(self, departed: Iterable[GrantSeen], now: float) -> None:
        """Entries the ledger dropped (GrantLedger.departed): gone at their expiry, out of the live mirror."""
        ended: dict[IPAddress, list[GrantSeen]] = {}
        for grant in departed:
            by_address = self._live.get(grant.device, {})
            # A sync may have seen the entry admitted again since (doctor's copy is taken in a thread).
            seen = [g for g in by_address.get(grant.address, ())
                    if g.profile != grant.profile or g.until > grant.until]
            if seen:
                by_address[grant.address] = seen
            elif by_address.pop(grant.address, None) is not None and not by_address:
                del self._live[grant.device]
            ended.setdefault(grant.device, []).append(grant._replace(until=min(grant.until, now)))
        for device_ended in ended.values():  # each device's newest only: a prune may drop thousands
            self._remember_all(device_ended, now, one_device=True)
        self._prune_gone(now)

    def _remember_all(self, ended: list[GrantSeen], now: float, one_device: bool = False) -> None:
        """Oldest expiry first, so that a device's newest are the ones its bound keeps; none beyond `keep`."""
        ordered = sorted(ended, key=until_of)
        for grant in ordered[-self.per_device:] if one_device else ordered:
            if now - grant.until <= self.keep:
                self._remember(grant)

    def _forget_live_again(self, device: IPAddress, live: Mapping[IPAddress, list[GrantSeen]]) -> None:
        gone = self._gone.get(device)
        if gone:
            for key in [k for k in gone if any(g.profile == k[1] for g in live.get(k[0], ()))]:
                del gone[key]

    def _prune_gone(self, now: float) -> None:
        for device in [d for d, gone in self._gone.items() if not gone or
                       now - max(g.until for g in gone.values()) > self.keep]:
            del self._gone[device]

    def _remember(self, grant: GrantSeen) -> None:
        gone = self._gone.get(grant.device)
        if gone is None:
            gone = self._gone[grant.device] = OrderedDict()
            while len(self._gone) > self.devices:
                self._gone.popitem(last=False)
        else:
            self._gone.move_to_end(grant.device)
        key = (grant.address, grant.profile)
        known = gone.get(key)
        if known is not None and known.until >= grant.until:
            return  # known already, as late or later: an entry listed expired is seen at every sync
        gone.pop(key, None)
        gone[key] = grant
        while len(gone) > self.per_device:
            first = min(gone.values(), key=until_of)  # the one that ended first
            del gone[(first.address, first.profile)]

    def lookup(self, device: IPAddress, now: float, address: IPAddress | None = None,
               name: str = "") -> list[GrantSeen]:
        """Grants of `device` to `address`, or for `name`, or all: live first, then those gone within `keep`."""
        def wanted(g: GrantSeen) -> bool:
            return g.address == address if address is not None else (not name or g.name == name)

        by_address = self._live.get(device, {})
        if address is not None:
            found = list(by_address.get(address, ()))
        else:
            found = [g for seen in by_address.values() for g in seen if wanted(g)]
        found += [g for g in self._gone.get(device, {}).values() if wanted(g) and now - g.until <= self.keep]
        return found

    def __len__(self) -> int:
        return sum(len(seen) for by_address in self._live.values() for seen in by_address.values()) + \
            sum(len(g) for g in self._gone.values())
