"""Adapters that feed the device inventory: neighbour table, DHCP leases, LoxLIVE searches.

The neighbour table is read with pyroute2 whenever the kernel announces a
neighbour change (rtnetlink group RTMGRP_NEIGH): live events, no polling.
The lease file is re-read when its modification time changes. LoxLIVE: a
search (one 0x00 byte to UDP 7070 as the subnet broadcast) goes out on each
devices-zone interface every probe_interval; Miniservers answer to UDP 7071.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable

from pyroute2 import IPRoute

from loxgw.core import ssdp
from loxgw.core.devices import parse_dhcp_leases
from loxgw.core.errors import RemoteDataError
from loxgw.edges import clock, rtnl

log = logging.getLogger("loxgw")

NUD_LIVE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE, STALE, DELAY, PROBE, PERMANENT
SETTLE = 0.05
SEARCH_PORT = 7070
ANSWER_PORT = 7071
SO_BINDTODEVICE = 25
SSDP_WAIT = 1.5  # seconds to collect answers (MX is 1)
MAX_SSDP_ANSWERS = 64
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

IPv4 = ipaddress.IPv4Address
Neighbours = list[tuple[str, IPv4]]


NeighbourEntry = tuple[str, IPv4, int]  # mac, ip, ticks since last confirmed/used/updated


def dump_neighbours(interfaces: Iterable[str]) -> list[NeighbourEntry]:
    """Live IPv4 neighbours on the named interfaces (all of them; see pick_current)."""
    names = set(interfaces)
    found: list[NeighbourEntry] = []
    with IPRoute() as ipr:
        indices = {link["index"] for link in ipr.get_links() if link.get_attr("IFLA_IFNAME") in names}
        for entry in ipr.get_neighbours(family=socket.AF_INET):
            mac, dst = entry.get_attr("NDA_LLADDR"), entry.get_attr("NDA_DST")
            if entry["ifindex"] not in indices or not entry["state"] & NUD_LIVE or not mac or not dst:
                continue
            info = entry.get_attr("NDA_CACHEINFO")
            age = min(info["ndm_confirmed"], info["ndm_used"], info["ndm_updated"]) if info else 1 << 31
            found.append((mac.lower(), IPv4(dst), age))
    return found


def pick_current(entries: list[NeighbourEntry], first_seen: dict[tuple[str, IPv4], float],
                 now: float) -> Neighbours:
    """One address per MAC: the one that appeared last, then the one most recently active.

    A device that changed its address leaves its old entry behind (STALE, for
    minutes), and a fresh entry starts with an old `confirmed` time, so the
    order in which loxgw first saw the entries decides. `first_seen` is
    updated in place and pruned to the live entries.
    """
    live = {(mac, ip) for mac, ip, _ in entries}
    for key in [k for k in first_seen if k not in live]:
        del first_seen[key]
    best: dict[str, tuple[float, int, IPv4]] = {}
    for mac, ip, age in entries:
        seen = first_seen.setdefault((mac, ip), now)
        rank = (seen, -age, ip)
        if mac not in best or rank[:2] > best[mac][:2]:
            best[mac] = rank
    return [(mac, ip) for mac, (_, _, ip) in sorted(best.items())]


class Detector:
    """Runs the detection sources and hands their findings to callbacks."""

    def __init__(self, interfaces: tuple[str, ...], leases_path: str, probe_interval: int,
                 on_neighbours: Callable[[Neighbours], None],
                 on_lease: Callable[[str, IPv4, str], None],
                 on_loxlive: Callable[[IPv4, bytes], None],
                 on_ssdp: Callable[[IPv4, ssdp.Description], None] | None = None) -> None:
        self.interfaces = interfaces
        self.leases_path = leases_path
        self.probe_interval = probe_interval
        self.on_neighbours = on_neighbours
        self.on_lease = on_lease
        self.on_loxlive = on_loxlive
        self.on_ssdp = on_ssdp
        self.counters: Counter[str] = Counter()
        self._watch = rtnl.ChangeWatch(rtnl.RTMGRP_NEIGH, self._refresh_neighbours, SETTLE, self.counters,
                                       "neighbour")
        self._answers: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lease_mtime: float | None = None
        self._first_seen: dict[tuple[str, IPv4], float] = {}

    async def start(self, loop: asyncio.AbstractEventLoop, own_answer_socket: bool) -> None:
        self._watch.start(loop)
        if own_answer_socket and self.probe_interval:
            answers = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            answers.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            answers.bind(("0.0.0.0", ANSWER_PORT))
            answers.setblocking(False)
            loop.add_reader(answers.fileno(), self._on_answer)
            self._answers = answers
        await self._refresh_neighbours()
        self._tasks.append(asyncio.create_task(self._watch_leases()))
        if self.probe_interval:
            self._tasks.append(asyncio.create_task(self._probe_forever()))

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for task in self._tasks:
            task.cancel()
        self._watch.close(loop)
        if self._answers is not None:
            loop.remove_reader(self._answers.fileno())
            self._answers.close()
            self._answers = None

    # --- neighbours ----------------------------------------------------------

    async def _refresh_neighbours(self) -> None:
        try:
            neighbours = await asyncio.to_thread(dump_neighbours, self.interfaces)
        except OSError as exc:
            self.counters["neighbour_dump_errors"] += 1
            log.error("reading the neighbour table failed: %s", exc)
            return
        self.counters["neighbour_dumps"] += 1
        self.on_neighbours(pick_current(neighbours, self._first_seen, clock.now()))

    # --- DHCP leases ---------------------------------------------------------

    async def _watch_leases(self) -> None:
        while True:
            try:
                mtime = os.stat(self.leases_path).st_mtime
            except OSError:
                mtime = None
            if mtime is not None and mtime != self._lease_mtime:
                self._lease_mtime = mtime
                try:
                    with open(self.leases_path, encoding="utf-8", errors="replace") as handle:
                        text = handle.read(1 << 20)
                    for mac, ip, name in parse_dhcp_leases(text):
                        self.on_lease(mac, ip, name)
                    self.counters["lease_reads"] += 1
                except OSError as exc:
                    log.debug("reading %s failed: %s", self.leases_path, exc)
            await asyncio.sleep(2.0)

    # --- LoxLIVE -------------------------------------------------------------

    async def _probe_forever(self) -> None:
        while True:
            for ifname in self.interfaces:
                try:
                    await asyncio.to_thread(self._search, ifname)
                    self.counters["loxlive_searches"] += 1
                except OSError as exc:
                    self.counters["loxlive_search_errors"] += 1
                    log.debug("LoxLIVE search on %s failed: %s", ifname, exc)
                if self.on_ssdp is not None:
                    try:
                        found = await asyncio.to_thread(self._ssdp_search, ifname)
                    except OSError as exc:
                        self.counters["ssdp_search_errors"] += 1
                        log.debug("SSDP search on %s failed: %s", ifname, exc)
                        continue
                    for src, description in found:
                        self.on_ssdp(src, description)
            await asyncio.sleep(self.probe_interval)

    def _ssdp_search(self, ifname: str) -> list[tuple[IPv4, ssdp.Description]]:
        """M-SEARCH on one interface, then each answerer's description (blocking: run in a thread)."""
        locations: dict[IPv4, str] = {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
            sock.sendto(ssdp.SEARCH, (ssdp.SSDP_GROUP, ssdp.SSDP_PORT))
            deadline = time.monotonic() + SSDP_WAIT
            while (left := deadline - time.monotonic()) > 0 and len(locations) < MAX_SSDP_ANSWERS:
                sock.settimeout(left)
                try:
                    data, addr = sock.recvfrom(ssdp.MAX_ANSWER_BYTES + 1)
                except TimeoutError:
                    break
                src = IPv4(addr[0])
                try:
                    locations.setdefault(src, ssdp.parse_answer(data, src))
                except RemoteDataError as exc:
                    self.counters[f"ssdp_bad_{exc.reason}"] += 1
        found = []
        for src, location in locations.items():
            try:
                # parse_answer allowed only http:// on the answering address; no proxy may intervene.
                with _DIRECT.open(location, timeout=2) as answer:
                    found.append((src, ssdp.parse_description(answer.read(ssdp.MAX_DESCRIPTION_BYTES + 1))))
                self.counters["ssdp_descriptions"] += 1
            except RemoteDataError as exc:
                self.counters[f"ssdp_bad_{exc.reason}"] += 1
            except (OSError, ValueError) as exc:
                self.counters["ssdp_fetch_errors"] += 1
                log.debug("SSDP description %s: %s", location, exc)
        return found

    def _search(self, ifname: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            sock.sendto(b"\x00", ("255.255.255.255", SEARCH_PORT))

    def _on_answer(self) -> None:
        assert self._answers is not None
        for _ in range(64):
            try:
                data, addr = self._answers.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.on_loxlive(IPv4(addr[0]), data)
