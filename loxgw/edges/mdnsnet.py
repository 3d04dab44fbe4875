"""Adapter: the reflector's sockets and the zone interfaces; datagrams in and out, no decisions.

Three UDP sockets, each bound to 0.0.0.0 and told per datagram where it
came from (IP_PKTINFO: the ingress interface; IP_RECVTOS: loxgw's mark):
- "mdns": port 5353, member of 224.0.0.251 on every zone interface;
- "ssdp": port 1900, member of 239.255.255.250 on every zone interface;
- "ssdp-proxy": a port of its own, from which searches go on and answers
  come back (core.reflectssdp).
The well-known ports are shared (SO_REUSEADDR and SO_REUSEPORT) with any
other responder on the router (umdns, avahi, miniupnpd); each socket gets
every multicast datagram. IP_MULTICAST_ALL off: only the groups joined here,
on the interfaces joined. IP_MULTICAST_LOOP off: no copy of our own sends.
Every send carries DSCP 5 (IP_TOS) and leaves by the interface the core
names (IP_PKTINFO on sendmsg selects the interface and the source address);
mDNS with IP TTL 255 (RFC 6762 section 11), SSDP with TTL 2 (UPnP Device
Architecture 1.1). Interfaces are re-read from rtnetlink after link and
address changes, as the relay does (edges.rtnl).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address

from loxgw.core.reflect import COPY_TOS, ReflectInterface, Transmit
from loxgw.edges import multicast, rtnl
from loxgw.edges.multicast import ANCILLARY

log = logging.getLogger("loxgw")

IFF_UP = 1
MDNS_PORT, SSDP_PORT = 5353, 1900
GROUPS = {"mdns": "224.0.0.251", "ssdp": "239.255.255.250"}
TTL = {"mdns": 255, "ssdp": 2, "ssdp-proxy": 2}
BATCH = 64  # datagrams per wake-up and socket: one chatty segment cannot starve the loop
RECEIVE_SIZE = 9216  # above mDNS's 9000-byte maximum, so an oversized message shows as such
REFRESH_DEBOUNCE = 0.05

Receive = Callable[[str, int, IPv4Address, int, bytes, int], list[Transmit]]  # via, ifindex, src, sport, data, tos


def dump_interfaces(roles: dict[str, str]) -> tuple[list[ReflectInterface], list[IPv4Address]]:
    """The zone interfaces that are up with an IPv4 address (first address wins), and every own address."""
    up = {link.index: link.name for link in rtnl.links() if link.flags & IFF_UP}
    found: dict[int, ReflectInterface] = {}
    own = []
    for addr in rtnl.addresses(socket.AF_INET):
        iface = ipaddress.IPv4Interface(f"{addr.local or addr.address}/{addr.prefixlen}")
        own.append(iface.ip)
        name = up.get(addr.index)
        if name is not None and name in roles and addr.index not in found:
            found[addr.index] = ReflectInterface(name, addr.index, iface.ip, iface.network, roles[name])
    return sorted(found.values(), key=lambda i: i.name), own



class ReflectorSockets:
    """The sockets of the reflector: reads datagrams into `receive`, sends what it returns, then `on_batch`."""

    def __init__(self, roles: dict[str, str], receive: Receive, on_batch: Callable[[], None],
                 on_interfaces: Callable[[list[ReflectInterface], list[IPv4Address]], None]) -> None:
        self.roles = roles
        self.receive = receive
        self.on_batch = on_batch
        self.on_interfaces = on_interfaces
        self.counters: Counter[str] = Counter()
        self.interfaces: dict[int, ReflectInterface] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sockets: dict[str, socket.socket] = {}
        self._watch = rtnl.ChangeWatch(rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR, self.refresh,
                                       REFRESH_DEBOUNCE, self.counters, "reflector_interface")

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the sockets and join the groups; OSError if the kernel refuses (the service reports it)."""
        self.loop = loop
        self._watch.start(loop)
        for via, port in (("mdns", MDNS_PORT), ("ssdp", SSDP_PORT), ("ssdp-proxy", 0)):
            sock = self._sockets[via] = multicast.open_socket(port, TTL[via], COPY_TOS)
            loop.add_reader(sock.fileno(), self._on_readable, via, sock)
        self._apply(*await asyncio.to_thread(dump_interfaces, self.roles))

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watch.close(loop)
        for sock in self._sockets.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        self.interfaces = {}

    async def refresh(self) -> None:
        """Re-read the interfaces (in a thread: netlink dumps block)."""
        try:
            found = await asyncio.to_thread(dump_interfaces, self.roles)
        except OSError as exc:
            self.counters["reflector_interface_errors"] += 1
            log.error("reflector: reading interfaces failed: %s", exc)
            return
        self._apply(*found)

    def _apply(self, interfaces: Iterable[ReflectInterface], own: list[IPv4Address]) -> None:
        chosen = {i.index: i for i in interfaces}
        for via, group in GROUPS.items():
            sock = self._sockets.get(via)
            if sock is None:
                continue
            for index in chosen.keys() - self.interfaces.keys():
                self._member(sock, socket.IP_ADD_MEMBERSHIP, group, chosen[index])
            for index in self.interfaces.keys() - chosen.keys():
                self._member(sock, socket.IP_DROP_MEMBERSHIP, group, self.interfaces[index])
        self.interfaces = chosen
        self.on_interfaces(list(chosen.values()), own)

    def _member(self, sock: socket.socket, option: int, group: str, iface: ReflectInterface) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_IP, option, multicast.membership(group, iface.index))
        except OSError as exc:  # already joined, or the interface went: nothing to undo
            self.counters["reflector_membership_errors"] += 1
            log.debug("reflector: group %s on %s: %s", group, iface.name, exc)

    def _on_readable(self, via: str, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                data, ancillary, _flags, addr = sock.recvmsg(RECEIVE_SIZE, ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.counters["reflector_receive_errors"] += 1
                log.debug("reflector receive failed: %s", exc)
                break
            ifindex, _, tos = multicast.received_on(ancillary)
            self.send(self.receive(via, ifindex, IPv4Address(addr[0]), addr[1], data, tos))
        self.on_batch()

    def send(self, transmits: Iterable[Transmit]) -> None:
        for t in transmits:
            sock = self._sockets.get(t.via)
            iface = self.interfaces.get(t.ifindex)
            try:
                if sock is None or (t.ifindex and iface is None):
                    raise BrokenPipeError
                if iface is None:
                    sock.sendto(t.payload, (str(t.dst), t.port))
                else:
                    sock.sendmsg([t.payload], multicast.leave_by(iface.index, iface.address), 0, (str(t.dst), t.port))
                self.counters[f"reflector_sent_{t.via}"] += 1
            except OSError as exc:  # a full queue drops the copy (counted); the loop never waits
                self.counters["reflector_send_errors"] += 1
                log.debug("reflector send via %s on %s failed: %s", t.via, t.ifindex, exc)
