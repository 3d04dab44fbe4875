"""What a DNS answer means for the firewall: pure functions over bytes, catalogue and `now`.

An answer to a device in a cloud zone, for a catalogue name (wildcards and
CNAME chains included), becomes grants: (device, address, profile, timeout).
A profile is one (proto, ports) pair of the catalogue; each has its own
nftables set keyed by device . address, so an insert is one O(1) hash-set
element instead of an element in a concatenated range set (pipapo), whose
inserts grow with the set.
"""

from __future__ import annotations

import ipaddress
import math
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from dnslib import QTYPE, DNSRecord
from dnslib.buffer import BufferError as DnsBufferError
from dnslib.dns import DNSError
from dnslib.label import DNSLabel, DNSLabelError

from loxgw.catalog import CLIENT_PRODUCTS, DEVICE_PRODUCTS, Entry, PortRange, Proto
from loxgw.config import IPAddress, IPNetwork, ZoneRole
from loxgw.errors import RemoteDataError

MAX_DNS_BYTES = 4096  # EDNS0 payloads above this are not something a home resolver sends
MAX_CNAME_LINKS = 10
MAX_ADDRESSES_PER_ANSWER = 16
# Everything dnslib raises on garbage; anything else is a bug and should surface.
DECODE_ERRORS = (DNSError, DnsBufferError, DNSLabelError, struct.error, ValueError, IndexError,
                 UnicodeDecodeError, KeyError, TypeError)

# Targets that never open the firewall unless the user allows them explicitly.
# (Python's is_private also covers the documentation ranges, which must stay
# allowed, so the list is spelled out.)
REFUSED_TARGETS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
              "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
              "::/128", "::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8")
)


@dataclass(frozen=True, order=True)
class Profile:
    """One protocol and its ports: what a grant opens to a resolved address."""

    proto: Proto
    ports: tuple[PortRange, ...]

    def describe(self) -> str:
        if not self.ports:
            return self.proto
        return f"{self.proto}/{','.join(str(p) for p in self.ports)}"


@dataclass(frozen=True)
class CloudPolicy:
    """Which names a zone role may resolve into which profiles (built once from the catalogue)."""

    exact: dict[str, frozenset[Profile]]
    wildcard: dict[str, frozenset[Profile]]  # key: the suffix after "*." (e.g. "dyndns.loxonecloud.com")

    def profiles_for(self, name: str) -> frozenset[Profile]:
        """Profiles a (lower-case, dot-free-end) name matches; empty if none.

        A wildcard `*.x.y` matches one or more labels before `x.y` on a dot
        boundary: not `x.y` itself, not `evilx.y`, not `x.y.evil.net`.
        """
        found = set(self.exact.get(name, ()))
        labels = name.split(".")
        for i in range(1, len(labels)):
            found.update(self.wildcard.get(".".join(labels[i:]), ()))
        return frozenset(found)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def build_policy(entries: Iterable[Entry], role: ZoneRole) -> CloudPolicy:
    """The cloud policy of a zone role: devices get device products' entries, clients the apps'."""
    products = DEVICE_PRODUCTS if role == "devices" else CLIENT_PRODUCTS
    exact: dict[str, set[Profile]] = {}
    wildcard: dict[str, set[Profile]] = {}
    for entry in entries:
        if entry.direction != "cloud" or entry.product not in products:
            continue
        if entry.proto in ("tcp", "udp") and not entry.ports:
            continue  # dynamic ports (radio, CloudDNS direct): nothing exact to open
        profile = Profile(entry.proto, entry.ports)
        for host in entry.hosts:
            if _is_ip(host):
                continue
            if host.startswith("*."):
                wildcard.setdefault(host[2:], set()).add(profile)
            else:
                exact.setdefault(host, set()).add(profile)
    return CloudPolicy(
        exact={k: frozenset(v) for k, v in exact.items()},
        wildcard={k: frozenset(v) for k, v in wildcard.items()},
    )


