"""The relay service's kernel path: reconcile each relay's netdev table (core.relaykernel) with its state.

The desired state of one relay: its netdev table rendered from the
interfaces its sockets report, or none (the Python path) where the config
says `kernel 'off'`, the kernel refused the first table (the first apply is
the probe: `nft -f` of a delete-then-create script changes nothing when the
kernel refuses part of it, so a separate `nft -c` would only cost a process),
an interface is not Ethernet, or a peer relay copies on the same segments
(arbitration is the Python path's, core.relaypeers). Every change goes the
same way: render, apply in a worker thread, swap the receive filters
(edges.relaynet), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loxgw.core import nftwatch, relaykernel
from loxgw.core.configsections import Relay as RelaySection
from loxgw.core.errors import KernelError
from loxgw.daemon.logs import log_failure

if TYPE_CHECKING:
    from loxgw.daemon.relay import RelayService, _Running

log = logging.getLogger("loxgw")

PYTHON, KERNEL = "python", "kernel"
COUNTERS_FRESH = 1.0  # seconds a read of the kernel's counters serves status requests


class KernelEdge:
    """The kernel path's I/O (edges.relayset), injectable: apply a script, read a table's counters."""

    def apply(self, script: str) -> None:
        from loxgw.edges import relayset

        relayset.apply_kernel_table(script)

    def counters(self, table: str) -> dict[str, int]:
        from loxgw.edges import relayset

        return relayset.kernel_counters(table)

    def exists(self, table: str) -> bool:
        from loxgw.edges import relayset

        return relayset.netdev_table_exists(table)

    def watch(self) -> Any:
        """nftables change notifications (edges.nft.RulesetWatch: fileno(), drain() -> the tables deletions
        were in)."""
        from loxgw.edges import nft

        return nft.RulesetWatch()


class KernelPaths:
    """The relays' kernel paths, for one RelayService (its config, relays, lock and loop)."""

    def __init__(self, service: RelayService, edge: KernelEdge, now: Callable[[], float]) -> None:
        self.service = service
        self.edge = edge
        self.now = now
        self.refused = ""  # why the kernel refused the first netdev table (then: Python for good)
        self.worked = False
        self.counters: dict[str, int] = {}  # status name -> packets, as last read
        self._counters_read = float("-inf")
        self._lock: asyncio.Lock | None = None
        # Held by a worker thread across an apply or removal and by close(): a table applied while its
        # relay closed (a stop right after start: the apply is not awaited by start) is removed, never left.
        self._tables = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: Any = None  # while a netdev table is installed: who else deletes it (fw4 flush)
        # Relays whose kernel path waits until the daemon is ready (release): an `nft -f` is CPU a
        # router's start-up needs first, and the Python path copies meanwhile. None once released.
        self._held: list[_Running] | None = []

    def allowed(self, section: RelaySection) -> str:
        """"" if this relay may copy in the kernel, else why not (one netdev table: the first relay's)."""
        if section.kernel == "off":
            return "option kernel 'off'"
        if any(not run.kernel_allowed for run in self.service.relays):
            return "another relay section copies in the kernel"
        return ""

    def desired(self, run: _Running) -> tuple[relaykernel.KernelRelay | None, str]:
        """The netdev table this relay should have in the kernel (None: the Python path), and why."""
        section = run.section
        if section is None or run.kernel_allowed:
            return None, run.kernel_allowed or "no config"
        if self.refused:
            return None, f"the kernel refused the netdev table: {self.refused}"
        with self.service.lock:
            interfaces = run.core.interfaces
            run.peers_until = max(run.peers_until, run.core.peers_until())
        if self.now() < run.peers_until:
            return None, "a second relay copies on the same segments; loxgw's process arbitrates"
        chosen = relaykernel.kernel_interfaces(interfaces, section.allow_upstream)
        if len(chosen) < 2:
            return None, "fewer than two of its interfaces are up"
        why = relaykernel.unsupported(chosen)
        if why:
            return None, why
        return relaykernel.render(self.service.config.main.table, chosen, run.core.policy.ports, section.rate_limit,
                                  section.global_rate), "the kernel copies (nftables netdev table)"

    async def reconcile(self, run: _Running) -> None:
        """Bring the kernel to the desired path: apply or remove the netdev table, swap the receive filters.

        On the way into the kernel the table comes first, on the way out the
        filters do: for a moment a broadcast may cross twice, never not at all.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if run not in self.service.relays or run.sockets is None:
                return
            want, reason = self.desired(run)
            if want is not None and (run.kernel is None or run.kernel.script != want.script):
                try:
                    applied = await asyncio.to_thread(self._apply, run, want)
                except KernelError as exc:
                    self.service.counters["relay_kernel_errors"] += 1
                    if not self.worked:  # the first try is the probe: this kernel cannot
                        self.refused = str(exc)
                    log.warning("relay %s: the kernel path failed, copies stay in loxgw's process: %s", run.name, exc)
                    want, reason = None, f"the kernel refused the netdev table: {exc}"
                else:
                    self.worked = True
                    if not applied or run.closed:  # closed (a stop, a reload): close() removed the table
                        return
                    self._start_watch()
            if want is not None:
                run.sockets.set_peer_copies_only(True)
            else:
                run.sockets.set_peer_copies_only(False)
                if run.kernel is not None:
                    await asyncio.to_thread(self.remove, run)
            path = KERNEL if run.kernel is not None else PYTHON
            if (path, reason) != (run.path, run.reason):
                log.info("relay %s: copies in %s (%s)", run.name, path, reason)
            run.path, run.reason = path, reason

    def _apply(self, run: _Running, want: relaykernel.KernelRelay) -> bool:
        """In a worker thread: apply `want` unless the relay closed meanwhile; whether it went in."""
        with self._tables:
            if run.closed:
                return False
            self.edge.apply(want.script)
            run.kernel = want
            return True

    def remove(self, run: _Running) -> None:
        """Remove the relay's netdev table (in a worker thread, or at close)."""
        with self._tables:
            kernel, run.kernel = run.kernel, None
            if kernel is not None:
                self._remove(run.name, kernel)

    def _remove(self, name: str, kernel: relaykernel.KernelRelay) -> None:
        try:
            self.edge.apply(kernel.removal)
        except KernelError as exc:
            self.service.counters["relay_kernel_errors"] += 1
            log.error("relay %s: removing the netdev table: %s", name, exc)

    def reconcile_soon(self, run: _Running) -> None:
        """On the loop: the interfaces changed, or a peer appeared or went."""
        if run not in self.service.relays or run.kernel_allowed:
            return
        if self._held is not None:
            if run not in self._held:
                self._held.append(run)
            return
        self._spawn(self.reconcile(run))

    def release(self) -> None:
        """On the loop, once the daemon is ready: the relays held since start-up reconcile their kernel path."""
        held, self._held = self._held or [], None
        for run in held:
            self.reconcile_soon(run)

    def peers_seen(self, run: _Running, until: float) -> None:
        """On the loop: a peer relay appeared; look again when it would count as gone."""
        run.peers_until = max(run.peers_until, until)
        if run.peer_timer is not None:
            run.peer_timer.cancel()
        loop = self.service.loop
        if loop is not None and run in self.service.relays:
            run.peer_timer = loop.call_at(run.peers_until, self.peers_check, run)
        if run.kernel is not None:
            self.reconcile_soon(run)

    def peers_check(self, run: _Running) -> None:
        """On the loop, when the last peer would count as gone: still there (look again), or back to the kernel."""
        run.peer_timer = None
        with self.service.lock:
            until = run.core.peers_until()
        if self.now() < until:
            self.peers_seen(run, until)
        else:
            self.reconcile_soon(run)

    def read_counters(self, now: float) -> None:
        """Start a read of the kernel's counters in a worker thread; a status shows the last read."""
        runs = [run for run in self.service.relays if run.kernel is not None]
        if not runs:
            self.counters = {}
            return
        loop = self.service.loop
        if now - self._counters_read < COUNTERS_FRESH or loop is None or not loop.is_running():
            return
        self._counters_read = now

        async def read() -> None:
            found: dict[str, int] = {}
            for run in runs:
                if run.kernel is None:
                    continue
                try:
                    raw = await asyncio.to_thread(self.edge.counters, run.kernel.table)
                except KernelError as exc:
                    log.debug("relay: reading the kernel's counters: %s", exc)
                    continue
                found.update({label: raw[name] for name, label in run.kernel.counters.items() if raw.get(name)})
            self.counters = found

        self._spawn(read())

    def _start_watch(self) -> None:
        """Watch for deletions: `fw4 flush` and `nft flush ruleset` delete the netdev table too."""
        loop = self.service.loop
        if self._watch is not None or loop is None:
            return
        try:
            self._watch = self.edge.watch()
        except OSError as exc:
            log.warning("relay: cannot watch nftables changes; a flushed netdev table stays gone: %s", exc)
            return
        loop.add_reader(self._watch.fileno(), self._on_ruleset_change)

    def _on_ruleset_change(self) -> None:
        deleted = self._watch.drain() if self._watch is not None else set()
        if deleted:
            self._spawn(self._restore(deleted))

    async def _restore(self, deleted: set[nftwatch.Table]) -> None:
        """After deletions in these tables: a netdev table that is gone (not replaced by our own apply) is
        applied again."""
        for run in list(self.service.relays):
            kernel = run.kernel
            if kernel is None or not nftwatch.touched(deleted, (nftwatch.NFPROTO_NETDEV, kernel.table)):
                continue
            try:
                present = await asyncio.to_thread(self.edge.exists, kernel.table)
            except OSError as exc:
                log.debug("relay: asking for the netdev table: %s", exc)
                continue
            if not present and run.kernel is kernel:
                log.warning("relay %s: the netdev table was deleted (fw4 flush?); applying it again", run.name)
                self.service.counters["relay_kernel_restores"] += 1
                run.kernel = None
                await self.reconcile(run)

    def close(self, runs: list[_Running]) -> None:
        """Stop what runs in the background; remove the netdev tables (one `nft` run, at stop and reload only)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        loop = self.service.loop
        if self._watch is not None:
            if loop is not None:
                loop.remove_reader(self._watch.fileno())
            self._watch.close()
            self._watch = None
        for run in runs:
            if run.peer_timer is not None:
                run.peer_timer.cancel()
            with self._tables:  # waits for an apply in flight, whose table is then removed here
                run.closed = True
            self.remove(run)
        self.counters = {}

    def _spawn(self, work: object) -> None:
        loop = self.service.loop
        if loop is None or not asyncio.iscoroutine(work):
            return
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        """A background step ended: an error nobody awaits is logged (once, with its traceback)."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log_failure(log, "relay kernel path", task.exception())  # type: ignore[arg-type]
