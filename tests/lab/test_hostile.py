"""Hostile devices in the IoT VLAN: forged answers, redirects, drips, entity bombs, markup in names.

Done the way an attacker in the devices VLAN would: raw sockets with spoofed
source addresses, a host that watches loxgw's searches and answers them at
once (or just after the window), and a hostile HTTP server behind an SSDP
answer. The peers run as `python -m tests.lab.test_hostile PEER ...` inside a
host's namespace.

Two targets judge the discovery answers: the daemon (`loxgw run`), and
`wired`, a harness running edges.detect.Detector with on_answer ->
core.discovery.admit on an Inventory, as the devices service is to be wired.
Each test prints its measured figure (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.lab.loxgwproc import REPO, Loxgw
from tests.lab.netlab import IOT_GW, Host, Lab, wait_for

XSS = "<img src=x onerror=alert(1)>"
MS_MAC = "50:4f:94:a0:00:01"


def peer(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.lab.test_hostile", *args]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")


def start_peer(lab: Lab, host: Host | str, *args: str) -> subprocess.Popen[bytes]:
    ns = host if isinstance(host, str) else host.ns
    proc = lab.popen(ns, peer(*args), stdout=subprocess.PIPE, env=env())
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


# --- targets ------------------------------------------------------------------------


class Target:
    """What judges discovery answers: the daemon, or the wired harness."""

    def devices(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        raise NotImplementedError

    def device(self, ip: str) -> dict[str, Any]:
        return next((d for d in self.devices() if d["ip"] == ip), {})


class Daemon(Target):
    def __init__(self, lab: Lab, probe_interval: int, main_extra: str = "", extra: str = "") -> None:
        self.gw = Loxgw(lab, extra=extra, main_extra=f"\toption probe_interval '{probe_interval}'\n" + main_extra)
        self.gw.start()

    def devices(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.gw.status()["devices"]
        return result

    def counters(self) -> dict[str, int]:
        status = self.gw.status()
        result: dict[str, int] = status.get("counters", {}) | status.get("devices_refused", {})
        return result


class Wired(Target):
    def __init__(self, lab: Lab, probe_interval: int, strict: bool = False) -> None:
        self.path = lab.path("wired.json")
        lab.popen(lab.ns_router, peer("wired", "br-iot", str(probe_interval), self.path, str(int(strict))),
                  env=env())
        wait_for(lambda: os.path.exists(self.path), 10, "the wired detector")

    def _read(self) -> dict[str, Any]:
        with open(self.path, encoding="utf-8") as handle:
            result: dict[str, Any] = json.load(handle)
        return result

    def devices(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._read()["devices"]
        return result

    def counters(self) -> dict[str, int]:
        result: dict[str, int] = self._read()["counters"]
        return result


def target(lab: Lab, kind: str, probe_interval: int) -> Target:
    """"daemon", "wired", or "wired-strict" (admit(..., neighbour_required=True))."""
    return Daemon(lab, probe_interval) if kind == "daemon" else Wired(lab, probe_interval, kind == "wired-strict")


# --- discovery answers ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["daemon", "wired"])
def test_forged_unsolicited_answers_create_no_device(lab: Lab, kind: str) -> None:
    attacker = lab.add_host("attacker", "iot", 66)
    forger = start_peer(lab, attacker, "forge", "unsolicited", "80")
    judge = target(lab, kind, probe_interval=30)
    assert forger.wait(timeout=60) == 0
    time.sleep(1.0)  # let the last forged datagrams be read (not to let logic time pass)
    forged = [d for d in judge.devices() if str(d["name"]).startswith("Fake")]
    print(f"\n[{kind}] forged unsolicited answers: 80 sent, {len(forged)} devices created, "
          f"refused_unsolicited={judge.counters().get('refused_unsolicited', 0)}")
    assert forged == []
    assert judge.counters().get("refused_unsolicited", 0) >= 40  # half are text answers to 7071


@pytest.mark.parametrize("kind", ["daemon", "wired", "wired-strict"])
def test_forged_flood_never_pushes_out_a_real_miniserver(lab: Lab, kind: str) -> None:
    attacker = lab.add_host("attacker", "iot", 66)
    ms = lab.add_host("ms", "iot", 10, mac=MS_MAC)
    judge = target(lab, kind, probe_interval=2)
    forger = start_peer(lab, attacker, "forge", "solicited", "300")
    assert forger.wait(timeout=120) == 0
    lab.popen(ms.ns, [sys.executable, "-m", "tests.lab.peer", "loxlive", "Miniserver Real", f"{ms.ip}:80",
                      ms.mac.replace(":", "").upper()], stdout=subprocess.DEVNULL)
    lab.run(ms.ns, "ping", "-c1", "-W1", IOT_GW)
    wait_for(lambda: judge.device(ms.ip).get("product") == "miniserver", 60, "the real Miniserver")
    devices = judge.devices()
    forged = [d for d in devices if str(d["name"]).startswith("Fake")]
    real = judge.device(ms.ip)
    print(f"\n[{kind}] solicited flood: 300 forged answers, {len(forged)} forged devices (discovery only), "
          f"{len(devices)} devices; real Miniserver kept: {real.get('name')!r} {real.get('source')}")
    assert (real["mac"], real["name"]) == (ms.mac, "Miniserver Real")
    assert len(devices) <= 256
    if kind == "wired-strict":
        assert (forged, judge.counters().get("refused_no_neighbour", 0) >= 250) == ([], True)


@pytest.mark.parametrize("kind", ["daemon", "wired"])
def test_answer_from_a_host_without_a_loxone_mac_creates_no_device(lab: Lab, kind: str) -> None:
    tv = lab.add_host("tv", "iot", 12, mac="02:00:00:00:00:0c")
    lab.popen(tv.ns, [sys.executable, "-m", "tests.lab.peer", "loxlive", "Fake TV", f"{tv.ip}:80",
                      "504F94A0000C"], stdout=subprocess.DEVNULL)
    judge = target(lab, kind, probe_interval=1)
    wait_for(lambda: judge.counters().get("refused_not_loxone_mac", 0) >= 2, 15, "the TV's answers refused")
    print(f"\n[{kind}] non-Loxone MAC answering: {judge.counters().get('refused_not_loxone_mac')} refused, "
          f"{len(judge.devices())} devices")
    assert judge.device(tv.ip) == {}


@pytest.mark.parametrize("kind", ["daemon", "wired"])
def test_audioserver_json_answer_to_the_search_port(lab: Lab, kind: str) -> None:
    audio = lab.add_host("audio", "iot", 11, mac="50:4f:94:b0:00:02")
    start_peer(lab, audio, "audioserver", "Audio Küche", audio.mac)
    judge = target(lab, kind, probe_interval=1)
    wait_for(lambda: judge.device(audio.ip).get("product") == "audioserver", 15, "the Audioserver")
    assert judge.device(audio.ip)["name"] == "Audio Küche"


# --- the description fetch ------------------------------------------------------------------


def connections(path: str) -> list[tuple[str, float, float]]:
    """(address connected to, opened, closed) per connection a logging server saw; closed is inf while open."""
    opened: dict[str, tuple[str, float]] = {}
    done = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as handle:
        for line in handle:
            kind, ident, who, at = line.split()
            if kind == "open":
                opened[ident] = (who, float(at))
            elif ident in opened:
                who, start = opened.pop(ident)
                done.append((who, start, float(at)))
    return done + [(who, start, float("inf")) for who, start in opened.values()]


def test_a_redirecting_description_makes_no_request_to_other_hosts(lab: Lab) -> None:
    hostile = lab.add_host("hostile", "iot", 77)
    victim = lab.add_host("victim", "lan", 20)
    victim_log, hostile_log = lab.path("victim.log"), lab.path("hostile.log")
    start_peer(lab, victim, "listen-log", "8080", victim_log)
    assert lab.run(lab.ns_router, sys.executable, "-m", "tests.lab.peer", "connect-tcp", victim.ip, "8080",
                   check=False).returncode == 0  # the router can reach the victim: a followed redirect would
    wait_for(lambda: len(connections(victim_log)) == 1, 5, "the control connection")
    start_peer(lab, hostile, "ssdp-hostile", "redirect", f"http://{victim.ip}:8080/steal", hostile_log, hostile.ip)
    Daemon(lab, probe_interval=1)
    wait_for(lambda: len(connections(hostile_log)) >= 3, 20, "three description fetches")
    time.sleep(1.0)
    followed = len(connections(victim_log)) - 1
    print(f"\nredirecting description: {len(connections(hostile_log))} fetches, {followed} requests to other hosts")
    assert followed == 0


def test_dripping_descriptions_do_not_slow_the_probes(lab: Lab) -> None:
    hostile = lab.add_host("hostile", "iot", 77)
    extra = [f"192.168.20.{octet}" for octet in range(78, 83)]
    for address in extra:
        lab.run(hostile.ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
    observer = lab.add_host("observer", "iot", 90)
    hostile_log = lab.path("hostile.log")
    start_peer(lab, hostile, "ssdp-hostile", "drip", "-", hostile_log, hostile.ip, *extra)
    Daemon(lab, probe_interval=2)
    wait_for(lambda: len(connections(hostile_log)) >= 4, 20, "dripping fetches under way")
    window = 30.0
    out = lab.run(observer.ns, *peer("count-searches", str(window)), timeout=window + 10).stdout.split()
    searches = int(out[0])
    seen = connections(hostile_log)
    longest = max(end - start for _, start, end in seen if end != float("inf"))
    most = max(concurrency(seen).values())
    per_host = max(max(concurrency([c for c in seen if c[0] == who]).values()) for who, _, _ in seen)
    print(f"\ndripping descriptions from 6 addresses: {searches * 60 / window:.0f} LoxLIVE searches/min "
          f"(probe_interval 2 s: 30/min), {len(seen)} fetches, at most {most} at once ({per_host} per host), "
          f"longest {longest:.1f} s")
    assert searches >= window / 2 - 1
    assert (most, per_host) == (4, 1) and longest < 4.0


def concurrency(seen: list[tuple[str, float, float]], lag: float = 0.1) -> dict[float, int]:
    """Connections open at each opening; a close is seen up to `lag` late (the server's select wakes, a thread
    runs), so a connection opened within `lag` of another's close is not counted as overlapping it."""
    return {start: sum(1 for _, s, e in seen if s <= start < e - lag) for _, start, _ in seen}


