"""Reading NFLOG copies: attributes, prefixes, torn messages."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.edges.nflog import NFULA_PAYLOAD, NFULA_PREFIX, ULOG_MSG_TYPE, payloads


def nflog_message(*attrs: tuple[int, bytes]) -> bytes:
    body = b"".join(struct.pack("=HH", 4 + len(v), t) + v + b"\0" * (-len(v) % 4) for t, v in attrs)
    nfgen = struct.pack("=BBH", 2, 0, 0)
    return struct.pack("=IHHII", 16 + 4 + len(body), ULOG_MSG_TYPE, 0, 0, 0) + nfgen + body


def test_nflog_copies_are_read_with_their_prefix() -> None:
    packet = bytes(range(45))
    data = nflog_message((1, b"\x08\x00\x03\x00"), (NFULA_PREFIX, b"loxgw-clients\0"), (NFULA_PAYLOAD, packet))
    data += nflog_message((NFULA_PAYLOAD, b"\x45abc"))  # no prefix: devices by default downstream
    assert payloads(data) == ([("loxgw-clients", packet), ("", b"\x45abc")], 0)


def test_torn_nflog_messages_are_counted_not_read() -> None:
    good = nflog_message((NFULA_PREFIX, b"p\0"), (NFULA_PAYLOAD, b"\x45xyz"))
    no_payload = nflog_message((NFULA_PREFIX, b"p\0"))
    torn_attribute = good[:20] + struct.pack("=HH", 200, NFULA_PAYLOAD) + good[24:]
    assert payloads(no_payload + good) == ([("p", b"\x45xyz")], 1)
    assert payloads(torn_attribute) == ([], 1)
    assert payloads(good + good[:-3]) == ([("p", b"\x45xyz")], 1)  # message cut short


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_give_copies_and_a_malformed_count(data: bytes) -> None:
    copies, malformed = payloads(data)
    assert malformed >= 0
    assert all(isinstance(prefix, str) and isinstance(packet, bytes) for prefix, packet in copies)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=200), st.binary(max_size=8))
def test_mutated_messages_never_raise(packet: bytes, cut: int, noise: bytes) -> None:
    good = nflog_message((NFULA_PREFIX, b"loxgw-devices\0"), (NFULA_PAYLOAD, packet))
    mutated = good[:cut] + noise + good[cut + len(noise):]
    copies, malformed = payloads(mutated + good)
    assert copies[-1:] == [("loxgw-devices", packet)] or malformed >= 1
