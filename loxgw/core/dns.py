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
from typing import NamedTuple

from loxgw.core.catalog import CLIENT_PRODUCTS, DEVICE_PRODUCTS, Entry, PortRange, Proto
from loxgw.core.config import IPAddress, IPNetwork, ZoneRole
from loxgw.core.errors import RemoteDataError

MAX_DNS_BYTES = 4096  # EDNS0 payloads above this are not something a home resolver sends
MAX_CNAME_LINKS = 10
MAX_ADDRESSES_PER_ANSWER = 16
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.proto, self.ports)))

    def __hash__(self) -> int:  # computed once: profiles key the ledger on every matching answer
        return self._hash  # type: ignore[attr-defined, no-any-return]

    def describe(self) -> str:
        if not self.ports:
            return self.proto
        return f"{self.proto}/{','.join(str(p) for p in self.ports)}"


@dataclass(frozen=True)
class CloudPolicy:
    """Which names a zone role may resolve into which profiles (built once from the catalogue)."""

    exact: dict[str, frozenset[Profile]]
    wildcard: dict[str, frozenset[Profile]]  # key: the suffix after "*." (e.g. "dyndns.loxonecloud.com")

    def __post_init__(self) -> None:
        # Every name gets the profiles of all patterns it matches. Folding the
        # shorter wildcards into each pattern once, here, leaves one dictionary
        # hit per answer instead of a union per answer.
        def closure(name: str, own: frozenset[Profile]) -> tuple[Profile, ...]:
            found = set(own)
            for suffix, profiles in self.wildcard.items():
                if name.endswith("." + suffix):
                    found.update(profiles)
            return tuple(sorted(found))

        object.__setattr__(self, "_exact", {n: closure(n, p) for n, p in self.exact.items()})
        object.__setattr__(self, "_wildcard", {n: closure(n, p) for n, p in self.wildcard.items()})

    def profiles_for(self, name: str) -> tuple[Profile, ...]:
        """Profiles a (lower-case, dot-free-end) name matches, in order; empty if none.

        A wildcard `*.x.y` matches one or more labels before `x.y` on a dot
        boundary: not `x.y` itself, not `evilx.y`, not `x.y.evil.net`.
        """
        exact: dict[str, tuple[Profile, ...]] = self._exact  # type: ignore[attr-defined]
        found = exact.get(name)
        if found is not None:
            return found
        wildcard: dict[str, tuple[Profile, ...]] = self._wildcard  # type: ignore[attr-defined]
        dot = name.find(".")
        while dot >= 0:  # longest suffix first: its closure holds the shorter ones' profiles
            found = wildcard.get(name[dot + 1 :])
            if found is not None:
                return found
            dot = name.find(".", dot + 1)
        return ()


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


class DnsSegment(NamedTuple):
    """The addressing of a DNS packet (UDP datagram or single-segment TCP message) and the message.

    Addresses stay packed (4 or 16 octets): most packets never need an
    ipaddress object, and bytes hash far faster as tracker keys.
    """

    src: bytes
    dst: bytes
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
        src, dst = packet[12:16], packet[16:20]
        offset, end = ihl, min(len(packet), struct.unpack_from("!H", packet, 2)[0])
    elif version == 6:
        if len(packet) < 48:
            raise RemoteDataError("truncated")
        proto = packet[6]
        src, dst = packet[8:24], packet[24:40]
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