def test_an_entity_bomb_costs_no_memory(lab: Lab) -> None:
    hostile = lab.add_host("hostile", "iot", 77, mac="50:4f:94:d0:00:07")
    hostile_log = lab.path("hostile.log")
    daemon = Daemon(lab, probe_interval=1)
    assert daemon.gw.proc is not None
    time.sleep(2.0)  # start-up allocations done
    before = peak_rss(daemon.gw.proc.pid)
    start_peer(lab, hostile, "ssdp-hostile", "bomb", "-", hostile_log, hostile.ip)
    wait_for(lambda: len([c for c in connections(hostile_log) if c[2] != float("inf")]) >= 4, 20, "bombs fetched")
    growth = peak_rss(daemon.gw.proc.pid) - before
    print(f"\nentity bombs: {len(connections(hostile_log))} fetched, peak memory +{growth / 1024:.1f} MB")
    assert growth < 5 * 1024
    assert daemon.device(hostile.ip).get("product") in (None, "unknown")


def peak_rss(pid: int) -> int:
    """VmHWM of a process, KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))


# --- names ------------------------------------------------------------------------------


def test_markup_in_names_never_reaches_status(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac=MS_MAC)
    audio = lab.add_host("audio", "iot", 11, mac="50:4f:94:b0:00:02")
    lab.popen(ms.ns, [sys.executable, "-m", "tests.lab.peer", "loxlive", XSS, f"{ms.ip}:80",
                      ms.mac.replace(":", "").upper()], stdout=subprocess.DEVNULL)
    start_peer(lab, audio, "ssdp-hostile", "name", XSS, lab.path("audio.log"), audio.ip)
    leases = lab.path("leases")
    with open(leases, "w", encoding="utf-8") as handle:
        handle.write(f"{int(time.time()) + 3600} 50:4f:94:c0:00:07 192.168.20.40 <svg/onload=alert(1)>\x1b[2J *\n")
    daemon = Daemon(lab, probe_interval=1, main_extra=f"\toption dhcp_leases '{leases}'\n")
    wait_for(lambda: daemon.device(ms.ip).get("product") == "miniserver", 15, "the Miniserver")
    wait_for(lambda: daemon.device(audio.ip).get("product") == "audioserver", 15, "the Audioserver")
    wait_for(lambda: daemon.device("192.168.20.40") != {}, 15, "the leased device")
    raw = daemon.gw.cli("status", "--json", "--full").stdout
    names = sorted(str(d["name"]) for d in daemon.devices())
    print(f"\nnames in status: {names}")
    assert not any(c in raw for c in ("<img", "<svg", "\\u001b", "\x1b"))
    assert daemon.device(ms.ip)["name"] == "img src=x onerror=alert(1)"
    assert "<" not in daemon.device(audio.ip)["name"] and "onerror" in daemon.device(audio.ip)["name"]
    assert daemon.device("192.168.20.40")["name"] == "svg/onload=alert(1)[2J"


# --- peers (run inside a host's namespace) ------------------------------------------------


def spoofed_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP datagram with any source address (UDP checksum 0: none; the kernel fills the IP one)."""
    length = 8 + len(payload)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0x4000, 64, 17, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + udp


