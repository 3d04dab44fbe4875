"""loxgw at scale: 250 static devices and 20,000 live DNS entries, in the lab (the targets of issue 11).

Run as root: `.venv/bin/python -m bench.scale` (for a quick try: `--devices=30 --entries=2000
--appearances=5 --connections=20 --rounds=1 --relay-rounds=1`; `--keep-log=PATH` keeps the
daemon's log; `--breakdown=1` reads the firewall worker's counters around each appearance and
says where its time went, at the price of status calls that stall the loop: see appearances()).

Set-up. The real daemon runs in the lab router with LOXGW_LOOP_GUARD_MS=20
(it logs "event loop blocked" when a callback holds the loop longer) and a
config of N `config device` sections: 11 Miniservers that exist as hosts in
the IoT VLAN (192.168.20.11-21, Loxone MACs), the rest a mix of Miniservers,
Audioservers and Intercoms on a second subnet of the same VLAN (192.168.21.0/24,
an address on br-iot; static sections with an `ip` need no host). The first
ten hosts then resolve 2,000 distinct cloud names each through the router's
dnsmasq (`rK.remcov3.loxonecloud.com`, one address each in 198.18.0.0/15, one
catalogue profile each), so the DNS entries come in the way a device's get
there: 20,000 in the ledger and in the kernel. The per-device cap is 2,048, hence
ten askers. `min_timeout 3600` keeps the entries alive for the whole run (the
lab's upstream answers with TTL 300).

Two settings differ from the defaults, both because the inventory holds at
most 256 devices (core.devices.MAX_DEVICES) and 250 of them are static, which
leaves six places for detected devices: `device_grace 0` (a device that left
the neighbour table frees its place at once) and devices that go away are
deleted from the router's neighbour table by the bench (`ip neigh del`).

Measured, in this order:
1. SIGHUP to applied: the time from the signal to the daemon's "configuration
   reloaded" log line (logged once the whole firewall is applied), read by
   polling the log file; the status counter `reloads` is checked after each.
   Unchanged config, then one device's product changed and changed back.
   Meanwhile status is asked every 20 ms; its slowest answer is reported.
2. A device appearing to its pinholes live: a new host with a Loxone MAC in the
   IoT VLAN pings the router (its ARP request puts it in the router's neighbour
   table); a phone in the clients VLAN tries a TCP connection to its port 80
   every 2 ms. Time from the ping to the first connection that opens (what a
   user would see; CLOCK_MONOTONIC is shared by the namespaces).
3. One status call: `loxgw status --json` (the CLI, a new Python process
   under `ip netns exec`), and the daemon's own part: a raw client on the socket
   sending "status\\n". Size of the summary (and of `status full`).
4. First connection (as bench.dns_latency: resolve a name, connect to its
   address at once; the SYN is held until loxgw has read the answer), one
   every 5 ms, in rounds: no status polling, status polled every second over
   the raw socket, status polled every second with the CLI, and (for
   comparison, not a target) `status full` polled every second. One more
   static Miniserver (192.168.20.21) connects, to names `fI.dyndns...` with
   addresses in 198.19.0.0/16 (a local route on the upstream): 4 x 2 x 120
   names, two entries each, stay under its cap of 2,048.
5. The relay at 1,000 packets/s (as bench.relay_latency), idle and while 20
   devices come and go per second (neighbour entries with Loxone MACs added in
   the router and deleted 200 ms later, 20 a second: each is detected, gets
   pinholes and loses them), in rounds; with the daemon's CPU share.

Below the table: per phase, the loop guard's stalls and the daemon's counters
(firewall diffs, devices refused by the cap, first SYNs held, failures).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from loxgw.core import firewall
from loxgw.core.catalog import DEVICE_PRODUCTS
from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import IOT_GW, Host, Lab, _kill_netns_pids, sh

ASKERS = 10  # hosts that resolve the DNS names (the per-device cap is 2,048 entries)
FIRST_HOST = 11  # 192.168.20.11-20 ask, .21 makes the first connections
SECOND_SUBNET = "192.168.21"  # the other static devices: a second subnet of the IoT VLAN
APPEAR_BASE = 100  # 192.168.20.100-...: hosts that appear one by one
CHURN_BASE, CHURN_SPAN = 150, 100  # 192.168.20.150-249: neighbour entries that come and go
ENTRY_NET = (198, 18)  # DNS entry addresses: 198.18.0.0/15, the benchmarking range
CONNECT_NET = "198.19"  # first-connection addresses, local on the upstream through one route
CONNECT_PORT = 30000

# argv: server, first index, count. One query outstanding, dnslib as in bench.dns_latency.
RESOLVE = r"""
import json, socket, sys
from dnslib import DNSRecord
server, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
lost = 0
for i in range(first, first + count):
    q = DNSRecord.question(f"r{i}.remcov3.loxonecloud.com"); q.header.id = i & 0xFFFF
    for attempt in range(3):
        s.sendto(q.pack(), (server, 53))
        try:
            s.recv(4096)
            break
        except socket.timeout:
            lost += 1