def question_bytes(payload: bytes) -> bytes:
    """The wire form of a message's single question (name, type, class), name lower-cased.

    Why not dnslib here: every query and answer of a cloud zone passes this
    check, and a full dnslib parse costs tens of microseconds; comparing the
    answer's question with the query's, byte for byte, needs only the label
    walk below.
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


@dataclass(frozen=True)
class WireAnswer:
    """What a DNS response says that matters here: its flags, question, and answer section."""

    flags: int
    qname: str
    cnames: dict[str, tuple[str, int]]  # owner -> (target, ttl)
    addresses: dict[str, list[tuple[bytes, int]]]  # owner -> [(packed A/AAAA, ttl)]


TYPE_A, TYPE_CNAME, TYPE_AAAA = 1, 5, 28
CLASS_IN = 1
MAX_POINTER_HOPS = 64  # more than any real message needs; bounds a crafted pointer maze
MAX_ANSWER_RECORDS = 64


def read_name(payload: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) name at `offset`, lower-cased dotted text, and the offset after it.

    Compression pointers may only point backwards (which also ends every
    loop), at most MAX_POINTER_HOPS of them; the name is at most 255 octets.
    Labels must be UTF-8, as dnslib demands. A label containing a dot yields
    the name "" (matches nothing): joined, "a\\.b" would pose as two labels.
    """
    labels: list[bytes] = []
    after = -1
    hops = 0
    size = 1
    poisoned = False
    end = len(payload)
    while True:
        if offset >= end:
            raise RemoteDataError("truncated", "name runs past the end")
        length = payload[offset]
        if length >= 0xC0:
            if offset + 1 >= end:
                raise RemoteDataError("truncated", "compression pointer cut off")
            target = ((length & 0x3F) << 8) | payload[offset + 1]
            if target >= offset:
                raise RemoteDataError("malformed", "compression pointer does not point backwards")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise RemoteDataError("malformed", "too many compression pointers")
            if after < 0:
                after = offset + 2
            offset = target
            continue
        if length & 0xC0:
            raise RemoteDataError("malformed", "extended label type")
        if length == 0:
            break
        size += length + 1
        if size > 255 or offset + 1 + length > end:
            raise RemoteDataError("malformed" if size > 255 else "truncated", "bad name")
        raw = payload[offset + 1 : offset + 1 + length]
        if not raw.isascii():
            try:
                raw.decode()
            except UnicodeDecodeError:
                raise RemoteDataError("malformed", "label is not UTF-8") from None
        if b"." in raw:
            poisoned = True
        labels.append(raw)
        offset += 1 + length
    # bytes.lower() folds ASCII only: no Unicode folding may turn a foreign label into a catalogue one.
    name = "" if poisoned else b".".join(labels).lower().decode()
    return name, (after if after >= 0 else offset + 1)


def read_answer(payload: bytes) -> WireAnswer:
    """The question and answer section of a DNS response, straight from the wire.

    Why not dnslib (which the tests use as the reference reader): every
    matching answer of a cloud zone passes here, while a held answer or a
    held first packet waits, and dnslib's full parse builds objects for every
    section and field. Measured on this project's CI machine: dnslib 20-33 µs
    per answer, this walk 3-5 µs. Only what a grant needs is read; authority
    and additional sections are not. Raises RemoteDataError.
    """
    if len(payload) > MAX_DNS_BYTES:
        raise RemoteDataError("oversized")
    if len(payload) < 12:
        raise RemoteDataError("truncated", "no header")
    flags, qdcount, ancount = struct.unpack_from("!HHH", payload, 2)
    if qdcount != 1:
        raise RemoteDataError("questions", f"{qdcount} questions")
    qname, offset = read_name(payload, 12)
    offset += 4
    if offset > len(payload):
        raise RemoteDataError("truncated", "question type or class missing")
    cnames: dict[str, tuple[str, int]] = {}
    addresses: dict[str, list[tuple[bytes, int]]] = {}
    for _ in range(min(ancount, MAX_ANSWER_RECORDS)):
        owner, offset = read_name(payload, offset)
        if offset + 10 > len(payload):
            raise RemoteDataError("truncated", "record header")
        rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", payload, offset)
        offset += 10
        rdata_end = offset + rdlength
        if rdata_end > len(payload):
            raise RemoteDataError("truncated", "record data")
        if rclass == CLASS_IN:
            if rtype == TYPE_CNAME:
                target, name_end = read_name(payload, offset)
                if name_end != rdata_end:
                    raise RemoteDataError("malformed", "CNAME target does not fill its record")
                cnames[owner] = (target, ttl)
            elif rtype in (TYPE_A, TYPE_AAAA):
                if rdlength != (4 if rtype == TYPE_A else 16):
                    raise RemoteDataError("malformed", "address of bad length")
                addresses.setdefault(owner, []).append((payload[offset:rdata_end], ttl))
        offset = rdata_end
    return WireAnswer(flags, qname, cnames, addresses)


# --- queries seen --------------------------------------------------------------

QueryKey = tuple[bytes, int, bytes, int]  # client, client port, resolver (packed), DNS id


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


class Grant(NamedTuple):
    """Open `profile` from `device` to `address` for `timeout` seconds (because of `name`).

    A NamedTuple rather than a frozen dataclass: it is built for every
    matching answer, and costs a third as much to build.
    """

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


# As integer ranges keyed by packed length: membership in ipaddress networks costs a
# microsecond per network, and every address of every matching answer is checked.
_REFUSED_RANGES = {
    length: tuple((int(n.network_address), int(n.broadcast_address)) for n in REFUSED_TARGETS
                  if n.version == version)
    for version, length in ((4, 4), (6, 16))
}


def target_allowed(packed: bytes, limits: Limits) -> bool:
    """Whether an answer's address, as it comes off the wire (4 or 16 octets), may be opened (see REFUSED_TARGETS)."""
    if limits.allowed_targets:
        address = ipaddress.ip_address(packed)
        if any(address in net for net in limits.allowed_targets if net.version == address.version):
            return True
    value = int.from_bytes(packed, "big")
    return not any(low <= value <= high for low, high in _REFUSED_RANGES[len(packed)])


