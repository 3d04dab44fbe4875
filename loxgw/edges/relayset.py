"""Adapter: the relay's nftables state: the answer set's key length, the netdev table of its kernel path.

The relay writes answer windows in the layout the kernel's set was declared
with (core.relaywire.answer_key), so a renderer and a relay of different
ages never disagree about the key; asked once per start (one
NFT_MSG_GETSET, no subprocess).

The kernel path's netdev table (core.relaykernel) is applied and removed
with one `nft -f` each, rarely (start, interface changes, a peer relay
appearing or going), and its counters are read with one `nft -j` when the
status asks; all in worker threads, never on the event loop.
"""

from __future__ import annotations

import errno
import socket
import struct

from loxgw.core.errors import KernelError
from loxgw.edges.nft import NETLINK_NETFILTER, NetfilterRequests, run_script

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSET, NFT_MSG_GETSET = 9, 10
NFPROTO_INET = 1
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_KEY_LEN = 1, 2, 5
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
TIMEOUT = 1.0


def _attr(kind: int, value: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(value), kind) + value
    return data + b"\0" * (-len(data) % 4)


def request(table: str, set_name: str, seq: int = 1) -> bytes:
    """The NFT_MSG_GETSET message for one set of an inet table."""
    body = struct.pack("=BBH", NFPROTO_INET, 0, 0) + _attr(NFTA_SET_TABLE, table.encode() + b"\0") \
        + _attr(NFTA_SET_NAME, set_name.encode() + b"\0")
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSET
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def key_length(reply: bytes) -> int | None:
    """NFTA_SET_KEY_LEN from the replies in `reply` (None: no set message, or an error)."""
    offset = 0
    while offset + 16 <= len(reply):
        length, kind = struct.unpack_from("=IH", reply, offset)
        if length < 16 or offset + length > len(reply):
            return None
        if kind == NLMSG_ERROR and struct.unpack_from("=i", reply, offset + 16)[0] != 0:
            return None
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSET:
            at, end = offset + 20, offset + length
            while at + 4 <= end:
                size, attr = struct.unpack_from("=HH", reply, at)
                if size < 4:
                    return None
                if attr & 0x3FFF == NFTA_SET_KEY_LEN and size >= 8:
                    value: int = struct.unpack_from("!I", reply, at + 4)[0]
                    return value
                at += (size + 3) & ~3
        offset += (length + 3) & ~3
    return None


def answer_key_length(table: str, set_name: str) -> int | None:
    """The key length (bytes) of `set_name` in `inet table`, or None if the kernel has no such set."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((0, 0))
        sock.send(request(table, set_name))
        reply = b""
        while True:
            data = sock.recv(65536)
            reply += data
            found = key_length(reply)
            if found is not None or _acked(data):
                return found


def _acked(data: bytes) -> bool:
    """Whether `data` ends the exchange (the ack or an error)."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if kind == NLMSG_ERROR:
            return True
        if length < 16:
            return True
        offset += (length + 3) & ~3
    return False


NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE = 0, 1
NFPROTO_NETDEV = 5
NFTA_TABLE_NAME = 1


def table_request(table: str, seq: int = 1) -> bytes:
    """The NFT_MSG_GETTABLE message for one netdev table."""
    body = struct.pack("=BBH", NFPROTO_NETDEV, 0, 0) + _attr(NFTA_TABLE_NAME, table.encode() + b"\0")
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def holds_table(reply: bytes) -> bool:
    """Whether the replies in `reply` describe a table (an error reply: no such table)."""
    offset = 0
    while offset + 16 <= len(reply):
        length, kind = struct.unpack_from("=IH", reply, offset)
        if length < 16:
            return False
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE:
            return True
        offset += (length + 3) & ~3
    return False


def netdev_table_exists(table: str) -> bool:
    """Whether `table netdev NAME` exists (one netlink request: fw4 flush or `nft flush ruleset` deletes it)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((0, 0))
        sock.send(table_request(table))
        reply = b""
        while True:
            data = sock.recv(65536)
            reply += data
            if holds_table(reply) or _acked(data):
                return holds_table(reply)


def apply_kernel_table(script: str) -> None:
    """Apply the relay's netdev table script in one transaction; KernelError if the kernel refuses it."""
    run_script(script, what="relay: nft -f of the netdev table")


def kernel_counters(table: str) -> dict[str, int]:
    """Packets per named counter of `table netdev NAME` ({} if there is no such table).

    Over netlink: the status file asks every 5 s, and an `nft` process each
    time cost the daemon's CPU budget on a router (its quota throttled the
    DNS path: first connections waited up to 96 ms at a tenth of a core).
    """
    try:
        with NetfilterRequests() as requests:
            return requests.counters(table)
    except KernelError as exc:
        if exc.errno == errno.ENOENT:
            return {}
        raise
