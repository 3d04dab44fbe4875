"""`loxgw explain DEVICE HOST PORT[/PROTO]`: the question as typed, the device it names, the answer as text.

core.explain decides; this module reads the user's words (bounded: a word longer
than a DNS name is refused) and prints the daemon's answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from loxgw.core.config import IPAddress
from loxgw.core.devices import Device
from loxgw.core.record import record


@record
class Question:
    """`loxgw explain DEVICE HOST PORT[/PROTO]`, as typed."""

    device: str
    host: str
    proto: str
    port: int | None


MAX_WORD = 253  # a DNS name's length; longer words are refused


def parse_question(words: Sequence[str]) -> Question:
    """`DEVICE HOST PORT[/PROTO]` (PROTO tcp, udp; PORT may be `icmp` or `ping`); ValueError with a message."""
    if len(words) != 3:
        raise ValueError("usage: explain DEVICE HOST PORT[/PROTO]")
    device, host, target = (w.strip() for w in words)
    if not device or not host or max(len(device), len(host)) > MAX_WORD:
        raise ValueError("DEVICE and HOST must be names or addresses")
    if target.lower() in ("icmp", "ping"):
        return Question(device, host.lower().rstrip("."), "icmp", None)
    text, _, proto = target.lower().partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp") or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"not a PORT[/PROTO]: {target!r} (e.g. 443, 7700/udp, icmp)")
    return Question(device, host.lower().rstrip("."), proto, int(text))


def address_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def find_device(devices: Iterable[Device], text: str, aliases: dict[str, str] | None = None) -> Device | None:
    """A device by name (or config section name, through `aliases`: name -> key), MAC or address."""
    wanted = text.strip().lower()
    devices = tuple(devices)
    address = address_or_none(wanted)
    key = (aliases or {}).get(wanted)
    for device in devices:
        if (address is not None and device.ip == address) or device.key == key or \
                (device.mac is not None and device.mac == wanted.replace("-", ":")) or \
                (device.name and device.name.lower() == wanted):
            return device
    return None


def format_answer(answer: dict[str, object]) -> str:
    """An explain answer (DiagnoseService.explain's `explain` record) as text."""
    device = answer.get("device_name") or answer.get("device")
    address = answer.get("address")
    host = answer.get("host") if not address or answer.get("host") == address else f"{answer.get('host')} ({address})"
    lines = [f"{device} -> {host} {answer.get('flow')}: {'passes' if answer.get('passes') else 'blocked'}",
             f"  why:  {answer.get('why')}", f"  rule: {answer.get('rule')}"]
    entries = answer.get("entries")
    if isinstance(entries, list) and entries:
        lines.append(f"  catalogue: {', '.join(str(e) for e in entries)}")
    if answer.get("grants_synced") is False:
        lines.append("  note: loxgw's DNS thread was busy; its DNS entries as last looked at (ask again)")
    return "\n".join(lines)
