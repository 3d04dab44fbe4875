"""The rendered ruleset, pinned: a UCI file beside the exact nft script it renders (as firewall4 tests it).

One script per firewall mode x queue (native nft, xtables) x dns_hold. A
change to the renderer shows up as a diff of these files; regenerate them on
purpose with `LOXGW_REGENERATE=1 .venv/bin/pytest tests/unit/core/test_ruleset.py`
and read the diff. The lab loads each with `nft -c` (tests/lab/test_foundation.py).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from loxgw.core import catalog, dnspath, pinholes, ruleset
from loxgw.core.config import Config, parse_config
from loxgw.core.devices import Inventory
from loxgw.core.firewall import QueueMode, ResolvedFirewall

GOLDEN = Path(__file__).parent / "golden"
CASES = [(mode, queue, hold) for mode in ("standalone", "fw4") for queue in ("nft", "xtables")
         for hold in ("connection", "answer", "auto")]


def golden_name(mode: str, queue: str, hold: str) -> str:
    return f"lab-{mode}-{queue}-{hold}.nft"


def render_case(mode: ResolvedFirewall, queue: QueueMode, hold: str) -> str:
    text = (GOLDEN / "lab.uci").read_text(encoding="utf-8")
    text = text.replace("\toption queue_num '7053'", f"\toption queue_num '7053'\n\toption dns_hold '{hold}'")
    config: Config = parse_config(text, "lab.uci")
    path = dnspath.choose(config.main.dns_mode, queue, True, config.main.dns_hold)
    devices = Inventory(config.devices).devices()
    _, elements = pinholes.desired(config, devices)
    return ruleset.render(config, mode, queue, path, elements=elements).script


@pytest.mark.parametrize(("mode", "queue", "hold"), CASES)
def test_rendered_ruleset_matches_its_golden_file(mode: ResolvedFirewall, queue: QueueMode, hold: str) -> None:
    script = render_case(mode, queue, hold)
    golden = GOLDEN / golden_name(mode, queue, hold)
    if os.environ.get("LOXGW_REGENERATE") == "1":
        golden.write_text(script, encoding="utf-8")
    assert script == golden.read_text(encoding="utf-8")


def test_every_golden_file_has_a_case() -> None:
    assert {p.name for p in GOLDEN.glob("*.nft")} == {golden_name(*case) for case in CASES}


def test_element_changes_delete_before_they_add() -> None:
    script = ruleset.render_element_changes("t", {"pins": frozenset({"192.0.2.1 . tcp . 80"})},
                                            {"pins": frozenset({"192.0.2.1 . tcp . 80-81"})})
    assert script.splitlines() == ["delete element inet t pins { 192.0.2.1 . tcp . 80 }",
                                   "add element inet t pins { 192.0.2.1 . tcp . 80-81 }"]
    assert ruleset.render_element_changes("t", {}, {"pins": frozenset()}) == ""


def test_a_device_change_is_a_diff_of_its_elements_only() -> None:
    config = parse_config((GOLDEN / "lab.uci").read_text(encoding="utf-8"), "lab.uci")
    inventory = Inventory(config.devices)
    before = inventory.devices()
    old = pinholes.elements(pinholes.plan(before, catalog.load()), before)
    inventory.observe("neighbour", 1.0, mac="50:4f:94:00:00:03", ip=ipaddress.IPv4Address("192.168.20.12"),
                      product="intercom")
    after = inventory.devices()
    new = pinholes.elements(pinholes.plan(after, catalog.load()), after)
    delete, add = pinholes.changes(old, new)
    assert delete == {}
    # The intercom's ports (and the Miniserver's calls to it) are rules over dev_intercom4: one hash element.
    assert add == {"dev_intercom4": frozenset({"192.168.20.12"})}


def _fw4_input(text: str) -> list[str]:
    config = parse_config((GOLDEN / "lab.uci").read_text(encoding="utf-8") + text, "lab.uci")
    script = ruleset.render(config, "fw4").script
    chain = script[script.index("\tchain input {"):]
    return chain[:chain.index("\t}")].splitlines()


def test_fw4_input_lets_gen1_broadcasts_reach_the_relay_only_with_a_gen1_intercom() -> None:
    def relay_rule(ports: str) -> str:
        return (f'iifname {{ "br-iot", "br-lan" }} meta pkttype broadcast udp dport {{ {ports} }} '
                'meta mark set meta mark | 0x10000000 comment "loxgw: discovery broadcasts for relay discovery"')

    assert relay_rule("7070-7077, 7079") in [line.strip() for line in _fw4_input("")]
    gen1 = "\nconfig device 'door'\n\toption type 'intercom_gen1'\n\toption ip '192.168.20.30'\n"
    assert relay_rule("7070-7077, 7079, 5000, 8110, 8112-8113") in [line.strip() for line in _fw4_input(gen1)]


def test_relay_answers_are_keyed_by_segment_and_asker_not_by_source_port() -> None:
    script = render_case("standalone", "nft", "connection")
    assert "\t\tiifname . ip daddr . udp dport @relay_answers4 accept" \
        ' comment "loxgw: answers to a relayed discovery request"' in script.splitlines()
    matches = [line for line in script.splitlines() if "@relay_answers4" in line and "update" not in line]
    assert [m for m in matches if "udp sport" in m] == []


def test_originals_the_kernel_relayed_open_answer_windows_from_clients_to_devices() -> None:
    script = render_case("standalone", "nft", "connection")
    chain = script.split("\tchain relay_windows {\n", 1)[1].split("\t}\n", 1)[0].splitlines()
    assert chain == [
        "\t\ttype filter hook input priority filter - 10; policy accept;",
        '\t\tmeta mark & 0x08000000 == 0 return comment "loxgw: not an original the kernel relayed"',
        "\t\tmeta mark set meta mark & 0xf7ffffff",
        '\t\tiifname "br-lan" update @relay_answers4 { "br-iot" . ip saddr . udp sport timeout 10s }'
        ' comment "loxgw: answers to a search the kernel relayed to br-iot"',
        '\t\tiifname "br-lan" udp dport 7070 udp sport != 7071'
        ' update @relay_answers4 { "br-iot" . ip saddr . 7071 timeout 10s }',
    ]


def test_no_answer_window_chain_without_the_relays_kernel_path() -> None:
    text = (GOLDEN / "lab.uci").read_text(encoding="utf-8")
    config = parse_config(text, "lab.uci")
    assert "chain relay_windows" not in ruleset.render(config, "standalone", relay_kernel=False).script
    off = parse_config(text.replace("config relay 'discovery'", "config relay 'discovery'\n\toption kernel 'off'"),
                       "lab.uci")
    assert [r.kernel for r in off.relays] == ["off"]
    assert "chain relay_windows" not in ruleset.render(off, "standalone").script
    assert "chain relay_windows" in ruleset.render(config, "standalone").script


def test_fw4_input_lets_in_only_the_protocols_the_reflector_reflects() -> None:
    def reflector_rules(text: str) -> list[str]:
        return [line.strip().split(" comment ")[1] for line in _fw4_input(text) if "for the reflector" in line]

    both = ['"loxgw: mDNS for the reflector"', '"loxgw: SSDP for the reflector"']
    assert reflector_rules("") == both
    assert reflector_rules("\nconfig reflector\n\toption ssdp '0'\n") == both[:1]
    assert reflector_rules("\nconfig reflector\n\toption enabled '0'\n") == []


def test_fw4_input_lets_knx_routing_in_from_its_zones_only_when_enabled() -> None:
    rule = ('iifname { "br-iot", "br-lan" } ip daddr 224.0.23.12 udp dport 3671 meta mark set meta mark | '
            '0x10000000 comment "loxgw: KNX-IP routing telegrams for the KNX router"')
    assert rule in [line.strip() for line in _fw4_input("")]  # lab.uci enables it
    lab = (GOLDEN / "lab.uci").read_text(encoding="utf-8").replace("option enabled '1'", "option enabled '0'")
    script = ruleset.render(parse_config(lab, "lab.uci"), "fw4").script
    assert "3671" not in script
