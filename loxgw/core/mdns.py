"""mDNS messages on the wire (RFC 6762): read into records whose names stay wire labels, written back.

Why not python-zeroconf's DNSIncoming/DNSOutgoing, the maintained parser the
tests hold this one against (tests/unit/core/test_mdns.py): both carry names
as dotted text. A label that contains a dot (RFC 6763 section 4.3 allows it in
instance names, and a Loxone room such as "Bad 1.OG" puts one there) comes
back out of DNSOutgoing as two labels, so a reflector built on them renames
the speaker and the App's follow-up queries for it go unanswered. Here a name
is its uncompressed wire form (length-prefixed labels, bytes as sent) from
read to write. DNSIncoming also logs and swallows decode errors and returns
what it read so far; a reflector must know it holds the whole message, so
this reader has one promise: it returns a Message or raises RemoteDataError.

Record types whose data may hold compressed names are read only where the
name's place is known (PTR, CNAME, NS, SRV, NSEC); other types' data is kept
as bytes where it holds no names (A, AAAA, TXT, HINFO) and skipped otherwise
(a pointer in it could not be moved into another message).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from loxgw.core import dnswire
from loxgw.core.errors import RemoteDataError

MDNS_PORT = 5353
MAX_MESSAGE = 9000  # RFC 6762 section 17: no mDNS message is larger
MAX_SEND = 1460  # what one packet carries on a 1500-byte link, with room for IP options
MAX_QUESTIONS = 64
MAX_RECORDS = 256  # answers, authorities and additionals together

TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_HINFO, TYPE_TXT = 1, 2, 5, 12, 13, 16
TYPE_AAAA, TYPE_SRV, TYPE_NSEC, TYPE_ANY = 28, 33, 47, 255
CLASS_IN, CLASS_ANY = 1, 255
TOP_BIT = 0x8000  # cache-flush bit of a record's class; unicast-response (QU) bit of a question's
FLAG_QR, FLAG_AA, FLAG_TC = 0x8000, 0x0400, 0x0200
NAME_TYPES = frozenset({TYPE_PTR, TYPE_CNAME, TYPE_NS})  # data is one name
OPAQUE_TYPES = frozenset({TYPE_A, TYPE_AAAA, TYPE_TXT, TYPE_HINFO})  # data holds no name
_RR = struct.Struct("!HHIH")
_SRV_FIXED = 6  # priority, weight, port before the target


@dataclass(frozen=True, slots=True)
class Question:
    """One question; `name` in uncompressed wire form."""

    name: bytes
    qtype: int
    qclass: int  # without the QU bit
    unicast: bool = False  # QU: the asker wants a unicast answer


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record; `name` and any name in `rdata` in uncompressed wire form."""

    name: bytes
    rtype: int
    rclass: int  # without the cache-flush bit
    ttl: int
    rdata: bytes
    flush: bool = False  # cache-flush bit (RFC 6762 section 10.2)

    def identity(self) -> tuple[bytes, int, bytes]:
        """What makes two records the same record: names compared without ASCII case (RFC 6762 section 16)."""
        if self.rtype in NAME_TYPES:
            return self.name.lower(), self.rtype, self.rdata.lower()
        if self.rtype == TYPE_SRV:
            return self.name.lower(), self.rtype, self.rdata[:_SRV_FIXED] + self.rdata[_SRV_FIXED:].lower()
        return self.name.lower(), self.rtype, self.rdata

    def srv_port(self) -> int:
        """The port of an SRV record."""
        port: int = struct.unpack_from("!H", self.rdata, 4)[0]
        return port


@dataclass(frozen=True, slots=True)
class Message:
    """An mDNS message as read: header, sections, and how many records of unread types were skipped."""

    id: int
    flags: int
    questions: tuple[Question, ...] = ()
    answers: tuple[Record, ...] = ()
    authorities: tuple[Record, ...] = ()
    additionals: tuple[Record, ...] = ()
    skipped: int = 0

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)


