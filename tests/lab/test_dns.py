"""DNS answers open exactly the catalogue's endpoints, per device, before the answer arrives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import IOT_GW, Lab, wait_for

# Resolve names, then connect to each (addr, port) at once; prints one result per line.
CLIENT = r"""
import socket, sys
out = []
for item in sys.argv[1:]:
    name, port = item.rsplit(":", 1)
    addr = socket.gethostbyname(name) if name[0].isalpha() else name
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect((addr, int(port)))
        out.append("open")
    except OSError:
        out.append("blocked")
    finally:
        s.close()
print(" ".join(out))
"""


def try_connect(lab: Lab, ns: str, *targets: str) -> list[str]:
    proc = lab.run(ns, sys.executable, "-c", CLIENT, *targets)
    return proc.stdout.split()


def listen(lab: Lab, addr: str, *ports: int) -> None:
    proc = lab.popen(lab.ns_wan, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", addr,
                                  *map(str, ports)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"


def test_resolved_catalogue_names_open_exactly_their_ports(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    other = lab.add_host("other", "iot", 11, mac="50:4f:94:a0:00:02")
    listen(lab, "203.0.113.7", 22, 443, 49001)
    listen(lab, "203.0.113.20", 30357)
    listen(lab, "203.0.113.66", 443)
    listen(lab, "203.0.113.80", 80)
    # Every product on the catalogue: then nothing in a devices zone resolves outside it, and the
    # xt_string prefilter keeps foreign names in the kernel (egress 'resolved' needs them all).
    catalog_only = "\toption egress_audioserver 'catalog'\n\toption egress_stereo_extension 'catalog'"
    gw = Loxgw(lab, main_extra=catalog_only).start()
    assert gw.status()["queue_mode"] == "xtables"

    # Not resolved yet: blocked.
    assert try_connect(lab, ms.ns, "203.0.113.7:22") == ["blocked"]
    # Resolve and connect at once: the first SYN passes.
    assert try_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com:22",
                       "x1.dyndns.loxonecloud.com:30357") == ["open", "open"]
    # Same relay, port outside the Miniserver's catalogue ports: refused.
    assert try_connect(lab, ms.ns, "203.0.113.7:49001") == ["blocked"]
    # A look-alike name and a name outside the catalogue: no entry.
    assert try_connect(lab, ms.ns, "evilloxonecloud.com:443", "example.org:80") == [
        "blocked", "blocked",
    ]
    # A second device in the same zone cannot use the first one's entry.
    assert try_connect(lab, other.ns, "203.0.113.7:22") == ["blocked"]

    status = gw.status()
    entries = {(e["device"], e["name"], e["address"], e["proto"], e["ports"])
               for e in status["dns_entries"]}
    assert ("192.168.20.10", "a7.remcov3.loxonecloud.com", "203.0.113.7", "tcp", "22") in entries
    assert ("192.168.20.10", "x1.dyndns.loxonecloud.com", "203.0.113.20", "tcp", "20000-65000") in entries
    assert all(e[0] == "192.168.20.10" for e in entries)
    counters = status["counters"]
    assert counters["dns_answers_matched"] == 2
    # The look-alike and the foreign name never left the kernel (xt_string prefilter).
    assert (counters["dns_answers_seen"], counters["dns_queries_seen"]) == (2, 2)


def test_first_syn_passes_every_time() -> None:
    """1000 (device, address) pairs, each resolved and connected to at once: all pass.

    Four Miniservers each resolve 250 names with 250 distinct addresses, so every
    connection needs the element its own answer inserted; none can ride on an earlier one.
    """
    records = {f"n{i}.dyndns.loxonecloud.com": f"192.0.2.{i}" for i in range(1, 251)}
    with Lab(extra_records=records) as lab:
        devices = [lab.add_host(f"ms{k}", "iot", 10 + k, mac=f"50:4f:94:a0:00:0{k}") for k in range(4)]
        proc = lab.popen(lab.ns_wan, [sys.executable, "-m", "tests.lab.peer", "listen-tcp",
                                      "0.0.0.0", "30000"], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        Loxgw(lab).start()
        script = r"""
