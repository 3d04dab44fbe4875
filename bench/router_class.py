"""loxgw on a router's CPU budget: the lab daemon under a quota of a tenth of one core.

Run as root: `.venv/bin/python -m bench.router_class [--idle SECONDS] [--quota PERCENT]`
(`--quota 0` runs the same measurements without a quota, for the figures beside them;
`--relay-seconds`, `--names`, `--starts`, `--rounds` shorten a try; `--startup-only` takes
the start-up figures alone; `--cli-runs N` also times N `loxgw status` commands, whole
processes, outside the quota; `--python /usr/bin/python3` runs the daemon as installed, without
the dev venv's editable-install finder; `--dns-entries N` starts it with N live DNS entries
restored from a state file, expiring one after another over 5-600 s, and `--idle-only` then
measures idle CPU alone: what a full ledger costs while nobody asks anything; `--devices N` has
N Loxone devices in the devices zone, as permanent neighbour entries, before idle CPU is measured).

A router's CPU is 10-20 times slower than this machine's cores, and loxgw
shares it with everything else the router runs. The daemon therefore runs in
a CPU cgroup of its own, entered before exec (so start-up pays too, and so
does every `nft` it runs: children stay in the group): cgroup v1
`cpu.cfs_quota_us` 10,000 per `cpu.cfs_period_us` 100,000, or cgroup v2
`cpu.max` "10000 100000" where /sys/fs/cgroup/cgroup.controllers exists. The
lab's clients, dnsmasq and the pinhole watcher run outside the quota.

The daemon's config is the lab's (tests.lab.loxgwproc: standalone firewall, a
devices zone and a clients zone, DNS path on) with log level info, no loop
guard (its probes, 200 a second, take about 5 % of a core: half the quota), and a
relay between the two zones whose per-source limit lets one sender's 50/s
through (the default is 20/s).

Measured, in this order:
1. Start-up to ready: exec of `loxgw run` to its status socket (the last thing
   it opens, after the firewall is applied and every service started), and
   to its "running" log line; then SIGTERM to exit. `--starts` times.
2. DNS first connection at 50 answers/s: a device resolves a cloud name
   through the router's dnsmasq and connects to the address at once (its SYN
   is held until loxgw has read the answer's copy, unless the grant is
   already in), then connects again (on the grant); one name every 20 ms.
   "Added" is per name the first connection's time minus the second's.
3. Relay at 50 broadcasts/s: bench.relay_latency's sender and receivers;
   added latency of the relayed copy against the original on its own segment.
4. A 20-device change: 20 neighbour entries with Loxone MACs appear in the
   router's table in one batch (as if 20 devices sent ARP at once); time until
   each one's pinholes are in: its address in its product's set `dev_<product>4`,
   which the rules of the product's ports match, or (a product not identified
   yet, as these are) its web ports in `pin_port4` (core.firewall), read from
   nftables' netlink notifications (no polling). `--rounds` rounds, new devices
   each time.
5. Idle CPU: the daemon's CPU seconds (every thread's run time, and its
   reaped children's) over an idle window of `--idle` seconds, with the
   cgroup's throttling counters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import site
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from bench import relay_latency
from tests.lab import loxgwproc
from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import IOT_GW, Lab

PERIOD_US = 100_000
CONFIG = """
config relay
\tlist zone 'iot'
\tlist zone 'lan'
\toption rate_limit '100'
"""
MAIN = "\toption log_level 'info'\n"
CONNECT_NET = "198.19"  # first-connection addresses: local on the upstream through one route
CONNECT_PORT = 30000
CHANGE_BASE = 100  # 192.168.20.100-...: the devices that appear, 20 per round
IDLE_DEVICES_BASE = 30  # 192.168.20.30-...: --devices (up to 70 beside the change rounds, 200 with --idle-only)

# argv: count, rate. Resolve, connect at once, connect again; one name every 1/rate seconds.
FIRST_CONNECT = r"""
import json, socket, sys, time
count, rate = int(sys.argv[1]), float(sys.argv[2])
resolve, first, again, failed = [], [], [], 0
start = time.monotonic()
for i in range(count):
    wait = start + i / rate - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    t = time.perf_counter(); addr = socket.gethostbyname(f"f{i}.dyndns.loxonecloud.com")
    resolve.append(time.perf_counter() - t)
    for times in (first, again):
        c = socket.socket(); c.settimeout(5)
        t = time.perf_counter()
        try:
            c.connect((addr, 30000))
        except OSError:
            failed += 1
        times.append(time.perf_counter() - t)
        c.close()
