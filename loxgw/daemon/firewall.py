"""The firewall reconciler: desired state in, small diffs to the kernel out, on a worker thread.

Desired state is a function of (config, devices, UPnP forwards). Callers on
the event loop hand in a new Desired and return at once; the worker takes
the latest one (requests in between coalesce) and:

- declares the table (chains and set declarations, one `nft -f`) only at
  start, on a config change, and when the table vanished;
- otherwise turns a change of devices or forwards into set-element deletes
  and adds in one transaction, never a flush and re-add (250 devices: a
  flush and re-add took the kernel 32 s; a diff takes milliseconds). The
  diff goes over netlink in one batch (edges.nftset.ElementBatches) where
  the daemon gives one; `nft -f` when the kernel refuses that batch.

The event loop never waits on nft: with a full apply on the loop, one
SIGHUP stopped status, the relay and detection for 34 s.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from loxgw.core import pinholes, ruleset, setkeys
from loxgw.core.config import Config
from loxgw.core.devices import Device
from loxgw.core.dnspath import DnsPath
from loxgw.core.errors import KernelError
from loxgw.core.firewall import QueueMode, ResolvedFirewall
from loxgw.core.record import record
from loxgw.core.ruleset import UpnpForward
from loxgw.core.setkeys import KernelElement
from loxgw.daemon.logs import log_failure
from loxgw.daemon.queuerules import QueueRuleKeeper, QueueRules, alongside

log = logging.getLogger("loxgw")
# What the kernel answers to bytes it cannot take: only these, when nft then applies the same
# change, mean core.setkeys encodes for another kernel. ENOBUFS (replies lost) and the like do not.
ENCODING_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.EMSGSIZE, errno.ERANGE})

# Seconds the worker waits after a request for more to coalesce with it: a burst of
# neighbour events becomes one diff, a burst of nftables deletions one check.
COALESCE = 0.005


class FirewallKernel(Protocol):
    """What the reconciler needs from the kernel (edges.nft, or a recorder in tests)."""

    def apply_script(self, script: str) -> None: ...
    def table_exists(self, table: str) -> bool: ...


class ElementKernel(Protocol):
    """Set-element diffs in one netlink batch (edges.nftset.ElementBatches); KernelError if refused."""

    def apply(self, table: str, delete: dict[str, list[KernelElement]],
              add: dict[str, list[KernelElement]]) -> None: ...
    def close(self) -> None: ...


@record
class Desired:
    """Everything the firewall is a function of."""

    config: Config
    mode: ResolvedFirewall
    queue: QueueMode
    path: DnsPath
    devices: tuple[Device, ...] = ()
    forwards: tuple[UpnpForward, ...] = ()
    announced: tuple[pinholes.Pinhole, ...] = ()  # inbound pinholes services announce (mDNS SRV ports)

    def declaration_inputs(self) -> tuple[object, ...]:
        """What the chains and set declarations depend on; a change needs a full declare."""
        return (self.config, self.mode, self.queue, self.path, self.forwards)


@dataclass
class PassTiming:
    """When one pass of the worker was asked for and reached each step (clock seconds)."""

    requested: float | None
    started: float
    planned: float = 0.0
    diffed: float = 0.0
    applied: float = 0.0

    def spans(self) -> dict[str, float]:
        waited = self.started - self.requested if self.requested is not None else 0.0
        return {"wait": waited, "plan": self.planned - self.started, "diff": self.diffed - self.planned,
                "kernel": self.applied - self.diffed}

    def record(self, applied: float, counters: Counter[str], deleted: int, added: int) -> None:
        """Where a diff's time went, summed in status counters (µs) for the scale benchmark, logged at debug."""
        self.applied = applied
        spans = self.spans()
        for name, seconds in spans.items():
            counters[f"pass_{name}_us"] += round(seconds * 1e6)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("firewall diff: -%d +%d elements; requested at %.6f, %s", deleted, added,
                      self.requested or self.started,
                      ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in spans.items()))


@dataclass
class Applied:
    """What the reconciler believes the kernel holds (read by status, written by the worker)."""

    table: str | None = None
    declared: tuple[object, ...] | None = None
    elements: pinholes.Elements = field(default_factory=dict)
    holes: tuple[pinholes.Pinhole, ...] = ()
    holes_per_device: dict[str, int] = field(default_factory=dict)


def declare_table(kernel: FirewallKernel, table: str, script: str, leftover_possible: bool) -> None:
    """Apply a declaration; where it is refused and a table another run left is there, replace that table.

    A loxgw of another version that was killed may have left a set of another type (relay_answers4
    gained a key field), which the kernel refuses to declare again.
    """
    try:
        kernel.apply_script(script)
    except KernelError as exc:
        if not leftover_possible or not kernel.table_exists(table):
            raise
        log.warning("table inet %s left by an earlier run refused the declaration (%s); replacing it", table, exc)
        kernel.apply_script(ruleset.render_removal(table))
        kernel.apply_script(script)


