"""The intercom service with its kernel side replaced: events in, elements and flow deletions out."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Callable, Iterable
from typing import Any

from loxgw.core.config import parse_config
from loxgw.core.devices import Inventory
from loxgw.core.errors import KernelError
from loxgw.core.firewall import MEDIA
from loxgw.core.intercom import ELEMENT_TIMEOUT, END_TIMEOUT, FLUSH_MARGIN, REFRESH
from loxgw.daemon.intercom import IntercomPorts, IntercomService
from loxgw.edges.conntrack import Conn

IP = ipaddress.IPv4Address
APP, DOOR = IP("192.168.10.20"), IP("192.168.20.30")
KEY = APP.packed + DOOR.packed
CONFIG = f"""
config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'
config zone 'lan'
\toption role 'clients'
\tlist interface 'br-lan'
config device 'door'
\toption type 'intercom'
\toption ip '{DOOR}'
"""


def conn(kind: str, state: int | None, sport: int = 50000, dport: int = 80) -> Conn:
    return Conn(kind, 6, APP, sport, DOOR, dport, state, 1, 0)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Writer:
    refresh = "expiration"

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[tuple[str, bytes, int]]] = []
        self.fail = fail
        self.closed = False

    def add_elements(self, elements: Iterable[tuple[str, bytes, int]], drain: bool = True) -> int:
        if self.fail:
            raise KernelError("netlink set element batch", 2, "No such file or directory")
        self.batches.append(list(elements))
        return len(self.batches[-1])

    def close(self) -> None:
        self.closed = True


class Events:
    """Queued reports behind a pipe the loop can watch."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.queue: list[Conn] = []
        self.lost = False
        self.closed = False

    def push(self, *conns: Conn) -> None:
        self.queue += conns
        os.write(self.write_fd, b"x")

    def fileno(self) -> int:
        return self.read_fd

    def read(self, budget: int) -> tuple[list[Conn], bool]:
        os.read(self.read_fd, 4096) if self.queue else None
        found, self.queue = self.queue[:budget], self.queue[budget:]
        lost, self.lost = self.lost, False
        return found, lost

    def close(self) -> None:
        self.closed = True
        os.close(self.read_fd)
        os.close(self.write_fd)


class Watch:
    def __init__(self, on_change: Callable[[], Any], counters: object) -> None:
        self.on_change = on_change
        self.closed = False

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self.closed = True


def service(writer: Writer, events: Events | None = None, dumped: list[Conn] | None = None,
            deleted: list[tuple[IP, IP]] | None = None, listen: bool = True) -> tuple[IntercomService, Clock]:
    config = parse_config(CONFIG, "t")
    clock = Clock()
    inventory = Inventory(config.devices)
    deletions = deleted if deleted is not None else []

    def delete_udp(a: IP, b: IP) -> int:
        deletions.append((a, b))
        return 2

    def open_events(ports: Iterable[int]) -> Events:
        assert sorted(ports) == [80, 5060, 7091]
        if events is None:
            raise PermissionError(1, "Operation not permitted")
        return events

    ports = IntercomPorts(open_events=open_events, dump_tcp=lambda port: [c for c in dumped or [] if c.dport == port],
                          delete_udp=delete_udp, watch_addresses=Watch)
    svc = IntercomService(config, lambda: writer, inventory,
                          lambda names: [ipaddress.ip_network("192.168.10.0/24")] if names == ("br-lan",) else [],
                          listen=listen, ports=ports, now=clock)
    return svc, clock


def prepare(svc: IntercomService, clock: Clock) -> None:
    """What start's first look does: the inventory's intercoms and the clients zones' subnets."""
    svc.table.set_intercoms([(d.ip, d.product) for d in svc.inventory.devices()], clock())  # type: ignore[misc]
    svc.table.set_clients(svc.interface_networks(("br-lan",)), clock())
    svc._open_writer()


async def settle(svc: IntercomService) -> None:
    """Let the sender's thread finish what it was handed (no time passes for the table)."""
    while svc._sending is not None and not svc._sending.done():
        await asyncio.sleep(0.001)


