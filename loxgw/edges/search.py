"""Adapter: the searches loxgw sends on the devices interfaces, and the sockets their answers reach.

Every probe_interval, on each interface: a LoxLIVE search (one 0x00 byte to
UDP 7070 as broadcast) from a socket per interface that stays open, because
a Miniserver answers to UDP 7071 but an Audioserver to the asker's source
port; and an SSDP M-SEARCH, whose answers are read for SSDP_WAIT by a task of
its own, so nothing that follows from an answer (a description fetch) can
delay the next search. Each search is recorded in `solicitations` before it
leaves. Datagrams go to the callbacks with the interface they arrived on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from loxgw.core import discovery, ssdp
from loxgw.core.devices import MAX_DISCOVERY_DATAGRAM

log = logging.getLogger("loxgw")

SEARCH_PORT = 7070
ANSWER_PORT = 7071
SO_BINDTODEVICE = 25
IP_PKTINFO = 8  # not exported by Python's socket module
SSDP_WAIT = 1.5  # seconds to collect answers (MX is 1)
MAX_SSDP_ANSWERS = 64  # answers read per SSDP search
READS_PER_WAKEUP = 64  # datagrams read per readable socket before the loop turns again

IPv4 = ipaddress.IPv4Address
OnDatagram = Callable[[IPv4, bytes, str | None], None]  # source, payload, interface it arrived on


class Searches:
    """Sends the searches and reads their answers; decides nothing about them."""

    def __init__(self, interfaces: tuple[str, ...], probe_interval: int, solicitations: discovery.Solicitations,
                 counters: Counter[str], on_loxlive: OnDatagram, on_ssdp: OnDatagram | None,
                 now: Callable[[], float], on_search: Callable[[str, int], None] | None = None) -> None:
        self.interfaces = interfaces
        self.on_search = on_search  # (interface, local port) after each search: answers may come back there
        self.probe_interval = probe_interval
        self.solicitations = solicitations
        self.counters = counters
        self.on_loxlive = on_loxlive
        self.on_ssdp = on_ssdp  # None: no SSDP searches
        self.now = now
        self._loop: asyncio.AbstractEventLoop | None = None
        self._answers: socket.socket | None = None
        self._search_sockets: dict[str, socket.socket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ssdp_running: set[str] = set()
        self._ifnames: dict[int, str] = {}

    def start(self, loop: asyncio.AbstractEventLoop, own_answer_socket: bool) -> None:
        """Probe from now on; `own_answer_socket`: also bind UDP 7071 (no other service reads it)."""
        self._loop = loop
        if not self.probe_interval:
            return
        if own_answer_socket:
            answers = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                answers.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                answers.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                answers.bind(("0.0.0.0", ANSWER_PORT))
                answers.setblocking(False)
            except OSError:
                answers.close()
                raise
            loop.add_reader(answers.fileno(), self._on_readable, answers, None)
            self._answers = answers
        self._spawn(self._probe_forever())

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for task in list(self._tasks):
            task.cancel()
        sockets = [*self._search_sockets.values(), *([self._answers] if self._answers is not None else [])]
        for sock in sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._search_sockets.clear()
        self._answers = None

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe_forever(self) -> None:
        while True:
            for ifname in self.interfaces:
                try:
                    self._search(ifname)
                    self.counters["loxlive_searches"] += 1
                except OSError as exc:
                    self.counters["loxlive_search_errors"] += 1
                    log.debug("LoxLIVE search on %s failed: %s", ifname, exc)
                    self._drop_search_socket(ifname)
                if self.on_ssdp is not None and ifname not in self._ssdp_running:
                    self._ssdp_running.add(ifname)
                    self._spawn(self._ssdp_search(ifname))
            await asyncio.sleep(self.probe_interval)

    def _search(self, ifname: str) -> None:
        """One LoxLIVE search out of `ifname`, from a socket that stays open for the answers."""
        sock = self._search_sockets.get(ifname)
        if sock is None:
            assert self._loop is not None
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
                sock.bind(("0.0.0.0", 0))
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            self._loop.add_reader(sock.fileno(), self._on_readable, sock, ifname)
            self._search_sockets[ifname] = sock
        self.solicitations.record(ifname, self.now())
        sock.sendto(b"\x00", ("255.255.255.255", SEARCH_PORT))
        if self.on_search is not None:
            self.on_search(ifname, sock.getsockname()[1])

    def _drop_search_socket(self, ifname: str) -> None:
        """After a send error (the interface went away, say): the next search opens a new socket."""
        sock = self._search_sockets.pop(ifname, None)
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    async def _ssdp_search(self, ifname: str) -> None:
        """M-SEARCH on one interface; answers go to on_ssdp as they arrive."""
        assert self.on_ssdp is not None
        loop = asyncio.get_running_loop()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
                sock.setblocking(False)
                self.solicitations.record(ifname, self.now())
                sock.sendto(ssdp.SEARCH, (ssdp.SSDP_GROUP, ssdp.SSDP_PORT))
                if self.on_search is not None:
                    self.on_search(ifname, sock.getsockname()[1])
                deadline = loop.time() + SSDP_WAIT
                for _ in range(MAX_SSDP_ANSWERS):
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, ssdp.MAX_ANSWER_BYTES + 1), left)
                    except TimeoutError:
                        break
                    self.on_ssdp(IPv4(addr[0]), data, ifname)
        except OSError as exc:
            self.counters["ssdp_search_errors"] += 1
            log.debug("SSDP search on %s failed: %s", ifname, exc)
        finally:
            self._ssdp_running.discard(ifname)

    def _on_readable(self, sock: socket.socket, segment: str | None) -> None:
        """Datagrams on a search socket (`segment`: its interface) or on UDP 7071 (segment from PKTINFO)."""
        for _ in range(READS_PER_WAKEUP):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(MAX_DISCOVERY_DATAGRAM, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters["answer_receive_errors"] += 1
                log.debug("discovery receive failed: %s", exc)
                return
            self.on_loxlive(IPv4(addr[0]), data, segment or self._ingress(ancdata))

    def _ingress(self, ancdata: list[tuple[int, int, bytes]]) -> str | None:
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 4:
                index = struct.unpack_from("=i", value)[0]
                if index not in self._ifnames:
                    try:
                        self._ifnames[index] = socket.if_indextoname(index)
                    except OSError:
                        return None
                return self._ifnames[index]
        return None
