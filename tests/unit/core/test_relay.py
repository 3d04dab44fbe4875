"""Relay decisions: where a broadcast goes, marks, limits, and the copy's bytes."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import relay
from loxgw.core.catalog import PortRange
from loxgw.core.relay import CopyLedger, RateLimiter, Received, RelayInterface, RelayPolicy

IP = ipaddress.IPv4Address
IPv4 = ipaddress.IPv4Address
LAN = RelayInterface("br-lan", 3, IP("192.168.10.1"), IP("192.168.10.255"), role="clients")
IOT = RelayInterface("br-iot", 4, IP("192.168.20.1"), IP("192.168.20.255"), role="devices")
GUEST = RelayInterface("br-guest", 5, IP("192.168.30.1"), IP("192.168.30.255"))
WAN = RelayInterface("wan", 6, IP("198.51.100.2"), IP("198.51.100.255"), upstream=True)
IFACES = (LAN, IOT, GUEST, WAN)
POLICY = RelayPolicy((PortRange(7070, 7077), PortRange(7079, 7079)),
                     frozenset({"br-lan", "br-iot", "wan"}))
APP = IP("192.168.10.20")


def rx(ifindex: int = 3, dst: str = "255.255.255.255", dport: int = 7070, tos: int = 0,
       payload: bytes = b"\x00", src: IPv4 | None = None, truncated: bool = False) -> Received:
    return Received(ifindex, src or APP, 50000, IP(dst), dport, tos, payload, truncated)


def limiter() -> RateLimiter:
    return RateLimiter(per_source=20, global_rate=1000)


def test_search_from_lan_goes_to_iot_only_and_opens_the_answer() -> None:
    decision = relay.decide(rx(), IFACES, POLICY, limiter(), 0.0)
    assert [c.out.name for c in decision.copies] == ["br-iot"]  # not back to lan, not wan, not guest
    assert decision.allow_answers == ((APP, 7071), (APP, 50000))
    packet = decision.copies[0].packet
    tos, proto = packet[1], packet[9]
    src, dst = IP(packet[12:16]), IP(packet[16:20])
    sport, dport, length = struct.unpack_from("!HHH", packet, 20)
    assert (tos >> 2, proto, src, dst, sport, dport, length, packet[28:]) == (
        relay.RELAY_DSCP, 17, APP, IP("192.168.20.255"), 50000, 7070, 9, b"\x00",
    )


def test_copy_checksum_verifies() -> None:
    packet = relay.build_copy(APP, 50000, IP("192.168.20.255"), 7070, b"LoxLIVE?", 4)
    udp = packet[20:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    data = pseudo + udp + (b"\0" if len(udp) % 2 else b"")
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF


def test_subnet_broadcast_is_relayed_unicast_is_not() -> None:
    assert relay.decide(rx(dst="192.168.10.255"), IFACES, POLICY, limiter(), 0.0).copies
    assert relay.decide(rx(dst="192.168.10.1"), IFACES, POLICY, limiter(), 0.0).dropped == "not_broadcast"


@pytest.mark.parametrize("kwargs,reason", [
    ({"tos": relay.RELAY_TOS}, "already_relayed"),
    ({"dport": 7078}, "port"),
    ({"payload": b"x" * 1473}, "oversized"),
    ({"truncated": True}, "oversized"),
    ({"ifindex": 5}, "not_relay_interface"),
    ({"ifindex": 99}, "not_relay_interface"),
    ({"ifindex": 6}, "upstream"),
    ({"src": IP("192.168.10.1")}, "own_or_unspecified_source"),
    ({"src": IP("0.0.0.0")}, "own_or_unspecified_source"),
])
def test_drops(kwargs: dict[str, object], reason: str) -> None:
    assert relay.decide(rx(**kwargs), IFACES, POLICY, limiter(), 0.0).dropped == reason  # type: ignore[arg-type]


def test_upstream_only_when_allowed() -> None:
    allowing = RelayPolicy(POLICY.ports, POLICY.interfaces, allow_upstream=True)
    names = [c.out.name for c in relay.decide(rx(), IFACES, allowing, limiter(), 0.0).copies]
    assert names == ["br-iot", "wan"]


def test_answers_only_for_clients_asking_devices() -> None:
    decision = relay.decide(rx(ifindex=4, src=IP("192.168.20.10")), IFACES, POLICY, limiter(), 0.0)
    assert [c.out.name for c in decision.copies] == ["br-lan"]
    assert decision.allow_answers == ()


def test_rate_limit_per_source_and_global() -> None:
    lim = RateLimiter(per_source=20, global_rate=30)
    flood = [lim.allow(APP, 0.0) for _ in range(100)]
    assert flood.count("") == 20 and flood.count("rate_source") == 80
    other = IP("192.168.10.21")
    assert lim.allow(other, 0.0) == ""  # another source still gets through
    assert [lim.allow(APP, 0.5) for _ in range(11)].count("") == 10  # refills at 20/s
    many = [lim.allow(IP(f"10.0.{i // 250}.{i % 250}"), 0.5) for i in range(100)]
    assert "rate_global" in many


def test_rate_limiter_is_bounded() -> None:
    lim = RateLimiter(per_source=20, global_rate=1e9, capacity=100)
    for i in range(10000):
        lim.allow(IP(i + 1), 0.0)
    assert len(lim) == 100


def test_ledger_tells_own_copies_from_a_peers() -> None:
    ledger = CopyLedger()
    key = relay.copy_key(APP, 50000, 7070, b"\x00")
    ledger.sent(4, key, 0.0)
    assert ledger.marked_arrival(4, key, 0.001) == "own"
    assert ledger.peer_active(4, 0.001) is False
    assert ledger.marked_arrival(4, key, 0.002) == "peer"  # a second copy: someone else sent it
    assert ledger.peer_active(4, 1.0) is True
    assert ledger.peer_active(4, 100.0) is False


def test_holdoffs_differ_for_neighbouring_addresses() -> None:
    a = RelayInterface("x", 1, IP("192.168.20.1"), IP("192.168.20.255"))
    b = RelayInterface("y", 1, IP("192.168.20.2"), IP("192.168.20.255"))
    assert relay.holdoff(a) < relay.holdoff(b) < 0.011


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 255), st.integers(1, 65535), st.integers(0, 10))
def test_any_datagram_gives_a_decision(payload: bytes, tos: int, dport: int, ifindex: int) -> None:
    decision = relay.decide(rx(ifindex=ifindex, tos=tos, dport=dport, payload=payload), IFACES, POLICY,
                            limiter(), 0.0)
    assert bool(decision.copies) != bool(decision.dropped)
