"""The relay service: one relay per enabled `config relay`, with its own netlink set writer.

Each relay is a sans-I/O core (core.relay) fed by its sockets
(edges.relaynet), whose reader threads call it under the service's lock.
The service wires what the core hands out: copies go back to the sockets,
the core's timer runs through loop.call_at (after the sockets were read, so
a peer relay's copy already received cancels a deferred one), answer
windows become set elements written by the relay's own writer before the
copy leaves (it shares no lock with the DNS thread, so a burst of DNS
answers never delays a copy), and discovery answers go to the devices
service's queue on the event loop, never handled inside the relay's packet
handler.

The per-packet copy runs in the kernel where it can (core.relaykernel, a
netdev table: 0.12-0.18 s of CPU per 10,000 copies against 0.59-0.66 s
here, no loss at 30,000/s), for the first relay whose `kernel` option
allows it. daemon.relaykernel reconciles that path like any desired
state: from the interfaces the sockets report, the config and whether a peer relay was seen, it
renders the table (or none), applies it in a worker thread, and swaps the
receive filters so Python sees no originals, only peers' copies. A peer
relay hands every copy back to the Python path, whose arbiter lets each
broadcast cross once; the kernel path returns once no peer was seen for
relaypeers.PEER_MEMORY.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loxgw.core import relay, relaykernel, relaywire
from loxgw.core.catalog import PortRange
from loxgw.core.config import Config
from loxgw.core.configsections import Relay as RelaySection
from loxgw.core.errors import KernelError
from loxgw.core.firewall import RELAY_ANSWERS
from loxgw.core.relay import AnswerWindow, Relay
from loxgw.daemon.relaykernel import KERNEL, PYTHON, KernelEdge, KernelPaths
from loxgw.edges import clock

if TYPE_CHECKING:
    from loxgw.edges.relaynet import RelaySockets

log = logging.getLogger("loxgw")

AnswerSink = Callable[[ipaddress.IPv4Address, bytes], None]


class _Running:
    """One relay: its core, its sockets and the core's timer (`when` under the lock, `timer` on the loop).

    `path` and `reason`: where its copies are made and why; `kernel`: the
    netdev table the kernel holds for it (None: none).
    """

    def __init__(self, name: str, core: Relay, section: RelaySection | None = None, kernel_allowed: str = "") -> None:
        self.name = name
        self.core = core
        self.section = section
        self.sockets: RelaySockets | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.when: float | None = None
        self.kernel_allowed = kernel_allowed  # "" if the kernel path may run, else why not
        self.path = PYTHON
        self.reason = kernel_allowed or "starting"
        self.kernel: relaykernel.KernelRelay | None = None
        self.closed = False  # set by close(): a kernel table applied after it is removed at once
        self.peers_until = float("-inf")
        self.peer_timer: asyncio.TimerHandle | None = None


def _relayed_ports(config: Config) -> tuple[tuple[PortRange, ...], ...]:
    """Each relay's ports: a `config device` of a Gen. 1 Intercom added or removed changes them."""
    return tuple(config.relay_ports(section) for section in config.relays)


