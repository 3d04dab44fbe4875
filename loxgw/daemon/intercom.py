"""The intercom service: conntrack events in, media4 elements and UDP flow deletions out.

The table (core.intercom) decides; this service feeds it conntrack events
as the kernel sends them (a socket filter passes only IPv4 TCP to the
signalling ports), the intercoms of the inventory and the clients zones'
subnets (re-read when an address changes), and does what it hands out: a
pair that opens has its element sent at once; refreshes, shortenings and
expiries run on a timer the table sets.

Elements go out through a raw set writer of the service's own, from a thread
and in order: a send waits while the firewall's diff holds nftables'
transaction lock (tens of ms), which the event loop must not, and a
shortened element must never be overtaken by the refresh before it. (The
daemon's shared element queue skips rewrites within half a timeout, which
would drop exactly the refreshes and shortenings this service depends on.)
Deleting a closed pair's UDP conntrack entries and re-reading sessions (at
start, after lost events, when an intercom appears) block too: a second
thread runs them, one at a time. Both threads are started with the service:
a thread started later, from the loop, holds the loop until it runs (10-20 ms
measured while the other services' threads were busy).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from loxgw.core import intercom
from loxgw.core.config import Config
from loxgw.core.devices import Inventory
from loxgw.core.errors import KernelError, LoxgwError
from loxgw.core.firewall import MEDIA
from loxgw.daemon import logs
from loxgw.edges import clock

log = logging.getLogger("loxgw")

READ_BUDGET = 256  # events read per wake-up; the rest wait for the next turn of the loop
HOUSEKEEPING = 1.0  # seconds between looks at the inventory (an intercom that appears)
RESYNC_PAUSE = 2.0  # seconds at least between two re-reads of the sessions
MIN_DELAY = 0.01  # a timer never fires sooner: a failed write is not retried in a tight loop


def _conntrack() -> Any:
    from loxgw.edges import conntrack

    return conntrack


@dataclass
class IntercomPorts:
    """The kernel side, injectable for tests: conntrack events, dumps, deletes, address changes."""

    open_events: Callable[[Iterable[int]], Any] = lambda ports: _conntrack().EventSocket(ports)
    dump_tcp: Callable[[int], list[Any]] = lambda port: _conntrack().dump(_conntrack().TCP, dport=port)
    delete_udp: Callable[[ipaddress.IPv4Address, ipaddress.IPv4Address], int] = (
        lambda a, b: _conntrack().delete_between(_conntrack().UDP, a, b))
    watch_addresses: Callable[[Callable[[], Any], Counter[str]], Any] = (
        lambda on_change, counters: _watch_addresses(on_change, counters))


def _watch_addresses(on_change: Callable[[], Any], counters: Counter[str]) -> Any:
    """rtnetlink address events: the clients zones' subnets are read again after a change."""
    from loxgw.edges import rtnl

    watch = rtnl.ChangeWatch(rtnl.RTMGRP_IPV4_IFADDR, on_change, 0.2, counters, "intercom_address")
    watch.start(asyncio.get_running_loop())
    return watch


def _open_sessions(dump_tcp: Callable[[int], list[Any]], ports: Iterable[int]) -> list[tuple[intercom.Session, Any]]:
    """The TCP sessions to the signalling ports conntrack holds now (blocking)."""
    return [((c.src, c.sport, c.dst, c.dport), c.tcp_state) for port in sorted(ports) for c in dump_tcp(port)]


@dataclass
class _Work:
    """Blocking jobs waiting for the worker thread."""

    flush: set[intercom.Pair] = field(default_factory=set)
    resync: bool = False
    hold_resync: bool = True  # until read_open_sessions: not during start-up
    networks: bool = False


