"""A namespace lab: a router with a client VLAN (lan), a Loxone VLAN (iot) and an upstream (wan).

    [phone ...] --br-lan-+                      +-- wan ns: upstream dnsmasq (198.51.100.53),
                         +-- router ns (loxgw) -+   fake cloud hosts on TEST-NET-3 (203.0.113.0/24)
    [miniserver ...] --br-iot-+   dnsmasq resolver on each VLAN gateway

Each host is its own namespace with one veth into its VLAN's bridge on the
router, so loxgw sees what it sees on OpenWrt: one Linux interface per VLAN.
Nothing is connected to the host's real interfaces. Everything is torn down
by `down()` (also on a failed test), and labs left by a killed run are swept
by `sweep_stale()`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

PREFIX = "lxgw"

LAN_GW = "192.168.10.1"
IOT_GW = "192.168.20.1"
ROUTER_WAN = "198.51.100.2"
UPSTREAM_GW = "198.51.100.1"
UPSTREAM_DNS = "198.51.100.53"

# Names the fake internet answers for (upstream dnsmasq); wildcards via --address.
CLOUD_RECORDS: dict[str, str] = {
    "a7.remcov3.loxonecloud.com": "203.0.113.7",
    "connect.loxonecloud.com": "203.0.113.10",
    "dns.loxonecloud.com": "203.0.113.11",
    "weather.loxone.com": "203.0.113.12",
    "update.loxone.com": "203.0.113.13",
    "registry.loxonecloud.com": "203.0.113.14",
    "evilloxonecloud.com": "203.0.113.66",
    "example.org": "203.0.113.80",
}
# IPv6 addresses (documentation prefix) of some of those names, served only in labs with ipv6=True.
CLOUD_RECORDS_V6: dict[str, str] = {"a7.remcov3.loxonecloud.com": "2001:db8:113::7"}
V6_PREFIX = {"lan": "2001:db8:10::", "iot": "2001:db8:20::"}
V6_WAN = "2001:db8:100::"

CLOUD_WILDCARDS: dict[str, str] = {
    "dyndns.loxonecloud.com": "203.0.113.20",
    "pool.ntp.org": "203.0.113.123",
    "example.net": "203.0.113.81",  # a foreign domain with any number of names
}


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its stderr on failure."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def missing_tools() -> list[str]:
    """The commands the lab needs that this machine lacks."""
    return [t for t in ("ip", "nft", "dnsmasq", "iptables") if shutil.which(t) is None]


def sweep_stale() -> None:
    """Delete namespaces of labs whose creating process is gone."""
    listing = sh("ip", "netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) >= 3 and parts[0] == PREFIX and parts[1].isdigit():
            pid = int(parts[1])
            try:
                os.kill(pid, 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            _kill_netns_pids(name)
            sh("ip", "netns", "del", name, check=False)
            shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


def _kill_netns_pids(ns: str) -> None:
    pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass
class Host:
    """A simulated host: its namespace, VLAN and addresses."""

    name: str
    ns: str
    vlan: str
    ip: str
    mac: str
    router_port: str


@dataclass
class Lab:
    """One lab instance; use as a context manager or call up()/down()."""

    tag: str = ""
    ns_router: str = ""
    ns_wan: str = ""
    workdir: str = ""
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    extra_records: dict[str, str] = field(default_factory=dict)  # more names for the fake internet
    # Names the upstream answers with an address no host holds (benchmarks: many names, many addresses).
    dns_only_records: dict[str, str] = field(default_factory=dict)
    router_dns: subprocess.Popen[bytes] | None = None
    igd: subprocess.Popen[bytes] = field(init=False, repr=False)
    vlans: dict[str, str] = field(default_factory=lambda: {"lan": LAN_GW, "iot": IOT_GW})
    ipv6: bool = False  # also give every segment 2001:db8:... addresses and the resolvers IPv6
    _host_counter: int = 0

    def __post_init__(self) -> None:
        self.tag = self.tag or f"{PREFIX}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.ns_router = f"{self.tag}-router"
        self.ns_wan = f"{self.tag}-wan"

    # --- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.run(name, "ip", "link", "set", "lo", "up")
        # No duplicate address detection: addresses are usable at once (no tentative phase).
        self.run(name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")

    def up(self) -> None:
        """Build router, VLAN bridges, upstream with its resolver, router resolver."""
        sweep_stale()
        self.workdir = tempfile.mkdtemp(prefix=f"{self.tag}-")
        self._add_ns(self.ns_router)
        self._add_ns(self.ns_wan)
        r, w = self.ns_router, self.ns_wan
        self.run(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.run(r, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        for vlan, gw in self.vlans.items():
            self._add_bridge(vlan, gw)
        self.run(r, "ip", "link", "add", "wan", "type", "veth", "peer", "name", "up0", "netns", w)
        self.run(r, "ip", "addr", "add", f"{ROUTER_WAN}/24", "dev", "wan")
        self.run(r, "ip", "link", "set", "wan", "up")
        self.run(r, "ip", "route", "add", "default", "via", UPSTREAM_GW)
        self.run(w, "ip", "addr", "add", f"{UPSTREAM_GW}/24", "dev", "up0")
        self.run(w, "ip", "addr", "add", f"{UPSTREAM_DNS}/24", "dev", "up0")
        self.run(w, "ip", "link", "set", "up0", "up")
        for subnet in ("192.168.10.0/24", "192.168.20.0/24"):
            self.run(w, "ip", "route", "add", subnet, "via", ROUTER_WAN)
        records = CLOUD_RECORDS | self.extra_records
        for address in sorted(set(records.values()) | set(CLOUD_WILDCARDS.values())):
            self.run(w, "ip", "addr", "add", f"{address}/32", "dev", "lo")
        if self.ipv6:
            self._add_ipv6()
        self._start_upstream_dns()
        self._start_router_dns()

    def _add_ipv6(self) -> None:
        r, w = self.ns_router, self.ns_wan
        for vlan in self.vlans:
            self.run(r, "ip", "-6", "addr", "add", f"{V6_PREFIX[vlan]}1/64", "dev", f"br-{vlan}", "nodad")
        self.run(r, "ip", "-6", "addr", "add", f"{V6_WAN}2/64", "dev", "wan", "nodad")
        self.run(r, "ip", "-6", "route", "add", "default", "via", f"{V6_WAN}1")
        for address in (f"{V6_WAN}1/64", f"{V6_WAN}53/64"):
            self.run(w, "ip", "-6", "addr", "add", address, "dev", "up0", "nodad")
        for prefix in V6_PREFIX.values():
            self.run(w, "ip", "-6", "route", "add", f"{prefix}/64", "via", f"{V6_WAN}2")
        for address in CLOUD_RECORDS_V6.values():
            self.run(w, "ip", "-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad")

    def _add_bridge(self, vlan: str, gw: str) -> None:
        bridge = f"br-{vlan}"
        # No multicast snooping (OpenWrt's default too): IPv6 neighbour discovery must flood.
        self.run(self.ns_router, "ip", "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
        self.run(self.ns_router, "ip", "addr", "add", f"{gw}/24", "dev", bridge)
        self.run(self.ns_router, "ip", "link", "set", bridge, "up")

    def add_vlan(self, vlan: str, gw: str) -> None:
        """Another VLAN bridge `br-VLAN` on the router, gateway address `gw`/24 (after up())."""
        self.vlans[vlan] = gw
        self._add_bridge(vlan, gw)

    def down(self) -> None:
        """Stop every process and delete every namespace; safe to call twice."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self.procs.clear()
        for ns in reversed(self.namespaces):
            _kill_netns_pids(ns)
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        self.namespaces.clear()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- hosts ---------------------------------------------------------------

    def add_host(self, name: str, vlan: str, host_octet: int, mac: str | None = None) -> Host:
        """A host namespace on `vlan` ("lan" or "iot") with address .host_octet."""
        self._host_counter += 1
        ns = f"{self.tag}-{name}"
        gw = self.vlans[vlan]
        ip = gw.rsplit(".", 1)[0] + f".{host_octet}"
        mac = mac or f"02:00:00:{self._host_counter:02x}:{host_octet:02x}:01"
        port = f"p{self._host_counter}-{name}"[:15]
        self._add_ns(ns)
        self.run(self.ns_router, "ip", "link", "add", port, "type", "veth",
                 "peer", "name", "eth0", "netns", ns)
        self.run(self.ns_router, "ip", "link", "set", port, "master", f"br-{vlan}")
        self.run(self.ns_router, "ip", "link", "set", port, "up")
        self.run(ns, "ip", "link", "set", "eth0", "address", mac)
        self.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        self.run(ns, "ip", "link", "set", "eth0", "up")
        self.run(ns, "ip", "route", "add", "default", "via", gw)
        nameserver = gw
        if self.ipv6 and vlan in V6_PREFIX:
            self.run(ns, "ip", "-6", "addr", "add", f"{V6_PREFIX[vlan]}{host_octet:x}/64", "dev", "eth0", "nodad")
            self.run(ns, "ip", "-6", "route", "add", "default", "via", f"{V6_PREFIX[vlan]}1")
            nameserver = f"{V6_PREFIX[vlan]}1"  # so AAAA answers reach the device over IPv6
        os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        with open(f"/etc/netns/{ns}/resolv.conf", "w", encoding="ascii") as handle:
            handle.write(f"nameserver {nameserver}\n")
        host = Host(name, ns, vlan, ip, mac, port)
        self.hosts[name] = host
        return host

    def add_relay_box(self, name: str, host_octet: int) -> str:
        """A second box with one leg in each VLAN (ports lan0, iot0), as a second relay would have."""
        ns = f"{self.tag}-{name}"
        self._add_ns(ns)
        for vlan in ("lan", "iot"):
            self._host_counter += 1
            port = f"p{self._host_counter}-{name}"[:15]
            leg = f"{vlan}0"
            self.run(self.ns_router, "ip", "link", "add", port, "type", "veth", "peer", "name", leg, "netns", ns)
            self.run(self.ns_router, "ip", "link", "set", port, "master", f"br-{vlan}")
            self.run(self.ns_router, "ip", "link", "set", port, "up")
            prefix = self.vlans[vlan].rsplit(".", 1)[0]
            self.run(ns, "ip", "addr", "add", f"{prefix}.{host_octet}/24", "dev", leg)
            self.run(ns, "ip", "link", "set", leg, "up")
        return ns

    # --- an upstream UPnP router -----------------------------------------------

    IGD_EXTERNAL = "11.22.33.1"  # public-looking: miniupnpd refuses private and reserved addresses
    INTERNET_HOST = "11.22.33.2"

    def add_upstream_igd(self) -> str:
        """Make the wan namespace a UPnP IGD (miniupnpd) towards an `internet` namespace; returns its ns."""
        inet = f"{self.tag}-internet"
        self._add_ns(inet)
        w = self.ns_wan
        self.run(w, "ip", "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", inet)
        self.run(w, "ip", "addr", "add", f"{self.IGD_EXTERNAL}/24", "dev", "ext0")
        self.run(w, "ip", "link", "set", "ext0", "up")
        self.run(inet, "ip", "addr", "add", f"{self.INTERNET_HOST}/24", "dev", "eth0")
        self.run(inet, "ip", "link", "set", "eth0", "up")
        self.run(w, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # SSDP answers need a multicast route on the IGD's LAN side.
        self.run(w, "ip", "route", "add", "239.0.0.0/8", "dev", "up0")
        # miniupnpd fills these chains; they must exist before it starts.
        chains = (
            "table inet filter {\n"
            " chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }\n"
            " chain miniupnpd { }\n"
            " chain prerouting { type nat hook prerouting priority -100; jump prerouting_miniupnpd; }\n"
            " chain postrouting { type nat hook postrouting priority 100; jump postrouting_miniupnpd; }\n"
            " chain prerouting_miniupnpd { }\n"
            " chain postrouting_miniupnpd { }\n"
            "}\n"
        )
        subprocess.run(["ip", "netns", "exec", w, "nft", "-f", "-"], input=chains, text=True, check=True)
        self.start_igd()
        return inet

    def start_igd(self) -> None:
        conf = self.path("miniupnpd.conf")
        with open(conf, "w", encoding="ascii") as handle:
            handle.write("ext_ifname=ext0\nlisting_ip=up0\n".replace("listing", "listening")
                         + "port=5000\nenable_natpmp=no\nenable_upnp=yes\nsecure_mode=no\n"
                         + "system_uptime=yes\nuuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n"
                         + "allow 1024-65535 198.51.100.0/24 0-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n")
        log = open(self.path("miniupnpd.log"), "ab")  # noqa: SIM115 - owned by the process
        self.igd = self.popen(self.ns_wan, ["miniupnpd", "-d", "-f", conf, "-P", self.path("miniupnpd.pid")],
                              stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: "%up0:5000 " in self.run(self.ns_wan, "ss", "-Hltn", check=False).stdout,
                 5, "miniupnpd HTTP")

    def stop_igd(self) -> None:
        self.igd.terminate()
        self.igd.wait(timeout=10)

    # --- processes -----------------------------------------------------------

    def run(self, ns: str, *cmd: str, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside namespace `ns`."""
        return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)

    def popen(self, ns: str, cmd: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a background process in `ns`; down() kills it."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def path(self, name: str) -> str:
        """A file path in this lab's private directory."""
        return os.path.join(self.workdir, name)

    def _dnsmasq(self, ns: str, args: list[str], ready_addr: str, port: int = 53) -> subprocess.Popen[bytes]:
        log = open(self.path(f"dnsmasq-{ns}.log"), "ab")  # noqa: SIM115 - owned by the process
        proc = self.popen(ns, ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                        "--pid-file=", "--user=root", "--group=root", "--log-facility=-",
                        *args], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._udp_listening(ns, ready_addr, port), 5, f"dnsmasq in {ns}")
        return proc

    def _udp_listening(self, ns: str, addr: str, port: int) -> bool:
        out = self.run(ns, "ss", "-Hlun", check=False).stdout
        return f"{addr}:{port} " in out

    def _start_upstream_dns(self) -> None:
        args = ["--no-resolv", "--no-hosts", f"--listen-address={UPSTREAM_DNS}",
                "--bind-interfaces", "--cache-size=0", "--local-ttl=300"]
        records = CLOUD_RECORDS | self.extra_records
        args += [f"--host-record={name},{ip}" + (f",{CLOUD_RECORDS_V6[name]}" if name in CLOUD_RECORDS_V6 else "")
                 for name, ip in records.items()]
        args += [f"--address=/{suffix}/{ip}" for suffix, ip in CLOUD_WILDCARDS.items()]
        if self.dns_only_records:
            hosts = self.path("upstream.hosts")
            with open(hosts, "w", encoding="utf-8") as handle:
                handle.writelines(f"{ip} {name}\n" for name, ip in self.dns_only_records.items())
            args.append(f"--addn-hosts={hosts}")
        self._dnsmasq(self.ns_wan, args, UPSTREAM_DNS)

    def _start_router_dns(self, extra: Sequence[str] = ()) -> None:
        v6 = [f"--listen-address={p}1" for p in V6_PREFIX.values()] if self.ipv6 else []
        args = ["--no-resolv", "--no-hosts", f"--server={UPSTREAM_DNS}", "--bind-interfaces",
                f"--listen-address={LAN_GW}", f"--listen-address={IOT_GW}", *v6,
                f"--dhcp-leasefile={self.path('dhcp.leases')}", *extra]
        self.router_dns = self._dnsmasq(self.ns_router, args, IOT_GW)

    def start_side_resolver(self, port: int, *extra: str) -> subprocess.Popen[bytes]:
        """Another forwarding resolver on the router's iot address, on `port` (benchmarks).

        Answers from a port other than 53 pass no loxgw rule, so side
        resolvers give baselines measured at the same moment as loxgw.
        """
        args = ["--no-resolv", "--no-hosts", f"--server={UPSTREAM_DNS}", "--bind-interfaces",
                f"--listen-address={IOT_GW}", f"--port={port}", *extra]
        return self._dnsmasq(self.ns_router, args, IOT_GW, port)

    def restart_router_dns(self, *extra: str) -> None:
        """Restart the router's resolver with extra dnsmasq arguments (benchmarks)."""
        assert self.router_dns is not None
        self.router_dns.kill()
        self.router_dns.wait(timeout=5)
        wait_for(lambda: not self._udp_listening(self.ns_router, IOT_GW, 53), 5, "old dnsmasq gone")
        self._start_router_dns(extra)


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `predicate` until true (lab set-up only, never to let time pass in logic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """A lab that is always torn down."""
    with Lab() as instance:
        yield instance