print(json.dumps({"lost": lost}))
"""

# A new device: listens on 80, then on "go" pings the router once and prints when it did.
DEVICE = r"""
import os, socket, struct, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 80)); srv.listen(64)
print("ready", flush=True)
sys.stdin.readline()
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF); total += total >> 16
    return ~total & 0xFFFF
body = struct.pack("!HH", os.getpid() & 0xFFFF, 1) + b"loxgw-bench"
ping = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
packet = struct.pack("!BBH", 8, 0, 0) + body + b"\0"
packet = struct.pack("!BBH", 8, 0, checksum(packet)) + body
sent = time.monotonic()
ping.sendto(packet, (sys.argv[1], 0))
print(sent, flush=True)
srv.settimeout(None)
while True:
    conn, _ = srv.accept(); conn.close()
"""

# A phone: on "IP" it tries TCP to IP:80 every 2 ms (non-blocking, each its own socket) and
# prints when the first one opened (or "timeout").
PROBER = r"""
import resource, selectors, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
every, limit = 0.002, 5.0
print("ready", flush=True)
for line in sys.stdin:
    ip = line.strip()
    sel = selectors.DefaultSelector(); socks = []
    start = time.monotonic(); nxt = start; opened = None
    print("started", flush=True)
    while opened is None and time.monotonic() - start < limit:
        now = time.monotonic()
        if now >= nxt:
            s = socket.socket(); s.setblocking(False); s.connect_ex((ip, 80))
            sel.register(s, selectors.EVENT_WRITE); socks.append(s); nxt += every
        for key, _ in sel.select(max(0.0, nxt - time.monotonic())):
            s = key.fileobj; sel.unregister(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                opened = time.monotonic(); break
    for s in socks:
        s.close()
    sel.close()
    print(opened if opened is not None else "timeout", flush=True)
"""

# argv: first index, count, gap seconds. Resolve, connect at once (first connection), pause.
FIRST_CONNECT = r"""
import json, socket, sys, time
first, count, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
times, failed = [], []
for i in range(first, first + count):
    addr = socket.gethostbyname(f"f{i}.dyndns.loxonecloud.com")
    c = socket.socket(); c.settimeout(5)
    t = time.perf_counter()
    try:
        c.connect((addr, 30000))
    except OSError as exc:  # counted as the time it took to fail, and listed
        failed.append((i, addr, repr(exc)))
    times.append(time.perf_counter() - t)
    c.close()
    time.sleep(gap)
print(json.dumps({"times": times, "failed": failed}))
"""

# argv: rate/s, lifetime s, seconds, first host octet, span. Neighbour entries with Loxone MACs
# added on br-iot (as when a device's ARP reaches the router) and deleted `lifetime` later.
CHURN = r"""
import json, sys, time
from pyroute2 import IPRoute
rate, life, seconds = (float(a) for a in sys.argv[1:4])
base, span = int(sys.argv[4]), int(sys.argv[5])
ipr = IPRoute(); idx = ipr.link_lookup(ifname="br-iot")[0]
live = []; count = int(rate * seconds); i = 0; errors = 0
start = time.monotonic()
while i < count or live:
    now = time.monotonic()
    while live and live[0][0] <= now:
        try:
            ipr.neigh("del", dst=live.pop(0)[1], ifindex=idx)
        except Exception:
            errors += 1
    if i < count and now >= start + i / rate:
        ip = f"192.168.20.{base + i % span}"
        mac = f"50:4f:94:ee:{(i >> 8) & 255:02x}:{i & 255:02x}"
        try:
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=idx, state=0x02)
        except Exception:
            errors += 1
        live.append((now + life, ip)); i += 1
        continue
    due = [start + i / rate] if i < count else []
    due += [live[0][0]] if live else []
    if due:
            time.sleep(max(0.0, min(0.005, min(due) - now)))
