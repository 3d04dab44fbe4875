"""Which ports each Loxone device gets, from the catalogue and nothing else.

- inbound: from clients zones to the device (the App, Config, AirPlay senders);
- device: from one Loxone device to another (only matters across VLANs);
- client: from the device back to clients-zone hosts (the Debug Monitor);
- router: the Audioserver pings its gateway and reboots when it gets no answer.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from itertools import chain

from loxgw.core import catalog, firewall
from loxgw.core.catalog import Entry, PortRange, Product, Proto
from loxgw.core.config import Config
from loxgw.core.devices import Device
from loxgw.core.record import record

IPv4 = ipaddress.IPv4Address

# A Loxone device whose product nobody told us: its web interface, nothing else.
UNKNOWN_PRODUCT_PORTS: tuple[tuple[Proto, PortRange], ...] = (
    ("tcp", PortRange(80, 80)), ("tcp", PortRange(443, 443)),
)
# Device-to-device entries name the target product; this is who opens the connection.
DEVICE_FLOW_SOURCE: dict[str, Product] = {
    "as-miniserver": "miniserver",
    "ic-miniserver": "miniserver",
    "icg1-miniserver": "miniserver",
    "ms-trust-local": "miniserver",
    "as-streams": "audioserver",
    "as-extension-boot-tcp": "audioserver",
    "as-extension-boot-udp": "audioserver",
}
# Client-program entries that open a port on a device product (the seed lists SIP under the App).
CLIENT_TO_PRODUCT: dict[str, Product] = {"app-sip": "intercom"}
HTTP_PORT_ENTRIES = frozenset({"ms-http"})


@record
class Pinhole:
    """One allowed flow. `src` None: any host of the clients zones, or (device flows) any
    detected device of product `source`; `dst` None: any client host."""

    kind: str  # "inbound", "device", "client", "router"
    src: IPv4 | None
    dst: IPv4 | None
    proto: Proto
    ports: PortRange | None  # None for ICMP
    entry: str  # catalogue id (or "default" for unknown products)
    source: Product | None = None  # device flows: the product that opens them

    def describe(self) -> str:
        ports = f"/{self.ports}" if self.ports else ""
        src = str(self.src) if self.src else (f"{self.source} devices" if self.source else "clients")
        dst = str(self.dst) if self.dst else ("router" if self.kind == "router" else "clients")
        return f"{self.kind}: {src} -> {dst} {self.proto}{ports} ({self.entry})"


@record
class ProductFlow:
    """A flow every device of one product gets, whatever its address: the same for all of them,
    so the firewall holds it as a rule over the product's address set (core.ruleset)."""

    kind: str  # "inbound", "device", "client", "router"
    proto: Proto
    ports: PortRange | None  # None for ICMP
    entry: str
    source: Product | None = None  # device flows: the product that opens them

    def pinhole(self, address: IPv4) -> Pinhole:
        if self.kind in ("client", "router"):
            return Pinhole(self.kind, address, None, self.proto, self.ports, self.entry, self.source)
        return Pinhole(self.kind, None, address, self.proto, self.ports, self.entry, self.source)


def product_flows(product: Product, entries: tuple[Entry, ...]) -> tuple[ProductFlow, ...]:
    """What every device of `product` gets from the catalogue, less its own HTTP port (a device's own)."""
    if entries is catalog.load():  # kept per product: hashing the catalogue for a cache key takes 55 µs
        found = _CATALOGUE_FLOWS.get(product)
        if found is None:
            found = _CATALOGUE_FLOWS[product] = _product_flows(product, entries)
        return found
    return _product_flows(product, entries)


_CATALOGUE_FLOWS: dict[Product, tuple[ProductFlow, ...]] = {}


def _product_flows(product: Product, entries: tuple[Entry, ...]) -> tuple[ProductFlow, ...]:
    flows: list[ProductFlow] = []
    for entry in entries:
        target = CLIENT_TO_PRODUCT.get(entry.id, entry.product)
        if target != product or entry.proto == "igmp" or entry.id in HTTP_PORT_ENTRIES:
            continue
        if entry.direction == "inbound" and entry.proto in ("tcp", "udp"):
            flows += (ProductFlow("inbound", entry.proto, p, entry.id) for p in entry.ports)
        elif entry.direction == "device" and entry.proto in ("tcp", "udp"):
            source_product = DEVICE_FLOW_SOURCE.get(entry.id, product)
            flows += (ProductFlow("device", entry.proto, p, entry.id, source_product) for p in entry.ports)
        elif entry.direction == "client" and entry.proto in ("tcp", "udp"):
            flows += (ProductFlow("client", entry.proto, p, entry.id) for p in entry.ports)
        elif entry.direction == "router" and entry.proto == "icmp":
            flows.append(ProductFlow("router", "icmp", None, entry.id))
    return tuple(dict.fromkeys(flows))


