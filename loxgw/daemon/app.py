"""The daemon loop: apply the desired firewall, serve status, reload on SIGHUP, clean up on SIGTERM.

Features (DNS sets, pinholes, relay, UPnP) plug in here; each change of input
(config, devices, firewall reload) takes the same path: render the desired
state, apply it in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import stat
import struct
import sys
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

from loxgw import __version__
from loxgw.core import catalog, devices, dns, pinholes, ruleset, upnp
from loxgw.core.config import Config, DnsMode, FirewallMode, load_config
from loxgw.core.errors import ConfigError, KernelError, LoxgwError, RemoteDataError
from loxgw.edges import clock, netifd, nft, queue, status

log = logging.getLogger("loxgw")

# The daemon checks its firewall when the kernel reports an nftables deletion
# (fw4 restart, `nft flush ruleset`, iptables -D), after a short pause that
# lets a burst of changes finish, and in any case every SAFETY_INTERVAL.
CHANGE_SETTLE = 0.02
SAFETY_INTERVAL = 10.0


def resolve_firewall(mode: FirewallMode, fw4_present: bool) -> ruleset.ResolvedFirewall:
    """`auto` means fw4 where firewall4 is installed, standalone elsewhere."""
    if mode == "auto":
        return "fw4" if fw4_present else "standalone"
    return mode


def _open_dns_copies(group: int) -> Any:
    from loxgw.edges import nflog

    return nflog.CopyLog(group)


def _probe_set_refresh() -> str:
    from loxgw.edges import nftset

    return nftset.probe_refresh()


def _dns_settings(config: Config) -> tuple[object, ...]:
    """What the DNS path's queues, copies and threads are built from: a change needs a new path."""
    return (config.main.dns_mode, config.main.dns_hold, config.main.queue_num)


@dataclass
class KernelPorts:
    """The daemon's side effects on the kernel, injectable for tests."""

    apply_script: Callable[[str], None] = nft.run_script
    table_exists: Callable[[str], bool] = nft.table_exists
    fw4_present: Callable[[], bool] = nft.fw4_present
    choose_queue: Callable[[DnsMode], ruleset.QueueMode] = queue.choose_mode
    watch_ruleset: Callable[[], nft.RulesetWatch | None] = nft.RulesetWatch
    detect: bool = True  # run the device detection sources (neighbours, leases, LoxLIVE)
    lookup_network: netifd.NetworkLookup = netifd.ubus_status
    upnp_client: Any = None  # loxgw.edges.upnpc or a test double; None: import loxgw.edges.upnpc when needed
    list_set_elements: Callable[[str, str], dict[str, list[tuple[list[str], int]]]] = nft.list_set_elements
    open_dns_copies: Callable[[int], Any] = lambda group: _open_dns_copies(group)
    probe_set_refresh: Callable[[], str] = lambda: _probe_set_refresh()


