"""What the discovery relay costs: added latency, loss and CPU per copy, in the lab.

Run as root: `.venv/bin/python -m bench.relay_latency [--repeat N] [--rates R,R,...] [--kernel off|auto]`.

`--kernel`: the relay's `kernel` option (default `off`: the Python path, as
the figures in bench/RESULTS.md were measured). With `auto` the kernel
copies (core.relaykernel) and the CPU column counts only the daemon's own
(nearly nothing): the copies' CPU is spent in the sender's softirq, which
bench.relay_kernel measures.

A sender in `lan` broadcasts to 255.255.255.255:7070 at a fixed rate; each
payload carries its send time (CLOCK_MONOTONIC is shared by all namespaces).
The sender paces itself in bursts at most 0.5 ms apart and sleeps in between:
spinning at 30,000/s would take one of this 2-core machine's cores from the
relay it measures. A receiver in `iot` (through loxgw) and one in `lan` (same
segment, no relay: the baseline) record arrival times; "added" is, per
datagram, the copy's arrival minus the original's in `lan`, and its
percentiles (the sender's own jitter cancels out); "kernel added" is the same
from the two sockets' kernel receive timestamps (SO_TIMESTAMPNS), which leave
out each receiver's wait for a core: what the relay itself adds. The relay's rate limits
are raised so that they do not cut the measurement. CPU is the loxgw process's own
(every thread's `schedstat` run time, nanoseconds) from the first datagram
sent to the last copy received, less what the daemon uses idle (measured
before the runs: its other services' timers are not the relay's cost), per
10,000 copies the `iot` receiver got. Each rate runs `--repeat` times,
interleaved; the table gives the median of the runs, and every run is listed
below it.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from tests.lab import loxgwproc
from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Host, Lab

SEND = r"""
import socket, struct, sys, time
rate, seconds, run = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
count = int(rate * seconds); start = time.monotonic(); i = 0
while i < count:
    now = time.monotonic()
    due = min(count, int((now - start) * rate) + 1)
    while i < due:
        s.sendto(struct.pack("!IId", run, i, time.monotonic()), ("255.255.255.255", 7070)); i += 1
    wait = start + i / rate - time.monotonic()
    if wait > 0:
        time.sleep(max(wait, 0.0005))
print(count, time.monotonic() - start)
"""

# Each datagram: its index, its latency as the receiving process reads it, and the kernel's receive
# timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME: comparable between the two receivers).
RECEIVE = r"""
import json, socket, struct, sys, time
seconds, run = float(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
s.bind(("", 7070)); s.settimeout(0.2)
print("ready", flush=True)
lat = []; end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        data, anc, _, _ = s.recvmsg(64, 64)
    except OSError:
        continue
    now = time.monotonic()
    if len(data) == 16 and struct.unpack_from("!I", data)[0] == run:  # not a late copy of an earlier run
        stamp = 0.0
        for _, _, raw in anc:
            sec, nsec = struct.unpack("qq", raw[:16]); stamp = sec + nsec / 1e9
        lat.append((struct.unpack_from("!I", data, 4)[0], now - struct.unpack_from("!d", data, 8)[0], stamp))
print(json.dumps(lat))
"""

RELAY = """
config relay
\tlist zone 'iot'
\tlist zone 'lan'
\toption rate_limit '100000'
\toption global_rate '1000000'
\toption kernel '{kernel}'
"""
RATES = (1000, 10000, 20000, 30000)
SECONDS = {1000: 5.0}  # the CPU figure at 1,000/s needs more copies than 2 s give
DEFAULT_SECONDS = 2.0


@dataclass(frozen=True)
class Run:
    rate: int
    sent: int
    send_seconds: float
    got: int
    baseline_got: int
    p50: float
    p99: float
    added_p50: float
    added_p99: float
    cpu_per_10k: float
    kernel_added_p50: float = float("nan")
    kernel_added_p99: float = float("nan")

    @property
    def lost(self) -> int:
        return self.sent - self.got


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e6 if ordered else float("nan")


def cpu_ns(pid: int) -> int:
    """Run time of every thread of `pid` so far (ns; /proc/PID/task/TID/schedstat, first field)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path, encoding="ascii") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def settle(pid: int) -> None:
    """Wait until loxgw is idle again (a backlog from the previous rate is not this run's CPU)."""
    end = time.monotonic() + 10
    before = cpu_ns(pid)
    while time.monotonic() < end:
        time.sleep(0.3)
        now = cpu_ns(pid)
        if now - before < 3_000_000:
            return
        before = now


def idle_rate(pid: int, seconds: float = 3.0) -> float:
    """CPU seconds per second the daemon uses with no traffic."""
    settle(pid)
    before = cpu_ns(pid)
    time.sleep(seconds)
    return (cpu_ns(pid) - before) / 1e9 / seconds


