"""The discovery relay across VLANs: search and answer, Client/Gateway, blink sync, floods, two relays."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from loxgw.core import relaywire
from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import Lab, wait_for

# The Python path (option kernel 'off'); the kernel path's tests are at the end.
RELAY = """
config relay
\tlist zone 'iot'
\tlist zone 'lan'
\toption rate_limit '20'
\toption kernel 'off'
"""

# Receive datagrams on PORT for SECONDS; print "src_ip:src_port payload" per datagram.
# With REPLY, answer the first one (LoxLIVE to the asker's 7071) and stop. With SETTLE, stop
# SETTLE seconds after the first datagram (enough to see a duplicate, without waiting out the window).
LISTEN = r"""
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
reply = sys.argv[3] if len(sys.argv) > 3 else ""
settle = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind(("", port))
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        data, addr = s.recvfrom(4096)
    except OSError:
        break
    print(f"{addr[0]}:{addr[1]} {data.hex()}", flush=True)
    if settle:
        end = min(end, time.monotonic() + settle)
    if reply:
        s.sendto(reply.encode(), (addr[0], 7071))
        break
"""

# Send one datagram to (DST, PORT) from a socket bound to SPORT (0: any), optionally
# wait for an answer on 7071; prints the answer.
ASK = r"""
import socket, sys
dst, port, payload, wait = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), float(sys.argv[4])
answers = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
answers.bind(("", 7071))
answers.settimeout(wait)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.sendto(payload, (dst, port))
if wait:
    try:
        data, addr = answers.recvfrom(4096)
        print(f"{addr[0]} {data.decode(errors='replace')}")
    except OSError:
        print("no answer")
"""

FLOOD = r"""
import socket, sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
start = time.perf_counter(); sent = 0
while sent < rate * seconds:
    if time.perf_counter() >= start + sent / rate:
        s.sendto(b"\x00", ("255.255.255.255", 7070)); sent += 1
