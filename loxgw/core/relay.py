"""The discovery relay, sans I/O: datagrams and `now` in; copies, timers and events out.

Loxone's App and Config find a Miniserver with a UDP broadcast to 7070; the
Miniservers' Client/Gateway traffic uses 7070-7077; network devices sync
their blinking with 255.255.255.255:7079. Broadcasts stop at a VLAN edge, so
loxgw copies them to the other configured segments:

- the copy keeps the original source address, port and TTL, so the answer
  goes straight back to the asker (routed, through the answer window loxgw
  opens for it);
- it leaves as the egress segment's broadcast address;
- it carries a DSCP mark, and marked packets are never relayed again (not
  by this relay, not by a second relay on the same segments);
- never back out of the interface it came in on, never to or from the
  upstream (default-route) interface unless configured;
- per-source token buckets and a global one bound what a flood can cause;
- a second relay on the same segments is detected, and each broadcast then
  crosses once (core.relaypeers).

Shaped like aioquic's connection: `receive(ifindex, datagram, now)` returns
the copies to send now, `get_timer()`/`handle_timer(now)` release deferred
ones, `next_event()` hands out answer windows to open and discovery answers
for the devices service. Per datagram it works on ints and bytes only, and
counts into a preallocated list; names are rendered in `status()` alone.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from loxgw.core import relaypeers, relaywire
from loxgw.core.catalog import PortRange
from loxgw.core.record import record
from loxgw.core.relaylimit import RateLimiter
from loxgw.core.relaypeers import Arbiter
from loxgw.core.relaywire import (
    ALL_ONES,
    DSCP_MASK,
    HEADERS,
    IP_DF,
    MAX_RELAY_PAYLOAD,
    RECEIVE_SIZE,
    RELAY_DSCP,
    RELAY_TOS,
    UDP,
    CopyTemplate,
)

__all__ = ["MAX_RELAY_PAYLOAD", "RELAY_DSCP", "RELAY_TOS", "AnswerWindow", "DiscoveryAnswer", "RateLimiter",
           "Relay", "RelayInterface", "RelayPolicy"]

IPv4 = IPv4Address

SEARCH_PORT = 7070  # a LoxLIVE search goes to 7070 ...
ANSWER_PORT = 7071  # ... and the Miniserver answers to the asker's 7071
ANSWER_WINDOW = 10  # seconds an asker may receive answers from a devices segment
ANSWER_REFRESH = ANSWER_WINDOW / 2  # an open window is written again only after this
WINDOWS_KEPT = 4096
EVENTS_KEPT = 1024  # events the service has not collected yet; the service drains them per batch
PORT_COLUMNS = 64  # relayed ports counted one by one; a longer list is counted per configured range

Transmit = tuple[int, bytes]  # egress ifindex, frame (Ethernet) or packet (IP layer), see CopyTemplate

KINDS = ("received", "relayed", "send_errors", "peer_copy_seen", "left_to_peer", "deferred", "late_peer_copy",
         "dropped_oversized", "dropped_not_broadcast", "dropped_upstream", "dropped_own_or_unspecified_source",
         "dropped_rate_source", "dropped_rate_global", "dropped_no_egress", "dropped_pending_full",
         "dropped_port", "dropped_malformed", "dropped_not_relay_interface")
(RECEIVED, RELAYED, SEND_ERRORS, PEER_COPY_SEEN, LEFT_TO_PEER, DEFERRED, LATE_PEER_COPY, OVERSIZED,
 NOT_BROADCAST, UPSTREAM, OWN_SOURCE, RATE_SOURCE, RATE_GLOBAL, NO_EGRESS, PENDING_FULL, PORT, MALFORMED,
 NOT_RELAY_INTERFACE) = range(len(KINDS))
NK = len(KINDS)
_VERDICT = {relaypeers.SUPPRESSED: LEFT_TO_PEER, relaypeers.DEFERRED: DEFERRED,
            relaypeers.PENDING_FULL: PENDING_FULL}
_NOTHING: tuple[Transmit, ...] = ()
_HEADERS, _PACK = HEADERS.unpack_from, HEADERS.pack


@record
class RelayInterface:
    """A Linux interface the relay may use, as the kernel reports it right now."""

    name: str
    index: int
    address: IPv4
    broadcast: IPv4
    upstream: bool = False  # holds the default route
    role: str = ""  # zone role ("devices", "clients") or "" if not in a zone
    mac: bytes = b""  # Ethernet address: copies leave as frames; empty: at the IP layer


@record
class RelayPolicy:
    """The parts of the config the relay needs."""

    ports: tuple[PortRange, ...]
    interfaces: frozenset[str]
    allow_upstream: bool = False


@dataclass(frozen=True, slots=True)
class AnswerWindow:
    """Let answers from `segment` reach `asker`:`port` for `timeout` seconds (any source port)."""

    segment: str
    asker: int
    port: int
    timeout: int


@dataclass(frozen=True, slots=True)
class DiscoveryAnswer:
    """A datagram to this router's answer port: a LoxLIVE (or Audioserver) answer for the devices service."""

    src: int
    payload: bytes


