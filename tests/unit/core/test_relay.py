"""The relay core (core.relay, relaywire, relaypeers, relaylimit): datagrams and `now` in, copies out.

No sockets and no sleeping: time is an argument, and the "kernel" is a
helper that builds IPv4/UDP datagrams with checksums computed the slow,
obvious way (sum of 16-bit words), against which the copies are checked.
"""

from __future__ import annotations

import heapq
import ipaddress
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import relay, relaypeers, relaywire
from loxgw.core.catalog import PortRange
from loxgw.core.relay import AnswerWindow, DiscoveryAnswer, RateLimiter, Relay, RelayInterface, RelayPolicy
from loxgw.core.relaylimit import TokenBucket

IP = ipaddress.IPv4Address
LAN = RelayInterface("br-lan", 3, IP("192.168.10.1"), IP("192.168.10.255"), role="clients", mac=b"\x02" * 6)
IOT = RelayInterface("br-iot", 4, IP("192.168.20.1"), IP("192.168.20.255"), role="devices", mac=b"\x04" * 6)
GUEST = RelayInterface("br-guest", 5, IP("192.168.30.1"), IP("192.168.30.255"), mac=b"\x05" * 6)
WAN = RelayInterface("wan", 6, IP("198.51.100.2"), IP("198.51.100.255"), upstream=True)
IFACES = (LAN, IOT, GUEST, WAN)
PORTS = (PortRange(7070, 7077), PortRange(7079, 7079))
POLICY = RelayPolicy(PORTS, frozenset({"br-lan", "br-iot", "wan"}))
APP = IP("192.168.10.20")
BROADCAST = IP("255.255.255.255")


