"""Two relays on the same segments: one copy of each broadcast per segment, as a function of `now`.

Where two routers (or a router and a second loxgw box) both relay between
the same segments, each sees every original broadcast and would copy it.
The copies carry the relay mark, so neither relays the other's again (no
loop), but without arbitration each broadcast crosses twice.

Every copy's IP id is the sender's tag on that segment: the low 16 bits of
its address there (core.relaywire). A relay that sees a peer's copy on a
segment learns the peer's tag, and per segment the lowest tag leads:

- the leader sends at once, as a relay without peers does;
- a follower defers its copy by the hold-off (times its rank among the
  tags), and drops it when the leader's copy of the same broadcast (same
  source, ports and payload) arrives first; a leader's copy that arrives
  before the follower has even read the original is remembered (a credit)
  and stands in for it;
- the edge reads every socket before it runs the timer, so a leader's copy
  already in the kernel counts even when the follower is behind;
- a leader's copy that arrives after the follower sent its own (a
  duplicate) doubles the hold-off, up to HOLDOFF_MAX; quiet periods halve
  it again. Measured in the lab: under a 20,000/s flood the processing lag
  of either relay reaches tens of milliseconds, beyond any fixed hold-off
  short enough for discovery.

A peer that does not relay a broadcast (another port list, its own rate
limit, another set of segments) costs the follower one hold-off of delay,
never the copy. Tags are segment addresses, so two relays on one segment
never share one (prefixes of /16 or longer). A forged "peer" in a devices
VLAN (it sees our copies there and can replay them with a low tag) can
delay copies onto its segment by HOLDOFF_MAX at most; it can stand in for
a copy only by putting the same bytes on that segment itself.
"""

from __future__ import annotations

import heapq
from collections import deque

PEER_MEMORY = 60.0  # seconds a peer counts as present on a segment after its last copy
PEERS_KEPT = 8  # tags remembered per segment; the oldest goes first
HOLDOFF_MIN = 0.02  # seconds a follower waits for the leader's copy; covers a busy leader's lag
HOLDOFF_MAX = 0.5
HOLDOFF_QUIET = 30.0  # seconds without a duplicate before the hold-off halves
CREDIT_MEMORY = 1.0  # seconds a leader's copy stands in for an original not read yet
PENDING_KEPT = 4096  # deferred copies at most (the rate limits keep far fewer in flight)
TIMER_SLACK = 0.001  # copies due this soon go with the ones due now: one timer per millisecond at most
CREDITS_KEPT = 4096

CopyKey = tuple[int, int, int, int, bytes]  # egress ifindex, source, source port, port, payload


class Segment:
    """Per-egress-segment peer state, read on the hot path as plain attributes."""

    __slots__ = ("index", "peers", "peers_until", "tag")

    def __init__(self, index: int, tag: int) -> None:
        self.index = index
        self.tag = tag
        self.peers: dict[int, float] = {}  # tag -> last seen
        self.peers_until = float("-inf")  # a peer (any tag) counts as present until then

    def seen(self, tag: int, now: float) -> None:
        self.peers.pop(tag, None)
        self.peers[tag] = now
        while len(self.peers) > PEERS_KEPT:
            del self.peers[next(iter(self.peers))]
        self.peers_until = now + PEER_MEMORY

    def rank(self, now: float) -> int:
        """How many present peers lead this relay here (lower or equal tag): 0 means it leads."""
        return sum(1 for tag, seen in self.peers.items() if self.led_by(tag) and now - seen <= PEER_MEMORY)

    def led_by(self, tag: int) -> bool:
        """A peer with this tag leads here (ties lead both ways: each then defers to the other)."""
        return tag <= self.tag


class Deferred:
    """A copy waiting for its hold-off; `alive` False once the leader's copy cancelled it."""

    __slots__ = ("alive", "column", "due", "frame", "key", "received", "seq")

    def __init__(self, due: float, seq: int, key: CopyKey, frame: bytes, column: int, received: float) -> None:
        self.due, self.seq, self.key, self.frame, self.column, self.received = due, seq, key, frame, column, received
        self.alive = True

    def __lt__(self, other: Deferred) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


# What happened to an outgoing copy, or to a peer's copy.
SEND, SUPPRESSED, DEFERRED, PENDING_FULL = 0, 1, 2, 3
CANCELLED, LATE, CREDIT, IGNORED = 0, 1, 2, 3


