"""mDNS reflection across VLANs with real python-zeroconf peers: the Audioserver is found, a TV is not."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Host, Lab, wait_for

pytest.importorskip("zeroconf", reason="the lab's mDNS peers are python-zeroconf (pip install zeroconf)")

# Ports outside the catalogue (the unknown-product Audioserver gets TCP 80 and 443 only), so only
# the announcements can open them.
SERVICES = {"_airplay._tcp": 7005, "_raop._tcp": 5005, "_spotify-connect._tcp": 4075}
TV_PORT = 7006

# Register services once a line arrives on stdin; on SIGTERM withdraw them (goodbye packets) and exit.
ANNOUNCE = r"""
import signal, socket, sys, threading
from zeroconf import IPVersion, ServiceInfo, Zeroconf
ip, host, name = sys.argv[1:4]
services = [spec.split("=") for spec in sys.argv[4:]]
print("ready", flush=True)
sys.stdin.readline()
zc = Zeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
for stype, port in services:
    zc.register_service(ServiceInfo(f"{stype}.local.", f"{name}.{stype}.local.", addresses=[socket.inet_aton(ip)],
                                    port=int(port), properties={"model": "lab"}, server=f"{host}.local."))
print("announced", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *args: done.set())
while not done.wait(0.1):
    pass
zc.unregister_all_services()
zc.close()
"""

# Browse the given types for SECONDS, then resolve each instance found; one JSON line per instance.
BROWSE = r"""
import json, sys, time
from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf
ip, seconds, types = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
zc = Zeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
found = {}
def on_change(zeroconf, service_type, name, state_change):
    if state_change is not ServiceStateChange.Removed:
        found[name] = service_type
browser = ServiceBrowser(zc, [f"{t}.local." for t in types], handlers=[on_change])
time.sleep(seconds)
for name, stype in sorted(found.items()):
    info = zc.get_service_info(stype, name, timeout=3000)
    print(json.dumps({"name": name, "addresses": info.parsed_addresses() if info else [],
                      "port": info.port if info else None}), flush=True)
browser.cancel()
zc.close()
"""


def announcer(lab: Lab, host: Host, name: str, services: dict[str, int]) -> subprocess.Popen[bytes]:
    specs = [f"{stype}={port}" for stype, port in services.items()]
    proc = lab.popen(host.ns, [sys.executable, "-c", ANNOUNCE, host.ip, host.name, name, *specs],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def go(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == b"announced"


def listen(lab: Lab, host: Host, ports: list[int]) -> None:
    proc = lab.popen(host.ns, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", host.ip, *map(str, ports)],
                     stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"


def scan(lab: Lab, src: Host, dst: Host, ports: list[int]) -> list[int]:
    out = lab.run(src.ns, sys.executable, "-m", "tests.lab.peer", "scan-tcp", dst.ip,
                  ",".join(map(str, ports)), "1.0").stdout.strip()
    return [int(p) for p in out.split(",")] if out else []


def browse(lab: Lab, host: Host, seconds: float, types: list[str]) -> list[dict[str, object]]:
    out = lab.run(host.ns, sys.executable, "-c", BROWSE, host.ip, str(seconds), *types, timeout=60).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_the_audioserver_is_found_and_reachable_from_lan_and_the_tv_is_not(lab: Lab) -> None:
    audio = lab.add_host("audio", "iot", 11, mac="50:4f:94:b0:00:02")
    tv = lab.add_host("tv", "iot", 50, mac="02:00:00:00:00:50")
    phone = lab.add_host("phone", "lan", 20)
    gw = Loxgw(lab).start()
    ports = sorted(SERVICES.values())
    listen(lab, audio, ports)
    listen(lab, tv, [TV_PORT])
    speaker = announcer(lab, audio, "Kitchen", SERVICES)
    television = announcer(lab, tv, "Living Room TV", {"_airplay._tcp": TV_PORT})
    for host in (audio, tv):  # into the router's neighbour table, where detection finds Loxone MACs
        lab.run(host.ns, "ping", "-c1", "-W1", "192.168.20.1")
    wait_for(lambda: str(audio.ip) in gw.status()["reflector"]["devices"], 10, "the Audioserver detected")
    assert scan(lab, phone, audio, ports) == []  # nothing announced: nothing open

    go(speaker)
    go(television)
    found = browse(lab, phone, 4.0, list(SERVICES))
    assert sorted((f["name"], f["addresses"], f["port"]) for f in found) == sorted(
        (f"Kitchen.{stype}.local.", [audio.ip], port) for stype, port in SERVICES.items())

    # The firewall holds the announced ports (the reconcile runs on its own thread).
    wait_for(lambda: scan(lab, phone, audio, ports) == ports, 10, "the announced ports open", interval=0.2)
    assert scan(lab, phone, tv, [TV_PORT]) == []
    status = gw.status()["reflector"]
    assert sorted(status["announced"]) == sorted(
        f"inbound: clients -> {audio.ip} tcp/{port} (mdns-srv)" for port in ports)
    counters = status["mdns"]["counters"]
    assert counters["dropped_not_loxone"] >= 1 and counters["answers_reflected"] >= 1

    # Withdrawn: the goodbyes close the ports a second later.
    speaker.send_signal(signal.SIGTERM)
    speaker.wait(timeout=10)
    wait_for(lambda: scan(lab, phone, audio, ports) == [], 10, "the withdrawn ports closed", interval=0.2)
    assert gw.stop() == 0


# One M-SEARCH to the SSDP group from an ephemeral port; print "source LOCATION" per answer for SECONDS.
M_SEARCH = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
s.sendto(b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\n'
         b'ST: upnp:rootdevice\r\n\r\n', ("239.255.255.250", 1900))
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        data, addr = s.recvfrom(2048)
    except OSError:
        break
    location = [l.split(":", 1)[1].strip() for l in data.decode().splitlines() if l.upper().startswith("LOCATION:")]
    print(addr[0], location[0] if location else "-", flush=True)
"""


