"""Issue 17: the relay's per-packet copy in the kernel (nftables netdev) against the Python relay.

Run as root: `.venv/bin/python -m bench.relay_kernel [--repeat N] [--rates R,...] [--modes none,floor,kernel,python]`.

Builds its own namespaces (`rk-PID-*`: a router with bridges br-lan and br-iot,
a sender and receivers `near` and `near2` in lan, a receiver `far` in iot) and
removes them at the end. Modes, interleaved per repeat:

- none: no relay (the baseline for CPU);
- floor: no relay, `near2` stands in for `far`: what "added" reads for a copy
  that costs nothing, i.e. the two receivers' waits for a core;
- kernel: the rules loxgw installs (core.relaykernel, core.ruleset's
  relay_windows chain): a netdev ingress chain per bridge
  admits a discovery broadcast (the core's checks and both rate limits),
  `dup`s it to every other bridge with a meta mark, and that bridge's
  netdev egress chain rewrites the duplicate into the core's copy (source
  MAC, broadcast address, DSCP mark, IP id = tag, DF; checksums fixed up by
  the kernel); an inet input chain opens the answer windows;
- python: the current relay (core.relay + edges.relaynet, as the daemon's
  reader threads run it) in the router namespace.

Before measuring, one copy per payload kind is captured in `far` and compared
byte for byte with relaywire.CopyTemplate's frame. The sender in lan has
transmit checksum offload off, as a real NIC's frames arrive: finished
checksums the kernel must fix up, not partial ones.

"added" is the method of bench.relay_latency (per datagram, the copy's
arrival in `far` minus the original's in `near`, as the receiving processes
read them), "kernel added" the same from the sockets' kernel receive
timestamps (SO_TIMESTAMPNS), without the receivers' wait for a core. CPU per
10,000 copies: the sender's CPU (its send() runs the bridge, the netdev hooks
and the copy's delivery in softirq context), ksoftirqd's and the Python
relay's, less the median of the same in mode none.
"""

from __future__ import annotations

import argparse
import glob
import ipaddress
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.relay_latency import RECEIVE, SEND, cpu_ns, pct
from loxgw.core import relaykernel, relaywire
from loxgw.core.catalog import PortRange
from loxgw.core.firewall import RELAY_ANSWERS, RELAY_ORIGINAL_MARK
from loxgw.core.relay import ANSWER_PORT, ANSWER_WINDOW, SEARCH_PORT, RelayInterface

SECONDS = {1000: 5.0}
DEFAULT_SECONDS = 2.0

PYTHON_RELAY = r"""
import asyncio, sys, threading, time
from loxgw.core.catalog import PortRange
from loxgw.core.relay import Relay, RelayPolicy, RateLimiter
from loxgw.edges.relaynet import RelaySockets
core = Relay(RelayPolicy((PortRange(7070, 7077), PortRange(7079, 7079)), frozenset({"br-lan", "br-iot"})),
             RateLimiter(100000, 1000000))
def on_core():
    while core.next_event() is not None:  # answer windows: the daemon writes them every 5 s per asker
        pass
async def main():
    sockets = RelaySockets(core, {"br-lan": "clients", "br-iot": "devices"}, threading.Lock(), on_core, time.monotonic)
    await sockets.start(asyncio.get_running_loop())
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""

CAPTURE = r"""
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800)); s.bind(("eth0", 0)); s.settimeout(1)
print("ready", flush=True)
out = []
try:
    while True:
        frame = s.recv(2000)
        if frame[23] == 17 and frame[36:38] == b"\x1b\x9e": out.append(frame.hex())
except OSError:
    pass
print(" ".join(out))
"""

PROBE = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 7); s.bind(("", 40000))
s.sendto(b"LoxLIVE?", ("255.255.255.255", 7070)); s.sendto(b"odd", ("192.168.10.255", 7070))
s.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: a datagram without a UDP checksum
s.sendto(b"no checksum", ("255.255.255.255", 7070))
"""

TX_CHECKSUM_OFF = r"""
import ctypes, fcntl, socket, struct
value = ctypes.create_string_buffer(struct.pack("II", 0x17, 0))  # ETHTOOL_STXCSUM, off
request = struct.pack("16sP", b"eth0", ctypes.addressof(value)) + bytes(16)
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, request)  # SIOCETHTOOL
"""


