"""ctnetlink bytes: captured events and a dump beside their meaning, the event filter, the requests.

Captured on Linux 6.18 in the lab's router namespace (tests/lab/netlab.py):
the App host 192.168.10.20 connecting to the Intercom 192.168.20.30.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loxgw.edges import conntrack as ct

APP, INTERCOM = ipaddress.IPv4Address("192.168.10.20"), ipaddress.IPv4Address("192.168.20.30")

# (hex, meaning: kind, proto, sport, dport, TCP state, conntrack id)
CAPTURED = {
    # NEW: the SYN to 7091 passed (SYN_SENT); flags NLM_F_CREATE|NLM_F_EXCL.
    "tcp-new-syn-sent": (
        "c400000000010006000000000000000002000000340001801400018008000100c0a80a1408000200c0a8141e1c0002800500"
        "01000600000006000200ba0c0000060003001bb30000340002801400018008000100c0a8141e08000200c0a80a141c000280"
        "0500010006000000060002001bb3000006000300ba0c000008000c009e46bbda080003000000000808000700000000783000"
        "04802c0001800500010001000000050002000a000000050003000000000006000400030000000600050000000000",
        ("new", 6, 47628, 7091, 1, 0x9E46BBDA)),
    # UPDATE: the handshake completed (ESTABLISHED).
    "tcp-update-established": (
        "c400000000010000000000000000000002000000340001801400018008000100c0a80a1408000200c0a8141e1c0002800500"
        "01000600000006000200ba0c0000060003001bb30000340002801400018008000100c0a8141e08000200c0a80a141c000280"
        "0500010006000000060002001bb3000006000300ba0c000008000c009e46bbda080003000000000e08000700000697803000"
        "04802c0001800500010003000000050002000a000000050003000a00000006000400230000000600050023000000",
        ("update", 6, 47628, 7091, 3, 0x9E46BBDA)),
    # UPDATE: the App closed its side (CLOSE_WAIT: the Intercom saw the App's FIN and acknowledged).
    "tcp-update-close-wait": (
        "c400000000010000000000000000000002000000340001801400018008000100c0a80a1408000200c0a8141e1c0002800500"
        "01000600000006000200ba0c0000060003001bb30000340002801400018008000100c0a8141e08000200c0a80a141c000280"
        "0500010006000000060002001bb3000006000300ba0c000008000c009e46bbda080003000000000e080007000000003c3000"
        "04802c0001800500010005000000050002000a000000050003000a00000006000400270000000600050023000000",
        ("update", 6, 47628, 7091, 5, 0x9E46BBDA)),
    # UPDATE: another session reset by the App (RST: CLOSE).
    "tcp-update-rst-close": (
        "c400000000010000000000000000000002000000340001801400018008000100c0a80a1408000200c0a8141e1c0002800500"
        "01000600000006000200ba140000060003001bb30000340002801400018008000100c0a8141e08000200c0a80a141c000280"
        "0500010006000000060002001bb3000006000300ba14000008000c009d8b5f51080003000000000e080007000000000a3000"
        "04802c0001800500010008000000050002000a000000050003000a00000006000400230000000600050023000000",
        ("update", 6, 47636, 7091, 8, 0x9D8B5F51)),
    # DESTROY (IPCTNL_MSG_CT_DELETE) of that session, deleted with `conntrack -D`.
    "tcp-destroy": (
        "a40000000201000000000000717dbf8a02000000340001801400018008000100c0a80a1408000200c0a8141e1c0002800500"
        "01000600000006000200ba140000060003001bb30000340002801400018008000100c0a8141e08000200c0a80a141c000280"
        "0500010006000000060002001bb3000006000300ba14000008000c009d8b5f51080003000000020e08000700000000091000"
        "04800c0001800500010008000000",
        ("destroy", 6, 47636, 7091, 8, 0x9D8B5F51)),
    # NEW: a UDP datagram from the App's 40000 to the Intercom's 50000 (no TCP state).
    "udp-new": (
        "9400000000010006000000000000000002000000340001801400018008000100c0a80a1408000200c0a8141e1c0002800500"
        "010011000000060002009c40000006000300c3500000340002801400018008000100c0a8141e08000200c0a80a141c000280"
        "050001001100000006000200c3500000060003009c40000008000c003a34fea90800030000000008080007000000001e",
        ("new", 17, 40000, 50000, None, 0x3A34FEA9)),
}
# NEW of an IPv6 session 2001:db8:10::14 -> 2001:db8:20::1e port 7091: not for media4.
IPV6_NEW = (
    "f40000000001000600000000000000000a0000004c0001802c0001801400030020010db80010000000000000000000141400"
    "040020010db800200000000000000000001e1c000280050001000600000006000200c4440000060003001bb300004c000280"
    "2c0001801400030020010db800200000000000000000001e1400040020010db80010000000000000000000141c0002800500"
    "010006000000060002001bb3000006000300c444000008000c0004fd3d46080003000000000808000700000000783000048"
    "02c0001800500010001000000050002000a000000050003000000000006000400030000000600050000000000")
# The answer to dump_request(TCP, dport=7091): one entry (NLM_F_MULTI), then NLMSG_DONE in a second read.
DUMP_ENTRY = (
    "d4000000000122000100000092d9f4d002000000340001801400018008000100c0a80a1408000200c0a8141e1c0002800500"
    "01000600000006000200ba0c0000060003001bb30000340002801400018008000100c0a8141e08000200c0a80a141c000280"
    "0500010006000000060002001bb3000006000300ba0c0000080003000000000e080008000000000008000c009e46bbda0800"
    "0b00000000010800070000000038300004802c0001800500010005000000050002000a000000050003000a00000006000400"
    "270000000600050023000000")
DUMP_DONE = "14000000030002000100000092d9f4d000000000"


def raw(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.replace(" ", ""))


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_captured_events_parse_to_their_meaning(name: str) -> None:
    hex_text, (kind, proto, sport, dport, state, ct_id) = CAPTURED[name]
    conn = ct.parse_message(raw(hex_text))
    assert conn == ct.Conn(kind, proto, APP, sport, INTERCOM, dport, state, ct_id, 0)


def test_ipv6_and_foreign_messages_are_not_entries() -> None:
    assert ct.parse_message(raw(IPV6_NEW)) is None
    assert ct.parse_message(raw(DUMP_DONE)) is None


def test_a_dump_answer_is_read_message_by_message() -> None:
    data = raw(DUMP_ENTRY) + raw(DUMP_DONE)
    found = [(kind, ct.parse_message(data, offset)) for offset, kind in ct.messages(data)]
    assert [kind for kind, _ in found] == [(ct.NFNL_SUBSYS_CTNETLINK << 8) | ct.IPCTNL_MSG_CT_NEW, ct.NLMSG_DONE]
    entry = found[0][1]
    assert entry is not None
    assert (entry.src, entry.sport, entry.dst, entry.dport, entry.tcp_state) == (APP, 47628, INTERCOM, 7091, 5)


@pytest.mark.parametrize(("name", "ports", "passes"), [
    ("tcp-new-syn-sent", [80, 5060, 7091], True),
    ("tcp-update-established", [7091], True),
    ("tcp-destroy", [7091], True),
    ("tcp-update-established", [80, 5060], False),  # another port
    ("udp-new", [80, 5060, 7091, 50000], False),  # not TCP
])
def test_the_event_filter_passes_ipv4_tcp_to_the_signalling_ports_only(name: str, ports: list[int],
                                                                       passes: bool) -> None:
    assert ct.run_filter(ct.event_filter(ports), raw(CAPTURED[name][0])) is passes


def test_the_event_filter_drops_ipv6_and_lets_unexpected_layouts_through() -> None:
    prog = ct.event_filter([7091])
    assert ct.run_filter(prog, raw(IPV6_NEW)) is False
    odd = bytearray(raw(CAPTURED["tcp-update-established"][0]))
    odd[23] ^= 0x01  # the first attribute is no longer CTA_TUPLE_ORIG: Python reads and decides
    struct.pack_into("=H", odd, 68, 443)
    assert ct.run_filter(prog, bytes(odd)) is True
    assert ct.run_filter(prog, raw(CAPTURED["tcp-update-established"][0])[:40]) is False  # too short to be ours


def test_the_event_filter_fits_classic_bpf() -> None:
    prog = ct.event_filter(range(1, 200))
    assert len(prog) == 2 * 9 + 1 + ct.MAX_FILTER_PORTS + 2
    assert all(0 <= jt <= 255 and 0 <= jf <= 255 for _, jt, jf, _ in prog)
    assert prog[-2:] == [(0x06, 0, 0, 0), (0x06, 0, 0, 0x40000)]


def test_a_delete_request_names_exactly_one_entry() -> None:
    conn = ct.parse_message(raw(CAPTURED["udp-new"][0]))
    assert conn is not None
    request = ct.delete_request(conn, seq=7)
    length, kind, flags, seq = struct.unpack_from("=IHHI", request)
    assert (length, kind, flags, seq) == (len(request), 0x0102, ct.NLM_F_REQUEST | ct.NLM_F_ACK, 7)
    assert ct.parse_message(request) == conn._replace(kind="destroy", tcp_state=None)


def test_a_dump_request_carries_its_kernel_filter() -> None:
    request = ct.dump_request(ct.UDP, APP, INTERCOM)
    assert request.hex() == (
        "4c000000" "0101" "0103" "01000000" "00000000"  # length, CT_GET, REQUEST|DUMP, seq, port
        "02000000"  # nfgenmsg: AF_INET, version 0
        "24000180"  # CTA_TUPLE_ORIG (nested)
        "14000180" "08000100c0a80a14" "08000200c0a8141e"  # CTA_TUPLE_IP: src, dst
        "0c000280" "0500010011000000"  # CTA_TUPLE_PROTO: CTA_PROTO_NUM 17
        "14001980" "080001000b000000" "0800020000000000")  # CTA_FILTER: orig IP_SRC|IP_DST|PROTO_NUM, reply 0
    assert struct.unpack_from("=H", request, 6)[0] == ct.NLM_F_REQUEST | ct.NLM_F_DUMP
    assert request[16] == socket.AF_INET


@given(st.binary(max_size=300), st.integers(min_value=-4, max_value=300))
def test_any_bytes_parse_or_are_refused_never_raise(data: bytes, offset: int) -> None:
    result = ct.parse_message(data, offset)
    assert result is None or isinstance(result, ct.Conn)
    list(ct.messages(data))


@given(st.data())
def test_mutated_captures_parse_or_are_refused(data: st.DataObject) -> None:
    message = bytearray(raw(CAPTURED["tcp-update-established"][0]))
    for _ in range(data.draw(st.integers(1, 8))):
        message[data.draw(st.integers(0, len(message) - 1))] = data.draw(st.integers(0, 255))
    result = ct.parse_message(bytes(message))
    assert result is None or isinstance(result, ct.Conn)
    ct.run_filter(ct.event_filter([7091]), bytes(message))