class IntercomService:
    """Opens UDP between an App host and an Intercom while a signalling session between them lives."""

    def __init__(self, config: Config, open_writer: Callable[[], Any], inventory: Inventory,
                 interface_networks: Callable[[tuple[str, ...]], list[Any]], listen: bool = True,
                 ports: IntercomPorts | None = None, now: Callable[[], float] = clock.now) -> None:
        self.config = config
        self.now = now
        self.open_writer = open_writer
        self.inventory = inventory
        self.interface_networks = interface_networks
        self.listen = listen
        self.ports = ports or IntercomPorts()
        self.table = intercom.MediaTable()
        self.counters: Counter[str] = Counter()
        self.last_error: str | None = None
        self.writer: Any = None
        self.events: Any = None
        self._watch: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._threads: dict[str, ThreadPoolExecutor] = {}  # "send" (elements), "work" (the rest)
        self._work = _Work()
        self._pending: dict[intercom.Pair, int] = {}  # elements to send, in the order asked
        self._sending: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._last_resync = -RESYNC_PAUSE

    # --- lifecycle ---------------------------------------------------------------

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Subscribe to conntrack events and read the clients zones' subnets (open sessions: read_open_sessions)."""
        self._loop = loop
        if not self.listen:
            return
        try:
            self.events = self.ports.open_events(self.table.all_ports)
        except OSError as exc:
            self.last_error = f"conntrack events: {exc}"
            log.warning("intercom media: no conntrack events (%s); App <-> Intercom UDP stays closed", exc)
            return
        self._threads = {name: ThreadPoolExecutor(1, f"loxgw-intercom-{name}") for name in ("send", "work")}
        await self._in("work", lambda: None)  # started now, not later from the loop
        try:
            await self._in("send", self._open_writer)
        except (OSError, LoxgwError) as exc:
            self.counters["intercom_write_errors"] += 1
            logs.log_failure(log, "opening the intercom media set writer", exc)
        loop.add_reader(self.events.fileno(), self._on_readable)
        self._watch = self.ports.watch_addresses(self._addresses_changed, self.counters)
        self._housekeeper = loop.create_task(self._housekeeping())
        self._work.networks = True
        self._kick()

    def read_open_sessions(self) -> None:
        """Read the sessions open before loxgw started, once it is ready (see Daemon.run); new ones are events."""
        if self.events is not None:  # listening
            self._work.hold_resync, self._work.resync = False, True
            self._kick()

    def _open_writer(self) -> None:
        if self.writer is None:
            self.writer = self.open_writer()
        # Where a later add moves an element's expiry, the element of an ended pair is shortened.
        self.table.can_shorten = getattr(self.writer, "refresh", "none") in ("expiration", "replace")

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in (self._housekeeper, self._sending, self._worker):
            if task is not None:
                task.cancel()
        self._housekeeper = self._sending = self._worker = None
        if self.events is not None:
            loop.remove_reader(self.events.fileno())
            self.events.close()
            self.events = None
        if self._watch is not None:
            self._watch.close(loop)
            self._watch = None
        threads, self._threads = self._threads, {}
        if "work" in threads:  # a dump may take seconds: not waited for
            threads["work"].shutdown(wait=False, cancel_futures=True)
        if "send" in threads:  # a send takes a millisecond: the writer is closed after it
            threads["send"].shutdown(wait=True, cancel_futures=True)
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def _in(self, thread: str, call: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking call in one of the service's threads (the loop's pool before start)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads.get(thread), call, *args)

    def reconfigure(self, config: Config) -> None:
        """A new config: the clients zones' subnets are read again."""
        self.config = config
        if self.events is not None:
            self._work.networks = True
            self._kick()

    # --- events --------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            conns, lost = self.events.read(READ_BUDGET)
        except OSError as exc:
            self.counters["intercom_event_errors"] += 1
            logs.log_failure(log, "reading conntrack events", exc)
            return
        now = self.now()
        opened = False
        for conn in conns:
            self.counters["intercom_events"] += 1
            opened = self.table.observe((conn.src, conn.sport, conn.dst, conn.dport), conn.tcp_state,
                                        conn.kind == "destroy", now) or opened
        if lost:  # the buffer overflowed: an end may be among the lost events
            self.counters["intercom_events_lost"] += 1
            self._work.resync = True
            self._kick()
        if opened:
            self._write(now)
        self._arm()

    async def _addresses_changed(self) -> None:
        self._work.networks = True
        self._kick()

    async def _housekeeping(self) -> None:
        while True:
            now = self.now()
            devices = [(d.ip, d.product) for d in self.inventory.devices()
                       if d.ip is not None and d.product in intercom.INTERCOM_PRODUCTS]
            if self.table.set_intercoms(devices, now) or self.table.needs_recheck(now):
                self._work.resync = True  # sessions opened before loxgw knew the intercom
                self._kick()
            self._arm()
            await asyncio.sleep(HOUSEKEEPING)

    # --- what the table hands out ---------------------------------------------------------

    def _write(self, now: float) -> None:
        """Hand every element due now (new pairs, refreshes, shortenings) to the sender."""
        due = self.table.to_write(now)
        if not due or self._loop is None:
            return
        self.table.written(due, now)  # asked for: not handed out again while the send is under way
        self._pending.update(due)
        if self._sending is None or self._sending.done():
            self._sending = self._loop.create_task(self._send())

    async def _send(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            elements = [(MEDIA, intercom.element_key(pair), timeout) for pair, timeout in batch.items()]
            try:
                await self._in("send", self._send_batch, elements)
            except (OSError, LoxgwError) as exc:
                self.counters["intercom_write_errors"] += 1
                logs.log_failure(log, "writing intercom media elements", exc)
                # What the kernel holds is unknown: its element may live a full timeout, so no
                # flush before that; a live pair is written again a refresh from now.
                self.table.sent([(pair, intercom.ELEMENT_TIMEOUT) for pair in batch], self.now())
                continue
            self.counters["intercom_elements_written"] += len(elements)
            self.table.sent(batch.items(), self.now())  # the kernel counts the timeout from here
        self._arm()

    def _send_batch(self, elements: list[tuple[str, bytes, int]]) -> None:
        self._open_writer()
        self.writer.add_elements(elements)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.now()
        self._write(now)
        if not self._pending and (self._sending is None or self._sending.done()):
            # Never while a send is under way: its pair's element may not have run out yet.
            flush = self.table.to_flush(now)
            if flush:
                self._work.flush.update(flush)
                self._kick()
        self._arm()

    def _arm(self) -> None:
        if self._loop is None:
            return
        deadline = self.table.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_later(max(deadline - self.now(), MIN_DELAY), self._on_timer)

    # --- blocking work, in a thread ------------------------------------------------------

    def _kick(self) -> None:
        if self._loop is not None and (self._worker is None or self._worker.done()):
            self._worker = self._loop.create_task(self._run_work())

    async def _run_work(self) -> None:
        while self._work.networks or self._work.flush or (self._work.resync and not self._work.hold_resync):
            if self._work.networks:
                self._work.networks = False
                await self._read_networks()
            elif self._work.flush:
                pairs, self._work.flush = self._work.flush, set()
                await self._flush(pairs)
            elif self._work.resync and not self._work.hold_resync:
                wait = self._last_resync + RESYNC_PAUSE - self.now()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._work.resync = False
                await self._resync()

    async def _read_networks(self) -> None:
        names = self.config.interfaces_with_role("clients")
        try:
            networks = await self._in("work", self.interface_networks, names) if names else []
        except OSError as exc:
            logs.log_failure(log, "reading the clients zones' addresses", exc)
            return
        if self.table.set_clients(networks, self.now()):
            self._work.resync = True  # hosts now in a clients zone may have sessions open
        self._arm()

    async def _flush(self, pairs: set[intercom.Pair]) -> None:
        for app, ic in sorted(pairs):
            try:
                deleted = await self._in("work", self.ports.delete_udp, app, ic)
            except (KernelError, OSError) as exc:
                self.counters["intercom_flush_errors"] += 1
                logs.log_failure(log, "deleting closed intercom media flows", exc)
                continue
            self.counters["intercom_windows_closed"] += 1
            self.counters["intercom_flows_deleted"] += deleted

    async def _resync(self) -> None:
        started = self.now()
        self._last_resync = started
        try:
            found = await self._in("work", _open_sessions, self.ports.dump_tcp, self.table.all_ports)
        except (KernelError, OSError) as exc:
            self.counters["intercom_resync_errors"] += 1
            logs.log_failure(log, "reading open intercom sessions", exc)
            return
        self.counters["intercom_resyncs"] += 1
        now = self.now()
        if self.table.resync(found, started, now):
            self._write(now)
        self._arm()

    # --- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Live and closing pairs, and what happened to them."""
        refresh = getattr(self.writer, "refresh", None)
        return {"listening": self.events is not None, "element_timeout": intercom.ELEMENT_TIMEOUT,
                "refresh": refresh, **self.table.status(self.now()),
                "counters": dict(self.counters + self.table.counters), "last_error": self.last_error}

