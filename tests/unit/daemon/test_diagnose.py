"""The diagnose service with its samples and networks injected: table, status, explain, doctor."""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from loxgw.core.blocked import GrantSeen, Listed, parse_sample
from loxgw.core.catalog import PortRange
from loxgw.core.config import load_config, parse_config
from loxgw.core.dns import Grant, Profile
from loxgw.core.firewall import BLOCKED_PREFIX
from loxgw.daemon import app as daemon
from loxgw.daemon.diagnose import DiagnoseService, relay_coverage
from loxgw.daemon.grantsync import FEW_DEVICES
from loxgw.edges import clock

CONFIG = """
config loxgw 'main'
\toption firewall 'standalone'
\toption status_socket '{sock}'

config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'
\toption cloud '1'

config zone 'lan'
\toption role 'clients'
\tlist interface 'br-lan'

config device 'living'
\toption type 'miniserver'
\toption mac '50:4f:94:a0:00:01'
\toption ip '192.168.20.10'
\toption name 'ms'
"""
NETWORKS = {"br-iot": (ipaddress.ip_network("192.168.20.0/24"),),
            "br-lan": (ipaddress.ip_network("192.168.10.0/24"),)}
MS = ipaddress.ip_address("192.168.20.10")
WEATHER = Profile("tcp", (PortRange(6066, 6066),))
OUT = BLOCKED_PREFIX["from_devices"]


def syn(src: str, dst: str, port: int) -> bytes:
    """An IPv4 TCP SYN header (checksums left zero: nobody reads them)."""
    ip = bytes.fromhex("45000028000040004006" "0000") + socket.inet_aton(src) + socket.inet_aton(dst)
    return ip + (40000).to_bytes(2, "big") + port.to_bytes(2, "big") + bytes(16)


class FakeLog:
    """edges.nflog.CopyLog as the service uses it: copies handed in by the test."""

    def __init__(self) -> None:
        self.pair = socket.socketpair()
        self.copies: list[tuple[str, bytes]] = []
        self.malformed = 0
        self.closed = False

    def fileno(self) -> int:
        return self.pair[0].fileno()

    def read(self) -> list[tuple[str, bytes]]:
        copies, self.copies = self.copies, []
        return copies

    def close(self) -> None:
        self.closed = True
        for sock in self.pair:
            sock.close()


def ports() -> daemon.KernelPorts:
    return daemon.KernelPorts(apply_script=lambda script: None, table_exists=lambda table: True,
                              fw4_present=lambda: False, choose_queue=lambda mode: "off",
                              watch_ruleset=lambda: None, detect=False, list_set_elements=lambda t, p: {},
                              probe_set_refresh=lambda: "expiration", lookup_network=lambda n: None,
                              open_xtables=lambda: None)  # type: ignore[arg-type, return-value]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[daemon.Daemon, DiagnoseService, FakeLog]:
    cfg = tmp_path / "loxgw"
    cfg.write_text(CONFIG.format(sock=tmp_path / "status.sock"))
    d = daemon.Daemon(load_config(str(cfg)), ports())
    asyncio.run(d.apply())
    fake = FakeLog()
    d.diagnose = DiagnoseService(d, open_log=lambda group: fake, read_networks=lambda names: NETWORKS)
    d.status.handlers.update(d.diagnose.handlers())
    return d, d.diagnose, fake


