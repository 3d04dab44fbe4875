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


@dataclass
class GrantLedger:
    """Live grants for `loxgw status` and the per-device cap; the kernel expires the real elements itself.

    Bounded twice: `capacity` grants in all (the oldest go first) and
    `per_device` live grants per device. A device that resolves name after
    name (or is made to) gets nothing new beyond its cap until some expire;
    its existing grants are still refreshed.
    """

    capacity: int = 20000
    per_device: int = 2048
    prune_every: float = 1.0  # seconds: a device at its cap costs one full pass per second, at most

    def __post_init__(self) -> None:
        self._live: OrderedDict[tuple[IPAddress, IPAddress, Profile], tuple[str, float]] = OrderedDict()
        self._count: dict[IPAddress, int] = {}
        self._pruned_at = -math.inf

    def admit(self, grants: list[Grant], now: float) -> list[Grant]:
        """The grants a device may still get: refreshes always, new ones while under its cap."""
        admitted = []
        for grant in grants:
            key = (grant.device, grant.address, grant.profile)
            if key not in self._live and self._count.get(grant.device, 0) >= self.per_device:
                if now - self._pruned_at >= self.prune_every:
                    self._prune(now)
                if self._count.get(grant.device, 0) >= self.per_device:
                    continue
            admitted.append(grant)
        return admitted

    def record(self, grants: Iterable[Grant], now: float) -> None:
        for grant in grants:
            key = (grant.device, grant.address, grant.profile)
            if self._live.pop(key, None) is None:
                self._count[grant.device] = self._count.get(grant.device, 0) + 1
            self._live[key] = (grant.name, now + grant.timeout)
        while len(self._live) > self.capacity:
            self._forget(self._live.popitem(last=False)[0])

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
        self._prune(now)
        return [
            {"device": str(device), "name": name, "address": str(address), "proto": profile.proto,
             "ports": ",".join(str(p) for p in profile.ports) or "-",
             "expires_in": round(until - now, 1)}
            for (device, address, profile), (name, until) in self._live.items()
        ]
