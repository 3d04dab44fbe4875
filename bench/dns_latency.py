"""What loxgw's inline DNS path costs, against no inspection and against dnsmasq --nftset.

Run as root: `.venv/bin/python -m bench.dns_latency [N] [--latency-only] [--dns-hold=answer]`
(N queries per row; --dns-hold=answer measures loxgw holding devices zones' answers instead of
their first packets), or `... --connect-only [--rounds=R]` for part 2b alone, R times.
In the namespace lab a simulated Miniserver asks resolvers on the router,
each forwarding every query to the same upstream (--cache-size=0, so every
answer is fresh and, for the peer, inserted). Three setups run side by side:

- plain: a dnsmasq on port 5300; no rule of loxgw's matches it. The baseline.
- dnsmasq --nftset: a dnsmasq on port 5301 inserting loxonecloud.com answers
  into a set itself (the peer).
- loxgw inline: the router's dnsmasq on port 53, whose answers loxgw holds in
  NFQUEUE until their grants are in the sets.

Part 1, latency: the setups and the two names (a catalogue name, a foreign
name) take turns query by query, one query outstanding, so all six rows see
the same machine at the same moment (in a shuffled order each round, so no
row always follows the same other row); on this 2-vCPU machine the baseline
alone moves by tens of microseconds between runs taken one after another.
Reported: p50/p99 round trip per row, and added latency against plain.
Part 2, first connection: resolve a name and connect to its address at
once (the SYN is held until loxgw has read the answer's copy, unless the
grant is in already), then connect again (on the grant); p50/p99 of both.
Part 2b, first connection at a rate (`--connect-rate=R`, default 500, over
`--connect-names=N`, default 1000, each on an address of its own): the same,
one name every 1/R s (issue 17: p99 under 1 ms at 500 names/s). "Added" is
per name the first connection's time minus the second's; "router" rows are the
router's own forwarding time of each SYN, from the kernel's capture times on
the devices' bridge and on wan (bench.router_class.SYN_TIMES): the hold without
the client's, resolver's and server's scheduling around it.
Part 3, rate: matching queries to one setup at a fixed rate for 2 s;
answers lost and p50/p99 of the answered. Prints Markdown tables.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench import router_class
from tests.lab import loxgwproc
from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import IOT_GW, Lab

# argv: server, n, then (port, name template) pairs; queries take turns over the pairs.
INTERLEAVED = r"""
import json, random, socket, sys, time
from dnslib import DNSRecord
server, n = sys.argv[1], int(sys.argv[2])
order = random.Random(7053)  # a fresh order each round: no row always follows the same other row
targets = [(int(sys.argv[i]), sys.argv[i + 1]) for i in range(3, len(sys.argv), 2)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
times = [[] for _ in targets]
lost = [0] * len(targets)
for i in range(n):
    turn = list(enumerate(targets)); order.shuffle(turn)
    for k, (port, name) in turn:
        q = DNSRecord.question(name.replace("{i}", str(i))); q.header.id = (i * len(targets) + k) & 0xFFFF
        t = time.perf_counter(); s.sendto(q.pack(), (server, port))
        try:
            s.recv(4096)
        except socket.timeout:
            lost[k] += 1
            continue
        times[k].append(time.perf_counter() - t)
print(json.dumps({"times": times, "lost": lost}))
"""

# One thread sends on schedule and reads answers in between (a reader thread
# would fight the sender for the GIL and inflate every latency).
PACED = r"""
import json, select, socket, sys, time
from dnslib import DNSRecord
name, rate, seconds, server, port = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
count = int(rate * seconds)
packets = []
for i in range(count):
    q = DNSRecord.question(name.replace("{i}", str(i))); q.header.id = i & 0xFFFF
    packets.append(q.pack())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.connect((server, port))
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

# A resolve, then two connections to the address: the first right after the answer (its SYN is
# held while loxgw reads the answer's copy, unless the grant is in already), the second on a grant.
FIRST_CONNECT = r"""
import json, socket, sys, time
first, again = [], []
for i in range(1, int(sys.argv[1]) + 1):
    addr = socket.gethostbyname(f"c{i}.dyndns.loxonecloud.com")
    for times in (first, again):
        c = socket.socket(); c.settimeout(2)
        t = time.perf_counter(); c.connect((addr, 30000)); times.append(time.perf_counter() - t)
        c.close()
print(json.dumps({"first": first, "again": again}))
"""
CONNECT_NAMES = 250  # one address each: 192.0.2.1-250

NAMES = {"matching": "n{i}.dyndns.loxonecloud.com", "foreign": "n{i}.example.net"}
SETUPS = {"plain": 5300, "dnsmasq --nftset": 5301, "loxgw inline": 53}
RATES = (1000, 2000, 5000, 8000)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def interleaved(lab: Lab, ns: str, n: int) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], int]]:
    rows = [(setup, label) for setup in SETUPS for label in NAMES]
    args = [a for setup, label in rows for a in (str(SETUPS[setup]), NAMES[label])]
    out = lab.run(ns, sys.executable, "-c", INTERLEAVED, IOT_GW, str(n), *args, timeout=900).stdout
    result = json.loads(out)
    times = {row: [t * 1e6 for t in result["times"][k]] for k, row in enumerate(rows)}
    lost = {row: result["lost"][k] for k, row in enumerate(rows)}
    return times, lost


