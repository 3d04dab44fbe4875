"""`loxgw explain`'s decision: the ruleset's allow chains as a question, and the reason when nothing allows."""

from __future__ import annotations

import ipaddress

from loxgw.core import catalog, dns, pinholes
from loxgw.core.catalog import PortRange
from loxgw.core.devices import Device
from loxgw.core.dns import Profile
from loxgw.core.explain import (
    Flow,
    GrantSeen,
    Segment,
    View,
    decide,
)

ip = ipaddress.ip_address
IPv4 = ipaddress.IPv4Address
SEGMENTS = (
    Segment("br-iot", "iot", "devices", True, (ipaddress.ip_network("192.168.20.0/24"),)),
    Segment("br-iot2", "iot2", "devices", True, (ipaddress.ip_network("192.168.21.0/24"),)),
    Segment("br-cam", "cam", "devices", False, (ipaddress.ip_network("192.168.30.0/24"),)),
    Segment("br-lan", "lan", "clients", True, (ipaddress.ip_network("192.168.10.0/24"),)),
)
MS = Device("50:4f:94:a0:00:01", "50:4f:94:a0:00:01", IPv4("192.168.20.10"), "miniserver", "ms")
AUDIO = Device("50:4f:94:a0:00:02", "50:4f:94:a0:00:02", IPv4("192.168.21.11"), "audioserver", "Kitchen")
UNKNOWN = Device("50:4f:94:a0:00:03", "50:4f:94:a0:00:03", IPv4("192.168.20.12"), None)
DEVICES = (MS, AUDIO, UNKNOWN)
PHONE, PLAIN, CLOUD = ip("192.168.10.20"), ip("192.168.20.50"), ip("203.0.113.99")
WEATHER = Profile("tcp", (PortRange(6066, 6066),))
PROFILES = dns.all_profiles(catalog.load())
DROP = 'final rule "loxgw: not allowed": drop'


def view(mode: str = "standalone", holes: tuple[pinholes.Pinhole, ...] | None = None,
         installed: bool = True) -> View:
    planned = tuple(pinholes.plan(DEVICES, catalog.load())) if holes is None else holes
    return View(mode, installed, SEGMENTS, DEVICES, planned,  # type: ignore[arg-type]
                dns.build_policy(catalog.load(), "devices"), profiles=PROFILES)


def weather(until: float) -> list[GrantSeen]:
    return [GrantSeen(MS.ip, ip("203.0.113.12"), "weather.loxone.com", WEATHER, until)]  # type: ignore[arg-type]


def ask(src: object, dst: object, proto: str, port: int | None, grants: list[GrantSeen] | None = None,
        now: float = 1000.0, name: str = "", v: View | None = None) -> tuple[bool, str, str, str, tuple[str, ...]]:
    flow = Flow(ip(str(src)), ip(str(dst)) if dst else None, proto, port, name)
    verdict = decide(flow, v or view(), grants or [], now)
    return verdict.passes, verdict.code, verdict.text, verdict.rule, verdict.entries


def test_a_live_grant_opens_its_profile_and_nothing_else() -> None:
    index = PROFILES.index(WEATHER)
    assert ask(MS.ip, "203.0.113.12", "tcp", 6066, weather(1060.0)) == (
        True, "grant", "`weather.loxone.com` resolved to 203.0.113.12 by this device: TCP 6066 open for 60 s more",
        f"set cloud4_{index} (tcp/6066)", ("ms-weather",))
    assert ask(MS.ip, "203.0.113.12", "tcp", 443, weather(1060.0)) == (
        False, "port_not_in_entry",
        "`weather.loxone.com` resolved, but TCP 443 is not in its entry (catalogue: TCP 6066)", DROP, ("ms-weather",))


def test_an_expired_grant_says_when() -> None:
    assert ask(MS.ip, "203.0.113.12", "tcp", 6066, weather(1060.0), now=1100.0)[:3] == (
        False, "grant_expired", "`weather.loxone.com` resolved, but its grant expired 40 s ago (the device has not "
        "resolved it again)")
    # Expired, and the port was never in the entry anyway: that is the reason to give.
    assert ask(MS.ip, "203.0.113.12", "tcp", 443, weather(1060.0), now=1100.0)[1] == "port_not_in_entry"


def test_an_address_never_resolved_names_the_catalogue_hosts() -> None:
    passes, code, text, rule, entries = ask(MS.ip, CLOUD, "tcp", 8443)
    assert (passes, code, rule, entries) == (False, "never_resolved", DROP, ("ms-mqtt", "ms-remcov3-mqtt"))
    assert text == ("address never resolved by this device (TCP 8443 is in the catalogue for "
                    "*.ccbroker.loxonecloud.com, eu.ccbroker.loxonecloud.com: the device must resolve one of them "
                    "first)")
    passes, code, text, _, entries = ask(MS.ip, CLOUD, "tcp", 443)
    assert (code, entries[:3], "ms-push" in entries) == (
        "never_resolved", ("ms-weather-https", "ms-caller", "ms-mailer"), True)
    assert text == ("address never resolved by this device (TCP 443 is in the catalogue for weather.loxonecloud.com, "
                    "caller.loxone.com, mail.loxonecloud.com, ...: the device must resolve one of them first)")


