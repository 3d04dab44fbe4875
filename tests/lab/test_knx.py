"""KNX-IP routing multicast across VLANs: a TTL-1 telegram crosses when configured, and never loops with two routers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Lab, wait_for

KNX = """
config knx
\toption enabled '1'
\tlist zone 'iot'
\tlist zone 'lan'
"""

# A routing indication (KNXnet/IP 0x0530, cEMI L_Data.ind: 1.1.1 writes 1/1/1 = on).
TELEGRAM = "061005300011" "2900bce0110109010100" "81"

# Join 224.0.23.12 on eth0 and print one JSON line per KNX datagram for SECONDS (loxgw's hellos
# left out): source, TTL, TOS, payload. With SETTLE, stop SETTLE seconds after the first one.
LISTEN = r"""
import json, socket, struct, sys, time
seconds, settle = float(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL (Linux)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
s.bind(("224.0.23.12", 3671))
index = socket.if_nametoindex("eth0")
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("224.0.23.12") + socket.inet_aton("0.0.0.0") + struct.pack("@i", index))
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        data, ancillary, _, addr = s.recvmsg(2048, 256)
    except OSError:
        break
    if data.startswith(b"LOXGW-KNX-PEER"):
        continue
    seen = {"src": addr[0], "payload": data.hex()}
    for level, kind, value in ancillary:
        if kind == socket.IP_TTL:
            seen["ttl"] = struct.unpack("@i", value)[0]
        elif kind == socket.IP_TOS:
            seen["tos"] = value[0]
    print(json.dumps(seen), flush=True)
    if settle:
        end = min(end, time.monotonic() + settle)
"""

# Send one datagram to 224.0.23.12:3671 with TTL 1, as many KNX IP routers do.
SEND = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.sendto(bytes.fromhex(sys.argv[1]), ("224.0.23.12", 3671))
"""


def listen(lab: Lab, ns: str, seconds: float, settle: float = 0.0) -> subprocess.Popen[bytes]:
    proc = lab.popen(ns, [sys.executable, "-c", LISTEN, str(seconds), str(settle)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def received(proc: subprocess.Popen[bytes]) -> list[dict[str, object]]:
    out, _ = proc.communicate(timeout=30)
    return [json.loads(line) for line in out.decode().splitlines()]


def send(lab: Lab, ns: str, payload: str = TELEGRAM) -> None:
    lab.run(ns, sys.executable, "-c", SEND, payload)


def test_a_ttl_1_telegram_crosses_only_when_configured(lab: Lab) -> None:
    knx_router = lab.add_host("knxip", "iot", 50)
    panel = lab.add_host("panel", "lan", 60)
    gw = Loxgw(lab).start()
    listener = listen(lab, panel.ns, 3.0)
    send(lab, knx_router.ns)
    assert received(listener) == []  # not configured: it stays in its VLAN
    gw.write_config(extra=KNX + "\toption ttl '7'\n")
    gw.signal(signal.SIGHUP)

    def crossed() -> list[dict[str, object]]:
        listener = listen(lab, panel.ns, 2.0, settle=0.5)
        send(lab, knx_router.ns)
        return received(listener)

    seen: list[list[dict[str, object]]] = []
    wait_for(lambda: bool(seen.append(crossed()) or seen[-1]), 30, "the telegram copied after the reload",
             interval=0.1)
    # One copy, from the router's lan address, with the configured TTL and loxgw's mark (DSCP 5).
    assert seen[-1] == [{"src": "192.168.10.1", "payload": TELEGRAM, "ttl": 7, "tos": 0x14}]


SECOND_ROUTER = """
config loxgw 'main'
\toption firewall 'standalone'
\toption dns_mode 'off'
\toption probe_interval '0'
\toption status_socket '{socket}'

config zone 'iot'
\toption role 'devices'
\tlist interface 'iot0'

config zone 'lan'
\toption role 'clients'
\tlist interface 'lan0'
""" + KNX


def test_two_routers_on_the_same_segments_give_one_copy_and_no_loop(lab: Lab) -> None:
    knx_router = lab.add_host("knxip", "iot", 50)
    neighbour = lab.add_host("actuator", "iot", 51)
    panel = lab.add_host("panel", "lan", 60)
    first = Loxgw(lab, extra=KNX).start()
    box = lab.add_relay_box("knx2", 3)
    second = Loxgw(lab, ns=box, config_text=SECOND_ROUTER, name="knx2").start()
    time.sleep(1.0)  # the second router's hello and the first's answer cross (real traffic, not logic time)
    for payload in (TELEGRAM, TELEGRAM[:-2] + "80"):  # the first telegram, then another
        on_lan = listen(lab, panel.ns, 4.0, settle=1.5)
        on_iot = listen(lab, neighbour.ns, 4.0, settle=1.5)
        send(lab, knx_router.ns, payload)
        lan, iot = received(on_lan), received(on_iot)
        # lan: exactly one copy, from the leading router (the lower address); iot: the original
        # only, no copy of a copy came back.
        assert [(s["src"], s["payload"]) for s in lan] == [("192.168.10.1", payload)], lan
        assert [(s["src"], s["payload"]) for s in iot] == [(knx_router.ip, payload)], iot
    # The second router was holding back, not deaf: without the first, it copies after its hold-off.
    assert first.stop() == 0
    on_lan = listen(lab, panel.ns, 4.0, settle=1.5)
    send(lab, knx_router.ns)
    assert [(s["src"], s["payload"]) for s in received(on_lan)] == [("192.168.10.3", TELEGRAM)]
    assert second.stop() == 0
