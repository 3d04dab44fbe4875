"""Adapter: the relay's sockets and the kernel's view of interfaces.

Receiving: one UDP socket per relayed port, bound to the wildcard address,
with IP_PKTINFO (ingress interface, header destination) and IP_RECVTOS (the
relay mark). Sending: one raw socket per egress interface (the copy keeps the
asker's source address, which only IP_HDRINCL allows), bound to the device.
Interfaces come from a pyroute2 dump in a worker thread, repeated whenever
the kernel announces a link, address or route change (rtnetlink multicast
groups), so interfaces that appear, go or change address are picked up
without polling: a periodic dump would hold the GIL for milliseconds and show
up in the relay's and the DNS path's p99.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterable

from pyroute2 import IPRoute

from loxgw.core import relay
from loxgw.core.relay import RateLimiter, Received, RelayInterface, RelayPolicy
from loxgw.edges import rtnl

log = logging.getLogger("loxgw")

IP_PKTINFO = 8
IP_RECVTOS = 13
IP_TOS = 1
SO_BINDTODEVICE = 25
REFRESH_DEBOUNCE = 0.05  # seconds: one dump for a burst of change events

AnswerSink = Callable[[list[tuple[ipaddress.IPv4Address, int]]], None]


def dump_interfaces(names: Iterable[str], roles: dict[str, str]) -> list[RelayInterface]:
    """The named interfaces that are up and have an IPv4 address (first address wins)."""
    wanted = set(names)
    with IPRoute() as ipr:
        links = {
            link["index"]: link.get_attr("IFLA_IFNAME")
            for link in ipr.get_links()
            if link.get_attr("IFLA_IFNAME") in wanted and link["flags"] & 1  # IFF_UP
        }
        upstream = {r.get_attr("RTA_OIF") for r in ipr.get_routes(family=socket.AF_INET)
                    if r["dst_len"] == 0}
        found: dict[int, RelayInterface] = {}
        for addr in ipr.get_addr(family=socket.AF_INET):
            index = addr["index"]
            if index not in links or index in found:
                continue
            iface = ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
            brd = addr.get_attr("IFA_BROADCAST")
            broadcast = ipaddress.IPv4Address(brd) if brd else iface.network.broadcast_address
            found[index] = RelayInterface(links[index], index, iface.ip, broadcast,
                                          index in upstream, roles.get(links[index], ""))
    return sorted(found.values(), key=lambda i: i.name)


def _ports(policy: RelayPolicy) -> list[int]:
    return sorted({p for r in policy.ports for p in range(r.first, r.last + 1)})


class RelaySockets:
    """Runs one relay: receive, decide (pure), send copies, report answers to allow."""

    def __init__(self, policy: RelayPolicy, limiter: RateLimiter, roles: dict[str, str],
                 allow_answers: AnswerSink, clock: Callable[[], float],
                 on_discovery_answer: Callable[[ipaddress.IPv4Address, bytes], None] | None = None) -> None:
        self.policy = policy
        self.limiter = limiter
        self.roles = roles
        self.allow_answers = allow_answers
        self.clock = clock
        # The relay owns UDP 7071 when it relays it; LoxLIVE answers to the router's
        # own searches arrive there too and are handed on.
        self.on_discovery_answer = on_discovery_answer
        self.interfaces: list[RelayInterface] = []
        self.receivers: list[socket.socket] = []
        self.senders: dict[tuple[str, int], socket.socket] = {}
        self.counters: Counter[str] = Counter()
        self.ledger = relay.CopyLedger()
        self.pending: dict[tuple[int, relay.CopyKey], asyncio.TimerHandle] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._watch = rtnl.ChangeWatch(rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV4_ROUTE,
                                       self._refresh_counted, REFRESH_DEBOUNCE, self.counters, "interface")

    # --- lifecycle -----------------------------------------------------------

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._watch.start(loop)
        await self.refresh()
        for port in _ports(self.policy):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind(("0.0.0.0", port))
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._on_readable, sock, port)
            self.receivers.append(sock)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watch.close(loop)
        for sock in self.receivers:
            loop.remove_reader(sock.fileno())
            sock.close()
        self.receivers.clear()
        for handle in self.pending.values():
            handle.cancel()
        self.pending.clear()
        for sock in self.senders.values():
            sock.close()
        self.senders.clear()

    async def refresh(self) -> None:
        """Re-read the interfaces from the kernel (in a thread: netlink dumps block)."""
        try:
            self.interfaces = await asyncio.to_thread(dump_interfaces, self.policy.interfaces, self.roles)
        except OSError as exc:
            self.counters["interface_refresh_errors"] += 1
            log.error("relay: reading interfaces failed: %s", exc)

    async def _refresh_counted(self) -> None:
        await self.refresh()
        self.counters["interface_refreshes"] += 1

    # --- packets -------------------------------------------------------------

    def _on_readable(self, sock: socket.socket, port: int) -> None:
        for _ in range(64):  # bounded per wake-up so one flood cannot starve the loop
            try:
                data, ancdata, flags, addr = sock.recvmsg(relay.MAX_RELAY_PAYLOAD + 1, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters["receive_errors"] += 1
                log.debug("relay receive failed: %s", exc)
                return
            self._handle(data, ancdata, flags, addr, port)

    def _handle(self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int,
                addr: tuple[str, int], port: int) -> None:
        ifindex, dst, tos = 0, ipaddress.IPv4Address(0), 0
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
                ifindex = struct.unpack_from("=i", value)[0]
                dst = ipaddress.IPv4Address(value[8:12])
            elif level == socket.IPPROTO_IP and kind == IP_TOS and value:
                tos = value[0]
        src = ipaddress.IPv4Address(addr[0])
        now = self.clock()
        if tos >> 2 == relay.RELAY_DSCP:
            self._on_marked(ifindex, relay.copy_key(src, addr[1], port, data), port, now)
            return
        if port == relay.ANSWER_PORT and self.on_discovery_answer is not None:
            self.on_discovery_answer(src, data)
        received = Received(ifindex, src, addr[1], dst, port, tos, data,
                            truncated=bool(flags & socket.MSG_TRUNC))
        decision = relay.decide(received, self.interfaces, self.policy, self.limiter, now)
        where = decision.ingress or str(ifindex)
        self.counters[f"{where}:{port}:received"] += 1
        if decision.dropped:
            self.counters[f"{where}:{port}:dropped_{decision.dropped}"] += 1
            return
        if decision.allow_answers:
            self.allow_answers(list(decision.allow_answers))
        key = relay.copy_key(src, addr[1], port, data)
        for copy in decision.copies:
            if self.ledger.peer_active(copy.out.index, now) and self.loop is not None:
                pending_key = (copy.out.index, key)
                if pending_key not in self.pending and len(self.pending) < relay.COPIES_KEPT:
                    self.pending[pending_key] = self.loop.call_later(
                        relay.holdoff(copy.out), self._send_deferred, pending_key, copy, port)
            else:
                self._send(copy, key, port)

    def _on_marked(self, ifindex: int, key: relay.CopyKey, port: int, now: float) -> None:
        """A relayed copy (ours looping back, or a peer relay's) arrived on `ifindex`."""
        names = {i.index: i.name for i in self.interfaces}
        where = names.get(ifindex, str(ifindex))
        if self.ledger.marked_arrival(ifindex, key, now) == "own":
            self.counters[f"{where}:{port}:own_copy_seen"] += 1
            return
        self.counters[f"{where}:{port}:peer_copy_seen"] += 1
        handle = self.pending.pop((ifindex, key), None)
        if handle is not None:
            handle.cancel()
            self.counters[f"{where}:{port}:left_to_peer"] += 1

    def _send_deferred(self, pending_key: tuple[int, relay.CopyKey], copy: relay.Copy, port: int) -> None:
        self.pending.pop(pending_key, None)
        self._send(copy, pending_key[1], port)

    def _send(self, copy: relay.Copy, key: relay.CopyKey, port: int) -> None:
        try:
            self.ledger.sent(copy.out.index, key, self.clock())
            self._sender(copy.out).sendto(copy.packet, (str(copy.out.broadcast), 0))
            self.counters[f"{copy.out.name}:{port}:relayed"] += 1
        except OSError as exc:
            self.counters[f"{copy.out.name}:{port}:send_errors"] += 1
            log.debug("relay send on %s failed: %s", copy.out.name, exc)

    def _sender(self, iface: RelayInterface) -> socket.socket:
        key = (iface.name, iface.index)
        sock = self.senders.get(key)
        if sock is None:
            for old in [k for k in self.senders if k[0] == iface.name]:
                self.senders.pop(old).close()
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, iface.name.encode())
            self.senders[key] = sock
        return sock
