"""The SSDP reflector: the App's search in, Loxone answers out to the asker, NOTIFYs across, LOCATION ports."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core.catalog import PortRange
from loxgw.core.pinholes import Pinhole
from loxgw.core.reflect import COPY_TOS, ReflectInterface, Scope, Transmit
from loxgw.core.reflectssdp import SSDP_GROUP, SsdpReflector, location_port, max_age, read_head
from loxgw.core.relay import RateLimiter

IOT = ReflectInterface("br-iot", 2, IPv4Address("192.168.20.1"), IPv4Network("192.168.20.0/24"), "devices")
LAN = ReflectInterface("br-lan", 3, IPv4Address("192.168.10.1"), IPv4Network("192.168.10.0/24"), "clients")
MINISERVER = IPv4Address("192.168.20.10")
TV = IPv4Address("192.168.20.50")
APP = IPv4Address("192.168.10.20")

SEARCH = (b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 2\r\n'
          b"ST: upnp:rootdevice\r\n\r\n")
# The Miniserver's answer (LOXONE-FACTS.md: SERVER and LOCATION as it sends them), LF line ends.
ANSWER = (b"HTTP/1.1 200 OK\nCACHE-CONTROL: max-age=1800\nLOCATION: http://192.168.20.10:80/upnp.xml\n"
          b"SERVER: Loxone Miniserver Home UPnP/1.0\nST: upnp:rootdevice\n"
          b"USN: uuid:aaaa-504f94a00001::upnp:rootdevice\n\n")
NOTIFY = (b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=600\r\n"
          b"LOCATION: http://192.168.20.10:8080/upnp.xml\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n"
          b"USN: uuid:aaaa-504f94a00001::upnp:rootdevice\r\n\r\n")


def reflector() -> SsdpReflector:
    scope = Scope()
    scope.set_interfaces([IOT, LAN])
    scope.set_devices([MINISERVER])
    return SsdpReflector(scope, RateLimiter(20, 200))


def test_the_apps_search_goes_into_devices_zones_from_the_search_socket() -> None:
    r = reflector()
    assert r.receive(LAN.index, APP, 50000, SEARCH, 0.0) == [Transmit(IOT.index, SSDP_GROUP, 1900, SEARCH,
                                                                       "ssdp-proxy")]


def test_a_loxone_answer_goes_to_the_asker_and_opens_its_location_port() -> None:
    r = reflector()
    r.receive(LAN.index, APP, 50000, SEARCH, 0.0)
    out = r.receive(IOT.index, MINISERVER, 1900, ANSWER, 1.0, proxy=True)
    assert out == [Transmit(0, APP, 50000, ANSWER, "ssdp-proxy")]
    assert r.ledger.pinholes() == (Pinhole("inbound", None, MINISERVER, "tcp", PortRange(80, 80), "ssdp-location"),)
    assert r.get_timer() == 1801.0


def test_answers_reach_only_askers_of_their_target_while_they_wait() -> None:
    r = reflector()
    r.receive(LAN.index, APP, 50000, SEARCH.replace(b"upnp:rootdevice", b"ssdp:all"), 0.0)
    r.receive(LAN.index, IPv4Address("192.168.10.21"), 50001, SEARCH.replace(b"upnp:rootdevice", b"urn:x"), 0.0)
    assert [t.dst for t in r.receive(IOT.index, MINISERVER, 1900, ANSWER, 1.0, proxy=True)] == [APP]
    assert r.receive(IOT.index, MINISERVER, 1900, ANSWER, 3.5, proxy=True) == []  # MX 2 + 1 s
    assert r.counters["dropped_no_asker_waiting"] == 1


def test_answers_from_other_hosts_or_naming_other_hosts_go_nowhere() -> None:
    r = reflector()
    r.receive(LAN.index, APP, 50000, SEARCH, 0.0)
    tv = ANSWER.replace(b"192.168.20.10", b"192.168.20.50")
    assert r.receive(IOT.index, TV, 1900, tv, 1.0, proxy=True) == []
    elsewhere = ANSWER.replace(b"http://192.168.20.10:80", b"http://203.0.113.9:80")
    assert r.receive(IOT.index, MINISERVER, 1900, elsewhere, 1.0, proxy=True) == []
    assert (r.counters["dropped_not_loxone"], r.counters["dropped_location_not_the_device"]) == (1, 1)
    assert r.ledger.pinholes() == ()


def test_a_loxone_notify_crosses_to_clients_and_byebye_closes_its_port() -> None:
    r = reflector()
    assert r.receive(IOT.index, MINISERVER, 1900, NOTIFY, 0.0) == [Transmit(LAN.index, SSDP_GROUP, 1900, NOTIFY,
                                                                              "ssdp")]
    assert [h.ports for h in r.ledger.pinholes()] == [PortRange(8080, 8080)]
    byebye = NOTIFY.replace(b"ssdp:alive", b"ssdp:byebye")
    assert len(r.receive(IOT.index, MINISERVER, 1900, byebye, 5.0)) == 1
    r.handle_timer(6.0)
    assert r.ledger.pinholes() == ()


def test_nothing_crosses_the_other_way_or_twice() -> None:
    r = reflector()
    assert r.receive(IOT.index, MINISERVER, 1900, SEARCH, 0.0) == []
    assert r.receive(LAN.index, APP, 1900, NOTIFY, 0.0) == []
    assert r.receive(IOT.index, TV, 1900, NOTIFY.replace(b"192.168.20.10", b"192.168.20.50"), 0.0) == []
    assert r.receive(LAN.index, APP, 50000, SEARCH, 0.0, tos=COPY_TOS) == []
    assert r.receive(LAN.index, LAN.address, 50000, SEARCH, 0.0) == []
    assert r.receive(LAN.index, APP, 50000, ANSWER, 0.0, proxy=True) == []
    assert {k: v for k, v in r.counters.items() if k.startswith("dropped_")} == {
        "dropped_search_from_devices": 1, "dropped_notify_from_clients": 1, "dropped_not_loxone": 1,
        "dropped_own_copy": 2, "dropped_not_an_answer": 1}


def test_waiting_searches_are_bounded() -> None:
    r = reflector()
    for i in range(200):
        r.receive(LAN.index, IPv4Address(f"192.168.10.{i % 200 + 2}"), 50000, SEARCH, float(i) / 1000)
    assert r.status(0.2)["searches_waiting"] == 64


@pytest.mark.parametrize("data", [b"\xff\xfe", b"M-SEARCH * HTTP/1.1\r\nno colon\r\n\r\n", b"x" * 2049,
                                  b"NOTIFY * HTTP/1.1\r\n" + b"A: b\r\n" * 40])
def test_malformed_heads_are_refused(data: bytes) -> None:
    with pytest.raises((ValueError, UnicodeDecodeError)):
        read_head(data)


def test_location_and_max_age() -> None:
    assert location_port("http://192.168.20.10:8080/x.xml", MINISERVER) == 8080
    assert location_port("http://192.168.20.10/x.xml", MINISERVER) == 80
    assert location_port("https://192.168.20.10/x.xml", MINISERVER) is None
    assert location_port("http://192.168.20.10:99999/", MINISERVER) is None
    assert location_port("http://miniserver/", MINISERVER) is None
    assert (max_age({"cache-control": "no-cache, max-age=60"}), max_age({}),
            max_age({"cache-control": "max-age=9999999"})) == (60, 1800, 86400)


@given(st.binary(max_size=2100), st.sampled_from(["device", "client", "answer"]))
@settings(max_examples=300, deadline=None)
def test_any_datagram_is_reflected_or_dropped_never_raises(data: bytes, kind: str) -> None:
    r = reflector()
    r.receive(LAN.index, APP, 50000, SEARCH, 0.0)
    if kind == "client":
        r.receive(LAN.index, APP, 50000, data, 0.0)
    else:
        r.receive(IOT.index, MINISERVER, 1900, data, 0.0, proxy=kind == "answer")
        r.receive(IOT.index, MINISERVER, 1900, ANSWER[: len(data) % len(ANSWER)] + data, 0.0, proxy=True)