def name_text(name: bytes) -> str:
    """A wire name as text for logs and status (a dot inside a label shown as \\.)."""
    labels, offset = [], 0
    while offset < len(name) and name[offset]:
        length = name[offset]
        labels.append(name[offset + 1 : offset + 1 + length].decode("utf-8", "replace").replace(".", "\\."))
        offset += 1 + length
    return ".".join(labels) + "."


def wire_name(*labels: str) -> bytes:
    """The wire form of a name given label by label (tests, constants)."""
    out = b"".join(bytes([len(raw)]) + raw for raw in (label.encode() for label in labels))
    return out + b"\x00"


def read_name(data: bytes, offset: int) -> tuple[bytes, int]:
    """The name at `offset` in uncompressed wire form (labels kept as wire labels), and the offset after it."""
    labels, after = dnswire.read_labels(data, offset)
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00", after


def _read_rdata(data: bytes, rtype: int, start: int, end: int) -> bytes | None:
    """A record's data with its names uncompressed; None for a type not read."""
    if rtype in NAME_TYPES:
        target, after = read_name(data, start)
        if after != end:
            raise RemoteDataError("malformed", "name does not fill its record")
        return target
    if rtype == TYPE_SRV:
        if end - start < _SRV_FIXED + 1:
            raise RemoteDataError("malformed", "SRV record too short")
        target, after = read_name(data, start + _SRV_FIXED)
        if after != end:
            raise RemoteDataError("malformed", "SRV target does not fill its record")
        return data[start : start + _SRV_FIXED] + target
    if rtype == TYPE_NSEC:
        following, after = read_name(data, start)
        if after > end:
            raise RemoteDataError("malformed", "NSEC name runs past its record")
        return following + data[after:end]
    if rtype not in OPAQUE_TYPES:
        return None
    raw = data[start:end]
    if rtype in (TYPE_A, TYPE_AAAA) and len(raw) != (4 if rtype == TYPE_A else 16):
        raise RemoteDataError("malformed", "address of bad length")
    if rtype in (TYPE_TXT, TYPE_HINFO):
        offset = 0
        while offset < len(raw):
            offset += 1 + raw[offset]
        if offset != len(raw):
            raise RemoteDataError("malformed", "character strings do not fill their record")
    return raw


def read_message(data: bytes) -> Message:
    """Read a whole mDNS message. Raises RemoteDataError (its reason: oversized, truncated, malformed, ...)."""
    if len(data) > MAX_MESSAGE:
        raise RemoteDataError("oversized")
    if len(data) < 12:
        raise RemoteDataError("truncated", "no header")
    ident, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", data, 0)
    if flags & 0x7800:
        raise RemoteDataError("malformed", "opcode is not QUERY")
    if qdcount > MAX_QUESTIONS or ancount + nscount + arcount > MAX_RECORDS:
        raise RemoteDataError("oversized", "too many questions or records")
    offset = 12
    questions = []
    for _ in range(qdcount):
        name, offset = read_name(data, offset)
        if offset + 4 > len(data):
            raise RemoteDataError("truncated", "question type or class missing")
        qtype, qclass = struct.unpack_from("!HH", data, offset)
        offset += 4
        questions.append(Question(name, qtype, qclass & ~TOP_BIT, bool(qclass & TOP_BIT)))
    sections: list[list[Record]] = [[], [], []]
    skipped = 0
    for index, count in enumerate((ancount, nscount, arcount)):
        for _ in range(count):
            name, offset = read_name(data, offset)
            if offset + _RR.size > len(data):
                raise RemoteDataError("truncated", "record header")
            rtype, rclass, ttl, rdlength = _RR.unpack_from(data, offset)
            start = offset + _RR.size
            offset = start + rdlength
            if offset > len(data):
                raise RemoteDataError("truncated", "record data")
            rdata = _read_rdata(data, rtype, start, offset)
            if rdata is None:
                skipped += 1
                continue
            sections[index].append(Record(name, rtype, rclass & ~TOP_BIT, ttl, rdata, bool(rclass & TOP_BIT)))
    return Message(ident, flags, tuple(questions), tuple(sections[0]), tuple(sections[1]), tuple(sections[2]),
                   skipped)


