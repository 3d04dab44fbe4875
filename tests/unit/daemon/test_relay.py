"""The relay service's wiring: windows written before copies leave, answers to the loop, the timer after a drain."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from loxgw.core import relaywire
from loxgw.core.catalog import PortRange
from loxgw.core.config import parse_config
from loxgw.core.relay import RateLimiter, Relay, RelayInterface, RelayPolicy, Transmit
from loxgw.daemon.relay import RelayService, _Running

IP = ipaddress.IPv4Address
LAN = RelayInterface("br-lan", 3, IP("192.168.10.1"), IP("192.168.10.255"), role="clients", mac=b"\x02" * 6)
IOT = RelayInterface("br-iot", 4, IP("192.168.20.1"), IP("192.168.20.255"), role="devices", mac=b"\x04" * 6)
LAN_B = RelayInterface("lan0", 13, IP("192.168.10.3"), IP("192.168.10.255"), mac=b"\x12" * 6)
IOT_B = RelayInterface("iot0", 14, IP("192.168.20.3"), IP("192.168.20.255"), mac=b"\x14" * 6)


def datagram(payload: bytes, src: str = "192.168.10.20") -> bytes:
    udp = struct.pack("!HHHH", 50000, 7070, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, IP(src).packed,
                       IP("255.255.255.255").packed) + udp


class Writer:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.elements: list[tuple[str, bytes, int]] = []

    def add_elements(self, elements: Iterable[tuple[str, bytes, int]]) -> int:
        self.elements += list(elements)
        self.log.append("window")
        return len(self.elements)

    def close(self) -> None:
        pass


class Sockets:
    """What the service asks of edges.relaynet.RelaySockets."""

    def __init__(self, log: list[str], inbox: list[tuple[int, bytes]], core: Relay, lock: Any,
                 on_core: Any) -> None:
        self.log, self.inbox, self.core, self.lock, self.on_core = log, inbox, core, lock, on_core
        self.sent: list[Transmit] = []
        self.counters: Counter[str] = Counter({"interface_refreshes": 1})

    def drain(self) -> None:
        self.log.append("drain")
        while self.inbox:
            index, data = self.inbox.pop(0)
            with self.lock:
                self.send(self.core.receive(index, data, 1.001))
                self.on_core()

    def send(self, copies: Iterable[Transmit]) -> None:
        for copy in copies:
            self.log.append("send")
            self.sent.append(copy)

    def holds_port(self, port: int) -> bool:
        return port == 7071

    def set_peer_copies_only(self, only: bool) -> None:
        self.log.append(f"peer copies only: {only}")

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        pass


def service(core: Relay) -> tuple[RelayService, _Running, Sockets, list[str], list[Any], asyncio.AbstractEventLoop]:
    log: list[str] = []
    answers: list[Any] = []
    svc = RelayService(parse_config("", "test"), lambda: Writer(log),
                       lambda src, payload: answers.append((src, payload)))
    loop = asyncio.new_event_loop()
    svc._loop, svc._loop_thread = loop, threading.get_ident()
    run = _Running("r", core)
    sockets = Sockets(log, [], core, svc.lock, lambda: svc._on_core(run))
    run.sockets = sockets  # type: ignore[assignment]
    svc.relays.append(run)
    return svc, run, sockets, log, answers, loop


def core_for(interfaces: tuple[RelayInterface, ...]) -> Relay:
    core = Relay(RelayPolicy((PortRange(7070, 7077),), frozenset(i.name for i in interfaces)), RateLimiter(1e9, 1e9))
    core.set_interfaces(interfaces)
    return core


def receive(svc: RelayService, run: _Running, sockets: Sockets, index: int, data: bytes, now: float) -> None:
    """What a reader thread does with one datagram."""
    with svc.lock:
        copies = run.core.receive(index, data, now)
        if run.core.events or run.core.timer_changed or run.core.peers_changed:
            svc._on_core(run)
    sockets.send(copies)


def test_the_window_is_written_before_the_copy_leaves_in_the_kernels_layout() -> None:
    svc, run, sockets, log, _, loop = service(core_for((LAN, IOT)))
    receive(svc, run, sockets, LAN.index, datagram(b"\x00"), 1.0)
    assert log == ["window", "send"]
    asker = int(IP("192.168.10.20"))
    assert svc.writer.elements == [("relay_answers4", relaywire.answer_key("br-iot", asker, 50000), 10),
                                   ("relay_answers4", relaywire.answer_key("br-iot", asker, 7071), 10)]
    svc.key_length = relaywire.LEGACY_ANSWER_KEY_LENGTH
    receive(svc, run, sockets, LAN.index, datagram(b"\x00", src="192.168.10.21"), 1.0)
    assert [len(key) for _, key, _ in svc.writer.elements[2:]] == [8, 8]
    loop.close()


def test_answers_go_to_the_devices_service_on_the_loop() -> None:
    svc, run, _, _, answers, loop = service(core_for((LAN, IOT)))
    with svc.lock:
        run.core.receive_answer(int(IP("192.168.20.10")), b"LoxLIVE: Home")
        svc._on_core(run)
    assert answers == [(IP("192.168.20.10"), b"LoxLIVE: Home")]
    elsewhere = threading.Thread(target=lambda: (run.core.receive_answer(1, b"x"), svc._on_core(run)))
    elsewhere.start()
    elsewhere.join()
    assert len(answers) == 1  # from another thread: queued onto the loop
    loop.run_until_complete(asyncio.sleep(0))
    assert answers[1] == (IP(1), b"x")
    loop.close()


def test_the_timer_runs_after_the_sockets_were_read() -> None:
    follower = core_for((LAN_B, IOT_B))
    svc, run, sockets, log, _, loop = service(follower)
    leader = core_for((LAN, IOT))
    first = datagram(b"hello")
    follower.receive(IOT_B.index, leader.receive(LAN.index, first, 0.0)[0][1][14:], 0.0)  # a peer is there
    receive(svc, run, sockets, LAN_B.index, datagram(b"\x01"), 1.0)
    assert run.timer is not None and run.when == follower.get_timer()
    # The leader's copy is in the socket, not read yet, when the hold-off ends.
    sockets.inbox.append((IOT_B.index, leader.receive(LAN.index, datagram(b"\x01"), 1.0)[0][1][14:]))
    svc._on_timer(run)
    assert (log, sockets.sent, run.timer) == (["drain"], [], None)
    receive(svc, run, sockets, LAN_B.index, datagram(b"\x02"), 1.002)  # this one the leader never sends
    svc._on_timer(run)
    assert [frame[42:] for _, frame in sockets.sent] == [b"\x02"]
    assert svc.status()["counters"]["iot0:7070:left_to_peer"] == 1
    loop.close()


def test_status_and_the_answer_port() -> None:
    svc, _, _, _, _, loop = service(core_for((LAN, IOT)))
    status = svc.status()
    assert (status["interfaces"], status["counters"], status["peers"]) == (
        ["br-iot", "br-lan"], {"interface_refreshes": 1}, {})
    assert (svc.owns_answer_port(7071), svc.owns_answer_port(7070)) == (True, False)
    loop.close()


class Restarts(RelayService):
    """Counts restarts instead of opening sockets."""

    def __init__(self, config: Any) -> None:
        super().__init__(config, lambda: None, lambda src, payload: None)
        self.starts = 0

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.starts += 1


def test_a_gen1_intercom_configured_or_removed_restarts_the_relay_with_its_ports() -> None:
    base = "config relay\n\tlist interface 'br-lan'\n\tlist interface 'br-iot'\n"
    gen1 = base + "config device 'door'\n\toption type 'intercom_gen1'\n\toption ip '192.168.20.30'\n"
    svc = Restarts(parse_config(base, "t"))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(svc.reconfigure(parse_config(base, "t")))
        assert svc.starts == 0
        loop.run_until_complete(svc.reconfigure(parse_config(gen1, "t")))
        assert svc.starts == 1
        assert [str(p) for p in svc.config.relay_ports(svc.config.relays[0])][-3:] == ["5000", "8110", "8112-8113"]
        loop.run_until_complete(svc.reconfigure(parse_config(base, "t")))
        assert svc.starts == 2
    finally:
        loop.close()
