"""DNS answers open exactly the catalogue's endpoints, per device, before the answer arrives."""

from __future__ import annotations

import subprocess
import sys

from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Lab

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
    gw = Loxgw(lab).start()
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
    """250 names, each with its own address, resolved and connected to at once: all pass.

    Each name has a distinct address, so every connection needs the element its
    own answer inserted; none can ride on an earlier one.
    """
    records = {f"n{i}.dyndns.loxonecloud.com": f"192.0.2.{i}" for i in range(1, 251)}
    with Lab(extra_records=records) as lab:
        ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
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
        assert lab.run(ms.ns, sys.executable, "-c", script, timeout=120).stdout.strip() == "250"
        # And without an answer the same addresses stay closed for another device.
        other = lab.add_host("other", "iot", 11)
        assert try_connect(lab, other.ns, "192.0.2.1:30000") == ["blocked"]
