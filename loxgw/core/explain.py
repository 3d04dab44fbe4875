"""Would a flow pass loxgw now, and what decides it: the ruleset's allow chains, asked as a question.

Pure: plain data in (segments, devices, pinholes, the DNS grants a device
holds or held), a Verdict out. The order of the checks is the order of the
rules core.ruleset renders: `allow_from_devices` (device pinholes, client
pinholes, one rule per DNS profile, then the sample and the final verdict)
and `allow_into_devices` (inbound pinholes, then the sample and the final
verdict). When nothing allows the flow, the Verdict names the missing piece:
the catalogue says what the device would need, the grants what it resolved.
`loxgw explain` asks this for a flow the user names; the blocked-attempts
table (core.blocked) asks it for each flow the kernel sampled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from loxgw.core import catalog, firewall
from loxgw.core.blocked import GrantSeen, describe_port
from loxgw.core.catalog import Entry, Product
from loxgw.core.config import IPAddress, IPNetwork, ZoneRole
from loxgw.core.devices import Device
from loxgw.core.dns import CloudPolicy, Limits, Profile, target_allowed
from loxgw.core.pinholes import CLIENT_TO_PRODUCT, HTTP_PORT_ENTRIES, Pinhole, product_flows
from loxgw.core.record import record

MAX_HOSTS_SHOWN = 3  # catalogue hosts named in one reason


@record
class Segment:
    """One zone interface and the networks on it (what tells which zone an address is in)."""

    interface: str
    zone: str
    role: ZoneRole
    cloud: bool
    networks: tuple[IPNetwork, ...]


@record
class Flow:
    """A new flow: `dst` None when it is named (`name`) and no grant says where it points.

    `chain`: "out" or "in" for a kernel sample, which says the chain it came
    from (from a devices zone; from a clients zone into one).
    """

    src: IPAddress
    dst: IPAddress | None
    proto: str  # "tcp", "udp", "icmp" (echo request), "icmpv6", or an IP protocol number
    port: int | None
    name: str = ""
    chain: str = ""


@record
class Verdict:
    """Whether the flow passes, the reason's code and words, the rule that decides, the catalogue entries concerned."""

    passes: bool
    code: str
    text: str
    rule: str
    entries: tuple[str, ...] = ()
    name: str = ""

    def as_json(self) -> dict[str, object]:
        return {"passes": self.passes, "code": self.code, "why": self.text, "rule": self.rule,
                "entries": list(self.entries), "name": self.name}


class View:
    """What the firewall holds, indexed once per change and asked many times."""

    def __init__(self, mode: firewall.ResolvedFirewall, installed: bool, segments: Iterable[Segment],
                 devices: Iterable[Device], holes: Iterable[Pinhole], policy: CloudPolicy,
                 allowed_targets: tuple[IPNetwork, ...] = (), entries: Sequence[Entry] | None = None,
                 profiles: Sequence[Profile] = ()) -> None:
        self.mode = mode
        self.installed = installed
        self.segments = tuple(segments)
        self.devices = tuple(devices)
        self.policy = policy
        self.limits = Limits(allowed_targets=allowed_targets)
        self.entries = tuple(catalog.load() if entries is None else entries)
        self.profile_index = {p: i for i, p in enumerate(profiles)}
        self.device_by_ip: dict[IPAddress, Device] = {d.ip: d for d in self.devices if d.ip is not None}
        self.holes_to: dict[IPAddress, list[Pinhole]] = {}
        self.holes_from: dict[IPAddress, list[Pinhole]] = {}
        for hole in holes:
            if hole.kind in ("inbound", "device") and hole.dst is not None:
                self.holes_to.setdefault(hole.dst, []).append(hole)
            elif hole.kind in ("client", "router") and hole.src is not None:
                self.holes_from.setdefault(hole.src, []).append(hole)

    def segment_of(self, address: IPAddress | None) -> Segment | None:
        if address is None:
            return None
        return next((s for s in self.segments if any(address in n for n in s.networks
                                                     if n.version == address.version)), None)


def describe_profile(profile: Profile) -> str:
    return "ICMP echo" if profile.proto == "icmp" else f"{profile.proto.upper()} {', '.join(map(str, profile.ports))}"


def _ago(seconds: float) -> str:
    return f"{max(0, round(seconds))} s"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _covers(profile: Profile, proto: str, port: int | None) -> bool:
    """Whether a DNS profile's rule matches the flow (core.ruleset._profile_rules)."""
    if profile.proto == "icmp":
        return proto in ("icmp", "icmpv6")
    return profile.proto == proto and port is not None and any(port in r for r in profile.ports)