def test_samples_become_explained_rows(setup: tuple[daemon.Daemon, DiagnoseService, FakeLog]) -> None:
    d, service, fake = setup
    now = clock.now()
    d.dns.ledger.record([Grant(MS, ipaddress.ip_address("203.0.113.12"), WEATHER, 600, "weather.loxone.com")], now)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        service.start(loop)
        await service._read_networks()
        fake.copies = [(OUT, syn("192.168.20.10", "203.0.113.12", 443)),
                       (OUT, syn("192.168.20.10", "203.0.113.99", 443)),
                       (OUT, syn("192.168.20.50", "203.0.113.99", 443)), (OUT, b"\x45garbage"),
                       (OUT, syn("192.168.20.10", "203.0.113.12", 443)),
                       (OUT, syn("192.168.20.10", "203.0.113.12", 6066))]  # raced its grant: allowed now
        service._on_readable()
        service.close(loop)

    asyncio.run(scenario())
    assert fake.closed is True
    status = service.status()
    assert (status["rows"], status["samples"], status["malformed"], status["group"], status["error"]) == (
        4, 5, 1, 7055, None)
    assert [(r["device_name"], r["dst"], r["port"], r["count"], r["reason"]) for r in status["recent"]] == [
        ("ms", "203.0.113.12", 6066, 1, "allowed_now"), ("ms", "203.0.113.12", 443, 2, "port_not_in_entry"),
        ("", "203.0.113.99", 443, 1, "not_loxone_device"), ("ms", "203.0.113.99", 443, 1, "never_resolved")]
    assert status["recent"][1]["why"] == \
        "`weather.loxone.com` resolved, but TCP 443 is not in its entry (catalogue: TCP 6066)"
    assert status["recent"][0]["why"].startswith("allowed now, not when sampled: `weather.loxone.com` resolved to ")


def test_explain_before_during_and_after_a_grant(setup: tuple[daemon.Daemon, DiagnoseService, FakeLog]) -> None:
    d, service, _ = setup
    service.networks = NETWORKS
    question = ["ms", "weather.loxone.com", "6066"]
    assert service.explain(question, 990.0)["explain"]["code"] == "never_resolved"
    d.dns.ledger.record([Grant(MS, ipaddress.ip_address("203.0.113.12"), WEATHER, 60, "weather.loxone.com")], 1000.0)
    answer = service.explain(question, 1010.0)["explain"]
    assert (answer["passes"], answer["why"], answer["device"], answer["device_name"], answer["flow"]) == (
        True, "`weather.loxone.com` resolved to 203.0.113.12 by this device: TCP 6066 open for 50 s more",
        "192.168.20.10", "ms", "TCP 6066")
    by_mac = service.explain(["50:4F:94:A0:00:01", "203.0.113.12", "443"], 1010.0)["explain"]
    assert (by_mac["code"], by_mac["address"]) == ("port_not_in_entry", "203.0.113.12")
    assert service.explain(["living", "weather.loxone.com", "6066"], 1100.0)["explain"]["why"] == (
        "`weather.loxone.com` resolved, but its grant expired 40 s ago (the device has not resolved it again)")
    phone = service.explain(["192.168.10.20", "ms", "443"], 1100.0)["explain"]
    assert (phone["passes"], phone["rule"], phone["entries"]) == (
        True, 'rule "loxgw: miniserver ports from clients zones"', ["ms-https"])


def test_bad_questions_get_an_error(setup: tuple[daemon.Daemon, DiagnoseService, FakeLog]) -> None:
    d, service, _ = setup
    assert service.explain(["nobody", "x.org", "1"], 0.0) == {
        "error": "no device 'nobody': give a device's name, MAC or address"}
    assert service.explain(["ms", "x.org", "http"], 0.0)["error"].startswith("not a PORT[/PROTO]")
    assert d.status.answer(b"explain ms\n") == {"error": "usage: explain DEVICE HOST PORT[/PROTO]"}
    assert service.handle(["bogus"]) == {"error": "unknown request"}


def doctor(d: daemon.Daemon) -> dict[str, Any]:
    """The status socket's answer to `doctor` (a coroutine: its grants are synced in a thread)."""
    async def ask() -> dict[str, Any]:
        answer = d.status.answer(b"doctor\n")
        assert inspect.isawaitable(answer)
        done: dict[str, Any] = (await answer)["doctor"]
        return done

    return asyncio.run(ask())


