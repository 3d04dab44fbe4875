"""Adapters that feed the device inventory: neighbour table, DHCP leases, discovery answers.

The neighbour table is dumped (edges.rtnl) whenever the kernel announces a
neighbour change (rtnetlink group RTMGRP_NEIGH): live events, no polling.
The lease file is re-read when its modification time changes. Searches and
their sockets are edges.search's; the descriptions SSDP answers point at are
fetched by jobs of their own (edges.fetch: no redirects, one deadline), at
most one per host and MAX_FETCHES at once.

With `on_answer`, each answer goes out parsed, with the facts the core needs
to judge it (core.discovery.admit): was it solicited, on which segment, what
MAC the sender's neighbour entry holds. An answer from a host the neighbour
table does not know yet waits for the next table read (the device's own ARP
request for the router leaves its entry there just before its answer
arrives). Without `on_answer` the raw callbacks are called as before.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from typing import Any

from loxgw.core import discovery, ssdp
from loxgw.core.devices import parse_dhcp_leases, parse_loxlive
from loxgw.core.errors import RemoteDataError
from loxgw.core.relay import RateLimiter
from loxgw.edges import clock, fetch, rtnl, search

log = logging.getLogger("loxgw")

NUD_LIVE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE, STALE, DELAY, PROBE, PERMANENT
SETTLE = 0.01  # seconds: one neighbour dump for a burst of events (a device's appearance waits this long)
ANSWER_PORT = search.ANSWER_PORT
MAX_FETCHES = 4  # description fetches running at once
MAX_PENDING_FETCHES = 64  # hosts with a fetch running or waiting
MAX_PARKED = 64  # answers waiting for the neighbour table

IPv4 = ipaddress.IPv4Address
Neighbours = list[tuple[str, IPv4]]


NeighbourEntry = tuple[str, IPv4, int]  # mac, ip, ticks since last confirmed/used/updated


def dump_neighbours(interfaces: Iterable[str]) -> list[NeighbourEntry]:
    """Live IPv4 neighbours on the named interfaces (all of them; see pick_current)."""
    names = set(interfaces)
    found: list[NeighbourEntry] = []
    indices = {link.index for link in rtnl.links() if link.name in names}
    for entry in rtnl.neighbours(socket.AF_INET):
        mac, dst = entry.mac, entry.address
        if entry.index not in indices or not entry.state & NUD_LIVE or not mac or not dst:
            continue
        found.append((mac, IPv4(dst), entry.age if entry.age is not None else 1 << 31))
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
                 on_ssdp: Callable[[IPv4, ssdp.Description], None] | None = None, *,
                 on_answer: Callable[[discovery.Answer], None] | None = None,
                 solicitations: discovery.Solicitations | None = None,
                 limiter: RateLimiter | None = None,
                 refusals: Counter[str] | None = None,
                 get_description: Callable[[str], Awaitable[bytes]] = fetch.get_description,
                 dump: Callable[[Iterable[str]], list[NeighbourEntry]] = dump_neighbours,
                 now: Callable[[], float] = clock.now,
                 on_search: Callable[[str, int], None] | None = None) -> None:
        """`on_answer`: parsed answers with their evidence (replaces on_loxlive and on_ssdp);
        `solicitations`: shared with services that relay searches; `limiter`: per-source limits on
        discovery input; `refusals`: where rate-limited input is counted ("refused_rate_source", ...);
        `get_description`, `dump`, `now`: the fetch, the neighbour table and the clock (tests inject them)."""
        self.interfaces = interfaces
        self.leases_path = leases_path
        self.probe_interval = probe_interval
        self.on_neighbours = on_neighbours
        self.on_lease = on_lease
        self.on_loxlive = on_loxlive
        self.on_ssdp = on_ssdp
        self.on_answer = on_answer
        self.solicitations = solicitations if solicitations is not None else discovery.Solicitations()
        self.limiter = limiter if limiter is not None else discovery.answer_limiter()
        self.counters: Counter[str] = Counter()
        self.refusals = refusals if refusals is not None else self.counters
        self.get_description = get_description
        self.dump = dump
        self.now = now
        self._watch = rtnl.ChangeWatch(rtnl.RTMGRP_NEIGH, self._refresh_neighbours, SETTLE, self.counters,
                                       "neighbour")
        wants_ssdp = on_ssdp is not None or on_answer is not None
        self.searches = search.Searches(interfaces, probe_interval, self.solicitations, self.counters,
                                        self.on_discovery_answer, self.on_ssdp_answer if wants_ssdp else None, now,
                                        on_search)
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()  # description fetches, parked answers
        self._lease_mtime: float | None = None
        self._first_seen: dict[tuple[str, IPv4], float] = {}
        self._neighbour_macs: dict[IPv4, str] = {}
        self._parked: list[discovery.Answer] = []
        self._parked_job: asyncio.Task[None] | None = None
        self._fetching: set[IPv4] = set()
        self._fetch_slots = asyncio.Semaphore(MAX_FETCHES)

    async def start(self, loop: asyncio.AbstractEventLoop, own_answer_socket: bool) -> None:
        """Run every source; `own_answer_socket`: bind UDP 7071 (no relay reads it)."""
        self._watch.start(loop)
        self.searches.start(loop, own_answer_socket)
        await self._refresh_neighbours()
        self._tasks.append(asyncio.create_task(self._watch_leases()))

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for task in [*self._tasks, *self._jobs]:
            task.cancel()
        self._tasks.clear()
        self._watch.close(loop)
        self.searches.close(loop)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    # --- neighbours ----------------------------------------------------------

    async def _refresh_neighbours(self) -> None:
        try:
            neighbours = await asyncio.to_thread(self.dump, self.interfaces)
        except OSError as exc:
            self.counters["neighbour_dump_errors"] += 1
            log.error("reading the neighbour table failed: %s", exc)
            return
        self.counters["neighbour_dumps"] += 1
        self._neighbour_macs = {ip: mac for mac, ip, _ in neighbours}
        self.on_neighbours(pick_current(neighbours, self._first_seen, self.now()))

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

    # --- answers ---------------------------------------------------------------

    def on_ssdp_answer(self, src: IPv4, payload: bytes, segment: str | None = None) -> None:
        """An SSDP answer: its description is fetched by a job of its own, one per host at a time."""
        if not self._admit_input(src):
            return
        try:
            location = ssdp.parse_answer(payload, src)
        except RemoteDataError as exc:
            self.counters[f"ssdp_bad_{exc.reason}"] += 1
            return
        if src in self._fetching:
            self.counters["ssdp_fetch_busy"] += 1
            return
        if len(self._fetching) >= MAX_PENDING_FETCHES:
            self.counters["ssdp_fetch_skipped"] += 1
            return
        self._fetching.add(src)
        self._spawn(self._fetch(src, location, segment, self.solicitations.solicited(segment, self.now())))

    async def _fetch(self, src: IPv4, location: str, segment: str | None, solicited: bool) -> None:
        try:
            async with self._fetch_slots:
                body = await self.get_description(location)
            description = ssdp.parse_description(body)
        except RemoteDataError as exc:
            self.counters[f"ssdp_bad_{exc.reason}"] += 1
            return
        except OSError as exc:
            self.counters["ssdp_fetch_errors"] += 1
            log.debug("SSDP description %s: %s", location, exc)
            return
        finally:
            self._fetching.discard(src)
        self.counters["ssdp_descriptions"] += 1
        if self.on_answer is not None:
            self._deliver(discovery.Answer(src, description, solicited, segment=segment))
        elif self.on_ssdp is not None:
            self.on_ssdp(src, description)

    def on_discovery_answer(self, src: IPv4, payload: bytes, segment: str | None = None) -> None:
        """A LoxLIVE or Audioserver answer, from loxgw's sockets or handed on by another service.

        `segment`: the interface it arrived on; None if not known (then a
        search on any segment makes it solicited).
        """
        if not self._admit_input(src):
            return
        if self.on_answer is None:
            self.on_loxlive(src, payload)
            return
        try:
            record = parse_loxlive(payload, src)
        except RemoteDataError as exc:
            self.counters[f"loxlive_bad_{exc.reason}"] += 1
            return
        self.counters["loxlive_answers"] += 1
        self._deliver(discovery.Answer(src, record, self.solicitations.solicited(segment, self.now()),
                                       segment=segment))

    def _admit_input(self, src: IPv4) -> bool:
        refused = self.limiter.allow(src, self.now())
        if refused:
            self.refusals[f"refused_{refused}"] += 1
        return not refused

    def _deliver(self, answer: discovery.Answer) -> None:
        """Hand on an answer with its sender's neighbour MAC; wait for the table if the sender is new to it."""
        assert self.on_answer is not None
        mac = self._neighbour_macs.get(answer.src)
        if mac is not None or not answer.solicited:
            self.on_answer(replace(answer, neighbour_mac=mac))
            return
        if len(self._parked) >= MAX_PARKED:
            self.counters["answers_parked_overflow"] += 1
            return
        self._parked.append(answer)
        if self._parked_job is None:
            self._parked_job = self._spawn(self._deliver_parked())

    async def _deliver_parked(self) -> None:
        await asyncio.sleep(SETTLE)
        parked, self._parked, self._parked_job = self._parked, [], None
        await self._refresh_neighbours()
        assert self.on_answer is not None
        for answer in parked:
            self.on_answer(replace(answer, neighbour_mac=self._neighbour_macs.get(answer.src)))
