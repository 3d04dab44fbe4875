"""DNS answer interpretation: wildcards, CNAME chains, trust, bounds, and fuzzing."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from dnslib import AAAA, CNAME, QTYPE, RR, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import catalog, dns, dnsledger, dnswire
from loxgw.core.catalog import PortRange
from loxgw.core.dns import Limits, Profile
from loxgw.core.dnsinspect import DnsInspector, QueryTracker
from loxgw.core.errors import RemoteDataError

DEVICE = ipaddress.ip_address("192.168.20.10")
RESOLVER = ipaddress.ip_address("192.168.20.1")
POLICIES = {role: dns.build_policy(catalog.load(), role) for role in ("devices", "clients")}
TCP22 = Profile("tcp", (PortRange(22, 22),))
DYNDNS = Profile("tcp", (PortRange(20000, 65000),))
RELAY = Profile("tcp", (PortRange(20000, 49000),))


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 UDP packet (checksums zero: NFQUEUE hands over what the kernel checked)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return header + udp


def query(name: str, qid: int = 4242, qtype: str = "A") -> DNSRecord:
    record = DNSRecord.question(name, qtype)
    record.header.id = qid
    return record


def answer(q: DNSRecord, *rrs: RR) -> DNSRecord:
    reply = q.reply()
    for rr in rrs:
        reply.add_answer(rr)
    return reply


def exchange(inspector: DnsInspector, q: DNSRecord, a: DNSRecord, now: float = 100.0,
             role: str = "devices", answer_src: str = str(RESOLVER)) -> list[dns.Grant]:
    inspector.on_packet(udp_packet(str(DEVICE), str(RESOLVER), 40000, 53, q.pack()), role, now)  # type: ignore[arg-type]
    return inspector.on_packet(udp_packet(answer_src, str(DEVICE), 53, 40000, a.pack()), role, now)  # type: ignore[arg-type]


@pytest.fixture
def inspector() -> DnsInspector:
    return DnsInspector(POLICIES, Limits(min_timeout=60, max_timeout=3600))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name,expected",
    [
        ("x1.dyndns.loxonecloud.com", {DYNDNS, TCP22}),
        ("a.b.dyndns.loxonecloud.com", {DYNDNS, TCP22}),
        ("a7.remcov3.loxonecloud.com", {TCP22}),
        ("dyndns.loxonecloud.com", {TCP22}),  # not *.dyndns itself, but *.loxonecloud.com (ssh)
        ("evilloxonecloud.com", set()),
        ("loxonecloud.com.evil.net", set()),
        ("dyndns.loxonecloud.com.evil.net", set()),
        ("example.org", set()),
    ],
)
def test_wildcards_match_on_dot_boundaries(name: str, expected: set[Profile]) -> None:
    assert set(POLICIES["devices"].profiles_for(name)) == expected


def test_clients_get_the_relay_range_devices_get_ssh() -> None:
    assert RELAY in POLICIES["clients"].profiles_for("a7.remcov3.loxonecloud.com")
    assert RELAY not in POLICIES["devices"].profiles_for("a7.remcov3.loxonecloud.com")


def test_online_check_grants_ping_and_clouddns_udp() -> None:
    profiles = POLICIES["devices"].profiles_for("dns.loxonecloud.com")
    assert Profile("icmp", ()) in profiles
    assert Profile("udp", (PortRange(7700, 7700),)) in profiles


def test_answer_grants_with_ttl(inspector: DnsInspector) -> None:
    q = query("a7.remcov3.loxonecloud.com")
    grants = exchange(inspector, q, answer(q, RR("a7.remcov3.loxonecloud.com", QTYPE.A,
                                                 rdata=A("203.0.113.7"), ttl=300)))
    assert [(str(g.device), str(g.address), g.profile, g.timeout) for g in grants] == [
        ("192.168.20.10", "203.0.113.7", TCP22, 300),
    ]


@pytest.mark.parametrize("ttl,expected", [(0, 60), (5, 60), (600, 600), (999999, 3600)])
def test_ttl_is_clamped(inspector: DnsInspector, ttl: int, expected: int) -> None:
    q = query("x.dyndns.loxonecloud.com")
    grants = exchange(inspector, q, answer(q, RR("x.dyndns.loxonecloud.com", QTYPE.A,
                                                 rdata=A("203.0.113.20"), ttl=ttl)))
    assert {g.timeout for g in grants} == {expected}


def test_cname_chain_is_followed_and_min_ttl_used(inspector: DnsInspector) -> None:
    q = query("weather.loxone.com")
    a = answer(q,
               RR("weather.loxone.com", QTYPE.CNAME, rdata=CNAME("lb.cdn.example.net"), ttl=120),
               RR("lb.cdn.example.net", QTYPE.A, rdata=A("198.51.100.77"), ttl=900))
    grants = exchange(inspector, q, a)
    assert [(str(g.address), g.profile.describe(), g.timeout) for g in grants] == [
        ("198.51.100.77", "tcp/6066", 120),
    ]


def test_cname_loop_and_long_chain_grant_nothing(inspector: DnsInspector) -> None:
    q = query("weather.loxone.com")
    loop = answer(q, RR("weather.loxone.com", QTYPE.CNAME, rdata=CNAME("a.example.net")),
                  RR("a.example.net", QTYPE.CNAME, rdata=CNAME("weather.loxone.com")))
    assert exchange(inspector, q, loop) == []
    q2 = query("weather.loxone.com", qid=2)
    links = [RR("weather.loxone.com", QTYPE.CNAME, rdata=CNAME("l0.example.net"))]
    links += [RR(f"l{i}.example.net", QTYPE.CNAME, rdata=CNAME(f"l{i + 1}.example.net")) for i in range(12)]
    links.append(RR("l12.example.net", QTYPE.A, rdata=A("203.0.113.9")))
    assert exchange(inspector, q2, answer(q2, *links)) == []
    assert inspector.counters["refused_cname_loop"] == 1
    assert inspector.counters["refused_cname_chain"] == 1


def test_unsolicited_and_mismatched_answers_grant_nothing(inspector: DnsInspector) -> None:
    q = query("x.dyndns.loxonecloud.com")
    a = answer(q, RR("x.dyndns.loxonecloud.com", QTYPE.A, rdata=A("203.0.113.20")))
    # No query seen.
    forged = udp_packet(str(RESOLVER), str(DEVICE), 53, 40000, a.pack())
    assert inspector.on_packet(forged, "devices", 1.0) == []
    # Query seen, answer from another source address.
    assert exchange(inspector, q, a, answer_src="198.51.100.66") == []
    # Query seen, answer with another id.
    q3 = query("x.dyndns.loxonecloud.com", qid=7)
    a3 = answer(query("x.dyndns.loxonecloud.com", qid=8),
                RR("x.dyndns.loxonecloud.com", QTYPE.A, rdata=A("203.0.113.20")))
    assert exchange(inspector, q3, a3) == []
    assert inspector.counters["refused_unsolicited"] == 3


def test_query_expires(inspector: DnsInspector) -> None:
    q = query("x.dyndns.loxonecloud.com")
    a = answer(q, RR("x.dyndns.loxonecloud.com", QTYPE.A, rdata=A("203.0.113.20")))
    inspector.on_packet(udp_packet(str(DEVICE), str(RESOLVER), 40000, 53, q.pack()), "devices", 0.0)
    late = inspector.on_packet(udp_packet(str(RESOLVER), str(DEVICE), 53, 40000, a.pack()), "devices", 11.0)
    assert late == []


@pytest.mark.parametrize("target", ["10.1.2.3", "127.0.0.1", "169.254.1.1", "192.168.1.1",
                                    "172.16.0.1", "224.0.0.1", "0.0.0.0", "100.64.0.1"])
def test_private_and_special_targets_are_refused(inspector: DnsInspector, target: str) -> None:
    q = query("x.dyndns.loxonecloud.com")
    a = answer(q, RR("x.dyndns.loxonecloud.com", QTYPE.A, rdata=A(target)))
    assert exchange(inspector, q, a) == []
    assert inspector.counters["refused_refused_target"] == 1


def test_allowed_target_network_overrides() -> None:
    inspector = DnsInspector(POLICIES, Limits(allowed_targets=(ipaddress.ip_network("10.0.0.0/8"),)))  # type: ignore[arg-type]
    q = query("x.dyndns.loxonecloud.com")
    a = answer(q, RR("x.dyndns.loxonecloud.com", QTYPE.A, rdata=A("10.1.2.3")))
    assert [str(g.address) for g in exchange(inspector, q, a)] == ["10.1.2.3"] * 2


def test_addresses_per_answer_are_capped(inspector: DnsInspector) -> None:
    q = query("x.remcov3.loxonecloud.com")
    rrs = [RR("x.remcov3.loxonecloud.com", QTYPE.A, rdata=A(f"203.0.113.{i}")) for i in range(1, 60)]
    grants = exchange(inspector, q, answer(q, *rrs))
    assert len({g.address for g in grants}) == dns.MAX_ADDRESSES_PER_ANSWER


def test_aaaa_to_ipv4_device_is_skipped(inspector: DnsInspector) -> None:
    q = query("x.remcov3.loxonecloud.com", qtype="AAAA")
    a = answer(q, RR("x.remcov3.loxonecloud.com", QTYPE.AAAA, rdata=AAAA("2001:db8::7")))
    assert exchange(inspector, q, a) == []


def test_tracker_is_bounded() -> None:
    tracker = QueryTracker(capacity=100)
    for i in range(10000):
        tracker.note((DEVICE, i, RESOLVER, i), b"x", 0.0)
    assert len(tracker) == 100


def test_entries_per_device_are_capped_but_refreshes_pass() -> None:
    ledger = dnsledger.GrantLedger(per_device=3)
    other = ipaddress.ip_address("192.168.20.11")

    def grant(device: dns.IPAddress, last_octet: int, timeout: int = 60) -> dns.Grant:
        return dns.Grant(device, ipaddress.ip_address(f"203.0.113.{last_octet}"), TCP22, timeout, "x")

    first = [grant(DEVICE, i) for i in range(3)]
    assert ledger.admit(first, 0.0) == first  # admitted grants are recorded at once
    assert ledger.admit([grant(DEVICE, 9)], 1.0) == []  # a fourth address: refused
    assert ledger.admit([grant(DEVICE, 1, 300)], 1.0) == [grant(DEVICE, 1, 300)]  # a refresh: admitted
    assert ledger.admit([grant(other, 9)], 1.0) == [grant(other, 9)]  # another device has its own cap
    # Once the others expire, the device may have new entries again.
    assert ledger.admit([grant(DEVICE, 9)], 61.0) == [grant(DEVICE, 9)]
    assert sorted(e["address"] for e in ledger.live(61.0)) == ["203.0.113.1", "203.0.113.9"]


def test_a_burst_never_overshoots_the_cap() -> None:
    """Answers read together are admitted one by one: 20 new names in one batch, cap 8, 8 entries."""
    ledger = dnsledger.GrantLedger(per_device=8)
    burst = [dns.Grant(DEVICE, ipaddress.ip_address(f"203.0.113.{i}"), TCP22, 60, "x") for i in range(20)]
    admitted = [g for grant in burst for g in ledger.admit([grant], 0.0)]
    assert (len(admitted), len(ledger)) == (8, 8)


def test_ledger_capacity_refuses_rather_than_evicts() -> None:
    ledger = dnsledger.GrantLedger(capacity=2, per_device=5)
    grants = [dns.Grant(DEVICE, ipaddress.ip_address(f"203.0.113.{i}"), TCP22, 60, "x") for i in range(3)]
    assert ledger.admit(grants, 0.0) == grants[:2]  # what the kernel set (same size) could take
    assert ledger.admit(grants[:1], 0.0) == grants[:1]  # a refresh still passes when full
    ledger.forget(grants[:1])  # the kernel refused it after all
    assert ledger.counts_per_device() == {str(DEVICE): 1}
    assert ledger.admit(grants[2:], 0.0) == grants[2:]


# Golden packet: captured from the lab's router dnsmasq (forwarding to the upstream dnsmasq) for
# a7.remcov3.loxonecloud.com A, id 0x1234: 203.0.113.7, TTL 300.
GOLDEN_ANSWER = bytes.fromhex(
    "1234858000010001000000000261370772656d636f76330b6c6f786f6e65636c6f756403636f6d0000010001"
    "c00c000100010000012c0004cb007107"
)


def test_golden_answer(inspector: DnsInspector) -> None:
    record = DNSRecord.parse(GOLDEN_ANSWER)  # dnslib, the reference reader
    assert (record.header.id, str(record.q.qname), str(record.rr[0].rdata), record.rr[0].ttl) == (
        0x1234, "a7.remcov3.loxonecloud.com.", "203.0.113.7", 300,
    )
    wire = dnswire.read_answer(GOLDEN_ANSWER)
    assert (wire.qname, wire.addresses) == ("a7.remcov3.loxonecloud.com",
                                            {"a7.remcov3.loxonecloud.com": [(bytes([203, 0, 113, 7]), 300)]})
    q = query("a7.remcov3.loxonecloud.com", qid=0x1234)
    inspector.on_packet(udp_packet(str(DEVICE), str(RESOLVER), 40000, 53, q.pack()), "devices", 1.0)
    grants = inspector.on_packet(udp_packet(str(RESOLVER), str(DEVICE), 53, 40000, GOLDEN_ANSWER), "devices", 1.0)
    assert [(str(g.address), g.timeout) for g in grants] == [("203.0.113.7", 300)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_or_grant(data: bytes) -> None:
    inspector = DnsInspector(POLICIES, Limits())  # type: ignore[arg-type]
    assert inspector.on_packet(data, "devices", 1.0) == []
    assert inspector.on_packet(udp_packet(str(RESOLVER), str(DEVICE), 53, 40000, data), "devices", 1.0) == []


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOLDEN_ANSWER) - 1), st.integers(0, 255)), max_size=8),
       st.integers(0, len(GOLDEN_ANSWER)))
def test_mutated_answers_never_crash_or_grant_unsolicited(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(GOLDEN_ANSWER)
    for pos, value in flips:
        data[pos] = value
    inspector = DnsInspector(POLICIES, Limits())  # type: ignore[arg-type]
    packet = udp_packet(str(RESOLVER), str(DEVICE), 53, 40000, bytes(data[:cut]))
    assert inspector.on_packet(packet, "devices", 1.0) == []


def test_every_catalogue_name_carries_a_needle() -> None:
    for role, policy in POLICIES.items():
        needles = dns.name_needles(policy)
        for pattern in (*policy.exact, *(f"x.{w}" for w in policy.wildcard)):
            packet = answer(query(pattern), RR(pattern, QTYPE.A, rdata=A("203.0.113.1"))).pack()
            assert any(n in packet for n in needles), (role, pattern)


def test_needles_exclude_look_alikes() -> None:
    needles = dns.name_needles(POLICIES["devices"])
    assert b"\x0bloxonecloud" in needles
    packet = query("evilloxonecloud.com").pack()
    assert not any(n in packet for n in needles)
    assert not any(n in query("example.org").pack() for n in needles)


def test_answer_for_another_type_is_unsolicited(inspector: DnsInspector) -> None:
    q = query("x.dyndns.loxonecloud.com", qtype="A")
    other = answer(query("x.dyndns.loxonecloud.com", qtype="AAAA"),
                   RR("x.dyndns.loxonecloud.com", QTYPE.A, rdata=A("203.0.113.20")))
    assert exchange(inspector, q, other) == []
    assert inspector.counters["refused_unsolicited"] == 1


def test_question_case_is_ignored(inspector: DnsInspector) -> None:
    q = query("X1.DynDNS.LoxoneCloud.com")
    a = answer(q, RR("X1.DynDNS.LoxoneCloud.com", QTYPE.A, rdata=A("203.0.113.20")))
    assert {str(g.address) for g in exchange(inspector, q, a)} == {"203.0.113.20"}


@pytest.mark.parametrize("payload,reason", [
    (b"\x00" * 11, "truncated"),
    (b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01", "questions"),
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", "malformed"),
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab", "truncated"),
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01", "truncated"),
])
def test_question_bytes_rejects(payload: bytes, reason: str) -> None:
    with pytest.raises(RemoteDataError) as info:
        dnswire.question_bytes(payload)
    assert info.value.reason == reason


def test_label_with_a_dot_never_matches(inspector: DnsInspector) -> None:
    from dnslib import DNSLabel

    sneaky = DNSLabel([b"x", b"dyndns.loxonecloud", b"com"])  # one label holding a dot
    q = query("x.example.net")
    q.questions[0].qname = sneaky
    a = answer(q, RR(sneaky, QTYPE.A, rdata=A("203.0.113.20")))
    assert exchange(inspector, q, a) == []
    assert inspector.counters["not_matched"] == 1


def tcp_packet(src: str, dst: str, sport: int, dport: int, message: bytes, prefix: int | None = None) -> bytes:
    """An IPv4 TCP segment carrying a DNS message with its two-byte length."""
    data = (len(message) if prefix is None else prefix).to_bytes(2, "big") + message
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + data
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return header + tcp


def test_dns_over_tcp_in_one_segment(inspector: DnsInspector) -> None:
    q = query("x.dyndns.loxonecloud.com")
    a = answer(q, RR("x.dyndns.loxonecloud.com", QTYPE.A, rdata=A("203.0.113.20"), ttl=120))
    inspector.on_packet(tcp_packet(str(DEVICE), str(RESOLVER), 40001, 53, q.pack()), "devices", 1.0)
    grants = inspector.on_packet(tcp_packet(str(RESOLVER), str(DEVICE), 53, 40001, a.pack()), "devices", 1.0)
    assert {(str(g.address), g.timeout) for g in grants} == {("203.0.113.20", 120)}


def test_dns_over_tcp_split_across_segments_is_left_alone(inspector: DnsInspector) -> None:
    q = query("x.dyndns.loxonecloud.com")
    packet = tcp_packet(str(DEVICE), str(RESOLVER), 40001, 53, q.pack(), prefix=len(q.pack()) + 100)
    assert inspector.on_packet(packet, "devices", 1.0) == []
    assert inspector.counters["bad_tcp_partial"] == 1


def test_passive_precheck() -> None:
    from loxgw.edges.dnssniff import looks_like_dns

    q = query("x.dyndns.loxonecloud.com").pack()
    assert looks_like_dns(udp_packet(str(DEVICE), str(RESOLVER), 40000, 53, q)) is True
    assert looks_like_dns(udp_packet(str(RESOLVER), str(DEVICE), 53, 40000, q)) is True
    assert looks_like_dns(tcp_packet(str(DEVICE), str(RESOLVER), 40001, 53, q)) is True
    assert looks_like_dns(udp_packet(str(DEVICE), str(RESOLVER), 40000, 5353, q)) is False
    assert looks_like_dns(b"") is False
    assert looks_like_dns(b"\x45" + b"\x00" * 30) is False


# --- grants per product and egress mode ------------------------------------------------

PER_PRODUCT = dns.policies(catalog.load())


def classified(key: str | None) -> DnsInspector:
    return DnsInspector(PER_PRODUCT, Limits(), classify=lambda device: key)


def ssh_answer() -> tuple[DNSRecord, DNSRecord]:
    q = query("a7.remcov3.loxonecloud.com")
    return q, answer(q, RR("a7.remcov3.loxonecloud.com", QTYPE.A, rdata=A("203.0.113.7"), ttl=300))


@pytest.mark.parametrize(("key", "profiles"), [
    ("miniserver", [TCP22]),  # Remote Connect's ssh: the Miniserver's entry
    ("intercom", []),  # not the Intercom's: it has no entry for this name
    ("resolved", list(dns.RESOLVED_PROFILES)),  # any name, any port, TCP and UDP
    ("open", []),  # nothing to grant: an address set lets it out
    (None, []),  # not a Loxone device, in a zone that keeps other hosts out
    ("devices", [TCP22]),  # a zone with other_hosts '1': every device product's entries
])
def test_a_device_gets_the_grants_of_its_own_product(key: str | None, profiles: list[Profile]) -> None:
    inspector = classified(key)
    grants = exchange(inspector, *ssh_answer())
    assert [g.profile for g in grants] == profiles
    assert all((str(g.address), g.name) == ("203.0.113.7", "a7.remcov3.loxonecloud.com") for g in grants)
    if key is None:
        assert inspector.counters["refused_not_a_loxone_device"] == 1


def test_clients_zones_are_not_classified() -> None:
    grants = exchange(classified(None), *ssh_answer(), role="clients")
    assert [g.profile for g in grants] == [RELAY]


def test_resolved_opens_a_name_no_catalogue_knows() -> None:
    q = query("radio.example.net")
    a = answer(q, RR("radio.example.net", QTYPE.A, rdata=A("198.51.100.80"), ttl=120))
    grants = exchange(classified("resolved"), q, a)
    assert [(g.profile.proto, str(g.address), g.timeout) for g in grants] == [
        ("tcp", "198.51.100.80", 120), ("udp", "198.51.100.80", 120)]
    assert exchange(classified("audioserver"), query("radio.example.net", qid=7),
                    answer(query("radio.example.net", qid=7),
                           RR("radio.example.net", QTYPE.A, rdata=A("198.51.100.80")))) == []
