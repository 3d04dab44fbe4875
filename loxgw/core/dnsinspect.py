"""The DNS inspector: queries and answers in, the grants an answer earns out.

Pure: a query is noted in a bounded tracker, so only a solicited answer counts;
the answer is read by core.dnswire and judged by the policies of core.dns.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from loxgw.core.config import ZoneRole
from loxgw.core.dns import (
    Grant,
    Limits,
    Policy,
    everyone_a_device,
    grants_from_answer,
)
from loxgw.core.dnswire import parse_packet, question_bytes, read_answer
from loxgw.core.errors import RemoteDataError

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



# --- the inspector: packets in, grants out -------------------------------------------


class DnsInspector:
    """Reads queries and answers; returns the grants an answer earns. Counts everything.

    Stateful only in the bounded query tracker and the counters; time comes in as `now`.
    """

    def __init__(self, policies: dict[str, Policy], limits: Limits, tracker: QueryTracker | None = None,
                 classify: Callable[[bytes], str | None] = everyone_a_device) -> None:
        """`classify`: which policy a devices zone's host (its packed address) gets, None for none.

        Called on the DNS thread; the daemon swaps the mapping it reads as a
        whole when devices change, so no lock is needed.
        """
        self.policies = policies
        self.classify = classify
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
        key = "clients" if role == "clients" else self.classify(datagram.dst)
        if key is None:
            self.count("refused_not_a_loxone_device")
            return []
        policy = self.policies.get(key)
        if policy is None:
            self.count("refused_no_policy")
            return []
        grants, reason = grants_from_answer(answer, ipaddress.ip_address(datagram.dst), policy, self.limits)
        if reason:
            self.count("not_matched" if reason == "no_match" else f"refused_{reason}")
            return []
        self.count("answers_matched")
        return grants
