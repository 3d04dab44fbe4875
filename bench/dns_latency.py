"""Added DNS latency through loxgw's inline path, measured in the namespace lab.

Run as root: `.venv/bin/python -m bench.dns_latency [N]`. A simulated
Miniserver asks the router's dnsmasq N times (sequentially, one outstanding
query) for a catalogue name and for a name outside the catalogue, first with
no loxgw, then with loxgw inline. Prints p50/p99 round-trip and the added
latency. The router's dnsmasq caches, so after the first query every answer
comes from its cache: what is measured is the queue path, not the upstream.
(Not yet here: the dnsmasq --nftset comparison and the loss-free rate.)
"""

from __future__ import annotations

import json
import sys

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import IOT_GW, Lab

CLIENT = r"""
import json, socket, sys, time
from dnslib import DNSRecord
name, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
times = []
for i in range(n):
    q = DNSRecord.question(name); q.header.id = i & 0xFFFF
    t = time.perf_counter(); s.sendto(q.pack(), (sys.argv[3], 53)); s.recv(4096)
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def measure(lab: Lab, ns: str, name: str, n: int) -> list[float]:
    out = lab.run(ns, sys.executable, "-c", CLIENT, name, str(n), IOT_GW, timeout=300).stdout
    return [t * 1e6 for t in json.loads(out)]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    names = {"matching": "x1.dyndns.loxonecloud.com", "non-matching": "example.org"}
    results: dict[tuple[str, str], list[float]] = {}
    with Lab() as lab:
        ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
        for label, name in names.items():
            measure(lab, ms.ns, name, 50)  # warm the resolver cache
            results[("no loxgw", label)] = measure(lab, ms.ns, name, n)
        gw = Loxgw(lab, main_extra="\toption log_level 'warning'\n").start()
        for label, name in names.items():
            measure(lab, ms.ns, name, 50)
            results[("loxgw inline", label)] = measure(lab, ms.ns, name, n)
        mode = gw.status()["queue_mode"]
    print(f"DNS round trip, {n} sequential queries per row, queue mode {mode} (µs)\n")
    print("| path | name | p50 | p99 | added p50 | added p99 |")
    print("|---|---|---|---|---|---|")
    for (path, label), times in results.items():
        base = results[("no loxgw", label)]
        added50 = percentile(times, 0.5) - percentile(base, 0.5)
        added99 = percentile(times, 0.99) - percentile(base, 0.99)
        print(f"| {path} | {label} | {percentile(times, 0.5):.0f} | {percentile(times, 0.99):.0f} | "
              f"{added50:.0f} | {added99:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
