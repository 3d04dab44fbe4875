"""Blocked attempts, `loxgw explain` and `loxgw doctor` against real namespaces, nft, dnsmasq and connections."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from loxgw.edges.diagnose import request
from tests.lab.loxgwproc import LAB_CONFIG, Loxgw
from tests.lab.netlab import Lab, wait_for
from tests.lab.test_dns import listen, resolve_and_connect, try_connect
from tests.lab.test_fw4 import FW4

MS_MAC = "50:4f:94:a0:00:01"
REBIND_OK = "--rebind-domain-ok=/dyndns.loxonecloud.com/"


def blocked(gw: Loxgw) -> list[dict[str, Any]]:
    """The daemon's most recent blocked attempts, straight from its socket (no process per poll)."""
    answer: list[dict[str, Any]] = request(gw.socket, ["doctor"])["doctor"]["blocked"]
    return answer


def row(gw: Loxgw, dst: str, flow: str) -> dict[str, Any] | None:
    return next((r for r in blocked(gw) if (r["dst"], r["flow"]) == (dst, flow)), None)


def known(lab: Lab, gw: Loxgw, ns: str, address: str) -> None:
    """The device talked to the router, and the daemon has it from the neighbour table."""
    lab.run(ns, "ping", "-c1", "-W1", lab.vlans["iot"])
    wait_for(lambda: any(d["ip"] == address for d in gw.status()["devices"]), 5, f"{address} detected")


def test_blocked_attempts_are_listed_with_their_reason(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac=MS_MAC)
    listen(lab, "203.0.113.12", 443, 6066)
    gw = Loxgw(lab).start()
    known(lab, gw, ms.ns, ms.ip)
    # Never resolved: listed within a second of the connection's start (python's start-up included).
    start = time.monotonic()
    client = lab.popen(ms.ns, [sys.executable, "-c", "import socket; s = socket.socket(); s.settimeout(2); "
                                                     "s.connect_ex(('203.0.113.99', 443))"])
    wait_for(lambda: row(gw, "203.0.113.99", "TCP 443") is not None, 1.0, "the attempt listed", interval=0.01)
    listed_after = time.monotonic() - start
    client.wait(timeout=5)
    found = row(gw, "203.0.113.99", "TCP 443")
    assert found is not None
    assert (found["device"], found["reason"], found["direction"]) == ("192.168.20.10", "never_resolved", "out")
    assert found["why"].startswith("address never resolved by this device (TCP 443 is in the catalogue for ")
    assert listed_after < 1.0
    # Resolved, but connected on a port outside its entry: the entry and its ports are named.
    assert resolve_and_connect(lab, ms.ns, "weather.loxone.com", 443) == "blocked"
    wait_for(lambda: row(gw, "203.0.113.12", "TCP 443") is not None, 1.0, "the second attempt listed")
    found = row(gw, "203.0.113.12", "TCP 443")
    assert found is not None
    assert (found["reason"], found["why"], found["entries"]) == (
        "port_not_in_entry", "`weather.loxone.com` resolved, but TCP 443 is not in its entry (catalogue: TCP 6066)",
        ["ms-weather"])
    assert resolve_and_connect(lab, ms.ns, "weather.loxone.com", 6066) == "open"
    gw.stop()