def name_needles(policy: CloudPolicy) -> tuple[bytes, ...]:
    """Wire-format labels every packet about a policy name must contain, for in-kernel prefiltering.

    A name matching `*.dyndns.loxonecloud.com` or `connect.loxonecloud.com`
    carries the label `\x0bloxonecloud` literally somewhere in the packet: in
    the question (never compressed, it comes first) or, for a CNAME target,
    in the record itself or in an earlier name a compression pointer refers
    to. So a packet without any needle cannot match and need not reach user
    space. False positives only cost time; the user-space check is exact.
    """
    needles: set[bytes] = set()
    for pattern in (*policy.exact, *policy.wildcard):
        labels = pattern.split(".")
        anchor = labels[-2] if len(labels) >= 2 else labels[-1]
        needles.add(bytes([len(anchor)]) + anchor.encode("ascii"))
    return tuple(sorted(needles))


def all_profiles(entries: Iterable[Entry]) -> tuple[Profile, ...]:
    """Every profile any role can be granted, in a stable order (it names the sets)."""
    entries = tuple(entries)
    found: set[Profile] = set()
    for role in ("devices", "clients"):
        policy = build_policy(entries, role)
        for profiles in (*policy.exact.values(), *policy.wildcard.values()):
            found.update(profiles)
    return tuple(sorted(found))


# --- packets -----------------------------------------------------------------


@dataclass(frozen=True)
class DnsSegment:
    """The addressing of a DNS packet (UDP datagram or single-segment TCP message) and the message."""

    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    payload: bytes  # the DNS message (for TCP, without its two-byte length)


UDP, TCP = 17, 6


def parse_packet(packet: bytes) -> DnsSegment:
    """Split an IPv4/IPv6 UDP or TCP packet as NFQUEUE hands it over.

    By hand because none of the card's libraries parses IP headers, and fixed
    headers do not justify another dependency. DNS over TCP is read when a
    segment carries one whole message (its length prefix matches), which is
    how resolvers send answers that fit a segment; anything else is left
    alone. Raises RemoteDataError.
    """
    if len(packet) < 28:
        raise RemoteDataError("truncated", "shorter than IP + UDP headers")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        proto = packet[9]
        if ihl < 20 or len(packet) < ihl + 8:
            raise RemoteDataError("truncated")
        if struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:
            raise RemoteDataError("fragment")
        src: IPAddress = ipaddress.IPv4Address(packet[12:16])
        dst: IPAddress = ipaddress.IPv4Address(packet[16:20])
        offset, end = ihl, min(len(packet), struct.unpack_from("!H", packet, 2)[0])
    elif version == 6:
        if len(packet) < 48:
            raise RemoteDataError("truncated")
        proto = packet[6]
        src = ipaddress.IPv6Address(packet[8:24])
        dst = ipaddress.IPv6Address(packet[24:40])
        offset, end = 40, min(len(packet), 40 + struct.unpack_from("!H", packet, 4)[0])
    else:
        raise RemoteDataError("not_ip")
    if proto == UDP:
        sport, dport, length = struct.unpack_from("!HHH", packet, offset)
        if length < 8 or offset + length > len(packet):
            raise RemoteDataError("truncated", "UDP length beyond packet")
        return DnsSegment(src, dst, sport, dport, packet[offset + 8 : offset + length])
    if proto == TCP:
        if end < offset + 20:
            raise RemoteDataError("truncated", "TCP header")
        sport, dport = struct.unpack_from("!HH", packet, offset)
        data = offset + (packet[offset + 12] >> 4) * 4
        if data < offset + 20 or data > end:
            raise RemoteDataError("truncated", "TCP header")
        segment = packet[data:end]
        if len(segment) < 2 or int.from_bytes(segment[:2], "big") != len(segment) - 2:
            raise RemoteDataError("tcp_partial", "not one whole DNS message")
        return DnsSegment(src, dst, sport, dport, segment[2:])
    raise RemoteDataError("not_udp_or_tcp", "IPv6 extension headers are not followed")


