"""The hand-written DNS answer reader against dnslib, the reference: same reading, or a refusal.

loxgw reads answers by hand for speed (see dns.read_answer). dnslib stays the
authority on what a message says: for well-formed answers both must read the
same question, CNAMEs and addresses; for mutated ones, whenever both read a
message they must agree, and the hand reader may only ever raise
RemoteDataError.
"""

from __future__ import annotations

import struct

import pytest
from dnslib import AAAA, CNAME, MX, QTYPE, RR, TXT, A, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import dnswire as dns
from loxgw.core.errors import RemoteDataError


def reference(payload: bytes) -> dns.WireAnswer:
    """What dnslib reads in a response, in WireAnswer's terms (IN-class records of the answer section)."""
    record = DNSRecord.parse(payload)
    if len(record.questions) != 1:
        raise RemoteDataError("questions")

    def name(label: object) -> str:
        parts: tuple[bytes, ...] = label.label  # type: ignore[attr-defined]
        if any(b"." in part for part in parts):
            return ""
        return b".".join(parts).lower().decode()

    cnames: dict[str, tuple[str, int]] = {}
    addresses: dict[str, list[tuple[bytes, int]]] = {}
    for rr in record.rr[: dns.MAX_ANSWER_RECORDS]:
        if rr.rclass != 1:
            continue
        if rr.rtype == QTYPE.CNAME:
            cnames[name(rr.rname)] = (name(rr.rdata.label), rr.ttl)
        elif rr.rtype in (QTYPE.A, QTYPE.AAAA):
            addresses.setdefault(name(rr.rname), []).append((bytes(rr.rdata.data), rr.ttl))
    flags = struct.unpack_from("!H", payload, 2)[0]
    return dns.WireAnswer(flags, name(record.q.qname), cnames, addresses)


LABEL = st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True)
SUFFIX = st.sampled_from(["dyndns.loxonecloud.com", "remcov3.loxonecloud.com", "loxone.com", "example.net",
                          "cdn.example.org"])
NAME = st.builds(lambda labels, suffix: ".".join([*labels, suffix]), st.lists(LABEL, min_size=1, max_size=3),
                 SUFFIX)
TTL = st.integers(0, 2**31 - 1)
IPV4 = st.builds(lambda b: ".".join(str(x) for x in b), st.binary(min_size=4, max_size=4))
IPV6 = st.builds(lambda b: ":".join(b[i:i + 2].hex() for i in range(0, 16, 2)), st.binary(min_size=16, max_size=16))


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    qname = draw(NAME)
    qtype = getattr(QTYPE, draw(st.sampled_from(["A", "AAAA"])))
    record = DNSRecord(DNSHeader(id=draw(st.integers(0, 0xFFFF))), q=DNSQuestion(qname, qtype))
    reply = record.reply()
    reply.header.rcode = draw(st.sampled_from([0, 0, 0, 2, 3]))
    owner = qname
    for _ in range(draw(st.integers(0, 3))):  # a CNAME chain, each link a new name
        target = draw(NAME)
        reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(target), ttl=draw(TTL)))
        owner = target
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["A", "AAAA", "MX", "TXT"]))
        rdata = {"A": lambda: A(draw(IPV4)), "AAAA": lambda: AAAA(draw(IPV6)),
                 "MX": lambda: MX(draw(NAME)), "TXT": lambda: TXT(draw(LABEL))}[kind]()
        reply.add_answer(RR(draw(st.sampled_from([owner, qname])), getattr(QTYPE, kind), rdata=rdata,
                            ttl=draw(TTL)))
    if draw(st.booleans()):
        reply.add_auth(RR("loxonecloud.com", QTYPE.NS, rdata=CNAME("ns1.example.net")))
    packed: bytes = reply.pack()
    return packed


@settings(max_examples=500, deadline=None)
@given(answers())
def test_reads_well_formed_answers_as_dnslib_does(payload: bytes) -> None:
    assert dns.read_answer(payload) == reference(payload)