def paced(lab: Lab, ns: str, name: str, rate: int, port: int) -> tuple[int, list[float]]:
    out = lab.run(ns, sys.executable, "-c", PACED, name, str(rate), "2", IOT_GW, str(port), timeout=600).stdout
    result = json.loads(out)
    return result["sent"], [t * 1e6 for t in result["latencies"]]


def start_resolvers(lab: Lab) -> None:
    """The router's dnsmasq and the two side resolvers (plain, --nftset), all without a cache."""
    lab.restart_router_dns("--cache-size=0")
    lab.start_side_resolver(SETUPS["plain"], "--cache-size=0")
    lab.run(lab.ns_router, "nft", "add table inet bench; add set inet bench s4 "
            "{ type ipv4_addr; flags timeout; }")
    lab.start_side_resolver(SETUPS["dnsmasq --nftset"], "--cache-size=0",
                            "--nftset=/loxonecloud.com/4#inet#bench#s4")


def print_latency(latency: dict[tuple[str, str], list[float]], lost: dict[tuple[str, str], int]) -> None:
    print("| setup | name | p50 | p99 | added p50 | added p99 | lost |")
    print("|---|---|---|---|---|---|---|")
    for (setup, label), times in latency.items():
        base = latency[("plain", label)]
        print(f"| {setup} | {label} | {pct(times, .5):.0f} | {pct(times, .99):.0f} | "
              f"{pct(times, .5) - pct(base, .5):.0f} | {pct(times, .99) - pct(base, .99):.0f} | "
              f"{lost[(setup, label)]} |")


def connect_rounds(rounds: int, names: int, rate: float, hold: str) -> None:
    """Part 2b alone, `rounds` times, each from a device of its own (no grant yet): a row per round."""
    loxgwproc.LOOP_GUARD_MS = ""
    with Lab(dns_only_records=router_class.connect_records(names)) as lab:
        lab.restart_router_dns("--cache-size=0")
        gw = Loxgw(lab, main_extra=f"\toption log_level 'warning'\n\toption dns_hold '{hold}'\n").start()
        listener = lab.popen(lab.ns_wan, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", "0.0.0.0",
                                          str(router_class.CONNECT_PORT)], stdout=subprocess.PIPE)
        assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
        lab.run(lab.ns_wan, "ip", "route", "add", "local", f"{router_class.CONNECT_NET}.0.0/16", "dev", "lo")
        print(f"## First connection at {rate:g} names/s, {names} names per round (ms, p50 / p99)\n")
        print("| round | first | added | router: first SYN (held) | router: second SYN | resolve | resolve + first "
              "| held | failed |")
        print("|---|---|---|---|---|---|---|---|---|")
        for round_ in range(rounds):
            held = gw.status()["counters"].get("dns_held_packets", 0)
            device = lab.add_host(f"fc{round_}", "iot", 20 + round_, mac=f"50:4f:94:a0:01:{round_:02x}")
            times, failed = router_class.first_connections(lab, device.ns, names, rate)
            held = gw.status()["counters"].get("dns_held_packets", 0) - held
            cells = " | ".join(f"{pct(times[k], .5):.3f} / {pct(times[k], .99):.3f}"
                               for k in ("first", "added", "router first", "router again", "resolve", "resolve+first"))
            print(f"| {round_} | {cells} | {held} | {failed} |", flush=True)