def _entry_covers(entry: Entry, proto: str, port: int | None, http_port: int = 80) -> bool:
    if entry.proto == "icmp":
        return proto in ("icmp", "icmpv6")
    if entry.proto != proto or port is None:
        return False
    if entry.id in HTTP_PORT_ENTRIES:
        return port == http_port
    return any(port in r for r in entry.ports)


def host_matches(pattern: str, name: str) -> bool:
    """A catalogue host against a DNS name: exact, or `*.x.y` for one or more labels before `x.y`."""
    if pattern.startswith("*."):
        return name.endswith("." + pattern[2:])
    return pattern == name


def _device_products(device: Device | None) -> tuple[Product, ...]:
    if device is not None and device.product is not None:
        return (device.product,)
    return catalog.DEVICE_PRODUCTS


def cloud_entries(view: View, products: Iterable[Product], proto: str, port: int | None,
                  name: str = "") -> list[Entry]:
    """Cloud entries of these products for the flow (and, with `name`, whose hosts match it)."""
    chosen = set(products)
    return [e for e in view.entries if e.direction == "cloud" and e.product in chosen and e.hosts
            and (not proto or _entry_covers(e, proto, port))
            and (not name or any(host_matches(h, name) for h in e.hosts))]


def _what_it_gets(holes: Iterable[Pinhole]) -> str:
    ports = sorted({f"{h.proto.upper()} {h.ports}" if h.ports else h.proto.upper() for h in holes})
    return ", ".join(ports) or "nothing"


def decide(flow: Flow, view: View, grants: Sequence[GrantSeen], now: float) -> Verdict:
    """The verdict loxgw's chains give a new flow now (`grants`: those of flow.src, live or remembered)."""
    if not view.installed:
        return Verdict(True, "not_installed", "loxgw's table is not installed: loxgw filters nothing",
                       "no loxgw table")
    src_seg, dst_seg = view.segment_of(flow.src), view.segment_of(flow.dst)
    if flow.chain == "out":
        src_role: ZoneRole | None = "devices"
    elif flow.chain == "in":
        src_role = "clients"
    else:
        # A known Loxone device is in a devices zone even when its segment's addresses are unknown.
        src_role = src_seg.role if src_seg else ("devices" if flow.src in view.device_by_ip else None)
        if src_seg is not None and dst_seg is not None and src_seg.interface == dst_seg.interface:
            return Verdict(True, "same_segment", f"both ends are on {src_seg.interface}: bridged, not routed, "
                           "so no firewall sees it", "chain forward: same interface in and out")
    if flow.chain == "in" or (dst_seg is None and flow.dst is not None and flow.dst in view.device_by_ip):
        dst_role: ZoneRole | None = "devices"
    else:
        dst_role = dst_seg.role if dst_seg else None
    if src_role == "devices":
        return _from_devices(flow, view, src_seg, dst_seg, grants, now)
    if src_role == "clients" and dst_role == "devices":
        return _into_devices(flow, view)
    where = "from a clients zone to outside the devices zones" if src_role == "clients" else \
        "from outside loxgw's zones"
    return Verdict(True, "not_filtered", f"loxgw does not filter this flow ({where})",
                   "chain forward: no loxgw chain applies")


def _final(view: View) -> str:
    if view.mode == "standalone":
        return 'final rule "loxgw: not allowed": drop'
    return "loxgw returns without its mark: fw4's zone policy decides"


