"""The daemon: wiring of one service per feature, the status socket, signals.

Services (each with start, close, reconfigure and status):
- firewall (daemon.firewall): desired state to kernel diffs, on its own thread;
- dns (daemon.dns): DNS answers to per-device set elements, on its own thread;
- devices (daemon.devices): the inventory and its detection sources;
- relay (daemon.relay): discovery broadcasts across VLANs;
- reflector (daemon.reflector): mDNS and SSDP of Loxone devices, devices zones to clients zones;
- knx (daemon.knx): KNX-IP routing telegrams between the zones of `config knx` (opt-in);
- upnp (daemon.upnp): remote-access mappings upstream.

A change of devices or forwards hands the firewall a new desired state and
returns; SIGHUP re-reads the config and applies it whole, rolling back to
the running config if the kernel refuses it; SIGTERM saves the DNS entries,
removes everything and exits 0.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import signal
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from loxgw.core import nftwatch
from loxgw.core.config import Config, load_config
from loxgw.core.errors import ConfigError, KernelError
from loxgw.core.firewall import ResolvedFirewall
from loxgw.daemon import gcpause, logs
from loxgw.daemon.boot import Boot, with_networks
from loxgw.daemon.boot import KernelPorts as KernelPorts  # re-exported: tests and tools build Daemons with them
from loxgw.daemon.boot import prepare_socket_path as prepare_socket_path
from loxgw.daemon.boot import resolve_firewall as resolve_firewall
from loxgw.daemon.devices import DeviceService
from loxgw.daemon.diagnose import DiagnoseService
from loxgw.daemon.dns import DnsService
from loxgw.daemon.elements import ElementWriter
from loxgw.daemon.firewall import Desired
from loxgw.daemon.intercom import IntercomService
from loxgw.daemon.knx import KnxService
from loxgw.daemon.loopguard import LoopGuard
from loxgw.daemon.reflector import ReflectorService
from loxgw.daemon.relay import RelayService
from loxgw.daemon.status import StatusService
from loxgw.daemon.upnp import UpnpService
from loxgw.edges import clock

log = logging.getLogger("loxgw")

# Re-exported for the CLI: logging set-up lives with the daemon.
setup_logging = logs.setup_logging
set_log_level = logs.set_log_level


class Daemon:
    """One running loxgw instance: the services and what connects them."""

    def __init__(self, config: Config, ports: KernelPorts | None = None, boot: Boot | None = None,
                 early_signals: list[int] | None = None) -> None:
        """`boot`: the first step, begun already (`loxgw run`); else one is built here and begun by run().
        `early_signals`: what came before run() put its handlers in (`loxgw run` records them); run() then
        stops (SIGTERM, SIGINT) or reloads once it is running (SIGHUP)."""
        self.boot = boot or Boot(config, ports)
        self.ports = self.boot.ports
        self.config = self.boot.config
        self.mode: ResolvedFirewall = self.boot.mode
        self.counters: Counter[str] = Counter()
        self.started = clock.now()
        self.last_error: str | None = None
        self._stop = asyncio.Event()
        self._stopping_start_up = False
        self.early_signals = early_signals if early_signals is not None else []
        self.way_down_began = False  # cli.cmd_run takes the declaration back itself if run() never got this far
        self._tasks: set[asyncio.Task[None]] = set()
        self._reloading = asyncio.Lock()
        self.dns = self.boot.dns
        self.firewall = self.boot.firewall
        self.devices = DeviceService(self.config, self.reconcile, detect=self.ports.detect,
                                     open_writer=self._open_set_writer, inventory=self.boot.inventory)
        self.devices.open_answer_windows = self.mode == "fw4"
        self.relay = RelayService(self.config, self._open_set_writer, self.devices.submit_loxlive)
        self.upnp = UpnpService(self.config, self.devices.inventory, self.reconcile, self.ports.upnp_client)
        self.reflector = ReflectorService(self.config, self.devices.inventory, self.reconcile)
        self.knx = KnxService(self.config)
        self.intercom = IntercomService(  # a raw writer of its own: refreshes and shortenings must all go out
            self.config, lambda: self.ports.open_writer(self.config.main.table, self.dns.profiles,
                                                        self.dns.set_refresh),
            self.devices.inventory, self.ports.interface_networks, listen=self.ports.detect)
        self.status = StatusService(self)
        self.diagnose = DiagnoseService(self)
        self.status.handlers.update(self.diagnose.handlers())

    def _open_set_writer(self) -> ElementWriter:
        """A set writer of its own for a service (the relay's and the searches' windows); it skips
        rewrites of elements written recently (daemon.elements)."""
        table, profiles, refresh = self.config.main.table, self.dns.profiles, self.dns.set_refresh
        return ElementWriter(lambda: self.ports.open_writer(table, profiles, refresh))

    # --- desired state ---------------------------------------------------------------

    def desired(self) -> Desired:
        """What the firewall should hold now: O(devices) to build, the rest happens in the worker."""
        devices = tuple(self.devices.inventory.devices())
        self.dns.update_devices(devices)
        return Desired(self.config, self.mode, self.dns.queue_mode, self.dns.path, devices,
                       tuple(self.upnp.forwards.values()), announced=self.reflector.announced())

    def reconcile(self) -> None:
        """Devices or forwards changed: DNS grants follow at once, the firewall gets the new desired state."""
        self.firewall.request(self.desired())

    async def apply(self) -> None:
        """Declare and fill the table for the current state, and wait for it (KernelError if refused)."""
        await self.firewall.apply(self.desired())

    def check_firewall(self, deleted: set[nftwatch.Table] | None = None) -> None:
        """Something was deleted in nftables (fw4 restart, `nft flush ruleset`, iptables -D; in these tables,
        None: anywhere): the firewall worker checks what of loxgw's could have gone with it (its table, its
        iptables-nft rules), and only that. Its checks asked for meanwhile are made once (FirewallService)."""
        table, xtables = nftwatch.to_check({nftwatch.ANY_TABLE} if deleted is None else deleted,
                                           self.config.main.table, self.firewall.queue_rules.notified())
        if table or xtables:
            self.firewall.verify(table=table, xtables=xtables)

    async def reload(self) -> None:
        """SIGHUP: re-read the config; an invalid one is logged and the running one kept."""
        async with self._reloading:
            try:
                new = await asyncio.to_thread(load_config, self.config.path)  # 250 sections: ~22 ms
            except ConfigError as exc:
                self.counters["reloads_rejected"] += 1
                for problem in exc.problems:
                    log.error("reload rejected: %s", problem)
                log.error("keeping the running configuration")
                return
            old = self.config
            try:
                await self._switch(with_networks(new, self.ports.lookup_network))
            except KernelError as exc:
                self.counters["reloads_failed"] += 1
                log.error("new configuration refused by the kernel, restoring the old one: %s", exc)
                try:
                    await self._switch(old)
                except KernelError as again:
                    self.last_error = str(again)
                    log.error("the old configuration was refused too: %s", again)
                return
            self.counters["reloads"] += 1
            log.info("configuration reloaded from %s", new.path)
            await self.relay.reconfigure(self.config)
            await self.upnp.reconfigure(self.config)
            await self.reflector.reconfigure(self.config)
            await self.knx.reconfigure(self.config)
            self.intercom.reconfigure(self.config)

    async def _switch(self, config: Config) -> None:
        """Make `config` the running one: every service takes it, the firewall is applied whole."""
        loop = asyncio.get_running_loop()
        self.config = config
        self.mode = resolve_firewall(config.main.firewall, self.ports.fw4_present())
        self.devices.open_answer_windows = self.mode == "fw4"
        logs.set_log_level(config.main.log_level)
        rebuild = self.dns.reconfigure(config)
        if rebuild:
            self.dns.close(loop)
            self.dns.choose()
        await take_other_hosts(self.dns, start_reading_other_hosts(config, self.ports))
        self.devices.reconfigure(config)
        await self.apply()
        if rebuild:
            self.dns.start(loop)

    # --- status ------------------------------------------------------------------

    def snapshot(self, full: bool = False) -> dict[str, Any]:
        """Everything `loxgw status` shows (see daemon.status)."""
        answer = self.status.snapshot(full)
        if full:
            answer["dns_entries"] = self.dns.describe_entries(answer["dns_entries"])
        return answer

    # --- lifecycle ----------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to stop (signal handlers call this)."""
        self._stop.set()

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stop_start_up(self, starting: asyncio.Task[Any] | None) -> None:
        """SIGTERM or SIGINT before every service started: cancel the start-up at its next await that
        suspends (once)."""
        if not self._stopping_start_up and starting is not None:
            self._stopping_start_up = True
            starting.cancel()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        loop = asyncio.get_running_loop()
        # Until the daemon's own handlers are in, a stop cancels the start-up at an await (never inside
        # a callback, as a signal handler raising in the main thread could), and the way down below
        # takes back whatever is in.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_start_up, asyncio.current_task())
        # procd sends SIGHUP when a zone's network comes up, as at boot while loxgw starts: not a stop
        # (its default action would leave the table behind) but a reload, once everything runs.
        loop.add_signal_handler(signal.SIGHUP, self.early_signals.append, signal.SIGHUP)
        if {signal.SIGTERM, signal.SIGINT} & set(self.early_signals):
            self._stop_start_up(asyncio.current_task())
        guard = LoopGuard.from_environment(loop)
        gcpause.install()
        socket_path = self.config.main.status_socket
        self.boot.begin()
        assert self.boot.declared is not None and self.boot.probed is not None
        # The address dump waits on the kernel, not the CPU: a thread runs it beside the declaration.
        reading = start_reading_other_hosts(self.config, self.ports)
        # Whatever fails or stops it on the way up, the way down below runs: nothing stays
        # half-configured. Work in threads is shielded from a stop and waited for on the way down.
        watch: Any = None
        probed = asyncio.wrap_future(self.boot.probed)
        restore: asyncio.Future[int] | None = None  # until the saved entries are back in, saving would overwrite them
        try:
            try:
                await asyncio.wrap_future(self.boot.declared)
            finally:
                await asyncio.shield(probed)
                await take_other_hosts(self.dns, reading)
            # Open the set writer now: its first use probes the kernel, which must not stall the event
            # loop later (the relay's first answer pinhole used to pay for it).
            self.dns.open_writer()
            # Up to 65,536 entries each (seconds of work): in a thread, so the loop guard and the
            # services started so far keep running.
            adopted = await asyncio.to_thread(self.dns.adopt_kernel_entries) if self.boot.left_by_earlier_run else 0
            restore = loop.run_in_executor(None, self.dns.restore_saved_entries)
            put_back = await asyncio.shield(restore)
            if adopted or put_back:
                log.info("DNS entries: %d adopted from the kernel, %d restored from %s", adopted, put_back,
                         self.dns.state_path)
            await self.relay.start(loop)
            await self.reflector.start(loop)
            await self.knx.start(loop)
            await self.devices.start(loop, own_answer_socket=not self.relay.owns_answer_port(7071))
            self.upnp.start(loop)
            self.dns.start(loop)
            await self.intercom.start(loop)
            self.diagnose.start(loop)
            await self.status.start(socket_path)
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self.reload()))
            if signal.SIGHUP in self.early_signals:  # the config or a network may have changed meanwhile
                self._background(self.reload())
            watch = self.ports.watch_ruleset()
            if watch is not None:
                watch.start(loop, self.check_firewall)
            if guard is not None:
                guard.start()
            log.info("running: firewall %s, table inet %s, dns %s (%s), status on %s", self.mode,
                     self.config.main.table, self.config.main.dns_mode, self.dns.queue_mode, socket_path)
            # Work that may follow readiness waits for it: a router's CPU goes to start-up first. (The
            # intercom's dumps walk every conntrack bucket, once per port: 13 ms each here; the relay's
            # netdev table is an `nft -f`, and Python copies until it is in.)
            self.intercom.read_open_sessions()
            self.relay.move_copies_to_kernel()
            gcpause.start_up_done()
            await self._stop.wait()
        except asyncio.CancelledError as stop:
            if not self._stopping_start_up:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # the stop asked for: handled
            if isinstance(stop.__context__, Exception):  # the start-up failed as the stop came
                logs.log_failure(log, "starting", stop.__context__)
        finally:
            gcpause.start_up_done()  # stopped or failed on the way up: collect again all the same
            self.way_down_began = True
            self._stopping_start_up = True  # a signal now cannot cut the way down short
            loop.add_signal_handler(signal.SIGHUP, self.early_signals.append, signal.SIGHUP)  # nor reload
            await _settled(probed, restore)
            restored = restore is not None and not restore.cancelled() and restore.exception() is None
            for task in list(self._tasks):
                task.cancel()
            # Each step even if one before failed (a service stopped half-started): the table goes last.
            on_loop = functools.partial
            await _each("stopping", [
                guard.close if guard is not None else None, self.status.close, self.upnp.close,
                on_loop(self.devices.close, loop), on_loop(self.diagnose.close, loop),
                watch.close if watch is not None else None, on_loop(self.reflector.close, loop),
                on_loop(self.knx.close, loop), on_loop(self.intercom.close, loop),
                on_loop(self.relay.close, loop), self.dns.save_entries if restored else None, self.firewall.close,
                on_loop(self.dns.close, loop)])
            log.info("stopped")
        return 0