def decode(payload: bytes) -> DNSRecord:
    """dnslib parse with a size check first; garbage becomes RemoteDataError."""
    if len(payload) > MAX_DNS_BYTES:
        raise RemoteDataError("oversized")
    try:
        return DNSRecord.parse(payload)
    except DECODE_ERRORS as exc:
        raise RemoteDataError("malformed", str(exc)[:80]) from None


def question_bytes(payload: bytes) -> bytes:
    """The wire form of a message's single question (name, type, class), name lower-cased.

    Why not dnslib here: every query and answer of a cloud zone passes this
    check, and a full dnslib parse costs tens of microseconds; comparing the
    answer's question with the query's, byte for byte, needs only the label
    walk below. dnslib still parses every answer that passes this check.
    The first name of a message has nothing to point back to, so a
    compression pointer there is malformed.
    """
    if len(payload) > MAX_DNS_BYTES:
        raise RemoteDataError("oversized")
    if len(payload) < 17:
        raise RemoteDataError("truncated", "no room for a question")
    if payload[4:6] != b"\x00\x01":
        raise RemoteDataError("questions", "not exactly one question")
    offset = 12
    while True:
        if offset >= len(payload):
            raise RemoteDataError("truncated", "question name runs past the end")
        length = payload[offset]
        if length == 0:
            break
        if length & 0xC0:
            raise RemoteDataError("malformed", "compressed or extended label in the question")
        offset += length + 1
        if offset - 12 > 255:
            raise RemoteDataError("malformed", "question name longer than 255 octets")
    end = offset + 5
    if end > len(payload):
        raise RemoteDataError("truncated", "question type or class missing")
    return payload[12:end].lower()


def _name(label: DNSLabel) -> str:
    """A DNS name as lower-case dotted text; a label holding a dot yields "" (matches nothing)."""
    parts: tuple[bytes, ...] = label.label
    if any(b"." in part for part in parts):
        return ""  # "a\\.b" is one label; joined it would pose as two
    return b".".join(parts).decode("ascii", "replace").lower()


# --- queries seen --------------------------------------------------------------

QueryKey = tuple[IPAddress, int, IPAddress, int]  # client, client port, resolver, DNS id


