"""Per device, the state of each function of its product: what `loxgw doctor` and LuCI show in words.

The catalogue's entries are grouped into the functions a user knows (Remote Connect, Weather,
App access...); each function of a device is one of:
- working: the device resolved one of its names recently and nothing of it was blocked since;
- open: its pinholes (or the discovery relay) are in place; loxgw sees only what it blocks, so
  "open" is as far as it can tell without per-packet work;
- blocked: an attempt of it was blocked in the last RECENT seconds (with the reason);
- not seen: nothing of it happened; not managed: loxgw cannot open it (dynamic ports, multicast
  within a segment, the device's own resolver).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from loxgw.core.blocked import Attempt, GrantSeen
from loxgw.core.catalog import Entry
from loxgw.core.devices import Device
from loxgw.core.explain import host_matches
from loxgw.core.pinholes import CLIENT_TO_PRODUCT, Pinhole
from loxgw.core.record import record

RECENT = 300.0  # seconds a blocked attempt (or a resolved name) counts for a function's state

# Catalogue entries grouped into the functions a user knows; the others go by their `service`.
FUNCTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Remote Connect", ("ms-remote-connect", "ms-mqtt", "ms-ssh-tunnel", "ms-remote-lookup", "ms-remote-dyndns",
                        "ms-trust-remote", "ms-remcov3-ssh", "ms-remcov3-registry", "ms-remcov3-mqtt",
                        "ms-clouddns")),
    ("Weather", ("ms-weather", "ms-weather-https")),
    ("Updates", ("ms-update", "ic-update")),
    ("Push notifications", ("ms-push",)),
    ("Time", ("ms-ntp",)),
    ("Mail and calls", ("ms-mailer", "ms-caller")),
    ("Cloud services", ("ms-datacenter", "ms-certificate", "ms-provisioning", "ms-services", "ms-online-check",
                        "ms-crashlog", "ms-techreport", "as-techreport", "ic-techreport")),
    ("App access", ("ms-https", "ms-http", "as-app", "ic-app", "ic-http", "ic-sip-tcp", "icg1-app", "icg1-sip",
                    "ic-media", "app-sip")),
    ("Discovery", ("ms-search", "ms-ssdp", "ms-mdns", "ms-client-gateway", "ms-blink-sync", "as-search", "as-mdns",
                   "as-ssdp", "ic-search", "ic-mdns", "ic-ssdp", "icg1-search")),
    ("Link with the Miniserver", ("as-miniserver", "ic-miniserver", "icg1-miniserver", "ms-trust-local")),
    ("Video calls from outside", ("ic-stun", "ic-stun-fallback", "ic-turn")),
    ("Spotify Connect", ("as-spotify-tcp", "as-spotify-udp", "se-spotify-tcp", "se-spotify-udp", "se-spotify-mdns",
                         "se-spotify-ssdp")),
    ("Radio", ("as-radio", "as-loxone-radio")),
    ("Audio streams", ("as-streams", "as-extension-boot-tcp", "as-extension-boot-udp", "as-ptp")),
    ("AirPlay", ("as-airplay", "as-airplay-dynamic-tcp", "as-airplay-dynamic-udp", "se-airplay",
                 "se-airplay-dynamic-tcp", "se-airplay-dynamic-udp")),
)
_FUNCTION_OF = {entry_id: label for label, ids in FUNCTIONS for entry_id in ids}

State = Literal["working", "open", "blocked", "not seen", "not managed"]


def function_of(entry: Entry) -> str:
    return _FUNCTION_OF.get(entry.id, entry.service.split(":")[0].split(" (")[0])


def product_functions(product: str, entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """A device product's functions and their entries, in catalogue order."""
    out: dict[str, list[Entry]] = {}
    for entry in entries:
        if CLIENT_TO_PRODUCT.get(entry.id, entry.product) == product:
            out.setdefault(function_of(entry), []).append(entry)
    return out


@record
class FunctionState:
    function: str
    state: State
    detail: str


def device_functions(device: Device, entries: Sequence[Entry], attempts: Sequence[Attempt],
                     grants: Sequence[GrantSeen], holes: Sequence[Pinhole], relayed: bool,
                     now: float) -> tuple[list[FunctionState], list[Attempt]]:
    """The state of each function of a device, and its recent blocked attempts no single function explains."""
    if device.product is None:
        mine = [h for h in holes if h.dst == device.ip]
        state: State = "open" if mine else "not seen"
        return [FunctionState("Web interface (product unknown)", state, _ports(mine))], \
            [a for a in attempts if a.verdict is not None and not a.verdict.passes]
    functions = product_functions(device.product, entries)
    owner = {e.id: label for label, group in functions.items() for e in group}
    blocked: dict[str, list[Attempt]] = {}
    other: list[Attempt] = []
    for attempt in attempts:
        verdict = attempt.verdict
        if verdict is None or verdict.passes or now - attempt.last_seen > RECENT:
            continue
        labels = {owner.get(e) for e in verdict.entries}
        if len(labels) == 1 and None not in labels:
            blocked.setdefault(labels.pop() or "", []).append(attempt)
        else:
            other.append(attempt)
    states = []
    for label, group in functions.items():
        states.append(_state(label, group, blocked.get(label, []), device, grants, holes, relayed, now))
    return states, other


def _state(label: str, group: list[Entry], blocked: list[Attempt], device: Device, grants: Sequence[GrantSeen],
           holes: Sequence[Pinhole], relayed: bool, now: float) -> FunctionState:
    if blocked:
        last = max(blocked, key=lambda a: a.last_seen)
        assert last.verdict is not None
        samples = sum(a.count for a in blocked)
        return FunctionState(label, "blocked", f"{last.verdict.text} ({samples} sample{'s' * (samples != 1)}, "
                             f"last {round(now - last.last_seen)} s ago)")
    hosts = [h for e in group if e.direction == "cloud" for h in e.hosts]
    resolved = [g for g in grants if now - g.until <= RECENT and any(host_matches(h, g.name) for h in hosts)]
    if resolved:
        latest = max(resolved, key=lambda g: g.until)
        when = f"open {round(latest.until - now)} s more" if latest.until > now else \
            f"grant expired {round(now - latest.until)} s ago"
        return FunctionState(label, "working", f"`{latest.name}` resolved ({when})")
    ids = {e.id for e in group}
    mine = [h for h in holes if h.entry in ids and device.ip in (h.src, h.dst)]
    if mine:
        return FunctionState(label, "open", _ports(mine))
    if any(e.direction == "broadcast" for e in group):
        return FunctionState(label, "open", "relayed between zones") if relayed else \
            FunctionState(label, "not managed", "no relay: clients find it only on its own segment")
    if hosts:
        names = list(dict.fromkeys(hosts))
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return FunctionState(label, "not seen", f"none of {shown} resolved recently" if len(names) > 1 else
                             f"{shown} not resolved recently")
    return FunctionState(label, "not managed", "; ".join(dict.fromkeys(e.note for e in group if e.note)) or
                         "within its segment")


def _ports(holes: Iterable[Pinhole]) -> str:
    return "pinholes " + (", ".join(sorted({f"{h.proto.upper()} {h.ports}" if h.ports else h.proto.upper()
                                            for h in holes})) or "none")
