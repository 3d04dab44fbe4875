"""The KNX-IP router core: which routing telegrams are copied where, and two routers on one pair of segments."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from loxgw.core import knx
from loxgw.core.knx import HELLO, KNX_GROUP, Copy, KnxInterface, KnxRouter
from loxgw.core.relaylimit import RateLimiter
from loxgw.core.relaywire import RELAY_TOS

IP = IPv4Address
# Router A (.1 on both segments) and router B (.3): A has the lower tag and leads.
A_LAN, A_IOT = KnxInterface("br-lan", 3, IP("192.168.10.1")), KnxInterface("br-iot", 4, IP("192.168.20.1"))
B_LAN, B_IOT = KnxInterface("lan0", 13, IP("192.168.10.3")), KnxInterface("iot0", 14, IP("192.168.20.3"))
SENDER = IP("192.168.20.50")  # a KNX IP router in the IoT VLAN
# A routing indication (0x0530): cEMI L_Data.ind, group write 1/1/1 = on.
TELEGRAM = bytes.fromhex("061005300011" "2900bce0110109010100" "81")


def router(*interfaces: KnxInterface, rate: float = 1e9) -> KnxRouter:
    core = KnxRouter(frozenset(i.name for i in interfaces), RateLimiter(rate, 1e9))
    core.set_interfaces(list(interfaces), frozenset(i.address for i in interfaces))
    return core


def test_a_routing_telegram_is_copied_to_the_other_zone_only() -> None:
    core = router(A_LAN, A_IOT)
    assert core.receive(A_IOT.index, SENDER, KNX_GROUP, TELEGRAM, 0, 1.0) == [Copy(A_LAN.index, TELEGRAM)]
    assert core.counters == {"received": 1, "copied": 1}


def test_what_is_never_copied() -> None:
    core = router(A_LAN, A_IOT)
    bad_version = TELEGRAM[:1] + b"\x20" + TELEGRAM[2:]
    search = bytes.fromhex("0610020100080000")  # SEARCH_REQUEST: discovery, not routing
    cases = [
        (A_IOT.index, SENDER, IP("192.168.20.1"), TELEGRAM, 0, "dropped_not_group"),
        (A_IOT.index, IP("192.168.20.1"), KNX_GROUP, TELEGRAM, 0, "dropped_own_source"),
        (A_IOT.index, SENDER, KNX_GROUP, TELEGRAM[:-1], 0, "dropped_malformed"),
        (A_IOT.index, SENDER, KNX_GROUP, bad_version, 0, "dropped_malformed"),
        (A_IOT.index, SENDER, KNX_GROUP, search, 0, "dropped_service"),
        (A_IOT.index, SENDER, KNX_GROUP, b"\x06\x10\x05\x30\x02\x02" + bytes(508), 0, "dropped_oversized"),
        (99, SENDER, KNX_GROUP, TELEGRAM, 0, "dropped_not_zone_interface"),
        (A_IOT.index, IP("192.168.20.3"), KNX_GROUP, TELEGRAM, RELAY_TOS, "peer_copy_seen"),  # marked: a copy
    ]
    for ifindex, src, dst, data, tos, reason in cases:
        before = core.counters.get(reason, 0)
        assert core.receive(ifindex, src, dst, data, tos, 1.0) == [], reason
        assert core.counters[reason] == before + 1, reason
    assert "copied" not in core.counters


def test_a_sender_is_held_to_its_rate() -> None:
    core = router(A_LAN, A_IOT, rate=2)
    copied = [len(core.receive(A_IOT.index, SENDER, KNX_GROUP, TELEGRAM, 0, 1.0)) for _ in range(4)]
    assert copied == [1, 1, 0, 0]
    assert core.counters["dropped_rate_source"] == 2
    assert len(core.receive(A_IOT.index, IP("192.168.20.51"), KNX_GROUP, TELEGRAM, 0, 1.0)) == 1


def hello_exchange(a: KnxRouter, b: KnxRouter, now: float) -> None:
    """B starts after A: B's hellos reach A, whose answers reach B."""
    for copy in b.hellos():
        iface = {B_LAN.index: A_LAN, B_IOT.index: A_IOT}[copy.ifindex]
        src = {B_LAN.index: B_LAN, B_IOT.index: B_IOT}[copy.ifindex].address
        answers = a.receive(iface.index, src, KNX_GROUP, copy.payload, RELAY_TOS, now)
        assert answers == [Copy(iface.index, HELLO)]
        back = {A_LAN.index: B_LAN, A_IOT.index: B_IOT}[iface.index]
        # A is new to B too, so B answers once more; A knows B by then, and it ends there.
        assert b.receive(back.index, iface.address, KNX_GROUP, HELLO, RELAY_TOS, now) == [Copy(back.index, HELLO)]
        assert a.receive(iface.index, src, KNX_GROUP, HELLO, RELAY_TOS, now) == []


