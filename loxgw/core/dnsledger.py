"""The ledger of live DNS entries: the per-device cap, status, and what to put back after a restart.

The kernel expires the real set elements itself; the ledger mirrors them,
bounded, and takes `now` for every decision.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from loxgw.core.catalog import PortRange
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

    def __post_init__(self) -> None:
        self._live: OrderedDict[tuple[IPAddress, IPAddress, Profile], tuple[str, float]] = OrderedDict()
        self._count: dict[IPAddress, int] = {}
        self._pruned_at = -math.inf

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
        if self._count.get(device, 0) < self.per_device and len(self._live) < self.capacity:
            return True
        if now - self._pruned_at >= self.prune_every:
            self._prune(now)
        return self._count.get(device, 0) < self.per_device and len(self._live) < self.capacity

    def _put(self, key: tuple[IPAddress, IPAddress, Profile], grant: Grant, now: float) -> None:
        if self._live.pop(key, None) is None:
            self._count[grant.device] = self._count.get(grant.device, 0) + 1
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
        left = self._count.get(key[0], 1) - 1
        if left:
            self._count[key[0]] = left
        else:
            self._count.pop(key[0], None)

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        for key in [k for k, (_, until) in self._live.items() if until <= now]:
            del self._live[key]
            self._forget(key)

    def grants(self, now: float) -> list[Grant]:
        """The live grants with their remaining time, to put back what a firewall restart removed."""
        self._prune(now)
        return [Grant(device, address, profile, max(1, math.ceil(until - now)), name)
                for (device, address, profile), (name, until) in self._live.items()]

    def dump(self, now: float) -> list[dict[str, object]]:
        """The live grants as JSON-able records (expiry as seconds left), for the state file."""
        return [{"device": str(g.device), "address": str(g.address), "proto": g.profile.proto,
                 "ports": [str(p) for p in g.profile.ports], "name": g.name, "expires_in": g.timeout}
                for g in self.grants(now)]

    @staticmethod
    def parse_dump(records: object, profiles: Iterable[Profile]) -> list[Grant]:
        """Grants from a state file; records that do not fit a known profile are skipped."""
        known = set(profiles)
        grants: list[Grant] = []
        if not isinstance(records, list):
            return grants
        for record in records:
            try:
                profile = Profile(record["proto"], tuple(PortRange.parse(p) for p in record["ports"]))
                grant = Grant(ipaddress.ip_address(record["device"]), ipaddress.ip_address(record["address"]),
                              profile, int(record["expires_in"]), str(record["name"])[:255])
            except (KeyError, TypeError, ValueError):
                continue
            if profile in known and grant.timeout > 0 and grant.device.version == grant.address.version:
                grants.append(grant)
        return grants

    def __len__(self) -> int:
        return len(self._live)

    def counts_per_device(self) -> dict[str, int]:
        """Live entries per device. Safe without the lock: a plain dict copy runs no Python code,
        so the GIL makes it atomic, and status never waits for the DNS thread."""
        return {str(device): count for device, count in dict(self._count).items()}

    def live(self, now: float) -> list[dict[str, object]]:
        """The live entries as JSON-able records."""
        return self.describe(self.raw(), now)

    def raw(self) -> list[tuple[tuple[IPAddress, IPAddress, Profile], tuple[str, float]]]:
        """The entries as kept: a copy made in C, cheap enough to take under the DNS lock (20,000: ~2 ms),
        to be described (the costly part) after the lock is let go."""
        return list(self._live.items())

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