print(sent, time.perf_counter() - start)
"""


def listen(lab: Lab, ns: str, port: int, seconds: float, reply: str = "",
           settle: float = 0.0) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-c", LISTEN, str(port), str(seconds), reply, str(settle)]
    proc = lab.popen(ns, args, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def received(proc: subprocess.Popen[bytes]) -> list[str]:
    out, _ = proc.communicate(timeout=30)
    return out.decode().split("\n")[:-1]


def test_app_finds_miniserver_across_vlans(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    app = lab.add_host("app", "lan", 20)
    Loxgw(lab, extra=RELAY).start()
    listener = listen(lab, ms.ns, 7070, 15, reply="LoxLIVE: Miniserver Home 192.168.20.10:80 504F94A00001 15.0.0.0")
    answer = lab.run(app.ns, sys.executable, "-c", ASK, "255.255.255.255", "7070", "00", "3").stdout.strip()
    seen = received(listener)
    assert len(seen) == 1
    src, payload = seen[0].split(" ")
    assert (src.split(":")[0], payload) == (app.ip, "00")  # the App's own source address
    assert answer == f"{ms.ip} LoxLIVE: Miniserver Home 192.168.20.10:80 504F94A00001 15.0.0.0"


def test_client_gateway_and_blink_sync_cross_both_ways(lab: Lab) -> None:
    ms1 = lab.add_host("ms1", "iot", 10, mac="50:4f:94:a0:00:01")
    ms2 = lab.add_host("ms2", "lan", 30, mac="50:4f:94:a0:00:02")
    gw = Loxgw(lab, extra=RELAY).start()
    for sender, receiver, port in ((ms1, ms2, 7075), (ms2, ms1, 7072), (ms1, ms2, 7079)):
        listener = listen(lab, receiver.ns, port, 15.0, settle=1.0)
        lab.run(sender.ns, sys.executable, "-c", ASK, "255.255.255.255", str(port), "c0ffee", "0")
        seen = received(listener)
        assert [line.split(":")[0] for line in seen] == [sender.ip], (port, seen)
    # A subnet-directed broadcast is relayed too.
    listener = listen(lab, ms2.ns, 7073, 15.0, settle=1.0)
    lab.run(ms1.ns, sys.executable, "-c", ASK, "192.168.20.255", "7073", "01", "0")
    assert [line.split(":")[0] for line in received(listener)] == [ms1.ip]
    # Not a relayed port: stays in its VLAN.
    listener = listen(lab, ms2.ns, 7078, 5.0)
    lab.run(ms1.ns, sys.executable, "-c", ASK, "255.255.255.255", "7078", "01", "0")
    assert received(listener) == []
    counters = gw.status()["relay"]["counters"]
    assert counters["br-iot:7075:received"] == 1
    assert counters["br-lan:7075:relayed"] == 1
    assert not any(":7078:" in key for key in counters)  # no socket on a port not relayed


@pytest.mark.parametrize("path", ["python", "kernel"])
def test_flood_is_cut_to_the_rate_limit(lab: Lab, path: str) -> None:
    flooder = lab.add_host("flooder", "lan", 40)
    app = lab.add_host("app", "lan", 20)
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    gw = Loxgw(lab, extra=KERNEL_RELAY if path == "kernel" else RELAY).start()
    assert gw.relay_on_path(path)["path"] == path
    listener = listen(lab, ms.ns, 7070, 8.0)
    flood = lab.popen(flooder.ns, [sys.executable, "-c", FLOOD, "20000", "1"], stdout=subprocess.PIPE)
    time.sleep(0.3)  # the flood is under way (real traffic, not logic time)
    lab.run(app.ns, sys.executable, "-c", ASK, "255.255.255.255", "7070", "a5", "0")
    flood_out, _ = flood.communicate(timeout=30)
    seen = received(listener)
    from_flooder = [s for s in seen if s.startswith(flooder.ip + ":")]
    from_app = [s for s in seen if s.startswith(app.ip + ":")]
    sent, seconds = flood_out.split()
    assert int(sent) == 20000
    # 20/s plus a burst of 20 over the flood's duration (about 1 s; longer on a loaded machine).
    assert 20 <= len(from_flooder) <= 20 + 20 * float(seconds) + 2, (len(from_flooder), seconds)
    assert len(from_app) == 1
    if path == "kernel":
        def dropped() -> int:
            return int(gw.status()["relay"]["kernel_counters"].get("br-lan:dropped_rate_source", 0))

        wait_for(lambda: dropped() >= 15000, 10, "the kernel's drop counter", interval=0.2)
        return
    counters = gw.status()["relay"]["counters"]
    assert counters.get("br-lan:7070:dropped_rate_source", 0) >= 15000
    # Its own copies never reached the relay's sockets (the kernel's filter keeps them out).
    assert [k for k in counters if k.endswith(":peer_copy_seen")] == []


@pytest.mark.parametrize("kernel", ["off", "auto"])
def test_interface_added_after_start_is_relayed_to(lab: Lab, kernel: str) -> None:
    app = lab.add_host("app", "lan", 20)
    extra = RELAY.replace("\toption kernel 'off'", f"\toption kernel '{kernel}'") + "\tlist interface 'br-new'\n"
    gw = Loxgw(lab, extra=extra).start()
    lab.add_vlan("new", "192.168.30.1")
    late = lab.add_host("late", "new", 10)

    def relayed() -> bool:
        listener = listen(lab, late.ns, 7070, 5.0, settle=0.5)
        lab.run(app.ns, sys.executable, "-c", ASK, "255.255.255.255", "7070", "00", "0")
        return [s.split(":")[0] for s in received(listener)] == [app.ip]

    wait_for(relayed, 30, "relay to the new interface", interval=0.1)
    gw.relay_on_path("kernel" if kernel == "auto" else "python")


SECOND_RELAY = """
config loxgw 'main'
\toption firewall 'standalone'
\toption dns_mode 'off'
\toption status_socket '{socket}'