def test_a_session_writes_its_element_at_once_refreshes_it_and_shortens_it_at_its_end() -> None:
    writer, events, deleted = Writer(), Events(), []  # type: ignore[var-annotated]
    svc, clock = service(writer, events, deleted=deleted)
    prepare(svc, clock)

    async def scenario() -> None:
        svc._loop = asyncio.get_running_loop()
        svc.events = events
        events.push(conn("new", 1), conn("update", 2), conn("update", 3))
        svc._on_readable()
        await settle(svc)
        assert writer.batches == [[(MEDIA, KEY, ELEMENT_TIMEOUT)]]
        clock.t += REFRESH
        svc._on_timer()
        await settle(svc)
        assert writer.batches[-1] == [(MEDIA, KEY, ELEMENT_TIMEOUT)]
        events.push(conn("update", 4))
        svc._on_readable()
        svc._on_timer()  # no flush while the shortened element is on its way
        await settle(svc)
        assert writer.batches[-1] == [(MEDIA, KEY, END_TIMEOUT)]
        clock.t += END_TIMEOUT + FLUSH_MARGIN
        svc._on_timer()
        assert svc.table.pairs == {}
        assert svc._worker is not None
        await svc._worker
        svc.close(svc._loop)

    asyncio.run(scenario())
    assert deleted == [(APP, DOOR)]
    status = svc.status()
    assert (status["counters"]["intercom_flows_deleted"], status["counters"]["intercom_windows_closed"]) == (2, 1)
    assert status["counters"]["intercom_elements_written"] == 3


def test_a_failed_write_is_counted_and_retried() -> None:
    writer = Writer(fail=True)
    svc, clock = service(writer, Events())
    prepare(svc, clock)

    async def scenario() -> None:
        svc._loop = asyncio.get_running_loop()
        svc.table.observe((APP, 1, DOOR, 7091), 3, False, clock())
        svc._on_timer()
        await settle(svc)
        assert svc.counters["intercom_write_errors"] == 1
        writer.fail = False
        clock.t += REFRESH  # due again once a refresh would be
        svc._on_timer()
        await settle(svc)
        svc.close(svc._loop)

    asyncio.run(scenario())
    assert writer.batches == [[(MEDIA, KEY, ELEMENT_TIMEOUT)]]


def test_start_reads_subnets_then_open_sessions_once_ready_then_follows_events() -> None:
    writer, events = Writer(), Events()
    svc, clock = service(writer, events, dumped=[conn("entry", 3, 41000, 7091), conn("entry", 3, 41001, 443)])

    async def scenario() -> list[list[tuple[str, bytes, int]]]:
        loop = asyncio.get_running_loop()
        await svc.start(loop)
        await asyncio.sleep(0.05)
        assert svc.counters["intercom_resyncs"] == 0  # not during start-up
        svc.read_open_sessions()  # the daemon is ready
        for _ in range(200):  # the worker thread reads subnets, then the dump
            if writer.batches:
                break
            await asyncio.sleep(0.005)
        assert svc.table.status(clock())["clients_networks"] == ["192.168.10.0/24"]
        assert list(svc.table.sessions) == [(APP, 41000, DOOR, 7091)]
        events.push(conn("update", 3, 41000, 7091), conn("destroy", 7, 41000, 7091))
        for _ in range(200):
            if len(writer.batches) > 1:
                break
            await asyncio.sleep(0.005)
        svc.close(loop)
        return writer.batches

    batches = asyncio.run(scenario())
    assert batches == [[(MEDIA, KEY, ELEMENT_TIMEOUT)], [(MEDIA, KEY, END_TIMEOUT)]]
    assert (events.closed, writer.closed, svc.counters["intercom_resyncs"]) == (True, True, 1)


def test_lost_events_ask_for_a_re_read() -> None:
    svc, clock = service(Writer(), Events())
    prepare(svc, clock)
    svc.events = svc.ports.open_events([80, 5060, 7091])
    svc.events.lost = True
    svc._on_readable()
    assert (svc.counters["intercom_events_lost"], svc._work.resync) == (1, True)
    svc.events.close()


def test_without_listening_or_conntrack_nothing_opens() -> None:
    async def scenario(svc: IntercomService) -> dict[str, Any]:
        await svc.start(asyncio.get_running_loop())
        svc.close(asyncio.get_running_loop())
        return svc.status()

    off, _ = service(Writer(), Events(), listen=False)
    assert asyncio.run(scenario(off))["listening"] is False
    refused, _ = service(Writer(), None)
    status = asyncio.run(scenario(refused))
    assert (status["listening"], status["last_error"]) == (False, "conntrack events: [Errno 1] Operation not permitted")
