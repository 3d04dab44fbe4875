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
         for hold in ("connection", "answer")]


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
    script = ruleset.render_element_changes("t", {"pin_in4": frozenset({"192.0.2.1 . tcp . 80"})},
                                            {"pin_in4": frozenset({"192.0.2.1 . tcp . 80-81"})})
    assert script.splitlines() == ["delete element inet t pin_in4 { 192.0.2.1 . tcp . 80 }",
                                   "add element inet t pin_in4 { 192.0.2.1 . tcp . 80-81 }"]
    assert ruleset.render_element_changes("t", {}, {"pin_in4": frozenset()}) == ""


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
    assert add == {"pin_in4": frozenset({"192.168.20.12 . tcp . 7091", "192.168.20.12 . udp . 5060",
                                         "192.168.20.12 . tcp . 80", "192.168.20.12 . tcp . 5060"}),
                   "pin_dev_miniserver4": frozenset({"192.168.20.12 . tcp . 7091"}),  # the Miniserver calls it
                   "dev_intercom4": frozenset({"192.168.20.12"})}
