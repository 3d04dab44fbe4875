"""What an idle pause costs loxgw's DNS work on this machine: the same code, warm and after idling.

Run: `.venv/bin/python -m bench.cold_path [PAIRS]` (no root, no lab). The DNS thread's Python work
for one name (the device's query and the resolver's answer through the daemon's inspector, with
the catalogue's policies, then the ledger's admission) runs PAIRS times per row, each pair on a
name and address of its own, after a pause of the row's length: slept, or busy-waited. No kernel
call is timed: what the rows differ in is only what the thread did before the same work.

Why it matters: a device's first packet to a new address waits for exactly this work, which in
the daemon runs after a wake-up (bench.dns_latency --connect-only). On a VM whose vCPUs idle
between packets, the caches are cold by then; this measures by how much.
"""

from __future__ import annotations

import sys
import time

from dnslib import RR, A

from loxgw.core import catalog, dns
from loxgw.core.dnsinspect import DnsInspector
from loxgw.core.dnsledger import GrantLedger
from tests.unit.core.test_dns import answer, query, udp_packet

DEVICE, RESOLVER = "192.168.20.11", "192.168.20.1"
# Before each pair: (what, seconds). Sleeping lets the vCPU idle; busy-waiting keeps it running
# (on one small loop), so a slowdown there too is not the idling itself.
GAPS = (("slept", 0.0), ("slept", 0.0005), ("slept", 0.002), ("slept", 0.010), ("busy-waited", 0.010))


def pairs(count: int, first: int) -> list[tuple[bytes, bytes]]:
    """Query and answer packets for `count` names, each answered with an address of its own."""
    out = []
    for i in range(first, first + count):
        name = f"c{i}.dyndns.loxonecloud.com"
        q = query(name, qid=i & 0xFFFF)
        a = answer(q, RR(name, rdata=A(f"198.51.{(i >> 8) & 255}.{i & 255}"), ttl=300))
        port = 40000 + i % 20000
        out.append((udp_packet(DEVICE, RESOLVER, port, 53, q.pack()), udp_packet(RESOLVER, DEVICE, 53, port, a.pack())))
    return out


def busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def timed(inspector: DnsInspector, ledger: GrantLedger, work: list[tuple[bytes, bytes]], gap: float,
          now: float, wait: str = "slept") -> list[float]:
    """Microseconds per pair, each after `gap` seconds slept (or busy-waited)."""
    times = []
    pause = time.sleep if wait == "slept" else busy_wait
    for asked, answered in work:
        if gap:
            pause(gap)
        started = time.perf_counter()
        inspector.on_packet(asked, "devices", now)
        grants = inspector.on_packet(answered, "devices", now)
        if not grants or not ledger.admit(grants, now):
            raise SystemExit(f"no grant for a catalogue answer: {inspector.counters}")
        times.append((time.perf_counter() - started) * 1e6)
    return times


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    inspector = DnsInspector(dns.policies(catalog.load()), dns.Limits(60, 3600, ()))
    ledger = GrantLedger(capacity=1 << 20, per_device=1 << 20)  # one device, thousands of names
    timed(inspector, ledger, pairs(500, 0), 0.0, 10.0)  # imports, first calls, caches of the interpreter
    print(f"## One name's query and answer, {count} pairs per row (µs)\n")
    print("| before each pair | p50 | p90 | p99 | p50 against back to back |")
    print("|---|---|---|---|---|")
    base = 0.0
    for row, (wait, gap) in enumerate(GAPS):
        times = timed(inspector, ledger, pairs(count, 500 + row * count), gap, 20.0 + row, wait)
        base = base or pct(times, .5)
        label = f"{wait} {gap * 1000:g} ms" if gap else "nothing (back to back)"
        print(f"| {label} | {pct(times, .5):.0f} | {pct(times, .9):.0f} | {pct(times, .99):.0f} | "
              f"{pct(times, .5) / base:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
