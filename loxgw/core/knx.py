"""KNX-IP routing across zones, sans I/O: datagrams and `now` in; copies, timers and status out.

A KNX-IP router (a Miniserver Gen. 1's KNX extension, a KNX IP router or
interface) sends its routing telegrams to 224.0.23.12:3671, often with TTL
1, so they never leave their VLAN. loxgw copies each one to the other
configured zone interfaces, from its own address there, with a TTL the user
chooses. KNXnet/IP routing carries no return path: nobody answers the IP
source of a routing indication, so the copy needs no original source.

Loop safety, as the discovery relay does it (core.relaypeers):

- every copy carries the relay mark (DSCP 5), and a marked datagram is never
  copied again, whoever sent it: no copy of a copy, so no loop and no
  ping-pong between two routers on the same segments;
- with two such routers, each copy's source address is its sender's address
  on that segment; its low 16 bits are the sender's tag, and per segment the
  lowest tag leads (relaypeers.Arbiter): the leader sends at once, a
  follower holds its copy back and drops it when the leader's arrives. The
  routers learn of each other from their copies and from a small marked
  hello (HELLO), sent on each interface at start, every HELLO_INTERVAL, and
  in answer to a peer's first hello, so even the first telegram crosses once. The hello starts
  with a byte no KNXnet/IP header starts with (its header length is 6), so
  KNX devices discard it as malformed;
- per-sender and global token buckets bound what a flood can cause.

Only well-formed KNXnet/IP frames (header length 6, version 1.0, total length
equal to the datagram's) of the routing services pass, at most MAX_FRAME
bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from loxgw.core import relaypeers
from loxgw.core.record import record
from loxgw.core.relaylimit import RateLimiter
from loxgw.core.relaypeers import Arbiter
from loxgw.core.relaywire import DSCP_MASK, RELAY_TOS

KNX_GROUP = IPv4Address("224.0.23.12")
KNX_PORT = 3671
COPY_TOS = RELAY_TOS  # marked like the relay's copies: never copied again, by any loxgw
MAX_FRAME = 512  # an extended-frame routing indication is at most ~270 bytes, a secure wrapper ~330
GLOBAL_RATE = 500.0  # telegrams/s copied from all senders together
HELLO = b"LOXGW-KNX-PEER\x01"  # 'L' (0x4c) where a KNXnet/IP header has its length 0x06
HELLO_INTERVAL = 20.0  # seconds; well inside relaypeers.PEER_MEMORY (60 s)
HELLO_REPLY_GAP = 1.0  # seconds between hellos answering a new peer's, per interface
# KNXnet/IP service types copied: routing indication, lost message, busy (flow control must
# reach the senders it throttles), system broadcast, the KNX IP Secure wrapper, and Secure's timer
# notify (0x0955), which keeps the replay timers of both zones in step.
ROUTING_SERVICES = frozenset({0x0530, 0x0531, 0x0532, 0x0533, 0x0950, 0x0955})
_HEADER = struct.Struct("!BBHH")


@record
class KnxInterface:
    """A zone interface the router copies between, as the kernel reports it now."""

    name: str
    index: int
    address: IPv4Address


@dataclass(frozen=True, slots=True)
class Copy:
    """Send `payload` to 224.0.23.12:3671 out of interface `ifindex`."""

    ifindex: int
    payload: bytes


def frame_service(data: bytes) -> int | None:
    """The service type of a well-formed KNXnet/IP frame, else None."""
    if len(data) < _HEADER.size:
        return None
    header_length, version, service, total = _HEADER.unpack_from(data)
    if header_length != 6 or version != 0x10 or total != len(data):
        return None
    return int(service)


def tag(address: IPv4Address) -> int:
    """A router's tag on a segment: the low 16 bits of its address there (as core.relaywire)."""
    return int(address) & 0xFFFF


class _Slot:
    __slots__ = ("iface", "peers", "replied")

    def __init__(self, iface: KnxInterface, peers: relaypeers.Segment | None) -> None:
        self.iface = iface
        self.replied = float("-inf")
        self.peers = peers if peers is not None else relaypeers.Segment(iface.index, tag(iface.address))


