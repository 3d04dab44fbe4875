"""The relay's kernel path (daemon.relaykernel): apply, fall back to Python for a peer, restore after a flush."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from loxgw.core import nftwatch, relaypeers
from loxgw.core.config import parse_config
from loxgw.core.errors import KernelError
from loxgw.core.relay import RelayInterface
from loxgw.daemon.relay import RelayService, _Running
from loxgw.daemon.relaykernel import KernelEdge
from loxgw.edges import clock
from tests.unit.daemon.test_relay import IOT, IOT_B, IP, LAN, LAN_B, Sockets, Writer, core_for, datagram, receive


class Kernel(KernelEdge):
    """The kernel path's edge: records scripts; refuses them when told to."""

    def __init__(self, log: list[str], refuse: bool = False) -> None:
        self.log, self.refuse = log, refuse
        self.scripts: list[str] = []
        self.present = True
        self.watching: Watch | None = None

    def apply(self, script: str) -> None:
        if self.refuse:
            raise KernelError("relay: nft -f of the netdev table", 2, "No such file or directory")
        self.scripts.append(script)
        self.log.append(script.splitlines()[-1] if "delete" in script.splitlines()[-1] else "apply table")

    def counters(self, table: str) -> dict[str, int]:
        return {"copies_1_0": 7, "dropped_rate_source_1": 2, "copies_0_1": 0, "received_1_0": 9, "relayed_0_0": 7}

    def exists(self, table: str) -> bool:
        return self.present

    def watch(self) -> Watch:
        self.watching = Watch()
        return self.watching


class Watch:
    """edges.nft.RulesetWatch: a readable descriptor, drain() says which tables lost something."""

    def __init__(self) -> None:
        self.ours, self.kernel = socket.socketpair()
        self.deleted: set[tuple[int, str]] = set()

    def fileno(self) -> int:
        return self.ours.fileno()

    def drain(self) -> set[tuple[int, str]]:
        self.ours.recv(64)
        return self.deleted

    def close(self) -> None:
        self.ours.close()
        self.kernel.close()


KERNEL_CONFIG = "config relay 'discovery'\n\tlist interface 'br-lan'\n\tlist interface 'br-iot'\n"


def kernel_service(config: str = KERNEL_CONFIG, refuse: bool = False, now: list[float] | None = None,
                   ready: bool = True) -> tuple[
        RelayService, _Running, Sockets, list[str], Kernel, asyncio.AbstractEventLoop]:
    log: list[str] = []
    kernel = Kernel(log, refuse)
    clock_now = now if now is not None else [clock.now()]
    svc = RelayService(parse_config(config, "test"), lambda: Writer(log), lambda src, payload: None, kernel,
                       lambda: clock_now[0])
    loop = asyncio.new_event_loop()
    svc._loop, svc._loop_thread = loop, threading.get_ident()
    section = svc.config.relays[0]
    core = core_for((LAN, IOT))
    run = _Running("discovery", core, section, svc.paths.allowed(section))
    run.sockets = Sockets(log, [], core, svc.lock, lambda: svc._on_core(run))  # type: ignore[assignment]
    svc.relays.append(run)
    if ready:
        svc.move_copies_to_kernel()  # the daemon is ready: nothing is held
    return svc, run, run.sockets, log, kernel, loop  # type: ignore[return-value]


def test_the_kernel_copies_where_it_takes_the_table_and_python_sees_peers_only() -> None:
    svc, run, _, log, kernel, loop = kernel_service()
    loop.run_until_complete(svc.paths.reconcile(run))
    assert (run.path, log) == ("kernel", ["apply table", "peer copies only: True"])
    assert kernel.scripts[0].splitlines()[:2] == ["table netdev loxgw_relay", "delete table netdev loxgw_relay"]
    loop.run_until_complete(svc.paths.reconcile(run))  # nothing changed: nothing applied again
    assert len(kernel.scripts) == 1
    svc.close(loop)
    assert log[-1] == "delete table netdev loxgw_relay"
    loop.close()


