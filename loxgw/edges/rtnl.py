"""Adapter: rtnetlink dumps (links, addresses, neighbours, routes) and change notifications.

The relay (links, addresses, routes) and device detection (neighbours) both
re-read kernel state when it changes instead of polling; ChangeWatch is their
shared subscription, and the dumps are what they re-read.

Why not pyroute2's IPRoute for the dumps: it imports pyroute2's whole rtnetlink
layer (every link kind, every traffic-control message, its request parsers and
unittest.mock), 2.6 MB of the daemon's idle RSS (bench/footprint.py --rss) and
modules the router would have to ship, for four read-only dumps of a few fields.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from loxgw.core.record import record

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40

# linux/netlink.h and linux/rtnetlink.h
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_GETNEIGH = 18, 22, 26, 30
IFLA_ADDRESS, IFLA_IFNAME = 1, 3
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
NDA_DST, NDA_LLADDR, NDA_CACHEINFO = 1, 2, 3
RTA_OIF = 4
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, seq, pid
RTATTR_HEADER = struct.Struct("=HH")  # length, type
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
NDA_CACHEINFO_FIELDS = struct.Struct("=III")  # confirmed, used, updated (ticks ago); refcnt follows
DUMP_BUFFER = 65536
MAX_DUMP_PARTS = 4096  # receive calls per dump: the kernel sends a few per thousand entries


@record
class Link:
    """A network interface: RTM_NEWLINK's ifinfomsg with IFLA_IFNAME and IFLA_ADDRESS."""

    index: int
    name: str
    flags: int  # IFF_*
    type: int  # ARPHRD_*
    address: bytes  # hardware address; empty when the link has none


@record
class Address:
    """An interface address: RTM_NEWADDR's ifaddrmsg with IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST."""

    index: int
    family: int
    prefixlen: int
    address: str  # the peer on point-to-point links, else the same as local
    local: str | None
    broadcast: str | None

    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        return ipaddress.ip_interface(f"{self.address}/{self.prefixlen}")


@record
class Neighbour:
    """A neighbour-table entry: RTM_NEWNEIGH's ndmsg with NDA_DST, NDA_LLADDR, NDA_CACHEINFO."""

    index: int
    state: int  # NUD_*
    address: str | None
    mac: str | None  # aa:bb:cc:dd:ee:ff, lower case
    age: int | None  # ticks since last confirmed, used or updated, whichever is latest


@record
class Route:
    """A route: RTM_NEWROUTE's rtmsg with RTA_OIF."""

    family: int
    dst_len: int
    table: int
    oif: int | None


def links() -> list[Link]:
    found = []
    for body in _dump(RTM_GETLINK, socket.AF_UNSPEC, IFINFOMSG.size):
        _, kind, index, flags, _ = IFINFOMSG.unpack_from(body)
        attrs = _attributes(body, IFINFOMSG.size)
        name = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
        found.append(Link(index, name, flags, kind, attrs.get(IFLA_ADDRESS, b"")))
    return found


def addresses(family: int = socket.AF_UNSPEC) -> list[Address]:
    found = []
    for body in _dump(RTM_GETADDR, family, IFADDRMSG.size):
        got_family, prefixlen, _, _, index = IFADDRMSG.unpack_from(body)
        attrs = _attributes(body, IFADDRMSG.size)
        local, broadcast = _ip(attrs.get(IFA_LOCAL)), _ip(attrs.get(IFA_BROADCAST))
        address = _ip(attrs.get(IFA_ADDRESS)) or local
        if address is not None:
            found.append(Address(index, got_family, prefixlen, address, local, broadcast))
    return found


def neighbours(family: int = socket.AF_INET) -> list[Neighbour]:
    found = []
    for body in _dump(RTM_GETNEIGH, family, NDMSG.size):
        _, index, state, _, _ = NDMSG.unpack_from(body)
        attrs = _attributes(body, NDMSG.size)
        lladdr, info = attrs.get(NDA_LLADDR), attrs.get(NDA_CACHEINFO, b"")
        age = min(NDA_CACHEINFO_FIELDS.unpack_from(info)) if len(info) >= NDA_CACHEINFO_FIELDS.size else None
        found.append(Neighbour(index, state, _ip(attrs.get(NDA_DST)), lladdr.hex(":") if lladdr else None, age))
    return found


