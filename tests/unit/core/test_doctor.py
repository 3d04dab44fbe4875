"""`loxgw doctor`'s judgement: functions per device, system facts parsed, findings and exit."""

from __future__ import annotations

import ipaddress
from typing import Any

from loxgw.core import catalog, pinholes
from loxgw.core.blocked import BlockedTable, Sample
from loxgw.core.catalog import PortRange
from loxgw.core.devices import Device
from loxgw.core.dns import Profile
from loxgw.core.doctor import (
    FUNCTIONS,
    Facts,
    FunctionState,
    Rebind,
    device_functions,
    domain_covered,
    format_report,
    function_of,
    include_active,
    judge,
    product_functions,
    rebind_from_options,
)
from loxgw.core.explain import GrantSeen, Verdict

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


FW4_FORWARD = """table inet fw4 {
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t\tmeta mark & 0x10000000 == 0x10000000 ct state != invalid accept comment "loxgw: allowed by loxgw"
\t\tct state vmap { established : accept, related : accept, invalid : drop }
\t}
}
"""


def test_system_facts_parsed() -> None:
    assert include_active(FW4_FORWARD) is True
    assert include_active(FW4_FORWARD.replace("0x10000000", "0x00000010")) is False
    assert include_active(None) is False
    assert rebind_from_options(["--stop-dns-rebind", "rebind-domain-ok=/dyndns.loxonecloud.com/example.org/"]) == (
        True, ("dyndns.loxonecloud.com", "example.org"))
    assert rebind_from_options(["rebind-localhost-ok", "server=1.1.1.1"]) == (False, ())
    assert domain_covered(["loxonecloud.com"]) is True
    assert domain_covered(["dyndns.loxonecloud.com."]) is False  # only as split_domains leaves it
    assert domain_covered(["evilloxonecloud.com", "cloud.com"]) is False


def healthy(**changes: Any) -> dict[str, Any]:
    device = {"name": "ms", "product": "miniserver", "ip": "192.168.20.10", "mac": MS.mac, "static": True,
              "seen": True, "present": True, "functions": [{"function": "Weather", "state": "working", "detail": "x"}],
              "other_blocked": []}
    answer = {"mode": "standalone", "enabled": True, "table": "loxgw", "installed": True, "dns_mode": "inline",
              "queue_mode": "xtables", "dns_path": "copies", "redirect_wanted": True, "rebind_exception": True,
              "blocked_log_error": None, "relay_missing": False, "devices": [device], "upnp": [], "blocked": []}
    return answer | changes


def facts(**changes: Any) -> Facts:
    base: dict[str, Any] = {
        "daemon": healthy(), "redirect_present": True, "kernel": {"nft_queue": False, "nflog": True, "xt_string": True},
        "rebind": Rebind("dnsmasq", True, ("dyndns.loxonecloud.com",), "dnsmasq pid 7"),
        "interfaces": (("iot", "br-iot", "up"), ("lan", "br-lan", "up")),
    }
    return Facts(**(base | changes))


def failures(report_facts: Facts) -> list[tuple[str, str]]:
    return [(f.check, f.message) for f in judge(report_facts).findings if f.level == "fail"]


def test_a_healthy_router_is_well() -> None:
    report = judge(facts())
    assert (report.ok, failures(facts())) == (True, [])
    assert format_report(report).splitlines()[0] == "loxgw doctor: all is well"