class SlowKernel(Kernel):
    """Applies take a while: the relay closes while its first table goes in (a stop right after start)."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(log)
        self.applying, self.release = threading.Event(), threading.Event()

    def apply(self, script: str) -> None:
        if "delete" not in script.splitlines()[-1]:
            self.applying.set()
            assert self.release.wait(5)
        super().apply(script)


def test_the_kernel_path_waits_until_the_daemon_is_ready() -> None:
    svc, run, _, _log, kernel, loop = kernel_service(ready=False)
    svc.paths.reconcile_soon(run)  # at start, or an interface that changed before readiness
    svc.paths.reconcile_soon(run)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert (run.path, kernel.scripts) == ("python", [])
    svc.move_copies_to_kernel()
    for _ in range(100):
        if run.path == "kernel":
            break
        loop.run_until_complete(asyncio.sleep(0.01))
    assert (run.path, len(kernel.scripts)) == ("kernel", 1)  # held twice, applied once
    svc.close(loop)
    loop.close()


def test_a_table_still_going_in_when_the_relay_closes_is_removed_not_left() -> None:
    svc, run, _, log, _, loop = kernel_service()
    slow = svc.paths.edge = SlowKernel(log)
    task = loop.create_task(svc.paths.reconcile(run))
    loop.run_until_complete(asyncio.wait_for(asyncio.to_thread(slow.applying.wait, 5), 5))
    threading.Timer(0.05, slow.release.set).start()  # close() waits for the apply in flight
    svc.close(loop)
    assert log == ["apply table", "delete table netdev loxgw_relay"] and run.kernel is None
    loop.run_until_complete(task)  # the reconcile learns that the relay closed; it changes nothing
    assert log == ["apply table", "delete table netdev loxgw_relay"] and run.path == "python"
    # Closed before its first apply even started: nothing goes in.
    svc, run, _, log, kernel, loop2 = kernel_service()
    run.closed = True
    loop2.run_until_complete(svc.paths.reconcile(run))
    assert (log, kernel.scripts) == ([], [])
    loop.close()
    loop2.close()


def test_a_peer_relay_hands_the_copies_back_to_python_until_it_is_gone() -> None:
    now = [clock.now()]
    svc, run, sockets, log, _, loop = kernel_service(now=now)
    loop.run_until_complete(svc.paths.reconcile(run))
    leader = core_for((LAN_B, IOT_B))
    copy = leader.receive(LAN_B.index, datagram(b"hello"), now[0])[0][1][14:]
    receive(svc, run, sockets, IOT.index, copy, now[0])  # as a reader thread would, peer copies only
    loop.run_until_complete(asyncio.sleep(0.01))
    assert (run.path, log[-2:]) == ("python", ["peer copies only: False", "delete table netdev loxgw_relay"])
    assert run.reason == "a second relay copies on the same segments; loxgw's process arbitrates"
    assert run.peer_timer is not None and run.peer_timer.when() == run.peers_until
    now[0] += 30
    svc.paths.peers_check(run)  # the peer is still there: look again at the end of its minute
    assert (run.path, run.peer_timer.when()) == ("python", run.peers_until)
    now[0] += relaypeers.PEER_MEMORY
    svc.paths.peers_check(run)  # the peer's minute is over
    loop.run_until_complete(asyncio.sleep(0.01))
    assert (run.path, log[-2:]) == ("kernel", ["apply table", "peer copies only: True"])
    svc.close(loop)
    loop.close()


def test_a_kernel_that_refuses_the_table_keeps_python_for_good() -> None:
    svc, run, _, log, kernel, loop = kernel_service(refuse=True)
    loop.run_until_complete(svc.paths.reconcile(run))
    assert (run.path, log, svc.counters["relay_kernel_errors"]) == ("python", ["peer copies only: False"], 1)
    assert run.reason.startswith("the kernel refused the netdev table: relay: nft -f of the netdev table (errno 2)")
    kernel.refuse = False
    loop.run_until_complete(svc.paths.reconcile(run))
    assert (run.path, kernel.scripts) == ("python", [])
    loop.close()


def test_option_kernel_off_and_too_few_ethernet_interfaces_keep_python() -> None:
    svc, run, _, _, kernel, loop = kernel_service(KERNEL_CONFIG + "\toption kernel 'off'\n")
    loop.run_until_complete(svc.paths.reconcile(run))
    assert (run.path, run.reason, kernel.scripts) == ("python", "option kernel 'off'", [])
    loop.close()
    svc, run, _, _, kernel, loop = kernel_service()
    tun = RelayInterface("br-iot", 4, IP("192.168.20.1"), IP("192.168.20.255"), role="devices")
    run.core.set_interfaces((LAN, tun))
    loop.run_until_complete(svc.paths.reconcile(run))
    assert (run.path, run.reason) == (
        "python", "br-iot is not an Ethernet interface (the kernel rewrites Ethernet frames)")
    run.core.set_interfaces((LAN,))
    loop.run_until_complete(svc.paths.reconcile(run))
    assert (run.path, run.reason) == ("python", "fewer than two of its interfaces are up")
    loop.close()


def test_status_says_which_path_runs_and_shows_the_kernels_counters() -> None:
    svc, run, _, _, _, loop = kernel_service()

    async def twice() -> dict[str, Any]:
        await svc.paths.reconcile(run)
        svc.status()
        await asyncio.sleep(0.01)  # the read runs in a worker thread
        return svc.status()

    status = loop.run_until_complete(twice())
    assert (status["path"], status["path_reason"]) == ("kernel", "the kernel copies (nftables netdev table)")
    assert status["kernel_counters"] == {"br-lan>br-iot:copies": 7, "br-lan:dropped_rate_source": 2,
                                         "br-lan:7070:received": 9, "br-iot:7070:relayed": 7}
    assert (status["counters"]["br-lan:7070:received"], status["counters"]["br-iot:7070:relayed"]) == (9, 7)
    svc.close(loop)
    loop.close()


def test_a_netdev_table_someone_else_deleted_is_applied_again() -> None:
    svc, run, _, log, kernel, loop = kernel_service()

    async def flushed() -> None:
        await svc.paths.reconcile(run)
        assert kernel.watching is not None
        kernel.watching.deleted = {(nftwatch.NFPROTO_NETDEV, "loxgw_relay")}
        kernel.watching.kernel.send(b"x")  # our own apply: the table is still there
        await asyncio.sleep(0.05)
        assert len(kernel.scripts) == 1
        kernel.present = False  # as the kernel would answer, but only a deletion in our table is looked at
        kernel.watching.deleted = {(nftwatch.NFPROTO_INET, "fw4"), (nftwatch.NFPROTO_NETDEV, "other_relay")}
        kernel.watching.kernel.send(b"x")
        await asyncio.sleep(0.05)
        assert len(kernel.scripts) == 1
        kernel.watching.deleted = {(nftwatch.NFPROTO_NETDEV, "loxgw_relay")}  # fw4 flush
        kernel.watching.kernel.send(b"x")
        await asyncio.sleep(0.05)

    loop.run_until_complete(flushed())
    assert (len(kernel.scripts), run.path, svc.counters["relay_kernel_restores"]) == (2, "kernel", 1)
    assert log[-1] == "peer copies only: True"
    svc.close(loop)
    assert kernel.watching is not None and kernel.watching.ours.fileno() == -1
    loop.close()