def test_doctor_over_the_status_socket(setup: tuple[daemon.Daemon, DiagnoseService, FakeLog]) -> None:
    d, service, _ = setup
    service.networks = NETWORKS
    answer = doctor(d)
    assert (answer["mode"], answer["installed"], answer["redirect_wanted"], answer["relay_missing"]) == (
        "standalone", True, True, True)
    [device] = answer["devices"]
    assert (device["name"], device["static"], device["seen"]) == ("ms", True, False)
    functions = {f["function"]: f["state"] for f in device["functions"]}
    assert (functions["App access"], functions["Weather"]) == ("open", "not seen")
    assert d.status.answer(b"explain ms 203.0.113.99 8443\n")["explain"]["entries"] == ["ms-mqtt", "ms-remcov3-mqtt"]
    # Words come percent-encoded (edges.diagnose): names with spaces and any character get through.
    d.devices.inventory.observe("dhcp", 0.0, mac="50:4f:94:a0:00:02", ip=ipaddress.IPv4Address("192.168.20.11"),
                                name="Living room")
    service.view(float("inf"))  # the view is rebuilt at least every few seconds; force it here
    assert d.status.answer(b"explain Living%20room 203.0.113.99 8443\n")["explain"]["device"] == "192.168.20.11"


def test_an_unavailable_group_is_reported_not_fatal(setup: tuple[daemon.Daemon, DiagnoseService, FakeLog]) -> None:
    d, _, _ = setup

    def refuse(group: int) -> None:
        raise OSError(1, "Operation not permitted")

    service = DiagnoseService(d, open_log=refuse, read_networks=lambda names: {})

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        service.start(loop)
        service.close(loop)

    asyncio.run(scenario())
    assert (service.status()["listening"], service.status()["error"]) == (
        False, "NFLOG group 7055: [Errno 1] Operation not permitted")


def test_relay_coverage() -> None:
    zones = ("config zone 'iot'\n\toption role 'devices'\n\tlist interface 'br-iot'\n"
             "config zone 'lan'\n\toption role 'clients'\n\tlist interface 'br-lan'\n")
    assert relay_coverage(parse_config(zones, "t")) == (True, False)
    relayed = zones + "config relay\n\tlist zone 'iot'\n\tlist zone 'lan'\n"
    assert relay_coverage(parse_config(relayed, "t")) == (False, True)
    assert relay_coverage(parse_config(zones.split("config zone 'lan'")[0], "t")) == (False, False)


def test_the_grant_memory_costs_nothing_until_a_question_and_then_only_the_devices_it_concerns(
        setup: tuple[daemon.Daemon, DiagnoseService, FakeLog]) -> None:
    """Thousands of expiring entries used to be mirrored whole every few seconds: most of the daemon's
    idle CPU (bench.router_class --dns-entries). Now a question syncs its devices alone."""
    d, service, _ = setup
    service.networks = NETWORKS
    weather = Grant(MS, ipaddress.ip_address("203.0.113.12"), WEATHER, 60, "weather.loxone.com")
    others = [Grant(ipaddress.ip_address(f"192.168.20.{n}"), ipaddress.ip_address("203.0.113.7"), WEATHER, 60,
                    "weather.loxone.com") for n in range(100, 200)]
    d.dns.ledger.record([weather, *others], 1000.0)
    service.grants.departures(1001.0)  # every tick: nothing dropped, nothing done
    assert len(service.memory) == 0
    assert service.explain(["ms", "weather.loxone.com", "6066"], 1010.0)["explain"]["passes"] is True
    assert len(service.memory) == 1  # the device asked about, not the hundred others
    # The ledger drops expired entries when it needs room; the memory is handed them at the next tick.
    d.dns.ledger._prune(2000.0)
    assert len(d.dns.ledger) == 0 and len(d.dns.ledger.departed) == 101
    service.grants.departures(2000.0)
    assert not d.dns.ledger.departed
    assert service.explain(["ms", "weather.loxone.com", "6066"], 2000.0)["explain"]["why"] == (
        "`weather.loxone.com` resolved, but its grant expired 940 s ago (the device has not resolved it again)")
    assert [g.until for g in service.memory.lookup(ipaddress.ip_address("192.168.20.150"), 2000.0)] == [1060.0]


