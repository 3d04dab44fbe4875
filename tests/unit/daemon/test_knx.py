"""The KNX service's wiring: opened only when enabled, hellos, copies sent, the timer after a read, restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from ipaddress import IPv4Address
from typing import Any

from loxgw.core.config import parse_config
from loxgw.core.knx import HELLO, KNX_GROUP, Copy, KnxInterface
from loxgw.core.relaywire import RELAY_TOS
from loxgw.daemon.knx import KnxService

IP = IPv4Address
LAN, IOT = KnxInterface("br-lan", 3, IP("192.168.10.1")), KnxInterface("br-iot", 4, IP("192.168.20.1"))
ZONES = """
config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'
config zone 'lan'
\toption role 'clients'
\tlist interface 'br-lan'
"""
KNX = "config knx\n\toption enabled '1'\n\tlist zone 'iot'\n\tlist zone 'lan'\n"
TELEGRAM = bytes.fromhex("061005300011" "2900bce0110109010100" "81")


class Sockets:
    """What the service asks of edges.knxnet.KnxSockets."""

    def __init__(self, opened: list[Any], names: tuple[str, ...], ttl: int, receive: Any, on_interfaces: Any,
                 fail: bool = False) -> None:
        self.names, self.ttl, self.receive, self.on_interfaces, self.fail = names, ttl, receive, on_interfaces, fail
        self.sent: list[Copy] = []
        self.inbox: list[tuple[int, IPv4Address, IPv4Address, bytes, int]] = []
        self.log: list[str] = []
        self.counters: Counter[str] = Counter()
        opened.append(self)

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.fail:
            raise PermissionError(13, "Permission denied")
        self.on_interfaces([IOT, LAN], frozenset({IOT.address, LAN.address}))

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self.log.append("close")

    def drain(self) -> None:
        self.log.append("drain")
        while self.inbox:
            self.send(self.receive(*self.inbox.pop(0)))

    def send(self, copies: list[Copy]) -> None:
        self.sent += copies


def running(text: str, fail: bool = False) -> tuple[KnxService, list[Sockets], asyncio.AbstractEventLoop]:
    opened: list[Sockets] = []
    svc = KnxService(parse_config(text, "t"), lambda *args: Sockets(opened, *args, fail=fail))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(svc.start(loop))
    return svc, opened, loop


def test_off_unless_enabled_with_two_zones() -> None:
    svc, opened, loop = running(ZONES + KNX.replace("'1'", "'0'"))
    assert (opened, svc.status()) == ([], {"active": False, "last_error": None})
    loop.close()


def test_opened_with_the_zones_interfaces_and_ttl_says_hello_and_copies() -> None:
    svc, opened, loop = running(ZONES + KNX + "\toption ttl '4'\n")
    [sockets] = opened
    assert (sockets.names, sockets.ttl) == (("br-iot", "br-lan"), 4)
    assert sockets.sent == [Copy(IOT.index, HELLO), Copy(LAN.index, HELLO)]
    assert sockets.receive(IOT.index, IP("192.168.20.50"), KNX_GROUP, TELEGRAM, 0) == [Copy(LAN.index, TELEGRAM)]
    status = svc.status()
    assert (status["active"], status["interfaces"], status["counters"]) == \
        (True, ["br-iot", "br-lan"], {"received": 1, "copied": 1})
    svc.close(loop)
    loop.close()


def test_a_held_back_copy_waits_for_a_read_of_the_socket_first() -> None:
    svc, [sockets], loop = running(ZONES + KNX)
    leader = IP("192.168.10.0")  # tag 0 on lan: it leads there
    assert sockets.receive(LAN.index, leader, KNX_GROUP, HELLO, RELAY_TOS) == [Copy(LAN.index, HELLO)]
    assert sockets.receive(IOT.index, IP("192.168.20.50"), KNX_GROUP, TELEGRAM, 0) == []  # held back
    assert svc._timer is not None
    sockets.inbox.append((LAN.index, leader, KNX_GROUP, TELEGRAM, RELAY_TOS))  # the leader's copy, unread
    sockets.sent.clear()
    svc._on_timer()
    assert (sockets.log, sockets.sent) == (["drain"], [])
    svc.close(loop)
    loop.close()


def test_a_refused_socket_is_reported_not_fatal() -> None:
    svc, _, loop = running(ZONES + KNX, fail=True)
    assert svc.status() == {"active": False, "last_error": "knx: opening the socket on UDP 3671: "
                                                            "[Errno 13] Permission denied"}
    loop.close()


def test_restarted_only_when_its_section_or_interfaces_change() -> None:
    svc, opened, loop = running(ZONES + KNX)
    loop.run_until_complete(svc.reconfigure(parse_config(ZONES + KNX + "config relay\n", "t")))
    assert len(opened) == 1
    loop.run_until_complete(svc.reconfigure(parse_config(ZONES + KNX + "\toption ttl '8'\n", "t")))
    assert (len(opened), opened[0].log, opened[1].ttl) == (2, ["close"], 8)
    loop.run_until_complete(svc.reconfigure(parse_config(ZONES, "t")))
    assert (len(opened), svc.sockets) == (2, None)
    loop.close()
