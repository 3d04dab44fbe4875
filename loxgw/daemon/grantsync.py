"""The grant memory kept in step with the DNS ledger, for the diagnose service's questions.

Nothing is synced ahead of a question: before blocked attempts are explained
or `explain` or doctor is answered, the devices concerned are synced alone
(from a copy of their ledger entries, taken under the DNS lock), and the
entries the ledger dropped since are handed over. With thousands of entries
expiring, a full mirror rebuilt every few seconds was most of the daemon's
idle CPU (bench.router_class --dns-entries). A sync on the loop never waits
for the lock longer than LOCK_WAIT; doctor's, of every device, is prepared in
a thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, NamedTuple

from loxgw.core import dns
from loxgw.core.blocked import GrantMemory, GrantSeen, Listed
from loxgw.core.config import IPAddress
from loxgw.edges import clock

if TYPE_CHECKING:
    from loxgw.daemon.app import Daemon

LOCK_WAIT = 0.02  # seconds the loop waits for the DNS lock to sync a device; then the last sync serves
LOCK_WAIT_OFF_LOOP = 1.0  # the same for doctor's sync, which waits in a thread
FEW_DEVICES = 16  # synced from the ledger's per-device index; more from a copy of the whole ledger
MAX_SYNCED_COPIES = 4096  # devices whose last copy is remembered


class Prepared(NamedTuple):
    """A copy of the ledger for some devices, ready for the grant memory."""

    copy: int  # which copy: a later one holds a later state of the ledger
    at: float  # the clock when it was taken
    departed: list[GrantSeen]
    listed: dict[IPAddress, Listed]


class GrantSync:
    """Brings the grant memory up to date for the devices a question concerns, never waiting long on the loop."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.memory = GrantMemory()
        self.skipped = 0  # device syncs given up because the DNS thread held its lock
        self._copies = 0  # copies of the ledger taken so far (under the DNS lock)
        self._synced_copy: dict[IPAddress, int] = {}  # the copy each device was last synced from

    def devices(self, devices: set[IPAddress], now: float) -> bool:
        """Sync these few devices' grants on the loop, and take what the ledger dropped since; False if the
        DNS thread kept its lock (the memory then answers from its last sync)."""
        return self._apply(self._prepare(devices, now, LOCK_WAIT))

    async def devices_off_loop(self, devices: set[IPAddress], now: float) -> bool:
        """devices() for many (doctor: every device): the copy, and what is built from it, in a thread
        (20,000 entries: ~80 ms of the loop's time otherwise), which may wait longer for the lock."""
        started = clock.now()
        return self._apply(await asyncio.to_thread(self._prepare, devices, now, LOCK_WAIT_OFF_LOOP, started))

    def _prepare(self, devices: set[IPAddress], now: float, wait: float, started: float | None = None
                 ) -> Prepared | None:
        """A copy of the ledger's entries for `devices` (and of what it dropped), as of `now`, or as of
        the copy when `started` (the clock when `now` was taken: the copy waited in a thread)."""
        dns_service = self.daemon.dns
        if not devices and not dns_service.ledger.departed:
            return Prepared(0, now, [], {})
        if not dns_service.lock.acquire(timeout=wait):
            return None
        try:
            if started is not None:
                now += clock.now() - started
            ledger = dns_service.ledger
            # Many devices: the whole ledger copied in C, filtered once the lock is let go; raw_of
            # hashes every key in Python while the DNS thread waits (50,000: ~100 ms).
            raw = ledger.raw() if len(devices) > FEW_DEVICES else ledger.raw_of(devices)
            departed = ledger.take_departed()
            copy = self._copies = self._copies + 1
        finally:
            dns_service.lock.release()
        listed: dict[IPAddress, list[GrantSeen]] = {device: [] for device in devices}
        for entry in raw:
            entries = listed.get(entry[0][0])
            if entries is not None:
                entries.append(seen(entry))
        return Prepared(copy, now, [seen(entry) for entry in departed],
                        {d: Listed.of(e, now) for d, e in listed.items()})

    def _apply(self, prepared: Prepared | None) -> bool:
        if prepared is None:
            self.skipped += 1
            return False
        # A copy made in a thread may come after a later one reached the loop: a device keeps the newest.
        listed = {d: e for d, e in prepared.listed.items() if self._synced_copy.get(d, 0) < prepared.copy}
        if len(self._synced_copy) + len(listed) > MAX_SYNCED_COPIES:
            self._synced_copy.clear()  # bounded; only a copy in flight meanwhile could then be applied stale
        self._synced_copy.update(dict.fromkeys(listed, prepared.copy))
        self.memory.remember(prepared.departed, prepared.at)
        self.memory.sync_devices(listed, prepared.at)
        return True

    def departures(self, now: float) -> None:
        """Take what the ledger dropped, if anything, before its bounded log overflows (every tick; when the
        DNS thread holds its lock, at the next)."""
        prepared = self._prepare(set(), now, 0)
        if prepared is not None:
            self._apply(prepared)


def seen(entry: tuple[tuple[IPAddress, IPAddress, dns.Profile], tuple[str, float]]) -> GrantSeen:
    """A ledger entry (GrantLedger.raw_of) as the memory keeps it."""
    (device, address, profile), (name, until) = entry
    return GrantSeen(device, address, name, profile, until)