def plan(devices: Iterable[Device], entries: Iterable[Entry]) -> list[Pinhole]:
    """Every pinhole the current devices need; sorted, without duplicates."""
    entries = tuple(entries)
    holes = {hole for device in devices for hole in plan_device(device, entries)}
    return sorted(holes, key=_order)


def _order(h: Pinhole) -> tuple[str, ...]:
    return (h.kind, str(h.src), str(h.dst), h.proto, str(h.ports), h.entry, str(h.source))


def plan_device(device: Device, entries: tuple[Entry, ...]) -> frozenset[Pinhole]:
    """The pinholes of one device: they depend on nothing but the device (its address, product, port)."""
    if device.ip is None:
        return frozenset()
    if device.product is None:
        return frozenset(Pinhole("inbound", None, device.ip, proto, ports, "default")
                         for proto, ports in UNKNOWN_PRODUCT_PORTS)
    holes = {flow.pinhole(device.ip) for flow in product_flows(device.product, entries)}
    holes.update(Pinhole("inbound", None, device.ip, entry.proto, PortRange(device.http_port, device.http_port),
                         entry.id) for entry in entries
                 if entry.id in HTTP_PORT_ENTRIES and entry.product == device.product)
    return frozenset(holes)


Elements = dict[str, frozenset[str]]  # set name -> elements in nft syntax


def elements(holes: Iterable[Pinhole], devices: Iterable[Device], open_egress: Iterable[Product] = ()) -> Elements:
    """What every pinhole and address set must hold (core.firewall.DESIRED_SETS), in nft syntax.

    `open_egress`: products whose devices may reach the internet unrestricted.
    A pinhole its device's product gives every device of the product is in
    the rules, over the product's address set; only the rest, inbound holes
    of one device (its HTTP port, announced ports, an unknown product's web
    ports), are elements of PIN_PORT, one per port.
    """
    open_egress = frozenset(open_egress)
    devices = tuple(devices)
    entries = catalog.load()
    shared: dict[object, frozenset[Pinhole]] = {}
    for device in devices:
        if device.ip is not None and device.product is not None:
            shared[device.ip] = frozenset(f.pinhole(device.ip) for f in product_flows(device.product, entries))
    out: dict[str, set[str]] = {name: set() for name in firewall.DESIRED_SETS}
    for hole in holes:
        if hole.kind == "router":
            out[firewall.ROUTER_PING].add(str(hole.src))
        elif hole.kind == "inbound" and hole.ports is not None and hole not in shared.get(hole.dst, ()):
            out[firewall.PIN_PORT].update(f"{hole.dst} . {hole.proto} . {port}"
                                          for port in range(hole.ports.first, hole.ports.last + 1))
    for device in devices:
        if device.ip is not None and device.product is not None:
            out[firewall.products_set(device.product)].add(str(device.ip))
            if device.product in open_egress:
                out[firewall.EGRESS_OPEN].add(str(device.ip))
    return {name: frozenset(found) for name, found in out.items()}


def desired(config: Config, devices: Iterable[Device],
            announced: Iterable[Pinhole] = ()) -> tuple[tuple[Pinhole, ...], Elements]:
    """The pinholes of these devices (and those their announced services add) and every set's elements."""
    return Planner().desired(config, devices, announced)


@record
class DevicePlan:
    """One device's share of the desired state: its pinholes, its (set, element) pairs, its holes per address."""

    holes: frozenset[Pinhole]
    members: tuple[tuple[str, str], ...]
    ends: tuple[tuple[str, int], ...]


