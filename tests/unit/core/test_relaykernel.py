"""The relay's netdev table: exact rules for the lab's two segments, masks, targets, counters.

The lab (tests/lab/test_relay.py) loads the script into a kernel and checks
the copies byte for byte against the Python path's.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from loxgw.core import relaykernel
from loxgw.core.catalog import PortRange
from loxgw.core.firewall import FW4_MARK, HOLD_MARK, RELAY_COPY_MARK, RELAY_ORIGINAL_MARK
from loxgw.core.relay import RelayInterface

PORTS = (PortRange(7079, 7079), PortRange(7070, 7077), PortRange(7072, 7073))
RELAYED = [*range(7070, 7078), 7079]
LAN = RelayInterface("br-lan", 5, IPv4Address("192.168.10.1"), IPv4Address("192.168.10.255"), False, "clients",
                     bytes.fromhex("020000000a01"))
IOT = RelayInterface("br-iot", 6, IPv4Address("192.168.20.1"), IPv4Address("192.168.20.255"), False, "devices",
                     bytes.fromhex("020000001401"))
WAN = RelayInterface("wan", 7, IPv4Address("203.0.113.2"), IPv4Address("203.0.113.255"), True, "",
                     bytes.fromhex("02000000fe01"))


def chain(script: str, name: str) -> list[str]:
    return [line.strip() for line in script.split(f"\tchain {name} {{\n", 1)[1].split("\t}\n", 1)[0].splitlines()]


def test_the_table_is_deleted_and_created_in_one_script() -> None:
    rendered = relaykernel.render("loxgw", [LAN, IOT], PORTS, 20, 2000)
    assert rendered.table == "loxgw_relay"
    assert rendered.script.splitlines()[:3] == [
        "table netdev loxgw_relay", "delete table netdev loxgw_relay", "table netdev loxgw_relay {"]
    assert rendered.script.endswith("\n}\n")
    assert relaykernel.removal("loxgw") == "table netdev loxgw_relay\ndelete table netdev loxgw_relay\n"
    assert rendered.removal == relaykernel.removal("loxgw")


def test_a_broadcast_is_checked_as_the_core_checks_it_then_copied() -> None:
    script = relaykernel.render("loxgw", [LAN, IOT], PORTS, 20, 2000).script
    # sorted by name: br-iot is 0, br-lan is 1
    assert chain(script, "ingress_1") == [
        'type filter hook ingress device "br-lan" priority 0; policy accept;',
        "meta pkttype broadcast ether type ip ip protocol udp udp dport { 7070-7077, 7079 } ip dscp != 5 "
        "jump admit_1 comment \"loxgw: a discovery broadcast, not a relay's copy\"",
    ]
    assert chain(script, "admit_1") == [
        "counter name udp dport map { " + ", ".join(f'{p} : "received_1_{i}"' for i, p in enumerate(RELAYED)) + " }",
        'ip hdrlength != 5 return comment "loxgw: IP options, not copied"',
        "ip frag-off & 0x3fff != 0 return",
        "udp length > 1480 counter name dropped_oversized_1 return",
        "ip daddr != { 255.255.255.255, 192.168.10.255 } counter name dropped_not_broadcast_1 return",
        "ip saddr { 0.0.0.0, 192.168.10.1 } counter name dropped_own_or_unspecified_source_1 return",
        "update @sources { ip saddr limit rate over 20/second burst 20 packets } "
        "counter name dropped_rate_source_1 return",
        "limit name global_rate counter name dropped_rate_global_1 return",
        'meta mark set meta mark | 0x40000000 dup to "br-iot" counter name copies_1_0',
        "meta mark set meta mark & 0xbfffffff | 0x08000000 "
        'comment "loxgw: relayed original; table inet loxgw opens its answer windows"',
    ]
    assert "\tlimit global_rate { rate over 2000/second burst 2000 packets; " in script


def test_only_marked_copies_are_rewritten_as_the_python_path_builds_them() -> None:
    script = relaykernel.render("loxgw", [LAN, IOT], PORTS, 20, 2000).script
    assert chain(script, "egress_0") == [
        'type filter hook egress device "br-iot" priority 0; policy accept;',
        "meta mark & 0x40000000 == 0x40000000 ether saddr set 02:00:00:00:14:01 ip daddr set 192.168.20.255 "
        "ip dscp set 5 ip id set 0x1401 ip frag-off set 0x4000 meta mark set meta mark & 0xbfffffff "
        "counter name udp dport map { " + ", ".join(f'{p} : "relayed_0_{i}"' for i, p in enumerate(RELAYED)) + " } "
        'comment "loxgw: a relay copy, as core.relaywire.CopyTemplate builds it"',
    ]


def test_marks_are_loxgws_own_bits() -> None:
    marks = [FW4_MARK, HOLD_MARK, RELAY_COPY_MARK, RELAY_ORIGINAL_MARK]
    assert [bin(m).count("1") for m in marks] == [1, 1, 1, 1]
    assert sum(marks) == FW4_MARK | HOLD_MARK | RELAY_COPY_MARK | RELAY_ORIGINAL_MARK  # no bit shared


def test_copy_to_leaves_out_the_segments_the_kernel_must_not_copy_to() -> None:
    rendered = relaykernel.render("loxgw", [LAN, IOT], PORTS, 20, 2000, copy_to=frozenset({"br-iot"}))
    script = rendered.script
    assert "chain ingress_0" not in script  # nothing to copy from br-iot to
    assert "chain egress_1" not in script
    assert [line for line in chain(script, "admit_1") if "dup to" in line] == [
        'meta mark set meta mark | 0x40000000 dup to "br-iot" counter name copies_1_0']
    assert [(k, v) for k, v in rendered.counters.items() if k.startswith("copies")] == [
        ("copies_1_0", "br-lan>br-iot:copies")]
    assert {v for k, v in rendered.counters.items() if k.startswith("relayed")} == {
        f"br-iot:{p}:relayed" for p in RELAYED}


def test_counters_map_to_status_names() -> None:
    rendered = relaykernel.render("loxgw", [LAN, IOT], PORTS, 20, 2000)
    assert rendered.counters["copies_0_1"] == "br-iot>br-lan:copies"
    assert rendered.counters["dropped_rate_source_1"] == "br-lan:dropped_rate_source"
    assert (rendered.counters["received_1_0"], rendered.counters["relayed_0_8"]) == (
        "br-lan:7070:received", "br-iot:7079:relayed")  # named as core.relay names its counters
    assert len(rendered.counters) == 2 * (len(relaykernel.DROPS) + 1 + 2 * len(RELAYED))
    for name, label in rendered.counters.items():
        assert f'\tcounter {name} {{ comment "{label}"; }}' in rendered.script


def test_ports_are_counted_one_by_one_up_to_the_cores_limit_then_per_range() -> None:
    assert relaykernel.port_columns(PORTS) == [(str(p), str(p)) for p in RELAYED]
    wide = (PortRange(5000, 5000), PortRange(7000, 7100))
    assert relaykernel.port_columns(wide) == [("5000", "5000"), ("7000-7100", "7000-7100")]


def test_three_segments_copy_to_both_others() -> None:
    script = relaykernel.render("t", [LAN, IOT, WAN], PORTS, 5, 8).script
    assert [line for line in chain(script, "admit_2") if "dup to" in line] == [
        'meta mark set meta mark | 0x40000000 dup to "br-iot" counter name copies_2_0',
        'meta mark set meta mark | 0x40000000 dup to "br-lan" counter name copies_2_1',
    ]


def test_upstream_only_where_allowed_and_ethernet_only() -> None:
    assert relaykernel.kernel_interfaces([WAN, LAN, IOT], allow_upstream=False) == (IOT, LAN)
    assert relaykernel.kernel_interfaces([WAN, LAN, IOT], allow_upstream=True) == (IOT, LAN, WAN)
    tun = RelayInterface("tun0", 9, IPv4Address("10.8.0.1"), IPv4Address("10.8.0.255"))
    assert relaykernel.unsupported([LAN, IOT]) == ""
    assert relaykernel.unsupported([LAN, tun]) == \
        "tun0 is not an Ethernet interface (the kernel rewrites Ethernet frames)"


def test_answer_window_rules_write_the_python_paths_keys() -> None:
    rules = relaykernel.answer_window_rules([("br-lan", "br-iot")], 10, 7070, 7071, "relay_answers4")
    assert rules == [
        'iifname "br-lan" update @relay_answers4 { "br-iot" . ip saddr . udp sport timeout 10s }'
        ' comment "loxgw: answers to a search the kernel relayed to br-iot"',
        'iifname "br-lan" udp dport 7070 udp sport != 7071'
        ' update @relay_answers4 { "br-iot" . ip saddr . 7071 timeout 10s }',
    ]
