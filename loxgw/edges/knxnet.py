"""Adapter: the KNX router's multicast socket and its interfaces; datagrams in and out, no decisions.

One UDP socket on port 3671, bound to 0.0.0.0 and shared (SO_REUSEADDR,
SO_REUSEPORT) with any KNX software on the router (knxd), member of
224.0.23.12 on each configured zone interface (the bridges), and told per
datagram where it came from (IP_PKTINFO: the ingress interface and the
header's destination; IP_RECVTOS: the relay mark). IP_MULTICAST_ALL off:
only the group joined here, on the interfaces joined. IP_MULTICAST_LOOP off:
no copy of our own sends. Every send carries DSCP 5 (IP_TOS) and the
configured TTL (IP_MULTICAST_TTL), and leaves by the interface the core
names, from this router's address there (IP_PKTINFO on sendmsg, which
overrides IP_MULTICAST_IF per datagram). Interfaces are re-read from
rtnetlink after link and address changes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address

from loxgw.core.knx import COPY_TOS, KNX_GROUP, KNX_PORT, Copy, KnxInterface
from loxgw.edges import multicast, rtnl
from loxgw.edges.multicast import ANCILLARY

log = logging.getLogger("loxgw")

IFF_UP = 1
BATCH = 64  # datagrams per wake-up: a chatty segment cannot starve the loop
RECEIVE_SIZE = 2048  # above the core's MAX_FRAME, so an oversized frame shows as such
REFRESH_DEBOUNCE = 0.05

Receive = Callable[[int, IPv4Address, IPv4Address, bytes, int], list[Copy]]  # ifindex, src, dst, data, tos


def dump_interfaces(names: Iterable[str]) -> tuple[list[KnxInterface], frozenset[IPv4Address]]:
    """The named interfaces that are up with an IPv4 address (first address wins), and every own address."""
    wanted = set(names)
    up = {link.index: link.name for link in rtnl.links() if link.flags & IFF_UP}
    found: dict[int, KnxInterface] = {}
    own = set()
    for addr in rtnl.addresses(socket.AF_INET):
        local = IPv4Address(addr.local or addr.address)
        own.add(local)
        name = up.get(addr.index)
        if name in wanted and addr.index not in found:
            found[addr.index] = KnxInterface(name, addr.index, local)
    return sorted(found.values(), key=lambda i: i.name), frozenset(own)



class KnxSockets:
    """The KNX router's socket: reads datagrams into `receive` and sends what it returns."""

    def __init__(self, names: tuple[str, ...], ttl: int, receive: Receive,
                 on_interfaces: Callable[[list[KnxInterface], frozenset[IPv4Address]], None]) -> None:
        self.names = names
        self.ttl = ttl
        self.receive = receive
        self.on_interfaces = on_interfaces
        self.counters: Counter[str] = Counter()
        self.interfaces: dict[int, KnxInterface] = {}
        self._sock: socket.socket | None = None
        self._watch = rtnl.ChangeWatch(rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR, self.refresh,
                                       REFRESH_DEBOUNCE, self.counters, "knx_interface")

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the socket and join the group; OSError if the kernel refuses (the service reports it)."""
        self._watch.start(loop)
        sock = self._sock = multicast.open_socket(KNX_PORT, self.ttl, COPY_TOS)
        loop.add_reader(sock.fileno(), self.drain)
        self._apply(*await asyncio.to_thread(dump_interfaces, self.names))

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watch.close(loop)
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self.interfaces = {}

    async def refresh(self) -> None:
        """Re-read the interfaces (in a thread: netlink dumps block)."""
        try:
            found = await asyncio.to_thread(dump_interfaces, self.names)
        except OSError as exc:
            self.counters["knx_interface_errors"] += 1
            log.error("knx: reading interfaces failed: %s", exc)
            return
        self._apply(*found)

    def _apply(self, interfaces: list[KnxInterface], own: frozenset[IPv4Address]) -> None:
        chosen = {i.index: i for i in interfaces}
        sock = self._sock
        if sock is not None:
            for index in chosen.keys() - self.interfaces.keys():
                self._member(sock, socket.IP_ADD_MEMBERSHIP, chosen[index])
            for index in self.interfaces.keys() - chosen.keys():
                self._member(sock, socket.IP_DROP_MEMBERSHIP, self.interfaces[index])
        self.interfaces = chosen
        self.on_interfaces(list(chosen.values()), own)

    def _member(self, sock: socket.socket, option: int, iface: KnxInterface) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_IP, option, multicast.membership(str(KNX_GROUP), iface.index))
        except OSError as exc:  # already joined, or the interface went: nothing to undo
            self.counters["knx_membership_errors"] += 1
            log.debug("knx: group on %s: %s", iface.name, exc)

    def drain(self) -> None:
        """Read what the socket holds (a batch at most) and send the copies the core hands back."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(BATCH):
            try:
                data, ancillary, _flags, addr = sock.recvmsg(RECEIVE_SIZE, ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.counters["knx_receive_errors"] += 1
                log.debug("knx receive failed: %s", exc)
                break
            ifindex, dst, tos = multicast.received_on(ancillary)
            self.send(self.receive(ifindex, IPv4Address(addr[0]), IPv4Address(dst), data, tos))

    def send(self, copies: Iterable[Copy]) -> None:
        sock = self._sock
        for copy in copies:
            iface = self.interfaces.get(copy.ifindex)
            try:
                if sock is None or iface is None:
                    raise BrokenPipeError
                sock.sendmsg([copy.payload], multicast.leave_by(iface.index, iface.address), 0,
                             (str(KNX_GROUP), KNX_PORT))
                self.counters["knx_sent"] += 1
            except OSError as exc:  # a full queue drops the copy (counted); the loop never waits
                self.counters["knx_send_errors"] += 1
                log.debug("knx send on %s failed: %s", copy.ifindex, exc)