class RelayService:
    """Runs the configured relays; restarts them when their config or zones change."""

    def __init__(self, config: Config, open_writer: Callable[[], Any], on_loxlive: AnswerSink,
                 kernel: KernelEdge | None = None, now: Callable[[], float] = clock.now) -> None:
        self.config = config
        self.paths = KernelPaths(self, kernel if kernel is not None else KernelEdge(), now)
        self.open_writer = open_writer
        self.on_loxlive = on_loxlive
        self.relays: list[_Running] = []
        self.writer: Any = None
        self.key_length = relaywire.ANSWER_KEY_LENGTH
        self.counters: Counter[str] = Counter()
        self.last_error: str | None = None
        self.lock = threading.Lock()  # every call into a core, and the writer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def move_copies_to_kernel(self) -> None:
        """The daemon is ready: relays that may copy in the kernel get their netdev table now."""
        self.paths.release()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """One relay per enabled section with two interfaces or more; KernelError if its sockets fail."""
        from loxgw.edges import relaynet  # imported where a relay runs

        self._loop = loop
        self._loop_thread = threading.get_ident()
        config = self.config
        roles = config.interface_roles()
        sections = []
        for section in config.relays:
            names = config.relay_interfaces(section)
            if not section.enabled:
                continue
            if len(names) < 2:
                log.warning("relay %s has fewer than two interfaces; nothing to relay", section.name)
                continue
            sections.append((section, names))
        if sections:  # before the first search can need it
            await asyncio.to_thread(self._prepare_writer)
        for section, names in sections:
            ports = config.relay_ports(section)  # the Gen. 1 Intercom's ports when one is configured
            run = _Running(section.name, relay.Relay(
                relay.RelayPolicy(ports, frozenset(names), section.allow_upstream),
                relay.RateLimiter(section.rate_limit, section.global_rate)), section, self.paths.allowed(section))
            sockets = run.sockets = relaynet.RelaySockets(run.core, roles, self.lock,
                                                         functools.partial(self._on_core, run), clock.now,
                                                         functools.partial(self.paths.reconcile_soon, run))
            try:
                await sockets.start(loop)
            except OSError as exc:
                sockets.close(loop)
                raise KernelError(f"relay {section.name}: opening sockets", exc.errno, exc.strerror or "") from exc
            self.relays.append(run)
            # Copies start in Python at once; the kernel takes them over once the daemon is ready
            # (move_copies_to_kernel) and the table is in, so start-up and readiness do not wait for it.
            self.paths.reconcile_soon(run)
            log.info("relay %s: ports %s between %s, copies in %s (%s)", section.name,
                     ",".join(str(p) for p in ports), ", ".join(names), run.path,
                     run.reason if run.kernel_allowed else "until the kernel path is settled")

    def _prepare_writer(self) -> None:
        """Open the set writer now (not on the first search) and learn the kernel's answer-key layout."""
        from loxgw.edges import relayset

        try:
            self._writer()
            found = relayset.answer_key_length(self.config.main.table, RELAY_ANSWERS)
        except (KernelError, OSError) as exc:
            self.counters["relay_answer_errors"] += 1
            log.warning("relay: answer windows: %s", exc)
            return
        if found in (relaywire.ANSWER_KEY_LENGTH, relaywire.LEGACY_ANSWER_KEY_LENGTH):
            self.key_length = found
        if found == relaywire.LEGACY_ANSWER_KEY_LENGTH:
            log.info("relay: the answer set is keyed asker . port; answers must come from a relayed port")

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the sockets; remove the netdev table (one `nft` run, at stop and reload only)."""
        self.paths.close(self.relays)
        for run in self.relays:
            if run.sockets is not None:
                run.sockets.close(loop)
            if run.timer is not None:
                run.timer.cancel()
        self.relays.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def reconfigure(self, config: Config) -> None:
        """Restart the relays if their sections, their ports or the zones changed."""
        old, self.config = self.config, config
        if (old.relays, old.zones, old.main.table, _relayed_ports(old)) == \
                (config.relays, config.zones, config.main.table, _relayed_ports(config)):
            return
        loop = asyncio.get_running_loop()
        self.close(loop)
        try:
            await self.start(loop)
            self.last_error = None
        except KernelError as exc:
            self.last_error = str(exc)
            log.error("%s", exc)

    def owns_answer_port(self, port: int) -> bool:
        return any(run.sockets is not None and run.sockets.holds_port(port) for run in self.relays)

    # --- what the cores hand out ---------------------------------------------

    def _on_core(self, run: _Running, rearm: bool = False) -> None:
        """After a call into the core (under the lock, on any thread): hand on its events, arm its timer."""
        core = run.core
        on_loop = threading.get_ident() == self._loop_thread
        if core.events:
            windows: list[AnswerWindow] = []
            while (event := core.next_event()) is not None:
                if isinstance(event, AnswerWindow):
                    windows.append(event)
                elif on_loop:
                    self.on_loxlive(ipaddress.IPv4Address(event.src), event.payload)
                elif self._loop is not None:
                    self._loop.call_soon_threadsafe(self.on_loxlive, ipaddress.IPv4Address(event.src), event.payload)
            if windows:
                self._open_windows(windows)
        if core.peers_changed:
            core.peers_changed = False
            until = core.peers_until()
            if on_loop:
                self.paths.peers_seen(run, until)
            elif self._loop is not None:
                self._loop.call_soon_threadsafe(self.paths.peers_seen, run, until)
        if rearm or core.timer_changed:
            when = core.get_timer()
            if when != run.when:
                run.when = when
                if on_loop:
                    self._arm(run, when)
                elif self._loop is not None:
                    self._loop.call_soon_threadsafe(self._arm, run, when)

    def _arm(self, run: _Running, when: float | None) -> None:
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        if when is not None and self._loop is not None and run in self.relays:
            run.timer = self._loop.call_at(when, self._on_timer, run)

    def _on_timer(self, run: _Running) -> None:
        run.timer = None
        if run.sockets is None:
            return
        run.sockets.drain()  # a peer's copy that arrived meanwhile cancels before the hold-off ends
        with self.lock:
            run.when = None
            copies = run.core.handle_timer(clock.now())
            self._on_core(run, rearm=True)
        run.sockets.send(copies)

    def _open_windows(self, windows: list[AnswerWindow]) -> None:
        """Let devices answer relayed searches: one netlink batch per read of the sockets."""
        elements = list(dict.fromkeys(
            (RELAY_ANSWERS, relaywire.answer_key(w.segment, w.asker, w.port, self.key_length), w.timeout)
            for w in windows))
        try:
            self._writer().add_elements(elements)
        except (KernelError, OSError) as exc:
            self.counters["relay_answer_errors"] += 1
            log.debug("relay answer window failed: %s", exc)

    def _writer(self) -> Any:
        """The relay's set writer, opened once. It must write before add_elements() returns: the window
        must be in the kernel before the copy that draws the answer leaves. It is called from the
        reader threads (under the lock), never on the event loop, so waiting for the kernel's
        transaction lock delays that one copy, nothing else."""
        if self.writer is None:
            self.writer = self.open_writer()
        return self.writer

    def status(self) -> dict[str, Any]:
        now = clock.now()
        counters: Counter[str] = Counter()
        peers: dict[str, dict[str, float]] = {}
        holdoff = 0.0
        for run in self.relays:
            with self.lock:
                state = run.core.status(now)
            counters.update(state["counters"])
            peers.update(state["peers"])
            holdoff = max(holdoff, state["holdoff_ms"])
            if run.sockets is not None:
                counters.update(run.sockets.counters)
        counters.update(self.counters)
        self.paths.read_counters(now)
        # The kernel's per-port counts, named as the core's: views read one set of names for either path.
        counters.update({k: v for k, v in self.paths.counters.items() if k.count(":") == 2})
        first = self.relays[0] if self.relays else None
        return {
            "interfaces": sorted({i.name for run in self.relays for i in run.core.interfaces}),
            "counters": dict(counters),
            "peers": peers,
            "holdoff_ms": holdoff,
            "path": KERNEL if any(run.path == KERNEL for run in self.relays) else PYTHON,
            "path_reason": first.reason if first is not None else "no relay runs",
            "kernel_counters": dict(self.paths.counters),
        }