print(json.dumps({"resolve": resolve, "first": first, "again": again, "failed": failed}))
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


# --- the CPU quota --------------------------------------------------------------------------------


class CpuQuota:
    """A child CPU cgroup limited to `percent` of one core (cgroup v2 cpu.max, else v1 CFS quota)."""

    def __init__(self, percent: float) -> None:
        self.percent = percent
        name = f"loxgw-bench-{os.getpid()}"
        self.v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        self.path = f"/sys/fs/cgroup/{name}" if self.v2 else f"/sys/fs/cgroup/cpu/{name}"

    def __enter__(self) -> CpuQuota:
        if not self.percent:
            return self
        os.mkdir(self.path)
        quota = int(PERIOD_US * self.percent / 100)
        if self.v2:
            with open("/sys/fs/cgroup/cgroup.subtree_control", encoding="ascii") as handle:
                enabled = handle.read().split()
            if "cpu" not in enabled:
                self._write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu")
            self._write(f"{self.path}/cpu.max", f"{quota} {PERIOD_US}")
        else:
            self._write(f"{self.path}/cpu.cfs_period_us", str(PERIOD_US))
            self._write(f"{self.path}/cpu.cfs_quota_us", str(quota))
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.percent:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the lab killed the daemon; its exit may take a moment
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)
        print(f"(could not remove {self.path})", file=sys.stderr)

    @staticmethod
    def _write(path: str, value: str) -> None:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(value)

    def enter(self) -> None:
        """preexec_fn: the forked child joins the group before it execs."""
        if self.percent:
            self._write(f"{self.path}/cgroup.procs", "0")

    def throttling(self) -> dict[str, int]:
        """The group's cpu.stat (periods, throttled periods, throttled time)."""
        if not self.percent:
            return {}
        with open(f"{self.path}/cpu.stat", encoding="ascii") as handle:
            return {k: int(v) for k, v in (line.split() for line in handle if line.strip())}


