"""Inventory, LoxLIVE and lease parsing, and the pinhole plan."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import catalog, pinholes
from loxgw.core.catalog import PortRange
from loxgw.core.config import StaticDevice
from loxgw.core.devices import Inventory, parse_dhcp_leases, parse_loxlive
from loxgw.core.errors import RemoteDataError
from loxgw.edges.detect import pick_current

IP = ipaddress.IPv4Address
MS_MAC = "50:4f:94:a0:00:01"


def test_loxlive_with_spaces_in_the_name() -> None:
    found = parse_loxlive(b"LoxLIVE: Haus 12: Wohnen 2 192.168.20.10:8080 504F94A00001 15.1.10.2 Prog:x\x00")
    assert (found.name, str(found.ip), found.port, found.serial, found.firmware) == (
        "Haus 12: Wohnen 2", "192.168.20.10", 8080, "504F94A00001", "15.1.10.2")


@pytest.mark.parametrize("payload", [
    b"", b"LoxLIVE:", b"LoxLIVE: name 192.168.20.10 504F94A00001 1.0", b"LoxLIVE: n 1.2.3.4:99999 504F94A00001 1.0",
    b"LoxLIVE: n 999.2.3.4:80 504F94A00001 1.0", b"LoxLIVE: n 1.2.3.4:80 XYZ 1.0", b"\xff" * 10, b"x" * 600,
    b"LoxLIVE:  1.2.3.4:80 504F94A00001 1.0",
])
def test_malformed_loxlive_is_refused(payload: bytes) -> None:
    with pytest.raises(RemoteDataError):
        parse_loxlive(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_loxlive_parser_never_crashes(payload: bytes) -> None:
    try:
        found = parse_loxlive(payload)
    except RemoteDataError:
        return
    assert 1 <= found.port <= 65535
    assert found.name and len(found.serial) == 12


def test_dhcp_leases() -> None:
    text = ("1700000000 50:4F:94:A0:00:01 192.168.20.10 Miniserver 01:50:4f:94:a0:00:01\n"
            "garbage line\n1700000000 02:00:00:00:00:01 192.168.20.99 * *\n"
            "1700000000 50:4f:94:a0:00:02 not-an-ip x y\n")
    assert parse_dhcp_leases(text) == [(MS_MAC, IP("192.168.20.10"), "Miniserver"),
                                       ("02:00:00:00:00:01", IP("192.168.20.99"), "")]


def test_only_loxlive_or_loxone_oui_creates_devices() -> None:
    inv = Inventory()
    assert inv.observe("neighbour", 0.0, mac="02:00:00:00:00:01", ip=IP("192.168.20.5")) is False
    assert inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10")) is True
    assert [(d.mac, str(d.ip), d.product) for d in inv.devices()] == [(MS_MAC, "192.168.20.10", None)]


def test_loxlive_serial_names_the_mac_and_product() -> None:
    inv = Inventory()
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"))
    inv.observe("loxlive", 1.0, ip=IP("192.168.20.10"), product="miniserver", serial="504F94A00001", http_port=8080)
    (dev,) = inv.devices()
    assert (dev.product, dev.http_port, sorted(dev.sources)) == ("miniserver", 8080, ["loxlive", "neighbour"])


def test_address_change_moves_the_device() -> None:
    inv = Inventory()
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"))
    assert inv.observe("neighbour", 1.0, mac=MS_MAC, ip=IP("192.168.20.50")) is True
    assert [str(d.ip) for d in inv.devices()] == ["192.168.20.50"]


def test_static_wins_and_takes_its_address_from_detection() -> None:
    static = StaticDevice("door", "intercom", MS_MAC, None, label="Door")
    inv = Inventory((static,))
    inv.observe("loxlive", 1.0, ip=IP("192.168.20.10"), product="miniserver", serial="504F94A00001", name="MS")
    (dev,) = inv.devices()
    assert (dev.product, dev.name, str(dev.ip), dev.static) == ("intercom", "Door", "192.168.20.10", True)


def test_gone_devices_keep_pinholes_for_the_grace_period() -> None:
    inv = Inventory(grace=60)
    inv.sync_neighbours([(MS_MAC, IP("192.168.20.10"))], 0.0)
    assert inv.sync_neighbours([], 10.0) is False
    assert [d.present for d in inv.devices()] == [False]
    assert inv.expire(69.0) is False
    assert inv.expire(70.0) is True
    assert inv.devices() == []


def test_inventory_is_capped() -> None:
    inv = Inventory(capacity=10)
    for i in range(1000):
        inv.observe("neighbour", 0.0, mac=f"50:4f:94:00:{i // 256:02x}:{i % 256:02x}", ip=IP(0x0A000000 + i))
    assert (len(inv.devices()), inv.refused) == (10, 990)


def test_pick_current_prefers_the_newest_entry() -> None:
    first_seen: dict[tuple[str, IP], float] = {}
    old = (MS_MAC, IP("192.168.20.10"), 100)
    assert pick_current([old], first_seen, 0.0) == [(MS_MAC, IP("192.168.20.10"))]
    new = (MS_MAC, IP("192.168.20.50"), 6000)  # a fresh entry looks long unconfirmed
    assert pick_current([old, new], first_seen, 5.0) == [(MS_MAC, IP("192.168.20.50"))]
    assert pick_current([new], first_seen, 6.0) == [(MS_MAC, IP("192.168.20.50"))]
    assert set(first_seen) == {(MS_MAC, IP("192.168.20.50"))}


def plan_for(product: str | None, http_port: int = 80) -> set[tuple[str, str, PortRange | None]]:
    inv = Inventory()
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"), product=product,  # type: ignore[arg-type]
                http_port=http_port)
    return {(h.kind, h.proto, h.ports) for h in pinholes.plan(inv.devices(), catalog.load())}


def test_miniserver_pinholes_follow_its_http_port() -> None:
    holes = plan_for("miniserver", http_port=8080)
    inbound = {(proto, str(ports)) for kind, proto, ports in holes if kind == "inbound"}
    assert inbound == {("tcp", "443"), ("tcp", "8080"), ("tcp", "21"), ("tcp", "20"),
                       ("tcp", "47808"), ("udp", "47808")}
    assert ("client", "udp", PortRange(7777, 7777)) in holes


def test_intercom_gets_7091_and_sip() -> None:
    inbound = {(p, str(r)) for k, p, r in plan_for("intercom") if k == "inbound"}
    assert inbound == {("tcp", "7091"), ("udp", "5060")}


def test_intercom_gen1_and_unknown() -> None:
    assert {(p, str(r)) for k, p, r in plan_for("intercom_gen1") if k == "inbound"} == {("tcp", "80")}
    assert {(p, str(r)) for k, p, r in plan_for(None)} == {("tcp", "80"), ("tcp", "443")}


def test_audioserver_router_ping_and_device_flows() -> None:
    inv = Inventory()
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"), product="miniserver")
    inv.observe("neighbour", 0.0, mac="50:4f:94:00:00:02", ip=IP("192.168.30.11"), product="audioserver")
    holes = pinholes.plan(inv.devices(), catalog.load())
    device = {(h.source, str(h.dst), h.proto, str(h.ports)) for h in holes if h.kind == "device"}
    assert device == {("miniserver", "192.168.30.11", "tcp", p) for p in ("7095", "80", "443")} | {
        ("audioserver", "192.168.30.11", proto, p)
        for proto, p in (("udp", "7788"), ("udp", "14000-14999"), ("tcp", "111"), ("tcp", "2049"),
                         ("udp", "111"), ("udp", "2049"))} | {("miniserver", "192.168.20.10", "tcp", "443")}
    assert [str(h.src) for h in holes if h.kind == "router"] == ["192.168.30.11"]
    elements = pinholes.elements(holes, inv.devices())
    # Device flows are keyed by their target; the source is matched through its product's address set.
    assert elements["dev_miniserver4"] == {"192.168.20.10"}
    assert elements["dev_audioserver4"] == {"192.168.30.11"}
    assert elements["pin_dev_miniserver4"] == {"192.168.30.11 . tcp . 80", "192.168.30.11 . tcp . 443",
                                               "192.168.30.11 . tcp . 7095", "192.168.20.10 . tcp . 443"}
