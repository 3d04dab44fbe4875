"""`make demo`: the whole system in a namespace lab, narrated, then torn down."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Lab, missing_tools, wait_for

RELAY = """
config relay
\tlist zone 'iot'
\tlist zone 'lan'
"""

SEARCH = r"""
import socket
answers = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); answers.bind(("", 7071)); answers.settimeout(3)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.sendto(b"\x00", ("255.255.255.255", 7070))
try:
    data, addr = answers.recvfrom(4096); print(f"{addr[0]} answered: {data.decode()}")
except OSError:
    print("no answer")
"""


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def tcp(lab: Lab, ns: str, addr: str, port: int) -> str:
    proc = lab.run(ns, sys.executable, "-m", "tests.lab.peer", "connect-tcp", addr, str(port), "0.5", check=False)
    return "open" if proc.returncode == 0 else "blocked"


def background(lab: Lab, ns: str, *args: str) -> None:
    proc = lab.popen(ns, [sys.executable, "-m", "tests.lab.peer", *args], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root: it builds network namespaces and nftables rules", file=sys.stderr)
        return 1
    if missing_tools():
        print(f"missing tools: {', '.join(missing_tools())}", file=sys.stderr)
        return 1
    with Lab() as lab:
        step("lab: router with br-lan (192.168.10.0/24), br-iot (192.168.20.0/24), wan "
             "(198.51.100.0/24, resolver 198.51.100.53, cloud hosts 203.0.113.0/24)")
        ms = lab.add_host("miniserver", "iot", 10, mac="50:4f:94:a0:00:01")
        phone = lab.add_host("phone", "lan", 20)
        print(f"miniserver {ms.ip} ({ms.mac}) in iot, phone {phone.ip} in lan")
        background(lab, lab.ns_wan, "listen-tcp", "203.0.113.7", "22", "49001")
        background(lab, ms.ns, "listen-tcp", ms.ip, "443", "8443")
        background(lab, ms.ns, "loxlive", "Miniserver Living Room", f"{ms.ip}:80", "504F94A00001")

        gw = Loxgw(lab, extra=RELAY, main_extra="\toption probe_interval '2'\n")
        step(f"config {gw.config_path}")
        print(gw.cli("check").stdout.strip())
        step("start loxgw in the router namespace")
        gw.start()
        wait_for(lambda: any(d["product"] == "miniserver" for d in gw.status()["devices"]), 10,
                 "the Miniserver to answer loxgw's LoxLIVE search")

        step("the App in lan searches for Miniservers (broadcast to 7070, relayed into iot)")
        print(lab.run(phone.ns, sys.executable, "-c", SEARCH).stdout.strip())

        step("pinholes for the detected Miniserver")
        print(f"phone -> miniserver {ms.ip}:443  {tcp(lab, phone.ns, ms.ip, 443)}   (catalogue: TCP 443)")
        print(f"phone -> miniserver {ms.ip}:8443 {tcp(lab, phone.ns, ms.ip, 8443)} (not in the catalogue)")

        step("cloud access by DNS name")
        print(f"miniserver -> 203.0.113.7:22 before any DNS answer: {tcp(lab, ms.ns, '203.0.113.7', 22)}")
        resolved = lab.run(ms.ns, sys.executable, "-c", "import socket; "
                           "print(socket.gethostbyname('a7.remcov3.loxonecloud.com'))").stdout.strip()
        print(f"miniserver resolves a7.remcov3.loxonecloud.com -> {resolved}")
        print(f"miniserver -> {resolved}:22    (catalogue: TCP 22) {tcp(lab, ms.ns, resolved, 22)}")
        print(f"miniserver -> {resolved}:49001 (not its port)      {tcp(lab, ms.ns, resolved, 49001)}")

        step("loxgw status")
        print(gw.cli("status").stdout)
        step("stop loxgw (SIGTERM)")
        code = gw.stop()
        left = lab.run(lab.ns_router, "nft", "list", "table", "inet", "loxgw", check=False).returncode == 0
        print(f"exit code {code}; loxgw's table present afterwards: {left}")
    step("lab torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
