"""The Planner, kept up to date device by device, always says what planning from scratch says."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import catalog, firewall, pinholes
from loxgw.core.catalog import PortRange
from loxgw.core.config import parse_config
from loxgw.core.devices import Device

CONFIG = parse_config("""
config loxgw 'main'
\toption firewall 'standalone'
\toption egress_audioserver 'open'

config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'

config zone 'lan'
\toption role 'clients'
\tlist interface 'br-lan'
""", "/etc/config/loxgw")
PRODUCTS = (None, "miniserver", "audioserver", "intercom")


def device(n: int, product: str | None, port: int = 80, host: int | None = None) -> Device:
    mac = f"50:4f:94:00:00:{n:02x}"
    ip = ipaddress.IPv4Address(f"192.168.20.{host if host is not None else n}")
    return Device(mac, mac, ip, product, http_port=port)  # type: ignore[arg-type]


def from_scratch(devices: list[Device], announced: tuple[pinholes.Pinhole, ...] = ()) -> tuple[
        Counter[pinholes.Pinhole], pinholes.Elements, dict[str, int]]:
    """What the Planner must say: every device planned anew, elements merged, holes counted per address."""
    entries = catalog.load()
    open_egress = frozenset(p for p in catalog.DEVICE_PRODUCTS if CONFIG.egress(p) == "open")
    holes: list[pinholes.Pinhole] = []
    out: dict[str, set[str]] = {name: set() for name in firewall.DESIRED_SETS}
    for dev in devices:
        own = pinholes.plan_device(dev, entries) | {h for h in announced if h.dst == dev.ip}
        holes += own
        for name, members in pinholes.elements(own, (dev,), open_egress).items():
            out[name] |= members
    per_device: Counter[str] = Counter()
    for hole in holes:
        for end in {hole.src, hole.dst}:
            if end is not None:
                per_device[str(end)] += 1
    return Counter(holes), {k: frozenset(v) for k, v in out.items()}, dict(per_device)


def planned(planner: pinholes.Planner, devices: list[Device],
            announced: tuple[pinholes.Pinhole, ...] = ()) -> tuple[
        Counter[pinholes.Pinhole], pinholes.Elements, dict[str, int]]:
    holes, elements = planner.desired(CONFIG, devices, announced)
    return Counter(holes), elements, planner.holes_per_device()


# A step: (device number 1-12, product index, HTTP port, address number) or None for "that device leaves".
STEP = st.tuples(st.integers(1, 12), st.integers(0, 3), st.sampled_from([80, 8080]), st.integers(1, 8),
                 st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=25))
def test_a_planner_fed_changes_agrees_with_planning_from_scratch(steps: list[tuple[int, int, int, int, bool]]) -> None:
    planner = pinholes.Planner()
    current: dict[int, Device] = {}
    for n, product, port, host, leaves in steps:
        if leaves:
            current.pop(n, None)
        else:  # a new device, or one that changed product, port or address (two may share one)
            current[n] = device(n, PRODUCTS[product], port, host)
        devices = sorted(current.values(), key=lambda d: d.key)
        assert planned(planner, devices) == from_scratch(devices)


def test_unchanged_devices_give_the_same_sets_and_no_changes() -> None:
    planner = pinholes.Planner()
    devices = [device(1, "miniserver"), device(2, "intercom")]
    _, first = planner.desired(CONFIG, devices)
    _, again = planner.desired(CONFIG, list(devices))
    assert all(first[name] is again[name] for name in first)
    assert pinholes.changes(first, again) == ({}, {})


def test_a_changed_device_object_with_the_same_plan_changes_nothing() -> None:
    planner = pinholes.Planner()
    devices = [device(1, "miniserver"), device(2, "intercom")]
    _, first = planner.desired(CONFIG, devices)
    seen_again = [replace(devices[0], last_seen=99.0), devices[1]]  # the inventory made a new object
    _, second = planner.desired(CONFIG, seen_again)
    assert pinholes.changes(first, second) == ({}, {})


def test_announced_services_add_their_pinholes_and_take_them_away() -> None:
    planner = pinholes.Planner()
    devices = [device(1, "audioserver")]
    announced = (pinholes.Pinhole("inbound", None, devices[0].ip, "tcp", PortRange(5000, 5000), "mdns"),)
    assert planned(planner, devices, announced) == from_scratch(devices, announced)
    assert "192.168.20.1 . tcp . 5000" in planner.desired(CONFIG, devices, announced)[1][firewall.PIN_PORT]
    assert planned(planner, devices) == from_scratch(devices)
    assert "192.168.20.1 . tcp . 5000" not in planner.desired(CONFIG, devices)[1][firewall.PIN_PORT]


def test_open_egress_follows_the_product() -> None:
    planner = pinholes.Planner()
    _, elements = planner.desired(CONFIG, [device(1, "audioserver"), device(2, "miniserver")])
    assert elements[firewall.EGRESS_OPEN] == frozenset({"192.168.20.1"})