def forge(mode: str, count: int) -> None:
    """Watch loxgw's searches and send `count` forged answers from spoofed sources with distinct serials.

    solicited: at once after each search, ~100/s; unsolicited: 3.5 s after a
    search (past the window, long before the next one). Half the unsolicited
    ones are Audioserver JSON to the search's source port.
    """
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.bind(("", 7070))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    print("ready", flush=True)
    sent = 0
    while sent < count:
        _, (asker, sport) = listen.recvfrom(64)
        if asker != IOT_GW:
            continue
        if mode == "unsolicited":
            time.sleep(3.5)
        batch = min(count - sent, 150)
        for i in range(sent, sent + batch):
            src = f"192.168.20.{30 + i % 220}"
            serial = f"504F94F{i:05X}"
            if mode == "unsolicited" and i % 2:
                mac = ":".join(serial[j:j + 2] for j in range(0, 12, 2))
                payload = json.dumps({"t": "Audioserver", "n": f"Fake {i}", "s": mac, "v": "1", "p": "7091"})
                raw.sendto(spoofed_udp(src, 7091, asker, sport, payload.encode()), (asker, 0))
            else:
                payload = f"LoxLIVE: Fake {i} {src}:80 {serial} 15.1.10.2 Prog:2025-01-01"
                raw.sendto(spoofed_udp(src, 7070, asker, 7071, payload.encode()), (asker, 0))
            time.sleep(0.01)
        sent += batch