print(json.dumps({"added": count, "errors": errors, "seconds": time.monotonic() - start}))
"""

# The relay measurement of bench.relay_latency (as committed): a sender in lan broadcasting
# to 7070 with its send time in each payload, sleeping between packets; receivers in iot
# (relayed) and lan (the baseline); the relay's rate limits raised out of the way.
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
        time.sleep(due - now - 0.0001)
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

PRODUCT_CYCLE = ["miniserver"] * 20 + ["audioserver"] * 3 + ["intercom"] * 2  # 80 / 12 / 8 %


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def arg(name: str, default: int) -> int:
    for item in sys.argv[1:]:
        if item.startswith(f"--{name}="):
            return int(item.split("=", 1)[1])
    return default


def loxone_mac(kind: int, n: int) -> str:
    return f"50:4f:94:{kind:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}"


def static_devices(count: int, changed: int | None = None) -> tuple[str, dict[str, int]]:
    """`config device` sections: askers and the first-connection host first, then the mix."""
    lines = []
    products: dict[str, int] = {}
    for i in range(count):
        if i <= ASKERS:
            product, ip = "miniserver", f"192.168.20.{FIRST_HOST + i}"
            mac = f"\toption mac '{loxone_mac(0xA0, i)}'\n"
        else:
            product, ip, mac = PRODUCT_CYCLE[i % len(PRODUCT_CYCLE)], f"{SECOND_SUBNET}.{i - ASKERS + 1}", ""
        if i == changed:
            product = "audioserver" if product != "audioserver" else "miniserver"
        products[product] = products.get(product, 0) + 1
        lines.append(f"\nconfig device 'd{i:03d}'\n\toption type '{product}'\n{mac}\toption ip '{ip}'\n")
    return "".join(lines), products


class Log:
    """The daemon's log file, read from an offset: reload lines and loop-guard lines."""

    BLOCKED = re.compile(r"event loop blocked for (\d+) ms")

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = os.path.getsize(self.path)

    def since(self) -> str:
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            handle.seek(self.offset)
            return handle.read()

    def blocked(self) -> str:
        """The loop guard's lines since the mark, as stalls: the guard logs every late probe, and the
        probes posted during one stall arrive together, each 5 ms less late than the one before."""
        stalls: list[int] = []
        previous = None
        for late in (int(m) for m in self.BLOCKED.findall(self.since())):
            if previous is None or late >= previous:
                stalls.append(late)
            previous = late
        if not stalls:
            return "loop guard silent"
        return (f"loop guard: {len(stalls)} stalls over 20 ms, worst {max(stalls)} ms, "
                f"median {sorted(stalls)[len(stalls) // 2]} ms")


def raw_status(path: str, full: bool = False) -> tuple[float, bytes]:
    """One status call over the socket: (seconds, answer)."""
    start = time.perf_counter()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(path)
    sock.sendall(b"status full\n" if full else b"status\n")
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    sock.close()
    return time.perf_counter() - start, b"".join(chunks)


def status(gw: Loxgw) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(raw_status(gw.socket)[1])
    return result


class Poller:
    """Calls `call` every `every` seconds on a thread until stopped; keeps the durations."""

    def __init__(self, call: Callable[[], object], every: float) -> None:
        self.call, self.every = call, every
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            self.call()
            self.times.append(time.perf_counter() - start)
            self._stop.wait(max(0.0, self.every - (time.perf_counter() - start)))


