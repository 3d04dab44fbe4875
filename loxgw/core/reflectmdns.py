"""The mDNS reflector, sans I/O: datagrams and `now` in; copies, a timer and announced ports out.

Scoped, unlike a plain reflector (avahi's reflects everything): only records
of detected Loxone devices cross, and only towards clients zones; questions
only cross from clients zones into devices zones. A TV's AirPlay or a
printer in the devices zone is never seen in the clients zones, and what the
clients zones hold never reaches the devices zones beyond the questions.

RFC 6762 as it applies to a reflector:
- TTL 255 on the wire (section 11): the socket's business (edges.mdnsnet);
- answers only from port 5353 (section 6) and from the local link (section 11);
  questions from other ports are one-shot "legacy" queries (section 6.7),
  which need a unicast answer carrying their ID: not reflected;
- a reflected question loses its QU bit, so the answer comes back by
  multicast where the reflector sees it, and its known-answer list keeps
  only records this reflector sent (section 7.1: the device suppresses those;
  the asker's other knowledge stays in its zone), without cache-flush bits
  (section 10.2); a probe's authority section stays behind, its questions go,
  so a device defends its name against a client's probe (section 8.1);
- a reflected answer keeps the device's cache-flush bits on its unique
  records and loses them on shared DNS-SD PTRs (section 10.2); it carries no
  questions (section 6) and ID 0 (section 18.1);
- a record is multicast on an interface at most once a second (section 6),
  goodbyes (TTL 0) excepted;
- TTLs are capped at REFLECT_TTL, so no client caches a record (and dials its
  port) after the port's pinhole closed;
- A records must carry the device's own address; AAAA and ip6.arpa records
  stay behind (the pinholes are IPv4, a link-local address means nothing in
  another segment).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import replace
from ipaddress import IPv4Address

from loxgw.core import mdns
from loxgw.core.catalog import Proto
from loxgw.core.errors import RemoteDataError
from loxgw.core.mdns import Record
from loxgw.core.reflect import CLIENTS, DEVICES, Ledger, ReflectInterface, Scope, Transmit
from loxgw.core.relay import RateLimiter

MDNS_GROUP = IPv4Address("224.0.0.251")
REFLECT_TTL = 4500  # seconds: RFC 6762 section 10's 75 minutes, the longest TTL it recommends
CACHE_SIZE = 4096  # records reflected, remembered for known-answer lists
SENT_SIZE = 4096  # (interface, record) pairs remembered for the once-a-second rule
ONCE_PER = 1.0
_DNS_SD = (b"\x04_tcp\x05local\x00", b"\x04_udp\x05local\x00")  # owners of shared service PTRs end so
_REVERSE_V4 = b"\x07in-addr\x04arpa\x00"
_REVERSE_V6 = b"\x03ip6\x04arpa\x00"


def reverse_name(address: IPv4Address) -> bytes:
    """The in-addr.arpa name of an address, in wire form."""
    return mdns.wire_name(*reversed(str(address).split(".")), "in-addr", "arpa")


def _service_proto(name: bytes) -> Proto:
    """"udp" for an instance of a _udp service, else "tcp" (RFC 6763 section 7)."""
    return "udp" if b"\x04_udp" in name.lower() else "tcp"


class MdnsReflector:
    """mDNS reflection between zones; no sockets, no clock of its own."""

    def __init__(self, scope: Scope, limiter: RateLimiter) -> None:
        self.scope = scope
        self.limiter = limiter
        self.ledger = Ledger("mdns-srv")
        self.counters: Counter[str] = Counter()
        self._cache: OrderedDict[tuple[bytes, int, bytes], tuple[float, IPv4Address]] = OrderedDict()
        self._sent: OrderedDict[tuple[int, tuple[bytes, int, bytes]], float] = OrderedDict()

    # --- datagrams ----------------------------------------------------------------

    def receive(self, ifindex: int, src: IPv4Address, sport: int, data: bytes, now: float,
                tos: int = 0) -> list[Transmit]:
        """One datagram to UDP 5353 as received on `ifindex`; returns the copies to send now."""
        self.counters["received"] += 1
        admitted = self.scope.admit(ifindex, src, tos)
        if isinstance(admitted, str):
            return self._drop(admitted)
        if len(data) < 12:
            return self._drop("malformed")
        response = bool(data[2] & 0x80)
        if response and admitted.role != DEVICES:
            return self._drop("answer_from_clients")
        if not response and admitted.role != CLIENTS:
            return self._drop("question_from_devices")
        if response and src not in self.scope.devices:
            return self._drop("not_loxone")
        if sport != mdns.MDNS_PORT:
            return self._drop("legacy_unicast" if not response else "answer_not_from_5353")
        if len(data) > mdns.MAX_MESSAGE:
            return self._drop("oversized")
        refused = self.limiter.allow(src, now)
        if refused:
            return self._drop(refused)
        try:
            message = mdns.read_message(data)
        except RemoteDataError as exc:
            return self._drop(exc.reason)
        self.counters["records_skipped"] += message.skipped
        if response:
            return self._answer(src, message, now)
        return self._question(message, now)

    def _drop(self, reason: str) -> list[Transmit]:
        self.counters[f"dropped_{reason}"] += 1
        return []

    def _question(self, message: mdns.Message, now: float) -> list[Transmit]:
        questions = [replace(q, unicast=False) for q in message.questions
                     if q.qclass in (mdns.CLASS_IN, mdns.CLASS_ANY)]
        known = [mdns.without_flush(r) for r in message.answers if self._reflected(r, now)]
        self.counters["known_answers_kept"] += len(known)
        self.counters["known_answers_left"] += len(message.answers) - len(known)
        if not questions and not known:
            return self._drop("nothing_to_ask")
        packets = mdns.write_messages(message.flags & mdns.FLAG_TC, questions, known)
        out = [Transmit(i.index, MDNS_GROUP, mdns.MDNS_PORT, p, "mdns")
               for i in self.scope.egress[DEVICES] for p in packets]
        self.counters["questions_reflected"] += 1
        return out

    def _reflected(self, record: Record, now: float) -> bool:
        """Whether `record` is one this reflector sent and still holds."""
        held = self._cache.get(record.identity())
        return held is not None and held[0] > now

    def _answer(self, device: IPv4Address, message: mdns.Message, now: float) -> list[Transmit]:
        answers = self._keep(device, message.answers, now)
        additionals = self._keep(device, message.additionals, now)
        self.counters["authorities_left"] += len(message.authorities)
        if not answers and not additionals:
            return self._drop("no_device_records")
        out: list[Transmit] = []
        for iface in self.scope.egress[CLIENTS]:
            fresh = [self._once(iface, r, now) for r in answers], [self._once(iface, r, now) for r in additionals]
            first, extra = [r for r in fresh[0] if r], [r for r in fresh[1] if r]
            if not first and not extra:
                self.counters["suppressed_once_per_second"] += 1
                continue
            for packet in mdns.write_messages(mdns.FLAG_QR | mdns.FLAG_AA, (), first, extra):
                out.append(Transmit(iface.index, MDNS_GROUP, mdns.MDNS_PORT, packet, "mdns"))
        if out:
            self.counters["answers_reflected"] += 1
        return out

    def _once(self, iface: ReflectInterface, record: Record, now: float) -> Record | None:
        """`record` unless it went out of `iface` less than a second ago (goodbyes always go)."""
        key = (iface.index, record.identity())
        last = self._sent.get(key)
        if record.ttl and last is not None and now - last < ONCE_PER:
            return None
        self._sent[key] = now
        self._sent.move_to_end(key)
        if len(self._sent) > SENT_SIZE:
            self._sent.popitem(last=False)
        return record

    def _keep(self, device: IPv4Address, records: tuple[Record, ...], now: float) -> list[Record]:
        """The records of `device` that may cross, as they will be sent; remembers them."""
        kept = []
        for record in records:
            reason = self._refuse(device, record)
            if reason:
                self.counters[f"records_dropped_{reason}"] += 1
                continue
            if record.flush and record.rtype == mdns.TYPE_PTR and record.name.lower().endswith(_DNS_SD):
                record = replace(record, flush=False)  # a shared record never flushes (section 10.2)
                self.counters["flush_bits_cleared"] += 1
            if record.ttl > REFLECT_TTL:
                record = replace(record, ttl=REFLECT_TTL)
            self._remember(device, record, now)
            kept.append(record)
        return kept

    def _refuse(self, device: IPv4Address, record: Record) -> str:
        if record.rclass != mdns.CLASS_IN:
            return "class"
        if record.rtype == mdns.TYPE_A and record.rdata != device.packed:
            return "foreign_address"
        name = record.name.lower()
        if record.rtype == mdns.TYPE_AAAA or name.endswith(_REVERSE_V6):
            return "ipv6"
        if name.endswith(_REVERSE_V4) and name != reverse_name(device):
            return "foreign_address"
        return ""

    def _remember(self, device: IPv4Address, record: Record, now: float) -> None:
        identity = record.identity()
        if record.ttl == 0:
            self._cache.pop(identity, None)
        else:
            self._cache[identity] = (now + record.ttl, device)
            self._cache.move_to_end(identity)
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        if record.rtype != mdns.TYPE_SRV:
            return
        owner = record.name.lower()
        if record.ttl == 0:
            self.ledger.goodbye(device, owner, now)
        elif record.srv_port():
            self.ledger.put(device, _service_proto(owner), record.srv_port(), owner, now + record.ttl, now,
                            flush=record.flush)

    # --- devices and time -------------------------------------------------------------

    def forget(self, devices: frozenset[IPv4Address]) -> None:
        """Devices that are no longer detected: their records and ports go."""
        if not devices:
            return
        self.ledger.forget(devices)
        for identity in [k for k, (_, d) in self._cache.items() if d in devices]:
            del self._cache[identity]

    def get_timer(self) -> float | None:
        return self.ledger.next_expiry()

    def handle_timer(self, now: float) -> None:
        self.ledger.expire(now)

    def status(self, now: float) -> dict[str, object]:
        return {"records": len(self._cache), "ports": self.ledger.status(now),
                "counters": dict(self.counters + self.ledger.counters)}