def ones_sum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def datagram(src: IP = APP, dst: IP = BROADCAST, sport: int = 50000, dport: int = 7070, payload: bytes = b"\x00",
             tos: int = 0, ttl: int = 64, ident: int = 1, checksum: bool = True) -> bytes:
    """An IPv4/UDP datagram as a raw socket delivers it."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if checksum:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, len(udp))
        udp = udp[:6] + struct.pack("!H", (0xFFFF - ones_sum(pseudo + udp)) or 0xFFFF) + udp[8:]
    return struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(udp), ident, 0, ttl, 17, 0, src.packed, dst.packed) + udp


def ip_of(frame: bytes, iface: RelayInterface) -> bytes:
    """The IP packet inside a copy (after its Ethernet header, if the interface has one)."""
    if iface.mac:
        assert (frame[:6], frame[6:12], frame[12:14]) == (b"\xff" * 6, iface.mac, b"\x08\x00")
        return frame[14:]
    return frame


def assert_valid(packet: bytes) -> None:
    """Both checksums verify (the IP header's, and UDP's over the pseudo-header, unless it is 0)."""
    assert ones_sum(packet[:20]) == 0xFFFF
    udp = packet[20:]
    if udp[6:8] != b"\0\0":
        assert ones_sum(packet[12:20] + struct.pack("!BBH", 0, 17, len(udp)) + udp) == 0xFFFF


def make(policy: RelayPolicy = POLICY, interfaces: Sequence[RelayInterface] = IFACES,
         limiter: RateLimiter | None = None) -> Relay:
    core = Relay(policy, limiter if limiter is not None else RateLimiter(per_source=20, global_rate=1000))
    core.set_interfaces(interfaces)
    return core


def events(core: Relay) -> list[relay.Event]:
    out = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


# --- one relay ----------------------------------------------------------------------------------

def test_search_from_lan_goes_to_iot_only_and_opens_the_answer_windows() -> None:
    core = make()
    copies = core.receive(LAN.index, datagram(payload=b"\x00", ttl=7), 0.0)
    assert [index for index, _ in copies] == [IOT.index]  # not back to lan, not wan, not guest
    packet = ip_of(copies[0][1], IOT)
    assert_valid(packet)
    tos, ident, flags, ttl, proto = packet[1], *struct.unpack_from("!HH", packet, 4), packet[8], packet[9]
    src, dst = IP(packet[12:16]), IP(packet[16:20])
    sport, dport, length = struct.unpack_from("!HHH", packet, 20)
    assert (tos >> 2, ident, flags, ttl, proto, src, dst, sport, dport, length, packet[28:]) == (
        relay.RELAY_DSCP, 0x1401, 0x4000, 7, 17, APP, IP("192.168.20.255"), 50000, 7070, 9, b"\x00")
    assert events(core) == [AnswerWindow("br-iot", int(APP), 50000, 10), AnswerWindow("br-iot", int(APP), 7071, 10)]


def test_copy_without_a_mac_is_an_ip_packet() -> None:
    iot = RelayInterface("tun0", 4, IP("192.168.20.1"), IP("192.168.20.255"), role="devices")
    core = make(RelayPolicy(PORTS, frozenset({"br-lan", "tun0"})), (LAN, iot))
    (index, packet), = core.receive(LAN.index, datagram(), 0.0)
    assert (index, packet[0], IP(packet[16:20])) == (iot.index, 0x45, IP("192.168.20.255"))
    assert_valid(packet)


def test_a_datagram_without_udp_checksum_gives_a_copy_without_one() -> None:
    (_, frame), = make().receive(LAN.index, datagram(payload=b"abc", checksum=False), 0.0)
    assert ip_of(frame, IOT)[26:28] == b"\0\0"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=relay.MAX_RELAY_PAYLOAD), st.integers(1, 65535), st.integers(1, 254),
       st.integers(1, 255))
def test_every_copy_checks_out(payload: bytes, sport: int, host: int, ttl: int) -> None:
    src = IP(f"192.168.10.{host}") if host != 1 else IP("10.0.0.1")
    core = make(limiter=RateLimiter(1e9, 1e9))
    (_, frame), = core.receive(LAN.index, datagram(src, sport=sport, payload=payload, ttl=ttl), 0.0)
    packet = ip_of(frame, IOT)
    assert_valid(packet)
    assert (IP(packet[12:16]), packet[8], packet[28:]) == (src, ttl, payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 65535), st.integers(1, 255), st.booleans())
def test_the_hot_path_builds_what_the_copy_template_builds(payload: bytes, sport: int, ttl: int,
                                                            checksum: bool) -> None:
    core = make(limiter=RateLimiter(1e9, 1e9))
    (_, frame), = core.receive(LAN.index, datagram(sport=sport, payload=payload, ttl=ttl, checksum=checksum), 0.0)
    template = relaywire.CopyTemplate(int(IOT.address), int(IOT.broadcast), IOT.mac)
    partial = relaywire.udp_sum(int(APP), sport, 7070, payload) if checksum else None
    assert frame == template.frame(int(APP), sport, 7070, ttl, payload, partial)


def test_subnet_broadcast_is_relayed_unicast_is_not() -> None:
    core = make()
    assert len(core.receive(LAN.index, datagram(dst=IP("192.168.10.255")), 0.0)) == 1
    assert core.receive(LAN.index, datagram(dst=IP("192.168.10.1")), 0.0) == ()
    assert core.status(0.0)["counters"]["br-lan:7070:dropped_not_broadcast"] == 1


@pytest.mark.parametrize("index,kwargs,counters", [
    (LAN.index, {"dport": 7078}, {"br-lan:other:dropped_port": 1}),
    (LAN.index, {"payload": b"x" * 1473}, {"br-lan:7070:received": 1, "br-lan:7070:dropped_oversized": 1}),
    (GUEST.index, {}, {"other:other:dropped_not_relay_interface": 1}),
    (99, {}, {"other:other:dropped_not_relay_interface": 1}),
    (WAN.index, {}, {"wan:7070:received": 1, "wan:7070:dropped_upstream": 1}),
    (LAN.index, {"src": IP("192.168.10.1")},
     {"br-lan:7070:received": 1, "br-lan:7070:dropped_own_or_unspecified_source": 1}),
    (LAN.index, {"src": IP("0.0.0.0")},
     {"br-lan:7070:received": 1, "br-lan:7070:dropped_own_or_unspecified_source": 1}),
])
def test_drops(index: int, kwargs: dict[str, object], counters: dict[str, int]) -> None:
    core = make()
    assert core.receive(index, datagram(**kwargs), 0.0) == ()  # type: ignore[arg-type]
    assert core.status(0.0)["counters"] == counters


@pytest.mark.parametrize("data", [b"", b"\x45", datagram()[:27], b"\x46" + datagram()[1:], b"\x60" * 40,
                                  datagram()[:9] + b"\x06" + datagram()[10:]])
def test_malformed_datagrams_are_counted(data: bytes) -> None:
    core = make()
    assert core.receive(LAN.index, data, 0.0) == ()
    assert core.status(0.0)["counters"] == {"br-lan:other:dropped_malformed": 1}


def test_a_datagram_cut_by_the_read_size_counts_as_oversized() -> None:
    core = make()
    assert core.receive(LAN.index, datagram(payload=b"x" * 3000)[: relaywire.RECEIVE_SIZE], 0.0) == ()
    assert core.status(0.0)["counters"] == {"br-lan:other:dropped_oversized": 1}


def test_upstream_only_when_allowed() -> None:
    core = make(RelayPolicy(PORTS, POLICY.interfaces, allow_upstream=True))
    assert [i for i, _ in core.receive(LAN.index, datagram(), 0.0)] == [IOT.index, WAN.index]


def test_answers_only_for_clients_asking_devices() -> None:
    core = make()
    assert [i for i, _ in core.receive(IOT.index, datagram(IP("192.168.20.10")), 0.0)] == [LAN.index]
    assert events(core) == []


def test_windows_are_written_again_only_after_half_their_time() -> None:
    core = make()
    core.receive(LAN.index, datagram(dport=7075), 0.0)
    assert events(core) == [AnswerWindow("br-iot", int(APP), 50000, 10)]  # 7071 only for a 7070 search
    core.receive(LAN.index, datagram(dport=7075), relay.ANSWER_REFRESH - 0.1)
    assert events(core) == []
    core.receive(LAN.index, datagram(dport=7075), relay.ANSWER_REFRESH + 0.1)
    assert events(core) == [AnswerWindow("br-iot", int(APP), 50000, 10)]


def test_a_window_another_search_opened_is_written_again_in_time() -> None:
    """Searches skip the window check while their windows are fresh; a shared window still gets refreshed."""
    core = make()
    core.receive(LAN.index, datagram(sport=7071, dport=7070), 0.0)  # opens (asker, 7071)
    assert events(core) == [AnswerWindow("br-iot", int(APP), 7071, 10)]
    core.receive(LAN.index, datagram(sport=50000, dport=7070), 4.0)  # (asker, 7071) is 4 s old: kept
    assert events(core) == [AnswerWindow("br-iot", int(APP), 50000, 10)]
    core.receive(LAN.index, datagram(sport=50000, dport=7070), relay.ANSWER_REFRESH + 0.1)
    assert events(core) == [AnswerWindow("br-iot", int(APP), 7071, 10)]
    core.receive(LAN.index, datagram(sport=50000, dport=7070), 4.0 + relay.ANSWER_REFRESH + 0.1)
    assert events(core) == [AnswerWindow("br-iot", int(APP), 50000, 10)]


def test_answers_to_the_router_are_handed_on() -> None:
    core = make()
    core.receive_answer(int(IP("192.168.20.10")), b"LoxLIVE: Home")
    assert events(core) == [DiscoveryAnswer(int(IP("192.168.20.10")), b"LoxLIVE: Home")]
    assert core.status(0.0)["counters"] == {"discovery_answers_handed_on": 1}


def test_events_are_bounded() -> None:
    core = make()
    for i in range(relay.EVENTS_KEPT + 10):
        core.receive_answer(i, b"")
    assert (len(events(core)), core.status(0.0)["counters"]["events_dropped"]) == (relay.EVENTS_KEPT, 10)


def test_send_errors_are_counted_where_the_copy_was() -> None:
    core = make()
    (index, frame), = core.receive(LAN.index, datagram(dport=7072), 0.0)
    core.transmit_failed(index, frame)
    assert core.status(0.0)["counters"]["br-iot:7072:send_errors"] == 1


def test_many_ports_are_counted_per_range() -> None:
    core = make(RelayPolicy((PortRange(1000, 1999), PortRange(7079, 7079)), POLICY.interfaces))
    core.receive(LAN.index, datagram(dport=1500), 0.0)
    core.receive(LAN.index, datagram(dport=7079, sport=1), 0.0)
    assert core.status(0.0)["counters"] == {"br-lan:1000-1999:received": 1, "br-iot:1000-1999:relayed": 1,
                                            "br-lan:7079:received": 1, "br-iot:7079:relayed": 1}


def test_interfaces_that_change_keep_their_counters() -> None:
    core = make()
    core.receive(LAN.index, datagram(), 0.0)
    core.set_interfaces([RelayInterface("br-lan", 13, LAN.address, LAN.broadcast, role="clients"), IOT])
    core.receive(13, datagram(), 1.0)
    assert core.status(1.0)["counters"]["br-lan:7070:received"] == 2


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1600), st.sampled_from([LAN.index, IOT.index, WAN.index, 0, 99]))
def test_any_bytes_give_copies_or_a_count_never_an_exception(data: bytes, index: int) -> None:
    core = make()
    for out, frame in core.receive(index, data, 0.0):
        assert out in (LAN.index, IOT.index)
        assert_valid(ip_of(frame, LAN if out == LAN.index else IOT))
    assert sum(core.status(0.0)["counters"].values()) >= 1


# --- rate limits --------------------------------------------------------------------------------

def test_rate_limit_per_source_and_global() -> None:
    lim = RateLimiter(per_source=20, global_rate=30)
    flood = [lim.allow(1, 0.0) for _ in range(100)]
    assert (flood.count(""), flood.count("rate_source")) == (20, 80)
    assert lim.allow(2, 0.0) == ""  # another source still gets through
    assert [lim.allow(1, 0.5) for _ in range(11)].count("") == 10  # refills at 20/s
    assert "rate_global" in [lim.allow(1000 + i, 0.5) for i in range(100)]


def test_rate_limiter_is_bounded_and_takes_address_objects_too() -> None:
    lim = RateLimiter(per_source=20, global_rate=1e9, capacity=100)
    for i in range(10000):
        lim.allow(IP(i + 1), 0.0)
    assert len(lim) == 100


def test_a_flood_is_cut_to_the_limits() -> None:
    core = make(limiter=RateLimiter(per_source=20, global_rate=2000))
    copies = sum(len(core.receive(LAN.index, datagram(), now)) for now in (0.0, 1.0) for _ in range(10000))
    counters = core.status(1.0)["counters"]
    assert (copies, counters["br-lan:7070:dropped_rate_source"]) == (40, 19960)  # burst 20, then 20/s


# --- wire: parser, filters, keys ----------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_parse_gives_a_header_or_none(data: bytes) -> None:
    head = relaywire.parse(data)
    if head is not None:
        assert len(head) == 9 and len(head[8]) <= len(data) - 28


def test_parse_reads_past_ip_options() -> None:
    plain = datagram(payload=b"hi")
    with_options = bytes([0x46]) + plain[1:2] + struct.pack("!H", len(plain) + 4) + plain[4:20] + b"\x01" * 4 \
        + plain[20:]
    assert relaywire.parse(with_options) == relaywire.parse(plain)
    assert relaywire.parse(plain) == (0, 1, 64, int(APP), int(BROADCAST), 50000, 7070,
                                      struct.unpack_from("!H", plain, 26)[0], b"hi")


def test_receive_filter_passes_broadcasts_to_relayed_ports_only() -> None:
    ether = relaywire.receive_filter(PORTS, ethernet=True)
    other = relaywire.receive_filter(PORTS, ethernet=False)
    b, host, loop = relaywire.PACKET_BROADCAST, relaywire.PACKET_HOST, relaywire.PACKET_LOOPBACK
    cases = [(7069, b, False, False), (7070, b, True, True), (7077, b, True, True), (7078, b, False, False),
             (7079, b, True, True), (7080, b, False, False), (7070, host, False, True),
             (7070, loop, False, False)]  # looped back: our own copy, sent at the IP layer
    for port, kind, on_ether, on_other in cases:
        packet = datagram(dport=port)
        assert (relaywire.run_filter(ether, packet, kind), relaywire.run_filter(other, packet, kind)) == (
            on_ether, on_other), (port, kind)


def test_receive_filter_reads_the_port_past_ip_options() -> None:
    plain = datagram(dport=7079)
    options = bytes([0x46]) + plain[1:20] + b"\x01" * 4 + plain[20:]
    assert relaywire.run_filter(relaywire.receive_filter(PORTS, True), options, relaywire.PACKET_BROADCAST)


def test_receive_filter_with_many_ranges_leaves_ports_to_the_core() -> None:
    many = tuple(PortRange(p, p) for p in range(1000, 1000 + 2 * relaywire.MAX_FILTER_RANGES + 2, 2))
    prog = relaywire.receive_filter(many, ethernet=True)
    assert len(prog) == 4 and relaywire.run_filter(prog, datagram(dport=9), relaywire.PACKET_BROADCAST)


def test_peer_copy_filter_passes_only_other_relays_copies_to_relayed_ports() -> None:
    b, loop = relaywire.PACKET_BROADCAST, relaywire.PACKET_LOOPBACK
    many = tuple(PortRange(p, p) for p in range(1000, 1000 + 2 * relaywire.MAX_FILTER_RANGES + 2, 2))
    for ports, kinds in ((PORTS, ((True, b), (False, b), (False, relaywire.PACKET_HOST))),
                         (many, ((True, b), (False, b), (False, relaywire.PACKET_HOST)))):
        for ethernet, kind in kinds:
            prog = relaywire.receive_filter(ports, ethernet=ethernet, peer_copies_only=True)
            copy = bytearray(datagram(dport=7079 if ports is PORTS else 1000))
            original = bytes(copy)
            copy[1] = relaywire.RELAY_TOS | 0x01  # ECN bits do not matter
            assert (relaywire.run_filter(prog, bytes(copy), kind), relaywire.run_filter(prog, original, kind)) == (
                True, False), (ethernet, kind)
    prog = relaywire.receive_filter(PORTS, ethernet=False, peer_copies_only=True)
    copy = bytearray(datagram(dport=7079))
    copy[1] = relaywire.RELAY_TOS
    assert relaywire.run_filter(prog, bytes(copy), loop) is False  # our own, looped back
    copy[23] = 80  # destination port 7760: not relayed
    assert relaywire.run_filter(prog, bytes(copy), b) is False


def test_the_answer_filter_takes_datagrams_to_this_host_only() -> None:
    prog = relaywire.answer_filter()
    assert [relaywire.run_filter(prog, datagram(), kind) for kind in (0, 1, 5)] == [True, False, False]


def test_answer_keys_in_both_layouts() -> None:
    key = relaywire.answer_key("br-iot", int(APP), 7071)
    assert (len(key), key) == (relaywire.ANSWER_KEY_LENGTH, b"br-iot".ljust(16, b"\0") + APP.packed + b"\x1b\x9f\0\0")
    assert relaywire.answer_key("br-iot", int(APP), 7071, relaywire.LEGACY_ANSWER_KEY_LENGTH) == \
        APP.packed + b"\x1b\x9f\0\0"


def test_merged_ranges() -> None:
    assert relaywire.merged((PortRange(7079, 7079), PortRange(7070, 7077), PortRange(7078, 7078),
                             PortRange(5000, 5000))) == [(5000, 5000), (7070, 7079)]


# --- two relays on the same segments ------------------------------------------------------------

LAN_B = RelayInterface("lan0", 13, IP("192.168.10.3"), IP("192.168.10.255"), mac=b"\x12" * 6)
IOT_B = RelayInterface("iot0", 14, IP("192.168.20.3"), IP("192.168.20.255"), mac=b"\x14" * 6)


def pair() -> tuple[Relay, Relay]:
    """The router (address .1: it leads) and a second box (.3) on the same two segments."""
    a = make(RelayPolicy(PORTS, frozenset({"br-lan", "br-iot"})), (LAN, IOT), RateLimiter(1e9, 1e9))
    b = make(RelayPolicy(PORTS, frozenset({"lan0", "iot0"})), (LAN_B, IOT_B), RateLimiter(1e9, 1e9))
    return a, b


def on_wire(copies: Sequence[relay.Transmit]) -> bytes:
    """The copy as the other relay receives it on the same segment (raw socket: IP header first)."""
    (_, frame), = copies
    return frame[14:]


def meet(a: Relay, b: Relay, now: float) -> None:
    """Both relay a broadcast before they know each other; each learns of the other from its copy."""
    original = datagram(payload=b"hello")
    to_b, to_a = on_wire(a.receive(LAN.index, original, now)), on_wire(b.receive(LAN_B.index, original, now))
    assert (a.receive(IOT.index, to_a, now), b.receive(IOT_B.index, to_b, now)) == ((), ())


def count(core: Relay, key: str) -> int:
    return int(core.status(100.0)["counters"].get(key, 0))


def test_the_leaders_copy_cancels_the_followers() -> None:
    a, b = pair()
    meet(a, b, 0.0)
    original = datagram(payload=b"\x01")
    sent = a.receive(LAN.index, original, 1.0)  # the leader sends at once
    assert (len(sent), b.receive(LAN_B.index, original, 1.0)) == (1, [])  # the follower waits
    assert b.get_timer() == pytest.approx(1.0 + relaypeers.HOLDOFF_MIN)
    assert b.receive(IOT_B.index, on_wire(sent), 1.001) == ()
    assert (b.handle_timer(1.1), count(b, "iot0:7070:left_to_peer"), b.get_timer()) == ([], 1, None)


def test_a_leaders_copy_read_before_the_original_stands_in_for_it() -> None:
    a, b = pair()
    meet(a, b, 0.0)
    original = datagram(payload=b"\x02")
    b.receive(IOT_B.index, on_wire(a.receive(LAN.index, original, 1.0)), 1.0)
    assert (b.receive(LAN_B.index, original, 1.001), b.get_timer()) == ([], None)
    assert count(b, "iot0:7070:left_to_peer") == 1


def test_what_the_leader_does_not_relay_the_follower_sends_after_the_hold_off() -> None:
    a, b = pair()
    meet(a, b, 0.0)
    assert b.receive(LAN_B.index, datagram(payload=b"\x03"), 1.0) == []
    assert b.handle_timer(1.0 + relaypeers.HOLDOFF_MIN / 2) == []
    (index, frame), = b.handle_timer(1.0 + relaypeers.HOLDOFF_MIN)
    assert (index, frame[14 + 28:]) == (IOT_B.index, b"\x03")
    # Its copy reaches the leader, which takes no notice: following is not its job.
    assert a.receive(IOT.index, frame[14:], 1.03) == ()
    assert len(a.receive(LAN.index, datagram(payload=b"\x03"), 1.04)) == 1


def test_a_late_leader_makes_the_hold_off_longer_then_quiet_makes_it_shorter() -> None:
    a, b = pair()
    meet(a, b, 0.0)
    original = datagram(payload=b"\x04")
    b.receive(LAN_B.index, original, 1.0)
    waiting = datagram(payload=b"\x05")
    b.receive(LAN_B.index, waiting, 1.01)
    assert len(b.handle_timer(1.0 + relaypeers.HOLDOFF_MIN)) == 1  # sent: the leader was not there yet
    b.receive(IOT_B.index, on_wire(a.receive(LAN.index, original, 1.05)), 1.05)  # now it is: a duplicate
    assert (count(b, "iot0:7070:late_peer_copy"), b.arbiter.holdoff) == (1, pytest.approx(0.075))
    # The copy already waiting waits longer too.
    assert b.get_timer() == pytest.approx(1.01 + 0.075)
    later = 1.05 + relaypeers.HOLDOFF_QUIET + 1
    b.receive(LAN_B.index, datagram(payload=b"\x06"), later)
    assert b.arbiter.holdoff == pytest.approx(0.0375)


def test_peers_are_forgotten_after_a_minute_of_silence() -> None:
    a, b = pair()
    meet(a, b, 0.0)
    assert b.receive(LAN_B.index, datagram(payload=b"\x07"), relaypeers.PEER_MEMORY - 1) == []
    assert len(b.receive(LAN_B.index, datagram(payload=b"\x08"), relaypeers.PEER_MEMORY + 1)) == 1
    assert b.status(relaypeers.PEER_MEMORY + 1)["peers"] == {}


def test_a_peer_appearing_is_flagged_once_and_counts_for_a_minute() -> None:
    a, b = pair()
    assert (b.peers_changed, b.peers_until()) == (False, float("-inf"))
    meet(a, b, 0.0)
    assert (b.peers_changed, b.peers_until()) == (True, relaypeers.PEER_MEMORY)
    b.peers_changed = False  # the adapter took note
    to_b = on_wire(a.receive(LAN.index, datagram(payload=b"\x09"), 1.0))
    b.receive(IOT_B.index, to_b, 1.0)
    assert (b.peers_changed, b.peers_until()) == (False, 1.0 + relaypeers.PEER_MEMORY)  # known already
    to_b = on_wire(a.receive(LAN.index, datagram(payload=b"\x0a"), 100.0))
    b.receive(IOT_B.index, to_b, 100.0)
    assert b.peers_changed is True  # back after it had been forgotten


def test_status_shows_peers_by_their_tag() -> None:
    a, b = pair()
    meet(a, b, 0.0)
    assert (a.status(1.0)["peers"], b.status(1.0)["peers"]) == ({"br-iot": {"20.3": 1.0}}, {"iot0": {"20.1": 1.0}})


def test_three_relays_wait_in_the_order_of_their_tags() -> None:
    a, b = pair()
    meet(a, b, 0.0)
    third = on_wire(make(RelayPolicy(PORTS, frozenset({"x", "y"})), (
        RelayInterface("x", 21, IP("192.168.10.2"), IP("192.168.10.255"), mac=b"\x21" * 6),
        RelayInterface("y", 22, IP("192.168.20.2"), IP("192.168.20.255"), mac=b"\x22" * 6))).receive(
        21, datagram(payload=b"third"), 0.5))
    b.receive(IOT_B.index, third, 0.5)  # tags .1 and .2 lead .3 here
    b.receive(LAN_B.index, datagram(payload=b"\x09"), 1.0)
    assert b.get_timer() == pytest.approx(1.0 + 2 * relaypeers.HOLDOFF_MIN)


def test_deferred_copies_are_bounded() -> None:
    a, b = pair()
    meet(a, b, 0.0)
    for i in range(relaypeers.PENDING_KEPT + 5):
        b.receive(LAN_B.index, datagram(payload=struct.pack("!I", i)), 1.0)
    assert (len(b.arbiter), count(b, "iot0:7070:dropped_pending_full")) == (relaypeers.PENDING_KEPT, 5)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.01), st.floats(0, 0.01), st.floats(0, 0.05), st.booleans()),
                min_size=1, max_size=40))
def test_a_broadcast_crosses_once_when_the_leaders_copy_comes_within_the_hold_off(
        plan: list[tuple[float, float, float, bool]]) -> None:
    """Each broadcast reaches the leader (if it relays it at all) and the follower at times of their
    own; the leader's copy reaches the follower `transit` later, before or after its original. The
    follower's timer runs after what arrived before it (the edge reads its sockets first)."""
    a, b = pair()
    meet(a, b, 0.0)
    queue: list[tuple[float, int, str, bytes]] = []
    for i, (delay_a, delay_b, _, relays) in enumerate(plan):
        if relays:
            heapq.heappush(queue, (1.0 + i * 0.002 + delay_a, i, "a", struct.pack("!I", i)))
        heapq.heappush(queue, (1.0 + i * 0.002 + delay_b, i, "b", struct.pack("!I", i)))
    copies: dict[bytes, int] = {}
    arrivals: dict[bytes, float] = {}
    seq = len(plan)

    def timer_until(until: float) -> None:
        while (when := b.get_timer()) is not None and when <= until:
            for _, frame in b.handle_timer(when):
                copies[frame[42:]] = copies.get(frame[42:], 0) + 1

    while queue:
        now, _, who, payload = heapq.heappop(queue)
        timer_until(now)
        if who == "a":
            for _, frame in a.receive(LAN.index, datagram(payload=payload), now):
                copies[payload] = copies.get(payload, 0) + 1
                seq += 1
                transit = plan[struct.unpack("!I", payload)[0]][2]
                heapq.heappush(queue, (now + transit, seq, "copy", frame[14:]))
        elif who == "b":
            arrivals[payload] = now
            assert b.receive(LAN_B.index, datagram(payload=payload), now) == []  # a follower never sends at once
        else:
            b.receive(IOT_B.index, payload, now)
            arrivals.setdefault(payload[28:] + b"@copy", now)
            arrivals[payload[28:] + b"@copy"] = now
    timer_until(1e9)
    for i, (_, _, _, relays) in enumerate(plan):
        payload = struct.pack("!I", i)
        on_time = relays and arrivals[payload + b"@copy"] - arrivals[payload] <= \
            relaypeers.HOLDOFF_MIN - relaypeers.TIMER_SLACK
        if on_time or not relays:
            assert copies.get(payload) == 1, (i, plan[i])
        else:
            assert copies.get(payload) in (1, 2), (i, plan[i])


def test_a_token_bucket_spends_its_burst_then_refills_at_its_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=8.0, burst=3.0)  # times in binary fractions: exact sums
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(100.0625)  # half a token back
    assert bucket.take(100.125)  # a whole one
    assert not bucket.take(100.125)
    assert [bucket.take(200.0) for _ in range(4)] == [True, True, True, False]  # a long pause: the burst, no more
