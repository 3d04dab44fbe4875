"""The DNS service: DNS answers become per-device set elements, on a thread of its own.

It chooses its row of the DNS path table (core.dnspath) from what the kernel
offers, binds the queues and NFLOG copies that row names, and keeps the
ledger of live entries: adopted from the kernel after a kill, saved at stop
and restored at start, put back when the firewall rebuilt the table (in
batches the socket takes, each verified: daemon.dnsentries).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loxgw.core import catalog, dns, dnsinspect, dnsledger, dnspath
from loxgw.core.config import Config, DnsMode
from loxgw.core.devices import Device
from loxgw.core.dnspath import DnsPath
from loxgw.core.errors import KernelError
from loxgw.core.firewall import QueueMode
from loxgw.daemon import dnsentries
from loxgw.daemon.dnsentries import PutBack
from loxgw.daemon.dnsentries import SetWriter as SetWriter
from loxgw.edges import clock

if TYPE_CHECKING:  # the boot imports this module before asyncio, which then loads beside the declaration
    import asyncio

log = logging.getLogger("loxgw")


def _open_dns_copies(group: int) -> Any:
    from loxgw.edges import nflog

    return nflog.CopyLog(group)


def _probe_set_refresh() -> str:
    from loxgw.edges import nftset

    return nftset.probe_refresh()


def _open_writer(table: str, profiles: tuple[dns.Profile, ...], refresh: str) -> SetWriter:
    from loxgw.edges import nftset

    return nftset.SetWriter(table, profiles, refresh)  # type: ignore[arg-type]


@dataclass
class DnsPorts:
    """The DNS service's kernel side, injectable for tests."""

    choose_queue: Callable[[DnsMode], QueueMode]
    list_set_elements: Callable[[str, str], dict[str, list[tuple[list[str], int]]]]
    open_dns_copies: Callable[[int], Any] = _open_dns_copies
    probe_set_refresh: Callable[[], str] = _probe_set_refresh
    open_writer: Callable[[str, tuple[dns.Profile, ...], str], SetWriter] = _open_writer


def dns_settings(config: Config) -> tuple[object, ...]:
    """What the DNS path's queues, copies and threads are built from: a change needs a new path."""
    return (config.main.dns_mode, config.main.dns_hold, config.main.queue_num, config.main.table)