def settle(waiters: list[concurrent.futures.Future[None]], error: Exception | None = None) -> None:
    """Answer each waiter still waiting; one its caller cancelled (a stop during start-up) is skipped."""
    for waiter in waiters:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


class FirewallService:
    """Owns loxgw's table (and its xtables queue rules) for the daemon's lifetime."""

    def __init__(self, kernel: FirewallKernel, xtables: Callable[[], QueueRules] | None = None,
                 on_recreated: Callable[[], None] | None = None,
                 open_elements: Callable[[], ElementKernel] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`open_elements`: the netlink path for element diffs (None: every diff through `nft -f`)."""
        self.kernel = kernel
        self.open_elements = open_elements
        self.elements: ElementKernel | None = None
        self.clock = clock
        self.queue_rules = QueueRuleKeeper(xtables)
        self.on_recreated = on_recreated or (lambda: None)
        self.applied = Applied()
        self.planner = pinholes.Planner()  # remembers each device's plan: a change re-plans only it
        self.counters: Counter[str] = Counter()
        self.last_error: str | None = None
        self._cond = threading.Condition()
        self._desired: Desired | None = None
        self._full = False  # the next pass declares the table
        self._declared_once = False  # a table found before the first declaration is another run's
        self._verify = (False, False)  # the next pass checks that the table, and the xtables rules, are there
        self._waiters: list[concurrent.futures.Future[None]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last: Desired | None = None  # the last desired state applied, to rebuild from
        self._requested_at: float | None = None  # the oldest request the next pass answers
        self._timing = PassTiming(None, 0.0)

    # --- the event loop's side: never blocks -----------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="loxgw-firewall", daemon=True)
        self._thread.start()

    def request(self, desired: Desired) -> None:
        """Make the kernel match `desired` soon (a diff unless the declarations changed)."""
        with self._cond:
            self._desired = desired
            if self._requested_at is None:
                self._requested_at = self.clock()
            self._cond.notify()

    def verify(self, table: bool = True, xtables: bool = True) -> None:
        """Check (in the worker) that the table is still there, and rebuild it if not; and (`xtables`)
        that the iptables-nft DNS rules are, and put them back if not."""
        with self._cond:
            self._verify = (self._verify[0] or table, self._verify[1] or xtables)
            self._cond.notify()

    def submit(self, desired: Desired) -> concurrent.futures.Future[None]:
        """Declare and fill the table for `desired`; the future fails with KernelError if the kernel refused."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            self._desired = desired
            self._full = True
            self._waiters.append(future)
            self._cond.notify()
        if self._thread is None:  # not started (tests, one-shot use): run the pass here
            self._pass()
        return future

    async def apply(self, desired: Desired) -> None:
        """submit() and wait for it, on the loop."""
        import asyncio  # not at the top: `loxgw run` imports asyncio beside the first declaration

        await asyncio.wrap_future(self.submit(desired))

    def close(self) -> None:
        """Stop the worker and remove everything loxgw installed."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.remove()
        if self.elements is not None:
            self.elements.close()
            self.elements = None

    def status(self) -> dict[str, object]:
        return {"table": self.applied.table, "installed": self.applied.table is not None,
                "pinholes": len(self.applied.holes), "last_error": self.last_error,
                "counters": dict(self.counters)}

    # --- the worker --------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and self._desired is None and not any(self._verify):
                    self._cond.wait()
                if self._stopping:
                    self._fail_waiters(KernelError("loxgw is stopping", None, ""))
                    return
                declaration = self._full  # waited for (start, reload): nothing to gather first
            if not declaration:
                time.sleep(COALESCE)
            self._pass()

    def _pass(self) -> None:
        with self._cond:
            desired, self._desired = self._desired, None
            full, self._full = self._full, False
            (verify_table, verify_xtables), self._verify = self._verify, (False, False)
            waiters, self._waiters = self._waiters, []
            requested, self._requested_at = self._requested_at, None
        self._timing = PassTiming(requested, self.clock())
        try:
            if verify_table:  # after deletions in nftables (daemon.app)
                self.counters["table_checks"] += 1
            if verify_xtables:
                self.counters["xtables_checks"] += 1
            if verify_table and self.applied.table is not None and not self.kernel.table_exists(self.applied.table):
                self.counters["restores"] += 1
                log.warning("table inet %s vanished; restoring it", self.applied.table)
                self.applied = Applied()
                desired = desired or self._last
                full = True
            elif verify_xtables and self._last is not None and not self.queue_rules.intact():
                # Only the iptables-nft DNS rules were touched: put them back, leave the table alone.
                self.counters["queue_rule_restores"] += 1
                log.warning("loxgw's iptables-nft DNS rules were changed; restoring them")
                self.queue_rules.install(self._last)
            if desired is not None:
                self._reconcile(desired, full)
            self.last_error = None
            settle(waiters)
        except KernelError as exc:
            self.last_error = str(exc)
            self.counters["apply_errors"] += 1
            if waiters:
                settle(waiters, exc)
            else:
                log_failure(log, "firewall", exc)
        except Exception as exc:  # the worker must live on; the caller learns of it
            self.last_error = str(exc)
            self.counters["apply_errors"] += 1
            log_failure(log, "firewall", exc)
            settle(waiters, exc)

    def _reconcile(self, desired: Desired, full: bool) -> None:
        config = desired.config
        table = config.main.table
        if self.applied.table is not None and (self.applied.table != table or not config.main.enabled):
            self.remove()
        self._last = desired
        if not config.main.enabled:
            return
        holes, wanted = self.planner.desired(config, desired.devices, desired.announced)
        self._timing.planned = self.clock()
        fresh = self.applied.table is None
        declare = fresh or full or self.applied.declared != desired.declaration_inputs()
        if declare:
            script = ruleset.render(config, desired.mode, desired.queue, desired.path, desired.forwards,
                                    elements=wanted if fresh else None).script
            if not fresh:
                script += ruleset.render_element_changes(table, *pinholes.changes(self.applied.elements, wanted))
            # Only before the first declaration may a table be another run's: later it is ours (a
            # recovery after a failed diff), and replacing it would lose its windows.
            try:
                alongside(functools.partial(declare_table, self.kernel, table, script,
                                            fresh and not self._declared_once),
                          functools.partial(self.queue_rules.install, desired))
            except KernelError:
                if not self._declared_once:  # start-up fails: this run leaves nothing in the kernel
                    self._take_back(table)
                raise
            self.counters["declares"] += 1
            self._declared_once = True
        else:
            delete, add = pinholes.changes(self.applied.elements, wanted)
            if not delete and not add:
                self._publish(table, desired, wanted, holes)
                return
            try:
                self._apply_changes(table, delete, add)
            except KernelError:
                # Whatever the kernel holds is unknown now: start over from a declared table.
                self.applied = Applied()
                self._reconcile(desired, True)
                return
            self.counters["diffs"] += 1
            self._timing.record(self.clock(), self.counters, sum(map(len, delete.values())),
                                sum(map(len, add.values())))
        self._publish(table, desired, wanted, holes)
        if fresh:
            self.on_recreated()

    def _apply_changes(self, table: str, delete: pinholes.Elements, add: pinholes.Elements) -> None:
        """One transaction: a netlink batch, or `nft -f` where the kernel refuses the batch."""
        if self.elements is None and self.open_elements is not None:
            try:
                self.elements = self.open_elements()
            except OSError as exc:
                log_failure(log, "opening the netlink set writer; set elements go through nft -f", exc)
                self.open_elements = None
        if self.elements is not None:
            kernel_delete, kernel_add = setkeys.kernel_changes(delete), setkeys.kernel_changes(add)
            self._timing.diffed = self.clock()
            try:
                self.elements.apply(table, kernel_delete, kernel_add)
                self.counters["netlink_diffs"] += 1
                return
            except KernelError as exc:
                self.counters["netlink_refusals"] += 1
                log_failure(log, "pinhole set elements over netlink; retried with nft -f", exc)
                encoding_refused = exc.errno in ENCODING_ERRNOS
            self.kernel.apply_script(ruleset.render_element_changes(table, delete, add))
            if not encoding_refused:  # lost replies, a transient refusal: netlink stays
                return
            # nft applied what the kernel refused over netlink: this kernel wants other bytes than
            # core.setkeys writes, so stay with nft. (Had nft failed too, the change itself was wrong.)
            log.warning("the kernel refused a set element batch that nft applied; set elements go through "
                        "nft -f from now on")
            self.elements.close()
            self.elements = None
            self.open_elements = None
            return
        self._timing.diffed = self.clock()
        self.kernel.apply_script(ruleset.render_element_changes(table, delete, add))

    def _publish(self, table: str, desired: Desired, wanted: pinholes.Elements,
                 holes: tuple[pinholes.Pinhole, ...]) -> None:
        # One assignment: status reads a consistent Applied without a lock.
        self.applied = Applied(table, desired.declaration_inputs(), wanted, holes, self.planner.holes_per_device())

    def _take_back(self, table: str) -> None:
        """After a failed first declaration: either half (the table, the queue rules) may have gone in."""
        self.queue_rules.remove()
        try:
            self.kernel.apply_script(ruleset.render_removal(table))
        except KernelError as exc:
            log.error("could not remove table inet %s: %s", table, exc)

    def remove(self) -> None:
        """Remove loxgw's table and queue rules; nothing of loxgw stays in the kernel."""
        self.queue_rules.remove()
        table = self.applied.table
        self.applied = Applied()
        if table is None:
            return
        try:
            self.kernel.apply_script(ruleset.render_removal(table))
        except KernelError as exc:
            log.error("could not remove table inet %s: %s", table, exc)

    def _fail_waiters(self, exc: Exception) -> None:
        waiters, self._waiters = self._waiters, []
        settle(waiters, exc)
