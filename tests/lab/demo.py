"""`make demo`: the whole system in a namespace lab, narrated, then torn down."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Lab, missing_tools


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def tcp(lab: Lab, ns: str, addr: str, port: int) -> str:
    proc = lab.run(ns, sys.executable, "-m", "tests.lab.peer", "connect-tcp", addr, str(port),
                   "0.5", check=False)
    return "open" if proc.returncode == 0 else "blocked"


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root: it builds network namespaces and nftables rules",
              file=sys.stderr)
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
        for ns, addr, ports in ((lab.ns_wan, "203.0.113.7", [22, 49001]),
                                (ms.ns, ms.ip, [443])):
            proc = lab.popen(ns, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", addr,
                                  *map(str, ports)], stdout=subprocess.PIPE)
            assert proc.stdout is not None
            proc.stdout.readline()

        gw = Loxgw(lab)
        step(f"config {gw.config_path}")
        print(gw.cli("check").stdout.strip())
        step("start loxgw in the router namespace")
        gw.start()
        print(lab.run(lab.ns_router, "nft", "list", "table", "inet", "loxgw").stdout)
        step("loxgw status")
        print(gw.cli("status").stdout)
        step("what the firewall does now")
        print(f"miniserver -> 203.0.113.7:22 (not resolved yet)    {tcp(lab, ms.ns, '203.0.113.7', 22)}")
        resolved = lab.run(ms.ns, sys.executable, "-c", "import socket; "
                           "print(socket.gethostbyname('a7.remcov3.loxonecloud.com'))").stdout.strip()
        print(f"miniserver resolves a7.remcov3.loxonecloud.com -> {resolved}")
        print(f"miniserver -> {resolved}:22 (catalogue: TCP 22)   {tcp(lab, ms.ns, resolved, 22)}")
        print(f"miniserver -> {resolved}:49001 (not its port)     {tcp(lab, ms.ns, resolved, 49001)}")
        print(f"phone      -> miniserver {ms.ip}:443           {tcp(lab, phone.ns, ms.ip, 443)}"
              "  (device pinholes: not built yet)")
        step("loxgw status, with the DNS entry")
        print(gw.cli("status").stdout)
        step("stop loxgw (SIGTERM)")
        code = gw.stop()
        print(f"exit code {code}; table present afterwards: "
              f"{lab.run(lab.ns_router, 'nft', 'list', 'table', 'inet', 'loxgw', check=False).returncode == 0}")
        print(gw.log().strip())
    step("lab torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
