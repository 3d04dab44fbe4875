"""Reading NFLOG copies: attributes, prefixes, torn messages."""

from __future__ import annotations

import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, nla
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_ULOG, nfgen_msg

from loxgw.edges.nflog import (
    COPY_RANGE,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    NFULNL_CFG_CMD_BIND,
    NFULNL_CFG_CMD_UNBIND,
    NFULNL_COPY_PACKET,
    NFULNL_MSG_CONFIG,
    ULOG_MSG_TYPE,
    _config,
    command,
    copy_mode,
    payloads,
    queue_threshold,
)


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


class _NflogConfig(nfgen_msg):  # type: ignore[misc]  # pyroute2 is untyped
    """NFULNL_MSG_CONFIG as pyroute2 declares messages: the reference the hand encoding is checked against."""

    nla_map = (("NFULA_CFG_UNSPEC", "none"), ("NFULA_CFG_CMD", "uint8"), ("NFULA_CFG_MODE", "cfg_mode"),
               ("NFULA_CFG_NLBUFSIZ", "be32"), ("NFULA_CFG_TIMEOUT", "be32"), ("NFULA_CFG_QTHRESH", "be32"))

    class cfg_mode(nla):  # type: ignore[misc]
        fields = (("copy_range", ">I"), ("copy_mode", "B"), ("pad", "B"))


def pyroute2_config(group: int, seq: int, attrs: list[tuple[str, object]]) -> bytes:
    msg = _NflogConfig()
    msg["nfgen_family"] = socket.AF_UNSPEC
    msg["res_id"] = group
    msg["attrs"] = attrs
    msg["header"]["type"] = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def test_config_messages_are_the_bytes_pyroute2_encodes() -> None:
    assert _config(7053, 1, command(NFULNL_CFG_CMD_BIND)) == pyroute2_config(
        7053, 1, [("NFULA_CFG_CMD", NFULNL_CFG_CMD_BIND)])
    assert _config(7053, 1, copy_mode(COPY_RANGE) + queue_threshold(1)) == pyroute2_config(
        7053, 1, [("NFULA_CFG_MODE", {"copy_range": COPY_RANGE, "copy_mode": NFULNL_COPY_PACKET, "pad": 0}),
                  ("NFULA_CFG_QTHRESH", 1)])
    assert _config(9, 2, command(NFULNL_CFG_CMD_UNBIND)) == pyroute2_config(
        9, 2, [("NFULA_CFG_CMD", NFULNL_CFG_CMD_UNBIND)])
