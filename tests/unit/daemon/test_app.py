"""The daemon with its kernel side replaced by a recorder: apply, reload, restore, status."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loxgw.core import nftwatch, pinholes, ruleset
from loxgw.core.config import load_config
from loxgw.core.errors import KernelError, LoxgwError
from loxgw.daemon import app as daemon
from loxgw.daemon import boot, gcpause
from loxgw.edges import status

CONFIG = """
config loxgw 'main'
\toption firewall 'standalone'
\toption status_socket '{sock}'
\toption table '{table}'

config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'
"""


class FakeKernel:
    """Records scripts; holds the set of tables a real kernel would have."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.tables: set[str] = set()
        self.refuse: str | None = None

    def apply(self, script: str) -> None:
        if self.refuse and self.refuse in script:
            raise KernelError("nft -f", 22, "Invalid argument")
        self.scripts.append(script)
        for line in script.splitlines():
            words = line.split()
            if words[:3] == ["delete", "table", "inet"]:
                self.tables.discard(words[3])
            elif words[:2] == ["table", "inet"]:
                self.tables.add(words[2])

    def ports(self) -> daemon.KernelPorts:
        return daemon.KernelPorts(
            open_element_batches=None,
            apply_script=self.apply,
            table_exists=lambda table: table in self.tables,
            fw4_present=lambda: False,
            choose_queue=lambda mode: "off",
            watch_ruleset=lambda: None,
            detect=False,
            list_set_elements=lambda table, prefix: {},
            probe_set_refresh=lambda: "expiration",
            lookup_network=lambda network: None,
            open_xtables=lambda: None,  # type: ignore[arg-type, return-value]
        )


def write_config(path: Path, sock: Path, table: str = "loxgw") -> None:
    path.write_text(CONFIG.format(sock=sock, table=table))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, FakeKernel]:
    cfg, sock = tmp_path / "loxgw", tmp_path / "run" / "status.sock"
    write_config(cfg, sock)
    return cfg, sock, FakeKernel()


def test_resolve_firewall() -> None:
    assert daemon.resolve_firewall("auto", True) == "fw4"
    assert daemon.resolve_firewall("auto", False) == "standalone"
    assert daemon.resolve_firewall("fw4", False) == "fw4"