class QuotaLoxgw(Loxgw):
    """The lab daemon, started inside the quota; `started` and `ready` timed from exec."""

    def __init__(self, lab: Lab, quota: CpuQuota, python: str = sys.executable) -> None:
        super().__init__(lab, extra=CONFIG, main_extra=MAIN)
        self.quota = quota
        self.python = python

    def start(self) -> QuotaLoxgw:
        self.start_timed()
        return self

    def start_timed(self) -> tuple[float, float, float]:
        """Seconds from exec to the status socket and to the "running" log line; CPU seconds by then."""
        for stale in (self.log_path, self.socket):  # the last run's
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        env = {k: v for k, v in os.environ.items() if k != "LOXGW_LOOP_GUARD_MS"}
        # Another interpreter (--python) finds loxgw's dependencies in this one's site-packages, on its
        # path as plain directories: no .pth file of theirs runs (the editable install's finder).
        dependencies = [] if self.python == sys.executable else site.getsitepackages()[:1]
        env.update(PYTHONPATH=":".join([loxgwproc.REPO, *dependencies]), PYTHONUNBUFFERED="1")
        started = time.monotonic()
        self.proc = self.lab.popen(self.ns, [self.python, "-m", "loxgw", "-c", self.config_path, "run"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=self.quota.enter)
        socket_at = running_at = None
        while socket_at is None or running_at is None:
            now = time.monotonic()
            if now - started > 60:
                raise TimeoutError(f"loxgw not ready after 60 s:\n{self.log()}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"loxgw exited with {self.proc.returncode}:\n{self.log()}")
            if socket_at is None and os.path.exists(self.socket):
                socket_at = now
            if running_at is None and "running: firewall" in self.log():
                running_at = now
            time.sleep(0.002)
        return socket_at - started, running_at - started, cpu_seconds(self.proc.pid)

    def stop_timed(self) -> float:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        return time.monotonic() - started


def write_dns_entries(gw: Loxgw, count: int) -> None:
    """A state file of `count` live DNS entries for 250 devices of the devices zone, as a stop saves them
    (daemon.dnsentries): restored at start-up, expiring evenly over 5-600 s, so some expire every second."""
    if not count:
        return
    from loxgw.core import catalog, dns
    from loxgw.daemon import dnsentries

    profiles = dns.all_profiles(catalog.load())
    records = [{"device": f"192.168.20.{10 + i % 250}", "address": f"203.0.{113 - (i >> 16)}.{(i >> 8) & 255}"
                if i >> 16 else f"198.51.{(i >> 8) & 255}.{i & 255}",
                "proto": profiles[i % len(profiles)].proto,
                "ports": [str(r) for r in profiles[i % len(profiles)].ports],
                "name": f"c{i}.dyndns.loxonecloud.com", "expires_in": 5 + i * 595 // count}
               for i in range(count)]
    dnsentries.write_state(os.path.splitext(gw.socket)[0] + "-dns-entries.json", records, time.time())


def cpu_seconds(pid: int) -> float:
    """Every thread's run time so far (schedstat, ns) and the reaped children's CPU (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    children = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return relay_latency.cpu_ns(pid) / 1e9 + children


# --- the measurements -----------------------------------------------------------------------------


@dataclass
class Results:
    starts: list[tuple[float, float, float, float]] = field(default_factory=list)  # socket, running, CPU, stop
    connects: dict[str, list[float]] = field(default_factory=dict)
    connect_failed: int = 0
    relay: list[relay_latency.Run] = field(default_factory=list)
    changes: list[list[float]] = field(default_factory=list)
    change_missing: int = 0
    idle_seconds: float = 0.0
    idle_cpu: float = 0.0
    dns_entries: int = 0  # live DNS entries when idle CPU was measured (--dns-entries)
    devices: int = 0  # Loxone devices in the inventory when idle CPU was measured (--devices)
    throttled: dict[str, int] = field(default_factory=dict)
    cli: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # form -> wall, CPU seconds


# `loxgw status` as the console script pip installs runs it, with this venv's site (its editable
# install's .pth hook costs ~15 ms a process) and without (-S: near a router's Python, whose site
# has no such hook).
CONSOLE_SCRIPT = "import sys; from loxgw.cli import main; sys.exit(main())"
# Interpreter and flags per form: the dev venv (its site runs the editable install's finder), the same
# without site, and the system python3 with its site as on a router, where loxgw is a plain package.
CLI_FORMS = {"python (venv site)": [sys.executable], "python -S": [sys.executable, "-S"],
             "system python3 (site)": ["/usr/bin/python3"]}


def status_cli_times(gw: QuotaLoxgw, runs: int) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU seconds (wait4) of `runs` status commands per form, interleaved, against the running daemon."""
    env = dict(os.environ, PYTHONPATH=loxgwproc.REPO)
    found: dict[str, tuple[list[float], list[float]]] = {form: ([], []) for form in CLI_FORMS}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for _ in range(runs):
            for form, interpreter in CLI_FORMS.items():
                argv = [*interpreter, "-c", CONSOLE_SCRIPT, "-c", gw.config_path, "status"]
                started = time.perf_counter()
                pid = os.posix_spawn(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
                _, code, usage = os.wait4(pid, 0)
                found[form][0].append(time.perf_counter() - started)
                found[form][1].append(usage.ru_utime + usage.ru_stime)
                assert os.waitstatus_to_exitcode(code) == 0, form
    finally:
        os.close(devnull)
    return found


def connect_records(names: int) -> dict[str, str]:
    """f{i}.dyndns.loxonecloud.com -> an address of its own in CONNECT_NET (local on the upstream)."""
    return {f"f{i}.dyndns.loxonecloud.com": f"{CONNECT_NET}.{i // 250}.{i % 250 + 1}" for i in range(names)}


# argv: ingress interface, egress interface, TCP port. Prints "ready"; until its stdin closes, takes the
# kernel's capture time (SO_TIMESTAMPNS) of every IPv4 SYN to the port as the router receives it and as
# it sends it on; then prints, in ms, the router's forwarding time of each address's first SYN and of its
# second: what a hold adds, without the client's, resolver's and server's scheduling around it.
SYN_TIMES = r"""
import json, select, socket, struct, sys
from loxgw.core.bpf import ACCEPT, AND_K, JEQ_K, LD_B_ABS, LD_H_ABS, LD_H_IND, LDX_B_MSH, RET_K
from loxgw.edges.socketfilter import attach
ingress, egress, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
LD_B_IND, PROTOCOL = 0x50, 0xFFFFF000  # A = byte at X + k; skb->protocol
# In the kernel: IPv4 TCP to the port with SYN and no ACK; the sniffer wakes for nothing else.
SYNS = [(LD_H_ABS, 0, 0, PROTOCOL), (JEQ_K, 0, 9, 0x0800), (LD_B_ABS, 0, 0, 9), (JEQ_K, 0, 7, 6),
        (LDX_B_MSH, 0, 0, 0), (LD_H_IND, 0, 0, 2), (JEQ_K, 0, 4, port), (LD_B_IND, 0, 0, 13),
        (AND_K, 0, 0, 0x12), (JEQ_K, 0, 1, 0x02), (RET_K, 0, 0, ACCEPT), (RET_K, 0, 0, 0)]
socks = {}
for name in (ingress, egress):
    # ETH_P_ALL: a socket bound to one protocol never sees what the host sends (dev_queue_xmit_nit), and
    # one bound to ETH_P_IP on the devices' bridge made the kernel drop held packets (nf_queue) here.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
    attach(s, SYNS)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20); s.setsockopt(socket.SOL_SOCKET, 35, 1)
    s.bind((name, 3)); socks[s.fileno()] = (name, s)
seen = {ingress: {}, egress: {}}
print("ready", flush=True)
poller = select.poll()
for fd in (*socks, 0):
    poller.register(fd, select.POLLIN)
running = True
while running:
    for fd, _ in poller.poll():
        if fd == 0:
            running = False
            continue
        name, s = socks[fd]
        data, ancillary, _, address = s.recvmsg(128, 64)
        if address[1] != 0x0800 or len(data) < 40 or data[0] >> 4 != 4 or data[9] != 6:
            continue
        ihl = (data[0] & 15) * 4
        sport, dport = struct.unpack_from("!HH", data, ihl)
        if dport != port or data[ihl + 13] & 0x12 != 0x02:
            continue
        sec, nsec = struct.unpack_from("=qq", ancillary[0][2])
        seen[name].setdefault((data[12:16], data[16:20], sport), sec + nsec / 1e9)
by_address = {}
for key in sorted(seen[ingress], key=seen[ingress].get):
    if key in seen[egress]:
        by_address.setdefault(key[1], []).append((seen[egress][key] - seen[ingress][key]) * 1e3)
print(json.dumps({"first": [t[0] for t in by_address.values()],
                  "again": [t[1] for t in by_address.values() if len(t) > 1]}))
"""


def first_connections(lab: Lab, ns: str, names: int, rate: float = 50,
                      ingress: str = "br-iot") -> tuple[dict[str, list[float]], int]:
    """FIRST_CONNECT's times in ms (and the first's added time over the second's), failed connections;
    "router first"/"router again": the router's forwarding time of each SYN (SYN_TIMES), `ingress` to wan."""
    sniffer = lab.popen(lab.ns_router, [sys.executable, "-c", SYN_TIMES, ingress, "wan", str(CONNECT_PORT)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert sniffer.stdin is not None and sniffer.stdout is not None
    assert sniffer.stdout.readline().strip() == b"ready"
    try:
        out = lab.run(ns, sys.executable, "-c", FIRST_CONNECT, str(names), str(rate), timeout=names + 120).stdout
    except BaseException:
        sniffer.kill()
        sniffer.wait()
        raise
    sniffer.stdin.close()
    forwarding = json.loads(sniffer.stdout.read())
    sniffer.wait()
    result = json.loads(out)
    times = {k: [t * 1e3 for t in result[k]] for k in ("resolve", "first", "again")}
    times["added"] = [f - a for f, a in zip(times["first"], times["again"], strict=True)]
    times["resolve+first"] = [r + f for r, f in zip(times["resolve"], times["first"], strict=True)]
    times["router first"], times["router again"] = forwarding["first"], forwarding["again"]
    return times, int(result["failed"])


# argv: the addresses to watch. Prints "ready", then "ADDRESS MONOTONIC" when an element with that
# address is added to a dev_<product>4 set or to pin_port4 (nftables' netlink notifications: `nft
# monitor` 1.0.6 crashed on the concatenated interval sets that held pinholes before).
WATCH_PINHOLES = r"""
import re, socket, struct, sys, time
wanted = {socket.inet_aton(a): a for a in sys.argv[1:]}
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((0, 0)); s.setsockopt(270, 1, 7)  # SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES
print("ready", flush=True)
while wanted:
    data = s.recv(1 << 20); now = time.monotonic(); at = 0
    while at + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, at)
        message = data[at : at + length]
        if kind == (10 << 8 | 12) and re.search(rb"(dev_[a-z]+|pin_port)4\0", message):  # NFT_MSG_NEWSETELEM
            for key in [k for k in wanted if k in message]:
                print(wanted.pop(key), now, flush=True)
        at += max(16, (length + 3) & ~3)
"""


def device_change(lab: Lab, round_: int, count: int = 20) -> tuple[list[float], int]:
    """`count` Loxone neighbours at once; seconds until each one's pinholes were added, and how many never."""
    ips = [f"192.168.20.{CHANGE_BASE + round_ * count + i}" for i in range(count)]
    batch = "".join(f"neigh replace {ip} lladdr 50:4f:94:cc:{round_:02x}:{i:02x} dev br-iot nud reachable\n"
                    for i, ip in enumerate(ips))
    watch = lab.popen(lab.ns_router, [sys.executable, "-c", WATCH_PINHOLES, *ips], stdout=subprocess.PIPE)
    assert watch.stdout is not None and watch.stdout.readline().strip() == b"ready"
    seen: dict[str, float] = {}
    started = time.monotonic()
    subprocess.run(["ip", "netns", "exec", lab.ns_router, "ip", "-batch", "-"], input=batch.encode(), check=True)
    timer = threading.Timer(30, watch.kill)  # devices whose pinholes never came
    timer.start()
    for line in iter(watch.stdout.readline, b""):
        ip, when = line.split()
        seen[ip.decode()] = float(when)
    timer.cancel()
    watch.wait()
    return [seen[ip] - started for ip in ips if ip in seen], count - len(seen)


def idle_cpu(pid: int, seconds: float) -> float:
    relay_latency.settle(pid)
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def measure(args: argparse.Namespace, quota: CpuQuota) -> Results:
    results = Results()
    connect_names = connect_records(args.names)
    with Lab(dns_only_records=connect_names) as lab:
        lab.run(lab.ns_wan, "ip", "route", "add", "local", f"{CONNECT_NET}.0.0/16", "dev", "lo")
        sender, near = lab.add_host("sender", "lan", 20), lab.add_host("near", "lan", 21)
        far = lab.add_host("far", "iot", 10)
        ms = lab.add_host("ms", "iot", 11, mac="50:4f:94:a0:00:01")
        listener = lab.popen(lab.ns_wan, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", "0.0.0.0",
                                          str(CONNECT_PORT)], stdout=subprocess.PIPE)
        assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
        gw = QuotaLoxgw(lab, quota, args.python)
        for n in range(args.starts):
            write_dns_entries(gw, args.dns_entries)
            timed = gw.start_timed()
            if n == args.starts - 1 and args.cli_runs:
                assert gw.proc is not None
                relay_latency.settle(gw.proc.pid)  # its start-up's work done: the answer is what is timed
                results.cli = status_cli_times(gw, args.cli_runs)
            last = n == args.starts - 1 and not args.startup_only
            results.starts.append((*timed, float("nan") if last else gw.stop_timed()))
        if args.startup_only:
            return results
        assert gw.proc is not None
        pid = gw.proc.pid
        if args.dns_entries:
            results.dns_entries = gw.status()["dns_entries_total"]
        if not args.idle_only:
            lab.run(ms.ns, "ping", "-c1", "-W1", IOT_GW)
            relay_latency.settle(pid)
            results.connects, results.connect_failed = first_connections(lab, ms.ns, args.names)
            for n in range(args.rounds):
                results.relay.append(relay_latency.one_run(lab, pid, sender, far, near, 50, n, 0.0,
                                                           args.relay_seconds))
            for n in range(args.rounds):
                relay_latency.settle(pid)
                found, missing = device_change(lab, n)
                results.changes.append(found)
                results.change_missing += missing
        if args.devices:
            batch = "".join(f"neigh replace 192.168.20.{IDLE_DEVICES_BASE + i} lladdr 50:4f:94:dd:00:{i:02x} "
                            "dev br-iot nud permanent\n" for i in range(args.devices))
            subprocess.run(["ip", "netns", "exec", lab.ns_router, "ip", "-batch", "-"], input=batch.encode(),
                           check=True)
            time.sleep(3)  # detected, pinholes in
            results.devices = sum(1 for d in gw.status()["devices"] if d.get("product"))
        before = quota.throttling()
        results.idle_seconds = args.idle
        results.idle_cpu = idle_cpu(pid, args.idle)
        after = quota.throttling()
        results.throttled = {k: after[k] - before.get(k, 0) for k in after}
    return results


def report(args: argparse.Namespace, results: Results, load: tuple[str, str]) -> None:
    label = f"{args.quota:g} % of one core" if args.quota else "no quota"
    print(f"## {label} (load average {load[0]} -> {load[1]})\n")
    print("| measure | target under the quota | result |")
    print("|---|---|---|")
    sock = [s for s, _, _, _ in results.starts]
    running = [r for _, r, _, _ in results.starts]
    cpu = [c for _, _, c, _ in results.starts]
    stops = [t for _, _, _, t in results.starts if t == t]
    print(f"| start-up: exec to status socket ({len(sock)}x) | <= 3 s | "
          f"{', '.join(f'{t:.2f}' for t in sock)} s |")
    print(f"| start-up: exec to \"running\" log line | - | {', '.join(f'{t:.2f}' for t in running)} s |")
    print(f"| start-up: CPU by then (the daemon's threads and its reaped children) | - | "
          f"{', '.join(f'{t:.2f}' for t in cpu)} s |")
    print(f"| stop: SIGTERM to exit ({len(stops)}x) | - | {', '.join(f'{t:.2f}' for t in stops)} s |")
    for form, (wall, used) in results.cli.items():
        print(f"| `loxgw status`, {form}, whole process ({len(wall)}x): wall p50 / min; CPU p50 | <= 40 ms | "
              f"{pct(wall, .5) * 1e3:.1f} / {min(wall) * 1e3:.1f} ms; {pct(used, .5) * 1e3:.1f} ms |")
    if args.startup_only:
        return
    if not args.idle_only:
        report_busy(results)
    share = results.idle_cpu / results.idle_seconds
    entries = f" with {results.dns_entries} DNS entries expiring" if args.dns_entries else ""
    entries += f", {results.devices} Loxone devices in the inventory" if args.devices else ""
    print(f"| idle CPU over {results.idle_seconds:.0f} s{entries} | - | {results.idle_cpu:.3f} s "
          f"({share * 1e3:.2f} ms per second, {share * 100:.2f} % of one core) |")
    if results.throttled:
        t = results.throttled
        print(f"| ... throttled while idle | - | {t.get('nr_throttled', 0)} of {t.get('nr_periods', 0)} periods "
              f"({t.get('throttled_time', t.get('throttled_usec', 0))} "
              f"{'µs' if 'throttled_usec' in t else 'ns'}) |")


def report_busy(results: Results) -> None:
    c = results.connects
    print(f"| DNS first connection at 50 names/s ({len(c['first'])}): added (first - again, per name) "
          f"p50 / p99 | p99 <= 20 ms | {pct(c['added'], .5):.2f} / {pct(c['added'], .99):.2f} ms |")
    for kind, what in (("first", "first connection, right after the answer"),
                       ("again", "second connection, on the grant"), ("resolve", "the resolve itself"),
                       ("router first", "the router's forwarding of the first SYN (held)"),
                       ("router again", "the router's forwarding of the second SYN")):
        print(f"| ... {what}: p50 / p99 / max | - | {pct(c[kind], .5):.2f} / {pct(c[kind], .99):.2f} / "
              f"{max(c[kind]):.2f} ms |")
    if results.connect_failed:
        print(f"| ... connections that failed (5 s timeout) | 0 | {results.connect_failed} |")
    relay = results.relay
    print(f"| relay at 50/s, {relay[0].sent} broadcasts per round: added p50 / p99 (per round) | p99 <= 20 ms | "
          + "; ".join(f"{r.added_p50 / 1e3:.2f} / {r.added_p99 / 1e3:.2f} ms" for r in relay)
          + f" ({sum(r.lost for r in relay)} lost) |")
    print("| ... absolute p99 (per round) | - | " + ", ".join(f"{r.p99 / 1e3:.2f}" for r in relay) + " ms |")
    changes = [t * 1e3 for found in results.changes for t in found]
    print("| 20 devices appear at once: until the last one's pinholes are in (per round) | - | "
          + ", ".join(f"{max(found, default=float('nan')) * 1e3:.0f}" for found in results.changes) + " ms |")
    print(f"| ... per device: p50 / max ({len(changes)}) | - | {pct(changes, .5):.0f} / "
          f"{max(changes, default=float('nan')):.0f} ms"
          + (f" ({results.change_missing} never within 30 s)" if results.change_missing else "") + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quota", type=float, default=10.0, help="percent of one core (0: no quota)")
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--names", type=int, default=500, help="first connections, at 50/s")
    parser.add_argument("--relay-seconds", type=float, default=20.0, help="per round, at 50/s")
    parser.add_argument("--rounds", type=int, default=3, help="relay and device-change rounds")
    parser.add_argument("--startup-only", action="store_true", help="the start-up and stop figures alone")
    parser.add_argument("--dns-entries", type=int, default=0, help="live DNS entries restored at start")
    parser.add_argument("--devices", type=int, default=0, help="Loxone devices present while idle (at most 200)")
    parser.add_argument("--idle-only", action="store_true", help="after start-up, idle CPU alone")
    parser.add_argument("--cli-runs", type=int, default=0, help="time this many `loxgw status` per form")
    parser.add_argument("--python", default=sys.executable,
                        help="the daemon's interpreter (e.g. /usr/bin/python3: loxgw as installed, "
                             "without the dev venv's editable-install finder)")
    args = parser.parse_args(argv)
    if args.devices > (200 if args.idle_only else CHANGE_BASE - IDLE_DEVICES_BASE):
        parser.error("--devices: at most 200 with --idle-only, 70 without")
    load_before = f"{os.getloadavg()[0]:.2f}"
    with CpuQuota(args.quota) as quota:
        results = measure(args, quota)
    report(args, results, (load_before, f"{os.getloadavg()[0]:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
