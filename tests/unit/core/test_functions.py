"""Each function of a device's product, in words: working, open, blocked, not seen, not managed."""

from __future__ import annotations

import ipaddress
from typing import Any

from loxgw.core import catalog, pinholes
from loxgw.core.blocked import BlockedTable, GrantSeen, Sample
from loxgw.core.catalog import PortRange
from loxgw.core.devices import Device
from loxgw.core.dns import Profile
from loxgw.core.explain import Verdict
from loxgw.core.functions import FUNCTIONS, FunctionState, device_functions, function_of, product_functions

ip = ipaddress.ip_address
MS = Device("50:4f:94:a0:00:01", "50:4f:94:a0:00:01", ipaddress.IPv4Address("192.168.20.10"), "miniserver", "ms",
            sources=frozenset({"static", "neighbour"}))
ENTRIES = catalog.load()
HOLES = pinholes.plan([MS], ENTRIES)


def test_functions_group_the_catalogue() -> None:
    functions = product_functions("miniserver", ENTRIES)
    assert list(functions)[:4] == ["DNS", "Discovery", "App access", "FTP"]
    assert [e.id for e in functions["Weather"]] == ["ms-weather", "ms-weather-https"]
    assert {"Remote Connect", "Updates", "Push notifications", "Time", "Cloud services"} <= set(functions)
    assert [e.id for e in product_functions("intercom", ENTRIES)["App access"]] == [
        "app-sip", "ic-app", "ic-http", "ic-sip-tcp", "ic-media"]
    assert function_of(next(e for e in ENTRIES if e.id == "ms-bacnet-udp")) == "BACnet"
    assert {i for _, ids in FUNCTIONS for i in ids} <= {e.id for e in ENTRIES}  # renamed entries show up here


def states(attempts: list[Any], grants: list[GrantSeen], relayed: bool = True,
           now: float = 1000.0) -> dict[str, tuple[str, str]]:
    found, _ = device_functions(MS, ENTRIES, attempts, grants, HOLES, relayed, now)
    return {f.function: (f.state, f.detail) for f in found}


def test_function_states() -> None:
    weather = Profile("tcp", (PortRange(6066, 6066),))
    grant = GrantSeen(MS.ip, ip("203.0.113.12"), "weather.loxone.com", weather, 1060.0)  # type: ignore[arg-type]
    found = states([], [grant])
    assert found["Weather"] == ("working", "`weather.loxone.com` resolved (open 60 s more)")
    assert found["App access"] == ("open", "pinholes TCP 443, TCP 80")
    assert found["Discovery"] == ("open", "relayed between zones")
    assert found["Push notifications"] == ("not seen", "push.loxonecloud.com not resolved recently")
    assert found["Updates"] == ("not seen", "none of update.loxone.com, updatefiles.loxone.com resolved recently")
    assert found["Remote Connect"][1].endswith(", *.ccbroker.loxonecloud.com, ... resolved recently")
    assert found["DNS"] == ("not managed", "to its configured resolver")
    assert states([], [grant], relayed=False, now=1200.0)["Discovery"] == (
        "not managed", "no relay: clients find it only on its own segment")
    assert states([], [grant], now=1200.0)["Weather"] == ("working", "`weather.loxone.com` resolved (grant expired "
                                                          "140 s ago)")
    assert states([], [grant], now=1400.0)["Weather"][0] == "not seen"


def attempt(port: int, verdict: Verdict, seen: float = 990.0) -> Any:
    row = BlockedTable().note(Sample("out", MS.ip, ip("203.0.113.12"), "tcp", port), seen)  # type: ignore[arg-type]
    row.verdict = verdict
    return row


def test_blocked_attempts_mark_the_function_they_belong_to() -> None:
    why = "`weather.loxone.com` resolved, but TCP 443 is not in its entry (catalogue: TCP 6066)"
    weather = attempt(443, Verdict(False, "port_not_in_entry", why, "drop", ("ms-weather",)))
    weather.count = 3
    ambiguous = attempt(443, Verdict(False, "never_resolved", "…", "drop", ("ms-push", "ms-weather-https")))
    old = attempt(8443, Verdict(False, "never_resolved", "…", "drop", ("ms-mqtt",)), seen=100.0)
    found, other = device_functions(MS, ENTRIES, [weather, ambiguous, old], [], HOLES, True, 1000.0)
    by_name = {f.function: f for f in found}
    assert by_name["Weather"] == FunctionState("Weather", "blocked", f"{why} (3 samples, last 10 s ago)")
    assert by_name["Remote Connect"].state == "not seen"  # its attempt is older than RECENT
    assert other == [ambiguous]
