"""DNS on the wire: the addressing of a queued packet and a walk over the answer's records.

Written by hand, not parsed with dnslib: a full dnslib parse cost 20-33 µs
per answer against 3-5 µs for this walk, on the path every answer takes.
The tests hold it against dnslib as the reference reader on generated and
mutated answers. Raises RemoteDataError for anything it will not read.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from loxgw.core.errors import RemoteDataError
from loxgw.core.record import record

MAX_DNS_BYTES = 4096  # EDNS0 payloads above this are not something a home resolver sends


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


@record
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


def read_labels(payload: bytes, offset: int) -> tuple[list[bytes], int]:
    """The labels of a (possibly compressed) name at `offset`, and the offset after it.

    Compression pointers may only point backwards (which also ends every
    loop), at most MAX_POINTER_HOPS of them; the name is at most 255 octets.
    The one walk for unicast DNS (read_name) and mDNS (core.mdns, which keeps
    the labels as wire labels).
    """
    labels: list[bytes] = []
    after = -1
    hops = 0
    size = 1
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
            return labels, (after if after >= 0 else offset + 1)
        size += length + 1
        if size > 255:
            raise RemoteDataError("malformed", "name longer than 255 octets")
        if offset + 1 + length > end:
            raise RemoteDataError("truncated", "label runs past the end")
        labels.append(payload[offset + 1 : offset + 1 + length])
        offset += 1 + length


def read_name(payload: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) name at `offset`, lower-cased dotted text, and the offset after it.

    Labels must be UTF-8, as dnslib demands. A label containing a dot yields
    the name "" (matches nothing): joined, "a\\.b" would pose as two labels.
    """
    labels, after = read_labels(payload, offset)
    poisoned = False
    for raw in labels:
        if not raw.isascii():
            try:
                raw.decode()
            except UnicodeDecodeError:
                raise RemoteDataError("malformed", "label is not UTF-8") from None
        if b"." in raw:
            poisoned = True
    # bytes.lower() folds ASCII only: no Unicode folding may turn a foreign label into a catalogue one.
    name = "" if poisoned else b".".join(labels).lower().decode()
    return name, after


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