config relay
\tlist interface 'lan0'
\tlist interface 'iot0'
\toption kernel 'off'
"""


def test_two_relays_on_the_same_segments_give_one_copy(lab: Lab) -> None:
    app = lab.add_host("app", "lan", 20)
    phone = lab.add_host("phone", "lan", 21)
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    first = Loxgw(lab, extra=RELAY).start()
    box = lab.add_relay_box("relay2", 3)
    second = Loxgw(lab, ns=box, config_text=SECOND_RELAY, name="relay2").start()
    # The first broadcast teaches each relay that the other is there: both relay it, unless the
    # first copy reached the other relay before it read the original (then it stood back already).
    listener = listen(lab, ms.ns, 7070, 15.0, settle=1.0)
    lab.run(app.ns, sys.executable, "-c", ASK, "255.255.255.255", "7070", "00", "0")
    first_copies = len(received(listener))
    assert 1 <= first_copies <= 2
    for payload in ("01", "02", "03"):
        # Long windows for Python start-ups on a loaded 2-core machine; each listener stops 1 s
        # after its first datagram, which is time enough for a duplicate to show.
        listener = listen(lab, ms.ns, 7070, 15.0, settle=1.0)
        same_segment = listen(lab, phone.ns, 7070, 15.0, settle=1.0)
        lab.run(app.ns, sys.executable, "-c", ASK, "255.255.255.255", "7070", payload, "0")
        seen = received(listener)
        counters = [gw.status()["relay"]["counters"] for gw in (first, second)]
        assert len(seen) == 1, (seen, counters)
        assert seen[0].startswith(f"{app.ip}:") and seen[0].endswith(f" {payload}"), seen
        # Back on the asker's own segment: only the original, no copy came back.
        assert [line.split(" ")[1] for line in received(same_segment)] == [payload]
    counters = [gw.status()["relay"]["counters"] for gw in (first, second)]
    left = sum(v for c in counters for k, v in c.items() if k.endswith(":left_to_peer"))
    # Each later broadcast: one relay sent, the other stood back; the first too if only one copy came.
    assert left == 3 + (2 - first_copies), counters


def test_any_configured_port_is_relayed(lab: Lab) -> None:
    """The Intercom Gen. 1 search ports (UDP 5000, 8110, 8112), configured: relayed like 7070."""
    ms = lab.add_host("ms", "lan", 30)
    intercom = lab.add_host("intercom", "iot", 11)
    Loxgw(lab, extra=RELAY + "\tlist port '5000'\n\tlist port '8110'\n\tlist port '8112'\n").start()
    for port in (5000, 8110, 8112):
        listener = listen(lab, intercom.ns, port, 15.0, settle=1.0)
        lab.run(ms.ns, sys.executable, "-c", ASK, "255.255.255.255", str(port), "c0ffee", "0")
        assert [line.split(":")[0] for line in received(listener)] == [ms.ip], port


GEN1_DOOR = """
config device 'door'
\toption type 'intercom_gen1'
\toption ip '192.168.20.11'
"""


def test_gen1_search_crosses_only_with_a_gen1_intercom_configured(lab: Lab) -> None:
    """UDP 5000 stays in its VLAN until a `config device` of type intercom_gen1 exists (then after SIGHUP)."""
    ms = lab.add_host("ms", "lan", 30)
    intercom = lab.add_host("intercom", "iot", 11)
    gw = Loxgw(lab, extra=RELAY).start()
    listener = listen(lab, intercom.ns, 5000, 4.0)
    lab.run(ms.ns, sys.executable, "-c", ASK, "255.255.255.255", "5000", "c0ffee", "0")
    assert received(listener) == []
    gw.write_config(extra=RELAY + GEN1_DOOR)
    gw.signal(signal.SIGHUP)

    def relayed(port: int) -> bool:
        listener = listen(lab, intercom.ns, port, 3.0, settle=0.5)
        lab.run(ms.ns, sys.executable, "-c", ASK, "255.255.255.255", str(port), "c0ffee", "0")
        return [line.split(":")[0] for line in received(listener)] == [ms.ip]

    wait_for(lambda: relayed(5000), 30, "the Gen. 1 search relayed after the reload", interval=0.1)
    assert (relayed(8110), relayed(8112)) == (True, True)
    assert "br-lan:5000:relayed" not in gw.status()["relay"]["counters"]  # it came from lan: relayed to iot
    assert gw.status()["relay"]["counters"]["br-iot:5000:relayed"] >= 1


# An Audioserver answers a search from its own port 7091 to the asker's source address and port.
ANSWER_FROM_7091 = LISTEN.replace("s.sendto(reply.encode(), (addr[0], 7071))",
                                  "a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(('', 7091)); "
                                  "a.sendto(reply.encode(), addr)")
# Search from one socket and wait for the answer on it (to the search's own source port).
ASK_ON_OWN_PORT = r"""
import socket, sys
dst, port, payload, wait = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.settimeout(wait)
s.sendto(payload, (dst, port))
try:
    data, addr = s.recvfrom(4096)
    print(f"{addr[0]}:{addr[1]} {data.decode(errors='replace')}")