def remove_host(lab: Lab, host: Host) -> None:
    """Take a host off the lab (its namespace and veth) and out of the router's neighbour table."""
    _kill_netns_pids(host.ns)
    sh("ip", "netns", "del", host.ns, check=False)
    shutil.rmtree(f"/etc/netns/{host.ns}", ignore_errors=True)
    lab.namespaces.remove(host.ns)
    del lab.hosts[host.name]
    lab.run(lab.ns_router, "ip", "neigh", "del", host.ip, "dev", "br-iot", check=False)


# --- the five measurements ------------------------------------------------------------------


def fill_dns(lab: Lab, askers: list[Host], entries: int) -> float:
    start = time.perf_counter()
    per = entries // len(askers)
    for k, host in enumerate(askers):
        out = lab.run(host.ns, sys.executable, "-c", RESOLVE, IOT_GW, str(k * per), str(per), timeout=600).stdout
        if json.loads(out)["lost"]:
            print(f"(asker {host.ip}: {json.loads(out)['lost']} queries retried)", file=sys.stderr)
    return time.perf_counter() - start


def sighup(gw: Loxgw, log: Log) -> tuple[float, float]:
    """Seconds from SIGHUP to "configuration reloaded", and the slowest status answer meanwhile."""
    before = status(gw)["counters"].get("reloads", 0)
    log.mark()
    with Poller(lambda: raw_status(gw.socket), 0.02) as poller:
        start = time.perf_counter()
        gw.signal(signal.SIGHUP)
        while "configuration reloaded" not in log.since():
            if "reload rejected" in log.since() or "refused by the kernel" in log.since():
                raise RuntimeError(f"reload failed:\n{log.since()}")
            if time.perf_counter() - start > 300:
                raise TimeoutError("no reload within 300 s")
            time.sleep(0.001)
        took = time.perf_counter() - start
    after = status(gw)["counters"].get("reloads", 0)
    assert after == before + 1, (before, after)
    return took, max(poller.times, default=0.0)


def device_state(lab: Lab, gw: Loxgw, ip: str) -> dict[str, Any]:
    """A device's line in status and whether a pinhole set (its own ports, its product's devices) holds its address."""
    found = next((d for d in status(gw)["devices"] if d["ip"] == ip), None)
    listing = "".join(lab.run(lab.ns_router, "nft", "list", "set", "inet", "loxgw", name).stdout
                      for name in (firewall.PIN_PORT, *(firewall.products_set(p) for p in DEVICE_PRODUCTS)))
    neighbour = lab.run(lab.ns_router, "ip", "neigh", "show", ip, "dev", "br-iot").stdout.strip()
    return {"status": found, "in a pinhole set": re.search(rf"\b{re.escape(ip)}\b", listing) is not None,
            "neighbour": neighbour}


PASS_SPANS = ("wait", "plan", "diff", "kernel")  # the firewall worker's counters pass_<span>_us


