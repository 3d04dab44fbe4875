"""Adapter: copies of DNS packets through NFLOG, so DNS never waits for loxgw.

Why not NFQUEUE: a queued packet waits for user space, and that wait lands
on every DNS round trip. What loxgw needs from a query (who asked which
resolver, id, question) and from an answer (the addresses) it can read from
a copy. The copy is delivered without delay: with a queue threshold of 1 the
kernel puts the message in our socket while the packet is still in its hook,
so a query's copy is there before the resolver can answer, and an answer's
copy before the device can use it. Before loxgw judges an answer or lets a
held packet go, it drains the socket: nothing is ever missed for lack of
reading.

Without a listener the kernel drops the copies: DNS keeps working whether or
not loxgw runs, as with the answer queue's bypass.

The two configuration messages are encoded with edges.nft's netlink helpers
(tests/unit/edges/test_nflog.py compares them with pyroute2's encoding):
pyroute2 has no nfnetlink_log class, and importing its netlink modules for
them cost 5-8 ms of start-up CPU. Packets are read with a hand-written
attribute walk: every query of a cloud zone passes it, and a pyroute2 decode
costs tens of microseconds where this costs one or two.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct

from loxgw.core.errors import KernelError
from loxgw.edges.nft import NETLINK_NETFILTER, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, attr, message

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_QTHRESH = 1, 2, 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NLA_TYPE_MASK = 0x3FFF
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
RECEIVE_BUFFER = 4 << 20  # ~20,000 queries of burst before the kernel drops copies
COPY_RANGE = 4096 + 60 + 60  # DNS cap plus IPv6 and TCP headers
MAX_READ = 10000  # datagrams per read(): more than 2 s of DNS at 5,000 answers/s
READ_SIZE = 16384  # one message per datagram (threshold 1): the copy plus < 300 octets of attributes
ULOG_MSG_TYPE = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET


def _config(group: int, seq: int, attrs: bytes) -> bytes:
    """NFULNL_MSG_CONFIG for `group` (linux/netfilter/nfnetlink_log.h), acknowledged."""
    return message((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq,
                   socket.AF_UNSPEC, group, attrs)


def command(cmd: int) -> bytes:
    """NFULA_CFG_CMD: bind or unbind the group."""
    return attr(NFULA_CFG_CMD, bytes([cmd]))


def copy_mode(copy_range: int) -> bytes:
    """NFULA_CFG_MODE (struct nfulnl_msg_config_mode: be32 range, u8 mode, u8 pad): whole packets."""
    return attr(NFULA_CFG_MODE, struct.pack(">IBB", copy_range, NFULNL_COPY_PACKET, 0))


def queue_threshold(count: int) -> bytes:
    """NFULA_CFG_QTHRESH: messages the kernel gathers before it delivers them."""
    return attr(NFULA_CFG_QTHRESH, struct.pack(">I", count))


Copy = tuple[str, bytes]  # the rule's prefix, the packet from its IP header


def payloads(data: bytes) -> tuple[list[Copy], int]:
    """The logged packets in one netlink read, and how many messages were malformed.

    Each NFULNL_MSG_PACKET carries the packet (from its IP header) in
    NFULA_PAYLOAD and the rule's prefix, NUL-terminated, in NFULA_PREFIX;
    other attributes (interfaces, marks, timestamps) are skipped.
    """
    found: list[Copy] = []
    bad = 0
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16 or offset + length > len(data):
            return found, bad + 1  # a torn datagram: nothing after it can be trusted
        if kind == ULOG_MSG_TYPE:
            attributes = _attributes(data, offset + 20, offset + length)
            payload = attributes.get(NFULA_PAYLOAD)
            if payload is None:
                bad += 1
            else:
                prefix = attributes.get(NFULA_PREFIX, b"").split(b"\0", 1)[0]
                found.append((prefix.decode("ascii", "replace"), payload))
        offset += (length + 3) & ~3
    return found, bad


def _attributes(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """Prefix and payload attributes of one message; a torn attribute ends the walk."""
    found: dict[int, bytes] = {}
    offset = start
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > end:
            return {}
        kind &= NLA_TYPE_MASK
        if kind in (NFULA_PAYLOAD, NFULA_PREFIX):
            found[kind] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


class CopyLog:
    """One NFLOG group's socket: bound at construction, read without blocking."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.malformed = 0
        self.overruns = 0  # times the kernel dropped copies because the socket was full
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.bind((0, 0))
        self.sock.settimeout(2.0)  # the kernel acknowledges at once; never hang the start-up on it
        try:
            self._configure(command(NFULNL_CFG_CMD_BIND), "bind")
            self._configure(copy_mode(COPY_RANGE) + queue_threshold(1), "configure")
        except KernelError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        # Checked before every answer; a poll costs less than a failed recv and its exception.
        self._pending = select.poll()
        self._pending.register(self.sock, select.POLLIN)

    def _configure(self, attrs: bytes, what: str) -> None:
        self.sock.send(_config(self.group, 1, attrs))
        reply = self.sock.recv(65536)
        if len(reply) >= 20 and struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR:
            code = -struct.unpack_from("=i", reply, 16)[0]
            if code:
                hint = " (another program, e.g. ulogd, holds this group)" if code in (errno.EBUSY, errno.EPERM) else ""
                raise KernelError(f"NFLOG group {self.group} {what}{hint}", code, os.strerror(code))

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[Copy]:
        """The copies waiting in the socket (none if nothing is waiting), at most MAX_READ of them.

        Bounded so that a flood cannot keep the DNS thread reading forever;
        what is left is read on the next call.
        """
        packets: list[Copy] = []
        if not self._pending.poll(0):
            return packets
        for _ in range(MAX_READ):
            try:
                data = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return packets
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                raise KernelError(f"NFLOG group {self.group} read", exc.errno, exc.strerror or "") from exc
            found, bad = payloads(data)
            packets += found
            self.malformed += bad
        return packets

    def close(self) -> None:
        with contextlib.suppress(OSError):  # closing the socket unbinds too
            self.sock.send(_config(self.group, 2, command(NFULNL_CFG_CMD_UNBIND)))
        self.sock.close()
