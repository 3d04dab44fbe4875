"""mDNS on the wire: golden bytes, the one promise of the reader, round trips, and python-zeroconf as reference."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import mdns
from loxgw.core.errors import RemoteDataError
from loxgw.core.mdns import Question, Record, wire_name

# An AirPlay announcement as python-zeroconf 0.154 sends it (ServiceInfo "Bad 1" on as.local.,
# port 7005, TXT "a=bcd", A 192.168.20.10), compressed: PTR _airplay._tcp.local -> instance
# (shared: no cache-flush), SRV, TXT and A with the cache-flush bit, TTLs 4500/120.
ANNOUNCEMENT = bytes.fromhex(
    "000084000000000300000001"  # ID 0, QR AA, 3 answers, 1 additional
    "085f616972706c6179045f746370056c6f63616c00" "000c0001" "00001194" "0008" "054261642031c00c"  # PTR
    "c02b" "00218001" "00000078" "000b" "0000" "0000" "1b5d" "026173c01a"  # SRV 0 0 7005 as.local
    "c02b" "00108001" "00001194" "0006" "05613d626364"  # TXT "a=bcd"
    "c045" "00018001" "00000078" "0004" "c0a8140a"  # A 192.168.20.10
)
INSTANCE = wire_name("Bad 1", "_airplay", "_tcp", "local")


def test_golden_announcement_reads_as_its_records() -> None:
    message = mdns.read_message(ANNOUNCEMENT)
    assert (message.id, message.flags, message.is_response, message.skipped) == (0, 0x8400, True, 0)
    ptr, srv, txt = message.answers
    (address,) = message.additionals
    assert (ptr.name, ptr.rtype, ptr.flush, ptr.ttl, ptr.rdata) == (
        wire_name("_airplay", "_tcp", "local"), mdns.TYPE_PTR, False, 4500, INSTANCE)
    assert (srv.name, srv.flush, srv.ttl, srv.srv_port(), srv.rdata[6:]) == (
        INSTANCE, True, 120, 7005, wire_name("as", "local"))
    assert (txt.rdata, txt.flush) == (b"\x05a=bcd", True)
    assert (address.name, address.rdata) == (wire_name("as", "local"), bytes([192, 168, 20, 10]))
    assert mdns.name_text(srv.name) == "Bad 1._airplay._tcp.local."


def test_written_back_it_reads_the_same() -> None:
    message = mdns.read_message(ANNOUNCEMENT)
    (packet,) = mdns.write_messages(message.flags, (), message.answers, message.additionals)
    again = mdns.read_message(packet)
    assert (again.answers, again.additionals) == (message.answers, message.additionals)
    assert len(packet) <= len(ANNOUNCEMENT) + 8  # names compressed as zeroconf compressed them


def test_a_dot_inside_a_label_survives_byte_exact() -> None:
    # RFC 6763 section 4.3: instance names may contain dots; a Loxone room can be "Bad 1.OG".
    dotted = wire_name("Bad 1.OG", "_raop", "_tcp", "local")
    target = struct.pack("!HHH", 0, 0, 5005) + wire_name("as", "local")
    record = Record(dotted, mdns.TYPE_SRV, mdns.CLASS_IN, 120, target)
    (packet,) = mdns.write_messages(0x8400, (), [record])
    assert mdns.read_message(packet).answers == (record,)
    assert mdns.name_text(dotted) == "Bad 1\\.OG._raop._tcp.local."


def test_zeroconf_splits_a_dotted_label_which_is_why_it_does_not_write_here() -> None:
    zeroconf = pytest.importorskip("zeroconf", reason="python-zeroconf is the dev reference reader")
    dotted = wire_name("Bad 1.OG", "_raop", "_tcp", "local")
    record = Record(dotted, mdns.TYPE_PTR, mdns.CLASS_IN, 4500, dotted)
    (packet,) = mdns.write_messages(0x8400, (), [record])
    (incoming,) = zeroconf.DNSIncoming(packet).answers()
    out = zeroconf.DNSOutgoing(0x8400)
    out.add_answer_at_time(incoming, 0)
    (rewritten,) = out.packets()
    (reread,) = mdns.read_message(rewritten).answers
    assert reread.name == wire_name("Bad 1", "OG", "_raop", "_tcp", "local")  # one label became two


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x00" * 11, "truncated"),
    (b"\x00" * 9001, "oversized"),
    (bytes.fromhex("000000000001000000000000") + b"\x03abc", "truncated"),  # name without its end
    (bytes.fromhex("000000000001000000000000") + b"\xc0\x0c\x00\x01\x00\x01", "malformed"),  # points at itself
    (bytes.fromhex("000000000001000000000000") + b"\x7f", "malformed"),  # extended label type
    (bytes.fromhex("000000000001000000000000") + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
     "malformed"),  # longer than 255 octets
    (bytes.fromhex("000078000000000000000000"), "malformed"),  # opcode UPDATE
    (bytes.fromhex("000000000041000000000000"), "oversized"),  # 65 questions
    (bytes.fromhex("000084000000000100000000") + b"\x00\x00\x01\x00\x01\x00\x00\x00\x78\x00\x05" + bytes(5),
     "malformed"),  # an A record of five octets
    (bytes.fromhex("000084000000000100000000") + b"\x00\x00\x10\x00\x01\x00\x00\x00\x78\x00\x03\x05ab",
     "malformed"),  # TXT string runs past its record
    (bytes.fromhex("000084000000000100000000") + b"\x00\x00\x21\x00\x01\x00\x00\x00\x78\x00\x03\x00\x00\x00",
     "malformed"),  # SRV without a target
])
def test_what_it_refuses_and_why(data: bytes, reason: str) -> None:
    with pytest.raises(RemoteDataError) as caught:
        mdns.read_message(data)
    assert caught.value.reason == reason


def test_records_of_unread_types_are_skipped_and_counted() -> None:
    # A CAA-like type 257 record: its data may hold anything, so it is left out.
    data = bytes.fromhex("000084000000000200000000") + b"\x00\x01\x01\x00\x01\x00\x00\x00\x78\x00\x02\xc0\x0c"
    data += b"\x00\x00\x01\x00\x01\x00\x00\x00\x78\x00\x04\x01\x02\x03\x04"
    message = mdns.read_message(data)
    assert (message.skipped, [r.rtype for r in message.answers]) == (1, [mdns.TYPE_A])


def test_a_long_known_answer_list_is_split_with_tc_on_all_but_the_last() -> None:
    question = Question(wire_name("_airplay", "_tcp", "local"), mdns.TYPE_PTR, mdns.CLASS_IN)
    known = [Record(question.name, mdns.TYPE_PTR, mdns.CLASS_IN, 4500, wire_name(f"speaker {i:03}", "_airplay",
                                                                                    "_tcp", "local"))
             for i in range(120)]
    packets = mdns.write_messages(0, [question], known)
    assert len(packets) > 1 and all(len(p) <= mdns.MAX_SEND for p in packets)
    read = [mdns.read_message(p) for p in packets]
    assert [bool(m.flags & mdns.FLAG_TC) for m in read] == [True] * (len(read) - 1) + [False]
    assert [len(m.questions) for m in read] == [1] + [0] * (len(read) - 1)
    assert [r for m in read for r in m.answers] == known


def test_responses_are_split_without_tc_and_an_oversized_record_goes_alone() -> None:
    big = Record(wire_name("big", "local"), mdns.TYPE_TXT, mdns.CLASS_IN, 120, (b"\xff" + b"x" * 255) * 8)
    small = [Record(wire_name(f"h{i}", "local"), mdns.TYPE_A, mdns.CLASS_IN, 120, bytes(4)) for i in range(3)]
    packets = mdns.write_messages(0x8400, (), [small[0], big, *small[1:]])
    read = [mdns.read_message(p) for p in packets]
    assert [m.answers for m in read] == [(small[0],), (big,), tuple(small[1:])]
    assert all(not m.flags & mdns.FLAG_TC for m in read)
    huge = Record(wire_name("huge", "local"), mdns.TYPE_TXT, mdns.CLASS_IN, 120, (b"\xff" + b"x" * 255) * 40)
    assert mdns.write_messages(0x8400, (), [huge]) == []  # above 9000 bytes: nothing could carry it


# --- properties -------------------------------------------------------------------------

labels = st.text(st.characters(min_codepoint=32, max_codepoint=0x24F, blacklist_characters="."),
                 min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 63)
names = st.lists(labels, min_size=1, max_size=4).map(lambda ls: wire_name(*ls, "local"))


@st.composite
def records(draw: st.DrawFn) -> Record:
    rtype = draw(st.sampled_from([mdns.TYPE_A, mdns.TYPE_AAAA, mdns.TYPE_PTR, mdns.TYPE_SRV, mdns.TYPE_TXT]))
    if rtype == mdns.TYPE_A:
        rdata = draw(st.binary(min_size=4, max_size=4))
    elif rtype == mdns.TYPE_AAAA:
        rdata = draw(st.binary(min_size=16, max_size=16))
    elif rtype == mdns.TYPE_PTR:
        rdata = draw(names)
    elif rtype == mdns.TYPE_SRV:
        rdata = struct.pack("!HHH", *draw(st.tuples(*[st.integers(0, 65535)] * 3))) + draw(names)
    else:
        strings = draw(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=5))
        rdata = b"".join(bytes([len(s)]) + s for s in strings)
    return Record(draw(names), rtype, mdns.CLASS_IN, draw(st.integers(0, 2**31 - 1)), rdata, draw(st.booleans()))


@given(st.lists(records(), max_size=30))
@settings(max_examples=200, deadline=None)
def test_what_is_written_reads_back_the_same(written: list[Record]) -> None:
    packets = mdns.write_messages(0x8400, (), written)
    assert all(len(p) <= mdns.MAX_SEND for p in packets)
    assert [r for p in packets for r in mdns.read_message(p).answers] == written


@given(st.lists(records(), min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_python_zeroconf_reads_what_this_reader_reads(written: list[Record]) -> None:
    zeroconf = pytest.importorskip("zeroconf", reason="python-zeroconf is the dev reference reader")
    for packet in mdns.write_messages(0x8400, (), written):
        ours = mdns.read_message(packet).answers
        theirs = zeroconf.DNSIncoming(packet).answers()
        assert len(theirs) == len(ours)
        for mine, ref in zip(ours, theirs, strict=True):
            assert (mdns.name_text(mine.name), mine.rtype, mine.flush, mine.ttl) == (
                ref.name, ref.type, ref.unique, ref.ttl)
            if mine.rtype == mdns.TYPE_SRV:
                assert (mine.srv_port(), mdns.name_text(mine.rdata[6:])) == (ref.port, ref.server)
            elif mine.rtype == mdns.TYPE_PTR:
                assert mdns.name_text(mine.rdata) == ref.alias
            elif mine.rtype == mdns.TYPE_TXT:
                assert mine.rdata == ref.text
            else:
                assert mine.rdata == ref.address


@given(st.binary(max_size=600))
@settings(max_examples=500, deadline=None)
def test_any_bytes_read_or_raise_remote_data_error(data: bytes) -> None:
    with contextlib.suppress(RemoteDataError):
        mdns.read_message(data)


@given(st.integers(0, len(ANNOUNCEMENT) - 1), st.integers(0, 255), st.integers(0, len(ANNOUNCEMENT)))
@settings(max_examples=500, deadline=None)
def test_a_mutated_announcement_reads_or_raises_remote_data_error(at: int, value: int, cut: int) -> None:
    data = bytearray(ANNOUNCEMENT)
    data[at] = value
    try:
        message = mdns.read_message(bytes(data[:cut]))
    except RemoteDataError:
        return
    for record in message.answers + message.additionals:  # what it read can be written again
        mdns.write_messages(0x8400, (), [record])