class DnsService:
    """Owns the DNS path: its queues or sniffers, the set writer, the ledger."""

    def __init__(self, config: Config, ports: DnsPorts) -> None:
        self.config = config
        self.ports = ports
        self.profiles = dns.all_profiles(catalog.load())
        # Which policy a devices zone's host gets: its product's (or its egress mode's), by address.
        # Replaced as a whole when devices change, read by the DNS thread without a lock.
        self.classes: dict[bytes, str] = {}
        self.other_hosts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        self.inspector = dnsinspect.DnsInspector(dns.policies(catalog.load()), self._limits(), classify=self.classify)
        self.ledger = dnsledger.GrantLedger()
        # Inspector, ledger and writer are shared with the DNS thread: touch them under this lock.
        self.lock = threading.Lock()
        self.queue_mode: QueueMode = "off"
        self.path: DnsPath = dnspath.OFF
        self.runner: Any = None  # edges.dnsqueue.DnsQueue (inline) or edges.dnssniff.DnsSniffer (passive)
        self.copies: Any = None  # edges.nflog.CopyLog while the path uses copies
        self.writer: SetWriter | None = None
        self.set_refresh = "-"
        self.last_put_back: PutBack | None = None

    def classify(self, device: bytes) -> str | None:
        """The policy key of a devices zone's host: a Loxone device's product or egress mode; else "devices"
        where its zone lets other hosts have the devices' entries, else None (nothing)."""
        key = self.classes.get(device)
        if key is not None or not self.other_hosts:
            return key
        address = ipaddress.ip_address(device)
        return "devices" if any(address in net for net in self.other_hosts) else None

    def update_devices(self, devices: Iterable[Device]) -> None:
        """The inventory changed: grants follow each device's product and its egress mode."""
        classes: dict[bytes, str] = {}
        for device in devices:
            if device.ip is None:
                continue
            product = device.product or "miniserver"  # a Loxone device not identified yet
            mode = self.config.egress(product)
            classes[device.ip.packed] = product if mode == "catalog" else mode
        self.classes = classes

    def set_other_hosts(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        """Subnets of devices zones whose other hosts get the devices' cloud entries (zone option other_hosts)."""
        self.other_hosts = tuple(networks)

    def _limits(self) -> dns.Limits:
        main = self.config.main
        return dns.Limits(main.min_timeout, main.max_timeout, main.allowed_targets)

    @property
    def state_path(self) -> str:
        return os.path.splitext(self.config.main.status_socket)[0] + "-dns-entries.json"

    # --- choosing and running the path -----------------------------------------

    def choose(self) -> DnsPath:
        """Decide the row of the DNS path table (the ruleset depends on it); nothing is bound yet."""
        self.queue_mode = self.ports.choose_queue(self.config.main.dns_mode)
        nflog = False
        if self.queue_mode in ("nft", "xtables"):
            try:
                self.copies = self.ports.open_dns_copies(self.config.main.queue_num)
                nflog = True
            except (KernelError, OSError) as exc:
                log.warning("no NFLOG for DNS copies (%s): DNS queries and answers are queued, and each "
                            "DNS round trip of a cloud zone waits for loxgw twice", exc)
        self.path = dnspath.choose(self.config.main.dns_mode, self.queue_mode, nflog, self.config.main.dns_hold)
        return self.path

    def probe_set_refresh(self) -> str:
        """How this kernel refreshes a set element, asked once (the kernel does not change under a daemon).

        Needs nothing of loxgw's table, so start-up runs it in a thread beside the firewall's first
        declaration: it waits on the kernel (its scratch table's removal waits out an RCU grace
        period, ~10-25 ms), not on the CPU.
        """
        if self.set_refresh == "-":
            try:
                refresh = self.ports.probe_set_refresh()
            except (KernelError, OSError) as exc:
                log.warning("could not probe how set elements are refreshed (%s)", exc)
                refresh = "none"
            if refresh == "none":
                log.warning("this kernel can neither update a set element's expiry nor replace it in one "
                            "batch (Linux 6.3 or later can): a DNS entry keeps the expiry of the answer "
                            "that created it, and a later answer re-creates it only once it has expired")
            self.set_refresh = refresh
        return self.set_refresh

    def open_writer(self) -> SetWriter:
        """The netlink set writer; opened at start-up, because its kernel probe must not stall the loop later."""
        if self.writer is None:
            self.writer = dnsentries.BatchedWriter(
                self.ports.open_writer(self.config.main.table, self.profiles, self.probe_set_refresh()))
        return self.writer

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the queues (or sniffers) of the chosen row, once the loop is free to serve them.

        Until then the queue rules' bypass lets DNS through untouched: a queue
        bound during start-up work would hold answers until that work is done.
        """
        if self.path.sniff:
            self._start_sniffing(loop)
            return
        if not self.path.queues:
            return
        from loxgw.edges import dnsqueue  # needs libnetfilter_queue: import late

        delay = dnsqueue.COPY_DELAY if self.path.copy_delay else 0.0
        self.runner = dnsqueue.DnsQueue(self.inspector, self.open_writer(), self.ledger, clock.now,  # type: ignore[arg-type]
                                        self.copies, self.lock, delay)
        first = self.config.main.queue_num
        for offset, use in self.path.queues:
            if use == "hold":
                self.runner.bind_hold(first + offset)
            else:
                self.runner.bind(first + offset, use)
        log.info("DNS inline (%s, %s): queues %s%s", self.queue_mode, self.path.label,
                 ", ".join(f"{first + o} {u}" for o, u in self.path.queues),
                 f"; NFLOG copies in group {first}" if self.path.copies else "")
        self.runner.start()

    def _start_sniffing(self, loop: asyncio.AbstractEventLoop) -> None:
        from loxgw.edges import dnssniff

        if self.config.main.dns_mode == "inline":
            log.warning("no NFQUEUE support (neither nft queue nor iptables NFQUEUE): DNS answers are read "
                        "passively, and a device's first connection can race the firewall")
        self.runner = dnssniff.DnsSniffer(self.inspector, self.open_writer(), self.ledger, clock.now, self.lock)
        for zone in self.config.zones:
            if zone.cloud:
                for ifname in zone.interfaces:
                    try:
                        self.runner.bind(ifname, zone.role, loop)
                    except OSError as exc:
                        log.error("passive DNS on %s: %s", ifname, exc)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the queues or sniffers and the copy log."""
        if self.runner is not None:
            self.runner.close(loop)  # closes the copy log too
            self.runner = None
        elif self.copies is not None:
            self.copies.close()
        self.copies = None

    def reconfigure(self, config: Config) -> bool:
        """Take a new config; True if the path must be rebuilt (stop, choose, apply, start)."""
        rebuild = dns_settings(config) != dns_settings(self.config)
        self.config = config
        self.inspector.limits = self._limits()
        return rebuild

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stop(loop)
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # --- entries across restarts ------------------------------------------------

    def adopt_kernel_entries(self) -> int:
        """Put what the kernel already holds (left by a loxgw that was killed) into the ledger."""
        grants = dnsentries.kernel_grants(self.ports.list_set_elements(self.config.main.table, "cloud"),
                                          self.profiles)
        with self.lock:
            self.ledger.record(grants, clock.now())
        return len(grants)

    def restore_saved_entries(self) -> int:
        """Entries saved at the last stop go back into the kernel with their remaining time.

        The state file is removed only once the kernel took every entry;
        otherwise it stays for the next start, and the error is logged.
        """
        started = clock.now()
        grants = dnsentries.read_state(self.state_path, self.profiles, clock.wall(), self.config.main.max_timeout)
        if grants is None:
            return 0
        done = self.reinsert(grants, "state file")
        took = clock.now() - started
        log.info("restored %d of %d saved DNS entries in %.2f s (%.2f s reading the file)", done.restored,
                 done.wanted, took, took - done.seconds)
        if done.refused:
            log.error("the kernel refused %d of %d saved DNS entries (%s); keeping %s for the next start",
                      done.refused, done.wanted, done.error, self.state_path)
        else:
            dnsentries.remove_state(self.state_path)
        return done.restored

    def reinsert(self, grants: list[dns.Grant], source: str, live: bool = False) -> PutBack:
        """Put grants back into the kernel in verified batches; the ledger gets what went in."""
        done = dnsentries.put_back(self.open_writer(), grants, self.ledger, self.lock, clock.now, source, live)
        self.last_put_back = done
        return done

    def reinsert_live(self) -> None:
        """The firewall rebuilt the table: put the live entries back (called from its worker)."""
        with self.lock:
            raw = self.ledger.raw()
        live = self.ledger.grants_of(raw, clock.now())
        if not live:
            return
        done = self.reinsert(live, "rebuilt table", live=True)
        log.info("put back %d DNS entries in %.2f s", done.restored, done.seconds)
        if done.refused:
            log.error("the kernel refused %d of %d DNS entries after the table was rebuilt: %s",
                      done.refused, done.wanted, done.error)

    def save_entries(self) -> None:
        """Write the live entries beside the status socket (mode 0600), for the next start."""
        with self.lock:
            raw = self.ledger.raw()
        records = self.ledger.records_of(raw, clock.now())
        if not records:
            return
        try:
            dnsentries.write_state(self.state_path, records, clock.wall())
        except OSError as exc:
            log.error("could not save DNS entries to %s: %s", self.state_path, exc)

    # --- status ------------------------------------------------------------------

    def status(self, full: bool = False) -> dict[str, Any]:
        """The path, counters and entry counts; every entry only with `full` (taken under the lock)."""
        runner = self.runner
        counters: dict[str, int] = {f"dns_{k}": v for k, v in dict(self.inspector.counters).items()}
        if runner is not None:
            counters |= {"dns_inserted": runner.inserted, "dns_handler_errors": runner.handler_errors,
                         "dns_refused_device_cap": runner.refused_device_cap, "dns_held_packets": runner.held,
                         "dns_held_dns_packets": runner.held_dns,
                         "dns_netlink_errors": runner.writer.errors}
        if self.copies is not None:
            counters |= {"dns_copies_lost": self.copies.overruns, "dns_copies_malformed": self.copies.malformed}
        out: dict[str, Any] = {
            "dns_mode": self.config.main.dns_mode,
            "queue_mode": self.queue_mode,
            "dns_path": self.path.label,
            "set_refresh": self.set_refresh,
            "dns_entries_per_device": self.ledger.counts_per_device(),
            "dns_entries_total": len(self.ledger),
            "dns_entries_capacity": self.ledger.capacity,
            "dns_restore": self.last_put_back.status() if self.last_put_back is not None else None,
            "counters": counters,
        }
        if full:
            with self.lock:  # only the copy is made under the lock; describe it with describe_entries
                out["dns_entries"] = self.ledger.raw()
        return out

    @staticmethod
    def describe_entries(raw: Any) -> list[dict[str, object]]:
        """What status(full=True) copied, as records: costly with thousands, so off the event loop."""
        return dnsledger.GrantLedger.describe(raw, clock.now())
