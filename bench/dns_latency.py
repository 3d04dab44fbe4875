"""What loxgw's inline DNS path costs, against no inspection and against dnsmasq --nftset.

Run as root: `.venv/bin/python -m bench.dns_latency [N]` (N sequential queries per row).
In the namespace lab a simulated Miniserver asks the router's dnsmasq, which
forwards every query upstream (--cache-size=0, so every answer is fresh and,
for the peer, inserted). Three setups:

- plain: dnsmasq only; the baseline.
- dnsmasq --nftset: dnsmasq inserts loxonecloud.com answers into a set itself.
- loxgw inline: loxgw sees the answer in NFQUEUE and inserts before release.

Part 1, latency: N sequential queries (one outstanding) for a catalogue name
and for a foreign name; p50/p99 round trip and the added latency against plain.
Part 2, rate: matching queries sent at a fixed rate for 2 s; answers lost and
p50/p99 of the answered. Prints Markdown tables.
"""

from __future__ import annotations

import json
import sys

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import IOT_GW, Lab

SEQUENTIAL = r"""
import json, socket, sys, time
from dnslib import DNSRecord
name, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
times = []
for i in range(n):
    q = DNSRecord.question(name.replace("{i}", str(i))); q.header.id = i & 0xFFFF
    t = time.perf_counter(); s.sendto(q.pack(), (sys.argv[3], 53)); s.recv(4096)
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""

# One thread sends on schedule and reads answers in between (a reader thread
# would fight the sender for the GIL and inflate every latency).
PACED = r"""
import json, select, socket, sys, time
from dnslib import DNSRecord
name, rate, seconds, server = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
count = int(rate * seconds)
packets = []
for i in range(count):
    q = DNSRecord.question(name.replace("{i}", str(i))); q.header.id = i & 0xFFFF
    packets.append(q.pack())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.connect((server, 53))
s.setblocking(False)
sent_at = [0.0] * count
latencies = []
start = time.perf_counter()
i = 0
deadline = start + seconds + 1.0
while True:
    now = time.perf_counter()
    if i < count and now >= start + i / rate:
        sent_at[i] = now
        s.send(packets[i])
        i += 1
        continue
    if now > deadline or len(latencies) == count:
        break
    wait = (start + i / rate - now) if i < count else deadline - now
    if select.select([s], [], [], max(0.0, wait))[0]:
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                break
            latencies.append(time.perf_counter() - sent_at[int.from_bytes(data[:2], "big")])
print(json.dumps({"sent": count, "latencies": latencies}))
"""

NAMES = {"matching": "n{i}.dyndns.loxonecloud.com", "foreign": "n{i}.example.net"}
RATES = (1000, 2000, 5000, 8000)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def sequential(lab: Lab, ns: str, name: str, n: int) -> list[float]:
    out = lab.run(ns, sys.executable, "-c", SEQUENTIAL, name, str(n), IOT_GW, timeout=600).stdout
    return [t * 1e6 for t in json.loads(out)]


def paced(lab: Lab, ns: str, name: str, rate: int) -> tuple[int, list[float]]:
    out = lab.run(ns, sys.executable, "-c", PACED, name, str(rate), "2", IOT_GW, timeout=600).stdout
    result = json.loads(out)
    return result["sent"], [t * 1e6 for t in result["latencies"]]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    latency: dict[tuple[str, str], list[float]] = {}
    rates: dict[tuple[str, int], tuple[int, list[float]]] = {}
    # The upstream answers any n{i} of both domains, so both are forwarded alike.
    with Lab() as lab:
        ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
        lab.restart_router_dns("--cache-size=0")

        def run(setup: str, with_rates: bool) -> None:
            for label, name in NAMES.items():
                sequential(lab, ms.ns, name, 50)
                latency[(setup, label)] = sequential(lab, ms.ns, name, n)
            if with_rates:
                for rate in RATES:
                    rates[(setup, rate)] = paced(lab, ms.ns, NAMES["matching"], rate)

        run("plain", True)

        lab.run(lab.ns_router, "nft", "add table inet bench; add set inet bench s4 "
                "{ type ipv4_addr; flags timeout; }")
        lab.restart_router_dns("--cache-size=0", "--nftset=/loxonecloud.com/4#inet#bench#s4")
        run("dnsmasq --nftset", True)
        inserted = lab.run(lab.ns_router, "nft", "list set inet bench s4").stdout.count("203.0.113.")
        lab.restart_router_dns("--cache-size=0")

        gw = Loxgw(lab, main_extra="\toption log_level 'warning'\n").start()
        run("loxgw inline", True)
        status = gw.status()
    mode = status["queue_mode"]
    counters: dict[str, int] = status["counters"]

    print(f"## Latency: {n} sequential queries per row (µs); loxgw queue mode {mode}\n")
    print("| setup | name | p50 | p99 | added p50 | added p99 |")
    print("|---|---|---|---|---|---|")
    for (setup, label), times in latency.items():
        base = latency[("plain", label)]
        print(f"| {setup} | {label} | {pct(times, .5):.0f} | {pct(times, .99):.0f} | "
              f"{pct(times, .5) - pct(base, .5):.0f} | {pct(times, .99) - pct(base, .99):.0f} |")
    print(f"\n(dnsmasq --nftset left {inserted} elements in its set; loxgw counted "
          f"{counters.get('dns_answers_matched', 0)} matched answers, "
          f"{counters.get('dns_inserted', 0)} elements sent, "
          f"{counters.get('dns_netlink_errors', 0)} netlink errors.)\n")
    print("## Rate: matching queries at a fixed rate for 2 s (latency in µs)\n")
    print("| setup | rate/s | sent | lost | p50 | p99 |")
    print("|---|---|---|---|---|---|")
    for (setup, rate), (sent, lat) in rates.items():
        print(f"| {setup} | {rate} | {sent} | {sent - len(lat)} | {pct(lat, .5):.0f} | {pct(lat, .99):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