def test_what_no_catalogue_entry_covers() -> None:
    assert ask(MS.ip, CLOUD, "tcp", 12345)[1:3] == (
        "not_loxone_function", "not a Loxone function: no catalogue entry lets a miniserver reach TCP 12345 on the "
        "internet")
    assert ask(PLAIN, CLOUD, "tcp", 443)[1:3] == (
        "not_loxone_device", "192.168.20.50 is not a Loxone device loxgw knows (no 50:4F:94 MAC, no discovery answer, "
        "no config device section) and never resolved this address to a catalogue name")
    assert ask(MS.ip, "10.1.2.3", "tcp", 443)[1] == "not_loxone_function"
    assert ask("192.168.30.5", CLOUD, "tcp", 443)[1:3] == (
        "no_cloud", "zone cam has cloud '0': no DNS answer opens anything for it (set option cloud '1' in config "
        "zone 'cam')")


def test_device_and_client_pinholes() -> None:
    assert ask(MS.ip, AUDIO.ip, "tcp", 7095)[:2] + ask(MS.ip, AUDIO.ip, "tcp", 7095)[3:] == (
        True, "pinhole", 'rule "loxgw: miniserver to audioserver ports"', ("as-miniserver",))
    passes, code, text, _, _ = ask(AUDIO.ip, MS.ip, "tcp", 7095)
    assert (passes, code) == (False, "not_loxone_function")
    assert text == "no catalogue entry lets an audioserver open TCP 7095 on a miniserver (it may open: nothing)"
    assert ask(MS.ip, PHONE, "udp", 7777)[:2] + ask(MS.ip, PHONE, "udp", 7777)[3:] == (
        True, "pinhole", 'rule "loxgw: miniserver to clients-zone hosts"', ("ms-debug-monitor",))
    assert ask(MS.ip, PHONE, "tcp", 22)[1:3] == (
        "not_loxone_function", "no catalogue entry lets a miniserver reach clients on TCP 22 (it may: UDP 7777)")
    assert ask(PLAIN, PHONE, "udp", 7777)[1] == "not_loxone_device"


def test_from_clients_into_devices() -> None:
    assert ask(PHONE, MS.ip, "tcp", 443) == (
        True, "pinhole", "inbound pinhole inbound: clients -> 192.168.20.10 tcp/443 (ms-https)",
        'rule "loxgw: miniserver ports from clients zones"', ("ms-https",))
    assert ask(PHONE, MS.ip, "tcp", 80)[3] == "set pin_port4"  # its own HTTP port: an element of its own
    assert ask(PHONE, MS.ip, "tcp", 8080)[1:3] == (
        "not_loxone_function", "not a Loxone function: no catalogue entry opens TCP 8080 on a miniserver (it gets TCP "
        "20, TCP 21, TCP 443, TCP 47808, TCP 80, UDP 47808)")
    assert ask(PHONE, UNKNOWN.ip, "tcp", 8080)[1:3] == (
        "not_loxone_function", "TCP 8080 is not open on a Loxone device of unknown product (it gets TCP 443, TCP 80 "
        "until its product is known)")
    assert ask(PHONE, PLAIN, "tcp", 80)[1] == "not_loxone_device"
    assert ask(PHONE, MS.ip, "tcp", 443, v=view(holes=()))[1:] == (
        "no_pinhole", "the catalogue opens TCP 443 on a miniserver (ms-https), but the pinhole is not installed", DROP,
        ("ms-https",))


def test_flows_loxgw_does_not_filter() -> None:
    assert ask(MS.ip, UNKNOWN.ip, "tcp", 1)[:2] == (True, "same_segment")
    assert ask(PHONE, CLOUD, "tcp", 443)[:2] == (True, "not_filtered")
    assert ask("198.51.100.1", MS.ip, "tcp", 443)[:2] == (True, "not_filtered")
    assert ask(MS.ip, CLOUD, "tcp", 443, v=view(installed=False))[:2] == (True, "not_installed")


def test_fw4_mode_leaves_the_rest_to_fw4() -> None:
    assert ask(MS.ip, CLOUD, "tcp", 443, v=view("fw4"))[3] == \
        "loxgw returns without its mark: fw4's zone policy decides"


def test_a_host_given_by_name() -> None:
    assert ask(MS.ip, None, "tcp", 22, name="a7.remcov3.loxonecloud.com")[1:3] == (
        "never_resolved", "`a7.remcov3.loxonecloud.com` never resolved by this device (loxgw opens TCP 22 for the "
        "addresses of its answer once it does)")
    assert ask(MS.ip, None, "tcp", 443, name="example.org")[1:3] == (
        "not_loxone_function", "`example.org` is not a catalogue name: no DNS answer for it opens anything")
    assert ask(MS.ip, None, "tcp", 443, name="weather.loxone.com")[1:3] == (
        "port_not_in_entry", "TCP 443 is not in the entry of `weather.loxone.com` (catalogue: TCP 6066), resolved or "
        "not")
    assert ask(MS.ip, None, "tcp", 6066, weather(1060.0), name="weather.loxone.com")[:2] == (True, "grant")
    assert ask(MS.ip, None, "tcp", 6066, weather(1060.0), 1090.0, name="weather.loxone.com")[1:3] == (
        "grant_expired", "`weather.loxone.com` resolved, but its grant expired 30 s ago (the device has not resolved "
        "it again)")


def test_a_kernel_sample_says_its_chain() -> None:
    lone = View("standalone", True, (), (), (), dns.build_policy(catalog.load(), "devices"))
    sample = Flow(PLAIN, CLOUD, "tcp", 443, chain="out")  # type: ignore[arg-type]
    assert decide(sample, lone, [], 0.0).code == "not_loxone_device"
    into = Flow(PHONE, PLAIN, "tcp", 443, chain="in")  # type: ignore[arg-type]
    assert decide(into, lone, [], 0.0).code == "not_loxone_device"
