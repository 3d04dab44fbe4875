"""Discovery relay decisions: which broadcast goes where, as pure functions of data and `now`.

Loxone's App and Config find a Miniserver with a UDP broadcast to 7070; the
Miniservers' Client/Gateway traffic uses 7070-7077; network devices sync
their blinking with 255.255.255.255:7079. Broadcasts stop at a VLAN edge, so
loxgw copies them to the other configured segments:

- the copy keeps the original source address and port, so the answer goes
  straight back to the asker (routed, through the firewall pinhole loxgw
  opens for it);
- it leaves as the egress segment's broadcast address;
- it carries a DSCP mark, and marked packets are never relayed again (not
  by this relay, not by a second relay on the same segments); TTL is left
  alone because Loxone devices may check it;
- never back out of the interface it came in on, never to or from the
  upstream (default-route) interface unless configured;
- per-source token buckets and a global one bound what a flood can cause.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from loxgw.core.catalog import PortRange

IPv4 = ipaddress.IPv4Address

# DSCP 0x05 ("loxgw relayed"): an otherwise unused codepoint, in the top six TOS bits.
RELAY_DSCP = 0x05
RELAY_TOS = RELAY_DSCP << 2
MAX_RELAY_PAYLOAD = 1472  # one Ethernet frame; Loxone discovery datagrams are far smaller
ANSWER_PORT = 7071  # the Miniserver answers a search to UDP 7071 of the asker
ANSWER_WINDOW = 10  # seconds an asker may receive answers from the devices zone
LIMIT_BUCKETS = 4096  # per-source buckets kept; attackers choose the source addresses
COPY_MEMORY = 1.0  # seconds a sent copy is remembered, to recognise it looping back
PEER_MEMORY = 60.0  # seconds a peer relay counts as active on a segment after its last copy
COPIES_KEPT = 4096

CopyKey = tuple[IPv4, int, int, int]  # source, source port, port, hash of payload


@dataclass(frozen=True)
class RelayInterface:
    """A Linux interface the relay may use, as the kernel reports it right now."""

    name: str
    index: int
    address: IPv4
    broadcast: IPv4
    upstream: bool = False  # holds the default route
    role: str = ""  # zone role ("devices", "clients") or "" if not in a zone


@dataclass(frozen=True)
class Received:
    """A datagram one of the relay's sockets received."""

    ifindex: int
    src: IPv4
    sport: int
    dst: IPv4  # the IP header's destination (broadcast, or something else)
    dport: int
    tos: int
    payload: bytes
    truncated: bool = False


@dataclass(frozen=True)
class Copy:
    """Send `packet` (a full IPv4 datagram) out of interface `out`."""

    out: RelayInterface
    packet: bytes


@dataclass(frozen=True)
class Decision:
    """What to do with one received datagram: copies to send, answers to allow, or why not."""

    copies: tuple[Copy, ...] = ()
    allow_answers: tuple[tuple[IPv4, int], ...] = ()  # (asker, port) pairs the devices may answer
    dropped: str = ""  # reason, when nothing is relayed
    ingress: str = ""


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class RateLimiter:
    """Per-source buckets (rate_limit/s, burst of the same) and one global bucket; bounded."""

    per_source: float
    global_rate: float
    capacity: int = LIMIT_BUCKETS
    _sources: OrderedDict[IPv4, TokenBucket] = field(default_factory=OrderedDict)
    _global: TokenBucket | None = None

    def allow(self, source: IPv4, now: float) -> str:
        """"" if allowed, else the reason ("rate_source" or "rate_global")."""
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = TokenBucket(self.per_source, self.per_source, self.per_source, now)
            self._sources[source] = bucket
            if len(self._sources) > self.capacity:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        if not bucket.take(now):
            return "rate_source"
        if self._global is None:
            self._global = TokenBucket(self.global_rate, self.global_rate, self.global_rate, now)
        if not self._global.take(now):
            return "rate_global"
        return ""

    def __len__(self) -> int:
        return len(self._sources)


@dataclass(frozen=True)
class RelayPolicy:
    """The parts of the config a decision needs."""

    ports: tuple[PortRange, ...]
    interfaces: frozenset[str]
    allow_upstream: bool = False


def udp_checksum(src: IPv4, dst: IPv4, udp: bytes) -> int:
    """RFC 768 checksum over the pseudo-header; 0 becomes 0xFFFF."""
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, len(udp))
    data = pseudo + udp + (b"\0" if len(udp) % 2 else b"")
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF) or 0xFFFF