def test_two_routers_one_copy_per_segment_even_for_the_first_telegram() -> None:
    a, b = router(A_LAN, A_IOT), router(B_LAN, B_IOT)
    hello_exchange(a, b, 1.0)
    # The telegram from iot reaches both. A leads on lan: it sends at once; B holds its copy back.
    assert a.receive(A_IOT.index, SENDER, KNX_GROUP, TELEGRAM, 0, 2.0) == [Copy(A_LAN.index, TELEGRAM)]
    assert b.receive(B_IOT.index, SENDER, KNX_GROUP, TELEGRAM, 0, 2.0) == []
    assert b.timer_changed
    due = b.get_timer()
    assert due is not None and 2.0 < due <= 2.5
    # A's copy arrives on B's lan (marked, from A's address): B drops its own, and never copies A's.
    assert b.receive(B_LAN.index, A_LAN.address, KNX_GROUP, TELEGRAM, RELAY_TOS, 2.005) == []
    assert b.handle_timer(due) == []
    assert (b.counters["deferred"], b.counters["left_to_peer"]) == (1, 1)
    assert "copied" not in b.counters


def test_the_follower_sends_when_the_leaders_copy_never_comes() -> None:
    a, b = router(A_LAN, A_IOT), router(B_LAN, B_IOT)
    hello_exchange(a, b, 1.0)
    assert b.receive(B_IOT.index, SENDER, KNX_GROUP, TELEGRAM, 0, 2.0) == []
    due = b.get_timer()
    assert due is not None
    assert b.handle_timer(due) == [Copy(B_LAN.index, TELEGRAM)]


def test_a_hello_is_answered_once_per_new_peer_and_never_copied() -> None:
    a = router(A_LAN, A_IOT)
    peer = IP("192.168.10.3")
    assert a.receive(A_LAN.index, peer, KNX_GROUP, HELLO, RELAY_TOS, 1.0) == [Copy(A_LAN.index, HELLO)]
    assert a.receive(A_LAN.index, peer, KNX_GROUP, HELLO, RELAY_TOS, 2.0) == []  # known already
    # Forged hellos from ever new tags: one answer a second at most.
    answers = sum(len(a.receive(A_LAN.index, IP(f"192.168.10.{n}"), KNX_GROUP, HELLO, RELAY_TOS, 2.5))
                  for n in range(10, 60))
    assert answers == 1
    assert a.counters["peer_hello_seen"] == 52


@given(st.binary(max_size=600), st.integers(0, 255))
def test_any_datagram_is_copied_whole_or_dropped(data: bytes, tos: int) -> None:
    core = router(A_LAN, A_IOT)
    out = core.receive(A_IOT.index, SENDER, KNX_GROUP, data, tos, 1.0)
    hello_answer = data == HELLO and out == [Copy(A_IOT.index, HELLO)]
    assert out in ([], [Copy(A_LAN.index, data)]) or hello_answer
    if out:
        assert knx.frame_service(data) in knx.ROUTING_SERVICES and len(data) <= knx.MAX_FRAME


def test_knx_secure_timer_notify_crosses_too() -> None:
    # KNX IP Secure keeps both zones' replay timers in step with TimerNotify (0x0955): without it,
    # secure routing across zones fails once the timers drift. A 0x0955 header with a 36-byte body.
    notify = bytes.fromhex("06100955" "0024") + bytes(30)
    core = router(A_LAN, A_IOT)
    assert core.receive(A_IOT.index, SENDER, KNX_GROUP, notify, 0, 1.0) == [Copy(A_LAN.index, notify)]