import socket
ok = 0
for i in range(1, 251):
    addr = socket.gethostbyname(f"n{i}.dyndns.loxonecloud.com")
    s = socket.socket(); s.settimeout(0.3)
    try:
        s.connect((addr, 30000)); ok += 1
    except OSError:
        pass
    s.close()
print(ok)
"""
        passed = sum(int(lab.run(dev.ns, sys.executable, "-c", script, timeout=120).stdout) for dev in devices)
        assert passed == 1000
        # And without an answer of its own, another device finds the same addresses closed.
        other = lab.add_host("other", "iot", 30)
        assert try_connect(lab, other.ns, "192.0.2.1:30000") == ["blocked"]


def resolve_and_connect(lab: Lab, ns: str, name: str, port: int, server: str = "") -> str:
    """Resolve `name` (through `server` if given, else the system resolver) and connect at once."""
    script = r"""
import socket, sys
from dnslib import DNSRecord
name, port, server = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if server:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(DNSRecord.question(name).pack(), (server, 53))
    addr = str(DNSRecord.parse(s.recv(4096)).a.rdata)
else:
    addr = socket.gethostbyname(name)
c = socket.socket(); c.settimeout(0.5)
try:
    c.connect((addr, port)); print("open")
except OSError:
    print("blocked")
"""
    return lab.run(ns, sys.executable, "-c", script, name, str(port), server).stdout.strip()


def test_entries_come_back_after_the_table_is_recreated(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    Loxgw(lab).start()
    assert resolve_and_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com", 22) == "open"
    lab.run(lab.ns_router, "nft", "delete table inet loxgw; add table inet loxgw")
    start = time.monotonic()
    wait_for(lambda: try_connect(lab, ms.ns, "203.0.113.7:22") == ["open"], 2, "entry restored")
    assert time.monotonic() - start < 1.5  # includes the 0.5 s connect timeout of a failed try


def test_timeout_expires_and_a_fresh_answer_reopens(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    listen(lab, "203.0.113.20", 30000)
    Loxgw(lab, main_extra="\toption min_timeout '2'\n\toption max_timeout '2'\n").start()
    assert resolve_and_connect(lab, ms.ns, "t1.dyndns.loxonecloud.com", 30000) == "open"
    time.sleep(2.5)  # the kernel expires the element; real time has to pass here
    assert try_connect(lab, ms.ns, "203.0.113.20:30000") == ["blocked"]
    assert resolve_and_connect(lab, ms.ns, "t2.dyndns.loxonecloud.com", 30000) == "open"


def kernel_expiry(lab: Lab, device: str, address: str) -> float:
    """Seconds left on a device's DNS entry for `address`, as the kernel has it (nft: "expires 1m2s345ms")."""
    import re

    listing = lab.run(lab.ns_router, "nft", "list", "table", "inet", "loxgw").stdout
    found = re.search(rf"{re.escape(device)} \. {re.escape(address)} timeout \S+ expires "
                      r"(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", listing)
    assert found, listing
    minutes, seconds, millis = (int(g or 0) for g in found.groups())
    return minutes * 60 + seconds + millis / 1000


def test_a_later_answer_extends_the_entry(lab: Lab) -> None:
    """A cached answer served again refreshes the kernel's timeout (issue: every later answer)."""
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    gw = Loxgw(lab, main_extra="\toption min_timeout '20'\n\toption max_timeout '20'\n").start()
    assert gw.status()["set_refresh"] == "expiration"  # what this kernel can do (probed)
    resolve = [sys.executable, "-c", "import socket; socket.gethostbyname('r1.dyndns.loxonecloud.com')"]
    lab.run(ms.ns, *resolve)
    first = kernel_expiry(lab, "192.168.20.10", "203.0.113.20")
    time.sleep(3)  # real time must pass for the expiry to count down
    assert kernel_expiry(lab, "192.168.20.10", "203.0.113.20") < first - 2
    lab.run(ms.ns, *resolve)  # the router's dnsmasq answers from its cache this time
    time.sleep(0.1)  # copies are read in batches, 2 ms after they arrive
    assert kernel_expiry(lab, "192.168.20.10", "203.0.113.20") > 19