except OSError:
    print("no answer")
"""


def test_answer_from_any_source_port_reaches_the_asker(lab: Lab) -> None:
    audioserver = lab.add_host("as", "iot", 12, mac="50:4f:94:b0:00:01")
    app = lab.add_host("app", "lan", 20)
    Loxgw(lab, extra=RELAY).start()
    kind = lab.run(lab.ns_router, "nft", "list", "set", "inet", "loxgw", "relay_answers4").stdout
    assert "type ifname . ipv4_addr . inet_service" in kind
    reply = '{"t":"Audioserver","n":"Kitchen","s":"50:4F:94:B0:00:01","p":"7091"}'
    listener = lab.popen(audioserver.ns, [sys.executable, "-c", ANSWER_FROM_7091, "7070", "15", reply],
                         stdout=subprocess.PIPE)
    assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
    answer = lab.run(app.ns, sys.executable, "-c", ASK_ON_OWN_PORT, "255.255.255.255", "7070", "00", "3").stdout
    assert answer.strip() == f"{audioserver.ip}:7091 {reply}"


# Broadcast COUNT datagrams (4-byte sequence numbers) at RATE/s, in bursts at most 0.5 ms apart
# (spinning would take a core from the relays under test on this 2-core machine).
SEQUENCED_FLOOD = r"""
import socket, struct, sys, time
rate, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
start = time.monotonic(); i = 0
while i < count:
    due = min(count, int((time.monotonic() - start) * rate) + 1)
    while i < due:
        s.sendto(struct.pack("!I", i), ("255.255.255.255", 7070)); i += 1
    wait = start + i / rate - time.monotonic()
    if wait > 0:
        time.sleep(max(wait, 0.0005))
print(time.monotonic() - start)
"""

# Count what arrives on 7070 per sequence number for SECONDS; print {sequence: copies} as JSON.
COUNT_COPIES = r"""
import collections, json, socket, struct, sys, time
seconds = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
s.bind(("", 7070)); s.settimeout(0.2)
print("ready", flush=True)
seen = collections.Counter(); end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        data = s.recv(64)
    except OSError:
        continue
    if len(data) == 4:
        seen[struct.unpack("!I", data)[0]] += 1