class Arbiter:
    """Deferred copies, credits and the adaptive hold-off of one relay; bounded, time as an argument."""

    def __init__(self) -> None:
        self.holdoff = HOLDOFF_MIN
        self._quiet_since = float("-inf")
        self._seq = 0
        self._heap: list[Deferred] = []
        self._pending: dict[CopyKey, deque[Deferred]] = {}
        self._count = 0  # alive deferred copies
        self._credits: dict[CopyKey, deque[float]] = {}
        self._sent: dict[CopyKey, deque[float]] = {}  # deferred copies sent: when their original came

    def outgoing(self, segment: Segment, key: CopyKey, frame: bytes, column: int, now: float) -> int:
        """A copy for a segment where a peer is present: SEND now, SUPPRESSED, DEFERRED or PENDING_FULL."""
        if self._take(self._credits, key, now - max(CREDIT_MEMORY, 2 * self.holdoff)) is not None:
            return SUPPRESSED
        rank = segment.rank(now)
        if rank == 0:
            return SEND
        if self._count >= PENDING_KEPT:
            return PENDING_FULL
        if self.holdoff > HOLDOFF_MIN and now - self._quiet_since > HOLDOFF_QUIET:
            self.holdoff = max(HOLDOFF_MIN, self.holdoff / 2)
            self._quiet_since = now
        self._seq += 1
        entry = Deferred(now + min(HOLDOFF_MAX, self.holdoff * rank), self._seq, key, frame, column, now)
        heapq.heappush(self._heap, entry)
        self._pending.setdefault(key, deque()).append(entry)
        self._count += 1
        return DEFERRED

    def peer_copy(self, segment: Segment, tag: int, key: CopyKey, now: float) -> int:
        """A copy from the relay tagged `tag` arrived on `segment`: CANCELLED, LATE, CREDIT or IGNORED."""
        segment.seen(tag, now)
        if not segment.led_by(tag):
            return IGNORED  # a follower's copy: following is its job, not ours
        waiting = self._pending.get(key)
        while waiting:
            entry = waiting.popleft()
            if entry.alive:
                entry.alive = False
                self._count -= 1
                if not waiting:
                    del self._pending[key]
                return CANCELLED
        self._pending.pop(key, None)
        received = self._take(self._sent, key, now - max(CREDIT_MEMORY, 2 * HOLDOFF_MAX))
        if received is not None:
            # We sent ours before the leader's arrived: wait longer from now on, the copies already
            # waiting included (under a flood hundreds are, and each would be a duplicate too).
            before = self.holdoff
            self.holdoff = min(HOLDOFF_MAX, max(2 * before, 1.5 * (now - received)))
            self._quiet_since = now
            if self.holdoff > before:
                stretch = self.holdoff / before
                for entry in self._heap:
                    entry.due = entry.received + min(HOLDOFF_MAX, (entry.due - entry.received) * stretch)
                heapq.heapify(self._heap)
            return LATE
        self._put(self._credits, key, now)
        return CREDIT

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and not heap[0].alive:
            heapq.heappop(heap)
        return heap[0].due if heap else None

    def due(self, now: float) -> list[Deferred]:
        """Deferred copies whose hold-off ended without the leader's copy: send them now."""
        out = []
        heap = self._heap
        while heap and heap[0].due <= now + TIMER_SLACK:
            entry = heapq.heappop(heap)
            if not entry.alive:
                continue
            entry.alive = False
            self._count -= 1
            waiting = self._pending.get(entry.key)
            if waiting is not None:
                waiting.remove(entry)
                if not waiting:
                    del self._pending[entry.key]
            self._put(self._sent, entry.key, entry.received)
            out.append(entry)
        return out

    def clear(self) -> None:
        self._heap.clear()
        self._pending.clear()
        self._credits.clear()
        self._sent.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @staticmethod
    def _put(table: dict[CopyKey, deque[float]], key: CopyKey, when: float) -> None:
        entries = table.get(key)
        if entries is None:
            if len(table) >= CREDITS_KEPT:
                del table[next(iter(table))]  # the oldest key first
            entries = table[key] = deque(maxlen=64)
        entries.append(when)

    @staticmethod
    def _take(table: dict[CopyKey, deque[float]], key: CopyKey, oldest: float) -> float | None:
        """Remove and return the oldest time recorded for `key` that is not before `oldest`."""
        entries = table.get(key)
        if entries is None:
            return None
        while entries and entries[0] < oldest:
            entries.popleft()
        found = entries.popleft() if entries else None
        if not entries:
            del table[key]
        return found