def routes(family: int = socket.AF_INET) -> list[Route]:
    """Routes of every table (as `ip route show table all`)."""
    found = []
    for body in _dump(RTM_GETROUTE, family, RTMSG.size):
        got_family, dst_len, _, _, table, *_ = RTMSG.unpack_from(body)
        oif = _attributes(body, RTMSG.size).get(RTA_OIF, b"")
        found.append(Route(got_family, dst_len, table, struct.unpack("=I", oif)[0] if len(oif) == 4 else None))
    return found


def _ip(data: bytes | None) -> str | None:
    return str(ipaddress.ip_address(data)) if data is not None and len(data) in (4, 16) else None


def _dump(request: int, family: int, header_size: int) -> Iterator[bytes]:
    """The bodies of one dump's messages (each at least `header_size` bytes), read to NLMSG_DONE."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        seq = 1
        # Every RTM_GET* dump request accepts a struct rtgenmsg (the family byte, padded to 4).
        payload = struct.pack("=Bxxx", family)
        sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(payload), request, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                  + payload)
        for _ in range(MAX_DUMP_PARTS):
            data = sock.recv(DUMP_BUFFER)
            offset = 0
            while offset + NLMSG_HEADER.size <= len(data):
                length, kind, _, got_seq, _ = NLMSG_HEADER.unpack_from(data, offset)
                if length < NLMSG_HEADER.size or offset + length > len(data):
                    raise OSError(f"rtnetlink: truncated message in the kernel's dump ({length} bytes)")
                body = data[offset + NLMSG_HEADER.size:offset + length]
                offset += (length + 3) & ~3
                if got_seq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
                    if code:
                        raise OSError(code, f"rtnetlink dump {request}: the kernel refused")
                    continue
                if len(body) >= header_size:
                    yield body
        raise OSError(f"rtnetlink dump {request}: no end after {MAX_DUMP_PARTS} parts")


def _attributes(body: bytes, offset: int) -> dict[int, bytes]:
    """Top-level rtattrs from `offset` on: type (without the nested/byte-order flags) -> payload; first wins."""
    found: dict[int, bytes] = {}
    offset = (offset + 3) & ~3
    while offset + RTATTR_HEADER.size <= len(body):
        length, kind = RTATTR_HEADER.unpack_from(body, offset)
        if length < RTATTR_HEADER.size or offset + length > len(body):
            break
        found.setdefault(kind & 0x3FFF, body[offset + RTATTR_HEADER.size:offset + length])
        offset += (length + 3) & ~3
    return found


class ChangeWatch:
    """Runs `on_change` `settle` seconds after the first of a burst of notifications."""

    def __init__(self, groups: int, on_change: Callable[[], Awaitable[None]], settle: float,
                 counters: Counter[str], name: str) -> None:
        self.groups = groups
        self.on_change = on_change
        self.settle = settle
        self.counters = counters
        self.name = name
        self._sock: socket.socket | None = None
        self._pending: asyncio.Task[None] | None = None
        self._calling = False  # on_change is re-reading: a notification now may come after its read
        self._again = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        sock.bind((0, self.groups))
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_readable)
        self._sock = sock

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: notifications were lost; the re-read catches up anyway
                self.counters[f"{self.name}_event_errors"] += 1
                break
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._settle_and_call())
        elif self._calling:
            self._again = True

    async def _settle_and_call(self) -> None:
        # A change notified while on_change runs may have missed its dump (a device that arrived
        # mid-read stayed unknown until the next change): one more round after it, then.
        again = True
        while again:
            await asyncio.sleep(self.settle)
            self._calling, self._again = True, False
            try:
                await self.on_change()
            finally:
                self._calling = False
            again, self._again = self._again, False