def audioserver(name: str, mac: str) -> None:
    """Answer searches as lox-audioserver does: JSON from port 7091 to the asker's address and port."""
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.bind(("", 7070))
    answer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    answer.bind(("", 7091))
    payload = json.dumps({"t": "Audioserver", "tv": "3", "n": name, "s": mac.upper(), "v": "2.5.1", "p": "7091",
                          "hn": "audio", "di": "1"}).encode()
    print("ready", flush=True)
    while True:
        _, addr = listen.recvfrom(64)
        answer.sendto(payload, addr)


def count_searches(seconds: float) -> None:
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.bind(("", 7070))
    listen.settimeout(0.2)
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, (asker, _) = listen.recvfrom(64)
        except TimeoutError:
            continue
        count += asker == IOT_GW and data == b"\x00"
    print(count)


class Log:
    """Connection log lines `open|close ID ADDRESS MONOTONIC`: ADDRESS is the one connected to (the clock is
    system-wide)."""

    def __init__(self, path: str) -> None:
        self.path, self.lock, self.next = path, threading.Lock(), 0

    def write(self, kind: str, ident: int, who: str) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{kind} {ident} {who} {time.monotonic():.3f}\n")

    def serve(self, port: int, handle: Any) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", port))
        server.listen(64)
        while True:
            conn, _ = server.accept()
            self.next += 1
            threading.Thread(target=self._one, args=(conn, conn.getsockname()[0], self.next, handle),
                             daemon=True).start()

    def _one(self, conn: socket.socket, who: str, ident: int, handle: Any) -> None:
        self.write("open", ident, who)
        try:
            handle(conn)
        except OSError:
            pass
        finally:
            conn.close()
            self.write("close", ident, who)


def listen_log(port: int, path: str) -> None:
    log = Log(path)
    print("ready", flush=True)
    log.serve(port, lambda conn: conn.recv(1024))


def laughs(levels: int = 10) -> str:
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, levels))
    return (f'<?xml version="1.0"?>\n<!DOCTYPE root [<!ENTITY l0 "lol">{entities}]>\n<root><device>'
            f"<manufacturer>Loxone Electronics GmbH</manufacturer><modelName>&l{levels - 1};</modelName>"
            "</device></root>")