def _from_devices(flow: Flow, view: View, src_seg: Segment | None, dst_seg: Segment | None,
                  grants: Sequence[GrantSeen], now: float) -> Verdict:
    src_dev = view.device_by_ip.get(flow.src)
    dst_dev = view.device_by_ip.get(flow.dst) if flow.dst is not None else None
    if src_dev is not None and src_dev.product is not None and flow.dst is not None:
        for hole in view.holes_to.get(flow.dst, ()):
            if hole.kind == "device" and hole.source == src_dev.product and _hole_covers(hole, flow):
                return Verdict(True, "pinhole", f"device pinhole {hole.describe()}",
                               _device_rule(view, src_dev.product, hole), (hole.entry,))
    if dst_seg is not None and dst_seg.role == "clients":
        for hole in view.holes_from.get(flow.src, ()):
            if hole.kind == "client" and _hole_covers(hole, flow):
                return Verdict(True, "pinhole", f"client pinhole {hole.describe()}",
                               f'rule "{firewall.client_rule(src_dev.product)}"' if src_dev and src_dev.product
                               else "a client rule", (hole.entry,))
    mine = [g for g in grants if g.device == flow.src
            and (g.address == flow.dst if flow.dst is not None else g.name == flow.name)]
    live = [g for g in mine if g.until > now]
    for grant in live:
        if _covers(grant.profile, flow.proto, flow.port):
            return Verdict(True, "grant", f"`{grant.name}` resolved to {grant.address} by this device: "
                           f"{describe_profile(grant.profile)} open for {_ago(grant.until - now)} more",
                           _grant_rule(view, grant), _ids(cloud_entries(view, _device_products(src_dev), flow.proto,
                                                                        flow.port, grant.name)), grant.name)
    return _blocked_from_devices(flow, view, src_seg, dst_seg, src_dev, dst_dev, live,
                                 [g for g in mine if g.until <= now], now)


def _blocked_from_devices(flow: Flow, view: View, src_seg: Segment | None, dst_seg: Segment | None,
                          src_dev: Device | None, dst_dev: Device | None, live: list[GrantSeen],
                          expired: list[GrantSeen], now: float) -> Verdict:
    final = _final(view)
    what = describe_port(flow.proto, flow.port)
    products = _device_products(src_dev)
    if live or expired:
        grant = max(live or expired, key=lambda g: g.until)
        entries = cloud_entries(view, products, "", None, grant.name)
        opened = sorted({describe_profile(g.profile) for g in (live or expired) if g.name == grant.name})
        if live or not any(_covers(g.profile, flow.proto, flow.port) for g in expired):
            return Verdict(False, "port_not_in_entry", f"`{grant.name}` resolved, but {what} is not in its entry "
                           f"(catalogue: {'; '.join(opened)})", final, _ids(entries), grant.name)
        return Verdict(False, "grant_expired", f"`{grant.name}` resolved, but its grant expired "
                       f"{_ago(now - grant.until)} ago (the device has not resolved it again)", final,
                       _ids(entries), grant.name)
    if dst_dev is not None or (dst_seg is not None and dst_seg.role == "clients"):
        if src_dev is None:
            return _not_loxone_device(flow.src, final)
        if dst_dev is not None and dst_dev.ip is not None:
            gets = [h for h in view.holes_to.get(dst_dev.ip, ()) if h.kind == "device"
                    and h.source == src_dev.product]
            target = dst_dev.product or "Loxone device of unknown product"
            return Verdict(False, "not_loxone_function", f"no catalogue entry lets {_a(src_dev.product or 'device')} "
                           f"open {what} on {_a(target)} (it may open: {_what_it_gets(gets)})", final)
        gets = [h for h in view.holes_from.get(flow.src, ()) if h.kind == "client"]
        return Verdict(False, "not_loxone_function", f"no catalogue entry lets {_a(src_dev.product or 'device')} "
                       f"reach clients on {what} (it may: {_what_it_gets(gets)})", final)
    if flow.dst is not None and not target_allowed(flow.dst.packed, view.limits):
        if src_dev is None:
            return _not_loxone_device(flow.src, final)
        return Verdict(False, "not_loxone_function", f"{flow.dst} is a private or special address and no Loxone "
                       "device loxgw knows: no catalogue entry and no DNS answer opens it", final)
    if src_seg is not None and not src_seg.cloud:
        return Verdict(False, "no_cloud", f"zone {src_seg.zone} has cloud '0': no DNS answer opens anything for it "
                       f"(set option cloud '1' in config zone '{src_seg.zone}')", final)
    if flow.name:
        return _by_name(flow, view, products, what, final)
    if src_dev is None:
        return _not_loxone_device(flow.src, final, " and never resolved this address to a catalogue name")
    entries = cloud_entries(view, products, flow.proto, flow.port)
    if entries:
        hosts = list(dict.fromkeys(h for e in entries for h in e.hosts))
        shown = ", ".join(hosts[:MAX_HOSTS_SHOWN]) + (", ..." if len(hosts) > MAX_HOSTS_SHOWN else "")
        return Verdict(False, "never_resolved", f"address never resolved by this device ({what} is in the catalogue "
                       f"for {shown}: the device must resolve one of them first)", final, _ids(entries))
    return Verdict(False, "not_loxone_function", f"not a Loxone function: no catalogue entry lets "
                   f"{_a(src_dev.product or 'Loxone device')} reach {what} on the internet", final)


