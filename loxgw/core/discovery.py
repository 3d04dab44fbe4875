"""Evidence before trust: when a discovery answer (LoxLIVE, Audioserver JSON, SSDP) may change the inventory.

One datagram is easy to forge: any host in the devices VLAN can send a
LoxLIVE answer with a raw socket, from any source address, claiming any
serial. So an answer counts only when

- it was solicited: it arrived within `SOLICITED_WINDOW` seconds after a
  search loxgw sent (or relayed) on that segment;
- it names the address it came from (a Miniserver's text answer carries its
  own address) and, where a serial is the device's MAC (Miniserver text,
  Audioserver JSON), the sender's neighbour entry carries that MAC;
- the sender's neighbour entry, where the kernel has one, is a Loxone MAC
  (50:4F:94, Loxone's only IEEE prefix). A real answer reaches the router
  only after the device resolved the router's address, which leaves the
  device's entry in the router's neighbour table.

Answers that pass still rank lowest in the inventory (see
devices.evidence_rank) unless the neighbour table confirms a Loxone MAC.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from loxgw.core import ssdp
from loxgw.core.devices import Inventory, LoxLive, is_loxone_mac, mac_of_serial
from loxgw.core.record import record
from loxgw.core.relay import RateLimiter

IPv4 = ipaddress.IPv4Address

SOLICITED_WINDOW = 3.0  # seconds after a search in which answers count (LoxLIVE answers come within ~0.1 s)
MAX_SEGMENTS = 64  # segments remembered; they are interfaces, so few
ANSWERS_PER_SOURCE = 5.0  # answers/s one source may send (a device answers once per search)
ANSWERS_GLOBAL = 200.0  # answers/s from all sources together
ANSWER_SOURCES = 1024  # per-source buckets kept; attackers choose the source addresses


@dataclass
class Solicitations:
    """When loxgw last searched on each segment (an interface name); answers count only shortly after."""

    window: float = SOLICITED_WINDOW
    capacity: int = MAX_SEGMENTS
    _last: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def record(self, segment: str, now: float) -> None:
        """loxgw sent a search onto `segment`, or relayed one out of it."""
        self._last[segment] = now
        self._last.move_to_end(segment)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)

    def solicited(self, segment: str | None, now: float) -> bool:
        """An answer arriving now on `segment` (None: not known, any segment's search counts) was asked for."""
        if segment is None:
            return any(0.0 <= now - sent <= self.window for sent in self._last.values())
        sent = self._last.get(segment)
        return sent is not None and 0.0 <= now - sent <= self.window


def answer_limiter() -> RateLimiter:
    """Per-source token buckets (and a global one) for discovery input, checked before parsing."""
    return RateLimiter(ANSWERS_PER_SOURCE, ANSWERS_GLOBAL, ANSWER_SOURCES)


def answer_evidence(src_ip: IPv4, claimed_ip: IPv4 | None, neighbour_mac: str | None, solicited: bool,
                    *, claimed_mac: str | None = None, neighbour_required: bool = False) -> str | None:
    """Why an answer from `src_ip` must not count ("unsolicited", "spoofed", "not_loxone_mac",
    "no_neighbour"), or None.

    `claimed_ip`: the address the answer names for its sender (None if it
    names none); `claimed_mac`: the MAC its serial stands for, where the
    serial is the MAC; `neighbour_mac`: the sender's neighbour entry, None if
    the kernel has none. `neighbour_required`: refuse senders without one (a
    raw socket can send from any address, but only the address's owner puts
    an entry into the router's table).
    """
    if not solicited:
        return "unsolicited"
    if claimed_ip is not None and claimed_ip != src_ip:
        return "spoofed"
    if neighbour_mac is None and neighbour_required:
        return "no_neighbour"
    if neighbour_mac is not None:
        if not is_loxone_mac(neighbour_mac):
            return "not_loxone_mac"
        if claimed_mac is not None and claimed_mac.lower() != neighbour_mac.lower():
            return "spoofed"
    return None


@record
class Answer:
    """A parsed discovery answer and what was known when it arrived."""

    src: IPv4
    record: LoxLive | ssdp.Description
    solicited: bool
    neighbour_mac: str | None = None  # the sender's neighbour entry (all MACs, not only Loxone ones)
    segment: str | None = None  # the interface it arrived on, if known


def admit(inventory: Inventory, answer: Answer, now: float, *, neighbour_required: bool = False) -> bool:
    """Let a discovery answer change the inventory if the evidence holds; refusals counted by reason.

    Returns True if what the firewall needs changed. `neighbour_required`: see answer_evidence.
    """
    record = answer.record
    if isinstance(record, LoxLive):
        claimed_ip: IPv4 | None = record.ip
        claimed_mac = mac_of_serial(record.serial)
    else:
        claimed_ip, claimed_mac = None, None  # an SSDP serial is not known to be the MAC
    reason = answer_evidence(answer.src, claimed_ip, answer.neighbour_mac, answer.solicited,
                             claimed_mac=claimed_mac, neighbour_required=neighbour_required)
    if reason is None and isinstance(record, ssdp.Description) and not ssdp.is_loxone(record):
        reason = "not_loxone"
    if reason is not None:
        inventory.refusals[f"refused_{reason}"] += 1
        return False
    changed = False
    mac = answer.neighbour_mac
    if mac is not None:
        # The neighbour table vouches for this Loxone MAC at this address: that is evidence of its own.
        changed = inventory.observe("neighbour", now, mac=mac, ip=answer.src)
    if isinstance(record, LoxLive):
        return inventory.observe(
            "loxlive", now, mac=mac, ip=answer.src, product=record.product, name=record.name,
            http_port=record.port if record.product == "miniserver" else None, serial=record.serial,
            firmware=record.firmware) or changed
    compact = record.serial.replace(":", "").upper()  # "50:4F:94:.." and "504F94.." both name a MAC
    return inventory.observe(
        "ssdp", now, mac=mac, ip=answer.src, product=ssdp.product_of(record), name=record.name or record.model,
        serial=compact if mac_of_serial(compact) else record.serial) or changed