class Daemon:
    """One running loxgw instance."""

    def __init__(self, config: Config, ports: KernelPorts | None = None) -> None:
        self.ports = ports or KernelPorts()
        self.config = self._with_networks(config)
        self.counters: Counter[str] = Counter()
        self.started = clock.now()
        self.firewall: ruleset.ResolvedFirewall = resolve_firewall(
            config.main.firewall, self.ports.fw4_present()
        )
        self.installed_table: str | None = None
        self.last_error: str | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.queue_mode: ruleset.QueueMode = "off"
        self.xtables: queue.XtablesQueue | None = None
        self.profiles = dns.all_profiles(catalog.load())
        self.inspector = dns.DnsInspector(
            {role: dns.build_policy(catalog.load(), role) for role in ("devices", "clients")},
            self._limits(),
        )
        self.ledger = dns.GrantLedger()
        self.dns_queue: Any = None  # dnsqueue.DnsQueue (inline) or dnssniff.DnsSniffer (passive)
        self.dns_copies: Any = None  # nflog.CopyLog: inline mode's DNS copies, if the kernel has NFLOG
        # Inspector, ledger and set writer are shared with the DNS thread: touch them under this lock.
        self.dns_lock = threading.Lock()
        self.writer: Any = None  # nftset.SetWriter, see set_writer()
        self.set_refresh = "-"  # how a later answer extends an entry (nftset.RefreshMode), once probed
        self.relays: list[Any] = []  # relaynet.RelaySockets, one per enabled relay section
        self.inventory = devices.Inventory(config.devices, grace=config.main.device_grace)
        self.pinholes: list[pinholes.Pinhole] = pinholes.plan(self.inventory.devices(), catalog.load())
        self.detector: Any = None  # detect.Detector while running
        self.mappings: dict[str, upnp.Mapping] = {}
        self.forwards: dict[str, ruleset.UpnpForward] = {}

    def _with_networks(self, config: Config) -> Config:
        """Zones' OpenWrt networks resolved to their Linux devices (netifd)."""
        resolved, missing = netifd.resolve_networks(config, self.ports.lookup_network)
        for network in missing:
            log.warning("network %r has no device now (not up, or no netifd); its zone skips it", network)
        return resolved

    def _limits(self) -> dns.Limits:
        return dns.Limits(self.config.main.min_timeout, self.config.main.max_timeout,
                          self.config.main.allowed_targets)

    # --- DNS ----------------------------------------------------------------

    def choose_dns(self) -> None:
        """Decide how DNS answers reach loxgw (the ruleset depends on it); nothing is bound yet."""
        self.queue_mode = self.ports.choose_queue(self.config.main.dns_mode)
        if self.queue_mode == "xtables":
            self.xtables = queue.XtablesQueue()
        if self.queue_mode in ("nft", "xtables"):
            try:
                self.dns_copies = self.ports.open_dns_copies(self.config.main.queue_num)
            except (KernelError, OSError) as exc:
                log.warning("no NFLOG for DNS copies (%s): DNS queries and answers are queued, and each "
                            "DNS round trip of a cloud zone waits for loxgw twice", exc)

    @property
    def dns_path(self) -> str:
        """How DNS reaches loxgw: NFLOG copies (devices zones' first packets held), queued, sniffed, or not at all."""
        if self.queue_mode in ("nft", "xtables"):
            if self.dns_copies is None:
                return "queued"
            return "copies" if self.config.main.dns_hold == "connection" else "copies, answers held"
        return "passive" if self.queue_mode == "passive" else "off"

    def start_dns(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the queues (or sniffers) once the loop is free to serve them.

        Until then the queue rules' bypass lets DNS through untouched: a queue
        bound during start-up work would hold answers until that work is done.
        """
        if self.queue_mode == "passive":
            self._start_sniffing(loop)
            return
        if self.queue_mode not in ("nft", "xtables"):
            return
        from loxgw.edges import dnsqueue  # needs libnetfilter_queue: import late

        # Copies wait to be read in batches only when nothing of a devices zone is held on the
        # answer: with dns_hold 'answer' a held answer would otherwise read its query's copy first.
        delay = dnsqueue.COPY_DELAY if self.config.main.dns_hold == "connection" else 0.0
        self.dns_queue = dnsqueue.DnsQueue(self.inspector, self.set_writer(), self.ledger, clock.now,
                                           self.dns_copies, self.dns_lock, delay)
        qnum = self.config.main.queue_num
        if self.dns_copies is not None and self.config.main.dns_hold == "connection":
            self.dns_queue.bind_hold(qnum)
            self.dns_queue.bind(qnum + 1, "clients")
            log.info("DNS inline (%s): NFLOG copies in group %d; devices zones' first packets held in "
                     "NFQUEUE %d, clients zones' answers in %d", self.queue_mode, qnum, qnum, qnum + 1)
        elif self.dns_copies is not None:
            self.dns_queue.bind(qnum, "devices")
            self.dns_queue.bind(qnum + 1, "clients")
            log.info("DNS inline (%s): NFLOG copies of queries in group %d; answers held in NFQUEUE %d/%d",
                     self.queue_mode, qnum, qnum, qnum + 1)
        else:
            self.dns_queue.bind(qnum, "devices")
            self.dns_queue.bind(qnum + 1, "clients")
            log.info("DNS inline (%s): queries and answers held in NFQUEUE %d/%d", self.queue_mode, qnum, qnum + 1)
        self.dns_queue.start()

    def _start_sniffing(self, loop: asyncio.AbstractEventLoop) -> None:
        from loxgw.edges import dnssniff

        if self.config.main.dns_mode == "inline":
            log.warning("no NFQUEUE support (neither nft queue nor iptables NFQUEUE): DNS answers are read "
                        "passively, and a device's first connection can race the firewall")
        self.dns_queue = dnssniff.DnsSniffer(self.inspector, self.set_writer(), self.ledger, clock.now,
                                             self.dns_lock)
        for zone in self.config.zones:
            if zone.cloud:
                for ifname in zone.interfaces:
                    try:
                        self.dns_queue.bind(ifname, zone.role, loop)
                    except OSError as exc:
                        log.error("passive DNS on %s: %s", ifname, exc)

    def stop_dns(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the DNS queues or sniffers."""
        if self.dns_queue is not None:
            self.dns_queue.close(loop)  # closes the copy log too
            self.dns_queue = None
        elif self.dns_copies is not None:
            self.dns_copies.close()
        self.dns_copies = None

    def set_writer(self) -> Any:
        """The netlink set writer (nftset.SetWriter), opened on first use: it needs CAP_NET_ADMIN."""
        if self.writer is None:
            from loxgw.edges import nftset

            try:
                self.set_refresh = self.ports.probe_set_refresh()
            except (KernelError, OSError) as exc:
                log.warning("could not probe how set elements are refreshed (%s)", exc)
                self.set_refresh = "none"
            if self.set_refresh == "none":
                log.warning("this kernel can neither update a set element's expiry nor replace it in one "
                            "batch (Linux 6.3 or later can): a DNS entry keeps the expiry of the answer "
                            "that created it, and a later answer re-creates it only once it has expired")
            self.writer = nftset.SetWriter(self.config.main.table, self.profiles, self.set_refresh)  # type: ignore[arg-type]
        return self.writer

    # --- devices ----------------------------------------------------------------

    def _devices_changed(self, changed: bool) -> None:
        if changed:
            self.counters["device_changes"] += 1
            self._apply_logged()

    def on_neighbours(self, neighbours: list[tuple[str, Any]]) -> None:
        self._devices_changed(self.inventory.sync_neighbours(neighbours, clock.now()))

    def on_lease(self, mac: str, ip: Any, name: str) -> None:
        self._devices_changed(self.inventory.observe("dhcp", clock.now(), mac=mac, ip=ip, name=name))

    def on_loxlive(self, src: Any, payload: bytes) -> None:
        """A LoxLIVE answer; it must come from the address it claims, or a spoofer could move a device."""
        try:
            found = devices.parse_loxlive(payload)
        except RemoteDataError as exc:
            self.counters[f"loxlive_bad_{exc.reason}"] += 1
            return
        if found.ip != src:
            self.counters["loxlive_refused_spoofed"] += 1
            return
        self.counters["loxlive_answers"] += 1
        self._devices_changed(self.inventory.observe(
            "loxlive", clock.now(), ip=found.ip, product="miniserver", name=found.name,
            http_port=found.port, serial=found.serial, firmware=found.firmware))

    def on_ssdp(self, src: Any, description: Any) -> None:
        """A UPnP root device answered an SSDP search; Loxone ones name their product."""
        from loxgw.core import ssdp

        if not ssdp.is_loxone(description):
            self.counters["ssdp_not_loxone"] += 1
            return
        self.counters["ssdp_loxone"] += 1
        serial = description.serial.replace(":", "").upper()
        self._devices_changed(self.inventory.observe(
            "ssdp", clock.now(), ip=src, product=ssdp.product_of(description), name=description.model,
            serial=serial if len(serial) == 12 else ""))

    async def start_detection(self, loop: asyncio.AbstractEventLoop) -> None:
        from loxgw.edges import detect

        if not self.ports.detect:
            return
        relayed_7071 = any(any(detect.ANSWER_PORT in r for r in s.policy.ports) for s in self.relays)
        self.detector = detect.Detector(
            self.config.interfaces_with_role("devices"), self.config.main.dhcp_leases,
            self.config.main.probe_interval, self.on_neighbours, self.on_lease, self.on_loxlive, self.on_ssdp)
        await self.detector.start(loop, own_answer_socket=not relayed_7071)

    def stop_detection(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.detector is not None:
            self.detector.close(loop)
            self.detector = None

    async def _expire_devices(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._devices_changed(self.inventory.expire(clock.now()))

    # --- UPnP upstream mappings ------------------------------------------------

    def _upnp_client(self) -> Any:
        if self.ports.upnp_client is None:
            from loxgw.edges import upnpc

            self.ports.upnp_client = upnpc
        return self.ports.upnp_client

    def _upnp_device_ip(self, section: Any) -> str | None:
        static = next((d for d in self.config.devices if d.name == section.device), None)
        if static is None:
            return None
        key = static.mac or f"ip:{static.ip}"
        found = next((d for d in self.inventory.devices() if d.key == key), None)
        return str(found.ip) if found is not None and found.ip is not None else None

    async def upnp_step(self) -> None:
        """Advance every enabled mapping whose time has come (blocking calls in a thread)."""
        client = self._upnp_client()
        for section in self.config.upnp:
            if not section.enabled or section.external_port is None:
                continue
            mapping = self.mappings.setdefault(section.name, upnp.Mapping())
            now = clock.now()
            action = upnp.next_action(mapping, now)
            if action == "wait":
                continue
            device_ip = self._upnp_device_ip(section)
            upnp.begin(mapping, action, now)
            if device_ip is None:
                upnp.failed(mapping, clock.now(), f"device '{section.device}' has no address yet")
                continue
            try:
                gateway = await asyncio.to_thread(client.ensure, section.external_port, section.proto, section.lease)
            except LoxgwError as exc:
                conflict = str(getattr(exc, "conflict", ""))
                upnp.failed(mapping, clock.now(), str(exc), conflict)
                level = logging.WARNING if mapping.failures == 1 or conflict else logging.DEBUG
                log.log(level, "upnp %s: %s (retry in %.0fs)", section.name, exc, mapping.next_at - clock.now())
                continue
            was = mapping.external_ip
            upnp.succeeded(mapping, clock.now(), gateway.external_ip, section.lease, section.check_interval)
            forward = ruleset.UpnpForward(gateway.our_address, section.proto, section.external_port, device_ip,
                                          section.internal_port)
            if self.forwards.get(section.name) != forward:
                self.forwards[section.name] = forward
                self._apply_logged()
            if was != gateway.external_ip or action == "map":
                log.info("upnp %s: %s:%d -> %s:%d (%s)", section.name, gateway.external_ip,
                         section.external_port, device_ip, section.internal_port, section.proto)

    async def _upnp_forever(self) -> None:
        while True:
            try:
                await self.upnp_step()
            except Exception as exc:  # the loop must outlive any one failure
                log.error("upnp: %s", exc)
            await asyncio.sleep(1.0)

    async def remove_mappings(self, sections: Any) -> None:
        """Delete our upstream mappings for `sections` (stop, or a config change)."""
        client = self._upnp_client() if self.mappings else None
        for section in sections:
            mapping = self.mappings.pop(section.name, None)
            self.forwards.pop(section.name, None)
            if mapping is None or section.external_port is None or client is None:
                continue
            if mapping.state in ("active", "renewing", "failed", "requested"):
                try:
                    await asyncio.wait_for(asyncio.to_thread(client.remove, section.external_port, section.proto), 10)
                    log.info("upnp %s: mapping removed", section.name)
                except (LoxgwError, TimeoutError) as exc:
                    log.warning("upnp %s: could not remove the mapping: %s", section.name, exc)
            upnp.removed(mapping, clock.now())

    async def _reconfigure_upnp(self, old: Any) -> None:
        await self.remove_mappings(old)
        self._apply_logged()

    # --- discovery relay ------------------------------------------------------

    async def start_relays(self, loop: asyncio.AbstractEventLoop) -> None:
        """One RelaySockets per enabled relay section."""
        from loxgw.core import relay
        from loxgw.edges import relaynet

        roles = self.config.interface_roles()
        for section in self.config.relays:
            names = self.config.relay_interfaces(section)
            if not section.enabled:
                continue
            if len(names) < 2:
                log.warning("relay %s has fewer than two interfaces; nothing to relay", section.name)
                continue
            sockets = relaynet.RelaySockets(
                relay.RelayPolicy(section.ports, frozenset(names), section.allow_upstream),
                relay.RateLimiter(section.rate_limit, section.global_rate),
                roles, self._allow_relay_answers, clock.now, self.on_loxlive,
            )
            try:
                await sockets.start(loop)
            except OSError as exc:
                sockets.close(loop)
                raise KernelError(f"relay {section.name}: opening sockets", exc.errno,
                                  exc.strerror or "") from exc
            self.relays.append(sockets)
            log.info("relay %s: ports %s between %s", section.name,
                     ",".join(str(p) for p in section.ports), ", ".join(names))

    def stop_relays(self, loop: asyncio.AbstractEventLoop) -> None:
        for sockets in self.relays:
            sockets.close(loop)
        self.relays.clear()

    async def _restart_relays(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_relays(loop)
        try:
            await self.start_relays(loop)
        except KernelError as exc:
            self.last_error = str(exc)
            log.error("%s", exc)

    def _allow_relay_answers(self, pairs: list[tuple[Any, int]]) -> None:
        """Let the devices zone answer a relayed request: (asker . port) for a short window."""
        from loxgw.core import relay

        elements = [(ruleset.RELAY_ANSWERS, ip.packed + struct.pack("!H2x", port), relay.ANSWER_WINDOW)
                    for ip, port in pairs]
        try:
            with self.dns_lock:
                self.set_writer().add_elements(elements)
        except KernelError as exc:
            self.counters["relay_answer_errors"] += 1
            log.debug("relay answer pinhole failed: %s", exc)

    # --- firewall ---------------------------------------------------------

    def apply(self) -> None:
        """Install the desired ruleset for the current config in one transaction."""
        if self.installed_table and self.installed_table != self.config.main.table:
            self.remove()
        if not self.config.main.enabled:
            self.remove()
            return
        self.pinholes = pinholes.plan(self.inventory.devices(), catalog.load())
        desired = ruleset.render(self.config, self.firewall, self.queue_mode, self.pinholes,
                                 list(self.forwards.values()), copies=self.dns_copies is not None)
        self.ports.apply_script(desired.script)
        self.installed_table = desired.table
        if self.xtables is not None:
            copies = self.dns_copies is not None
            self.xtables.install(ruleset.dns_queue_rules(self.config, copies),
                                 ruleset.hold_xtables_rule(self.config) if copies else None)
        self.counters["ruleset_applies"] += 1

    def remove(self) -> None:
        """Remove loxgw's table; nothing of loxgw stays in the kernel."""
        if self.xtables is not None:
            self.xtables.remove()
        if self.installed_table is None:
            return
        try:
            self.ports.apply_script(ruleset.render_removal(self.installed_table))
        except KernelError as exc:
            log.error("could not remove table inet %s: %s", self.installed_table, exc)
        self.installed_table = None

    def reload(self) -> None:
        """SIGHUP: re-read the config; an invalid one is logged and the running one kept."""
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            self.counters["reloads_rejected"] += 1
            for problem in exc.problems:
                log.error("reload rejected: %s", problem)
            log.error("keeping the running configuration")
            return
        old = self.config
        new = self._with_networks(new)
        self.config = new
        self.firewall = resolve_firewall(new.main.firewall, self.ports.fw4_present())
        set_log_level(new.main.log_level)
        self.inspector.limits = self._limits()
        self.inventory.grace = new.main.device_grace
        self.inventory.set_static(new.devices, clock.now())
        dns_changed = _dns_settings(old) != _dns_settings(new)
        if dns_changed:
            self._reset_dns()
        try:
            self.apply()
        except KernelError as exc:
            self.counters["reloads_failed"] += 1
            log.error("new configuration refused by the kernel, restoring the old one: %s", exc)
            self.config = old
            self.firewall = resolve_firewall(old.main.firewall, self.ports.fw4_present())
            if dns_changed:
                self._reset_dns()
            self._apply_logged()
            if dns_changed:
                self.start_dns(asyncio.get_running_loop())
            return
        if dns_changed:
            self.start_dns(asyncio.get_running_loop())
        self.counters["reloads"] += 1
        log.info("configuration reloaded from %s", new.path)
        if (old.relays, old.zones) != (new.relays, new.zones):
            self._background(self._restart_relays())
        if old.upnp != new.upnp:
            self._background(self._reconfigure_upnp(old.upnp))

    def _reset_dns(self) -> None:
        """Take the DNS path down and choose it again for the current config (apply, then start_dns)."""
        self.stop_dns(asyncio.get_running_loop())
        if self.xtables is not None:
            self.xtables.remove()
            self.xtables = None
        self.choose_dns()

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _apply_logged(self) -> None:
        try:
            self.apply()
            self.last_error = None
        except KernelError as exc:
            self.last_error = str(exc)
            self.counters["apply_errors"] += 1
            log.error("applying the ruleset failed: %s", exc)

    def firewall_intact(self) -> bool:
        """Whether loxgw's table (and xtables queue chains) are still in the kernel.

        Only reads, so the watchdog runs it in a thread: its subprocesses must
        not stall the event loop, which carries the DNS path.
        """
        table = self.installed_table
        if table is None or not self.config.main.enabled:
            return True
        queue_gone = self.xtables is not None and not self.xtables.present()
        return not queue_gone and self.ports.table_exists(table)

    # --- DNS entries across restarts ---------------------------------------------

    @property
    def state_path(self) -> str:
        return os.path.splitext(self.config.main.status_socket)[0] + "-dns-entries.json"

    def adopt_kernel_entries(self) -> int:
        """Put what the kernel already holds (left by a loxgw that was killed) into the ledger."""
        now = clock.now()
        adopted = 0
        for name, elements in self.ports.list_set_elements(self.config.main.table, "cloud").items():
            try:
                index = int(name.split("_", 1)[1])
                profile = self.profiles[index]
            except (IndexError, ValueError):
                continue
            for fields, expires in elements:
                try:
                    device, address = (ipaddress.ip_address(f) for f in fields)
                except ValueError:
                    continue
                with self.dns_lock:
                    self.ledger.record([dns.Grant(device, address, profile, expires, "(adopted)")], now)
                adopted += 1
        return adopted

    def restore_saved_entries(self) -> int:
        """Entries saved at the last SIGTERM go back into the kernel with their remaining time."""
        try:
            with open(self.state_path, encoding="utf-8") as handle:
                records = json.load(handle)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.state_path, exc)
            return 0
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.state_path)
        grants = dns.GrantLedger.parse_dump(records, self.profiles)
        return self._reinsert(grants)

    def _reinsert(self, grants: list[dns.Grant]) -> int:
        if not grants:
            return 0
        with self.dns_lock:
            try:
                self.set_writer().add(grants)
            except KernelError as exc:
                log.error("could not restore %d DNS entries: %s", len(grants), exc)
                return 0
            self.ledger.record(grants, clock.now())
        return len(grants)

    def save_entries(self) -> None:
        """Write the live entries beside the status socket, for the next start (SIGTERM path)."""
        with self.dns_lock:
            records = self.ledger.dump(clock.now())
        if not records:
            return
        tmp = self.state_path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(records, handle)
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.error("could not save DNS entries to %s: %s", self.state_path, exc)

    def check_firewall(self, intact: bool | None = None) -> None:
        """Re-install the table if something (a firewall restart, a flush) removed it."""
        if intact is None:
            intact = self.firewall_intact()
        if not intact and self.installed_table is not None and self.config.main.enabled:
            self.counters["ruleset_restores"] += 1
            log.warning("table inet %s vanished; restoring it", self.installed_table)
            self._apply_logged()
            with self.dns_lock:
                live = self.ledger.grants(clock.now())
            restored = self._reinsert(live)
            if restored:
                log.info("put back %d DNS entries", restored)

    # --- status -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything `loxgw status` shows, as plain JSON-able data."""
        with self.dns_lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(clock.now() - self.started, 1),
            "config": cfg.path,
            "enabled": cfg.main.enabled,
            "firewall": self.firewall,
            "table": self.installed_table or cfg.main.table,
            "installed": self.installed_table is not None,
            "dns_mode": cfg.main.dns_mode,
            "queue_mode": self.queue_mode,
            "dns_path": self.dns_path,
            "set_refresh": self.set_refresh,
            "ruleset_applies": self.counters["ruleset_applies"],
            "zones": [
                {
                    "name": z.name,
                    "role": z.role,
                    "interfaces": list(z.interfaces),
                    "networks": list(z.networks),
                    "cloud": z.cloud,
                }
                for z in cfg.zones
            ],
            "devices": self._device_status(),
            "dns_entries": self.ledger.live(clock.now()),
            "relays": [asdict(r) | {"ports": [str(p) for p in r.ports]} for r in cfg.relays],
            "upnp": self._upnp_status(),
            "relay": {
                "interfaces": sorted({i.name for r in self.relays for i in r.interfaces}),
                "counters": dict(sum((r.counters for r in self.relays), Counter())),
            },
            "devices_refused_cap": self.inventory.refused,
            "counters": dict(self.counters) | {f"dns_{k}": v for k, v in self.inspector.counters.items()}
            | ({"dns_inserted": self.dns_queue.inserted, "dns_handler_errors": self.dns_queue.handler_errors,
                "dns_refused_device_cap": self.dns_queue.refused_device_cap,
                "dns_held_packets": self.dns_queue.held,
                "dns_netlink_errors": self.dns_queue.writer.errors} if self.dns_queue else {})
            | ({"dns_copies_lost": self.dns_copies.overruns,
                "dns_copies_malformed": self.dns_copies.malformed} if self.dns_copies else {}),
            "last_error": self.last_error,
        }

    def _upnp_status(self) -> list[dict[str, Any]]:
        now = clock.now()
        out = []
        for section in self.config.upnp:
            mapping = self.mappings.get(section.name, upnp.Mapping())
            out.append(asdict(section) | {
                "state": mapping.state if section.enabled else "disabled",
                "external_ip": mapping.external_ip or None,
                "last_error": mapping.last_error or None,
                "conflict": mapping.conflict or None,
                "failures": mapping.failures,
                "next_in": round(max(0.0, mapping.next_at - now), 1) if mapping.next_at != float("inf") else None,
            })
        return out

    def _device_status(self) -> list[dict[str, Any]]:
        now = clock.now()
        out = []
        for dev in self.inventory.devices():
            holes = [h.describe() for h in self.pinholes if dev.ip is not None and dev.ip in (h.src, h.dst)]
            out.append({
                "name": dev.name, "product": dev.product or "unknown", "product_known": dev.product is not None,
                "mac": dev.mac, "ip": str(dev.ip) if dev.ip else None, "source": ",".join(sorted(dev.sources)),
                "last_seen": round(now - dev.last_seen, 1), "present": dev.present,
                "serial": dev.serial, "firmware": dev.firmware, "pinholes": holes,
            })
        return out

    async def _serve_status(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
                await asyncio.wait_for(reader.readline(), timeout=2.0)
            writer.write(json.dumps(self.snapshot()).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            self.counters["status_client_errors"] += 1
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    # --- lifecycle ----------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to stop (signal handlers call this)."""
        self._stop.set()

    async def _watchdog(self, changed: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), SAFETY_INTERVAL)
                await asyncio.sleep(CHANGE_SETTLE)
            changed.clear()
            try:
                self.check_firewall(await asyncio.to_thread(self.firewall_intact))
            except LoxgwError as exc:  # never let the watchdog die
                log.error("firewall check failed: %s", exc)

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        loop = asyncio.get_running_loop()
        socket_path = self.config.main.status_socket
        prepare_socket_path(socket_path)
        self.choose_dns()
        self.apply()
        # Open the set writer now: its first use probes the kernel with nft runs, which must not
        # stall the event loop later (the relay's first answer pinhole used to pay for it).
        self.set_writer()
        adopted = self.adopt_kernel_entries()
        restored = self.restore_saved_entries()
        if adopted or restored:
            log.info("DNS entries: %d adopted from the kernel, %d restored from %s", adopted, restored,
                     self.state_path)
        await self.start_relays(loop)
        await self.start_detection(loop)
        expiry = asyncio.create_task(self._expire_devices())
        upnp_task = asyncio.create_task(self._upnp_forever())
        self.start_dns(loop)
        server = await asyncio.start_unix_server(self._serve_status, path=socket_path)
        os.chmod(socket_path, 0o660)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        changed = asyncio.Event()
        watch = self.ports.watch_ruleset()
        if watch is not None:
            def on_ruleset_event() -> None:
                if watch.drain():
                    changed.set()

            loop.add_reader(watch.fileno(), on_ruleset_event)
        watchdog = asyncio.create_task(self._watchdog(changed))
        log.info(
            "running: firewall %s, table inet %s, dns %s (%s), status on %s",
            self.firewall,
            self.config.main.table,
            self.config.main.dns_mode,
            self.queue_mode,
            socket_path,
        )
        try:
            await self._stop.wait()
        finally:
            watchdog.cancel()
            expiry.cancel()
            upnp_task.cancel()
            await self.remove_mappings(self.config.upnp)
            self.stop_detection(loop)
            if watch is not None:
                loop.remove_reader(watch.fileno())
                watch.close()
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path)
            self.stop_relays(loop)
            self.save_entries()
            self.remove()
            self.stop_dns(loop)
            if self.writer is not None:
                self.writer.close()
            log.info("stopped")
        return 0


def prepare_socket_path(path: str) -> None:
    """Create the socket's directory; refuse to start twice; clear a stale socket."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise LoxgwError(f"{path} exists and is not a socket; not touching it")
    try:
        status.query(path, timeout=1.0)
    except status.NotRunning:
        os.unlink(path)
        return
    except LoxgwError:
        pass
    raise LoxgwError(f"another loxgw is already running (it answers on {path})")


NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": NOTICE,
           "warning": logging.WARNING, "error": logging.ERROR}


def set_log_level(name: str) -> None:
    """Apply a config log level to the loxgw logger."""
    log.setLevel(_LEVELS.get(name, logging.INFO))


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging(level: str, split_streams: bool = False) -> None:
    """Log lines with their level; with split_streams, info/debug to stdout, the rest to stderr.

    procd logs a service's stdout at daemon.info and its stderr at daemon.err,
    so splitting keeps syslog priorities right on OpenWrt.
    """
    formatter = logging.Formatter("loxgw: %(levelname)s: %(message)s")
    errors = logging.StreamHandler(sys.stderr)
    errors.setFormatter(formatter)
    handlers: list[logging.Handler] = [errors]
    if split_streams:
        errors.setLevel(logging.WARNING)
        info = logging.StreamHandler(sys.stdout)
        info.setFormatter(formatter)
        info.addFilter(_Below(logging.WARNING))
        handlers.append(info)
    log.handlers[:] = handlers
    log.propagate = False
    set_log_level(level)
