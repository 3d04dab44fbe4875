"""The mDNS reflector: which records cross, which questions go in, loops, limits, and the ports it opens."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import mdns
from loxgw.core.catalog import PortRange
from loxgw.core.mdns import Question, Record, wire_name
from loxgw.core.pinholes import Pinhole
from loxgw.core.reflect import COPY_TOS, MAX_PORTS_PER_DEVICE, ReflectInterface, Scope, Transmit
from loxgw.core.reflectmdns import MDNS_GROUP, REFLECT_TTL, MdnsReflector, reverse_name
from loxgw.core.relay import RateLimiter

IOT = ReflectInterface("br-iot", 2, IPv4Address("192.168.20.1"), IPv4Network("192.168.20.0/24"), "devices")
LAN = ReflectInterface("br-lan", 3, IPv4Address("192.168.10.1"), IPv4Network("192.168.10.0/24"), "clients")
AUDIOSERVER = IPv4Address("192.168.20.10")
TV = IPv4Address("192.168.20.50")
PHONE = IPv4Address("192.168.10.20")
SERVICE = wire_name("_airplay", "_tcp", "local")
HOST = wire_name("audioserver", "local")


def reflector(rate: float = 100.0) -> MdnsReflector:
    scope = Scope()
    scope.set_interfaces([IOT, LAN])
    scope.set_devices([AUDIOSERVER])
    return MdnsReflector(scope, RateLimiter(rate, 10 * rate))


def srv(instance: str, port: int, ttl: int = 120, flush: bool = True, service: str = "_airplay") -> Record:
    return Record(wire_name(instance, service, "_tcp", "local"), mdns.TYPE_SRV, mdns.CLASS_IN, ttl,
                  struct.pack("!HHH", 0, 0, port) + HOST, flush)


def announcement(address: IPv4Address = AUDIOSERVER, instance: str = "Kitchen", port: int = 7005,
                 ttl: int = 120, extra: tuple[Record, ...] = ()) -> bytes:
    name = wire_name(instance, "_airplay", "_tcp", "local")
    answers = [Record(SERVICE, mdns.TYPE_PTR, mdns.CLASS_IN, 4500 if ttl else 0, name, flush=True),
               srv(instance, port, ttl), Record(name, mdns.TYPE_TXT, mdns.CLASS_IN, ttl, b"\x05a=bcd", True)]
    additionals = [Record(HOST, mdns.TYPE_A, mdns.CLASS_IN, ttl, address.packed, True), *extra]
    (packet,) = mdns.write_messages(0x8400, (), answers, additionals)
    return packet


def query(*questions: Question, known: tuple[Record, ...] = (), authority: bool = False) -> bytes:
    (packet,) = mdns.write_messages(0, questions, known)
    if authority:  # a probe: the proposed record in the authority section
        extra = mdns.write_messages(0x8400, (), [Record(HOST, mdns.TYPE_A, mdns.CLASS_IN, 120, PHONE.packed)])[0]
        packet = packet[:8] + b"\x00\x01" + packet[10:] + extra[12:]
    return packet


def copies(out: list[Transmit]) -> list[tuple[int, mdns.Message]]:
    assert all((t.dst, t.port, t.via) == (MDNS_GROUP, 5353, "mdns") for t in out)
    return [(t.ifindex, mdns.read_message(t.payload)) for t in out]


def test_a_loxone_devices_announcement_crosses_to_clients_and_opens_its_port() -> None:
    r = reflector()
    ((ifindex, message),) = copies(r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 0.0))
    assert (ifindex, message.id, message.flags, message.questions) == (LAN.index, 0, 0x8400, ())
    ptr, service, txt = message.answers
    assert (ptr.rtype, ptr.flush) == (mdns.TYPE_PTR, False)  # a shared record never flushes
    assert (service.srv_port(), service.flush, txt.flush) == (7005, True, True)
    assert message.additionals == (Record(HOST, mdns.TYPE_A, mdns.CLASS_IN, 120, AUDIOSERVER.packed, True),)
    assert r.ledger.take_changed() is True
    assert r.ledger.pinholes() == (Pinhole("inbound", None, AUDIOSERVER, "tcp", PortRange(7005, 7005), "mdns-srv"),)


def test_other_hosts_records_never_cross() -> None:
    r = reflector()
    assert r.receive(IOT.index, TV, 5353, announcement(TV, "Living Room TV", 7000), 0.0) == []
    assert r.counters["dropped_not_loxone"] == 1
    assert r.ledger.pinholes() == ()


def test_only_the_devices_own_address_crosses() -> None:
    r = reflector()
    foreign = Record(wire_name("printer", "local"), mdns.TYPE_A, mdns.CLASS_IN, 120, TV.packed, True)
    v6 = Record(HOST, mdns.TYPE_AAAA, mdns.CLASS_IN, 120, bytes.fromhex("fe80" + "00" * 12 + "0001"), True)
    own_reverse = Record(reverse_name(AUDIOSERVER), mdns.TYPE_PTR, mdns.CLASS_IN, 120, HOST, True)
    other_reverse = Record(reverse_name(TV), mdns.TYPE_PTR, mdns.CLASS_IN, 120, HOST, True)
    out = r.receive(IOT.index, AUDIOSERVER, 5353, announcement(extra=(foreign, v6, own_reverse, other_reverse)), 0.0)
    ((_, message),) = copies(out)
    assert [(x.rtype, x.name) for x in message.additionals] == [(mdns.TYPE_A, HOST), (mdns.TYPE_PTR,
                                                                                     reverse_name(AUDIOSERVER))]
    assert (r.counters["records_dropped_foreign_address"], r.counters["records_dropped_ipv6"]) == (2, 1)


def test_ttls_are_capped_so_no_client_outlives_the_pinhole() -> None:
    r = reflector()
    ((_, message),) = copies(r.receive(IOT.index, AUDIOSERVER, 5353, announcement(ttl=7200), 0.0))
    assert {x.ttl for x in message.answers} == {REFLECT_TTL}
    assert r.get_timer() == REFLECT_TTL


def test_a_dotted_instance_name_crosses_byte_exact() -> None:
    r = reflector()
    ((_, message),) = copies(r.receive(IOT.index, AUDIOSERVER, 5353, announcement(instance="Bad 1.OG"), 0.0))
    assert message.answers[1].name == wire_name("Bad 1.OG", "_airplay", "_tcp", "local")


def test_a_clients_question_goes_into_devices_zones_as_multicast() -> None:
    r = reflector()
    out = r.receive(LAN.index, PHONE, 5353, query(Question(SERVICE, mdns.TYPE_PTR, mdns.CLASS_IN, unicast=True)), 0.0)
    ((ifindex, message),) = copies(out)
    assert (ifindex, message.flags, message.questions) == (
        IOT.index, 0, (Question(SERVICE, mdns.TYPE_PTR, mdns.CLASS_IN, unicast=False),))


def test_known_answers_keep_only_what_the_reflector_sent() -> None:
    r = reflector()
    r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 0.0)
    ours = Record(SERVICE, mdns.TYPE_PTR, mdns.CLASS_IN, 4000, wire_name("Kitchen", "_airplay", "_tcp", "local"))
    theirs = Record(SERVICE, mdns.TYPE_PTR, mdns.CLASS_IN, 4000, wire_name("Phone", "_airplay", "_tcp", "local"))
    flushed = Record(HOST, mdns.TYPE_A, mdns.CLASS_IN, 100, AUDIOSERVER.packed, flush=True)
    packet = query(Question(SERVICE, mdns.TYPE_PTR, mdns.CLASS_IN), known=(ours, theirs, flushed))
    ((_, message),) = copies(r.receive(LAN.index, PHONE, 5353, packet, 10.0))
    assert message.answers == (ours, Record(HOST, mdns.TYPE_A, mdns.CLASS_IN, 100, AUDIOSERVER.packed))
    assert r.counters["known_answers_left"] == 1
    # Once the records expired they are no longer the reflector's to vouch for.
    ((_, later),) = copies(r.receive(LAN.index, PHONE, 5353, packet, 5000.0))
    assert later.answers == ()


def test_a_probe_goes_in_as_its_questions_alone() -> None:
    r = reflector()
    packet = query(Question(HOST, mdns.TYPE_ANY, mdns.CLASS_IN, unicast=True), authority=True)
    assert mdns.read_message(packet).authorities != ()
    ((_, message),) = copies(r.receive(LAN.index, PHONE, 5353, packet, 0.0))
    assert (message.questions, message.authorities) == ((Question(HOST, mdns.TYPE_ANY, mdns.CLASS_IN),), ())


def test_direction_ends_every_loop() -> None:
    r = reflector()
    question = query(Question(SERVICE, mdns.TYPE_PTR, mdns.CLASS_IN))
    assert r.receive(IOT.index, AUDIOSERVER, 5353, question, 0.0) == []  # questions from devices stay
    assert r.receive(LAN.index, PHONE, 5353, announcement(PHONE), 0.0) == []  # answers from clients stay
    # A second router's copy on the lan segment: marked, or from its address, never an answer from a device.
    assert r.receive(LAN.index, IPv4Address("192.168.10.2"), 5353, announcement(), 0.0, tos=COPY_TOS) == []
    assert r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 0.0, tos=COPY_TOS) == []
    assert r.receive(IOT.index, IOT.address, 5353, announcement(), 0.0) == []
    assert (r.counters["dropped_question_from_devices"], r.counters["dropped_answer_from_clients"],
            r.counters["dropped_own_copy"]) == (1, 1, 3)


def test_what_the_rfc_says_to_ignore_is_ignored() -> None:
    r = reflector()
    assert r.receive(IOT.index, AUDIOSERVER, 40000, announcement(), 0.0) == []  # section 6: not from 5353
    assert r.receive(LAN.index, PHONE, 40000, query(Question(SERVICE, mdns.TYPE_PTR, 1)), 0.0) == []  # legacy
    assert r.receive(IOT.index, IPv4Address("10.0.0.10"), 5353, announcement(), 0.0) == []  # not on-link
    assert r.receive(9, AUDIOSERVER, 5353, announcement(), 0.0) == []  # not a zone interface
    assert r.receive(IOT.index, AUDIOSERVER, 5353, bytes.fromhex("000084000000000100000000") + b"\x03ab", 0.0) == []
    assert r.receive(IOT.index, AUDIOSERVER, 5353, announcement() + bytes(9000), 0.0) == []
    assert {k: v for k, v in r.counters.items() if k.startswith("dropped_")} == {
        "dropped_answer_not_from_5353": 1, "dropped_legacy_unicast": 1, "dropped_off_link": 1,
        "dropped_not_zone_interface": 1, "dropped_truncated": 1, "dropped_oversized": 1}


def test_a_record_goes_out_at_most_once_a_second_but_goodbyes_always() -> None:
    r = reflector()
    assert len(r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 0.0)) == 1
    assert r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 0.5) == []
    assert len(r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 1.5)) == 1
    ((_, goodbye),) = copies(r.receive(IOT.index, AUDIOSERVER, 5353, announcement(ttl=0), 1.6))
    assert {x.ttl for x in goodbye.answers} == {0}


def test_a_goodbye_closes_the_port_a_second_later() -> None:
    r = reflector()
    r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 0.0)
    r.ledger.take_changed()
    r.receive(IOT.index, AUDIOSERVER, 5353, announcement(ttl=0), 10.0)
    assert (r.get_timer(), r.ledger.take_changed()) == (11.0, False)
    r.handle_timer(11.0)
    assert (r.ledger.pinholes(), r.ledger.take_changed()) == ((), True)


def test_the_port_lives_as_long_as_its_record_and_a_refresh_extends_it() -> None:
    r = reflector()
    r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 0.0)
    r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 100.0)
    assert r.ledger.take_changed() is True
    assert r.get_timer() == 220.0
    r.handle_timer(120.0)
    assert (len(r.ledger.pinholes()), r.ledger.take_changed()) == (1, False)
    r.handle_timer(220.0)
    assert (r.ledger.pinholes(), r.ledger.take_changed()) == ((), True)


def test_cache_flush_replaces_a_moved_port() -> None:
    r = reflector()
    r.receive(IOT.index, AUDIOSERVER, 5353, announcement(port=7005), 0.0)
    r.receive(IOT.index, AUDIOSERVER, 5353, announcement(port=7010), 5.0)
    assert [h.ports for h in r.ledger.pinholes()] == [PortRange(7010, 7010)]


def test_a_udp_service_opens_udp_and_port_zero_opens_nothing() -> None:
    r = reflector()
    (packet,) = mdns.write_messages(0x8400, (), [srv("Kitchen", 4070, service="_sleep-proxy")])
    r.receive(IOT.index, AUDIOSERVER, 5353, packet, 0.0)
    udp = Record(wire_name("x", "_loxone", "_udp", "local"), mdns.TYPE_SRV, mdns.CLASS_IN, 120,
                 struct.pack("!HHH", 0, 0, 7777) + HOST)
    (packet,) = mdns.write_messages(0x8400, (), [udp, srv("Off", 0)])
    r.receive(IOT.index, AUDIOSERVER, 5353, packet, 0.0)
    assert [(h.proto, h.ports) for h in r.ledger.pinholes()] == [("tcp", PortRange(4070, 4070)),
                                                                   ("udp", PortRange(7777, 7777))]


def test_ports_per_device_are_capped() -> None:
    r = reflector(rate=1000.0)
    for port in range(1000, 1000 + MAX_PORTS_PER_DEVICE + 5):
        r.receive(IOT.index, AUDIOSERVER, 5353, announcement(instance=f"s{port}", port=port), float(port))
    assert len(r.ledger.pinholes()) == MAX_PORTS_PER_DEVICE
    assert r.ledger.counters["ports_per_device_capped"] == 5


def test_a_device_that_goes_takes_its_records_and_ports() -> None:
    r = reflector()
    r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 0.0)
    r.ledger.take_changed()
    r.forget(r.scope.set_devices([]))
    assert (r.ledger.pinholes(), r.ledger.take_changed()) == ((), True)
    assert r.receive(IOT.index, AUDIOSERVER, 5353, announcement(), 5.0) == []


def test_a_flooding_source_is_held_to_its_rate() -> None:
    r = reflector(rate=20.0)
    packet = query(Question(SERVICE, mdns.TYPE_PTR, mdns.CLASS_IN))
    sent = sum(len(r.receive(LAN.index, PHONE, 5353, packet, 0.0)) for _ in range(100))
    assert (sent, r.counters["dropped_rate_source"]) == (20, 80)
    other = IPv4Address("192.168.10.21")
    assert len(r.receive(LAN.index, other, 5353, packet, 0.0)) == 1


@given(st.binary(max_size=1500), st.booleans(), st.integers(0, 2000))
@settings(max_examples=300, deadline=None)
def test_any_datagram_is_reflected_or_dropped_never_raises(data: bytes, from_device: bool, cut: int) -> None:
    r = reflector()
    if from_device:
        r.receive(IOT.index, AUDIOSERVER, 5353, data, 0.0)
        packet = announcement()
        r.receive(IOT.index, AUDIOSERVER, 5353, packet[:cut] + data[:8] + packet[cut + 8:], 0.0)
    else:
        r.receive(LAN.index, PHONE, 5353, data, 0.0)
