"""The Loxone service catalogue: every port, host and broadcast of the seed document, as data.

The data lives in catalog.json beside this module (one entry per line, easy to
review against the seed); this module only loads and validates it into frozen
records and answers questions about it.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Literal, cast

from loxgw.core.record import record

Product = Literal[
    "miniserver", "config", "app", "audioserver", "stereo_extension", "intercom", "intercom_gen1"
]
PRODUCTS: tuple[Product, ...] = (
    "miniserver", "config", "app", "audioserver", "stereo_extension", "intercom", "intercom_gen1"
)
# Products that are devices on the network (the rest are client programs).
DEVICE_PRODUCTS: tuple[Product, ...] = (
    "miniserver", "audioserver", "stereo_extension", "intercom", "intercom_gen1"
)
CLIENT_PRODUCTS: tuple[Product, ...] = ("config", "app")

Direction = Literal["cloud", "inbound", "device", "broadcast", "multicast", "client", "router"]
DIRECTIONS: tuple[Direction, ...] = (
    "cloud",  # outbound to the internet
    "inbound",  # from clients (App, Config, AirPlay senders) to the device
    "device",  # between Loxone devices
    "broadcast",  # UDP broadcasts on the segment
    "multicast",  # multicast groups on the segment
    "client",  # from the device back to a client host (Debug Monitor)
    "router",  # from the device to the router itself (the Audioserver's gateway ping)
)
Proto = Literal["tcp", "udp", "icmp", "igmp"]
PROTOS: tuple[Proto, ...] = ("tcp", "udp", "icmp", "igmp")

FIELDS = ("id", "product", "service", "direction", "proto", "ports", "hosts", "since", "until", "note", "seed")


class CatalogDataError(ValueError):
    """catalog.json is malformed: a packaging bug, not a user error."""


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive port range; a single port has first == last."""

    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """Parse "N" or "N-M" (1..65535, N <= M); raises ValueError."""
        head, sep, tail = text.strip().partition("-")
        if not head.isdigit() or (sep and not tail.isdigit()):
            raise ValueError(f"not a port or port range: {text!r}")
        first = int(head)
        last = int(tail) if sep else first
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"port range out of order or outside 1-65535: {text!r}")
        return cls(first, last)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    def nft(self) -> str:
        """The nftables spelling of this range."""
        return str(self)


@record
class Entry:
    """One line of the seed: who talks to what, how."""

    id: str
    product: Product
    service: str
    direction: Direction
    proto: Proto
    ports: tuple[PortRange, ...]
    hosts: tuple[str, ...]
    since: str | None
    until: str | None
    note: str
    seed: bool = True  # False: beyond Loxone's document, from the source named in `note`

    def as_json(self) -> dict[str, object]:
        """The entry with the public field names, ports and hosts as strings."""
        return {
            "id": self.id,
            "product": self.product,
            "service": self.service,
            "direction": self.direction,
            "proto": self.proto,
            "ports": [str(p) for p in self.ports],
            "hosts": list(self.hosts),
            "since": self.since,
            "until": self.until,
            "note": self.note,
            "seed": self.seed,
        }


def version_tuple(text: str) -> tuple[int, ...]:
    """"16.3" -> (16, 3); raises ValueError on anything else."""
    parts = text.split(".")
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in parts)


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    name = host[2:] if host.startswith("*.") else host
    labels = name.split(".")
    if len(labels) < 2 or not all(
        label and label.replace("-", "").isalnum() and label == label.lower() for label in labels
    ):
        raise CatalogDataError(f"bad host {host!r}")


def parse_entries(raw: object) -> tuple[Entry, ...]:
    """Validate decoded catalog JSON into entries."""
    if not isinstance(raw, list):
        raise CatalogDataError("catalog must be a JSON array")
    entries: list[Entry] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise CatalogDataError(f"entry is not an object: {item!r}")
        unknown = set(item) - set(FIELDS)
        if unknown:
            raise CatalogDataError(f"{item.get('id')}: unknown fields {sorted(unknown)}")
        entry_id = str(item["id"])
        if entry_id in seen:
            raise CatalogDataError(f"duplicate id {entry_id}")
        seen.add(entry_id)
        if item["product"] not in PRODUCTS:
            raise CatalogDataError(f"{entry_id}: unknown product {item['product']!r}")
        if item["direction"] not in DIRECTIONS:
            raise CatalogDataError(f"{entry_id}: unknown direction {item['direction']!r}")
        if item["proto"] not in PROTOS:
            raise CatalogDataError(f"{entry_id}: unknown proto {item['proto']!r}")
        try:
            ports = tuple(PortRange.parse(p) for p in item.get("ports", []))
            for key in ("since", "until"):
                if item.get(key) is not None:
                    version_tuple(str(item[key]))
        except ValueError as exc:
            raise CatalogDataError(f"{entry_id}: {exc}") from exc
        if item["proto"] in ("icmp", "igmp") and ports:
            raise CatalogDataError(f"{entry_id}: {item['proto']} has no ports")
        hosts = tuple(str(h) for h in item.get("hosts", []))
        for host in hosts:
            _check_host(host)
        entries.append(
            Entry(
                id=entry_id,
                product=cast(Product, item["product"]),
                service=str(item["service"]),
                direction=cast(Direction, item["direction"]),
                proto=cast(Proto, item["proto"]),
                ports=ports,
                hosts=hosts,
                since=item.get("since"),
                until=item.get("until"),
                note=str(item.get("note", "")),
                seed=bool(item.get("seed", True)),
            )
        )
    return tuple(entries)


def merge_ranges(ranges: Iterable[PortRange]) -> list[PortRange]:
    """Overlapping or adjacent ranges joined: sorted and disjoint, as interval sets and socket filters want them."""
    merged: list[PortRange] = []
    for r in sorted(ranges):
        if merged and r.first <= merged[-1].last + 1:
            merged[-1] = PortRange(merged[-1].first, max(merged[-1].last, r.last))
        else:
            merged.append(r)
    return merged


@cache
def load() -> tuple[Entry, ...]:
    """The packaged catalogue (parsed once per process)."""
    # Beside this module, as the package installs it; importlib.resources would cost its import
    # (pathlib, tempfile, zipfile: 5-8 ms of each process's start-up) for the same open().
    with open(os.path.join(os.path.dirname(__file__), "catalog.json"), encoding="utf-8") as handle:
        return parse_entries(json.load(handle))


def applies_to_version(entry: Entry, version: tuple[int, ...] | None) -> bool:
    """Whether the entry holds for a firmware version; None (unknown) admits every entry."""
    if version is None:
        return True
    if entry.since is not None and version < version_tuple(entry.since):
        return False
    return not (entry.until is not None and version >= version_tuple(entry.until))


def render_table(entries: Iterable[Entry]) -> str:
    """A human-readable table, one entry per line."""
    rows = [("ID", "PRODUCT", "DIRECTION", "PROTO", "PORTS", "HOSTS", "VERSION", "SERVICE")]
    for e in entries:
        version = ""
        if e.since:
            version += f">={e.since}"
        if e.until:
            version += ("," if version else "") + f"<{e.until}"
        rows.append(
            (
                e.id,
                e.product,
                e.direction,
                e.proto,
                ",".join(str(p) for p in e.ports) or "-",
                ",".join(e.hosts) or "-",
                version or "-",
                e.service + ("" if e.seed else "  [not in the seed: " + e.note + "]"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )
