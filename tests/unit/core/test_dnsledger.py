"""The ledger: state-file records (a round trip, the time that passed, the bounds on what is read back),
one device's entries, and the expired entries it drops."""

from __future__ import annotations

import ipaddress

from loxgw.core import catalog, dns
from loxgw.core.catalog import PortRange
from loxgw.core.dns import Grant, Profile
from loxgw.core.dnsledger import GrantLedger
from loxgw.core.firewall import CLOUD_SET_SIZE

PROFILES = dns.all_profiles(catalog.load())
TCP22 = Profile("tcp", (PortRange(22, 22),))
DEVICE = ipaddress.ip_address("192.168.20.10")
DEVICE6 = ipaddress.ip_address("2001:db8:20::10")


def grant(last: int, timeout: int = 600, device: dns.IPAddress = DEVICE) -> Grant:
    address = ipaddress.ip_address(f"203.0.113.{last}" if device.version == 4 else f"2001:db8:113::{last}")
    return Grant(device, address, TCP22, timeout, f"r{last}.remcov3.loxonecloud.com")


def test_records_read_back_as_the_grants_they_were() -> None:
    ledger = GrantLedger()
    ledger.record([grant(1, 600), grant(2, 30), grant(3, 90, DEVICE6)], 100.0)
    records = ledger.dump(110.0)
    assert [r["expires_in"] for r in records] == [590, 20, 80]
    assert GrantLedger.parse_dump(records, PROFILES) == [grant(1, 590), grant(2, 20), grant(3, 80, DEVICE6)]


def test_time_since_the_save_is_taken_off_and_what_expired_meanwhile_is_dropped() -> None:
    ledger = GrantLedger()
    ledger.record([grant(1, 600), grant(2, 30)], 0.0)
    assert GrantLedger.parse_dump(ledger.dump(0.0), PROFILES, elapsed=100.5) == [grant(1, 499)]
    # A clock that went back counts as no time at all.
    assert GrantLedger.parse_dump(ledger.dump(0.0), PROFILES, elapsed=-50) == [grant(1, 600), grant(2, 30)]


def test_what_is_read_back_is_bounded() -> None:
    records = GrantLedger.records_of([((DEVICE, grant(i).address, TCP22), ("x", 10_000.0)) for i in range(10)], 0.0)
    assert len(GrantLedger.parse_dump(records, PROFILES, limit=4)) == 4
    assert {g.timeout for g in GrantLedger.parse_dump(records, PROFILES, max_timeout=3600)} == {3600}


def test_records_that_do_not_fit_are_skipped() -> None:
    good = GrantLedger.records_of([((DEVICE, grant(1).address, TCP22), ("x", 60.0))], 0.0)[0]
    bad = [
        good | {"ports": ["1-2"]},  # a profile the catalogue does not have
        good | {"ports": 22},  # not a list
        good | {"device": "not an address"},
        good | {"device": str(DEVICE6)},  # families differ
        good | {"expires_in": "soon"},
        good | {"expires_in": 0},
        {k: v for k, v in good.items() if k != "name"},
        "a string",
        None,
    ]
    assert GrantLedger.parse_dump([*bad, good], PROFILES) == [Grant(DEVICE, grant(1).address, TCP22, 60, "x")]
    assert GrantLedger.parse_dump({"not": "a list"}, PROFILES) == []


def test_grants_of_a_copy_leave_out_what_expired() -> None:
    ledger = GrantLedger()
    ledger.record([grant(1, 600), grant(2, 30)], 0.0)
    raw = ledger.raw()
    assert GrantLedger.grants_of(raw, 29.5) == [grant(1, 571), grant(2, 1)]
    assert GrantLedger.grants_of(raw, 30.0) == [grant(1, 570)]
    assert ledger.capacity == CLOUD_SET_SIZE  # the size each kernel set is declared with


def test_one_devices_entries_without_a_pass_over_all() -> None:
    ledger = GrantLedger(per_device=3)
    a, b = ipaddress.ip_address("192.168.20.10"), ipaddress.ip_address("192.168.20.11")
    weather = Profile("tcp", (PortRange(6066, 6066),))
    grants = [Grant(device, ipaddress.ip_address(f"203.0.113.{n}"), weather, 60, "weather.loxone.com")
              for device in (a, b) for n in (1, 2)]
    ledger.admit(grants, 0.0)
    assert sorted(str(key[1]) for key, _ in ledger.raw_of([a])) == ["203.0.113.1", "203.0.113.2"]
    ledger.forget(grants[:1])
    assert [str(key[1]) for key, _ in ledger.raw_of([a])] == ["203.0.113.2"]
    assert ledger.counts_per_device() == {"192.168.20.10": 1, "192.168.20.11": 2}
    assert sorted(ledger.raw_of([a, b])) == sorted(ledger.raw())


def test_expired_entries_dropped_for_room_are_handed_over_once_and_bounded() -> None:
    ledger = GrantLedger(per_device=2, departed_max=3)
    ledger.admit([grant(1, 10), grant(2, 20)], 0.0)
    assert ledger.admit([grant(3, 600)], 15.0) == [grant(3, 600)]  # at its cap: the expired one made room
    assert [(str(key[1]), until) for key, (_, until) in ledger.take_departed()] == [("203.0.113.1", 10.0)]
    assert ledger.take_departed() == []
    ledger.forget([grant(3)])  # refused by the kernel: never live, not departed
    assert not ledger.departed
    ledger.record([grant(n, 5) for n in range(10, 16)], 100.0)
    ledger.grants(200.0)  # prunes
    assert [str(key[1]) for key, _ in ledger.take_departed()] == ["203.0.113.13", "203.0.113.14", "203.0.113.15"]