@dataclass(frozen=True)
class Segment:
    """A relayed bridge as the rules need it."""

    name: str
    address: str
    broadcast: str
    mac: str
    role: str  # "clients" or "devices"

    @property
    def tag(self) -> int:
        """The copies' IP id: the low 16 bits of the router's address here (relaywire.CopyTemplate)."""
        return int.from_bytes(socket.inet_aton(self.address), "big") & 0xFFFF


def render(segments: list[Segment], table: str, per_source: int, global_rate: int) -> str:
    """What loxgw installs for `segments`: core.relaykernel's netdev table `TABLE_relay` (copies) and, in a
    scratch table inet `table`, core.ruleset's relay_windows chain (answer windows)."""
    interfaces = [RelayInterface(seg.name, 0, ipaddress.IPv4Address(seg.address), ipaddress.IPv4Address(seg.broadcast),
                                 False, seg.role, bytes.fromhex(seg.mac.replace(":", ""))) for seg in segments]
    ports = (PortRange(7070, 7077), PortRange(7079, 7079))
    copies = relaykernel.render(table, interfaces, ports, per_source, global_rate).script
    pairs = [(a.name, b.name) for a in segments if a.role == "clients" for b in segments if b.role == "devices"]
    windows = relaykernel.answer_window_rules(pairs, ANSWER_WINDOW, SEARCH_PORT, ANSWER_PORT, RELAY_ANSWERS)
    mark = RELAY_ORIGINAL_MARK
    lines = [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{",
             f"\tset {RELAY_ANSWERS} {{ type ifname . ipv4_addr . inet_service; flags timeout; }}",
             "\tchain relay_windows {", "\t\ttype filter hook input priority filter - 10; policy accept;",
             f"\t\tmeta mark & {mark:#010x} == 0 return", f"\t\tmeta mark set meta mark & {~mark & 0xFFFFFFFF:#010x}",
             *(f"\t\t{rule}" for rule in windows), "\t}", "}"]
    return copies + "\n".join(lines) + "\n"


class Lab:
    """Namespaces rk-PID-{r,snd,near,near2,far}; the router's bridges br-lan and br-iot."""

    def __init__(self) -> None:
        self.prefix = f"rk-{os.getpid()}"
        self.names: list[str] = []
        self.relay: subprocess.Popen[bytes] | None = None

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def run(self, role: str, *cmd: str, stdin: str | None = None) -> str:
        proc = subprocess.run(["ip", "netns", "exec", self.ns(role), *cmd], input=stdin, capture_output=True,
                              text=True, timeout=60, check=False)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} in {self.ns(role)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def popen(self, role: str, *cmd: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns(role), *cmd], stdout=subprocess.PIPE,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def up(self) -> list[Segment]:
        for role in ("r", "snd", "near", "near2", "far"):
            subprocess.run(["ip", "netns", "add", self.ns(role)], check=True)
            self.names.append(self.ns(role))
            self.run(role, "ip", "link", "set", "lo", "up")
        # OpenWrt has no br_netfilter: bridged frames must not pass the inet hooks here either.
        self.run("r", "sh", "-c", "sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null; true")
        segments = []
        for vlan, net, role in (("lan", "192.168.10", "clients"), ("iot", "192.168.20", "devices")):
            bridge = f"br-{vlan}"
            self.run("r", "ip", "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
            self.run("r", "ip", "addr", "add", f"{net}.1/24", "brd", "+", "dev", bridge)
            self.run("r", "ip", "link", "set", bridge, "up")
            mac = json.loads(self.run("r", "ip", "-j", "link", "show", bridge))[0]["address"]
            segments.append(Segment(bridge, f"{net}.1", f"{net}.255", mac, role))
        for host, vlan, address in (("snd", "lan", "192.168.10.20"), ("near", "lan", "192.168.10.21"),
                                    ("near2", "lan", "192.168.10.22"), ("far", "iot", "192.168.20.10")):
            self.run("r", "ip", "link", "add", f"p-{host}", "type", "veth", "peer", "name", "eth0", "netns",
                     self.ns(host))
            self.run("r", "ip", "link", "set", f"p-{host}", "master", f"br-{vlan}", "up")
            self.run(host, "ip", "addr", "add", f"{address}/24", "brd", "+", "dev", "eth0")
            self.run(host, "ip", "link", "set", "eth0", "up")
            self.run(host, "ip", "route", "add", "default", "via", address.rsplit(".", 1)[0] + ".1")
        self.run("snd", sys.executable, "-c", TX_CHECKSUM_OFF)
        return segments

    def mode(self, mode: str, ruleset: str) -> None:
        """Switch the router to `mode`: no relay, the kernel's rules, or the Python relay."""
        if self.relay is not None:
            self.relay.terminate()
            self.relay.wait()
            self.relay = None
        self.run("r", "nft", "-f", "-", stdin=relaykernel.removal("rk") + "table inet rk\ndelete table inet rk\n")
        if mode == "kernel":
            self.run("r", "nft", "-f", "-", stdin=ruleset)
        elif mode == "python":
            self.relay = self.popen("r", sys.executable, "-c", PYTHON_RELAY)
            assert self.relay.stdout is not None and self.relay.stdout.readline().strip() == b"ready"

    def down(self) -> None:
        self.mode("none", "")
        for name in self.names:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def check_copies(lab: Lab, iot: Segment) -> list[str]:
    """Capture the kernel's copies of three probes in `far`; the differences from the core's frames."""
    capture = lab.popen("far", sys.executable, "-c", CAPTURE)
    assert capture.stdout is not None and capture.stdout.readline().strip() == b"ready"
    lab.run("snd", sys.executable, "-c", PROBE)
    frames = [bytes.fromhex(h) for h in capture.communicate(timeout=10)[0].decode().split()]
    address = int.from_bytes(socket.inet_aton(iot.address), "big")
    broadcast = int.from_bytes(socket.inet_aton(iot.broadcast), "big")
    template = relaywire.CopyTemplate(address, broadcast, bytes.fromhex(iot.mac.replace(":", "")))
    src = int.from_bytes(socket.inet_aton("192.168.10.20"), "big")
    problems = [] if len(frames) == 3 else [f"captured {len(frames)} copies of 3"]
    probes = ((b"LoxLIVE?", True), (b"odd", True), (b"no checksum", False))
    for (payload, checksum), frame in zip(probes, frames, strict=False):
        partial = relaywire.udp_sum(src, 40000, 7070, payload) if checksum else None
        want = template.frame(src, 40000, 7070, 7, payload, partial)
        if frame != want:
            problems.append(f"{payload!r}: kernel {frame.hex()} core {want.hex()}")
    return problems


def ksoftirqd_pids() -> list[int]:
    pids = []
    for path in glob.glob("/proc/[0-9]*/comm"):
        try:
            with open(path, encoding="ascii") as handle:
                if handle.read().startswith("ksoftirqd/"):
                    pids.append(int(path.split("/")[2]))
        except (OSError, UnicodeDecodeError):
            continue
    return pids


@dataclass(frozen=True)
class Run:
    mode: str
    rate: int
    sent: int
    got: int
    added_p50: float
    added_p99: float
    kernel_p50: float
    kernel_p99: float
    cpu: float  # seconds: sender + ksoftirqd + Python relay
    baseline_got: int  # originals the receiver in lan got
    socket_drops: int  # datagrams the receiver in iot's socket dropped (its buffer was full): not the relay's loss
    backlog_drops: int  # packets any CPU's input backlog dropped meanwhile (/proc/net/softnet_stat, all namespaces)

    @property
    def lost(self) -> int:
        return self.sent - self.got if self.mode != "none" else 0


def udp_receive_buffer_errors(lab: Lab, role: str) -> int:
    """UDP RcvbufErrors in one namespace (/proc/net/snmp)."""
    lines = [line.split() for line in lab.run(role, "cat", "/proc/net/snmp").splitlines() if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


def backlog_drops() -> int:
    """Packets dropped because a CPU's input backlog was full, all CPUs (second column, hex)."""
    with open("/proc/net/softnet_stat", encoding="ascii") as handle:
        return sum(int(line.split()[1], 16) for line in handle)


def one_run(lab: Lab, mode: str, rate: int, run: int, softirq: list[int]) -> Run:
    seconds = SECONDS.get(rate, DEFAULT_SECONDS)
    # Mode floor: no relay, and a second receiver on the sender's segment stands in for `far`: what the
    # method reads when the copy costs nothing (the two receivers' waits for a core).
    far = "near2" if mode == "floor" else "far"
    receivers = []
    for host in (far, "near"):
        proc = lab.popen(host, sys.executable, "-c", RECEIVE, str(seconds + 2), str(run))
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        receivers.append(proc)
    relay_pid = lab.relay.pid if lab.relay is not None else None
    before = sum(cpu_ns(p) for p in softirq) + (cpu_ns(relay_pid) if relay_pid else 0)
    socket_before, backlog_before = udp_receive_buffer_errors(lab, far), backlog_drops()
    sender = lab.popen("snd", sys.executable, "-c", SEND, str(rate), str(seconds), str(run))
    _, _, usage = os.wait4(sender.pid, 0)
    sender.returncode = 0
    assert sender.stdout is not None
    sent = int(sender.stdout.read().split()[0])
    relayed, direct = ({i: (a, k) for i, a, k in json.loads(p.communicate(timeout=30)[0])} for p in receivers)
    after = sum(cpu_ns(p) for p in softirq) + (cpu_ns(relay_pid) if relay_pid else 0)
    pairs = [(relayed[i], direct[i]) for i in relayed if i in direct]
    added = [c[0] - o[0] for c, o in pairs]
    stamped = [c[1] - o[1] for c, o in pairs]
    return Run(mode, rate, sent, len(relayed), pct(added, .5), pct(added, .99), pct(stamped, .5), pct(stamped, .99),
               usage.ru_utime + usage.ru_stime + (after - before) / 1e9, len(direct),
               udp_receive_buffer_errors(lab, far) - socket_before, backlog_drops() - backlog_before)


def report(runs: list[Run], rates: list[int], modes: list[str]) -> None:
    base = {r: statistics.median([x.cpu for x in runs if x.mode == "none" and x.rate == r] or [0.0]) for r in rates}
    print("| mode | rate/s | lost (per run) | of which the iot receiver's socket dropped | baseline lost"
          " | added p50 µs | added p99 µs | kernel added p50 µs | kernel added p99 µs | CPU s per 10,000 copies |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def each(values: list[int]) -> str:
        return ", ".join(map(str, values))

    for mode in (m for m in modes if m != "none"):
        for rate in rates:
            mine = [r for r in runs if r.mode == mode and r.rate == rate]
            cpu = statistics.median([(r.cpu - base[rate]) / r.got * 10000 for r in mine if r.got] or [math.nan])
            print(f"| {mode} | {rate} | {each([r.lost for r in mine])} | {each([r.socket_drops for r in mine])} "
                  f"| {each([r.sent - r.baseline_got for r in mine])} "
                  f"| {statistics.median([r.added_p50 for r in mine]):.0f} "
                  f"| {statistics.median([r.added_p99 for r in mine]):.0f} "
                  f"| {statistics.median([r.kernel_p50 for r in mine]):.0f} "
                  f"| {statistics.median([r.kernel_p99 for r in mine]):.0f} | {cpu:.3f} |")
    print("\nEvery run (mode rate: lost, socket/backlog drops, added p50/p99, kernel added p50/p99 µs, CPU s):")
    for r in runs:
        print(f"- {r.mode} {r.rate}: lost {r.lost}, drops {r.socket_drops}/{r.backlog_drops}, "
              f"added {r.added_p50:.0f}/{r.added_p99:.0f}, kernel {r.kernel_p50:.0f}/{r.kernel_p99:.0f}, "
              f"CPU {r.cpu:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rates", default="1000,10000,30000")
    parser.add_argument("--modes", default="none,floor,kernel,python")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    modes = args.modes.split(",")
    lab = Lab()
    runs: list[Run] = []
    try:
        segments = lab.up()
        ruleset = render(segments, "rk", per_source=100000, global_rate=1000000)
        lab.mode("kernel", ruleset)
        problems = check_copies(lab, segments[1])
        print("kernel copies identical to relaywire.CopyTemplate's frames" if not problems
              else "kernel copies differ:\n" + "\n".join(problems), flush=True)
        softirq = ksoftirqd_pids()
        for repeat in range(args.repeat):
            for mode in modes:
                lab.mode(mode, ruleset)
                time.sleep(0.3)
                for i, rate in enumerate(rates):
                    runs.append(one_run(lab, mode, rate, (repeat * len(modes) + modes.index(mode)) * 10 + i, softirq))
                    print(f"  {runs[-1]}", file=sys.stderr, flush=True)
    finally:
        lab.down()
    report(runs, rates, modes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
