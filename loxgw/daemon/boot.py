"""Start-up's first step: what shapes the first declaration, and that declaration under way.

The table's first declaration depends on the config, the firewall mode, the
DNS path and the configured devices, not on the other services. `loxgw run`
builds this part first and hands the declaration to the firewall's worker
(`begin`), then imports and builds the other services while the kernel
applies it: their modules take ~80 ms to import here (half of it the
creation of dataclasses), the declaration ~50 ms of `nft -f` and
`iptables-nft-restore` on another core. A Daemon built without a begun Boot
(tests) begins it when it runs.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loxgw.core import devices
from loxgw.core.config import Config, DnsMode, FirewallMode
from loxgw.core.errors import KernelError, LoxgwError
from loxgw.core.firewall import QueueMode, ResolvedFirewall
from loxgw.daemon.dns import DnsPorts, DnsService, SetWriter, _open_dns_copies, _open_writer, _probe_set_refresh
from loxgw.daemon.firewall import Desired, ElementKernel, FirewallService
from loxgw.daemon.queuerules import QueueRules
from loxgw.edges import netifd, nft, nftset, queue, status
from loxgw.edges.threads import in_thread

log = logging.getLogger("loxgw")


def resolve_firewall(mode: FirewallMode, fw4_present: bool) -> ResolvedFirewall:
    """`auto` means fw4 where firewall4 is installed, standalone elsewhere."""
    if mode == "auto":
        return "fw4" if fw4_present else "standalone"
    return mode


@dataclass
class KernelPorts:
    """The daemon's side effects on the kernel and the OS, injectable for tests."""

    apply_script: Callable[[str], None] = nft.run_script
    table_exists: Callable[[str], bool] = nft.table_exists
    # Pinhole element diffs in one netlink batch; None: through `nft -f` (tests that record scripts).
    open_element_batches: Callable[[], ElementKernel] | None = nftset.ElementBatches
    fw4_present: Callable[[], bool] = nft.fw4_present
    choose_queue: Callable[[DnsMode], QueueMode] = queue.choose_mode
    watch_ruleset: Callable[[], nft.RulesetWatch | None] = nft.RulesetWatch
    detect: bool = True  # run the device detection sources (neighbours, leases, LoxLIVE)
    lookup_network: netifd.NetworkLookup = netifd.ubus_status
    upnp_client: Any = None  # edges.upnpc or a test double; None: imported when needed
    list_set_elements: Callable[[str, str], dict[str, list[tuple[list[str], int]]]] = nft.list_set_elements
    open_dns_copies: Callable[[int], Any] = _open_dns_copies
    probe_set_refresh: Callable[[], str] = _probe_set_refresh
    open_writer: Callable[..., SetWriter] = _open_writer
    open_xtables: Callable[[], QueueRules] = queue.XtablesQueue
    interface_networks: Callable[[tuple[str, ...]], list[Any]] = lambda names: _interface_networks(names)


def _interface_networks(names: tuple[str, ...]) -> list[Any]:
    from loxgw.edges import addresses

    return addresses.interface_networks(names)


class _Kernel:
    """The firewall service's view of KernelPorts."""

    def __init__(self, ports: KernelPorts) -> None:
        self.ports = ports

    def apply_script(self, script: str) -> None:
        self.ports.apply_script(script)

    def table_exists(self, table: str) -> bool:
        return self.ports.table_exists(table)


def with_networks(config: Config, lookup: netifd.NetworkLookup) -> Config:
    """Zones' OpenWrt networks resolved to their Linux devices (netifd)."""
    resolved, missing = netifd.resolve_networks(config, lookup)
    for network in missing:
        log.warning("network %r has no device now (not up, or no netifd); its zone skips it", network)
    return resolved


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


class Boot:
    """The services the first declaration depends on (DNS, firewall, the inventory of configured devices)."""

    def __init__(self, config: Config, ports: KernelPorts | None = None) -> None:
        self.ports = ports or KernelPorts()
        self.config = with_networks(config, self.ports.lookup_network)
        self.mode: ResolvedFirewall = resolve_firewall(self.config.main.firewall, self.ports.fw4_present())
        self.inventory = devices.inventory_for(self.config)
        self.dns = DnsService(self.config, DnsPorts(self.ports.choose_queue, self.ports.list_set_elements,
                                                    self.ports.open_dns_copies, self.ports.probe_set_refresh,
                                                    self.ports.open_writer))
        self.firewall = FirewallService(_Kernel(self.ports), self.ports.open_xtables, self.dns.reinsert_live,
                                        self.ports.open_element_batches)
        self.left_by_earlier_run = False
        self.declared: concurrent.futures.Future[None] | None = None  # the first declaration
        self.probed: concurrent.futures.Future[str] | None = None  # how this kernel refreshes set elements

    def begin(self) -> None:
        """Refuse a second instance, choose the DNS path, start the first declaration; returns at once (once)."""
        if self.declared is not None:
            return
        prepare_socket_path(self.config.main.status_socket)
        self.left_by_earlier_run = self._table_left_by_earlier_run()
        self.dns.choose()
        # The set-refresh probe waits on the kernel, not the CPU, and needs nothing of loxgw's table.
        self.probed = in_thread(self.dns.probe_set_refresh, "loxgw-probe")
        self.firewall.start()
        configured = tuple(self.inventory.devices())
        self.dns.update_devices(configured)
        self.declared = self.firewall.submit(
            Desired(self.config, self.mode, self.dns.queue_mode, self.dns.path, configured))

    def _table_left_by_earlier_run(self) -> bool:
        """Whether loxgw's table is there before this run declares it: only then can it hold DNS entries to
        adopt. Asked over netlink; the listing of every entry (an `nft -j` run) is skipped on a clean start."""
        try:
            return self.ports.table_exists(self.config.main.table)
        except KernelError as exc:
            log.warning("could not tell whether table inet %s is there (%s); adopting what it holds",
                        self.config.main.table, exc)
            return True
