"""The diagnose service: blocked attempts from the kernel's samples, and the answers to doctor and explain.

Samples arrive on their own NFLOG group (queue_num + BLOCKED_GROUP_OFFSET),
at most 40 a second (the kernel's limit); each is only counted in the
bounded table of core.blocked, on the event loop. Rows are explained
(core.explain) when someone reads them (status, doctor), as of the time
they were last seen, so a row costs one explanation per read however many
samples it got. No packet loxgw allows costs anything here.

The grants a device held come from the DNS ledger, through a GrantMemory
that also keeps those that expired, synced before each question for the
devices it concerns (daemon.grantsync).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from loxgw.core import catalog, dns
from loxgw.core.blocked import (
    Attempt,
    BlockedTable,
    format_attempts,
    parse_sample,
)
from loxgw.core.config import Config, IPAddress, IPNetwork
from loxgw.core.errors import KernelError
from loxgw.core.firewall import BLOCKED_GROUP_OFFSET
from loxgw.daemon.grantsync import GrantSync
from loxgw.daemon.logs import log_failure
from loxgw.edges import clock

if TYPE_CHECKING:
    from loxgw.core.explain import Segment, View
    from loxgw.core.functions import FunctionState
    from loxgw.daemon.app import Daemon
    from loxgw.daemon.status import Handler

log = logging.getLogger("loxgw")

TICK = 1.0
VIEW_EVERY = 5.0  # the indexed view is rebuilt when the firewall changes, and at least this often
NETWORKS_EVERY = 30.0  # zone interfaces' addresses re-read (in a thread) this often
REBIND_EVERY = 60.0  # an NFLOG group another program held is tried again this often
STATUS_RECENT = 5
MAX_SEEN = 1024  # device keys remembered as seen on the network
DOCTOR_RECENT = 10


def _open_log(group: int) -> Any:
    from loxgw.edges import nflog

    return nflog.CopyLog(group)


def _interface_networks(names: tuple[str, ...]) -> dict[str, tuple[IPNetwork, ...]]:
    from loxgw.edges import probe

    return probe.interface_networks(names)


class DiagnoseService:
    """Owns the blocked-attempts table, the grant memory, and the NFLOG group of the samples."""

    def __init__(self, daemon: Daemon, open_log: Callable[[int], Any] | None = None,
                 read_networks: Callable[[tuple[str, ...]], dict[str, tuple[IPNetwork, ...]]] | None = None) -> None:
        self.daemon = daemon
        self.open_log = open_log or _open_log
        self.read_networks = read_networks or _interface_networks
        self.table = BlockedTable()
        self.grants = GrantSync(daemon)
        self.memory = self.grants.memory
        self.log: Any = None  # edges.nflog.CopyLog while bound
        self.group: int | None = None
        self.log_error: str | None = None
        self.malformed = 0
        self.networks: dict[str, tuple[IPNetwork, ...]] = {}
        # Keys of devices some detection source has seen: a reload re-creates static devices with
        # the config as their only source, and doctor must not call them never seen for that.
        self.seen: OrderedDict[str, None] = OrderedDict()
        self._view: View | None = None
        self._view_key: tuple[object, ...] = ()
        self._view_at = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._bind(loop)
        self._task = loop.create_task(self._tick_forever())

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        group = self.daemon.config.main.queue_num + BLOCKED_GROUP_OFFSET
        self.group = group
        try:
            self.log = self.open_log(group)
        except (KernelError, OSError) as exc:
            self.log_error = f"NFLOG group {group}: {exc}"
            log.warning("no samples of blocked attempts (%s)", self.log_error)
            return
        self.log_error = None
        loop.add_reader(self.log.fileno(), self._on_readable)

    def _unbind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.log is not None:
            loop.remove_reader(self.log.fileno())
            self.log.close()
            self.log = None

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._unbind(loop)

    async def _tick_forever(self) -> None:
        networks_at = float("-inf")
        bound_at = clock.now()
        await asyncio.sleep(TICK)  # after the start-up burst of the other services' dumps
        while True:
            now = clock.now()
            moved = self.group != self.daemon.config.main.queue_num + BLOCKED_GROUP_OFFSET  # a reload
            if self._loop is not None and (moved or (self.log is None and now - bound_at >= REBIND_EVERY)):
                bound_at = now
                self._unbind(self._loop)
                self._bind(self._loop)
            if now - networks_at >= NETWORKS_EVERY:
                networks_at = now
                await self._read_networks()
            self.note_seen()
            self.grants.departures(now)
            await asyncio.sleep(TICK)

    async def _read_networks(self) -> None:
        names = tuple(i for zone in self.daemon.config.zones for i in zone.interfaces)
        try:
            self.networks = await asyncio.to_thread(self.read_networks, names)
        except Exception as exc:  # an rtnetlink failure must not end the tick
            log_failure(log, "reading the zones' addresses", exc)
        self._view = None

    def note_seen(self) -> None:
        for dev in self.daemon.devices.inventory.devices():
            if dev.sources - {"static"}:
                self.seen[dev.key] = None
                self.seen.move_to_end(dev.key)
        while len(self.seen) > MAX_SEEN:
            self.seen.popitem(last=False)

    # --- samples -------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            copies = self.log.read()
        except KernelError as exc:
            log_failure(log, "reading blocked samples", exc)
            return
        now = clock.now()
        for prefix, packet in copies:
            sample = parse_sample(prefix, packet)
            if sample is None:
                self.malformed += 1
                continue
            self.table.note(sample, now)

    def explained(self, rows: list[Attempt], now: float) -> list[Attempt]:
        """The rows, each explained as of when it was last seen (again if seen since its last explanation)."""
        stale = [r for r in rows if r.verdict is None or r.explained_at < r.last_seen]
        if not stale:
            return rows
        from loxgw.core.explain import (  # imported at first use (a status at start-up has no rows): see view()
            Flow,
            decide,
        )

        synced = self.grants.devices({r.sample.src for r in stale if r.sample.direction == "out"}, now)
        view = self.view(now)
        for row in stale:
            s = row.sample
            grants = self.memory.lookup(s.src, row.last_seen, s.dst) if s.direction == "out" else []
            verdict = decide(Flow(s.src, s.dst, s.proto, s.port, chain=s.direction), view, grants, row.last_seen)
            if verdict.passes:  # the kernel did not allow it: what allows it now came later (a grant, a pinhole)
                verdict = replace(verdict, code="allowed_now", text=f"allowed now, not when sampled: {verdict.text}")
            row.verdict = verdict
            if synced:  # else explained again next time, from fresh grants
                row.explained_at = now
        return rows

    # --- the firewall as data --------------------------------------------------------

    @functools.cached_property
    def policy(self) -> dns.CloudPolicy:
        """The devices policy the view explains with: built at first use, a second or more after
        start-up, whose CPU is what a router waits for."""
        return dns.build_policy(catalog.load(), "devices")

    def view(self, now: float) -> View:
        # core.explain (with core.functions and core.question) is imported when the first row or
        # question needs it, not at start-up: ~10 ms of CPU, a tenth of a second on a router's.
        from loxgw.core.explain import View

        d = self.daemon
        applied = d.firewall.applied
        key = (d.config, d.mode, applied.table, applied.holes)
        if self._view is None or now - self._view_at >= VIEW_EVERY or \
                any(a is not b for a, b in zip(key, self._view_key, strict=True)):
            self._view = View(d.mode, applied.table is not None, segments(d.config, self.networks),
                              d.devices.inventory.devices(), applied.holes, self.policy,
                              d.config.main.allowed_targets, profiles=d.dns.profiles)
            self._view_key, self._view_at = key, now
        return self._view

    def names(self) -> dict[IPAddress, str]:
        view = self._view
        return {ip: dev.name for ip, dev in view.device_by_ip.items() if dev.name} if view is not None else {}

    # --- answers -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For `loxgw status` under "blocked": the most recent attempts and the table's counters."""
        now = clock.now()
        recent = self.explained(self.table.recent(STATUS_RECENT), now)
        return {"recent": [a.as_json(now, self.names()) for a in recent],
                "rows": len(self.table), "samples": self.table.samples, "evicted": self.table.evicted,
                "malformed": self.malformed + (self.log.malformed if self.log is not None else 0),
                "grant_syncs_skipped": self.grants.skipped,
                "grants_departed_lost": self.daemon.dns.ledger.departed_lost,
                "group": self.group, "listening": self.log is not None, "error": self.log_error}

    def handlers(self) -> dict[str, Handler]:
        """The status socket's request words this service answers (the words after it are passed on)."""
        return {"doctor": lambda words: doctor_request(self),
                "explain": lambda words: self.handle(["explain", *words])}

    def handle(self, words: list[str]) -> dict[str, Any]:
        """An `explain ...` request from the status socket; a JSON-able answer, never an exception.

        Words arrive percent-encoded (edges.diagnose), so names may hold spaces.
        """
        from urllib.parse import unquote  # a request's first need: see core.ssdp.split_url

        words = [unquote(w) for w in words]
        try:
            if words[:1] == ["explain"]:
                return self.explain(words[1:], clock.now())
        except Exception as exc:  # a bug here must not take the status socket down
            log_failure(log, f"answering {words[:1]}", exc)
            return {"error": f"internal error: {exc}"}
        return {"error": "unknown request"}

    def explain(self, words: list[str], now: float) -> dict[str, Any]:
        from loxgw.core.blocked import describe_port
        from loxgw.core.explain import Flow, decide
        from loxgw.core.question import address_or_none, find_device, parse_question

        try:
            question = parse_question(words)
        except ValueError as exc:
            return {"error": str(exc)}
        view = self.view(now)
        aliases = {s.name.lower(): s.mac or f"ip:{s.ip}" for s in self.daemon.config.devices}
        device = find_device(view.devices, question.device, aliases)
        src = device.ip if device is not None and device.ip is not None else address_or_none(question.device)
        if src is None:
            return {"error": f"no device {question.device!r}: give a device's name, MAC or address"}
        target = find_device(view.devices, question.host, aliases)
        dst = target.ip if target is not None and target.ip is not None else address_or_none(question.host)
        name = "" if dst is not None else question.host
        synced = self.grants.devices({src}, now)
        flow = Flow(src, dst, question.proto, question.port, name)
        verdict = decide(flow, view, self.memory.lookup(src, now, dst, name), now)
        return {"explain": {"device": str(src), "device_name": device.name if device is not None else "",
                            "host": question.host, "address": str(dst) if dst is not None else None,
                            "flow": describe_port(question.proto, question.port), "grants_synced": synced}
                | verdict.as_json()}

    async def doctor(self, now: float) -> dict[str, Any]:
        """What the daemon knows for `loxgw doctor`: its mode, DNS path, devices and their functions."""
        from loxgw.core.functions import device_functions

        d, cfg = self.daemon, self.daemon.config
        self.note_seen()
        view = self.view(now)
        relay_missing, relayed = relay_coverage(cfg)
        by_device: dict[IPAddress, list[Attempt]] = {}
        for attempt in self.explained(self.table.recent(), now):
            by_device.setdefault(attempt.device, []).append(attempt)
        names = self.names()
        grants_synced = await self.grants.devices_off_loop({dev.ip for dev in view.devices if dev.ip is not None}, now)
        devices = []
        for dev in view.devices:
            functions: list[FunctionState] = []
            other: list[Attempt] = []
            if dev.ip is not None:
                holes = [*view.holes_to.get(dev.ip, ()), *view.holes_from.get(dev.ip, ())]
                grants = self.memory.lookup(dev.ip, now)
                functions, other = device_functions(dev, view.entries, by_device.get(dev.ip, []), grants, holes,
                                                    relayed, now)
            devices.append({
                "name": dev.name, "product": dev.product or "unknown", "ip": str(dev.ip) if dev.ip else None,
                "mac": dev.mac, "static": dev.static, "seen": dev.key in self.seen, "present": dev.present,
                "last_seen": round(now - dev.last_seen, 1), "functions": [asdict(f) for f in functions],
                "other_blocked": format_attempts(a.as_json(now, names) for a in other[:DOCTOR_RECENT]),
            })
        redirect_ifs = [i for z in cfg.zones if z.role == "devices" and z.cloud for i in z.interfaces]
        return {
            "mode": d.mode, "enabled": cfg.main.enabled, "table": d.firewall.applied.table or cfg.main.table,
            "installed": d.firewall.applied.table is not None, "dns_mode": cfg.main.dns_mode,
            "queue_mode": d.dns.queue_mode, "dns_path": d.dns.path.label,
            "redirect_wanted": bool(cfg.main.redirect_dns and cfg.main.dns_mode != "off" and redirect_ifs),
            "rebind_exception": cfg.main.rebind_exception, "blocked_log_error": self.log_error,
            "relay_missing": relay_missing, "devices": devices, "grants_synced": grants_synced,
            "upnp": d.upnp.status(),
            "blocked": [a.as_json(now, names) for a in self.table.recent(DOCTOR_RECENT)],
            "blocked_table": {k: v for k, v in self.status().items() if k != "recent"},
        }


async def doctor_request(service: DiagnoseService) -> dict[str, Any]:
    """A `doctor` request: as DiagnoseService.handle, a JSON-able answer, never an exception."""
    try:
        return {"doctor": await service.doctor(clock.now())}
    except Exception as exc:  # a bug here must not take the status socket down
        log_failure(log, "answering ['doctor']", exc)
        return {"error": f"internal error: {exc}"}


def segments(config: Config, networks: dict[str, tuple[IPNetwork, ...]]) -> list[Segment]:
    from loxgw.core.explain import Segment

    return [Segment(i, z.name, z.role, z.cloud, networks.get(i, ())) for z in config.zones for i in z.interfaces]


def relay_coverage(config: Config) -> tuple[bool, bool]:
    """(a relay is missing: devices and clients zones sit on different interfaces with none between them,
    discovery is relayed between a devices and a clients interface)."""
    devices, clients = set(config.interfaces_with_role("devices")), set(config.interfaces_with_role("clients"))
    relayed = any(r.enabled and set(config.relay_interfaces(r)) & devices and set(config.relay_interfaces(r)) & clients
                  for r in config.relays)
    return bool(devices and clients and devices != clients and not relayed), relayed
