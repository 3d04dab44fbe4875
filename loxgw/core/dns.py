"""What a DNS answer means for the firewall: pure functions over bytes, catalogue and `now`.

An answer to a device in a cloud zone, for a catalogue name (wildcards and
CNAME chains included), becomes grants: (device, address, profile, timeout).
A profile is one (proto, ports) pair of the catalogue; each has its own
nftables set keyed by device . address, so an insert is one O(1) hash-set
element instead of an element in a concatenated range set (pipapo), whose
inserts grow with the set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from loxgw.core.catalog import CLIENT_PRODUCTS, DEVICE_PRODUCTS, Entry, PortRange, Proto
from loxgw.core.config import IPAddress, IPNetwork, ZoneRole
from loxgw.core.dnswire import WireAnswer
from loxgw.core.record import record

MAX_CNAME_LINKS = 10
MAX_ADDRESSES_PER_ANSWER = 16
# Targets that never open the firewall unless the user allows them explicitly.
# (Python's is_private also covers the documentation ranges, which must stay
# allowed, so the list is spelled out.)
REFUSED_TARGETS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
              "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
              "::/128", "::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8")
)


@dataclass(frozen=True, order=True)
class Profile:
    """One protocol and its ports: what a grant opens to a resolved address."""

    proto: Proto
    ports: tuple[PortRange, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.proto, self.ports)))

    def __hash__(self) -> int:  # computed once: profiles key the ledger on every matching answer
        return self._hash  # type: ignore[attr-defined, no-any-return]

    def describe(self) -> str:
        if not self.ports:
            return self.proto
        return f"{self.proto}/{','.join(str(p) for p in self.ports)}"


@record
class CloudPolicy:
    """Which names a zone role may resolve into which profiles (built once from the catalogue)."""

    exact: dict[str, frozenset[Profile]]
    wildcard: dict[str, frozenset[Profile]]  # key: the suffix after "*." (e.g. "dyndns.loxonecloud.com")

    def __post_init__(self) -> None:
        # Every name gets the profiles of all patterns it matches. Folding the
        # shorter wildcards into each pattern once, here, leaves one dictionary
        # hit per answer instead of a union per answer.
        def closure(name: str, own: frozenset[Profile]) -> tuple[Profile, ...]:
            found = set(own)
            for suffix, profiles in self.wildcard.items():
                if name.endswith("." + suffix):
                    found.update(profiles)
            return tuple(sorted(found))

        object.__setattr__(self, "_exact", {n: closure(n, p) for n, p in self.exact.items()})
        object.__setattr__(self, "_wildcard", {n: closure(n, p) for n, p in self.wildcard.items()})

    def profiles_for(self, name: str) -> tuple[Profile, ...]:
        """Profiles a (lower-case, dot-free-end) name matches, in order; empty if none.

        A wildcard `*.x.y` matches one or more labels before `x.y` on a dot
        boundary: not `x.y` itself, not `evilx.y`, not `x.y.evil.net`.
        """
        exact: dict[str, tuple[Profile, ...]] = self._exact  # type: ignore[attr-defined]
        found = exact.get(name)
        if found is not None:
            return found
        wildcard: dict[str, tuple[Profile, ...]] = self._wildcard  # type: ignore[attr-defined]
        dot = name.find(".")
        while dot >= 0:  # longest suffix first: its closure holds the shorter ones' profiles
            found = wildcard.get(name[dot + 1 :])
            if found is not None:
                return found
            dot = name.find(".", dot + 1)
        return ()


# Egress mode `resolved` (core.config.EgressMode): any name the device resolves opens the address,
# TCP and UDP on any port; its own two sets, so such grants never widen a catalogue entry.
ANY_PORT = PortRange(1, 65535)
RESOLVED_PROFILES = (Profile("tcp", (ANY_PORT,)), Profile("udp", (ANY_PORT,)))


class AnyName:
    """The policy of egress mode `resolved`: every name, both any-port profiles."""

    def profiles_for(self, name: str) -> tuple[Profile, ...]:
        return RESOLVED_PROFILES


class NoName:
    """The policy of egress mode `open`: nothing to grant (an address set opens everything)."""

    def profiles_for(self, name: str) -> tuple[Profile, ...]:
        return ()


Policy = CloudPolicy | AnyName | NoName


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def build_policy(entries: Iterable[Entry], role: ZoneRole) -> CloudPolicy:
    """The cloud policy of a zone role: devices get device products' entries, clients the apps'."""
    return product_policy(entries, DEVICE_PRODUCTS if role == "devices" else CLIENT_PRODUCTS)


def product_policy(entries: Iterable[Entry], products: Iterable[str]) -> CloudPolicy:
    """The cloud entries of some products, as a policy."""
    products = tuple(products)
    exact: dict[str, set[Profile]] = {}
    wildcard: dict[str, set[Profile]] = {}
    for entry in entries:
        if entry.direction != "cloud" or entry.product not in products:
            continue
        if entry.proto in ("tcp", "udp") and not entry.ports:
            continue  # dynamic ports (radio, CloudDNS direct): nothing exact to open
        profile = Profile(entry.proto, entry.ports)
        for host in entry.hosts:
            if _is_ip(host):
                continue
            if host.startswith("*."):
                wildcard.setdefault(host[2:], set()).add(profile)
            else:
                exact.setdefault(host, set()).add(profile)
    return CloudPolicy(
        exact={k: frozenset(v) for k, v in exact.items()},
        wildcard={k: frozenset(v) for k, v in wildcard.items()},
    )


def name_needles(policy: CloudPolicy) -> tuple[bytes, ...]:
    """Wire-format labels every packet about a policy name must contain, for in-kernel prefiltering.

    A name matching `*.dyndns.loxonecloud.com` or `connect.loxonecloud.com`
    carries the label `\x0bloxonecloud` literally somewhere in the packet: in
    the question (never compressed, it comes first) or, for a CNAME target,
    in the record itself or in an earlier name a compression pointer refers
    to. So a packet without any needle cannot match and need not reach user
    space. False positives only cost time; the user-space check is exact.
    """
    needles: set[bytes] = set()
    for pattern in (*policy.exact, *policy.wildcard):
        labels = pattern.split(".")
        anchor = labels[-2] if len(labels) >= 2 else labels[-1]
        needles.add(bytes([len(anchor)]) + anchor.encode("ascii"))
    return tuple(sorted(needles))


def all_profiles(entries: Iterable[Entry]) -> tuple[Profile, ...]:
    """Every profile anyone can be granted, in a stable order (it names the sets); `resolved`'s last."""
    entries = tuple(entries)
    found: set[Profile] = set()
    for role in ("devices", "clients"):
        policy = build_policy(entries, role)
        for profiles in (*policy.exact.values(), *policy.wildcard.values()):
            found.update(profiles)
    return (*sorted(found - set(RESOLVED_PROFILES)), *RESOLVED_PROFILES)


