"""Device detection and exact pinholes: the phone reaches exactly the catalogue's ports."""

from __future__ import annotations

import subprocess
import sys

from loxgw.core import catalog
from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Host, Lab, wait_for

# Every catalogue TCP port (range ends and a few inside), plus 1-1024.
CATALOGUE_TCP = sorted({p for e in catalog.load() if e.proto == "tcp" for r in e.ports
                        for p in (r.first, r.last, (r.first + r.last) // 2)})
SCAN = sorted(set(range(1, 1025)) | set(CATALOGUE_TCP))
FAST = "\toption probe_interval '1'\n\toption device_grace '1'\n"


def serve_all_ports(lab: Lab, host: Host) -> None:
    proc = lab.popen(host.ns, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", host.ip, *map(str, SCAN)],
                     stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"


def loxlive_responder(lab: Lab, host: Host, name: str, port: int = 80) -> None:
    serial = host.mac.replace(":", "").upper()
    proc = lab.popen(host.ns, [sys.executable, "-m", "tests.lab.peer", "loxlive", name, f"{host.ip}:{port}", serial],
                     stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"


def scan(lab: Lab, src: Host, dst: Host, ports: list[int] = SCAN) -> list[int]:
    out = lab.run(src.ns, sys.executable, "-m", "tests.lab.peer", "scan-tcp", dst.ip,
                  ",".join(map(str, ports)), "1.0").stdout.strip()
    return [int(p) for p in out.split(",")] if out else []


def device(gw: Loxgw, ip: str) -> dict[str, object]:
    return next((d for d in gw.status()["devices"] if d["ip"] == ip), {})


def test_phone_reaches_exactly_the_catalogue_ports(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    audio = lab.add_host("audio", "iot", 11, mac="50:4f:94:b0:00:02")
    plain = lab.add_host("plain", "iot", 12, mac="02:00:00:00:00:0c")
    unknown = lab.add_host("unknown", "iot", 13, mac="50:4f:94:c0:00:03")
    phone = lab.add_host("phone", "lan", 20)
    for host in (ms, audio, plain, unknown):
        serve_all_ports(lab, host)
    loxlive_responder(lab, ms, "Miniserver Living Room")
    static = f"\nconfig device 'audio'\n\toption type 'audioserver'\n\toption mac '{audio.mac}'\n"
    gw = Loxgw(lab, extra=static, main_extra=FAST).start()
    for host in (audio, plain, unknown):  # make them known to the router's neighbour table
        lab.run(host.ns, "ping", "-c1", "-W1", "192.168.20.1")
    wait_for(lambda: device(gw, ms.ip).get("product") == "miniserver", 5, "Miniserver via LoxLIVE")
    wait_for(lambda: device(gw, audio.ip).get("product") == "audioserver", 5, "Audioserver via static + neighbour")
    wait_for(lambda: device(gw, unknown.ip).get("product") == "unknown", 5, "Loxone OUI, unknown product")

    assert scan(lab, phone, ms) == [20, 21, 80, 443, 47808]
    airplay_dynamic = [p for p in SCAN if 49152 <= p <= 65535]
    # 4070 and 57621: Spotify Connect on the Audioserver (catalogue entries beyond the seed)
    spotify = [p for p in SCAN if p in (4070, 57621)]
    assert scan(lab, phone, audio) == sorted({7000, 7002, 7004, 7091, 7100, *spotify, *airplay_dynamic})
    assert scan(lab, phone, unknown) == [80, 443]
    assert scan(lab, phone, plain) == []
    ms_status = device(gw, ms.ip)
    assert (ms_status["name"], ms_status["mac"], ms_status["firmware"]) == (
        "Miniserver Living Room", ms.mac, "15.1.10.2")
    assert "loxlive" in str(ms_status["source"])
    assert device(gw, unknown.ip)["product_known"] is False
    # Miniserver to Audioserver (device to device) is allowed only where the catalogue says: same
    # VLAN here, so bridged and not filtered; the plan still lists it for status.
    assert any("as-miniserver" in hole for hole in device(gw, audio.ip)["pinholes"])  # type: ignore[union-attr]


def test_miniserver_moving_address_moves_its_pinholes(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    phone = lab.add_host("phone", "lan", 20)
    static = f"\nconfig device 'ms'\n\toption type 'miniserver'\n\toption mac '{ms.mac}'\n"
    gw = Loxgw(lab, extra=static, main_extra=FAST).start()
    lab.run(ms.ns, "ping", "-c1", "-W1", "192.168.20.1")
    wait_for(lambda: device(gw, ms.ip).get("product") == "miniserver", 5, "Miniserver known")
    serve = lab.popen(ms.ns, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", "0.0.0.0", "443"],
                      stdout=subprocess.PIPE)
    assert serve.stdout is not None and serve.stdout.readline().strip() == b"ready"
    assert scan(lab, phone, ms, [443]) == [443]

    lab.run(ms.ns, "ip", "addr", "flush", "dev", "eth0")
    lab.run(ms.ns, "ip", "addr", "add", "192.168.20.50/24", "dev", "eth0")
    lab.run(ms.ns, "ip", "route", "add", "default", "via", "192.168.20.1")
    lab.run(ms.ns, "ping", "-c1", "-W1", "192.168.20.1")
    moved = Host(ms.name, ms.ns, ms.vlan, "192.168.20.50", ms.mac, ms.router_port)
    wait_for(lambda: device(gw, moved.ip).get("product") == "miniserver", 2, "new address within 2 s")
    assert scan(lab, phone, moved, [443]) == [443]
    # The old address lost everything: a host that takes it over gets nothing.
    squatter = lab.add_host("squatter", "iot", 10)
    serve2 = lab.popen(squatter.ns, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", squatter.ip, "443"],
                       stdout=subprocess.PIPE)
    assert serve2.stdout is not None and serve2.stdout.readline().strip() == b"ready"
    assert scan(lab, phone, squatter, [443]) == []


def test_static_section_overrides_detection_and_bad_loxlive_is_counted(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    phone = lab.add_host("phone", "lan", 20)
    serve_all_ports(lab, ms)
    loxlive_responder(lab, ms, "Says Miniserver")
    static = f"\nconfig device 'ms'\n\toption type 'intercom'\n\toption mac '{ms.mac}'\n\toption name 'Door'\n"
    gw = Loxgw(lab, extra=static, main_extra=FAST).start()
    wait_for(lambda: "loxlive" in str(device(gw, ms.ip).get("source", "")), 5, "LoxLIVE seen")
    dev = device(gw, ms.ip)
    assert (dev["product"], dev["name"]) == ("intercom", "Door")
    assert scan(lab, phone, ms) == [80, 5060, 7091]  # an Intercom: web UI and SIP over TCP beside 7091
    # Garbage to the router's 7071 is dropped and counted; a reply claiming another address too.
    garbage = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for payload in (b"LoxLIVE: broken", b"\xff\xfe", b"LoxLIVE: X 192.168.20.99:80 504F94000099 1.0"):
    s.sendto(payload, ("192.168.20.1", 7071))
"""
    lab.run(ms.ns, sys.executable, "-c", garbage)
    def refused() -> int:  # spoofed if it came just after a search, unsolicited otherwise: refused either way
        return sum(gw.status()["devices_refused"].get(k, 0) for k in ("refused_spoofed", "refused_unsolicited"))

    wait_for(lambda: refused() == 1, 3, "spoof refused")
    counters = gw.status()["counters"]
    assert counters.get("loxlive_bad_malformed") == 2
    assert device(gw, "192.168.20.99") == {}


def test_ssdp_names_the_product(lab: Lab) -> None:
    audio = lab.add_host("audio", "iot", 11, mac="50:4f:94:b0:00:02")
    tv = lab.add_host("tv", "iot", 12, mac="02:00:00:00:00:0c")
    phone = lab.add_host("phone", "lan", 20)
    serve_all_ports(lab, audio)
    for host, model, maker in ((audio, "Loxone Audioserver", "Loxone Electronics GmbH"),
                               (tv, "Smart TV", "Some Other Corp")):
        proc = lab.popen(host.ns, [sys.executable, "-m", "tests.lab.peer", "ssdp", host.ip, model,
                                   host.mac.replace(":", "").upper(), maker], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    gw = Loxgw(lab, main_extra=FAST).start()
    wait_for(lambda: device(gw, audio.ip).get("product") == "audioserver", 8, "Audioserver via SSDP")
    assert "ssdp" in str(device(gw, audio.ip)["source"])
    assert device(gw, tv.ip) == {}
    refusals = gw.status()["devices_refused"]
    assert refusals.get("refused_not_loxone", 0) + refusals.get("refused_not_loxone_mac", 0) >= 1
    assert 7091 in scan(lab, phone, audio, [7091, 443])
