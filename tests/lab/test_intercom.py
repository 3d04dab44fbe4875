"""Intercom media: UDP between an App host and an Intercom passes while a signalling session lives.

The App host (lan) holds a TCP session to the Intercom (iot) on 80 or 7091;
UDP then passes both ways, whichever side sends first, and stops within 5 s
of the session's end, flows already established included. Without a session
nothing passes.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from loxgw.core.intercom import MAX_SESSIONS_PER_APP
from tests.lab.loxgwproc import REPO, Loxgw
from tests.lab.netlab import Host, Lab, wait_for

INTERCOM_MAC = "50:4f:94:d0:00:01"
APP_UDP, INTERCOM_UDP = 40000, 50000  # where each side's echo listens
CLOSED_WITHIN = 5.0  # seconds after the session's end by which UDP must be blocked

# Echo every datagram back to its sender, forever.
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""
# Send one datagram from a given port and wait for its echo: prints "echo" or "silence".
PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[4]))
s.sendto(b"media", (sys.argv[2], int(sys.argv[3])))
try:
    s.recvfrom(2048)
    print("echo")
except OSError:
    print("silence")
"""
# Accept TCP sessions on the given ports and hold each until the peer closes it.
SIGNALLING_SERVER = """
import socket, sys, threading
def hold(conn):
    while conn.recv(1024):
        pass
    conn.close()
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=hold, args=(conn,), daemon=True).start()
for port in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(port),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
# One signalling session: connect, say so, hold it until stdin closes, then close it (FIN).
SESSION = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print("connected", flush=True)
sys.stdin.read()
c.close()
print("closed", flush=True)
"""


