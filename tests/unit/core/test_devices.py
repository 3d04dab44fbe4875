"""Inventory, LoxLIVE and lease parsing, and the pinhole plan."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import catalog, pinholes
from loxgw.core.catalog import PortRange
from loxgw.core.config import StaticDevice
from loxgw.core.devices import (
    DISCOVERY,
    LOXONE_MAC,
    MAX_TEXT,
    STATIC,
    Inventory,
    LoxLive,
    clean_text,
    evidence_rank,
    parse_dhcp_leases,
    parse_loxlive,
)
from loxgw.core.errors import RemoteDataError
from loxgw.edges.detect import pick_current

IP = ipaddress.IPv4Address
MS_MAC = "50:4f:94:a0:00:01"


def test_loxlive_with_spaces_in_the_name() -> None:
    found = parse_loxlive(b"LoxLIVE: Haus 12: Wohnen 2 192.168.20.10:8080 504F94A00001 15.1.10.2 Prog:x\x00")
    assert (found.name, str(found.ip), found.port, found.serial, found.firmware) == (
        "Haus 12: Wohnen 2", "192.168.20.10", 8080, "504F94A00001", "15.1.10.2")


@pytest.mark.parametrize("payload", [
    b"", b"LoxLIVE:", b"LoxLIVE: name 192.168.20.10 504F94A00001 1.0", b"LoxLIVE: n 1.2.3.4:99999 504F94A00001 1.0",
    b"LoxLIVE: n 999.2.3.4:80 504F94A00001 1.0", b"LoxLIVE: n 1.2.3.4:80 XYZ 1.0", b"\xff" * 10, b"x" * 600,
    b"LoxLIVE:  1.2.3.4:80 504F94A00001 1.0",
])
def test_malformed_loxlive_is_refused(payload: bytes) -> None:
    with pytest.raises(RemoteDataError):
        parse_loxlive(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.booleans())
def test_loxlive_parser_never_crashes(payload: bytes, with_source: bool) -> None:
    try:
        found = parse_loxlive(payload, IP("192.168.20.10") if with_source else None)
    except RemoteDataError:
        return
    assert 1 <= found.port <= 65535
    assert found.name == clean_text(found.name) and len(found.serial) == 12


# --- untrusted text ------------------------------------------------------------------

@pytest.mark.parametrize("raw,clean", [
    ("<img src=x onerror=alert(1)>", "img src=x onerror=alert(1)"),
    ("Miniserver \"Haus\" & 'Garten' `x`", "Miniserver Haus Garten x"),
    ("  Wohn\tzimmer \r\n  2  ", "Wohn zimmer 2"),
    ("Kü\u200bche\u202e\x1b[31mrot\x00", "Küche[31mrot"),  # format, bidi, escape and NUL characters dropped
    ("\x85\u2028Küche\xa0Nord", "Küche Nord"),  # Unicode whitespace collapses too
    ("\x00\x01\x02", ""),
])
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_clean_text_caps_length_without_a_trailing_space() -> None:
    assert clean_text("x" * 100) == "x" * MAX_TEXT
    assert clean_text("x" * 63 + " y") == "x" * 63
    assert (clean_text("ab cd", 3), clean_text("ab cd", 4)) == ("ab", "ab c")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300), st.integers(min_value=1, max_value=80))
def test_clean_text_promise(raw: str, limit: int) -> None:
    clean = clean_text(raw, limit)
    assert len(clean) <= limit
    assert clean.isprintable() and not set(clean) & set("<>&\"'`")
    assert clean == clean.strip() and "  " not in clean
    assert clean_text(clean, limit) == clean


# --- LoxLIVE answers: long ones, Latin-1 names, Audioserver JSON -------------------------

LONG_IPV6 = b",".join(b"504F94%06X:15.1.10.2/1" % i for i in range(40))


def test_long_loxlive_answer_parses_its_prefix() -> None:
    payload = (b"LoxLIVE: Haus 192.168.20.10:80 504F94A00001 15.1.10.2 Prog:2025-01-01 10:00:00 Type:3 "
               b"HwId:A0000 IPv6:fd00::10," + LONG_IPV6)
    assert len(payload) > 1000
    found = parse_loxlive(payload)
    assert (found.name, str(found.ip), found.port, found.serial, found.firmware, found.product) == (
        "Haus", "192.168.20.10", 80, "504F94A00001", "15.1.10.2", "miniserver")


@pytest.mark.parametrize("name,decoded", [
    (b"K\xfcche Nord", "Küche Nord"),  # Latin-1
    ("Küche Nord".encode(), "Küche Nord"),  # UTF-8
    (b"Stube\x85\x9b31m", "Stube 31m"),  # C1 controls from Latin-1: NEL is whitespace, CSI dropped
    (b"<img src=x onerror=alert(1)>", "img src=x onerror=alert(1)"),
])
def test_loxlive_names_are_decoded_and_cleaned(name: bytes, decoded: str) -> None:
    found = parse_loxlive(b"LoxLIVE: " + name + b" 192.168.20.10:80 504F94A00001 15.1.10.2 Prog:x")
    assert found.name == decoded


def test_loxlive_name_of_markup_only_is_refused() -> None:
    with pytest.raises(RemoteDataError) as info:
        parse_loxlive(b"LoxLIVE: <>&\x01 192.168.20.10:80 504F94A00001 15.1.10.2")
    assert (info.value.reason, str(info.value)) == ("malformed", "malformed: bad name")


AUDIO_JSON = (b'{"t":"Audioserver","tv":"3","n":"Audio K\\u00fcche","s":"50:4F:94:B0:00:02",'
              b'"v":"2.5.1","p":"7091","hn":"audio","di":"1"}')


def test_audioserver_json_answer() -> None:
    found = parse_loxlive(AUDIO_JSON, IP("192.168.20.11"))
    assert found == LoxLive("Audio Küche", IP("192.168.20.11"), 7091, "504F94B00002", "2.5.1", "audioserver")


@pytest.mark.parametrize("payload,src,reason", [
    (AUDIO_JSON, None, "malformed"),  # a JSON answer names no address
    (AUDIO_JSON.replace(b"Audioserver", b"Toaster"), IP("192.168.20.11"), "unknown_product"),
    (AUDIO_JSON.replace(b"50:4F:94:B0:00:02", b"nope"), IP("192.168.20.11"), "malformed"),
    (AUDIO_JSON.replace(b'"7091"', b'"70910"'), IP("192.168.20.11"), "malformed"),
    (AUDIO_JSON.replace(b'"7091"', b"true"), IP("192.168.20.11"), "malformed"),
    (AUDIO_JSON.replace(b'"Audio K\\u00fcche"', b'"<>"'), IP("192.168.20.11"), "malformed"),
    (b'{"t":"Audioserver","n":"' + b"x" * 2000 + b'"}', IP("192.168.20.11"), "oversized"),
    (b"[" * 600 + b"]" * 600, IP("192.168.20.11"), "malformed"),
    (b'{"t": "Audio', IP("192.168.20.11"), "malformed"),
    (b"[1, 2]", IP("192.168.20.11"), "malformed"),
])
def test_bad_json_answers(payload: bytes, src: IP | None, reason: str) -> None:
    with pytest.raises(RemoteDataError) as info:
        parse_loxlive(payload, src)
    assert info.value.reason == reason


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(
        ["Audioserver", "audioserver", "50:4F:94:B0:00:02", "7091", "<script>"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["t", "n", "s", "v", "p", "hn", "x"]), inner, max_size=7),
    max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES)
def test_json_answer_parser_never_crashes(value: object) -> None:
    import json

    try:
        found = parse_loxlive(json.dumps(value).encode(), IP("192.168.20.11"))
    except RemoteDataError:
        return
    assert (found.product, str(found.ip), len(found.serial)) == ("audioserver", "192.168.20.11", 12)
    assert found.name == clean_text(found.name) != ""


def test_dhcp_leases() -> None:
    text = ("1700000000 50:4F:94:A0:00:01 192.168.20.10 Miniserver 01:50:4f:94:a0:00:01\n"
            "garbage line\n1700000000 02:00:00:00:00:01 192.168.20.99 * *\n"
            "1700000000 50:4f:94:a0:00:02 not-an-ip x y\n")
    assert parse_dhcp_leases(text) == [(MS_MAC, IP("192.168.20.10"), "Miniserver"),
                                       ("02:00:00:00:00:01", IP("192.168.20.99"), "")]


def test_dhcp_lease_hostnames_are_cleaned() -> None:
    text = "1700000000 50:4f:94:a0:00:01 192.168.20.10 <svg/onload=alert(1)>\x1b[2J" + "x" * 100 + " *\n"
    ((mac, ip, name),) = parse_dhcp_leases(text)
    assert (mac, str(ip), name) == (MS_MAC, "192.168.20.10", ("svg/onload=alert(1)[2J" + "x" * 100)[:64])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=500))
def test_lease_parser_never_crashes(text: str) -> None:
    for mac, _ip, name in parse_dhcp_leases(text):
        assert len(mac) == 17 and name == clean_text(name)


def test_only_loxlive_or_loxone_oui_creates_devices() -> None:
    inv = Inventory()
    assert inv.observe("neighbour", 0.0, mac="02:00:00:00:00:01", ip=IP("192.168.20.5")) is False
    assert inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10")) is True
    assert [(d.mac, str(d.ip), d.product) for d in inv.devices()] == [(MS_MAC, "192.168.20.10", None)]


def test_loxlive_serial_names_the_mac_and_product() -> None:
    inv = Inventory()
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"))
    inv.observe("loxlive", 1.0, ip=IP("192.168.20.10"), product="miniserver", serial="504F94A00001", http_port=8080)
    (dev,) = inv.devices()
    assert (dev.product, dev.http_port, sorted(dev.sources)) == ("miniserver", 8080, ["loxlive", "neighbour"])


def test_address_change_moves_the_device() -> None:
    inv = Inventory()
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"))
    assert inv.observe("neighbour", 1.0, mac=MS_MAC, ip=IP("192.168.20.50")) is True
    assert [str(d.ip) for d in inv.devices()] == ["192.168.20.50"]


def test_static_wins_and_takes_its_address_from_detection() -> None:
    static = StaticDevice("door", "intercom", MS_MAC, None, label="Door")
    inv = Inventory((static,))
    inv.observe("loxlive", 1.0, ip=IP("192.168.20.10"), product="miniserver", serial="504F94A00001", name="MS")
    (dev,) = inv.devices()
    assert (dev.product, dev.name, str(dev.ip), dev.static) == ("intercom", "Door", "192.168.20.10", True)


def test_gone_devices_keep_pinholes_for_the_grace_period() -> None:
    inv = Inventory(grace=60)
    inv.sync_neighbours([(MS_MAC, IP("192.168.20.10"))], 0.0)
    assert inv.sync_neighbours([], 10.0) is False
    assert [d.present for d in inv.devices()] == [False]
    assert inv.expire(69.0) is False
    assert inv.expire(70.0) is True
    assert inv.devices() == []


def test_inventory_is_capped() -> None:
    inv = Inventory(capacity=10)
    for i in range(1000):
        inv.observe("neighbour", 0.0, mac=f"50:4f:94:00:{i // 256:02x}:{i % 256:02x}", ip=IP(0x0A000000 + i))
    assert (len(inv.devices()), inv.refused, inv.refusals["refused_cap"]) == (10, 990, 990)


def forged(inv: Inventory, count: int, now: float = 1.0) -> None:
    """Discovery answers with distinct serials from distinct addresses, as a flood would send them."""
    for i in range(count):
        inv.observe("loxlive", now, ip=IP(0xC0A81400 + 100 + i), product="miniserver", name=f"fake {i}",
                    serial=f"504F94F{i:05X}")


def test_a_flood_of_discovery_answers_never_pushes_out_a_real_device() -> None:
    static = StaticDevice("door", "intercom", "50:4f:94:c0:00:03", None)
    inv = Inventory((static,), capacity=256)
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"))
    forged(inv, 300)
    # The cap bounds what detection adds: the static section is not counted against it.
    assert (len(inv.devices()), inv.refused, inv.evicted) == (257, 45, 0)
    assert [d.mac for d in inv.devices() if evidence_rank(d) > DISCOVERY] == [MS_MAC, "50:4f:94:c0:00:03"]
    # A real device arriving later (Loxone MAC in the neighbour table) takes a forged one's place.
    assert inv.observe("neighbour", 2.0, mac="50:4f:94:a0:00:02", ip=IP("192.168.20.11")) is True
    assert (len(inv.devices()), inv.evicted) == (257, 1)
    assert {d.mac: evidence_rank(d) for d in inv.devices() if evidence_rank(d) > DISCOVERY} == {
        "50:4f:94:c0:00:03": STATIC, MS_MAC: LOXONE_MAC, "50:4f:94:a0:00:02": LOXONE_MAC}


def test_discovery_never_evicts_better_evidence() -> None:
    inv = Inventory(capacity=3)
    for i in range(3):
        inv.observe("dhcp", 0.0, mac=f"50:4f:94:00:00:{i:02x}", ip=IP(0xC0A81400 + 10 + i))
    forged(inv, 5)
    assert ([d.mac for d in inv.devices()], inv.refused, inv.evicted) == (
        ["50:4f:94:00:00:00", "50:4f:94:00:00:01", "50:4f:94:00:00:02"], 5, 0)


def test_the_stalest_discovery_only_device_is_evicted_first() -> None:
    inv = Inventory(capacity=2)
    inv.observe("loxlive", 5.0, ip=IP("192.168.20.100"), serial="504F94F00000")
    inv.observe("loxlive", 1.0, ip=IP("192.168.20.101"), serial="504F94F00001")
    inv.observe("neighbour", 6.0, mac=MS_MAC, ip=IP("192.168.20.10"))
    assert [d.serial for d in inv.devices()] == ["", "504F94F00000"]


def test_silent_discovery_only_devices_expire() -> None:
    inv = Inventory(grace=60, discovery_ttl=600)
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"))
    forged(inv, 2, now=0.0)
    assert inv.expire(599.0) is False
    assert inv.expire(600.0) is True
    assert [d.mac for d in inv.devices()] == [MS_MAC]


def test_observed_fields_are_cleaned() -> None:
    inv = Inventory()
    inv.observe("loxlive", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"), name="<b>MS</b>\x00",
                firmware="1.0<script>", serial="504F94A00001")
    (dev,) = inv.devices()
    assert (dev.name, dev.firmware, dev.serial) == ("bMS/b", "1.0script", "504F94A00001")


def test_pick_current_prefers_the_newest_entry() -> None:
    first_seen: dict[tuple[str, IP], float] = {}
    old = (MS_MAC, IP("192.168.20.10"), 100)
    assert pick_current([old], first_seen, 0.0) == [(MS_MAC, IP("192.168.20.10"))]
    new = (MS_MAC, IP("192.168.20.50"), 6000)  # a fresh entry looks long unconfirmed
    assert pick_current([old, new], first_seen, 5.0) == [(MS_MAC, IP("192.168.20.50"))]
    assert pick_current([new], first_seen, 6.0) == [(MS_MAC, IP("192.168.20.50"))]
    assert set(first_seen) == {(MS_MAC, IP("192.168.20.50"))}


def plan_for(product: str | None, http_port: int = 80) -> set[tuple[str, str, PortRange | None]]:
    inv = Inventory()
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"), product=product,  # type: ignore[arg-type]
                http_port=http_port)
    return {(h.kind, h.proto, h.ports) for h in pinholes.plan(inv.devices(), catalog.load())}


def test_miniserver_pinholes_follow_its_http_port() -> None:
    holes = plan_for("miniserver", http_port=8080)
    inbound = {(proto, str(ports)) for kind, proto, ports in holes if kind == "inbound"}
    assert inbound == {("tcp", "443"), ("tcp", "8080"), ("tcp", "21"), ("tcp", "20"),
                       ("tcp", "47808"), ("udp", "47808")}
    assert ("client", "udp", PortRange(7777, 7777)) in holes


def test_intercom_gets_7091_and_sip() -> None:
    inbound = {(p, str(r)) for k, p, r in plan_for("intercom") if k == "inbound"}
    # 7091 and UDP 5060 from the seed; TCP 80 (web UI, MJPEG, WebRTC signalling) and SIP over TCP
    # from the public reverse-engineered clients (catalogue entries marked as not from the seed).
    assert inbound == {("tcp", "7091"), ("udp", "5060"), ("tcp", "80"), ("tcp", "5060")}


def test_intercom_gen1_and_unknown() -> None:
    assert {(p, str(r)) for k, p, r in plan_for("intercom_gen1") if k == "inbound"} == {("tcp", "80"), ("udp", "5060")}
    assert {(p, str(r)) for k, p, r in plan_for(None)} == {("tcp", "80"), ("tcp", "443")}


def test_audioserver_router_ping_and_device_flows() -> None:
    inv = Inventory()
    inv.observe("neighbour", 0.0, mac=MS_MAC, ip=IP("192.168.20.10"), product="miniserver")
    inv.observe("neighbour", 0.0, mac="50:4f:94:00:00:02", ip=IP("192.168.30.11"), product="audioserver")
    holes = pinholes.plan(inv.devices(), catalog.load())
    device = {(h.source, str(h.dst), h.proto, str(h.ports)) for h in holes if h.kind == "device"}
    assert device == {("miniserver", "192.168.30.11", "tcp", p) for p in ("7095", "80", "443")} | {
        ("audioserver", "192.168.30.11", proto, p)
        for proto, p in (("udp", "7788"), ("udp", "14000-14999"), ("tcp", "111"), ("tcp", "2049"),
                         ("udp", "111"), ("udp", "2049"))} | {("miniserver", "192.168.20.10", "tcp", "443")}
    assert [str(h.src) for h in holes if h.kind == "router"] == ["192.168.30.11"]
    elements = pinholes.elements(holes, inv.devices())
    # Device flows are rules over the products' address sets: the devices are their only elements.
    assert elements["dev_miniserver4"] == {"192.168.20.10"}
    assert elements["dev_audioserver4"] == {"192.168.30.11"}
    assert elements["router_ping4"] == {"192.168.30.11"}
    assert elements["pin_port4"] == {"192.168.20.10 . tcp . 80"}  # the Miniserver's own HTTP port


def test_a_static_device_keeps_the_name_it_announces() -> None:
    static = StaticDevice("ms", "miniserver", MS_MAC, None)
    inv = Inventory((static,))
    inv.observe("loxlive", 1.0, mac=MS_MAC, ip=IP("192.168.20.10"), name="Haus <b>Nord</b>", product="miniserver")
    (device,) = inv.devices()
    assert (device.name, device.announced, device.product) == ("ms", "Haus bNord/b", "miniserver")
