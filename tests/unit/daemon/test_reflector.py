"""The reflector service: inventory to scope, datagrams through the cores, announced ports to the firewall."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from loxgw.core.catalog import PortRange
from loxgw.core.config import Config, load_config
from loxgw.core.devices import Inventory
from loxgw.core.pinholes import Pinhole
from loxgw.core.reflect import COPY_TOS, ReflectInterface
from loxgw.daemon import app as daemon
from loxgw.daemon.reflector import ReflectorService
from tests.unit.core.test_reflectmdns import announcement

IOT = ReflectInterface("br-iot", 2, IPv4Address("192.168.20.1"), IPv4Network("192.168.20.0/24"), "devices")
LAN = ReflectInterface("br-lan", 3, IPv4Address("192.168.10.1"), IPv4Network("192.168.10.0/24"), "clients")
AUDIOSERVER = IPv4Address("192.168.20.10")
TV = IPv4Address("192.168.20.50")
AIRPLAY = Pinhole("inbound", None, AUDIOSERVER, "tcp", PortRange(7005, 7005), "mdns-srv")

CONFIG = """
config loxgw 'main'
\toption firewall 'standalone'
\toption status_socket '{sock}'

config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'

config zone 'lan'
\toption role 'clients'
\tlist interface 'br-lan'
"""


class FakeSockets:
    """Stands in for edges.mdnsnet.ReflectorSockets: the service's callbacks, driven by the test."""

    def __init__(self, roles: dict[str, str], receive: Callable[..., Any], on_batch: Callable[[], None],
                 on_interfaces: Callable[..., None], refuse: OSError | None = None) -> None:
        self.roles = roles
        self.receive = receive
        self.on_batch = on_batch
        self.on_interfaces = on_interfaces
        self.refuse = refuse
        self.counters: Counter[str] = Counter({"reflector_sent_mdns": 0})
        self.closed = False

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.refuse:
            raise self.refuse
        self.on_interfaces([IOT, LAN], [IPv4Address("198.51.100.2")])

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self.closed = True


def config(tmp_path: Path) -> Config:
    path = tmp_path / "cfg"
    path.write_text(CONFIG.format(sock=tmp_path / "s.sock"))
    return load_config(str(path))


async def start(service: ReflectorService) -> None:
    await service.start(asyncio.get_running_loop())


def make(tmp_path: Path, refuse: OSError | None = None) -> tuple[ReflectorService, list[FakeSockets], list[int]]:
    inventory = Inventory()
    inventory.observe("neighbour", 0.0, mac="50:4f:94:a0:00:10", ip=AUDIOSERVER)
    inventory.observe("neighbour", 0.0, mac="02:00:00:00:00:50", ip=TV)  # not Loxone: not kept
    opened: list[FakeSockets] = []
    changes: list[int] = []

    def open_sockets(*args: Any) -> FakeSockets:
        opened.append(FakeSockets(*args, refuse=refuse))
        return opened[-1]

    service = ReflectorService(config(tmp_path), inventory, lambda: changes.append(1), open_sockets)
    return service, opened, changes


def test_a_devices_announcement_is_reflected_and_its_port_reaches_the_firewall(tmp_path: Path) -> None:
    service, opened, changes = make(tmp_path)

    async def scenario() -> None:
        await service.start(asyncio.get_running_loop())
        (sockets,) = opened
        assert sockets.roles == {"br-iot": "devices", "br-lan": "clients"}
        out = sockets.receive("mdns", IOT.index, AUDIOSERVER, 5353, announcement(), 0)
        assert [t.ifindex for t in out] == [LAN.index]
        assert sockets.receive("mdns", IOT.index, TV, 5353, announcement(TV), 0) == []
        assert sockets.receive("mdns", IOT.index, AUDIOSERVER, 5353, announcement(), COPY_TOS) == []
        sockets.on_batch()
        assert changes == [1]
        assert service.announced() == (AIRPLAY,)
        sockets.on_batch()
        assert changes == [1]  # the set did not change again
        assert service._timer is not None
        status = service.status()
        assert json.loads(json.dumps(status)) == status
        assert (status["active"], status["interfaces"], status["devices"], status["announced"]) == (
            True, {"br-iot": "devices", "br-lan": "clients"}, [str(AUDIOSERVER)], [AIRPLAY.describe()])
        service.close(asyncio.get_running_loop())
        assert sockets.closed

    asyncio.run(scenario())


def test_a_device_that_leaves_the_inventory_takes_its_ports(tmp_path: Path) -> None:
    service, opened, _ = make(tmp_path)

    async def scenario() -> None:
        await service.start(asyncio.get_running_loop())
        opened[0].receive("mdns", IOT.index, AUDIOSERVER, 5353, announcement(), 0)
        assert service.announced() == (AIRPLAY,)
        service.inventory.grace = 0.0
        service.inventory.sync_neighbours([], 1.0)
        assert service.announced() == ()
        service.close(asyncio.get_running_loop())

    asyncio.run(scenario())


def test_discovery_alone_does_not_make_a_device_whose_records_cross(tmp_path: Path) -> None:
    service, opened, _ = make(tmp_path)
    forged = IPv4Address("192.168.20.66")
    service.inventory.observe("loxlive", 0.0, ip=forged, product="miniserver")

    async def scenario() -> None:
        await service.start(asyncio.get_running_loop())
        assert opened[0].receive("mdns", IOT.index, forged, 5353, announcement(forged), 0) == []
        service.close(asyncio.get_running_loop())

    asyncio.run(scenario())
    assert service.mdns.counters["dropped_not_loxone"] == 1


def test_refused_sockets_leave_the_daemon_running_without_reflection(tmp_path: Path) -> None:
    service, _, _ = make(tmp_path, refuse=OSError(98, "Address in use"))
    asyncio.run(start(service))
    status = service.status()
    assert (status["active"], status["last_error"]) == (False, "reflector: opening sockets: [Errno 98] Address in use")


def test_without_zones_of_both_roles_it_stays_off(tmp_path: Path) -> None:
    path = tmp_path / "one"
    path.write_text(CONFIG.split("config zone 'lan'")[0].format(sock=tmp_path / "s.sock"))
    opened: list[FakeSockets] = []
    service = ReflectorService(load_config(str(path)), Inventory(), lambda: None,
                               lambda *a: opened.append(FakeSockets(*a)) or opened[-1])
    asyncio.run(start(service))
    assert (opened, service.status()["active"], service.announced()) == ([], False, ())


def test_the_daemon_puts_announced_ports_in_its_desired_state_and_status(tmp_path: Path) -> None:
    ports = daemon.KernelPorts(apply_script=lambda s: None, table_exists=lambda t: True, fw4_present=lambda: False,
                               choose_queue=lambda m: "off", watch_ruleset=lambda: None, detect=False,
                               list_set_elements=lambda t, p: {}, probe_set_refresh=lambda: "expiration",
                               lookup_network=lambda n: None,
                               open_xtables=lambda: None)  # type: ignore[arg-type, return-value]
    d = daemon.Daemon(config(tmp_path), ports)
    d.devices.inventory.observe("neighbour", 0.0, mac="50:4f:94:a0:00:10", ip=AUDIOSERVER)
    d.reflector.scope.set_interfaces([IOT, LAN])
    d.reflector.refresh_devices(0.0)
    d.reflector.mdns.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 0.0)
    assert AIRPLAY in d.desired().announced
    assert d.snapshot()["reflector"]["announced"] == [AIRPLAY.describe()]