def appearances(lab: Lab, gw: Loxgw, phone: Host, count: int,
                with_breakdown: bool) -> tuple[list[float], list[str], list[dict[str, float]]]:
    """Latencies, timeouts, and (`with_breakdown`) per appearance where the firewall worker's time went
    (ms, from its counters: wait = asked to pass started, plan, diff = compare and encode, kernel = the
    batch or nft run). The breakdown costs two status calls per appearance, and each status call
    explains the blocked samples (the prober's refused SYNs) against every DNS entry on the event
    loop (daemon.diagnose): the loop then stalls, and appearances with it."""
    prober = lab.popen(phone.ns, [sys.executable, "-c", PROBER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert prober.stdin is not None and prober.stdout is not None
    assert prober.stdout.readline().strip() == b"ready"
    latencies: list[float] = []
    timeouts: list[str] = []
    spans: list[dict[str, float]] = []
    for n in range(count):
        before = status(gw)["counters"] if with_breakdown else {}  # well before the ping: see above
        host = lab.add_host(f"new{n}", "iot", APPEAR_BASE + n, mac=loxone_mac(0xAA, n))
        dev = lab.popen(host.ns, [sys.executable, "-c", DEVICE, IOT_GW], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert dev.stdin is not None and dev.stdout is not None
        assert dev.stdout.readline().strip() == b"ready"
        time.sleep(0.2)  # the host's own link-up noise (IPv6 ND) settles first
        prober.stdin.write(f"{host.ip}\n".encode())
        prober.stdin.flush()
        assert prober.stdout.readline().strip() == b"started"
        dev.stdin.write(b"go\n")
        dev.stdin.flush()
        sent = float(dev.stdout.readline())
        opened = prober.stdout.readline().strip()
        if opened == b"timeout":  # what loxgw made of it, for the report
            timeouts.append(f"{host.ip}: {json.dumps(device_state(lab, gw, host.ip))}")
        else:
            latencies.append(float(opened) - sent)
        if with_breakdown and opened != b"timeout":
            after = status(gw)["counters"]
            waited = time.monotonic()
            # The worker counts its diff just after the kernel took it, and may not hold the GIL yet.
            while after.get("diffs", 0) == before.get("diffs", 0) and time.monotonic() - waited < 1:
                time.sleep(0.01)
                after = status(gw)["counters"]
            spans.append({name: (after.get(f"pass_{name}_us", 0) - before.get(f"pass_{name}_us", 0)) / 1e3
                          for name in PASS_SPANS} | {"diffs": after.get("diffs", 0) - before.get("diffs", 0),
                                                     "total": latencies[-1] * 1e3})
        remove_host(lab, host)
        time.sleep(0.3)  # its departure is detected and its pinholes go before the next one
    prober.kill()
    return latencies, timeouts, spans


def breakdown(spans: list[dict[str, float]]) -> str:
    """Median and p99 of each part of an appearance; "before the worker" is the rest: the neighbour event,
    the detector's settle and dump, the inventory, building the desired state, and the prober's 2 ms."""
    rows = {name: [s[name] for s in spans] for name in PASS_SPANS}
    rows["before the worker"] = [s["total"] - sum(s[name] for name in PASS_SPANS) for s in spans]
    parts = [f"{name} {pct(v, .5):.1f} / {pct(v, .99):.1f}" for name, v in rows.items()]
    diffs = sorted({int(s["diffs"]) for s in spans})
    return f"appearance breakdown, ms, p50 / p99: {'; '.join(parts)} (firewall diffs per appearance: {diffs})"


def first_connections(lab: Lab, host: Host, gw: Loxgw, per_round: int,
                      rounds: int) -> tuple[dict[str, list[float]], list[str]]:
    conditions: dict[str, Callable[[], object] | None] = {
        "no status polling": None,
        "status every 1 s (raw socket)": lambda: raw_status(gw.socket),
        "status every 1 s (loxgw status --json)": lambda: gw.cli("status", "--json"),
        "`status full` every 1 s (raw socket; not a target)": lambda: raw_status(gw.socket, full=True),
    }
    results: dict[str, list[float]] = {name: [] for name in conditions}
    failures: list[str] = []
    index = 0
    for _ in range(rounds):
        for name, call in conditions.items():
            args = (sys.executable, "-c", FIRST_CONNECT, str(index), str(per_round), "0.005")
            if call is None:
                out = lab.run(host.ns, *args, timeout=600).stdout
            else:
                with Poller(call, 1.0):
                    out = lab.run(host.ns, *args, timeout=600).stdout
            result = json.loads(out)
            results[name] += [t * 1e3 for t in result["times"]]
            failures += [f"{name}: {i} {addr} {error}" for i, addr, error in result["failed"]]
            index += per_round
    return results, failures


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay_round(lab: Lab, gw: Loxgw, sender: Host, far: Host, near: Host, seconds: float,
                churn: bool) -> dict[str, Any]:
    receivers = []
    for host in (far, near):
        proc = lab.popen(host.ns, [sys.executable, "-c", RECEIVE, str(seconds + 2)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        receivers.append(proc)
    churner = None
    if churn:
        churner = lab.popen(lab.ns_router, [sys.executable, "-c", CHURN, "20", "0.2", str(seconds + 0.5),
                                            str(CHURN_BASE), str(CHURN_SPAN)], stdout=subprocess.PIPE)
        time.sleep(0.5)  # the churn is under way when the relay's packets start
    assert gw.proc is not None
    cpu, wall = cpu_seconds(gw.proc.pid), time.perf_counter()
    sent = int(lab.run(sender.ns, sys.executable, "-c", SEND, "1000", str(seconds), timeout=120).stdout)
    cpu, wall = cpu_seconds(gw.proc.pid) - cpu, time.perf_counter() - wall
    far_lat, near_lat = (json.loads(p.communicate(timeout=60)[0]) for p in receivers)
    churned = json.loads(churner.communicate(timeout=60)[0]) if churner is not None else None
    return {"sent": sent, "far": [t * 1e6 for t in far_lat], "near": [t * 1e6 for t in near_lat],
            "churn": churned, "cpu": cpu / wall}


# --- the run -----------------------------------------------------------------------------------


def main() -> int:
    n_devices = arg("devices", 250)
    n_entries = arg("entries", 20000)
    n_appear = arg("appearances", 50)
    # 4 conditions x rounds x per_round names, 2 entries each, under the per-device cap of 2,048.
    per_round, rounds = arg("connections", 120), arg("rounds", 2)
    relay_seconds, relay_rounds = 5.0, arg("relay-rounds", 2)
    os.environ["LOXGW_LOOP_GUARD_MS"] = "20"
    entries = {f"r{k}.remcov3.loxonecloud.com": f"{ENTRY_NET[0]}.{ENTRY_NET[1] + k // 62500}."
               f"{k // 250 % 250}.{k % 250 + 1}" for k in range(n_entries)}
    connects = {f"f{i}.dyndns.loxonecloud.com": f"{CONNECT_NET}.{i // 250}.{i % 250 + 1}"
                for i in range(per_round * rounds * 4)}
    report: list[str] = []
    notes: list[str] = []
    load_before = os.getloadavg()
    keep_log = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--keep-log=")), None)
    with Lab(dns_only_records=entries | connects) as lab, contextlib.ExitStack() as keep:
        lab.run(lab.ns_router, "ip", "addr", "add", f"{SECOND_SUBNET}.1/24", "dev", "br-iot")
        lab.run(lab.ns_wan, "ip", "route", "add", "local", f"{CONNECT_NET}.0.0/16", "dev", "lo")
        askers = [lab.add_host(f"ask{k}", "iot", FIRST_HOST + k, mac=loxone_mac(0xA0, k)) for k in range(ASKERS)]
        connector = lab.add_host("fc", "iot", FIRST_HOST + ASKERS, mac=loxone_mac(0xA0, ASKERS))
        phone = lab.add_host("phone", "lan", 20)
        sender, near = lab.add_host("sender", "lan", 40), lab.add_host("near", "lan", 41)
        far = lab.add_host("far", "iot", 40)
        listener = lab.popen(lab.ns_wan, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", "0.0.0.0",
                                          str(CONNECT_PORT)], stdout=subprocess.PIPE)
        assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
        sections, products = static_devices(n_devices)
        main_extra = "\toption log_level 'info'\n\toption device_grace '0'\n\toption min_timeout '3600'\n"
        gw = Loxgw(lab, extra=sections + RELAY, main_extra=main_extra)
        if keep_log:  # the daemon's log outlives the lab (for a failed run too)
            keep.callback(shutil.copyfile, gw.log_path, keep_log)
        log = Log(gw.log_path)
        started = time.perf_counter()
        gw.start()
        startup = time.perf_counter() - started
        for host in [*askers, connector, far]:
            lab.run(host.ns, "ping", "-c1", "-W1", IOT_GW)
        first = status(gw)
        notes.append(f"start-up to status socket: {startup:.2f} s; {len(first['devices'])} devices "
                     f"({', '.join(f'{v} {k}' for k, v in sorted(products.items()))}), "
                     f"{sum(d['pinhole_count'] for d in first['devices'])} pinholes")
        log.mark()

        filled = fill_dns(lab, askers, n_entries)
        time.sleep(1)
        snap = status(gw)
        cloud = lab.run(lab.ns_router, "nft", "list", "set", "inet", "loxgw", "cloud4_1").stdout
        in_kernel = cloud.count(f"{ENTRY_NET[0]}.{ENTRY_NET[1]}")
        notes.append(f"{n_entries} names resolved by {ASKERS} devices in {filled:.1f} s; ledger "
                     f"{snap['dns_entries_total']} entries, kernel set cloud4_1 {in_kernel} elements")
        notes.append(f"while filling: {log.blocked()}")

        # 1. SIGHUP
        log.mark()
        hups: list[tuple[str, float, float]] = []
        for _ in range(3):
            hups.append(("unchanged", *sighup(gw, log)))
        for _ in range(2):
            for changed in (100, None):  # one Miniserver becomes an Audioserver, then back
                gw.write_config(static_devices(n_devices, changed)[0] + RELAY, main_extra)
                hups.append(("one device's type changed" if changed is not None else "changed back",
                             *sighup(gw, log)))
        hup_blocked = Log(gw.log_path)
        hup_blocked.offset = log.offset
        after = lab.run(lab.ns_router, "nft", "list", "set", "inet", "loxgw", "cloud4_1").stdout
        notes.append(f"after the SIGHUPs: kernel set cloud4_1 {after.count(f'{ENTRY_NET[0]}.{ENTRY_NET[1]}')} "
                     f"elements; {hup_blocked.blocked()}")

        # 3. status (before the appearances: a quiet daemon)
        log.mark()
        raw = [raw_status(gw.socket) for _ in range(30)]
        cli_times = []
        for _ in range(10):
            start = time.perf_counter()
            cli_out = gw.cli("status", "--json").stdout
            cli_times.append(time.perf_counter() - start)
        notes.append(f"during 30 summary status calls over the socket and 10 CLI calls: {log.blocked()}")
        log.mark()
        full_time, full_body = raw_status(gw.socket, full=True)
        time.sleep(0.2)
        notes.append(f"during one `status full` call: {log.blocked()}")

        # 2. appearances
        log.mark()
        before = status(gw)["counters"]
        appear, timeouts, spans = appearances(lab, gw, phone, n_appear, bool(arg("breakdown", 0)))
        if spans:
            notes.append(breakdown(spans))
        after_c = status(gw)["counters"]
        notes.append("appearance latencies, ms, sorted: " + " ".join(f"{t * 1e3:.0f}" for t in sorted(appear)))
        notes.append(f"appearances: {len(appear)} opened, {len(timeouts)} never opened within 5 s "
                     f"{timeouts or ''}; "
                     f"firewall diffs {after_c.get('diffs', 0) - before.get('diffs', 0)}; "
                     f"devices refused (cap) {status(gw)['devices_refused_cap']}; "
                     f"{log.blocked()}")

        # 4. first connections
        log.mark()
        held_before = status(gw)["counters"].get("dns_held_packets", 0)
        fc, fc_failed = first_connections(lab, connector, gw, per_round, rounds)
        held = status(gw)["counters"].get("dns_held_packets", 0) - held_before
        notes.append(f"first connections: {held} of {per_round * rounds * 4} first SYNs held; "
                     f"{log.blocked()}")
        notes.append(f"first connections that failed (5 s timeout): {fc_failed or 'none'}")

        # 5. relay, idle and under churn, in rounds
        log.mark()
        relay: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        churn_before = status(gw)["counters"]
        for _ in range(relay_rounds):
            for churn in (False, True):
                relay[churn].append(relay_round(lab, gw, sender, far, near, relay_seconds, churn))
        churn_after = status(gw)
        counters = churn_after["counters"]
        notes.append(f"churn: {sum(r['churn']['added'] for r in relay[True])} devices came and went "
                     f"({sum(r['churn']['errors'] for r in relay[True])} netlink errors); daemon counted "
                     f"{counters.get('device_changes', 0) - churn_before.get('device_changes', 0)} device changes, "
                     f"{counters.get('diffs', 0) - churn_before.get('diffs', 0)} firewall diffs (in the kernel "
                     f"{(counters.get('pass_kernel_us', 0) - churn_before.get('pass_kernel_us', 0)) / 1e3:.0f} ms, "
                     f"planning {(counters.get('pass_plan_us', 0) - churn_before.get('pass_plan_us', 0)) / 1e3:.0f}"
                     f" ms, idle rounds included), "
                     f"{counters.get('apply_errors', 0)} apply errors in all, "
                     f"{churn_after['devices_refused_cap']} devices refused (cap) in all; "
                     f"{log.blocked()}")
        final = churn_after
    load_after = os.getloadavg()

    # --- the table --------------------------------------------------------------------------
    summary = json.loads(cli_out)
    raw_ms = [t * 1e3 for t, _ in raw]
    cli_ms = [t * 1e3 for t in cli_times]
    app_ms = [t * 1e3 for t in appear]
    report.append("| # | measure | target | result |")
    report.append("|---|---|---|---|")
    for kind in dict.fromkeys(k for k, _, _ in hups):
        took = [t for k, t, _ in hups if k == kind]
        worst_status = max(s for k, _, s in hups if k == kind) * 1e3
        report.append(f"| 1 | SIGHUP to applied, {kind} ({len(took)}x): each | <= 2 s | "
                      f"{', '.join(f'{t:.2f}' for t in took)} s (slowest status answer meanwhile "
                      f"{worst_status:.0f} ms) |")
    report.append(f"| 2 | device appearing to its pinholes live ({len(app_ms)}): p50 / p99 / max | "
                  f"p99 <= 100 ms | {pct(app_ms, .5):.0f} / {pct(app_ms, .99):.0f} / {max(app_ms, default=0):.0f} ms"
                  f"{f' ({len(timeouts)} never opened)' if timeouts else ''} |")
    report.append(f"| 3 | `loxgw status --json` (CLI process, {len(cli_ms)}x): p50 / max | <= 50 ms | "
                  f"{pct(cli_ms, .5):.0f} / {max(cli_ms):.0f} ms |")
    report.append(f"| 3 | status over the socket, daemon's part ({len(raw_ms)}x): p50 / max | <= 50 ms | "
                  f"{pct(raw_ms, .5):.1f} / {max(raw_ms):.1f} ms |")
    report.append(f"| 3 | status summary size | <= 100 KB | {len(cli_out.encode()) / 1000:.1f} KB "
                  f"({len(summary['devices'])} devices, {summary['dns_entries_total']} DNS entries) |")
    report.append(f"| 3 | `status full` (for comparison) | - | {full_time * 1e3:.0f} ms, "
                  f"{len(full_body) / 1e6:.2f} MB |")
    base = fc["no status polling"]
    for name, times in fc.items():
        report.append(f"| 4 | first connection, {name} ({len(times)}): p50 / p99 / max | "
                      f"{'baseline' if times is base else 'p99 unchanged' if 'not a target' not in name else '-'} | "
                      f"{pct(times, .5):.2f} / {pct(times, .99):.2f} / {max(times):.2f} ms |")
    for churn, label in ((False, "idle"), (True, "20 devices come and go per second")):
        far_all = [t for r in relay[churn] for t in r["far"]]
        near_all = [t for r in relay[churn] for t in r["near"]]
        sent = sum(r["sent"] for r in relay[churn])
        per_round_p99 = ", ".join(f"{pct(r['far'], .99):.0f}" for r in relay[churn])
        cpu = ", ".join(f"{r['cpu']:.0%}" for r in relay[churn])
        report.append(f"| 5 | relay at 1,000/s, {label}: p50 / p99 (added p99) | "
                      f"{'baseline' if not churn else 'p99 unchanged'} | {pct(far_all, .5):.0f} / "
                      f"{pct(far_all, .99):.0f} µs (+{pct(far_all, .99) - pct(near_all, .99):.0f}); "
                      f"per round p99 {per_round_p99}; {sent - len(far_all)} of {sent} lost; daemon CPU "
                      f"{cpu} of a core |")
    print("\n".join(report))
    print()
    for note in notes:
        print(f"- {note}")
    print(f"- daemon at the end: {len(final['devices'])} devices, {final['dns_entries_total']} DNS entries, "
          f"ruleset applies {final['ruleset_applies']}, last error {final['last_error']}")
    print(f"- load average before / after: {' '.join(f'{x:.2f}' for x in load_before)} / "
          f"{' '.join(f'{x:.2f}' for x in load_after)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
