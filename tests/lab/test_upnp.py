"""UPnP: loxgw maps the Miniserver's remote-access port on a real miniupnpd upstream."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Lab, wait_for
from tests.lab.test_dns import resolve_and_connect

EXTERNAL_PORT = 44300


def upnp_config(mac: str, ip: str, port: int = EXTERNAL_PORT, lease: int = 3600, check: int = 60) -> str:
    return (f"\nconfig device 'ms'\n\toption type 'miniserver'\n\toption mac '{mac}'\n\toption ip '{ip}'\n"
            f"\nconfig upnp 'remote'\n\toption enabled '1'\n\toption device 'ms'\n\toption internal_port '443'\n"
            f"\toption external_port '{port}'\n\toption lease '{lease}'\n\toption check_interval '{check}'\n")


def mappings(lab: Lab) -> str:
    return lab.run(lab.ns_router, "upnpc", "-l", check=False).stdout


def mapping_state(gw: Loxgw) -> dict[str, object]:
    (entry,) = gw.status()["upnp"]
    return entry  # type: ignore[no-any-return]


def serve_443(lab: Lab, ns: str, ip: str) -> None:
    proc = lab.popen(ns, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", ip, "443"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"


def test_mapping_lifecycle_against_miniupnpd(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    internet = lab.add_upstream_igd()
    serve_443(lab, ms.ns, ms.ip)
    gw = Loxgw(lab, extra=upnp_config(ms.mac, ms.ip, lease=6, check=2)).start()
    wait_for(lambda: mapping_state(gw)["state"] == "active", 10, "mapping active")
    assert mapping_state(gw)["external_ip"] == lab.IGD_EXTERNAL
    assert f"TCP {EXTERNAL_PORT}->198.51.100.2:{EXTERNAL_PORT} 'loxgw'" in mappings(lab)
    # From the internet, the upstream's external address reaches the Miniserver's 443.
    reach = [sys.executable, "-m", "tests.lab.peer", "connect-tcp", lab.IGD_EXTERNAL, str(EXTERNAL_PORT), "2"]
    assert lab.run(internet, *reach, check=False).returncode == 0

    # Renewed before the 6 s lease ends: still there after 9 s.
    time.sleep(9)  # the IGD's lease clock is real time
    assert f"TCP {EXTERNAL_PORT}->198.51.100.2:{EXTERNAL_PORT} 'loxgw'" in mappings(lab)
    # A status read may land inside a renewal (every 2 s here); it must come back to active.
    wait_for(lambda: mapping_state(gw)["state"] == "active", 5, "mapping active between renewals")

    # The upstream restarts and forgets its mappings: loxgw puts it back.
    lab.stop_igd()
    lab.run(lab.ns_wan, "nft", "flush chain inet filter miniupnpd; flush chain inet filter prerouting_miniupnpd; "
            "flush chain inet filter postrouting_miniupnpd")
    lab.start_igd()
    wait_for(lambda: "'loxgw'" in mappings(lab), 15, "mapping re-created")
    assert lab.run(internet, *reach, check=False).returncode == 0

    # SIGTERM removes it.
    assert gw.stop() == 0
    assert "'loxgw'" not in mappings(lab)


def test_port_held_by_another_host_is_a_conflict(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    lab.add_upstream_igd()
    lab.run(lab.ns_router, "upnpc", "-e", "someone-else", "-a", "198.51.100.9", "44301", "44301", "TCP")
    gw = Loxgw(lab, extra=upnp_config(ms.mac, ms.ip, port=44301)).start()
    wait_for(lambda: mapping_state(gw)["state"] == "failed", 10, "conflict reported")
    state = mapping_state(gw)
    assert state["conflict"] == "198.51.100.9"
    assert "198.51.100.9:44301" in str(state["last_error"])
    assert "44301->198.51.100.9:44301 'someone-else'" in mappings(lab)  # left alone
    assert "port 44301/tcp is mapped to 198.51.100.9" in gw.log()


def test_no_igd_is_reported_and_dns_keeps_working(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    listen = lab.popen(lab.ns_wan, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", "203.0.113.7", "22"],
                       stdout=subprocess.PIPE)
    assert listen.stdout is not None and listen.stdout.readline().strip() == b"ready"
    gw = Loxgw(lab, extra=upnp_config(ms.mac, ms.ip)).start()
    wait_for(lambda: mapping_state(gw)["failures"] == 1, 10, "first failure")
    state = mapping_state(gw)
    assert (state["state"], "no UPnP IGD" in str(state["last_error"])) == ("failed", True)
    assert 0 < float(state["next_in"]) <= 5  # type: ignore[arg-type]
    # While discovery waits in its thread, the DNS path answers and opens as usual.
    start = time.monotonic()
    assert resolve_and_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com", 22) == "open"
    assert time.monotonic() - start < 1.0
    wait_for(lambda: mapping_state(gw)["failures"] == 2, 15, "retry with backoff")
    assert 5 < float(mapping_state(gw)["next_in"]) <= 10  # type: ignore[arg-type]
