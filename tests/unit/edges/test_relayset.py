"""The answer-set probe: one NFT_MSG_GETSET, its key length read from the reply; any reply bytes are safe."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.edges import relayset


def attr(kind: int, value: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(value), kind) + value
    return data + b"\0" * (-len(data) % 4)


def message(kind: int, body: bytes, seq: int = 1) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


NEWSET = (relayset.NFNL_SUBSYS_NFTABLES << 8) | relayset.NFT_MSG_NEWSET


def newset(key_length: int) -> bytes:
    """A NEWSET reply as the kernel sends it (nfgenmsg, table, name, flags, key type, key length)."""
    body = struct.pack("=BBH", 1, 0, 0) + attr(1, b"loxgw\0") + attr(2, b"relay_answers4\0") \
        + attr(3, struct.pack("!I", 0x10)) + attr(4, struct.pack("!I", 13)) + attr(5, struct.pack("!I", key_length))
    return message(NEWSET, body)


def test_request_names_the_table_and_set() -> None:
    data = relayset.request("loxgw", "relay_answers4", seq=7)
    length, kind, flags, seq = struct.unpack_from("=IHHI", data)
    assert (length, kind, flags, seq) == (len(data), (10 << 8) | 10, 1 | 4, 7)
    assert b"loxgw\0" in data and b"relay_answers4\0" in data


def test_key_length_of_either_layout() -> None:
    assert relayset.key_length(newset(24) + message(2, struct.pack("=i", 0))) == 24
    assert relayset.key_length(newset(8)) == 8


def test_an_error_reply_means_no_set() -> None:
    error = message(2, struct.pack("=i", -2) + relayset.request("loxgw", "relay_answers4")[:16])
    assert relayset.key_length(error) is None
    assert relayset._acked(error)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_reply_bytes_give_a_length_or_none(data: bytes) -> None:
    found = relayset.key_length(data)
    assert found is None or 0 <= found < 2**32
    relayset._acked(data)