class KnxRouter:
    """Decides which routing telegrams to copy where; no sockets, no clock of its own."""

    def __init__(self, interfaces: frozenset[str], limiter: RateLimiter) -> None:
        self.allowed = interfaces
        self.limiter = limiter
        self.arbiter = Arbiter()
        self.counters: dict[str, int] = {}
        self.timer_changed = False  # a copy was deferred: the adapter should call get_timer() again
        self._slots: dict[int, _Slot] = {}
        self._own: frozenset[IPv4Address] = frozenset()

    @property
    def interfaces(self) -> tuple[KnxInterface, ...]:
        return tuple(s.iface for s in self._slots.values())

    def set_interfaces(self, interfaces: list[KnxInterface], own: frozenset[IPv4Address]) -> None:
        """The kernel's interfaces now (those configured are used) and every address of this router."""
        slots = {}
        for iface in sorted((i for i in interfaces if i.name in self.allowed), key=lambda i: i.name):
            old = self._slots.get(iface.index)
            same = old is not None and old.iface.address == iface.address
            slots[iface.index] = _Slot(iface, old.peers if same and old is not None else None)
        self._slots = slots
        self._own = own | {i.address for i in interfaces}

    def hellos(self) -> list[Copy]:
        """The presence hello for every interface (the service sends it every HELLO_INTERVAL)."""
        return [Copy(index, HELLO) for index in self._slots]

    def _hello_from(self, slot: _Slot, peer: int, now: float) -> list[Copy]:
        """A peer's hello: remember it; a peer new here hears ours at once, so it need not wait for it."""
        self._count("peer_hello_seen")
        new = peer not in slot.peers.peers
        slot.peers.seen(peer, now)
        if new and now - slot.replied >= HELLO_REPLY_GAP:  # forged hellos from ever new tags: bounded
            slot.replied = now
            return [Copy(slot.iface.index, HELLO)]
        return []

    def receive(self, ifindex: int, src: IPv4Address, dst: IPv4Address, data: bytes, tos: int,
                now: float) -> list[Copy]:
        """A datagram to port 3671 one of the interfaces received: the copies to send now."""
        slot = self._slots.get(ifindex)
        if slot is None:
            return self._drop("dropped_not_zone_interface")
        if dst != KNX_GROUP:
            return self._drop("dropped_not_group")
        if src in self._own:
            return self._drop("dropped_own_source")
        if len(data) > MAX_FRAME:  # before a peer's copy is remembered: no copy of ours is larger
            return self._drop("dropped_oversized")
        if tos & DSCP_MASK == RELAY_TOS:  # another loxgw's copy or hello: never copied again
            if data == HELLO:
                return self._hello_from(slot, tag(src), now)
            self._count("peer_copy_seen")
            verdict = self.arbiter.peer_copy(slot.peers, tag(src), self._key(ifindex, data), now)
            if verdict == relaypeers.CANCELLED:
                self._count("left_to_peer")
            elif verdict == relaypeers.LATE:
                self._count("late_peer_copy")
            return []
        self._count("received")
        service = frame_service(data)
        if service is None:
            return self._drop("dropped_malformed")
        if service not in ROUTING_SERVICES:
            return self._drop("dropped_service")
        refused = self.limiter.allow(src, now)
        if refused:
            return self._drop(f"dropped_{refused}")
        out = []
        for egress in self._slots.values():
            if egress is slot:
                continue
            if now < egress.peers.peers_until:
                verdict = self.arbiter.outgoing(egress.peers, self._key(egress.iface.index, data), data, 0, now)
                if verdict == relaypeers.DEFERRED:
                    self._count("deferred")
                    self.timer_changed = True
                    continue
                if verdict != relaypeers.SEND:
                    self._count("left_to_peer" if verdict == relaypeers.SUPPRESSED else "dropped_pending_full")
                    continue
            out.append(Copy(egress.iface.index, data))
            self._count("copied")
        return out

    def get_timer(self) -> float | None:
        """When handle_timer must run next (monotonic seconds), or None."""
        self.timer_changed = False
        return self.arbiter.next_due()

    def handle_timer(self, now: float) -> list[Copy]:
        """Held-back copies whose leader did not send them first: send them now."""
        out = []
        for entry in self.arbiter.due(now):
            if entry.key[0] in self._slots:  # else the interface went away meanwhile
                out.append(Copy(entry.key[0], entry.frame))
                self._count("copied")
        return out

    def status(self, now: float) -> dict[str, Any]:
        peers = {}
        for slot in self._slots.values():
            present = {f"{t >> 8}.{t & 255}": round(now - seen, 1)
                       for t, seen in slot.peers.peers.items() if now - seen <= relaypeers.PEER_MEMORY}
            if present:
                peers[slot.iface.name] = present
        return {"interfaces": [s.iface.name for s in self._slots.values()], "counters": dict(self.counters),
                "peers": peers, "holdoff_ms": round(self.arbiter.holdoff * 1000, 1)}

    @staticmethod
    def _key(ifindex: int, data: bytes) -> relaypeers.CopyKey:
        # Copies leave from each router's own address, so only the segment and the frame say
        # which telegram a copy carries.
        return (ifindex, 0, 0, KNX_PORT, data)

    def _count(self, kind: str) -> None:
        self.counters[kind] = self.counters.get(kind, 0) + 1

    def _drop(self, kind: str) -> list[Copy]:
        self._count(kind)
        return []
