"""Blocked attempts: the sample parser (any bytes), the bounded table, the grant memory."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core.blocked import BlockedTable, GrantMemory, GrantSeen, Sample, format_attempts, parse_sample
from loxgw.core.catalog import PortRange
from loxgw.core.dns import Profile
from loxgw.core.explain import Verdict
from loxgw.core.firewall import BLOCKED_PREFIX

OUT, IN = BLOCKED_PREFIX["from_devices"], BLOCKED_PREFIX["into_devices"]
ip = ipaddress.ip_address
MS, OTHER, CLOUD = ip("192.168.20.10"), ip("192.168.20.11"), ip("203.0.113.99")
# A TCP SYN 192.168.20.10:40000 -> 203.0.113.99:443, as a devices zone sends it (IPv4, 20-byte header).
SYN = bytes.fromhex("4500003c1c4640004006" "0000" "c0a8140a" "cb007163"
                    "9c4001bb" "00000000" "00000000" "a002faf0" "00000000")
# The same with IPv4 options (header length 24): the ports come after them.
SYN_OPTIONS = bytes.fromhex("4600004000004000400600" "00" "c0a8140a" "cb007163" "01010100" "9c4001bb") + bytes(16)
# UDP 192.168.20.10:5000 -> 203.0.113.99:7700, and an ICMP echo request and reply.
UDP = bytes.fromhex("4500001c00004000401100" "00" "c0a8140a" "cb007163" "13881e14" "00080000")
ECHO = bytes.fromhex("4500001c00004000400100" "00" "c0a8140a" "cb007163" "08000000" "00010001")
ECHO_REPLY = ECHO[:20] + b"\x00" + ECHO[21:]
# A later fragment (offset 185 x 8): no transport header in it.
FRAGMENT = bytes.fromhex("450000200000" "00b9" "401100" "00" "c0a8140a" "cb007163") + bytes(12)
SRC6, DST6 = ip("2001:db8:20::a"), ip("2001:db8:113::7")


def ipv6(next_header: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64) + SRC6.packed + DST6.packed + payload


def test_ipv4_samples_give_their_flow() -> None:
    assert parse_sample(OUT, SYN) == Sample("out", MS, CLOUD, "tcp", 443)
    assert parse_sample(OUT, SYN_OPTIONS) == Sample("out", MS, CLOUD, "tcp", 443)
    assert parse_sample(IN, UDP) == Sample("in", MS, CLOUD, "udp", 7700)
    assert parse_sample(OUT, ECHO) == Sample("out", MS, CLOUD, "icmp", None)
    assert parse_sample(OUT, FRAGMENT) == Sample("out", MS, CLOUD, "udp", None)


def test_ipv6_samples_skip_extension_headers() -> None:
    tcp = struct.pack("!HH", 40000, 22) + bytes(16)
    hop_by_hop = bytes([6, 0]) + bytes(6)  # next: TCP, length 0 (8 octets)
    assert parse_sample(OUT, ipv6(6, tcp)) == Sample("out", SRC6, DST6, "tcp", 22)
    assert parse_sample(OUT, ipv6(0, hop_by_hop + tcp)) == Sample("out", SRC6, DST6, "tcp", 22)
    later_fragment = bytes([17, 0]) + struct.pack("!H", 8 << 3) + bytes(4)
    assert parse_sample(OUT, ipv6(44, later_fragment)) == Sample("out", SRC6, DST6, "udp", None)
    assert parse_sample(OUT, ipv6(58, bytes([128, 0, 0, 0]))) == Sample("out", SRC6, DST6, "icmpv6", None)


def test_what_is_not_a_sample_is_refused() -> None:
    assert parse_sample("loxgw-devices", SYN) is None  # a DNS copy's prefix, not a blocked sample
    assert parse_sample(OUT, SYN[:22]) is None  # cut before the destination port
    assert parse_sample(OUT, ECHO_REPLY) is None  # not a new flow
    assert parse_sample(OUT, b"\x55" + SYN[1:]) is None  # IP version 5
    assert parse_sample(OUT, b"\x43" + SYN[1:]) is None  # header length 12
    assert parse_sample(OUT, ipv6(0, bytes([0, 0]) + bytes(6))) is None  # hop-by-hop, then nothing
    endless = ipv6(60, (bytes([60, 0]) + bytes(6)) * 10)
    assert parse_sample(OUT, endless) is None  # more extension headers than anyone sends


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([OUT, IN, "", "loxgw-devices"]), st.binary(max_size=120))
def test_any_bytes_give_a_sample_or_none(prefix: str, packet: bytes) -> None:
    sample = parse_sample(prefix, packet)
    assert sample is None or sample.direction == ("out" if prefix == OUT else "in")
    assert sample is None or sample.port is None or 0 <= sample.port < 65536


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([SYN, SYN_OPTIONS, UDP, ECHO, FRAGMENT, ipv6(6, bytes(20))]),
       st.integers(min_value=0, max_value=60), st.binary(max_size=6), st.integers(min_value=0, max_value=60))
def test_mutated_packets_never_raise(packet: bytes, at: int, noise: bytes, cut: int) -> None:
    mutated = (packet[:at] + noise + packet[at + len(noise):])[: len(packet) - cut]
    sample = parse_sample(OUT, mutated)
    assert sample is None or isinstance(sample, Sample)


def sample(src: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> Sample:
    return Sample("out", src, CLOUD, "tcp", port)


def test_the_table_counts_per_flow() -> None:
    table = BlockedTable()
    table.note(sample(MS, 443), 10.0)
    row = table.note(sample(MS, 443), 12.5)
    table.note(sample(MS, 22), 13.0)
    assert (row.count, row.first_seen, row.last_seen, row.device) == (2, 10.0, 12.5, MS)
    assert [(r.sample.port, r.count) for r in table.recent()] == [(22, 1), (443, 2)]
    assert [r.sample.port for r in table.recent(since=13.0)] == [22]
    assert (len(table), table.samples) == (2, 3)


def test_a_flooding_device_churns_only_its_own_rows() -> None:
    table = BlockedTable(capacity=8, per_source=3)
    table.note(sample(OTHER, 7700), 0.0)
    for port in range(1, 1001):
        table.note(sample(MS, port), float(port))
    rows = table.recent()
    assert [(r.sample.src, r.sample.port) for r in rows] == [(MS, 1000), (MS, 999), (MS, 998), (OTHER, 7700)]
    assert (len(table), table.evicted) == (4, 997)


def test_the_table_drops_the_least_recently_seen_when_full() -> None:
    table = BlockedTable(capacity=3, per_source=3)
    senders = [ip(f"192.168.20.{n}") for n in range(20, 25)]
    for n, sender in enumerate(senders):
        table.note(sample(sender, 443), float(n))
    assert [r.sample.src for r in table.recent()] == senders[:1:-1]
    table.note(sample(senders[2], 443), 9.0)  # seen again: now the most recent
    table.note(sample(senders[0], 443), 10.0)
    assert [r.sample.src for r in table.recent()] == [senders[0], senders[2], senders[4]]


def test_rows_as_json_and_text() -> None:
    table = BlockedTable()
    row = table.note(sample(MS, 443), 100.0)
    row.verdict = Verdict(False, "never_resolved", "address never resolved by this device", "drop", ("ms-push",))
    record = row.as_json(160.0, {MS: "ms"})
    assert (record["device_name"], record["flow"], record["last_seen"], record["reason"], record["entries"]) == (
        "ms", "TCP 443", 60.0, "never_resolved", ["ms-push"])
    assert format_attempts([record]) == [
        "  ms -> 203.0.113.99 TCP 443: 1x, last 60.0 s ago: address never resolved by this device"]


WEATHER = Profile("tcp", (PortRange(6066, 6066),))
SSH = Profile("tcp", (PortRange(22, 22),))


def grant(address: str, profile: Profile, until: float, name: str = "weather.loxone.com",
          device: ipaddress.IPv4Address | ipaddress.IPv6Address = MS) -> GrantSeen:
    """A ledger entry as the memory is handed it: expiring at `until`."""
    return GrantSeen(device, ip(address), name, profile, until)


def test_memory_keeps_what_left_the_ledger() -> None:
    memory = GrantMemory(keep=600)
    weather = grant("203.0.113.12", WEATHER, 1060.0)
    memory.sync_device(MS, [weather, grant("203.0.113.7", SSH, 1300.0, "a7.remcov3.loxonecloud.com")], 1000.0)
    assert memory.lookup(MS, 1000.0, ip("203.0.113.12")) == [weather]
    memory.sync_device(MS, [grant("203.0.113.7", SSH, 1300.0, "a7.remcov3.loxonecloud.com")], 1100.0)
    # Gone from the ledger: remembered with its expiry, found by address or by name.
    assert memory.lookup(MS, 1100.0, ip("203.0.113.12")) == [weather]
    assert memory.lookup(MS, 1100.0, name="weather.loxone.com") == [weather]
    assert [g.name for g in memory.lookup(MS, 1100.0)] == ["a7.remcov3.loxonecloud.com", "weather.loxone.com"]
    assert memory.lookup(MS, 1661.0, ip("203.0.113.12")) == []  # beyond `keep`
    assert memory.lookup(OTHER, 1100.0, ip("203.0.113.12")) == []
    # Resolved again: live, no longer remembered as gone.
    memory.sync_device(MS, [grant("203.0.113.12", WEATHER, 1260.0)], 1200.0)
    assert [g.until for g in memory.lookup(MS, 1200.0, ip("203.0.113.12"))] == [1260.0]


def test_an_entry_listed_past_its_expiry_is_gone_at_its_expiry_though_never_seen_live() -> None:
    """The ledger drops expired entries only when it needs the room: a device synced for the first
    time after its grant expired still gets "expired N s ago"."""
    memory = GrantMemory()
    memory.sync_device(MS, [grant("203.0.113.12", WEATHER, 50.0), grant("203.0.113.7", SSH, 500.0)], 100.0)
    assert [(str(g.address), g.until) for g in memory.lookup(MS, 100.0)] == [("203.0.113.7", 500.0),
                                                                           ("203.0.113.12", 50.0)]


def test_a_grant_removed_before_its_expiry_is_gone_from_then() -> None:
    memory = GrantMemory()
    memory.sync_device(MS, [grant("203.0.113.12", WEATHER, 600.0)], 0.0)
    memory.sync_device(MS, [], 30.0)  # table recreated, ledger trimmed: not live any more
    assert [g.until for g in memory.lookup(MS, 40.0, ip("203.0.113.12"))] == [30.0]


def test_entries_the_ledger_dropped_are_remembered_and_leave_the_live_mirror() -> None:
    memory = GrantMemory()
    weather, ssh = grant("203.0.113.12", WEATHER, 60.0), grant("203.0.113.12", SSH, 600.0)
    memory.sync_device(MS, [weather, ssh], 0.0)
    memory.remember([weather, grant("203.0.113.9", WEATHER, 70.0, device=OTHER)], 100.0)
    assert memory.lookup(MS, 100.0, ip("203.0.113.12")) == [ssh, weather]  # live, then gone
    assert [g.until for g in memory.lookup(OTHER, 100.0)] == [70.0]  # a device never asked about
    assert len(memory) == 3


def test_memory_is_bounded_per_device_and_in_devices() -> None:
    memory = GrantMemory(per_device=4, devices=3)
    senders = [ip(f"192.168.20.{n}") for n in range(10, 15)]
    for s in senders:
        memory.sync_device(s, [grant(f"203.0.113.{n}", WEATHER, 10.0, device=s) for n in range(1, 11)], 0.0)
    for s in senders:
        memory.sync_device(s, [], 20.0)
    assert len(memory) == 3 * 4
    assert [len(memory.lookup(s, 20.0)) for s in senders] == [0, 0, 4, 4, 4]
    assert [str(g.address) for g in memory.lookup(senders[-1], 20.0)] == [f"203.0.113.{n}" for n in range(7, 11)]


def test_one_device_synced_alone_leaves_the_others() -> None:
    memory = GrantMemory()
    memory.sync_device(MS, [grant("203.0.113.12", WEATHER, 60.0)], 0.0)
    memory.sync_device(OTHER, [grant("203.0.113.7", SSH, 60.0, device=OTHER)], 0.0)
    memory.sync_device(MS, [grant("203.0.113.13", WEATHER, 70.0)], 10.0)
    assert [str(g.address) for g in memory.lookup(MS, 10.0)] == ["203.0.113.13", "203.0.113.12"]  # live, then gone
    assert [g.until for g in memory.lookup(MS, 10.0, ip("203.0.113.12"))] == [10.0]
    assert [str(g.address) for g in memory.lookup(OTHER, 10.0)] == ["203.0.113.7"]
    assert len(memory) == 3


def test_a_refreshed_grant_that_expired_since_is_gone_at_its_later_expiry() -> None:
    memory = GrantMemory()
    memory.sync_device(MS, [grant("203.0.113.12", WEATHER, 60.0)], 0.0)
    memory.sync_device(MS, [grant("203.0.113.12", WEATHER, 110.0)], 200.0)  # refreshed at 50, expired at 110
    assert [g.until for g in memory.lookup(MS, 200.0, ip("203.0.113.12"))] == [110.0]
    memory.remember([grant("203.0.113.12", WEATHER, 110.0)], 300.0)  # then dropped by the ledger: no change
    memory.sync_device(MS, [], 300.0)
    assert [g.until for g in memory.lookup(MS, 300.0, ip("203.0.113.12"))] == [110.0]


def test_a_device_keeps_its_latest_expiries_however_many_old_ones_the_ledger_still_lists() -> None:
    """The ledger drops expired entries only when it needs the room: old ones must not crowd out the
    grant that expired a moment ago, nor make the device look as if it never resolved anything."""
    memory = GrantMemory(keep=3600, per_device=4)
    ancient = [grant(f"203.0.113.{n}", WEATHER, 100.0 + n) for n in range(1, 41)]  # beyond `keep` by now
    recent = [grant(f"198.51.100.{n}", WEATHER, 9000.0 + n) for n in range(1, 7)]
    listed = [recent[3], *ancient[:20], recent[0], *ancient[20:], *recent[4:], recent[1], recent[2]]
    memory.sync_device(MS, listed, 9990.0)
    assert [str(g.address) for g in memory.lookup(MS, 9990.0)] == [f"198.51.100.{n}" for n in (3, 4, 5, 6)]
    memory.sync_device(MS, listed, 9995.0)  # listed again, unchanged: nothing moves
    assert [str(g.address) for g in memory.lookup(MS, 9995.0)] == [f"198.51.100.{n}" for n in (3, 4, 5, 6)]


def test_dropped_entries_leave_no_empty_mirror_behind() -> None:
    memory = GrantMemory()
    weather = grant("203.0.113.12", WEATHER, 60.0)
    memory.sync_device(MS, [weather], 0.0)
    memory.remember([weather], 100.0)
    assert memory._live == {} and len(memory) == 1


def test_a_prune_of_thousands_keeps_each_devices_newest() -> None:
    memory = GrantMemory(per_device=3)
    memory.remember([grant(f"198.51.{n >> 8}.{n & 255}", WEATHER, float(n)) for n in range(1, 2001)]
                    + [grant("203.0.113.7", SSH, 5.0, device=OTHER)], 2100.0)
    assert [g.until for g in memory.lookup(MS, 2100.0)] == [1998.0, 1999.0, 2000.0]
    assert [g.until for g in memory.lookup(OTHER, 2100.0)] == [5.0]


def test_a_drop_reported_late_leaves_the_entry_admitted_again_since() -> None:
    """Doctor's copy of the ledger is taken in a thread: a sync may already have seen the entry again."""
    memory = GrantMemory()
    again = grant("203.0.113.12", WEATHER, 700.0)
    memory.sync_device(MS, [again], 650.0)
    memory.remember([grant("203.0.113.12", WEATHER, 600.0)], 660.0)
    assert memory.lookup(MS, 660.0, ip("203.0.113.12")) == [again, grant("203.0.113.12", WEATHER, 600.0)]
