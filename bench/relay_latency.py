"""What the discovery relay costs: added latency and the highest loss-free rate, in the lab.

Run as root: `.venv/bin/python -m bench.relay_latency`. A sender in `lan`
broadcasts to 255.255.255.255:7070 at a fixed rate for 2 s; each payload
carries its send time (CLOCK_MONOTONIC is shared by all namespaces); it sleeps between packets
rather than spinning, so that on this 2-core machine it does not starve the
relay it measures. A
receiver in `iot` (through loxgw) and one in `lan` (same segment, no relay:
the baseline) record arrival times. The relay's rate limits are raised so
that they do not cut the measurement. Prints a Markdown table.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Lab

SEND = r"""
import socket, struct, sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
count = int(rate * seconds); start = time.monotonic(); i = 0
while i < count:
    now = time.monotonic()
    due = start + i / rate
    if now >= due:
        s.sendto(struct.pack("!Id", i, now), ("255.255.255.255", 7070)); i += 1
    elif due - now > 0.0002:
        time.sleep(due - now - 0.0001)  # leave the CPU to the relay instead of spinning
print(count)
"""

RECEIVE = r"""
import json, socket, struct, sys, time
seconds = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("", 7070)); s.settimeout(0.2)
print("ready", flush=True)
lat = []; end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        data = s.recv(64)
    except OSError:
        continue
    if len(data) == 12:
        lat.append(time.monotonic() - struct.unpack("!Id", data)[1])
print(json.dumps(lat))
"""

RELAY = """
config relay
\tlist zone 'iot'
\tlist zone 'lan'
\toption rate_limit '100000'
\toption global_rate '1000000'
"""
RATES = (1000, 5000, 10000, 15000, 20000)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e6 if ordered else float("nan")


def main() -> int:
    rows = []
    with Lab() as lab:
        sender = lab.add_host("sender", "lan", 20)
        far = lab.add_host("far", "iot", 10)
        near = lab.add_host("near", "lan", 21)
        Loxgw(lab, extra=RELAY, main_extra="\toption log_level 'warning'\n\toption dns_mode 'off'\n").start()
        for rate in RATES:
            receivers = []
            for host in (far, near):
                proc = lab.popen(host.ns, [sys.executable, "-c", RECEIVE, "4"], stdout=subprocess.PIPE)
                assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
                receivers.append(proc)
            sent = int(lab.run(sender.ns, sys.executable, "-c", SEND, str(rate), "2", timeout=60).stdout)
            far_lat, near_lat = (json.loads(p.communicate(timeout=30)[0]) for p in receivers)
            rows.append((rate, sent, len(far_lat), pct(far_lat, .5), pct(far_lat, .99),
                         pct(far_lat, .5) - pct(near_lat, .5), pct(far_lat, .99) - pct(near_lat, .99)))
    print("| rate/s | sent | relayed copies received | lost | p50 µs | p99 µs | added p50 | added p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for rate, sent, got, p50, p99, a50, a99 in rows:
        print(f"| {rate} | {sent} | {got} | {sent - got} | {p50:.0f} | {p99:.0f} | {a50:.0f} | {a99:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
