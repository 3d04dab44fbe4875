"""The ledger of live DNS entries: the per-device cap, status, and what to put back after a restart.

The kernel expires the real set elements itself; the ledger mirrors them,
bounded, and takes `now` for every decision.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from loxgw.core.config import IPAddress
from loxgw.core.dns import Grant, Profile
from loxgw.core.firewall import CLOUD_SET_SIZE


@dataclass
class GrantLedger:
    """Live grants for `loxgw status` and the caps; the kernel expires the real elements itself.

    Bounded twice: `capacity` live grants in all, the size each kernel set is
    declared with (core.firewall.CLOUD_SET_SIZE), and `per_device` live grants
    per device. Beyond either, new grants wait until some expire; existing
    ones are still refreshed. Nothing is evicted: what the ledger holds is
    what the kernel holds, so status tells the truth and a restart or a
    rebuilt table can put back every entry.

    Admission records at once (`admit`): a burst of answers read together
    is counted grant by grant, so no batch overshoots a cap. A grant the
    kernel then refused is taken back with `forget`.
    """

    capacity: int = CLOUD_SET_SIZE
    per_device: int = 2048
    prune_every: float = 1.0  # seconds: a device at its cap costs one full pass per second, at most
    # Expired entries dropped from the ledger, kept for whoever remembers them (the diagnose service's
    # grant memory, which keeps at most 32 for each of 256 devices): the newest this many.
    departed_max: int = 8192

    def __post_init__(self) -> None:
        self._live: OrderedDict[tuple[IPAddress, IPAddress, Profile], tuple[str, float]] = OrderedDict()
        # Each device's keys: its count for the cap, and its entries without a pass over all of them.
        self._keys: dict[IPAddress, set[tuple[IPAddress, IPAddress, Profile]]] = {}
        self._pruned_at = -math.inf
        self.departed: deque[tuple[tuple[IPAddress, IPAddress, Profile], tuple[str, float]]] = \
            deque(maxlen=self.departed_max)
        self.departed_lost = 0  # dropped entries pushed out of `departed` before anyone took them

    def admit(self, grants: list[Grant], now: float) -> list[Grant]:
        """Record and return the grants that fit: refreshes always, new ones while under both caps."""
        admitted = []
        for grant in grants:
            key = (grant.device, grant.address, grant.profile)
            if key not in self._live and not self._room(grant.device, now):
                continue
            self._put(key, grant, now)
            admitted.append(grant)
        return admitted

    def _room(self, device: IPAddress, now: float) -> bool:
        if len(self._keys.get(device, ())) < self.per_device and len(self._live) < self.capacity:
            return True
        if now - self._pruned_at >= self.prune_every:
            self._prune(now)
        return len(self._keys.get(device, ())) < self.per_device and len(self._live) < self.capacity

    def _put(self, key: tuple[IPAddress, IPAddress, Profile], grant: Grant, now: float) -> None:
        if self._live.pop(key, None) is None:
            self._keys.setdefault(grant.device, set()).add(key)
        self._live[key] = (grant.name, now + grant.timeout)

    def record(self, grants: Iterable[Grant], now: float) -> None:
        """Grants already in the kernel (adopted, restored): recorded whatever the caps say."""
        for grant in grants:
            self._put((grant.device, grant.address, grant.profile), grant, now)

    def forget(self, grants: Iterable[Grant]) -> None:
        """Take back admitted grants the kernel did not take."""
        for grant in grants:
            key = (grant.device, grant.address, grant.profile)
            if self._live.pop(key, None) is not None:
                self._forget(key)

    def _forget(self, key: tuple[IPAddress, IPAddress, Profile]) -> None:
        keys = self._keys.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[key[0]]

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        for key in [k for k, (_, until) in dict.items(self._live) if until <= now]:  # see raw()
            if len(self.departed) == self.departed_max:
                self.departed_lost += 1
            self.departed.append((key, self._live.pop(key)))
            self._forget(key)

    def grants(self, now: float) -> list[Grant]:
        """The live grants with their remaining time, to put back what a firewall restart removed."""
        self._prune(now)
        return self.grants_of(self.raw(), now)

    def take_departed(self) -> list[tuple[tuple[IPAddress, IPAddress, Profile], tuple[str, float]]]:
        """The expired entries dropped since the last call, oldest first (at most departed_max)."""
        taken = list(self.departed)
        self.departed.clear()
        return taken

    def raw_of(self, devices: Iterable[IPAddress]
               ) -> list[tuple[tuple[IPAddress, IPAddress, Profile], tuple[str, float]]]:
        """raw() for these devices only: at most per_device entries each, whatever the ledger holds."""
        live = self._live
        return [(key, live[key]) for device in devices for key in self._keys.get(device, ())]

    @staticmethod
    def grants_of(raw: Iterable[tuple[tuple[IPAddress, IPAddress, Profile], tuple[str, float]]],
                  now: float) -> list[Grant]:
        """The grants in a copy made by raw() that are live at `now`: built after the DNS lock is let go
        (50,000: 0.3-1 s on the lab VM, which the DNS thread must not wait for)."""
        return [Grant(device, address, profile, math.ceil(until - now), name)
                for (device, address, profile), (name, until) in raw if until > now]

    def as_now(self, grants: Iterable[Grant], now: float) -> list[Grant]:
        """These grants as the ledger holds them at `now`: a later answer's expiry, none that expired or went."""
        out = []
        for grant in grants:
            kept = self._live.get((grant.device, grant.address, grant.profile))
            if kept is not None and kept[1] > now:
                out.append(Grant(grant.device, grant.address, grant.profile, math.ceil(kept[1] - now), kept[0]))
        return out

    def dump(self, now: float) -> list[dict[str, object]]:
        """The live grants as JSON-able records (expiry as seconds left), for the state file."""
        self._prune(now)
        return self.records_of(self.raw(), now)

    @staticmethod
    def records_of(raw: Iterable[tuple[tuple[IPAddress, IPAddress, Profile], tuple[str, float]]],
                   now: float) -> list[dict[str, object]]:
        """dump() of a copy made by raw(), live at `now`."""
        spelled: dict[object, object] = {}  # few devices and profiles, many grants: spell each once

        def spell(value: object, how: Callable[[Any], object] = str) -> object:
            text = spelled.get(value)
            if text is None:
                text = spelled[value] = how(value)
            return text

        return [{"device": spell(device), "address": str(address), "proto": profile.proto,
                 "ports": spell(profile, lambda p: [str(r) for r in p.ports]), "name": name,
                 "expires_in": math.ceil(until - now)}
                for (device, address, profile), (name, until) in raw if until > now]

    @staticmethod
    def parse_dump(records: object, profiles: Iterable[Profile], elapsed: float = 0.0,
                   limit: int = CLOUD_SET_SIZE, max_timeout: int = 86400) -> list[Grant]:
        """Grants from a state file saved `elapsed` seconds ago, at most `limit`, none longer than `max_timeout`.

        Records that do not name a known profile as dump() spells it, or have
        expired since, are skipped. Devices and addresses repeat: each distinct
        one is parsed once (50,000 records: 0.7 s instead of 2.6 s on the lab VM).
        """
        known = {(p.proto, tuple(str(r) for r in p.ports)): p for p in profiles}
        addresses: dict[object, IPAddress] = {}

        def address(text: object) -> IPAddress:
            found = addresses.get(text)
            if found is None:
                found = addresses[text] = ipaddress.ip_address(text)  # type: ignore[arg-type]
            return found

        grants: list[Grant] = []
        if not isinstance(records, list):
            return grants
        for record in records[:limit]:
            try:
                profile = known.get((record["proto"], tuple(record["ports"])))
                if profile is None:
                    continue
                left = min(max_timeout, math.floor(int(record["expires_in"]) - max(0.0, elapsed)))
                grant = Grant(address(record["device"]), address(record["address"]), profile, left,
                              str(record["name"])[:255])
            except (KeyError, TypeError, ValueError, OverflowError):
                continue
            if grant.timeout > 0 and grant.device.version == grant.address.version:
                grants.append(grant)
        return grants

    def __len__(self) -> int:
        return len(self._live)

    def counts_per_device(self) -> dict[str, int]:
        """Live entries per device. Safe without the lock: a plain dict copy runs no Python code,
        so the GIL makes it atomic, and status never waits for the DNS thread."""
        return {str(device): len(keys) for device, keys in dict(self._keys).items()}

    def live(self, now: float) -> list[dict[str, object]]:
        """The live entries as JSON-able records."""
        return self.describe(self.raw(), now)

    def raw(self) -> list[tuple[tuple[IPAddress, IPAddress, Profile], tuple[str, float]]]:
        """The entries as kept: a copy made in C, cheap enough to take under the DNS lock (50,000: ~7 ms),
        to be described (the costly part) after the lock is let go. In dict order, not the OrderedDict's:
        OrderedDict.items() looks every key up again, and an address's hash is computed in Python
        (50,000 entries: 126 ms instead of 7)."""
        return list(dict.items(self._live))

    @staticmethod
    def describe(raw: Iterable[tuple[tuple[IPAddress, IPAddress, Profile], tuple[str, float]]],
                 now: float) -> list[dict[str, object]]:
        """Records of the entries in `raw` that are still live at `now`."""
        return [
            {"device": str(device), "name": name, "address": str(address), "proto": profile.proto,
             "ports": ",".join(str(p) for p in profile.ports) or "-",
             "expires_in": round(until - now, 1)}
            for (device, address, profile), (name, until) in raw if until > now
        ]