def explain(gw: Loxgw, *words: str) -> tuple[int, dict[str, Any]]:
    done = gw.cli("explain", *words, "--json", check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_explain_agrees_with_real_connections(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac=MS_MAC)
    listen(lab, "203.0.113.7", 22, 49001)
    gw = Loxgw(lab, main_extra="\toption min_timeout '3'\n\toption max_timeout '3'\n").start()
    name = "a7.remcov3.loxonecloud.com"
    known(lab, gw, ms.ns, ms.ip)

    code, answer = explain(gw, MS_MAC, name, "22")
    assert (code, answer["code"], answer["device"]) == (1, "never_resolved", ms.ip)
    code, by_address = explain(gw, ms.ip, "203.0.113.7", "22/tcp")
    assert (code, by_address["code"], try_connect(lab, ms.ns, "203.0.113.7:22")) == (1, "never_resolved", ["blocked"])

    assert resolve_and_connect(lab, ms.ns, name, 22) == "open"
    code, answer = explain(gw, MS_MAC, name, "22")
    assert (code, answer["code"], answer["rule"].split(" (")[1]) == (0, "grant", "tcp/22)")
    assert answer["why"].startswith(f"`{name}` resolved to 203.0.113.7 by this device: TCP 22 open for ")
    code, answer = explain(gw, ms.ip, "203.0.113.7", "49001")
    assert (code, answer["code"], try_connect(lab, ms.ns, "203.0.113.7:49001")) == (
        1, "port_not_in_entry", ["blocked"])
    assert answer["why"] == f"`{name}` resolved, but TCP 49001 is not in its entry (catalogue: TCP 22)"
    assert (explain(gw, ms.ip, "203.0.113.7", "22")[0], try_connect(lab, ms.ns, "203.0.113.7:22")) == (0, ["open"])

    time.sleep(3.5)  # the kernel expires the element: real time has to pass here
    code, answer = explain(gw, ms.ip, "203.0.113.7", "22")
    assert (code, answer["code"], try_connect(lab, ms.ns, "203.0.113.7:22")) == (1, "grant_expired", ["blocked"])
    assert answer["why"].startswith(f"`{name}` resolved, but its grant expired ")
    assert explain(gw, ms.ip, name, "22")[1]["code"] == "grant_expired"
    assert gw.cli("explain", "nobody", name, "22", check=False).returncode == 2
    gw.stop()


def fw4_model(include: bool) -> str:
    return FW4 if include else "\n".join(line for line in FW4.splitlines() if "include" not in line)


def load_model(lab: Lab, include: bool) -> None:
    lab.run(lab.ns_router, "nft", "delete", "table", "inet", "fw4", check=False)
    done = subprocess.run(["ip", "netns", "exec", lab.ns_router, "nft", "-f", "-"], input=fw4_model(include),
                          text=True, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


def doctor(gw: Loxgw) -> tuple[int, list[tuple[str, str]], dict[str, Any]]:
    done = gw.cli("doctor", "--json", check=False)
    report = json.loads(done.stdout)
    return done.returncode, [(f["check"], f["message"]) for f in report["findings"] if f["level"] == "fail"], report


HEALTHY_EXTRA = f"""
config zone 'cam'
\toption role 'devices'
\tlist interface 'br-cam'

config relay
\tlist zone 'iot'
\tlist zone 'lan'

config device 'ms'
\toption type 'miniserver'
\toption mac '{MS_MAC}'
\toption ip '192.168.20.10'
"""
GHOST = "\nconfig device 'ghost'\n\toption type 'audioserver'\n\toption ip '192.168.20.99'\n"


def test_doctor_finds_each_problem_and_says_all_is_well_otherwise(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac=MS_MAC)
    lab.add_host("phone", "lan", 20)
    lab.add_vlan("cam", "192.168.30.1")
    lab.add_host("cam1", "cam", 10)
    lab.restart_router_dns("--stop-dns-rebind", REBIND_OK)
    load_model(lab, include=True)
    config = LAB_CONFIG.replace("option firewall 'standalone'", "option firewall 'fw4'")
    gw = Loxgw(lab, config_text=config.format(socket="{socket}", main_extra="", extra=HEALTHY_EXTRA)).start()
    lab.run(ms.ns, "ping", "-c1", "-W1", lab.vlans["iot"], check=False)  # fw4 rejects it; ARP tells the router
    wait_for(lambda: doctor(gw)[0] == 0, 5, "the Miniserver seen")
    code, failed, report = doctor(gw)
    assert (code, failed, report["ok"]) == (0, [], True)
    text = gw.cli("doctor").stdout
    assert text.splitlines()[0] == "loxgw doctor: all is well", text
    checks = {f["check"] for f in report["findings"] if f["level"] == "ok"}
    assert {"firewall", "fw4 forward", "fw4 input", "dns", "dns redirect", "rebind exception", "interface",
            "devices"} <= checks
    [device] = report["devices"]
    assert {f["function"]: f["state"] for f in device["functions"]}["App access"] == "open"

    load_model(lab, include=False)
    assert doctor(gw)[:2] == (1, [
        ("fw4 forward", "loxgw's include is not in fw4's forward chain: fw4 drops what loxgw allows"),
        ("fw4 input", "loxgw's include is not in fw4's input chain: fw4 drops what loxgw allows into the router "
                      "(relay, gateway ping)")])
    load_model(lab, include=True)

    lab.restart_router_dns("--stop-dns-rebind")
    assert doctor(gw)[:2] == (1, [("rebind exception", "dnsmasq drops private answers for *.dyndns.loxonecloud.com "
                                   "(rebind protection, no exception): the App's local TLS connection to the "
                                   "Miniserver fails")])
    lab.restart_router_dns("--stop-dns-rebind", REBIND_OK)

    lab.run(lab.ns_router, "ip", "link", "set", "br-cam", "down")
    assert doctor(gw)[:2] == (1, [("interface", "br-cam (zone cam) is down")])
    lab.run(lab.ns_router, "ip", "link", "set", "br-cam", "up")
    wait_for(lambda: doctor(gw)[0] == 0, 5, "br-cam up again")

    gw.config_text = config.format(socket="{socket}", main_extra="", extra=HEALTHY_EXTRA + GHOST)
    gw.write_config()
    gw.signal(signal.SIGHUP)
    wait_for(lambda: gw.status()["counters"].get("reloads") == 1, 5, "reload")
    result = doctor(gw)
    assert result[:2] == (1, [("device", "config device ghost (192.168.20.99) has never been seen")]), result[2]
    gw.stop()


def cpu_and_rss(pid: int) -> tuple[float, int]:
    """Seconds of CPU (user + system) and resident kB of a process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        rss = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return ticks / os.sysconf("SC_CLK_TCK"), rss


FLOOD = r"""
import random, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, sent = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    for _ in range(100):
        s.sendto(b"x", (sys.argv[1], random.randint(1024, 65535)))
    sent += 100
print(sent)
"""


def test_a_flood_of_blocked_packets_costs_bounded_cpu_and_memory(lab: Lab) -> None:
    """10 s idle, then 10 s of UDP from one device to random ports of a private, then of a public address.

    Every packet is a new flow loxgw does not allow. A public target's first packets are also held
    (chain hold, at most 2,000/s) until loxgw has read the DNS copies, which costs the DNS thread;
    a private target is never held, so its cost over idle is the sampling alone.
    """
    ms = lab.add_host("ms", "iot", 10, mac=MS_MAC)
    other = lab.add_host("other", "iot", 11, mac="50:4f:94:a0:00:02")
    gw = Loxgw(lab).start()
    assert gw.proc is not None
    known(lab, gw, ms.ns, ms.ip)
    known(lab, gw, other.ns, other.ip)
    try_connect(lab, other.ns, "203.0.113.98:443")  # another device's attempt, to outlive the flood
    wait_for(lambda: row(gw, "203.0.113.98", "TCP 443") is not None, 2, "the other device's attempt")
    figures = {}
    for target in ("idle", "10.9.9.9", "203.0.113.99"):
        cpu_before, rss_before = cpu_and_rss(gw.proc.pid)
        if target == "idle":
            time.sleep(10)  # the daemon's own cost over the same time, to compare with
            sent = 0
        else:
            sent = int(lab.run(ms.ns, sys.executable, "-c", FLOOD, target, "10", timeout=60).stdout)
        cpu_after, rss_after = cpu_and_rss(gw.proc.pid)
        table = request(gw.socket, ["doctor"])["doctor"]["blocked_table"]
        figures[target] = (cpu_after - cpu_before, rss_after)
        print(f"\n{target}: {sent} packets in 10 s; daemon CPU {cpu_after - cpu_before:.2f} s, RSS {rss_before} -> "
              f"{rss_after} kB; samples {table['samples']}, rows {table['rows']}, evicted {table['evicted']}")
        assert sent > 50_000 or target == "idle"
    answer = request(gw.socket, ["doctor"])["doctor"]
    table = answer["blocked_table"]
    assert table["samples"] <= 1 + 2 * (20 * 11 + 20)  # the kernel's rate: 20/s, a burst of 20, ~11 s per flood
    assert table["rows"] <= 32 + 1  # the flooding device's own rows, and the other device's one
    [other_device] = [d for d in answer["devices"] if d["ip"] == other.ip]
    assert any("203.0.113.98 TCP 443" in line for line in other_device["other_blocked"])
    idle_cpu, idle_rss = figures["idle"]
    assert figures["10.9.9.9"][0] - idle_cpu < 0.3
    assert figures["203.0.113.99"][0] - idle_cpu < 2.0
    assert max(rss for _, rss in figures.values()) - idle_rss < 8 * 1024
    gw.stop()