def background(lab: Lab, host: Host, script: str, *args: str) -> subprocess.Popen[bytes]:
    proc = lab.popen(host.ns, [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() in (b"ready", b"connected")
    return proc


def probe(lab: Lab, src: Host, sport: int, dst: Host, dport: int, wait: float = 0.4) -> bool:
    """A datagram from src:sport to dst:dport came back (both directions passed)."""
    out = lab.run(src.ns, sys.executable, "-c", PROBE, str(sport), dst.ip, str(dport), str(wait)).stdout
    return out.strip() == "echo"


class Ports:
    """Fresh UDP source ports, so no probe rides on an earlier probe's conntrack entry."""

    def __init__(self, first: int) -> None:
        self.next = first

    def __call__(self) -> int:
        self.next += 1
        return self.next


def media(lab: Lab, app: Host, intercom: Host, fresh: Ports) -> tuple[bool, bool]:
    """(App sends first and hears back, Intercom sends first and hears back), each on new ports."""
    return (probe(lab, app, fresh(), intercom, INTERCOM_UDP), probe(lab, intercom, fresh(), app, APP_UDP))


def pairs(gw: Loxgw) -> list[tuple[str, str, str]]:
    return [(p["app"], p["intercom"], p["state"]) for p in gw.status()["intercom"]["open"]]


@pytest.mark.parametrize("port", [80, 7091])
def test_a_live_session_opens_udp_both_ways_and_its_end_closes_it(lab: Lab, port: int) -> None:
    intercom = lab.add_host("ic", "iot", 30, mac=INTERCOM_MAC)
    app = lab.add_host("app", "lan", 20)
    other = lab.add_host("other", "lan", 21)
    static = f"\nconfig device 'door'\n\toption type 'intercom'\n\toption ip '{intercom.ip}'\n"
    gw = Loxgw(lab, extra=static).start()
    background(lab, intercom, SIGNALLING_SERVER, "80", "7091")
    background(lab, intercom, ECHO, str(INTERCOM_UDP))
    for host in (app, other):
        background(lab, host, ECHO, str(APP_UDP))
    fresh = Ports(41000)
    wait_for(lambda: gw.status()["intercom"]["clients_networks"] == ["192.168.10.0/24"], 5, "clients subnets read",
             interval=0.2)

    assert media(lab, app, intercom, fresh) == (False, False)  # no session, no media

    session = background(lab, app, SESSION, intercom.ip, str(port))
    wait_for(lambda: pairs(gw) == [(app.ip, intercom.ip, "open")], 2, "the pair opened", interval=0.1)
    assert media(lab, app, intercom, fresh) == (True, True)
    assert media(lab, other, intercom, fresh) == (False, False)  # exactly those two hosts
    held = fresh()  # an established flow that must stop too
    assert probe(lab, app, held, intercom, INTERCOM_UDP) is True
    time.sleep(3.5)  # longer than an element lives unrefreshed: the live session keeps it
    assert media(lab, app, intercom, fresh) == (True, True)

    assert session.stdin is not None and session.stdout is not None
    session.stdin.close()
    assert session.stdout.readline().strip() == b"closed"
    ended = time.monotonic()
    while probe(lab, app, held, intercom, INTERCOM_UDP, wait=0.2):
        assert time.monotonic() - ended < CLOSED_WITHIN, "UDP still passes 5 s after the session ended"
    closed_after = time.monotonic() - ended
    assert media(lab, app, intercom, fresh) == (False, False)
    assert time.monotonic() - ended < CLOSED_WITHIN + 1.0
    wait_for(lambda: pairs(gw) == [], 2, "the pair forgotten", interval=0.2)
    counters = gw.status()["intercom"]["counters"]
    assert counters["intercom_flows_deleted"] >= 1
    print(f"port {port}: UDP blocked {closed_after:.2f} s after the session ended")
    assert gw.stop() == 0


# Many sessions at once from one host, held until stdin closes.
MANY_SESSIONS = """
import socket, sys
held = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) for _ in range(int(sys.argv[3]))]
print("connected", flush=True)
sys.stdin.read()
for c in held:
    c.close()
print("closed", flush=True)
"""
# Datagrams from as many source ports to the router: each one a conntrack entry, none for loxgw.
DATAGRAMS = """
import socket, sys
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", (sys.argv[1], 9))
    s.close()
"""
COUNT_UDP_TO_ROUTER = """
import ipaddress
from loxgw.edges import conntrack
print(len(conntrack.dump(conntrack.UDP, dst=ipaddress.IPv4Address("192.168.10.1"))))
"""


def test_floods_cost_bounded_sessions_and_never_reach_python(lab: Lab) -> None:
    intercom = lab.add_host("ic", "iot", 30, mac=INTERCOM_MAC)
    app = lab.add_host("app", "lan", 20)
    static = f"\nconfig device 'door'\n\toption type 'intercom'\n\toption ip '{intercom.ip}'\n"
    gw = Loxgw(lab, extra=static).start()
    background(lab, intercom, SIGNALLING_SERVER, "80")
    background(lab, intercom, ECHO, str(INTERCOM_UDP))
    background(lab, app, ECHO, str(APP_UDP))
    wait_for(lambda: gw.status()["intercom"]["clients_networks"] == ["192.168.10.0/24"], 5, "clients subnets read",
             interval=0.2)
    before = gw.status()["intercom"]["counters"].get("intercom_events", 0)
    lab.run(app.ns, sys.executable, "-c", DATAGRAMS, "192.168.10.1", "3000")
    entries = lab.run(lab.ns_router, "env", f"PYTHONPATH={REPO}", sys.executable, "-c", COUNT_UDP_TO_ROUTER).stdout
    assert int(entries) >= 1000, "the datagrams made conntrack entries (source ports may repeat)"
    assert gw.status()["intercom"]["counters"].get("intercom_events", 0) == before  # the socket filter dropped them

    sessions = background(lab, app, MANY_SESSIONS, intercom.ip, "80", "100")
    wait_for(lambda: gw.status()["intercom"]["sessions"] == MAX_SESSIONS_PER_APP, 5, "the cap", interval=0.2)
    status = gw.status()["intercom"]
    assert status["counters"]["sessions_refused_app_cap"] == 100 - MAX_SESSIONS_PER_APP
    assert [(p["app"], p["sessions"]) for p in status["open"]] == [(app.ip, MAX_SESSIONS_PER_APP)]
    assert probe(lab, app, 42000, intercom, INTERCOM_UDP) is True
    assert sessions.stdin is not None and sessions.stdout is not None
    sessions.stdin.close()
    assert sessions.stdout.readline().strip() == b"closed"
    wait_for(lambda: pairs(gw) == [], 5, "the pair closed", interval=0.2)
    assert probe(lab, app, 42001, intercom, INTERCOM_UDP) is False
    assert gw.stop() == 0