def description(name: str) -> bytes:
    return (f'<?xml version="1.0"?>\n<root xmlns="urn:schemas-upnp-org:device-1-0"><device>'
            f"<friendlyName>{name}</friendlyName><manufacturer>Loxone Electronics GmbH</manufacturer>"
            f"<modelName>Loxone Audioserver {name}</modelName><serialNumber>504F94B00002</serialNumber>"
            "</device></root>").encode()


def ssdp_hostile(mode: str, arg: str, path: str, addresses: list[str]) -> None:
    """Answer M-SEARCH from each of `addresses`, LOCATION on that address; serve descriptions as `mode` says.

    redirect URL: a 302 to URL; drip: a 200 head, then one byte per 1.5 s;
    bomb: a billion-laughs document; name NAME: a Loxone description whose
    names carry NAME (as XML text, so escaped markup decodes to markup).
    """
    from xml.sax.saxutils import escape

    bodies = {"bomb": laughs().encode(), "name": description(escape(arg))}

    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        conn.recv(4096)
        if mode == "redirect":
            conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {arg}\r\nContent-Length: 0\r\n\r\n".encode())
        elif mode == "drip":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n")
            for byte in description("drip") * 10:
                readable, _, _ = select.select([conn], [], [], 1.5)
                if readable and not conn.recv(1024):
                    return  # loxgw gave up
                conn.sendall(bytes([byte]))
        else:
            body = bodies[mode]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))

    log = Log(path)
    threading.Thread(target=log.serve, args=(2869, handle), daemon=True).start()
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.bind(("", 1900))
    listen.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                      struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton(addresses[0])))
    senders = {}
    for address in addresses:
        senders[address] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        senders[address].bind((address, 0))
    print("ready", flush=True)
    while True:
        data, addr = listen.recvfrom(2048)
        if not data.startswith(b"M-SEARCH"):
            continue
        for address, sender in senders.items():
            sender.sendto((f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: upnp:rootdevice\r\n"
                           f"USN: uuid:hostile-{address}::upnp:rootdevice\r\nEXT:\r\n"
                           f"LOCATION: http://{address}:2869/desc.xml\r\nSERVER: Linux UPnP/1.0\r\n\r\n").encode(),
                          addr)


def wired(interface: str, probe_interval: int, path: str, strict: bool) -> None:
    """Detector -> discovery.admit -> Inventory, as the devices service is to wire them; state to `path`.

    `strict`: admit with neighbour_required=True.
    """
    from loxgw.core import discovery
    from loxgw.core.devices import Inventory
    from loxgw.edges import clock
    from loxgw.edges.detect import Detector

    inventory = Inventory()

    def on_answer(answer: discovery.Answer) -> None:
        discovery.admit(inventory, answer, clock.now(), neighbour_required=strict)

    async def run() -> None:
        detector = Detector((interface,), "/nonexistent", probe_interval,
                            lambda found: inventory.sync_neighbours(found, clock.now()), lambda m, i, n: None,
                            lambda s, p: None, on_answer=on_answer, refusals=inventory.refusals)
        await detector.start(asyncio.get_running_loop(), own_answer_socket=True)
        while True:
            state = {
                "devices": [{"name": d.name, "ip": str(d.ip) if d.ip else None, "mac": d.mac,
                             "product": d.product or "unknown", "source": ",".join(sorted(d.sources))}
                            for d in inventory.devices()],
                "counters": dict(detector.counters) | dict(inventory.refusals),
            }
            with open(path + ".tmp", "w", encoding="utf-8") as handle:
                json.dump(state, handle)
            os.replace(path + ".tmp", path)
            await asyncio.sleep(0.2)

    asyncio.run(run())


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "forge":
        forge(args[0], int(args[1]))
    elif command == "audioserver":
        audioserver(args[0], args[1])
    elif command == "count-searches":
        count_searches(float(args[0]))
    elif command == "listen-log":
        listen_log(int(args[0]), args[1])
    elif command == "ssdp-hostile":
        ssdp_hostile(args[0], args[1], args[2], args[3:])
    elif command == "wired":
        wired(args[0], int(args[1]), args[2], args[3] == "1")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