@settings(max_examples=1500, deadline=None)
@given(answers(), st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 4096))
def test_mutated_answers_read_alike_or_are_refused(payload: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(payload)
    for pos, value in flips:
        data[pos % len(data)] = value
    mutated = bytes(data[: max(cut, 12)])
    try:
        mine = dns.read_answer(mutated)
    except RemoteDataError:
        return
    try:
        theirs = reference(mutated)
    except Exception:  # dnslib refuses more (it reads every section): nothing to compare
        return
    assert mine == theirs


def name_bytes(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def response(question: bytes, records: bytes, ancount: int) -> bytes:
    return struct.pack("!HHHHHH", 1, 0x8180, 1, ancount, 0, 0) + question + b"\x00\x01\x00\x01" + records


QUESTION = name_bytes(b"x", b"dyndns", b"loxonecloud", b"com")


def a_record(owner: bytes, rdata: bytes = bytes([203, 0, 113, 7]), rtype: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata


@pytest.mark.parametrize("payload,reason", [
    # a pointer to itself, and one pointing forwards
    (response(QUESTION, a_record(b"\xc0\x2a"), 1), "malformed"),
    (response(QUESTION, a_record(b"\xc0\x30"), 1), "malformed"),
    # pointer at the first name (nothing before it)
    (struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01", "malformed"),
    # a name of more than 255 octets
    (response(name_bytes(*[b"a" * 63] * 4, b"com"), b"", 0), "malformed"),
    # A with five octets; CNAME whose target does not fill its record
    (response(QUESTION, a_record(b"\xc0\x0c", bytes(5)), 1), "malformed"),
    (response(QUESTION, a_record(b"\xc0\x0c", b"\x01a\x00\x00", rtype=5), 1), "malformed"),
    # more records announced than present; a label that is not UTF-8
    (response(QUESTION, a_record(b"\xc0\x0c"), 2), "truncated"),
    (response(name_bytes(b"\xff\xfe", b"dyndns", b"loxonecloud", b"com"), b"", 0), "malformed"),
    # two questions; no header
    (struct.pack("!HHHHHH", 1, 0x8180, 2, 0, 0, 0) + QUESTION + b"\x00\x01\x00\x01" * 2, "questions"),
    (b"\x00\x01\x81", "truncated"),
])
def test_crafted_answers_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(RemoteDataError) as caught:
        dns.read_answer(payload)
    assert caught.value.reason == reason


def test_a_pointer_maze_is_bounded() -> None:
    # Each name points one step back to the previous pointer: a long but loop-free chain.
    chain = bytearray(response(QUESTION, b"", 0))
    start = len(chain)
    chain += b"\xc0\x0c"
    for i in range(1, 100):
        chain += bytes([0xC0 | ((start + 2 * (i - 1)) >> 8), (start + 2 * (i - 1)) & 0xFF])
    with pytest.raises(RemoteDataError, match="too many compression pointers"):
        dns.read_name(bytes(chain), len(chain) - 2)
    assert dns.read_name(bytes(chain), start + 2 * 10)[0] == "x.dyndns.loxonecloud.com"


def test_label_with_a_dot_and_unicode_case_never_match() -> None:
    # "a.b" as one label must not pose as two; the Kelvin sign must not fold into "k".
    dotted = response(name_bytes(b"x.dyndns", b"loxonecloud", b"com"), b"", 0)
    assert dns.read_answer(dotted).qname == ""
    kelvin = response(name_bytes("\u212a".encode(), b"dyndns", b"loxonecloud", b"com"), b"", 0)
    assert dns.read_answer(kelvin).qname == "\u212a.dyndns.loxonecloud.com"
    mixed = response(name_bytes(b"X", b"DynDNS", b"LoxoneCloud", b"COM"), b"", 0)
    assert dns.read_answer(mixed).qname == "x.dyndns.loxonecloud.com"