REFRESH_BY_REPLACING = r"""
import subprocess, time
from loxgw.edges.nftset import SetWriter
subprocess.run(["nft", "-f", "-"], check=True, text=True,
               input="table inet t {\n set s {\n type ipv4_addr . ipv4_addr\n flags timeout\n }\n}\n")
writer = SetWriter("t", (), "replace")
key = bytes([192, 168, 20, 10, 203, 0, 113, 7])
writer.add_elements([("s", key, 100)])
time.sleep(1.5)
writer.add_elements([("s", key, 100)])
print(writer.errors, subprocess.run(["nft", "list", "set", "inet", "t", "s"], capture_output=True, text=True).stdout)
"""


def test_replacing_refreshes_where_the_kernel_cannot_update_expiry(lab: Lab) -> None:
    """The fallback for kernels without expiration updates (Linux 6.3-6.9): destroy and add in one batch."""
    out = lab.run(lab.ns_router, sys.executable, "-c", REFRESH_BY_REPLACING).stdout
    # Not refreshed, 1.5 s later it would show "expires 1m38s...".
    assert out.startswith("0 ") and ("expires 1m39s" in out or "expires 1m40s" in out), out


FULL_QUEUE = r"""
import socket, subprocess, sys
from netfilterqueue import NetfilterQueue
from loxgw.edges.dnsqueue import fail_open
subprocess.run(["iptables-nft", "-t", "mangle", "-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", "9999",
                "-j", "NFQUEUE", "--queue-num", "5"], check=True)
nfq = NetfilterQueue()
nfq.bind(5, lambda pkt: pkt.accept(), max_len=2)  # and never read: a stuck daemon
if sys.argv[1] == "fail-open":
    fail_open(nfq.get_fd(), 5)
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("127.0.0.1", 9999)); r.settimeout(0.3)
w = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(10):
    w.sendto(b"x", ("127.0.0.1", 9999))
got = 0
try:
    while True:
        r.recv(10); got += 1
except OSError:
    pass
subprocess.run(["iptables-nft", "-t", "mangle", "-F", "OUTPUT"], check=True)
print(got)
"""


def test_a_full_queue_lets_packets_go_on() -> None:
    """A stuck loxgw must not stop DNS or held packets: beyond the queue's length the kernel accepts."""
    with Lab() as lab:
        assert lab.run(lab.ns_router, sys.executable, "-c", FULL_QUEUE, "default").stdout.strip() == "0"
        assert lab.run(lab.ns_router, sys.executable, "-c", FULL_QUEUE, "fail-open").stdout.strip() == "8"