Event = AnswerWindow | DiscoveryAnswer


_LIMIT = {"rate_source": RATE_SOURCE, "rate_global": RATE_GLOBAL}


Out = tuple[int, bytes, int, int, int, int, relaypeers.Segment, int]
"""An egress segment as the copy loop unpacks it: ifindex, link header, tag, broadcast, broadcast's
words, IP header constant (CopyTemplate), peer state, counter row."""


class _Slot:
    """One relayed interface as the hot path reads it: ints, a copy template, precomputed egress."""

    __slots__ = ("address", "base", "broadcast", "egress", "iface", "index", "ingress", "outs", "peers",
                 "template", "window_due", "windows")

    def __init__(self, iface: RelayInterface, base: int, peers: relaypeers.Segment | None, ingress: bool) -> None:
        self.iface = iface
        self.index = iface.index
        self.base = base
        self.address = int(iface.address)
        self.broadcast = int(iface.broadcast)
        self.ingress = ingress
        self.template = CopyTemplate(self.address, self.broadcast, iface.mac)
        self.peers = peers if peers is not None else relaypeers.Segment(iface.index, self.template.tag)
        self.egress: tuple[_Slot, ...] = ()
        self.outs: tuple[Out, ...] = ()  # the egress slots, flattened
        self.windows: tuple[str, ...] = ()  # devices segments whose answers a search from here opens
        # source . source port . port -> when a search like it may need a window written again; until
        # then its windows are fresh and _open_windows is not called (most searches repeat).
        self.window_due: dict[int, float] = {}