@dataclass
class QueryTracker:
    """Queries seen on their way to a resolver, so that only solicited answers count.

    Bounded: at most `capacity` queries, each kept `lifetime` seconds; the
    oldest is evicted first (an attacker flooding queries only evicts queries).
    """

    capacity: int = 4096
    lifetime: float = 10.0

    def __post_init__(self) -> None:
        self._seen: OrderedDict[QueryKey, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def note(self, key: QueryKey, question: bytes, now: float) -> None:
        self._seen.pop(key, None)
        self._seen[key] = (question, now)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def take(self, key: QueryKey, question: bytes, now: float) -> bool:
        """True (and forget it) if this answer's query was seen, fresh, with this question."""
        while self._seen:
            oldest_key, (_, seen_at) = next(iter(self._seen.items()))
            if now - seen_at <= self.lifetime:
                break
            del self._seen[oldest_key]
        found = self._seen.get(key)
        if found is None or found[0] != question:
            return False
        del self._seen[key]
        return True


# --- answers -------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """Open `profile` from `device` to `address` for `timeout` seconds (because of `name`)."""

    device: IPAddress
    address: IPAddress
    profile: Profile
    timeout: int
    name: str


@dataclass(frozen=True)
class Limits:
    min_timeout: int = 60
    max_timeout: int = 86400
    allowed_targets: tuple[IPNetwork, ...] = ()


_REFUSED_BY_VERSION = {v: tuple(n for n in REFUSED_TARGETS if n.version == v) for v in (4, 6)}


def target_allowed(address: IPAddress, limits: Limits) -> bool:
    """Whether an answer's address may be opened (see REFUSED_TARGETS)."""
    if limits.allowed_targets and any(
        address in net for net in limits.allowed_targets if net.version == address.version
    ):
        return True
    return not any(address in net for net in _REFUSED_BY_VERSION[address.version])


def _address(octets: tuple[int, ...]) -> IPAddress:
    packed = bytes(octets)
    if len(packed) == 4:
        return ipaddress.IPv4Address(packed)
    if len(packed) == 16:
        return ipaddress.IPv6Address(packed)
    raise RemoteDataError("malformed", "address of bad length")


def question_of(record: DNSRecord) -> str:
    """The single question's name; RemoteDataError if there is not exactly one."""
    if len(record.questions) != 1:
        raise RemoteDataError("questions", f"{len(record.questions)} questions")
    return _name(record.questions[0].qname)


def grants_from_answer(
    record: DNSRecord, device: IPAddress, policy: CloudPolicy, limits: Limits
) -> tuple[list[Grant], str]:
    """Grants an answer earns, and a reason when it earns none.

    Follows the CNAME chain from the question (at most MAX_CNAME_LINKS links);
    a name matches if the question or any name in its chain is in the
    catalogue. The timeout is the smallest TTL on the chain, clamped.
    """
    if not record.header.qr:
        return [], "not_answer"
    if record.header.rcode != 0:
        return [], "rcode"
    qname = question_of(record)
    cnames: dict[str, tuple[str, int]] = {}
    addresses: dict[str, list[tuple[IPAddress, int]]] = {}
    for rr in record.rr:
        owner = _name(rr.rname)
        if rr.rtype == QTYPE.CNAME:
            cnames[owner] = (_name(rr.rdata.label), rr.ttl)
        elif rr.rtype in (QTYPE.A, QTYPE.AAAA):
            addresses.setdefault(owner, []).append((_address(rr.rdata.data), rr.ttl))
    chain = [qname]
    ttl = None
    name = qname
    while name in cnames:
        if len(chain) > MAX_CNAME_LINKS:
            return [], "cname_chain"
        name, link_ttl = cnames[name]
        if name in chain:
            return [], "cname_loop"
        chain.append(name)
        ttl = link_ttl if ttl is None else min(ttl, link_ttl)
    profiles: set[Profile] = set()
    for link in chain:
        profiles.update(policy.profiles_for(link))
    if not profiles:
        return [], "no_match"
    final = addresses.get(chain[-1], [])
    if not final:
        return [], "no_address"
    if len(final) > MAX_ADDRESSES_PER_ANSWER:
        final = final[:MAX_ADDRESSES_PER_ANSWER]
    grants: list[Grant] = []
    refused = 0
    for address, addr_ttl in final:
        if address.version != device.version:
            continue  # the device would connect from an address of the other family we do not know
        if not target_allowed(address, limits):
            refused += 1
            continue
        effective = addr_ttl if ttl is None else min(ttl, addr_ttl)
        timeout = max(limits.min_timeout, min(limits.max_timeout, effective))
        grants.extend(Grant(device, address, p, timeout, qname) for p in sorted(profiles))
    if not grants:
        return [], "refused_target" if refused else "no_address"
    return grants, ""


# --- the inspector: packets in, grants out -------------------------------------------


class DnsInspector:
    """Reads queries and answers; returns the grants an answer earns. Counts everything.

    Stateful only in the bounded query tracker and the counters; time comes in as `now`.
    """

    def __init__(self, policies: dict[ZoneRole, CloudPolicy], limits: Limits,
                 tracker: QueryTracker | None = None) -> None:
        self.policies = policies
        self.limits = limits
        self.tracker = tracker or QueryTracker()
        self.counters: dict[str, int] = {}

    def count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def on_packet(self, packet: bytes, role: ZoneRole, now: float) -> list[Grant]:
        """A queued DNS packet of a zone with `role`: a query is noted, an answer may grant."""
        try:
            datagram = parse_packet(packet)
            question = question_bytes(datagram.payload)
        except RemoteDataError as exc:
            self.count(f"bad_{exc.reason}")
            return []
        qid, flags = struct.unpack_from("!HH", datagram.payload)
        is_response = bool(flags & 0x8000)
        if datagram.dport == 53 and not is_response:
            self.count("queries_seen")
            self.tracker.note((datagram.src, datagram.sport, datagram.dst, qid), question, now)
            return []
        if datagram.sport != 53 or not is_response:
            self.count("bad_direction")
            return []
        self.count("answers_seen")
        if not self.tracker.take((datagram.dst, datagram.dport, datagram.src, qid), question, now):
            self.count("refused_unsolicited")
            return []
        try:
            record = decode(datagram.payload)
        except RemoteDataError as exc:
            self.count(f"bad_{exc.reason}")
            return []
        policy = self.policies.get(role)
        if policy is None:
            self.count("refused_no_policy")
            return []
        try:
            grants, reason = grants_from_answer(record, datagram.dst, policy, self.limits)
        except (*DECODE_ERRORS, RemoteDataError):
            self.count("bad_malformed")
            return []
        if reason:
            self.count("not_matched" if reason == "no_match" else f"refused_{reason}")
            return []
        self.count("answers_matched")
        return grants


@dataclass
class GrantLedger:
    """Live grants for `loxgw status`; the kernel expires the real elements on its own."""

    capacity: int = 20000

    def __post_init__(self) -> None:
        self._live: OrderedDict[tuple[IPAddress, IPAddress, Profile], tuple[str, float]] = OrderedDict()

    def record(self, grants: Iterable[Grant], now: float) -> None:
        for grant in grants:
            key = (grant.device, grant.address, grant.profile)
            self._live.pop(key, None)
            self._live[key] = (grant.name, now + grant.timeout)
        while len(self._live) > self.capacity:
            self._live.popitem(last=False)

    def _prune(self, now: float) -> None:
        for key in [k for k, (_, until) in self._live.items() if until <= now]:
            del self._live[key]

    def grants(self, now: float) -> list[Grant]:
        """The live grants with their remaining time, to put back what a firewall restart removed."""
        self._prune(now)
        return [Grant(device, address, profile, max(1, math.ceil(until - now)), name)
                for (device, address, profile), (name, until) in self._live.items()]

    def dump(self, now: float) -> list[dict[str, object]]:
        """The live grants as JSON-able records (expiry as seconds left), for the state file."""
        return [{"device": str(g.device), "address": str(g.address), "proto": g.profile.proto,
                 "ports": [str(p) for p in g.profile.ports], "name": g.name, "expires_in": g.timeout}
                for g in self.grants(now)]

    @staticmethod
    def parse_dump(records: object, profiles: Iterable[Profile]) -> list[Grant]:
        """Grants from a state file; records that do not fit a known profile are skipped."""
        known = set(profiles)
        grants: list[Grant] = []
        if not isinstance(records, list):
            return grants
        for record in records:
            try:
                profile = Profile(record["proto"], tuple(PortRange.parse(p) for p in record["ports"]))
                grant = Grant(ipaddress.ip_address(record["device"]), ipaddress.ip_address(record["address"]),
                              profile, int(record["expires_in"]), str(record["name"])[:255])
            except (KeyError, TypeError, ValueError):
                continue
            if profile in known and grant.timeout > 0 and grant.device.version == grant.address.version:
                grants.append(grant)
        return grants

    def live(self, now: float) -> list[dict[str, object]]:
        self._prune(now)
        return [
            {"device": str(device), "name": name, "address": str(address), "proto": profile.proto,
             "ports": ",".join(str(p) for p in profile.ports) or "-",
             "expires_in": round(until - now, 1)}
            for (device, address, profile), (name, until) in self._live.items()
        ]
