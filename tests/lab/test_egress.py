"""Grants per product and egress modes, with real DNS, real connections and the real daemon."""

from __future__ import annotations

from tests.lab.loxgwproc import LAB_CONFIG, Loxgw
from tests.lab.netlab import Lab, wait_for
from tests.lab.test_dns import listen, resolve_and_connect, try_connect

OTHER_HOSTS = "\toption other_hosts '1'\n"
STRICT = LAB_CONFIG.replace(OTHER_HOSTS, "")  # a devices zone as shipped: Loxone devices only


def devices_section(*devices: tuple[str, str, str, str]) -> str:
    return "".join(f"\nconfig device '{name}'\n\toption type '{product}'\n\toption mac '{mac}'\n\toption ip '{ip}'\n"
                   for name, product, mac, ip in devices)


def known(gw: Loxgw, count: int) -> None:
    wait_for(lambda: len(gw.status()["devices"]) == count, 5, f"{count} devices")


def test_each_product_gets_its_own_grants_and_audio_reaches_what_it_resolved(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    intercom = lab.add_host("ic", "iot", 11, mac="50:4f:94:a0:00:02")
    audio = lab.add_host("audio", "iot", 12, mac="50:4f:94:a0:00:03")
    listen(lab, "203.0.113.7", 22)
    listen(lab, "203.0.113.80", 8000)  # a radio station, example.org on the fake internet
    listen(lab, "203.0.113.81", 8000)  # another, never resolved by the Audioserver
    extra = devices_section(("ms", "miniserver", ms.mac, ms.ip), ("ic", "intercom", intercom.mac, intercom.ip),
                            ("audio", "audioserver", audio.mac, audio.ip))
    gw = Loxgw(lab, config_text=STRICT.format(socket="{socket}", main_extra="", extra=extra)).start()
    known(gw, 3)
    # Remote Connect's ssh is the Miniserver's; the Intercom resolving the same name gets nothing.
    assert resolve_and_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com", 22) == "open"
    assert resolve_and_connect(lab, intercom.ns, "a7.remcov3.loxonecloud.com", 22) == "blocked"
    # The Audioserver (egress 'resolved'): a station it resolved, at once, on the station's port.
    assert resolve_and_connect(lab, audio.ns, "example.org", 8000) == "open"
    assert try_connect(lab, audio.ns, "203.0.113.81:8000") == ["blocked"]
    egress = {d["name"]: (d["egress"], d["dns_entry_count"]) for d in gw.status()["devices"]}
    assert egress == {"ms": ("catalog", 1), "ic": ("catalog", 0), "audio": ("resolved", 2)}


def test_other_hosts_get_nothing_unless_their_zone_says_so(lab: Lab) -> None:
    camera = lab.add_host("cam", "iot", 20, mac="02:00:00:00:00:20")
    listen(lab, "203.0.113.7", 22)
    gw = Loxgw(lab, config_text=STRICT.format(socket="{socket}", main_extra="", extra="")).start()
    assert resolve_and_connect(lab, camera.ns, "a7.remcov3.loxonecloud.com", 22) == "blocked"
    assert gw.status()["counters"].get("dns_refused_not_a_loxone_device", 0) >= 1
    gw.stop()
    assert OTHER_HOSTS in LAB_CONFIG
    Loxgw(lab, config_text=LAB_CONFIG.format(socket="{socket}", main_extra="", extra=""), name="open").start()
    assert resolve_and_connect(lab, camera.ns, "a7.remcov3.loxonecloud.com", 22) == "open"


def test_egress_open_reaches_what_it_never_resolved(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    listen(lab, "203.0.113.81", 8000)
    gw = Loxgw(lab, main_extra="\toption egress_miniserver 'open'",
               extra=devices_section(("ms", "miniserver", ms.mac, ms.ip))).start()
    known(gw, 1)
    wait_for(lambda: try_connect(lab, ms.ns, "203.0.113.81:8000") == ["open"], 3, "open egress")