class Planner:
    """The desired pinholes and set elements, kept up to date device by device.

    A device's pinholes and elements depend only on the device (address,
    product, HTTP port, egress) and the services it announces, so a change
    re-plans only the devices that changed, and the sets follow by reference
    counts. Planning 250 devices whole took 19-25 ms of Python per change,
    and merging every device's elements into fresh sets still took 8-14 ms:
    all of it holding the GIL the relay needs, 10-40 times a second while
    devices come and go.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[object, ...], DevicePlan] = {}
        self._active: Counter[tuple[object, ...]] = Counter()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._sets: dict[str, set[str]] = {name: set() for name in firewall.DESIRED_SETS}
        self._ends: Counter[str] = Counter()
        self._frozen: dict[str, frozenset[str]] = {name: frozenset() for name in firewall.DESIRED_SETS}
        self._holes: tuple[Pinhole, ...] = ()
        self._signatures: dict[int, tuple[Device, tuple[object, ...]]] = {}
        self._order: list[tuple[object, ...]] = []

    def desired(self, config: Config, devices: Iterable[Device],
                announced: Iterable[Pinhole] = ()) -> tuple[tuple[Pinhole, ...], Elements]:
        entries = catalog.load()
        open_egress = frozenset(p for p in catalog.DEVICE_PRODUCTS if config.egress(p) == "open")
        extra: dict[object, set[Pinhole]] = {}
        for hole in announced:
            extra.setdefault(hole.dst, set()).add(hole)
        order: list[tuple[object, ...]] = []
        seen: dict[int, tuple[Device, tuple[object, ...]]] = {}
        for device in devices:
            if device.ip is None:
                continue
            own_extra = frozenset(extra.get(device.ip, ())) if extra else frozenset()
            # The inventory hands out the same Device objects until one changes: a device seen last
            # time keeps its signature (the Device is held, so its id is not reused meanwhile).
            last = self._signatures.get(id(device))
            if last is not None and last[0] is device and last[1][1] == own_extra \
                    and last[1][2] == (device.product in open_egress):
                signature = last[1]
            else:
                # Text, whose hash Python keeps: an IPv4Address is hashed in Python code on every lookup.
                signature = (f"{device.key} {device.ip} {device.product} {device.http_port}", own_extra,
                             device.product in open_egress)
            seen[id(device)] = (device, signature)
            if signature not in self._known:
                device_holes = plan_device(device, entries) | own_extra
                self._known[signature] = _device_plan(device_holes, device, open_egress)
            order.append(signature)
        self._signatures = seen
        if order == self._order:  # a list compares in C, by identity first
            return self._holes, dict(self._frozen)
        self._order = order
        wanted = Counter(order)
        if wanted != self._active:
            changed: set[str] = set()
            for signature, times in (self._active - wanted).items():
                changed |= self._count(self._known[signature], -times)
            for signature, times in (wanted - self._active).items():
                changed |= self._count(self._known[signature], times)
            self._active = wanted
            if len(self._known) > 2 * len(wanted) + 64:  # forget the plans of devices long gone
                self._known = {signature: self._known[signature] for signature in wanted}
            self._frozen.update((name, frozenset(self._sets[name])) for name in changed)
        self._holes = tuple(chain.from_iterable(self._known[signature].holes for signature in order))
        return self._holes, dict(self._frozen)

    def holes_per_device(self) -> dict[str, int]:
        """Pinholes per device address (either end) in the last plan."""
        return dict(self._ends)

    def _count(self, plan: DevicePlan, times: int) -> set[str]:
        """Add (times > 0) or take away a device's plan; the names of the sets whose elements changed."""
        changed = set()
        for member in plan.members:
            before = self._counts[member]
            self._counts[member] = before + times
            if before <= 0 < before + times:
                self._sets[member[0]].add(member[1])
                changed.add(member[0])
            elif before + times <= 0:
                del self._counts[member]
                self._sets[member[0]].discard(member[1])
                changed.add(member[0])
        for address, count in plan.ends:
            self._ends[address] += count * times
            if self._ends[address] <= 0:
                del self._ends[address]
        return changed


def _device_plan(holes: frozenset[Pinhole], device: Device, open_egress: frozenset[Product]) -> DevicePlan:
    members = tuple((name, member) for name, found in elements(holes, (device,), open_egress).items()
                    for member in sorted(found))
    ends: Counter[str] = Counter()
    for hole in holes:
        for end in {hole.src, hole.dst}:
            if end is not None:
                ends[str(end)] += 1
    return DevicePlan(holes, members, tuple(ends.items()))


def changes(applied: Elements, desired: Elements) -> tuple[Elements, Elements]:
    """(to delete, to add) per set, so that `applied` becomes `desired`; unchanged sets are left out."""
    delete: Elements = {}
    add: Elements = {}
    for name in sorted({*applied, *desired}):
        before, after = applied.get(name, frozenset()), desired.get(name, frozenset())
        if before is after:  # the Planner hands out the same set while its elements stay the same
            continue
        if before - after:
            delete[name] = before - after
        if after - before:
            add[name] = after - before
    return delete, add