print(json.dumps(seen))
"""

FLOOD_RELAY = """
config relay
\tlist zone 'iot'
\tlist zone 'lan'
\toption rate_limit '100000'
\toption kernel 'off'
"""

FLOOD_SECOND_RELAY = SECOND_RELAY + "\toption rate_limit '100000'\n"


def test_two_relays_under_a_flood_copy_each_broadcast_once(lab: Lab) -> None:
    """60,000 broadcasts in 3 s; each relay's global limit (2,000/s) admits its own share of them.

    Where both admitted one, one relay leads on the segment and sends at once, the other waits
    for the leader's copy; where only one did, that one sends. After the first second (the relays
    learn of each other from their first copies) no broadcast may arrive twice.
    """
    flooder = lab.add_host("flooder", "lan", 40)
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    first = Loxgw(lab, extra=FLOOD_RELAY, main_extra="\toption log_level 'info'\n").start()
    box = lab.add_relay_box("relay2", 3)
    second = Loxgw(lab, ns=box, config_text=FLOOD_SECOND_RELAY, name="relay2").start()
    rate, count = 20000, 60000
    listener = lab.popen(ms.ns, [sys.executable, "-c", COUNT_COPIES, "8"], stdout=subprocess.PIPE)
    assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
    took = float(lab.run(flooder.ns, sys.executable, "-c", SEQUENCED_FLOOD, str(rate), str(count),
                         timeout=60).stdout)
    seen = {int(k): v for k, v in json.loads(listener.communicate(timeout=30)[0]).items()}
    counters = [gw.status()["relay"]["counters"] for gw in (first, second)]
    admitted = [c.get("br-iot:7070:relayed", 0) + c.get("iot0:7070:relayed", 0) for c in counters]
    later = {seq: n for seq, n in seen.items() if seq >= rate}  # sent after the first second
    twice = sorted(seq for seq, n in later.items() if n > 1)
    figures = (f"flood took {took:.1f} s; {sum(seen.values())} copies of {len(seen)} broadcasts; relayed "
               f"{admitted}; after the first second {sum(later.values())} copies of {len(later)}, "
               f"{len(twice)} twice: {twice[:10]}; counters {counters}")
    print(figures)  # the closing note's figure: `pytest -s -k flood_copy`
    assert twice == [], figures
    assert len(later) >= 2000, figures  # the flood did get through, from both relays' shares
    assert all(n > 0 for n in admitted), figures


# --- the kernel path (core.relaykernel): a netdev table copies, loxgw's process only watches ---

KERNEL_RELAY = """
config relay
\tlist zone 'iot'
\tlist zone 'lan'
\toption rate_limit '20'
"""

# Frames to UDP 7070-7079 arriving on eth0 for SECONDS (stop SETTLE s after the first); hex per line.
CAPTURE = r"""
import socket, sys, time
seconds, settle = float(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("eth0", 0))
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        frame = s.recv(2048)
    except OSError:
        break
    if len(frame) >= 38 and frame[23] == 17 and 7070 <= int.from_bytes(frame[36:38], "big") <= 7079:
        print(frame.hex(), flush=True)
        end = min(end, time.monotonic() + settle)