def build_copy(src: IPv4, sport: int, dst: IPv4, dport: int, payload: bytes, ident: int) -> bytes:
    """An IPv4/UDP datagram from the original sender to `dst`, DSCP-marked as relayed.

    Built by hand because the copy must carry the asker's source address,
    which only a raw socket with our own header allows (the kernel fills in
    the IP header checksum).
    """
    udp_len = 8 + len(payload)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    udp = udp[:6] + struct.pack("!H", udp_checksum(src, dst, udp)) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, RELAY_TOS, 20 + udp_len, ident & 0xFFFF, 0,
                         64, 17, 0, src.packed, dst.packed)
    return header + udp


def decide(received: Received, interfaces: Iterable[RelayInterface], policy: RelayPolicy,
           limiter: RateLimiter, now: float) -> Decision:
    """Where a received datagram goes, if anywhere."""
    by_index = {i.index: i for i in interfaces}
    ingress = by_index.get(received.ifindex)
    if ingress is None or ingress.name not in policy.interfaces:
        return Decision(dropped="not_relay_interface")
    if received.tos >> 2 == RELAY_DSCP:
        return Decision(dropped="already_relayed", ingress=ingress.name)
    if received.truncated or len(received.payload) > MAX_RELAY_PAYLOAD:
        return Decision(dropped="oversized", ingress=ingress.name)
    if not any(received.dport in r for r in policy.ports):
        return Decision(dropped="port", ingress=ingress.name)
    if received.dst != ipaddress.IPv4Address("255.255.255.255") and received.dst != ingress.broadcast:
        return Decision(dropped="not_broadcast", ingress=ingress.name)
    if ingress.upstream and not policy.allow_upstream:
        return Decision(dropped="upstream", ingress=ingress.name)
    if received.src == ingress.address or received.src.is_unspecified:
        return Decision(dropped="own_or_unspecified_source", ingress=ingress.name)
    reason = limiter.allow(received.src, now)
    if reason:
        return Decision(dropped=reason, ingress=ingress.name)
    copies = tuple(
        Copy(out, build_copy(received.src, received.sport, out.broadcast, received.dport,
                             received.payload, out.index))
        for out in sorted(by_index.values(), key=lambda i: i.name)
        if out.index != ingress.index and out.name in policy.interfaces
        and (policy.allow_upstream or not out.upstream)
    )
    if not copies:
        return Decision(dropped="no_egress", ingress=ingress.name)
    answers: tuple[tuple[IPv4, int], ...] = ()
    if ingress.role == "clients" and any(c.out.role == "devices" for c in copies):
        answers = ((received.src, ANSWER_PORT), (received.src, received.sport))
    return Decision(copies=copies, allow_answers=answers, ingress=ingress.name)


def copy_key(src: IPv4, sport: int, dport: int, payload: bytes) -> CopyKey:
    return (src, sport, dport, hash(payload))


def holdoff(iface: RelayInterface) -> float:
    """Seconds to wait before relaying onto a segment where another relay is active.

    Two relays on the same segments each see the original broadcast. Where a
    peer was seen, both wait, each for a time derived from its own address on
    that segment, and the later one cancels when the earlier one's marked
    copy arrives: one copy per segment. (Addresses equal modulo 8 tie.)
    """
    return 0.002 + (int(iface.address) % 8) * 0.001


@dataclass
class CopyLedger:
    """Copies this relay sent, so a marked packet can be told apart: our own, or a peer relay's.

    Linux loops a locally sent broadcast back to local sockets, so every copy we
    send comes back to us once; anything marked beyond that is a peer's. Bounded.
    """

    _sent: OrderedDict[tuple[int, CopyKey], tuple[int, float]] = field(default_factory=OrderedDict)
    _peers: dict[int, float] = field(default_factory=dict)

    def sent(self, ifindex: int, key: CopyKey, now: float) -> None:
        count, _ = self._sent.pop((ifindex, key), (0, now))
        self._sent[(ifindex, key)] = (count + 1, now)
        while len(self._sent) > COPIES_KEPT:
            self._sent.popitem(last=False)

    def marked_arrival(self, ifindex: int, key: CopyKey, now: float) -> str:
        """"own" for our looped-back copy, "peer" for another relay's (which marks it active)."""
        while self._sent:
            oldest, (_, at) = next(iter(self._sent.items()))
            if now - at <= COPY_MEMORY:
                break
            del self._sent[oldest]
        count, at = self._sent.get((ifindex, key), (0, now))
        if count > 0:
            if count == 1:
                del self._sent[(ifindex, key)]
            else:
                self._sent[(ifindex, key)] = (count - 1, at)
            return "own"
        self._peers[ifindex] = now
        return "peer"

    def peer_active(self, ifindex: int, now: float) -> bool:
        seen = self._peers.get(ifindex)
        return seen is not None and now - seen <= PEER_MEMORY