def test_device_with_its_own_resolver_is_redirected(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    gw = Loxgw(lab).start()
    # The Miniserver asks the provider's resolver directly; the router answers instead.
    assert resolve_and_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com", 22, server="198.51.100.53") == "open"
    assert gw.status()["counters"]["dns_answers_matched"] == 1


def test_forged_answer_from_outside_creates_nothing(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    listen(lab, "203.0.113.66", 443)
    gw = Loxgw(lab).start()
    forge = r"""
import socket
from dnslib import DNSRecord, RR, QTYPE, A
q = DNSRecord.question("x9.dyndns.loxonecloud.com")
a = q.reply(); a.add_answer(RR("x9.dyndns.loxonecloud.com", QTYPE.A, rdata=A("203.0.113.66"), ttl=600))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.1", 53))  # a resolver address the device never asked
for port in range(40000, 40200):
    s.sendto(a.pack(), ("192.168.20.10", port))
"""
    lab.run(lab.ns_wan, sys.executable, "-c", forge)
    assert gw.status()["dns_entries"] == []
    assert try_connect(lab, ms.ns, "203.0.113.66:443") == ["blocked"]


def test_kill_9_under_load_loses_no_answer_and_keeps_entries(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    gw = Loxgw(lab).start()
    assert resolve_and_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com", 22) == "open"
    # A devices zone's DNS is only copied, so killing loxgw cannot touch it. Like every stub
    # resolver, the client would ask once more after a short timeout (where answers are held
    # in a queue, nfnetlink_queue drops the one or two it holds when the socket dies).
    load = r"""
import socket, sys, time
from dnslib import DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
lost = retried = sent = 0; end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    q = DNSRecord.question(f"l{sent}.dyndns.loxonecloud.com"); q.header.id = sent & 0xFFFF
    sent += 1
    for attempt in range(2):
        s.sendto(q.pack(), ("192.168.20.1", 53))
        try:
            while DNSRecord.parse(s.recv(4096)).header.id != q.header.id:
                pass
            break
        except OSError:
            retried += attempt == 0
    else:
        lost += 1
print(sent, lost, retried)
"""
    client = lab.popen(ms.ns, [sys.executable, "-c", load, "3"], stdout=subprocess.PIPE)
    time.sleep(1.0)  # the load is running (real traffic)
    gw.signal(signal.SIGKILL)
    assert gw.proc is not None and gw.proc.wait(timeout=5) == -9
    os.unlink(gw.socket)
    restarted = Loxgw(lab, name="loxgw2")
    restarted.start()
    out, _ = client.communicate(timeout=30)
    sent, lost, retried = map(int, out.split())
    assert sent > 100 and lost == 0 and retried <= 2
    # The entry from before the kill is still in the kernel and adopted by the new daemon.
    assert try_connect(lab, ms.ns, "203.0.113.7:22") == ["open"]
    adopted = {(e["device"], e["address"], e["ports"]) for e in restarted.status()["dns_entries"]}
    assert ("192.168.20.10", "203.0.113.7", "22") in adopted


TIMED_CONNECT = r"""
import socket, sys, time
t0 = time.monotonic()
addr = socket.gethostbyname(sys.argv[1])
t1 = time.monotonic()
print("resolved", flush=True)
c = socket.socket(); c.settimeout(5)
try:
    c.connect((addr, int(sys.argv[2]))); result = "open"
except OSError:
    result = "blocked"
print(result, round(t1 - t0, 3), round(time.monotonic() - t1, 3))
"""


def test_first_packet_waits_for_loxgw_and_dns_does_not(lab: Lab) -> None:
    """With loxgw frozen, the answer still arrives at once; the first SYN waits, then passes."""
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    gw = Loxgw(lab).start()
    assert gw.status()["dns_path"] == "copies"
    gw.signal(signal.SIGSTOP)
    try:
        client = lab.popen(ms.ns, [sys.executable, "-c", TIMED_CONNECT, "a7.remcov3.loxonecloud.com", "22"],
                           stdout=subprocess.PIPE)
        assert client.stdout is not None and client.stdout.readline().strip() == b"resolved"
        time.sleep(0.5)  # the SYN is on its way, and waits
    finally:
        gw.signal(signal.SIGCONT)
    out, _ = client.communicate(timeout=10)
    result, dns_time, connect_time = out.decode().split()
    assert result == "open"
    assert float(dns_time) < 0.3  # DNS never waited for the frozen daemon
    # The SYN waited for loxgw (0.5 s) and needed no retransmission (Linux retransmits a
    # SYN after 1 s): it was held, not dropped.
    assert 0.45 < float(connect_time) < 1.0, out
    assert gw.status()["counters"]["dns_held_packets"] >= 1


def answers_held(lab: Lab, hold: str, path: str) -> tuple[Loxgw, str]:
    """A daemon with `dns_hold` set, and a Miniserver's namespace that has resolved two catalogue names and
    connected to each (and once to an address no answer gave it, which is blocked)."""
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    listen(lab, "203.0.113.20", 30357)
    gw = Loxgw(lab, main_extra=f"\toption dns_hold '{hold}'\n").start()
    assert gw.status()["dns_path"] == path
    assert try_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com:22", "x1.dyndns.loxonecloud.com:30357",
                       "203.0.113.7:49001") == ["open", "open", "blocked"]
    return gw, ms.ns


def test_dns_hold_answer_holds_the_answer_itself(lab: Lab) -> None:
    """The other design, on request: the answer waits until its grants are in; no first packet waits."""
    gw, _ = answers_held(lab, "answer", "copies, answers held")
    counters = gw.status()["counters"]
    assert (counters["dns_answers_matched"], counters["dns_held_packets"]) == (2, 0)
    assert "chain hold" not in lab.run(lab.ns_router, "nft", "list", "table", "inet", "loxgw").stdout


def test_sighup_switches_what_is_held(lab: Lab) -> None:
    """dns_hold changed on reload: the DNS path is rebuilt, and resolving and connecting still work."""
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    listen(lab, "203.0.113.20", 30357)
    gw = Loxgw(lab).start()
    assert try_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com:22") == ["open"]
    for reloads, (hold, path) in enumerate((("answer", "copies, answers held"),
                                            ("auto", "answers held, beyond a rate copies"),
                                            ("connection", "copies")), 1):
        gw.write_config(main_extra=f"\toption dns_hold '{hold}'\n")
        gw.signal(signal.SIGHUP)
        wait_for(lambda n=reloads: gw.status()["counters"].get("reloads") == n, 5, "reload")
        assert gw.status()["dns_path"] == path
        assert try_connect(lab, ms.ns, f"h{reloads}.dyndns.loxonecloud.com:30357", "203.0.113.7:22") == [
            "open", "open"]
        mangle = lab.run(lab.ns_router, "iptables-save", "-t", "mangle").stdout
        assert "--queue-num 7053" in mangle and "NFLOG" in mangle
        assert ("0x20000000" in mangle) == (hold != "answer")  # the hold rule's mark
        assert ("loxgw_held" in mangle) == (hold == "auto")
    assert gw.status()["counters"]["dns_handler_errors"] == 0


def test_without_nflog_answers_are_held_instead(lab: Lab) -> None:
    """Another program owns loxgw's NFLOG group: loxgw falls back to holding DNS itself."""
    squatter = lab.popen(lab.ns_router, [sys.executable, "-c",
                                         "import time; from loxgw.edges.nflog import CopyLog; held = CopyLog(7053); "
                                         "print('ready', flush=True); time.sleep(120)"], stdout=subprocess.PIPE)
    assert squatter.stdout is not None and squatter.stdout.readline().strip() == b"ready"
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    gw = Loxgw(lab).start()
    status = gw.status()
    assert status["dns_path"] == "queued"
    assert "no NFLOG for DNS copies" in gw.log()
    assert try_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com:22") == ["open"]
    counters = gw.status()["counters"]
    assert (counters["dns_answers_matched"], counters["dns_held_packets"]) == (1, 0)
    mangle = lab.run(lab.ns_router, "iptables-save", "-t", "mangle").stdout
    assert "NFLOG" not in mangle and "--queue-num 7053" in mangle


def test_sigterm_saves_entries_and_the_next_start_restores_them(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    gw = Loxgw(lab).start()
    assert resolve_and_connect(lab, ms.ns, "a7.remcov3.loxonecloud.com", 22) == "open"
    assert gw.stop() == 0
    Loxgw(lab).start()
    assert try_connect(lab, ms.ns, "203.0.113.7:22") == ["open"]


def test_dns_over_tcp_opens_too(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    gw = Loxgw(lab).start()
    script = r"""
from dnslib import DNSRecord
reply = DNSRecord.question("a7.remcov3.loxonecloud.com").send("192.168.20.1", 53, tcp=True, timeout=3)
print(DNSRecord.parse(reply).a.rdata)
"""
    assert lab.run(ms.ns, sys.executable, "-c", script).stdout.strip() == "203.0.113.7"
    assert try_connect(lab, ms.ns, "203.0.113.7:22") == ["open"]
    assert gw.status()["counters"]["dns_answers_matched"] == 1


def test_passive_mode_opens_after_the_answer(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    listen(lab, "203.0.113.7", 22)
    gw = Loxgw(lab, main_extra="\toption dns_mode 'passive'\n").start()
    assert gw.status()["queue_mode"] == "passive"
    assert lab.run(lab.ns_router, "iptables-save", "-t", "mangle").stdout.count("NFQUEUE") == 0
    resolved = lab.run(ms.ns, sys.executable, "-c",
                       "import socket; print(socket.gethostbyname('a7.remcov3.loxonecloud.com'))").stdout.strip()
    assert resolved == "203.0.113.7"
    # No delay on the answer, so the insert may trail it by a moment (the passive mode's trade-off).
    wait_for(lambda: try_connect(lab, ms.ns, "203.0.113.7:22") == ["open"], 3, "entry from the sniffed answer")
    assert try_connect(lab, ms.ns, "203.0.113.7:49001") == ["blocked"]
    assert gw.status()["counters"]["dns_answers_matched"] == 1


def test_ipv6_answers_open_ipv6_per_device() -> None:
    with Lab(ipv6=True) as lab:
        ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
        other = lab.add_host("other", "iot", 11, mac="02:00:00:a0:00:02")
        proc = lab.popen(lab.ns_wan, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", "2001:db8:113::7",
                                      "22", "49001"], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        gw = Loxgw(lab).start()
        script = r"""
import socket, sys
addr = socket.getaddrinfo("a7.remcov3.loxonecloud.com", 22, socket.AF_INET6, socket.SOCK_STREAM)[0][4][0]
out = [addr]
for port in (22, 49001):
    s = socket.socket(socket.AF_INET6); s.settimeout(0.5)
    try:
        s.connect((addr, port)); out.append("open")
    except OSError:
        out.append("blocked")
print(" ".join(out))
"""
        assert lab.run(ms.ns, sys.executable, "-c", script).stdout.split() == ["2001:db8:113::7", "open", "blocked"]
        probe = r"""
import socket
s = socket.socket(socket.AF_INET6); s.settimeout(0.5)
print("open" if s.connect_ex(("2001:db8:113::7", 22)) == 0 else "blocked")
"""
        assert lab.run(other.ns, sys.executable, "-c", probe).stdout.strip() == "blocked"
        entries = {(e["device"], e["address"], e["ports"]) for e in gw.status()["dns_entries"]}
        assert ("2001:db8:20::a", "2001:db8:113::7", "22") in entries


# Waves of 100 queries sent at once (dnsmasq forwards at most 150 at a time), each wave's answers read
# before the next: a few thousand answers a second on the CI machine.
FLOOD = r"""
import socket, sys
from dnslib import DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
answered = 0
for wave in range(int(sys.argv[1]) // 100):
    for i in range(wave * 100, wave * 100 + 100):
        q = DNSRecord.question(f"f{i}.dyndns.loxonecloud.com")
        q.header.id = i  # dnslib's random ids collide among 100 in flight: an answer would match another query
        s.sendto(q.pack(), (sys.argv[2], 53))
    try:
        for _ in range(100):
            s.recv(4096)
            answered += 1
    except socket.timeout:
        pass
print(answered)
"""


def test_dns_hold_auto_holds_answers_up_to_a_rate_and_copies_them_beyond(lab: Lab) -> None:
    """`auto`: a device's answers wait for their grants while they come slowly; beyond the rate they are
    copied (and the first packets to their addresses wait instead), and granted all the same."""
    gw, device = answers_held(lab, "auto", "answers held, beyond a rate copies")
    counters = gw.status()["counters"]
    assert (counters["dns_answers_matched"], counters["dns_held_dns_packets"], counters["dns_held_packets"]) == (
        2, 2, 0)
    # 1,000 answers in waves of 100: the burst (100) is held, and then 1,000 a second; the rest (most of
    # them unless the machine takes ~1 s for the flood) is copied. Each is granted all the same.
    answered = int(lab.run(device, sys.executable, "-c", FLOOD, "1000", IOT_GW, timeout=60).stdout)
    assert answered == 1000
    # A copy may still wait to be read (in a batch, 2 ms) when its answer has arrived.
    wait_for(lambda: gw.status()["counters"]["dns_answers_matched"] == 1002, 2, "every answer inspected")
    counters = gw.status()["counters"]
    held = counters["dns_held_dns_packets"] - 2
    assert counters["dns_copies_lost"] == 0, counters
    assert 100 <= held < 1000, counters
    assert counters["dns_handler_errors"] == 0
    assert try_connect(lab, device, "x2.dyndns.loxonecloud.com:30357") == ["open"]