def grants_from_answer(
    answer: WireAnswer, device: IPAddress, policy: CloudPolicy, limits: Limits
) -> tuple[list[Grant], str]:
    """Grants an answer earns, and a reason when it earns none.

    Follows the CNAME chain from the question (at most MAX_CNAME_LINKS links);
    a name matches if the question or any name in its chain is in the
    catalogue. The timeout is the smallest TTL on the chain, clamped.
    """
    if not answer.flags & 0x8000:
        return [], "not_answer"
    if answer.flags & 0x000F:
        return [], "rcode"
    qname = answer.qname
    chain = [qname]
    ttl = None
    name = qname
    while name in answer.cnames:
        if len(chain) > MAX_CNAME_LINKS:
            return [], "cname_chain"
        name, link_ttl = answer.cnames[name]
        if name in chain:
            return [], "cname_loop"
        chain.append(name)
        ttl = link_ttl if ttl is None else min(ttl, link_ttl)
    profiles: tuple[Profile, ...] = ()
    for link in chain:
        found = policy.profiles_for(link)
        if found and found != profiles:
            profiles = tuple(sorted({*profiles, *found})) if profiles else found
    if not profiles:
        return [], "no_match"
    final = answer.addresses.get(chain[-1], [])
    if not final:
        return [], "no_address"
    family_length = len(device.packed)
    grants: list[Grant] = []
    refused = 0
    for packed, addr_ttl in final[:MAX_ADDRESSES_PER_ANSWER]:
        if len(packed) != family_length:
            continue  # the device would connect from an address of the other family we do not know
        if not target_allowed(packed, limits):
            refused += 1
            continue
        address = ipaddress.ip_address(packed)
        effective = addr_ttl if ttl is None else min(ttl, addr_ttl)
        timeout = max(limits.min_timeout, min(limits.max_timeout, effective))
        grants.extend(Grant(device, address, p, timeout, qname) for p in profiles)
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
            answer = read_answer(datagram.payload)
        except RemoteDataError as exc:
            self.count(f"bad_{exc.reason}")
            return []
        policy = self.policies.get(role)
        if policy is None:
            self.count("refused_no_policy")
            return []
        grants, reason = grants_from_answer(answer, ipaddress.ip_address(datagram.dst), policy, self.limits)
        if reason:
            self.count("not_matched" if reason == "no_match" else f"refused_{reason}")
            return []
        self.count("answers_matched")
        return grants


@dataclass
class GrantLedger:
    """Live grants for `loxgw status` and the per-device cap; the kernel expires the real elements itself.

    Bounded twice: `capacity` grants in all (the oldest go first) and
    `per_device` live grants per device. A device that resolves name after
    name (or is made to) gets nothing new beyond its cap until some expire;
    its existing grants are still refreshed.
    """

    capacity: int = 20000
    per_device: int = 2048
    prune_every: float = 1.0  # seconds: a device at its cap costs one full pass per second, at most

    def __post_init__(self) -> None:
        self._live: OrderedDict[tuple[IPAddress, IPAddress, Profile], tuple[str, float]] = OrderedDict()
        self._count: dict[IPAddress, int] = {}
        self._pruned_at = -math.inf

    def admit(self, grants: list[Grant], now: float) -> list[Grant]:
        """The grants a device may still get: refreshes always, new ones while under its cap."""
        admitted = []
        for grant in grants:
            key = (grant.device, grant.address, grant.profile)
            if key not in self._live and self._count.get(grant.device, 0) >= self.per_device:
                if now - self._pruned_at >= self.prune_every:
                    self._prune(now)
                if self._count.get(grant.device, 0) >= self.per_device:
                    continue
            admitted.append(grant)
        return admitted

    def record(self, grants: Iterable[Grant], now: float) -> None:
        for grant in grants:
            key = (grant.device, grant.address, grant.profile)
            if self._live.pop(key, None) is None:
                self._count[grant.device] = self._count.get(grant.device, 0) + 1
            self._live[key] = (grant.name, now + grant.timeout)
        while len(self._live) > self.capacity:
            self._forget(self._live.popitem(last=False)[0])

    def _forget(self, key: tuple[IPAddress, IPAddress, Profile]) -> None:
        left = self._count.get(key[0], 1) - 1
        if left:
            self._count[key[0]] = left
        else:
            self._count.pop(key[0], None)

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        for key in [k for k, (_, until) in self._live.items() if until <= now]:
            del self._live[key]
            self._forget(key)

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