"""

# ETHTOOL_STXCSUM off (there is no ethtool binary): the sender's frames carry finished UDP
# checksums, as on a real wire, so the copies' bytes can be compared with the Python path's.
TX_CHECKSUM_OFF = r"""
import ctypes, fcntl, socket, struct
value = ctypes.create_string_buffer(struct.pack("II", 0x17, 0))
fcntl.ioctl(socket.socket(), 0x8946, struct.pack("16sP", b"eth0", ctypes.addressof(value)) + b"\0" * 16)
"""


def netdev_tables(lab: Lab) -> list[str]:
    return [line for line in lab.run(lab.ns_router, "nft", "list", "tables").stdout.splitlines()
            if line.startswith("table netdev")]


def test_the_kernel_copies_as_the_python_path_does_and_opens_the_answer_window(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    app = lab.add_host("app", "lan", 20)
    lab.run(app.ns, sys.executable, "-c", TX_CHECKSUM_OFF)
    gw = Loxgw(lab, extra=KERNEL_RELAY).start()
    relay = gw.relay_on_path("kernel")
    assert relay["path_reason"] == "the kernel copies (nftables netdev table)"
    assert netdev_tables(lab) == ["table netdev loxgw_relay"]
    capture = lab.popen(ms.ns, [sys.executable, "-c", CAPTURE, "15", "1"], stdout=subprocess.PIPE)
    assert capture.stdout is not None and capture.stdout.readline().strip() == b"ready"
    listener = listen(lab, ms.ns, 7070, 15, reply="LoxLIVE: Miniserver Home 192.168.20.10:80 504F94A00001 15.0.0.0")
    answer = lab.run(app.ns, sys.executable, "-c", ASK, "255.255.255.255", "7070", "00", "3").stdout.strip()
    seen = received(listener)
    frames = [bytes.fromhex(line) for line in received(capture)]
    assert len(seen) == 1 and len(frames) == 1, (seen, frames)
    # The answer window the kernel's relayed original opened let the Miniserver's answer through.
    assert answer == f"{ms.ip} LoxLIVE: Miniserver Home 192.168.20.10:80 504F94A00001 15.0.0.0"
    sport = int(seen[0].split(" ")[0].split(":")[1])
    mac = bytes.fromhex(json.loads(lab.run(lab.ns_router, "ip", "-j", "link", "show", "br-iot").stdout)[0]
                        ["address"].replace(":", ""))
    src, iot_gw = (int.from_bytes(socket.inet_aton(a), "big") for a in (app.ip, "192.168.20.1"))
    template = relaywire.CopyTemplate(iot_gw, int.from_bytes(socket.inet_aton("192.168.20.255"), "big"), mac)
    want = template.frame(src, sport, 7070, 64, b"\x00", relaywire.udp_sum(src, sport, 7070, b"\x00"))
    assert frames[0].hex() == want.hex()
    assert run_counters(gw) == {}  # no original reached loxgw's process

    def counted() -> bool:
        relay = gw.status()["relay"]
        return (relay["kernel_counters"].get("br-lan>br-iot:copies"), relay["counters"].get("br-iot:7070:relayed"),
                relay["counters"].get("br-lan:7070:received")) == (1, 1, 1)

    wait_for(counted, 10, "the kernel's counters in the status", interval=0.2)
    assert gw.stop() == 0
    assert netdev_tables(lab) == []


def run_counters(gw: Loxgw) -> dict[str, int]:
    """The Python path's per-port counters (the kernel's are read a moment later: none yet)."""
    relay = gw.status()["relay"]
    return {k: v for k, v in relay["counters"].items() if k not in relay["kernel_counters"] and k.count(":") == 2}


def test_a_peer_relay_hands_the_copies_back_to_python_and_each_broadcast_crosses_once(lab: Lab) -> None:
    app = lab.add_host("app", "lan", 20)
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    first = Loxgw(lab, extra=KERNEL_RELAY).start()
    first.relay_on_path("kernel")
    box = lab.add_relay_box("relay2", 3)
    # A second kernel relay: the kernel does not arbitrate, so it copies every broadcast (a Python
    # peer might see the kernel's copy first and stand back for good, never showing itself).
    second = Loxgw(lab, ns=box, config_text=SECOND_RELAY.replace("\toption kernel 'off'\n", ""),
                   name="relay2").start()
    second.relay_on_path("kernel")
    # The first broadcast: both copy it; each sees the other's copy and hands its copies to
    # loxgw's process, whose arbiters let one relay lead.
    listener = listen(lab, ms.ns, 7070, 15.0, settle=1.0)
    lab.run(app.ns, sys.executable, "-c", ASK, "255.255.255.255", "7070", "00", "0")
    assert len(received(listener)) == 2
    for gw in (first, second):
        wait_for(lambda gw=gw: gw.status()["relay"]["path"] == "python", 10, "the fall-back to the Python path")
    assert first.status()["relay"]["path_reason"] == \
        "a second relay copies on the same segments; loxgw's process arbitrates"
    assert netdev_tables(lab) == []
    for payload in ("01", "02", "03"):
        listener = listen(lab, ms.ns, 7070, 15.0, settle=1.0)
        lab.run(app.ns, sys.executable, "-c", ASK, "255.255.255.255", "7070", payload, "0")
        seen = received(listener)
        assert len(seen) == 1 and seen[0].endswith(f" {payload}"), seen


def test_a_flushed_ruleset_gets_its_netdev_table_back_and_reloads_work(lab: Lab) -> None:
    """`fw4 flush` (nft flush ruleset) deletes every table; the relay applies its own again."""
    app = lab.add_host("app", "lan", 20)
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    gw = Loxgw(lab, extra=KERNEL_RELAY).start()
    gw.relay_on_path("kernel")
    lab.run(lab.ns_router, "nft", "flush", "ruleset")
    wait_for(lambda: netdev_tables(lab) == ["table netdev loxgw_relay"], 10, "the netdev table applied again")
    listener = listen(lab, ms.ns, 7070, 15.0, settle=1.0)
    lab.run(app.ns, sys.executable, "-c", ASK, "255.255.255.255", "7070", "07", "0")
    assert [line.split(":")[0] for line in received(listener)] == [app.ip]
    relay = gw.status()["relay"]
    assert (relay["path"], relay["counters"]["relay_kernel_restores"]) == ("kernel", 1)
    # A reload declares table inet loxgw again: its answer-window set, which the kernel path's
    # chain writes, must match the declaration.
    gw.write_config(extra=KERNEL_RELAY + GEN1_DOOR)
    gw.signal(signal.SIGHUP)
    wait_for(lambda: gw.status()["counters"].get("reloads") == 1, 10, "the reload")
    assert gw.status()["counters"].get("reloads_failed") is None