class _Packet:
    """One message being written, names compressed against what it already holds (exact bytes only)."""

    def __init__(self, flags: int) -> None:
        self.buf = bytearray(12)
        self.flags = flags
        self.counts = [0, 0, 0, 0]
        self._names: dict[bytes, int] = {}
        self._added: list[bytes] = []

    def name(self, name: bytes, compress: bool = True) -> None:
        offset = 0
        while name[offset]:
            at = self._names.get(name[offset:]) if compress else None
            if at is not None:
                self.buf += name[:offset] + struct.pack("!H", 0xC000 | at)
                return
            if len(self.buf) + offset < 0x3FFF:
                self._names[name[offset:]] = len(self.buf) + offset
                self._added.append(name[offset:])
            offset += 1 + name[offset]
        self.buf += name

    def question(self, q: Question) -> None:
        self.name(q.name)
        self.buf += struct.pack("!HH", q.qtype, q.qclass | (TOP_BIT if q.unicast else 0))
        self.counts[0] += 1

    def record(self, r: Record, section: int) -> None:
        self.name(r.name)
        self.buf += _RR.pack(r.rtype, r.rclass | (TOP_BIT if r.flush else 0), r.ttl, 0)
        start = len(self.buf)
        if r.rtype in (TYPE_PTR, TYPE_CNAME, TYPE_NS):
            self.name(r.rdata)
        elif r.rtype == TYPE_SRV:
            self.buf += r.rdata[:_SRV_FIXED]
            self.name(r.rdata[_SRV_FIXED:])
        else:  # NSEC's name is written uncompressed (RFC 4034), the rest as read
            self.buf += r.rdata
        struct.pack_into("!H", self.buf, start - 2, len(self.buf) - start)
        self.counts[section] += 1

    def mark(self) -> tuple[int, list[int]]:
        self._added = []
        return len(self.buf), list(self.counts)

    def rollback(self, mark: tuple[int, list[int]]) -> None:
        size, counts = mark
        del self.buf[size:]
        for suffix in self._added:
            if self._names.get(suffix, 0) >= size:
                del self._names[suffix]
        self._added = []
        self.counts = counts

    def finish(self, flags: int) -> bytes:
        struct.pack_into("!6H", self.buf, 0, 0, flags, *self.counts)
        return bytes(self.buf)


def write_messages(flags: int, questions: tuple[Question, ...] | list[Question] = (),
                   answers: tuple[Record, ...] | list[Record] = (),
                   additionals: tuple[Record, ...] | list[Record] = (), limit: int = MAX_SEND) -> list[bytes]:
    """The messages that carry these questions and records, each at most `limit` bytes where it can be.

    A record too large for `limit` alone goes in a packet of its own (up to
    MAX_MESSAGE, else it is left out). A query whose known answers need more
    than one packet has TC set in all but the last (RFC 6762 section 7.2);
    responses never set TC (section 18.5). ID is 0 (section 18.1).
    """
    query = not flags & FLAG_QR
    packets: list[bytes] = []
    packet = _Packet(flags)
    for q in questions:
        packet.question(q)
    items = [(r, 1) for r in answers] + [(r, 3) for r in additionals]
    for record, section in items:
        mark = packet.mark()
        packet.record(record, section)
        if len(packet.buf) <= limit:
            continue
        if mark[0] > 12:
            packet.rollback(mark)
            packets.append(packet.finish(flags | FLAG_TC if query else flags & ~FLAG_TC))
            packet = _Packet(flags)
            packet.record(record, section)
        if len(packet.buf) > limit:
            if len(packet.buf) <= MAX_MESSAGE:
                packets.append(packet.finish(flags | FLAG_TC if query else flags & ~FLAG_TC))
            packet = _Packet(flags)
    if packet.counts != [0, 0, 0, 0]:
        packets.append(packet.finish(flags))
    return packets


def without_flush(record: Record) -> Record:
    return replace(record, flush=False) if record.flush else record