def _by_name(flow: Flow, view: View, products: tuple[Product, ...], what: str, final: str) -> Verdict:
    profiles = view.policy.profiles_for(flow.name)
    entries = cloud_entries(view, products, "", None, flow.name)
    if not profiles:
        return Verdict(False, "not_loxone_function", f"`{flow.name}` is not a catalogue name: no DNS answer for it "
                       "opens anything", final, name=flow.name)
    if not any(_covers(p, flow.proto, flow.port) for p in profiles):
        return Verdict(False, "port_not_in_entry", f"{what} is not in the entry of `{flow.name}` (catalogue: "
                       f"{'; '.join(describe_profile(p) for p in profiles)}), resolved or not", final,
                       _ids(entries), flow.name)
    return Verdict(False, "never_resolved", f"`{flow.name}` never resolved by this device (loxgw opens "
                   f"{what} for the addresses of its answer once it does)", final, _ids(entries), flow.name)


def _into_devices(flow: Flow, view: View) -> Verdict:
    final = _final(view)
    what = describe_port(flow.proto, flow.port)
    holes = view.holes_to.get(flow.dst, []) if flow.dst is not None else []
    for hole in holes:
        if hole.kind == "inbound" and _hole_covers(hole, flow):
            return Verdict(True, "pinhole", f"inbound pinhole {hole.describe()}", _inbound_rule(view, hole),
                           (hole.entry,))
    device = view.device_by_ip.get(flow.dst) if flow.dst is not None else None
    if device is None:
        return Verdict(False, "not_loxone_device", f"{flow.dst or flow.name} is not a Loxone device loxgw knows: "
                       "nothing from clients zones is let in to it", final)
    inbound = [h for h in holes if h.kind == "inbound"]
    if device.product is None:
        return Verdict(False, "not_loxone_function", f"{what} is not open on a Loxone device of unknown product "
                       f"(it gets {_what_it_gets(inbound)} until its product is known)", final)
    entries = [e for e in view.entries if e.direction == "inbound"
               and CLIENT_TO_PRODUCT.get(e.id, e.product) == device.product
               and _entry_covers(e, flow.proto, flow.port, device.http_port)]
    if entries:
        return Verdict(False, "no_pinhole", f"the catalogue opens {what} on {_a(device.product)} "
                       f"({', '.join(e.id for e in entries)}), but the pinhole is not installed", final, _ids(entries))
    return Verdict(False, "not_loxone_function", f"not a Loxone function: no catalogue entry opens {what} on "
                   f"{_a(device.product)} (it gets {_what_it_gets(inbound)})", final)


def _device_rule(view: View, source: Product, hole: Pinhole) -> str:
    """The rule that holds a device-to-device pinhole: the source's and the target's products."""
    target = view.device_by_ip.get(hole.dst) if hole.dst is not None else None
    if target is None or target.product is None:
        return "a device-to-device rule"
    return f'rule "{firewall.device_rule(source, target.product)}"'


def _inbound_rule(view: View, hole: Pinhole) -> str:
    """Where an inbound pinhole is held: its product's rule, or an element of the per-device set."""
    device = view.device_by_ip.get(hole.dst) if hole.dst is not None else None
    if device is not None and device.product is not None and hole in {
            f.pinhole(hole.dst) for f in product_flows(device.product, view.entries) if hole.dst is not None}:
        return f'rule "{firewall.inbound_rule(device.product)}"'
    return f"set {firewall.PIN_PORT}"


def _not_loxone_device(address: IPAddress, final: str, more: str = "") -> Verdict:
    return Verdict(False, "not_loxone_device", f"{address} is not a Loxone device loxgw knows (no 50:4F:94 MAC, "
                   f"no discovery answer, no config device section){more}", final)


def _hole_covers(hole: Pinhole, flow: Flow) -> bool:
    if hole.proto == "icmp":
        return flow.proto in ("icmp", "icmpv6")
    return hole.proto == flow.proto and hole.ports is not None and flow.port in hole.ports


def _grant_rule(view: View, grant: GrantSeen) -> str:
    index = view.profile_index.get(grant.profile)
    if index is None:
        return "a DNS profile set"
    return f"set {firewall.cloud_set_name(index, grant.address.version)} ({grant.profile.describe()})"


def _ids(entries: Iterable[Entry]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(e.id for e in entries))