def test_a_device_sync_waits_only_briefly_for_the_dns_lock_and_what_it_explained_then_is_explained_again(
        setup: tuple[daemon.Daemon, DiagnoseService, FakeLog]) -> None:
    d, service, _ = setup
    service.networks = NETWORKS
    d.dns.ledger.record([Grant(MS, ipaddress.ip_address("203.0.113.12"), WEATHER, 600, "weather.loxone.com")],
                        clock.now())
    held, release = threading.Event(), threading.Event()

    def dns_thread_busy() -> None:  # a batch of copies under the DNS lock
        with d.dns.lock:
            held.set()
            release.wait(5)

    busy = threading.Thread(target=dns_thread_busy)
    busy.start()
    held.wait(5)
    try:
        service.table.note(parse_sample(OUT, syn("192.168.20.10", "203.0.113.12", 6066)), clock.now())
        [row] = service.explained(service.table.recent(), clock.now())
        service.grants.departures(clock.now())
        assert service.explain(["ms", "203.0.113.12", "6066"], clock.now())["explain"]["grants_synced"] is False
    finally:
        release.set()
        busy.join()
    assert (service.grants.skipped, len(service.memory), row.verdict.code) == (2, 0, "never_resolved")
    assert service.explain(["ms", "203.0.113.12", "6066"], clock.now())["explain"]["grants_synced"] is True
    [row] = service.explained(service.table.recent(), clock.now())  # not kept: explained again, synced
    assert (row.verdict.code, len(service.memory)) == ("allowed_now", 1)


def test_many_devices_are_synced_from_one_copy_of_the_ledger(
        setup: tuple[daemon.Daemon, DiagnoseService, FakeLog]) -> None:
    d, service, _ = setup
    devices = [ipaddress.ip_address(f"192.168.20.{n}") for n in range(100, 100 + 2 * FEW_DEVICES)]
    d.dns.ledger.record([Grant(device, ipaddress.ip_address("203.0.113.7"), WEATHER, 60, "weather.loxone.com")
                         for device in devices], 1000.0)
    asked = set(devices[1:])  # more than FEW_DEVICES: the whole ledger is copied, filtered after
    assert service.grants.devices(asked, 1010.0) is True
    assert [len(service.memory.lookup(device, 1010.0)) for device in devices] == [0] + [1] * (len(devices) - 1)


def test_doctor_syncs_every_device_in_a_thread_while_the_loop_goes_on(
        setup: tuple[daemon.Daemon, DiagnoseService, FakeLog], monkeypatch: pytest.MonkeyPatch) -> None:
    d, service, _ = setup
    service.networks = NETWORKS
    now = clock.now()
    d.dns.ledger.record([Grant(MS, ipaddress.ip_address("203.0.113.12"), WEATHER, 600, "weather.loxone.com")], now)
    built_in: list[str] = []
    of = Listed.of

    def recorded(entries: Iterable[GrantSeen], at: float) -> Listed:
        built_in.append(threading.current_thread().name)
        return of(entries, at)

    monkeypatch.setattr(Listed, "of", staticmethod(recorded))
    ticks_while_held = []

    async def scenario() -> dict[str, Any]:
        with d.dns.lock:  # the DNS thread busy for longer than the loop may wait (LOCK_WAIT), not than doctor
            pending = asyncio.ensure_future(service.doctor(clock.now()))
            for _ in range(10):
                await asyncio.sleep(0.01)  # the loop goes on meanwhile
                ticks_while_held.append(pending.done())
        return await pending

    answer = asyncio.run(scenario())
    assert ticks_while_held == [False] * 10 and answer["grants_synced"] is True
    assert built_in and threading.main_thread().name not in built_in
    [device] = answer["devices"]
    assert {f["function"]: f["state"] for f in device["functions"]}["Weather"] == "working"


def test_a_copy_made_in_a_thread_never_undoes_a_later_sync(
        setup: tuple[daemon.Daemon, DiagnoseService, FakeLog]) -> None:
    d, service, _ = setup
    address = ipaddress.ip_address("203.0.113.12")
    sync = service.grants
    in_flight = sync._prepare({MS}, 1000.0, 1.0, started=clock.now())  # doctor's copy: nothing for MS yet
    d.dns.ledger.record([Grant(MS, address, WEATHER, 600, "weather.loxone.com")], 1001.0)
    assert sync.devices({MS}, 1002.0)  # explain, on the loop, sees the new grant
    assert sync._apply(in_flight)  # then doctor's older copy arrives
    assert [g.until for g in service.memory.lookup(MS, 1003.0, address)] == [1601.0]  # still live