class Relay:
    """One relay's decisions and state; no sockets, no clock of its own."""

    def __init__(self, policy: RelayPolicy, limiter: RateLimiter) -> None:
        self.policy = policy
        self.limiter = limiter
        self.arbiter = Arbiter()
        self.interfaces: tuple[RelayInterface, ...] = ()
        ports = sorted({p for r in policy.ports for p in range(r.first, r.last + 1)})
        if len(ports) <= PORT_COLUMNS:
            self._labels = [str(p) for p in ports]
            self._columns = {p: i * NK for i, p in enumerate(ports)}
            self._ranges: list[tuple[int, int]] = []
        else:  # one column per configured range, looked up once per port and remembered
            self._ranges = relaywire.merged(policy.ports)
            self._labels = [f"{a}-{b}" if a != b else str(a) for a, b in self._ranges]
            self._columns = {}
        self._other = len(self._labels) * NK  # the column of ports not relayed
        self._labels.append("other")
        self._row = len(self._labels) * NK
        self._names = ["other"]  # row 0: datagrams on interfaces the relay does not use
        self._counts = [0] * self._row
        self._slots: dict[int, _Slot] = {}
        self.events: deque[Event] = deque()  # read with next_event(); the edge checks it is empty
        self._windows: dict[tuple[str, int, int], float] = {}
        self.answers_handed_on = 0
        self.events_dropped = 0
        self.timer_changed = False  # a copy was deferred: the adapter should call get_timer() again
        self.peers_changed = False  # a peer relay appeared on a segment: the adapter reads peers_until(), clears it

    # --- interfaces ----------------------------------------------------------------------------

    def set_interfaces(self, interfaces: Iterable[RelayInterface]) -> None:
        """The kernel's current interfaces; those the policy names are relayed between."""
        policy = self.policy
        chosen = sorted((i for i in interfaces if i.name in policy.interfaces), key=lambda i: i.name)
        slots: dict[int, _Slot] = {}
        for iface in chosen:
            if iface.name not in self._names:
                self._names.append(iface.name)
                self._counts.extend([0] * self._row)
            old = self._slots.get(iface.index)
            peers = old.peers if old is not None and old.iface.address == iface.address else None
            slots[iface.index] = _Slot(iface, self._names.index(iface.name) * self._row, peers,
                                       policy.allow_upstream or not iface.upstream)
        for slot in slots.values():
            slot.egress = tuple(o for o in slots.values() if o is not slot and o.ingress)
            slot.outs = tuple((o.index, o.template.link, o.template.tag, o.template.broadcast, o.template.dst_words,
                               o.template.ip_const, o.peers, o.base) for o in slot.egress)
            if slot.iface.role == "clients":
                slot.windows = tuple(o.iface.name for o in slot.egress if o.iface.role == "devices")
        self._slots = slots
        self.interfaces = tuple(chosen)

    # --- datagrams -----------------------------------------------------------------------------

    def receive(self, ifindex: int, datagram: bytes, now: float) -> tuple[Transmit, ...] | list[Transmit]:
        """A datagram (IP header first) one of the segments received: the copies to send now.

        The hot path: one unpack, ints throughout, checksums finished per copy
        from one sum of the payload (relaywire), counters bumped by index.
        """
        counts = self._counts
        slot = self._slots.get(ifindex)
        if slot is None:  # row 0: interfaces the relay does not use (a refresh under way)
            counts[self._other + NOT_RELAY_INTERFACE] += 1
            return _NOTHING
        if len(datagram) >= 28 and datagram[0] == 0x45:  # no IP options: unpacked here, in one go
            _, tos, _, ident, frag, ttl, proto, _, src, dst, sport, dport, udp_len, csum = _HEADERS(datagram)
            payload = datagram[28 : 20 + udp_len]
            if proto != UDP or frag & 0x3FFF or len(payload) != udp_len - 8:
                counts[slot.base + self._other + (OVERSIZED if len(datagram) >= RECEIVE_SIZE else MALFORMED)] += 1
                return _NOTHING
        else:
            head = relaywire.parse(datagram)
            if head is None:
                counts[slot.base + self._other + (OVERSIZED if len(datagram) >= RECEIVE_SIZE else MALFORMED)] += 1
                return _NOTHING
            tos, ident, ttl, src, dst, sport, dport, csum, payload = head
        column = self._columns.get(dport)
        if column is None:
            column = self._column(dport)
            if column is None:
                counts[slot.base + self._other + PORT] += 1
                return _NOTHING
        base = slot.base + column
        if tos & DSCP_MASK == RELAY_TOS:  # a peer relay's copy (our own never come back: relaywire)
            counts[base + PEER_COPY_SEEN] += 1
            if now >= slot.peers.peers_until:
                self.peers_changed = True  # the first copy of a peer (again): the kernel path must yield
            verdict = self.arbiter.peer_copy(slot.peers, ident, (ifindex, src, sport, dport, payload), now)
            if verdict == relaypeers.CANCELLED:
                counts[base + LEFT_TO_PEER] += 1
            elif verdict == relaypeers.LATE:
                counts[base + LATE_PEER_COPY] += 1
            return _NOTHING
        counts[base + RECEIVED] += 1
        if udp_len - 8 > MAX_RELAY_PAYLOAD:
            counts[base + OVERSIZED] += 1
            return _NOTHING
        if dst != ALL_ONES and dst != slot.broadcast:
            counts[base + NOT_BROADCAST] += 1
            return _NOTHING
        if not slot.ingress:
            counts[base + UPSTREAM] += 1
            return _NOTHING
        if src == slot.address or src == 0:
            counts[base + OWN_SOURCE] += 1
            return _NOTHING
        refused = self.limiter.allow(src, now)
        if refused:
            counts[base + _LIMIT[refused]] += 1
            return _NOTHING
        outs = slot.outs
        if not outs:
            counts[base + NO_EGRESS] += 1
            return _NOTHING
        # relaywire.udp_sum and CopyTemplate.frame, inlined: this runs once per relayed broadcast.
        src_words = (src >> 16) + (src & 0xFFFF)
        partial = 0
        if csum:
            body = int.from_bytes(payload, "big") << 8 if udp_len & 1 else int.from_bytes(payload, "big")
            partial = body % 0xFFFF + src_words + sport + dport + 2 * udp_len + UDP
        total = 20 + udp_len
        ip_part = total + (ttl << 8) + src_words
        out = []
        for index, link, tag, broadcast, dst_words, ip_const, peers, row in outs:
            check = 0xFFFF - ((partial + dst_words) % 0xFFFF or 0xFFFF) or 0xFFFF if csum else 0
            frame = link + _PACK(0x45, RELAY_TOS, total, tag, IP_DF, ttl, UDP,
                                 0xFFFF - ((ip_const + ip_part) % 0xFFFF or 0xFFFF), src, broadcast,
                                 sport, dport, udp_len, check) + payload
            if now < peers.peers_until:
                verdict = self.arbiter.outgoing(peers, (index, src, sport, dport, payload), frame, column, now)
                if verdict != relaypeers.SEND:
                    counts[row + column + _VERDICT[verdict]] += 1
                    self.timer_changed |= verdict == relaypeers.DEFERRED
                    continue
            out.append((index, frame))
            counts[row + column + RELAYED] += 1
        if slot.windows:
            due = slot.window_due
            key = src << 32 | sport << 16 | dport
            if now >= due.get(key, now):
                if key not in due and len(due) >= WINDOWS_KEPT:
                    del due[next(iter(due))]
                due[key] = self._open_windows(slot.windows, src, sport, dport, now)
        return out

    def receive_answer(self, src: int, payload: bytes) -> None:
        """A datagram addressed to this router's answer port: handed to the devices service, never parsed here."""
        self.answers_handed_on += 1
        self._event(DiscoveryAnswer(src, payload))

    def transmit_failed(self, ifindex: int, frame: bytes) -> None:
        """The edge could not send `frame` (counted where it was counted as relayed)."""
        slot = self._slots.get(ifindex)
        if slot is not None:
            at = len(slot.template.link) + 22
            dport = int.from_bytes(frame[at : at + 2], "big")
            self._counts[slot.base + (self._column(dport) or self._other) + SEND_ERRORS] += 1

    # --- timers and events ---------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When handle_timer must run next (monotonic seconds), or None."""
        self.timer_changed = False
        return self.arbiter.next_due()

    def handle_timer(self, now: float) -> list[Transmit]:
        """Deferred copies whose peer did not send them first: send them now."""
        out = []
        for entry in self.arbiter.due(now):
            slot = self._slots.get(entry.key[0])
            if slot is not None:  # else the interface went away meanwhile
                self._counts[slot.base + entry.column + RELAYED] += 1
                out.append((entry.key[0], entry.frame))
        return out

    def peers_until(self) -> float:
        """Until when a peer relay counts as present on any segment (-inf: none seen)."""
        return max((slot.peers.peers_until for slot in self._slots.values()), default=float("-inf"))

    def next_event(self) -> Event | None:
        return self.events.popleft() if self.events else None

    def _event(self, event: Event) -> None:
        if len(self.events) >= EVENTS_KEPT:
            self.events_dropped += 1
            return
        self.events.append(event)

    def _open_windows(self, segments: tuple[str, ...], asker: int, sport: int, dport: int, now: float) -> float:
        """Answers to a search go to its source port; a Miniserver's LoxLIVE answer to 7071 as well.

        Returns when the first of these windows needs writing again.
        """
        ports = (sport, ANSWER_PORT) if dport == SEARCH_PORT and sport != ANSWER_PORT else (sport,)
        windows = self._windows
        oldest = now
        for segment in segments:
            for port in ports:
                key = (segment, asker, port)
                opened = windows.get(key)
                if opened is not None:
                    if now - opened < ANSWER_REFRESH:
                        oldest = min(oldest, opened)
                        continue
                    del windows[key]
                elif len(windows) >= WINDOWS_KEPT:
                    del windows[next(iter(windows))]
                windows[key] = now
                self._event(AnswerWindow(segment, asker, port, ANSWER_WINDOW))
        return oldest + ANSWER_REFRESH

    def _column(self, port: int) -> int | None:
        """The counter column of a port (None: not relayed); ranges' columns are remembered per port."""
        column = self._columns.get(port)
        if column is None and self._ranges:
            i = bisect.bisect_right(self._ranges, (port, 65536)) - 1
            if i >= 0 and self._ranges[i][0] <= port <= self._ranges[i][1]:
                column = self._columns[port] = i * NK
        return column

    # --- status --------------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        """Counters as "interface:port:kind" (non-zero only), peers per segment, the hold-off."""
        counters: dict[str, int] = {}
        counts, labels = self._counts, self._labels
        for row, name in enumerate(self._names):
            for col, label in enumerate(labels):
                base = row * self._row + col * NK
                for kind, value in enumerate(counts[base : base + NK]):
                    if value:
                        counters[f"{name}:{label}:{KINDS[kind]}"] = value
        if self.answers_handed_on:
            counters["discovery_answers_handed_on"] = self.answers_handed_on
        if self.events_dropped:
            counters["events_dropped"] = self.events_dropped
        peers = {}
        for slot in self._slots.values():
            present = {f"{tag >> 8}.{tag & 255}": round(now - seen, 1) for tag, seen in slot.peers.peers.items()
                       if now - seen <= relaypeers.PEER_MEMORY}
            if present:
                peers[slot.iface.name] = present
        return {"counters": counters, "peers": peers, "holdoff_ms": round(self.arbiter.holdoff * 1000, 1),
                "deferred": len(self.arbiter)}
