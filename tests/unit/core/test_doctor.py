"""`loxgw doctor`'s judgement: system facts parsed, findings and exit."""

from __future__ import annotations

import ipaddress
from typing import Any

from loxgw.core import catalog, pinholes
from loxgw.core.devices import Device
from loxgw.core.doctor import Facts, Rebind, domain_covered, format_report, include_active, judge, rebind_from_options

ip = ipaddress.ip_address
MS = Device("50:4f:94:a0:00:01", "50:4f:94:a0:00:01", ipaddress.IPv4Address("192.168.20.10"), "miniserver", "ms",
            sources=frozenset({"static", "neighbour"}))
ENTRIES = catalog.load()
HOLES = pinholes.plan([MS], ENTRIES)


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
    hashlimit = "xt_hashlimit is missing: with dns_hold 'auto' and no nft queue, loxgw's iptables DNS rules cannot load"
    no_hashlimit = {"nft_queue": False, "xt_string": True, "xt_hashlimit": False}
    assert failures(facts(dns_hold="auto", kernel=no_hashlimit)) == [("kernel", hashlimit)]
    # Judged from the config: the rules do not load, so no daemon answers to say which path it runs.
    assert ("kernel", hashlimit) in failures(facts(dns_hold="auto", kernel=no_hashlimit, daemon=None))
    assert failures(facts(dns_hold="connection", kernel=no_hashlimit)) == []  # not needed
    assert failures(facts(dns_hold="auto", kernel=no_hashlimit | {"nft_queue": True})) == []  # nft's own buckets
    assert failures(facts(dns_hold="auto", kernel=no_hashlimit | {"xt_hashlimit": None})) == []  # unknown: silent
    busy = judge(facts(daemon=healthy(grants_synced=False))).findings
    assert [(f.check, f.level, f.fix) for f in busy if "DNS thread was busy" in f.message] == [
        ("dns", "info", "run loxgw doctor again")]
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