def test_apply_installs_rendered_ruleset(setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, _, kernel = setup
    config = load_config(str(cfg))
    d = daemon.Daemon(config, kernel.ports())
    asyncio.run(d.apply())
    devices = d.devices.inventory.devices()
    _, elements = pinholes.desired(config, devices)
    assert kernel.scripts == [ruleset.render(config, "standalone", elements=elements).script]
    assert kernel.tables == {"loxgw"}


def test_invalid_reload_keeps_running_config(setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, _, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    asyncio.run(d.apply())
    before = d.config
    cfg.write_text("config loxgw 'main'\n\toption firewall 'bogus'\n")
    asyncio.run(d.reload())
    assert d.config is before
    assert d.counters["reloads_rejected"] == 1
    assert len(kernel.scripts) == 1


def test_reload_with_new_table_moves_everything(setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, sock, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    asyncio.run(d.apply())
    write_config(cfg, sock, table="loxgw2")
    asyncio.run(d.reload())
    assert kernel.tables == {"loxgw2"}
    assert d.counters["reloads"] == 1


def test_reload_refused_by_kernel_restores_old(setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, sock, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    asyncio.run(d.apply())
    write_config(cfg, sock, table="loxgw2")
    kernel.refuse = "table inet loxgw2 {"
    asyncio.run(d.reload())
    assert d.config.main.table == "loxgw"
    assert kernel.tables == {"loxgw"}
    assert d.counters["reloads_failed"] == 1


def test_vanished_table_is_restored(setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, _, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    asyncio.run(d.apply())
    kernel.tables.clear()
    d.check_firewall()
    d.firewall._pass()  # what the worker thread does next
    assert kernel.tables == {"loxgw"}
    assert d.firewall.counters["restores"] == 1
    d.check_firewall()
    d.firewall._pass()
    assert d.firewall.counters["restores"] == 1


def test_a_deletion_elsewhere_checks_nothing_one_in_loxgws_table_or_mangle_checks_that_alone(
        setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, _, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    asyncio.run(d.apply())
    checked = lambda: (d.firewall.counters["table_checks"], d.firewall.counters["xtables_checks"])  # noqa: E731
    kernel.tables.clear()
    d.check_firewall({(nftwatch.NFPROTO_INET, "fw4"), (nftwatch.NFPROTO_NETDEV, "loxgw_relay")})
    d.firewall._pass()
    assert (checked(), kernel.tables, d.firewall.counters["restores"]) == ((0, 0), set(), 0)
    d.check_firewall({(nftwatch.NFPROTO_IPV4, "mangle")})
    d.firewall._pass()
    assert (checked(), kernel.tables) == ((0, 1), set())  # the table is not looked at
    d.check_firewall({(nftwatch.NFPROTO_INET, "loxgw")})
    d.firewall._pass()
    assert (checked(), kernel.tables, d.firewall.counters["restores"]) == ((1, 1), {"loxgw"}, 1)


def test_disabled_config_installs_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.write_text("config loxgw 'main'\n\toption enabled '0'\n")
    kernel = FakeKernel()
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    asyncio.run(d.apply())
    assert kernel.scripts == []


async def running(d: daemon.Daemon, sock: Path) -> asyncio.Task[int]:
    """The daemon's run() as a task, once its status socket is there (or after 2 s)."""
    task = asyncio.create_task(d.run())
    for _ in range(200):
        if sock.exists():
            break
        await asyncio.sleep(0.01)
    return task


def test_run_serves_status_and_cleans_up(setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, sock, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    gcpause.pause_start_up()  # as `loxgw run` does: no collection until the daemon runs

    async def scenario() -> dict[str, object]:
        task = await running(d, sock)
        snapshot = await asyncio.to_thread(status.query, str(sock))
        # doctor's handler is a coroutine (its grant sync waits in a thread): the socket awaits it
        doctor = await asyncio.to_thread(status.query, str(sock), line=b"doctor\n")
        assert isinstance(doctor["doctor"], dict) and doctor["doctor"]["grants_synced"] is True, doctor
        assert gc.isenabled()
        d.request_stop()
        assert await task == 0
        return snapshot

    try:
        snapshot = asyncio.run(scenario())
    finally:
        gcpause.start_up_done()
    assert (snapshot["firewall"], snapshot["table"], snapshot["installed"]) == (
        "standalone", "loxgw", True,
    )
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert not sock.exists()
    assert kernel.tables == set()


def test_a_request_still_being_answered_is_cancelled_before_any_service_closes(
        setup: tuple[Path, Path, FakeKernel]) -> None:
    """doctor's answer may wait in a thread: it must not resume in services already closed."""
    cfg, sock, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    seen: list[str] = []

    async def slow(words: list[str]) -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled" if d.devices._expiry is not None else "cancelled after devices closed")
            raise
        return {}

    async def scenario() -> int:
        task = await running(d, sock)
        d.status.handlers["slow"] = slow
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b"slow\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the request is being answered
        d.request_stop()
        code = await asyncio.wait_for(task, 10)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the client sees the connection closed
        writer.close()
        return code

    assert asyncio.run(scenario()) == 0
    assert seen == ["cancelled"]


def run_once(d: daemon.Daemon, sock: Path) -> None:
    async def scenario() -> None:
        task = await running(d, sock)
        d.request_stop()
        assert await task == 0

    asyncio.run(scenario())


def test_entries_are_adopted_only_from_a_table_an_earlier_run_left(setup: tuple[Path, Path, FakeKernel]) -> None:
    """A clean start has nothing to adopt: the listing (an `nft -j` run) is skipped; after a kill it is done."""
    cfg, sock, kernel = setup
    listed: list[tuple[str, str]] = []
    ports = kernel.ports()
    ports.list_set_elements = lambda table, prefix: listed.append((table, prefix)) or {}  # type: ignore[func-returns-value]
    run_once(daemon.Daemon(load_config(str(cfg)), ports), sock)
    assert (listed, kernel.tables) == ([], set())
    kernel.tables.add("loxgw")  # what a killed loxgw leaves
    run_once(daemon.Daemon(load_config(str(cfg)), ports), sock)
    assert (listed, kernel.tables) == ([("loxgw", "cloud")], set())


def test_a_table_that_cannot_be_asked_about_is_adopted_from(setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, sock, kernel = setup
    listed: list[str] = []
    ports = kernel.ports()
    ports.list_set_elements = lambda table, prefix: listed.append(table) or {}  # type: ignore[func-returns-value]

    def unknown(table: str) -> bool:
        raise KernelError("nft get table", 1, "Operation not permitted")

    ports.table_exists = unknown
    run_once(daemon.Daemon(load_config(str(cfg)), ports), sock)
    assert listed == ["loxgw"]


def beside_a_running_daemon(d: daemon.Daemon, sock: Path, attempt: Callable[[], object]) -> str:
    """Run `attempt` in a thread while `d` runs (once its socket is there): its error's text, or "done"."""
    async def scenario() -> str:
        task = asyncio.create_task(d.run())
        for _ in range(1000):
            if sock.exists():
                break
            await asyncio.sleep(0.01)
        try:
            await asyncio.to_thread(attempt)
            return "done"
        except LoxgwError as exc:
            return str(exc)
        finally:
            d.request_stop()
            await task

    return asyncio.run(scenario())


def test_second_instance_refuses_to_start(setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, sock, kernel = setup
    first = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    assert "already running" in beside_a_running_daemon(first, sock, lambda: daemon.prepare_socket_path(str(sock)))


def test_a_begun_boot_declares_before_the_daemon_exists_which_then_declares_nothing_again(
        setup: tuple[Path, Path, FakeKernel]) -> None:
    """`loxgw run` begins the first declaration, then imports the other services: they reuse it."""
    cfg, sock, kernel = setup
    first = boot.Boot(load_config(str(cfg)), kernel.ports())
    first.begin()
    assert first.declared is not None and first.probed is not None
    first.declared.result(timeout=5)
    assert (kernel.tables, first.firewall.counters["declares"], first.probed.result(timeout=5)) == \
        ({"loxgw"}, 1, "expiration")
    d = daemon.Daemon(first.config, boot=first)
    assert (d.firewall, d.dns, d.devices.inventory) == (first.firewall, first.dns, first.inventory)
    run_once(d, sock)
    assert (first.firewall.counters["declares"], kernel.tables) == (1, set())


def test_a_service_that_cannot_start_stops_the_daemon_and_nothing_stays_in_the_kernel(
        setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, sock, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())

    async def refused(loop: asyncio.AbstractEventLoop) -> None:
        raise KernelError("relay discovery: opening sockets", 98, "Address already in use")

    d.reflector.start = refused  # type: ignore[method-assign]  # after the declaration and the relay
    gcpause.pause_start_up()
    try:
        with pytest.raises(KernelError, match="Address already in use"):
            asyncio.run(d.run())
        assert gc.isenabled()  # a failed start-up collects again too
    finally:
        gcpause.start_up_done()
    assert (kernel.tables, sock.exists(), d.firewall.counters["declares"]) == (set(), False, 1)


def test_a_boot_begun_beside_a_running_instance_refuses_before_it_touches_the_kernel(
        setup: tuple[Path, Path, FakeKernel]) -> None:
    cfg, sock, kernel = setup
    running = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    second_kernel = FakeKernel()
    second = boot.Boot(load_config(str(cfg)), second_kernel.ports())
    assert "already running" in beside_a_running_daemon(running, sock, second.begin)
    assert second_kernel.scripts == []


def test_status_human_format_shows_zones() -> None:
    text = status.format_human(
        {"version": "x", "pid": 1, "uptime": 5, "config": "/c", "firewall": "standalone",
         "table": "loxgw", "dns_mode": "inline",
         "zones": [{"name": "iot", "role": "devices", "interfaces": ["br-iot"], "cloud": True}],
         "devices": [], "dns_entries": [], "counters": {"ruleset_applies": 1}}
    )
    assert "iot          devices  br-iot cloud" in text
    assert "ruleset_applies" in text


def test_a_stop_during_the_restore_of_saved_entries_waits_for_it_and_saves_them_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while the saved DNS entries go back in: the restore (a thread) ends first, and the way down
    saves what it put back before the table goes, so the entries outlive the stop."""
    import os
    import signal
    import time
    import types

    from loxgw.daemon import dnsentries

    cfg, sock = tmp_path / "loxgw", tmp_path / "run" / "status.sock"
    write_config(cfg, sock)
    kernel = FakeKernel()
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    events: list[str] = []
    monkeypatch.setattr(dnsentries, "read_state", lambda *a: ["saved grant"] * 3)
    monkeypatch.setattr(dnsentries, "remove_state", lambda path: events.append("state file removed"))

    def reinsert(grants: list[object], source: str) -> object:
        time.sleep(0.3)  # tens of thousands of entries take seconds
        events.append("kernel took the entries" if "loxgw" in kernel.tables else "table gone")
        return types.SimpleNamespace(restored=3, wanted=3, refused=0, seconds=0.3, error="")

    monkeypatch.setattr(d.dns, "reinsert", reinsert)
    monkeypatch.setattr(d.dns, "save_entries", lambda: events.append("entries saved"))
    close = d.firewall.close

    def close_firewall() -> None:
        events.append("table removed")
        close()

    monkeypatch.setattr(d.firewall, "close", close_firewall)

    async def main() -> int:
        asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)  # mid-restore
        return await d.run()

    assert asyncio.run(main()) == 0
    assert events == ["kernel took the entries", "state file removed", "entries saved", "table removed"]


def test_a_stop_asked_before_run_put_its_handlers_in_stops_the_start_up_and_takes_the_table_back(
        setup: tuple[Path, Path, FakeKernel], caplog: pytest.LogCaptureFixture) -> None:
    """`loxgw run` remembers a SIGTERM that arrives while asyncio.run makes the loop (raised there, it left
    a half-built loop behind): run() then stops before any service starts, exits 0 and leaves no table."""
    import signal

    cfg, _, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports(), early_signals=[signal.SIGTERM])
    with caplog.at_level(logging.INFO, logger="loxgw"):
        assert asyncio.run(asyncio.wait_for(d.run(), 10)) == 0
    assert d.way_down_began
    assert "loxgw" not in kernel.tables
    assert "stopped" in caplog.messages
    assert not [m for m in caplog.messages if m.startswith("running:")]  # no service got as far as running


def test_a_sighup_before_run_put_its_handlers_in_is_one_reload_once_running(
        setup: tuple[Path, Path, FakeKernel]) -> None:
    """procd sends SIGHUP when a zone's network comes up, as at boot while loxgw starts: the daemon runs on
    and reloads once everything runs (the config or a network may have changed meanwhile)."""
    import signal

    cfg, sock, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports(), early_signals=[signal.SIGHUP])

    async def scenario() -> int:
        task = asyncio.create_task(d.run())
        for _ in range(500):
            if d.counters["reloads"]:
                break
            await asyncio.sleep(0.01)
        assert sock.exists() and not task.done()
        d.request_stop()
        return await task

    assert asyncio.run(scenario()) == 0
    assert d.counters["reloads"] == 1
    assert kernel.tables == set()


def test_a_sighup_on_the_way_down_reloads_nothing_and_the_table_goes(
        setup: tuple[Path, Path, FakeKernel], monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload started on the way down would declare the table again after it was taken back."""
    import os
    import signal

    cfg, sock, kernel = setup
    d = daemon.Daemon(load_config(str(cfg)), kernel.ports())
    close_status = d.status.close

    async def hup_then_close() -> None:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.2)  # the loop runs the signal's handler (and a reload it would start)
        await close_status()

    monkeypatch.setattr(d.status, "close", hup_then_close)
    run_once(d, sock)
    assert d.counters["reloads"] == 0
    assert kernel.tables == set()