def test_each_problem_is_a_failure_with_a_fix() -> None:
    fw4 = healthy(mode="fw4")
    assert failures(facts(daemon=fw4, fw4_forward=FW4_FORWARD, fw4_input=FW4_FORWARD.replace("0x1", "0x2"))) == [
        ("fw4 input", "loxgw's include is not in fw4's input chain: fw4 drops what loxgw allows into the router "
         "(relay, gateway ping)")]
    assert failures(facts(daemon=fw4))[0] == ("fw4 forward", "fw4 has no forward chain (table inet fw4 missing: is "
                                              "the firewall stopped?)")
    assert failures(facts(rebind=Rebind("dnsmasq", True, ("example.org",), "dnsmasq pid 7"))) == [
        ("rebind exception", "dnsmasq drops private answers for *.dyndns.loxonecloud.com (rebind protection, no "
         "exception): the App's local TLS connection to the Miniserver fails")]
    unmanaged = facts(daemon=healthy(rebind_exception=False), rebind=Rebind("openwrt", True, (), "uci"))
    rebind = next(f for f in judge(unmanaged).findings if f.check == "rebind exception")
    assert (failures(unmanaged), rebind.level, rebind.fix[:46]) == (
        [], "warn", "uci add_list dhcp.@dnsmasq[0].rebind_domain='d")
    assert failures(facts(interfaces=(("iot", "br-iot", "down"),))) == [("interface", "br-iot (zone iot) is down")]
    never = healthy(devices=[healthy()["devices"][0] | {"seen": False, "mac": None}])
    assert failures(facts(daemon=never)) == [
        ("device", "config device ms (192.168.20.10) has never been seen")]
    blocked = healthy(devices=[healthy()["devices"][0] | {"functions": [
        {"function": "Weather", "state": "blocked", "detail": "why"}]}])
    assert failures(facts(daemon=blocked)) == [("function", "ms: Weather blocked: why")]
    fw4_blocked = facts(daemon=blocked | {"mode": "fw4"}, fw4_forward=FW4_FORWARD, fw4_input=FW4_FORWARD)
    assert (failures(fw4_blocked), [f.level for f in judge(fw4_blocked).findings if f.check == "function"]) == (
        [], ["warn"])  # not allowed by loxgw; fw4's zone policy may still have let it through
    assert failures(facts(redirect_present=False))[0][0] == "dns redirect"
    assert failures(facts(kernel={"xt_string": False}))[0][0] == "kernel"
    assert failures(facts(daemon=healthy(installed=False)))[0] == ("firewall", "table inet loxgw is not installed")
    upnp = [{"name": "remote", "state": "failed", "conflict": "192.168.1.5", "last_error": "x"}]
    assert failures(facts(daemon=healthy(upnp=upnp))) == [("upnp", "remote: mapping failed (held by 192.168.1.5)")]


def test_without_a_daemon_the_system_checks_still_run() -> None:
    report = judge(facts(daemon=None, daemon_error="loxgw is not running (no daemon at /x: No such file)"))
    assert report.ok is False
    assert [f.check for f in report.findings] == ["daemon", "interface", "interface"]
    text = format_report(report)
    assert "FAIL  daemon" in text and "fix: start it" in text


def test_the_report_lists_devices_and_blocked_attempts() -> None:
    mine = {"direction": "out", "device": "192.168.20.10", "device_name": "ms", "dst": "203.0.113.99",
            "flow": "TCP 443", "count": 2, "last_seen": 1.5, "why": "address never resolved by this device"}
    plain = mine | {"device": "192.168.20.50", "device_name": "", "why": "192.168.20.50 is not a Loxone device"}
    device = healthy()["devices"][0] | {"other_blocked": ["  ms -> 203.0.113.99 TCP 443: 2x, last 1.5 s ago: why"]}
    answer = healthy(blocked=[mine, plain], devices=[device])
    text = format_report(judge(facts(daemon=answer)))
    assert text.splitlines()[-5:] == [
        "ms (miniserver, 192.168.20.10, 50:4f:94:a0:00:01)",
        "  working     Weather                    x",
        "  blocked     ms -> 203.0.113.99 TCP 443: 2x, last 1.5 s ago: why",
        "blocked attempts of other hosts, most recent first:",
        "  192.168.20.50 -> 203.0.113.99 TCP 443: 2x, last 1.5 s ago: 192.168.20.50 is not a Loxone device"]
    assert judge(facts(daemon=answer)).as_json()["ok"] is True