def main() -> int:
    options = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    if "--connect-only" in sys.argv:
        connect_rounds(int(options.get("rounds", 3)), int(options.get("connect-names", 1000)),
                       float(options.get("connect-rate", 500)), options.get("dns-hold", "connection"))
        return 0
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 2000
    rate_list = () if "--latency-only" in sys.argv else RATES
    hold = "answer" if "--dns-hold=answer" in sys.argv else "connection"
    connect_rate, connect_names = float(options.get("connect-rate", 500)), int(options.get("connect-names", 1000))
    rates: dict[tuple[str, int], tuple[int, list[float]]] = {}
    # The upstream answers any n{i} of both domains, so both are forwarded alike.
    records = {f"c{i}.dyndns.loxonecloud.com": f"192.0.2.{i}" for i in range(1, CONNECT_NAMES + 1)}
    # Every name its own address, cycling through two TEST-NET ranges: each answer is an insert
    # (or a refresh of an entry 508 answers old), for dnsmasq --nftset and for loxgw alike.
    # (192.0.2.x is kept for the connection part, whose first SYNs must find no grant yet.)
    pool = [f"{net}.{host}" for net in ("198.51.100", "203.0.113") for host in range(1, 255)]
    names = max(n + 50, 2 * max(RATES))
    dns_only = {template.format(i=i): pool[i % len(pool)] for template in NAMES.values() for i in range(names)}
    dns_only.update(router_class.connect_records(connect_names))
    # The daemon as deployed: the lab's loop guard probes the loop 200 times a second from a thread of
    # its own, which competes with the DNS thread for the GIL.
    loxgwproc.LOOP_GUARD_MS = ""
    with Lab(extra_records=records, dns_only_records=dns_only) as lab:
        ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
        start_resolvers(lab)
        gw = Loxgw(lab, main_extra=f"\toption log_level 'warning'\n\toption dns_hold '{hold}'\n").start()
        interleaved(lab, ms.ns, 50)  # warm-up: caches, ARP, conntrack
        latency, lost = interleaved(lab, ms.ns, n)
        for setup, port in SETUPS.items():
            for rate in rate_list:
                rates[(setup, rate)] = paced(lab, ms.ns, NAMES["matching"], rate, port)
        listing = lab.run(lab.ns_router, "nft", "list set inet bench s4").stdout
        inserted = sum(listing.count(net) for net in ("198.51.100.", "203.0.113."))
        held_before = gw.status()["counters"].get("dns_held_packets", 0)
        listener = lab.popen(lab.ns_wan, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", "0.0.0.0", "30000"],
                             stdout=subprocess.PIPE)
        assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
        connects = json.loads(lab.run(ms.ns, sys.executable, "-c", FIRST_CONNECT, str(CONNECT_NAMES),
                                      timeout=300).stdout)
        status = gw.status()
        lab.run(lab.ns_wan, "ip", "route", "add", "local", f"{router_class.CONNECT_NET}.0.0/16", "dev", "lo")
        # A second device: the first one's grants from the parts before count against its cap (2,048).
        fresh = lab.add_host("ms2", "iot", 12, mac="50:4f:94:a0:00:02")
        at_rate, paced_failed = router_class.first_connections(lab, fresh.ns, connect_names, connect_rate)
        paced_held = gw.status()["counters"].get("dns_held_packets", 0) - status["counters"].get("dns_held_packets", 0)
    mode = f"{status['queue_mode']}, DNS {status.get('dns_path', '?')}"
    counters: dict[str, int] = status["counters"]

    print(f"## Latency: {n} queries per row, all rows taking turns (µs); loxgw answers via {mode}\n")
    print_latency(latency, lost)
    print(f"\n(dnsmasq --nftset left {inserted} elements in its set; loxgw counted "
          f"{counters.get('dns_answers_matched', 0)} matched answers, "
          f"{counters.get('dns_inserted', 0)} elements sent, "
          f"{counters.get('dns_netlink_errors', 0)} netlink errors, "
          f"{counters.get('dns_copies_lost', 0)} copies lost, "
          f"refused or bad: {({k: v for k, v in counters.items() if '_refused' in k or '_bad_' in k}) or 'none'}, "
          f"{counters.get('dns_held_packets', 0)} first packets held.)\n")
    held = counters.get("dns_held_packets", 0) - held_before
    first, again = ([t * 1e6 for t in connects[k]] for k in ("first", "again"))
    print(f"## First connection: resolve, connect at once, connect again ({CONNECT_NAMES} names, µs)\n")
    print("| connection | p50 | p99 |")
    print("|---|---|---|")
    print(f"| first, right after the answer | {pct(first, .5):.0f} | {pct(first, .99):.0f} |")
    print(f"| again, on the grant | {pct(again, .5):.0f} | {pct(again, .99):.0f} |")
    print(f"\n({held} of {CONNECT_NAMES} first SYNs were held.)\n")
    print(f"## First connection at {connect_rate:g} names/s ({connect_names} names, ms)\n")
    print("| measure | p50 | p99 | max |")
    print("|---|---|---|---|")
    for label, key in (("resolve", "resolve"), ("first, right after the answer", "first"),
                       ("again, on the grant", "again"), ("added: first minus again", "added"),
                       ("router: first SYN in to out (held)", "router first"),
                       ("router: second SYN in to out", "router again")):
        print(f"| {label} | {pct(at_rate[key], .5):.3f} | {pct(at_rate[key], .99):.3f} | {max(at_rate[key]):.3f} |")
    print(f"\n({paced_held} first SYNs held, {paced_failed} connections failed.)\n")
    print("## Rate: matching queries at a fixed rate for 2 s (latency in µs)\n")
    print("| setup | rate/s | sent | lost | p50 | p99 |")
    print("|---|---|---|---|---|---|")
    for (setup, rate), (sent, lat) in rates.items():
        print(f"| {setup} | {rate} | {sent} | {sent - len(lat)} | {pct(lat, .5):.0f} | {pct(lat, .99):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