def one_run(lab: Lab, pid: int, sender: Host, far: Host, near: Host, rate: int, run: int, idle: float,
            seconds: float | None = None) -> Run:
    seconds = seconds or SECONDS.get(rate, DEFAULT_SECONDS)
    settle(pid)
    receivers = []
    for host in (far, near):
        proc = lab.popen(host.ns, [sys.executable, "-c", RECEIVE, str(seconds + 2), str(run)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        receivers.append(proc)
    before, started = cpu_ns(pid), time.monotonic()
    out = lab.run(sender.ns, sys.executable, "-c", SEND, str(rate), str(seconds), str(run), timeout=60).stdout.split()
    relayed, direct = ({i: (read, stamp) for i, read, stamp in json.loads(p.communicate(timeout=30)[0])}
                       for p in receivers)
    cpu = (cpu_ns(pid) - before) / 1e9 - idle * (time.monotonic() - started)
    got = len(relayed)
    # Added latency per datagram: its relayed copy's arrival minus the original's on the same segment, as
    # the receiving processes read them (which includes each one's wait for a core), and as the kernel
    # stamped them on arrival (what the relay adds, without the receivers' scheduling).
    both = [i for i in relayed if i in direct]
    added = [relayed[i][0] - direct[i][0] for i in both]
    kernel_added = [relayed[i][1] - direct[i][1] for i in both if relayed[i][1] and direct[i][1]]
    latency = [read for read, _ in relayed.values()]
    return Run(rate, int(out[0]), float(out[1]), got, len(direct), pct(latency, .5), pct(latency, .99),
               pct(added, .5), pct(added, .99), cpu / got * 10000 if got else float("nan"),
               pct(kernel_added, .5), pct(kernel_added, .99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--kernel", choices=("off", "auto"), default="off")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    # The daemon as deployed: the lab's loop guard probes the loop 200 times a second from a thread
    # of its own (about 5 % of a core here), which is not the relay's cost.
    loxgwproc.LOOP_GUARD_MS = ""
    runs: list[Run] = []
    with Lab() as lab:
        sender = lab.add_host("sender", "lan", 20)
        far = lab.add_host("far", "iot", 10)
        near = lab.add_host("near", "lan", 21)
        gw = Loxgw(lab, extra=RELAY.format(kernel=args.kernel),
                   main_extra="\toption log_level 'warning'\n\toption dns_mode 'off'\n").start()
        assert gw.proc is not None
        relay = gw.relay_on_path("kernel" if args.kernel == "auto" else "python")
        print(f"relay path: {relay['path']} ({relay['path_reason']})", flush=True)
        idle = idle_rate(gw.proc.pid)
        for repeat in range(args.repeat):
            runs += [one_run(lab, gw.proc.pid, sender, far, near, rate, repeat * len(rates) + i, idle)
                     for i, rate in enumerate(rates)]
    print("| rate/s | sent | relayed copies received | lost | baseline lost | p50 µs | p99 µs | added p50 µs"
          " | added p99 µs | kernel added p50 µs | kernel added p99 µs | CPU s per 10,000 copies |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rate in rates:
        mine = [r for r in runs if r.rate == rate]

        def med(values: list[float]) -> float:
            return statistics.median(values)

        print(f"| {rate} | {mine[0].sent} | {med([r.got for r in mine]):.0f} | {med([r.lost for r in mine]):.0f} "
              f"| {med([r.sent - r.baseline_got for r in mine]):.0f} | {med([r.p50 for r in mine]):.0f} "
              f"| {med([r.p99 for r in mine]):.0f} | {med([r.added_p50 for r in mine]):.0f} "
              f"| {med([r.added_p99 for r in mine]):.0f} | {med([r.kernel_added_p50 for r in mine]):.0f} "
              f"| {med([r.kernel_added_p99 for r in mine]):.0f} | {med([r.cpu_per_10k for r in mine]):.3f} |")
    print(f"\nMedians of {args.repeat} interleaved runs; loxgw idle: {idle * 1000:.1f} ms CPU per second (subtracted)."
          " Every run (rate: lost, added p50/p99 µs, kernel added p50/p99 µs, CPU s/10k):")
    for r in runs:
        print(f"- {r.rate}/s (sent in {r.send_seconds:.2f} s): lost {r.lost} (baseline {r.sent - r.baseline_got}), "
              f"added {r.added_p50:.0f}/{r.added_p99:.0f}, kernel added {r.kernel_added_p50:.0f}/"
              f"{r.kernel_added_p99:.0f}, CPU {r.cpu_per_10k:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