def ssdp_device(lab: Lab, host: Host, model: str, manufacturer: str) -> None:
    proc = lab.popen(host.ns, [sys.executable, "-m", "tests.lab.peer", "ssdp", host.ip, model,
                               host.mac.replace(":", ""), manufacturer], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"


def test_the_apps_upnp_search_finds_the_loxone_device_only(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    printer = lab.add_host("printer", "iot", 60, mac="02:00:00:00:00:60")
    app = lab.add_host("app", "lan", 20)
    gw = Loxgw(lab).start()
    ssdp_device(lab, ms, "Loxone Miniserver", "Loxone Electronics GmbH")
    ssdp_device(lab, printer, "Printer", "Printers Inc.")
    for host in (ms, printer):
        lab.run(host.ns, "ping", "-c1", "-W1", "192.168.20.1")
    wait_for(lambda: str(ms.ip) in gw.status()["reflector"]["devices"], 10, "the Miniserver detected")
    answers = lab.run(app.ns, sys.executable, "-c", M_SEARCH, "3").stdout.split("\n")[:-1]
    # The router answers on the device's behalf; LOCATION leads to the device itself.
    assert answers == [f"192.168.10.1 http://{ms.ip}:2869/desc.xml"]
    wait_for(lambda: scan(lab, app, ms, [2869]) == [2869], 10, "the LOCATION port open", interval=0.2)
    assert scan(lab, app, printer, [2869]) == []
    assert gw.stop() == 0


ALLOW_TV = """
config reflector
\tlist allow_host '192.168.20.50'
\toption ssdp '0'
"""


def test_an_allowed_host_is_found_and_ssdp_can_be_turned_off(lab: Lab) -> None:
    """`list allow_host` lets the TV's AirPlay records cross; `ssdp '0'` leaves the App's search alone.

    The TV's announced port is not opened: core.pinholes plans announced ports for inventory
    devices only (the TV is none), so the user's firewall decides that one.
    """
    tv = lab.add_host("tv", "iot", 50, mac="02:00:00:00:00:50")
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    phone = lab.add_host("phone", "lan", 20)
    gw = Loxgw(lab, extra=ALLOW_TV).start()
    listen(lab, tv, [TV_PORT])
    television = announcer(lab, tv, "Living Room TV", {"_airplay._tcp": TV_PORT})
    ssdp_device(lab, ms, "Loxone Miniserver", "Loxone Electronics GmbH")
    lab.run(ms.ns, "ping", "-c1", "-W1", "192.168.20.1")
    wait_for(lambda: str(ms.ip) in gw.status()["reflector"]["devices"], 10, "the Miniserver detected")
    assert str(tv.ip) in gw.status()["reflector"]["devices"]  # allowed by the config, no Loxone MAC
    go(television)
    found = browse(lab, phone, 4.0, ["_airplay._tcp"])
    assert [(f["name"], f["addresses"], f["port"]) for f in found] == [
        ("Living Room TV._airplay._tcp.local.", [tv.ip], TV_PORT)]
    assert lab.run(phone.ns, sys.executable, "-c", M_SEARCH, "2").stdout == ""  # SSDP is not reflected
    assert gw.stop() == 0