def start_reading_other_hosts(config: Config, ports: KernelPorts) -> asyncio.Future[list[Any]] | None:
    """Hand the address dump of the zones with other_hosts (whose other hosts may have the devices' cloud
    entries) to a thread now; None: no such zone. In a thread: the dump blocks on the kernel (edges.rtnl),
    which the event loop must not."""
    names = tuple(i for z in config.zones if z.role == "devices" and z.other_hosts for i in z.interfaces)
    if not names:
        return None
    return asyncio.get_running_loop().run_in_executor(None, ports.interface_networks, names)


async def take_other_hosts(dns: DnsService, reading: asyncio.Future[list[Any]] | None) -> None:
    """Give the DNS service what start_reading_other_hosts read (nothing: no such zone)."""
    if reading is None:
        dns.set_other_hosts(())
        return
    try:
        dns.set_other_hosts(await reading)
    except OSError as exc:
        logs.log_failure(log, "reading the addresses of other_hosts zones", exc)


async def _settled(*work: asyncio.Future[Any] | None) -> None:
    """Wait until each of these (start-up work in threads) has ended, however it ended."""
    running = [future for future in work if future is not None and not future.done()]
    if running:
        await asyncio.wait(running)


async def _each(where: str, steps: list[Callable[[], object] | None]) -> None:
    """Run every step (awaiting those that return an awaitable); a failure is logged and the next runs."""
    for step in steps:
        if step is None:
            continue
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            logs.log_failure(log, where, exc)