def policies(entries: Iterable[Entry]) -> dict[str, Policy]:
    """Every policy a DNS answer can be read with, by key (see DnsInspector.classify).

    "clients": the apps' entries, for every host of a clients zone; a device
    product: its own entries; "devices": every device product's, for hosts of
    a devices zone that lets other hosts have them; "resolved", "open": the
    egress modes.
    """
    entries = tuple(entries)
    found: dict[str, Policy] = {"clients": build_policy(entries, "clients"),
                                "devices": build_policy(entries, "devices"), "resolved": AnyName(), "open": NoName()}
    found.update({product: product_policy(entries, (product,)) for product in DEVICE_PRODUCTS})
    return found


def everyone_a_device(device: bytes) -> str | None:
    """The classification when no inventory is at hand: every host of a devices zone gets every device entry."""
    return "devices"


# --- answers -------------------------------------------------------------------


class Grant(NamedTuple):
    """Open `profile` from `device` to `address` for `timeout` seconds (because of `name`).

    A NamedTuple rather than a frozen dataclass: it is built for every
    matching answer, and costs a third as much to build.
    """

    device: IPAddress
    address: IPAddress
    profile: Profile
    timeout: int
    name: str


@record
class Limits:
    min_timeout: int = 60
    max_timeout: int = 86400
    allowed_targets: tuple[IPNetwork, ...] = ()


# As integer ranges keyed by packed length: membership in ipaddress networks costs a
# microsecond per network, and every address of every matching answer is checked.
_REFUSED_RANGES = {
    length: tuple((int(n.network_address), int(n.broadcast_address)) for n in REFUSED_TARGETS
                  if n.version == version)
    for version, length in ((4, 4), (6, 16))
}


def target_allowed(packed: bytes, limits: Limits) -> bool:
    """Whether an answer's address, as it comes off the wire (4 or 16 octets), may be opened (see REFUSED_TARGETS)."""
    if limits.allowed_targets:
        address = ipaddress.ip_address(packed)
        if any(address in net for net in limits.allowed_targets if net.version == address.version):
            return True
    value = int.from_bytes(packed, "big")
    return not any(low <= value <= high for low, high in _REFUSED_RANGES[len(packed)])


def grants_from_answer(
    answer: WireAnswer, device: IPAddress, policy: Policy, limits: Limits
) -> tuple[list[Grant], str]:
    """Grants an answer earns, and a reason when it earns none.

    Follows the CNAME chain from the question (at most MAX_CNAME_LINKS links);
    a name matches if the question or any name in its chain is in the
    catalogue. The timeout is the smallest TTL on the chain, clamped.
    """
    if not answer.flags & 0x8000:
        return [], "not_answer"
    if answer.flags & 0x000F:
        return [], "rcode"
    qname = answer.qname
    chain = [qname]
    ttl = None
    name = qname
    while name in answer.cnames:
        if len(chain) > MAX_CNAME_LINKS:
            return [], "cname_chain"
        name, link_ttl = answer.cnames[name]
        if name in chain:
            return [], "cname_loop"
        chain.append(name)
        ttl = link_ttl if ttl is None else min(ttl, link_ttl)
    profiles: tuple[Profile, ...] = ()
    for link in chain:
        found = policy.profiles_for(link)
        if found and found != profiles:
            profiles = tuple(sorted({*profiles, *found})) if profiles else found
    if not profiles:
        return [], "no_match"
    final = answer.addresses.get(chain[-1], [])
    if not final:
        return [], "no_address"
    family_length = len(device.packed)
    grants: list[Grant] = []
    refused = 0
    for packed, addr_ttl in final[:MAX_ADDRESSES_PER_ANSWER]:
        if len(packed) != family_length:
            continue  # the device would connect from an address of the other family we do not know
        if not target_allowed(packed, limits):
            refused += 1
            continue
        address = ipaddress.ip_address(packed)
        effective = addr_ttl if ttl is None else min(ttl, addr_ttl)
        timeout = max(limits.min_timeout, min(limits.max_timeout, effective))
        grants.extend(Grant(device, address, p, timeout, qname) for p in profiles)
    if not grants:
        return [], "refused_target" if refused else "no_address"
    return grants, ""
