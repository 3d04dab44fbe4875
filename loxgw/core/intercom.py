"""Intercom media: which app host . intercom pairs may exchange UDP now, learned from their signalling.

Why: the Intercom's video and audio are WebRTC, DTLS-SRTP over UDP with ICE:
ports are chosen per call on both sides and both sides send connectivity
checks (LOXONE-FACTS.md), so no port list can open them. What loxgw does see
is the signalling before them: the App's TCP session to the Intercom
(WebSocket on 80 or 7091, SIP on 5060). While one is live, the pair's
element in set media4 lets UDP between exactly those two hosts pass both
ways, whoever sends first. The element's timeout is short and refreshed
while a session lives. When the last session ends the element is written
once more with END_TIMEOUT, where the kernel lets a later add shorten it
(loxgw's set writer says so), or else runs out within ELEMENT_TIMEOUT s;
then the pair's UDP conntrack entries are deleted, or a media flow already
established would outlive the window.

A session counts from conntrack state ESTABLISHED on: that needs the
Intercom's answer, so a spoofed SYN opens nothing. It ends at the first FIN
or RST (conntrack itself keeps a closed connection 120 s in TIME_WAIT).
Whatever an attacker can grow is capped: sessions per app host, sessions in
total, pairs. The table takes conntrack reports as plain values and `now`;
the daemon's intercom service feeds it and writes what it hands out.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from loxgw.core import catalog
from loxgw.core.catalog import Entry, Product

Addr = ipaddress.IPv4Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Session = tuple[Addr, int, Addr, int]  # app host, its port, intercom, signalling port
Pair = tuple[Addr, Addr]  # app host, intercom: the key of set media4

INTERCOM_PRODUCTS: tuple[Product, ...] = ("intercom", "intercom_gen1")
# Catalogue entries whose TCP ports carry the App's signalling to an Intercom: the WebSocket
# (JSON-RPC `webrtc-signaling`) on 80, the App connection on 7091, SIP over TCP on 5060.
SIGNALLING_ENTRIES = frozenset({"ic-http", "ic-app", "ic-sip-tcp", "icg1-app"})

ELEMENT_TIMEOUT = 3  # seconds an element lives unless refreshed
END_TIMEOUT = 1  # seconds it lives once the last session has ended (0 would mean forever)
REFRESH = 1.0  # seconds between refreshes of a live pair's element
# A live pair's element is rewritten once it has less than this left: REFRESH after a full write,
# at once after a shortened one (a session that came back before the flush).
_REFRESH_BEFORE = ELEMENT_TIMEOUT - REFRESH
FLUSH_MARGIN = 0.5  # seconds after the element's expiry before its UDP flows are deleted
MAX_SESSIONS_PER_APP = 32  # an App keeps a few (WebSocket, MJPEG, SIP); a browser a few more
MAX_SESSIONS = 1024
MAX_PAIRS = 2048  # live pairs and pairs whose window is closing
RECHECK = 60.0  # seconds between re-reads while sessions known only from a dump exist
MAX_LISTED = 64  # pairs status lists

Phase = Literal["opening", "live", "ended"]
# TCP conntrack states (enum tcp_conntrack, include/uapi/linux/netfilter/nf_conntrack_tcp.h) and
# what each means for a signalling session.
TCP_STATES: dict[int, tuple[str, Phase]] = {
    0: ("NONE", "opening"),
    1: ("SYN_SENT", "opening"),
    2: ("SYN_RECV", "opening"),
    3: ("ESTABLISHED", "live"),
    4: ("FIN_WAIT", "ended"),
    5: ("CLOSE_WAIT", "ended"),
    6: ("LAST_ACK", "ended"),
    7: ("TIME_WAIT", "ended"),
    8: ("CLOSE", "ended"),
    9: ("SYN_SENT2", "opening"),
}


def signalling_ports(entries: Iterable[Entry]) -> dict[Product, frozenset[int]]:
    """TCP ports of each intercom product whose sessions open a media window (from the catalogue)."""
    found: dict[Product, set[int]] = {p: set() for p in INTERCOM_PRODUCTS}
    for entry in entries:
        if entry.id in SIGNALLING_ENTRIES and entry.proto == "tcp" and entry.product in found:
            found[entry.product].update(p for r in entry.ports for p in range(r.first, r.last + 1))
    return {product: frozenset(ports) for product, ports in found.items()}


def phase(tcp_state: int | None, gone: bool) -> Phase | None:
    """What a conntrack report says about a session; None: nothing (a report without TCP state)."""
    if gone:
        return "ended"
    if tcp_state is None:
        return None
    return TCP_STATES.get(tcp_state, ("?", "opening"))[1]


def element_key(pair: Pair) -> bytes:
    """The media4 key (ipv4_addr . ipv4_addr) as the kernel stores it."""
    return pair[0].packed + pair[1].packed


@dataclass
class _PairState:
    sessions: int = 0
    written: float | None = None  # when its element was last written; None: not yet
    expires: float = 0.0  # when the element written last runs out
    ended: float | None = None  # when its last session ended; None while one is live
    shorten: bool = False  # ended, and its element is still to be shortened to END_TIMEOUT


@dataclass
class _SessionState:
    seen: float  # last report about it
    confirmed: bool  # seen in an event: the kernel will report its end


class MediaTable:
    """Live signalling sessions, the pairs they open, and when each element is written or flushed."""

    def __init__(self, ports: Mapping[Product, frozenset[int]] | None = None, can_shorten: bool = False) -> None:
        self.ports = dict(ports) if ports is not None else signalling_ports(catalog.load())
        self.can_shorten = can_shorten  # a later add shortens an element (set refresh by expiration or replace)
        self.intercoms: dict[Addr, frozenset[int]] = {}
        self.clients: tuple[Network, ...] = ()
        self.sessions: dict[Session, _SessionState] = {}
        self.per_app: Counter[Addr] = Counter()
        self.pairs: dict[Pair, _PairState] = {}
        self.counters: Counter[str] = Counter()
        self.last_resync: float | None = None

    @property
    def all_ports(self) -> frozenset[int]:
        return frozenset(p for ports in self.ports.values() for p in ports)

    # --- what is relevant -------------------------------------------------------------

    def set_intercoms(self, devices: Iterable[tuple[Addr, Product]], now: float) -> bool:
        """The intercoms' addresses now; sessions to others end. True if an address was added."""
        found = {ip: self.ports.get(product, frozenset()) for ip, product in devices if product in self.ports}
        added = bool(found.keys() - self.intercoms.keys())
        if found != self.intercoms:
            self.intercoms = found
            self._end_irrelevant(now)
        return added

    def set_clients(self, networks: Iterable[Network], now: float) -> bool:
        """The clients zones' subnets now; sessions from elsewhere end. True if they changed."""
        found = tuple(sorted({n for n in networks if n.version == 4}, key=str))
        if found == self.clients:
            return False
        self.clients = found
        self._end_irrelevant(now)
        return True

    def relevant(self, session: Session) -> bool:
        """From a clients-zone host to an intercom's signalling port."""
        app, _, intercom, port = session
        return port in self.intercoms.get(intercom, ()) and any(app in net for net in self.clients)

    def _end_irrelevant(self, now: float) -> None:
        for session in [s for s in self.sessions if not self.relevant(s)]:
            self._end(session, now)

    # --- reports ------------------------------------------------------------------------

    def observe(self, session: Session, tcp_state: int | None, gone: bool, now: float,
                confirmed: bool = True) -> bool:
        """One conntrack report about a TCP session; True if an element is due now (a pair opened or ended)."""
        what = phase(tcp_state, gone)
        known = self.sessions.get(session)
        if known is not None:
            if what == "ended":
                return self._end(session, now)
            else:
                known.seen = now
                known.confirmed = known.confirmed or confirmed
            return False
        if what != "live" or not self.relevant(session):
            return False
        app, _, intercom, _ = session
        pair = (app, intercom)
        state = self.pairs.get(pair)
        if len(self.sessions) >= MAX_SESSIONS:
            self.counters["sessions_refused_total_cap"] += 1
            return False
        if self.per_app[app] >= MAX_SESSIONS_PER_APP:
            self.counters["sessions_refused_app_cap"] += 1
            return False
        if state is None:
            if len(self.pairs) >= MAX_PAIRS:
                self.counters["sessions_refused_pair_cap"] += 1
                return False
            state = self.pairs[pair] = _PairState()
        self.sessions[session] = _SessionState(now, confirmed)
        self.per_app[app] += 1
        self.counters["sessions_seen"] += 1
        state.sessions += 1
        state.ended = None
        state.shorten = False
        return state.sessions == 1

    def _end(self, session: Session, now: float) -> bool:
        """Forget a session; True if its pair's element is now due to be shortened."""
        del self.sessions[session]
        app, _, intercom, _ = session
        self.per_app[app] -= 1
        if self.per_app[app] <= 0:
            del self.per_app[app]
        pair = (app, intercom)
        state = self.pairs[pair]
        state.sessions -= 1
        if state.sessions:
            return False
        state.ended = now
        if state.written is None:  # never opened: nothing to close
            del self.pairs[pair]
            return False
        state.shorten = self.can_shorten
        return state.shorten

    def resync(self, live: Iterable[tuple[Session, int | None]], started: float, now: float) -> bool:
        """Replace the sessions with a dump taken from `started` on; True if an element is due now.

        Sessions reported since `started` are kept as they are (the dump may
        predate their events); sessions the dump lacks have ended.
        """
        dumped = dict(live)
        self.last_resync = now
        opened = False
        for session, state in list(self.sessions.items()):
            if state.seen < started and (session not in dumped or phase(dumped[session], False) == "ended"):
                opened = self._end(session, now) or opened
        for session, tcp_state in dumped.items():
            if session not in self.sessions:
                opened = self.observe(session, tcp_state, False, now, confirmed=False) or opened
        return opened

    # --- timers -------------------------------------------------------------------------

    def to_write(self, now: float) -> list[tuple[Pair, int]]:
        """(pair, timeout) of each element due: missing, due for a refresh, or to be shortened."""
        return [(pair, ELEMENT_TIMEOUT if s.sessions else END_TIMEOUT) for pair, s in self.pairs.items()
                if s.shorten or (s.sessions and now >= s.expires - _REFRESH_BEFORE)]

    def written(self, elements: Iterable[tuple[Pair, int]], now: float) -> None:
        """These elements are being written at `now` (and are not due again meanwhile)."""
        for pair, timeout in elements:
            state = self.pairs.get(pair)
            if state is not None:
                state.written = now
                state.expires = now + timeout
                state.shorten = False

    def sent(self, elements: Iterable[tuple[Pair, int]], now: float) -> None:
        """These elements reached the kernel at `now`: their expiry counts from here."""
        for pair, timeout in elements:
            state = self.pairs.get(pair)
            if state is not None:
                state.expires = now + timeout

    def to_flush(self, now: float) -> list[Pair]:
        """Pairs without a session whose element has run out: forgotten here; delete their UDP flows."""
        due = [pair for pair, s in self.pairs.items()
               if not s.sessions and not s.shorten and now >= s.expires + FLUSH_MARGIN]
        for pair in due:
            del self.pairs[pair]
        return due

    def needs_recheck(self, now: float) -> bool:
        """Sessions known only from a dump (the kernel may never report their end) are due a re-read."""
        if not any(not s.confirmed for s in self.sessions.values()):
            return False
        return self.last_resync is None or now - self.last_resync >= RECHECK

    def next_deadline(self) -> float | None:
        """When to_write, to_flush or needs_recheck will next have work; None: nothing pending."""
        times = [0.0 if s.shorten else s.expires - _REFRESH_BEFORE if s.sessions else s.expires + FLUSH_MARGIN
                 for s in self.pairs.values()]
        if self.last_resync is not None and any(not s.confirmed for s in self.sessions.values()):
            times.append(self.last_resync + RECHECK)
        return min(times) if times else None

    def status(self, now: float) -> dict[str, Any]:
        """Live and closing pairs (at most MAX_LISTED) with their session counts."""
        listed = [{"app": str(app), "intercom": str(ic), "sessions": s.sessions,
                   "state": "open" if s.sessions else "closing",
                   "since_end": None if s.ended is None else round(now - s.ended, 1)}
                  for (app, ic), s in sorted(self.pairs.items())[:MAX_LISTED]]
        return {"sessions": len(self.sessions), "pairs": len(self.pairs), "open": listed,
                "intercoms": len(self.intercoms), "clients_networks": [str(n) for n in self.clients]}
