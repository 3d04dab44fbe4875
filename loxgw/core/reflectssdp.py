"""The SSDP reflector, sans I/O: the App's UPnP search across zones, and Loxone devices' announcements.

- An M-SEARCH to 239.255.255.250:1900 from a clients zone is sent on into
  every devices zone from the router's own search socket (the "proxy": one
  UDP port of its own), and remembered with its asker for MX + 1 seconds.
- A unicast answer from a detected Loxone device to that port goes to every
  asker still waiting whose search target it answers (the same ST, or
  ssdp:all), from the same socket. So the answer path needs no firewall
  window for the asker (the relay's design for LoxLIVE does): the device
  answers the router, the router answers the asker, and only the LOCATION
  URL leads the client to the device itself; the port it names becomes an
  inbound pinhole for the answer's max-age. Answers that are not from a
  Loxone device, or whose LOCATION names another host, go nowhere.
- A NOTIFY from a Loxone device is copied to every clients zone (alive and
  update open the LOCATION port, byebye closes it).
- Searches from devices zones and announcements from clients zones stay
  where they are; copies carry loxgw's mark and the router's address.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address

from loxgw.core import ssdp
from loxgw.core.reflect import CLIENTS, DEVICES, Ledger, Scope, Transmit
from loxgw.core.relay import RateLimiter

SSDP_GROUP = IPv4Address(ssdp.SSDP_GROUP)
SSDP_PORT = ssdp.SSDP_PORT
MAX_DATAGRAM = ssdp.MAX_ANSWER_BYTES
MAX_HEADERS = 32
MAX_PENDING = 64  # searches waiting for answers; the oldest gives way
MAX_MX = 5  # UPnP Device Architecture 1.1: larger MX values count as 5
DEFAULT_MAX_AGE = 1800
MAX_AGE = 86400


@dataclass(frozen=True, slots=True)
class Search:
    """A search sent on for `asker`:`port`, answered until `until`."""

    asker: IPv4Address
    port: int
    target: str  # ST, lower case
    until: float


def read_head(data: bytes) -> tuple[str, dict[str, str]]:
    """The start line and headers (names lower-cased) of an HTTPU message; ValueError if it is none.

    Lines may end in CRLF or LF (what Loxone devices send is not documented).
    """
    if len(data) > MAX_DATAGRAM:
        raise ValueError("oversized")
    text = data.decode("ascii")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    headers: dict[str, str] = {}
    for count, line in enumerate(lines[1:]):
        if not line:
            break
        name, sep, value = line.partition(":")
        if not sep or count >= MAX_HEADERS:
            raise ValueError("bad header")
        headers[name.strip().lower()] = value.strip()
    return lines[0].strip(), headers


def location_port(location: str, device: IPv4Address) -> int | None:
    """The TCP port of a LOCATION URL that points at `device` itself; None otherwise."""
    try:
        url = ssdp.split_url(location)
        if url.scheme != "http" or url.hostname is None or IPv4Address(url.hostname) != device:
            return None
        return url.port or 80
    except ValueError:
        return None


def max_age(headers: dict[str, str]) -> int:
    for part in headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "max-age" and value.strip().isdigit():
            return max(1, min(MAX_AGE, int(value.strip())))
    return DEFAULT_MAX_AGE


class SsdpReflector:
    """SSDP reflection between zones; no sockets, no clock of its own."""

    def __init__(self, scope: Scope, limiter: RateLimiter) -> None:
        self.scope = scope
        self.limiter = limiter
        self.ledger = Ledger("ssdp-location")
        self.counters: Counter[str] = Counter()
        self._pending: list[Search] = []

    def receive(self, ifindex: int, src: IPv4Address, sport: int, data: bytes, now: float, tos: int = 0,
                proxy: bool = False) -> list[Transmit]:
        """A datagram to UDP 1900 (`proxy` False) or to the search socket; returns the copies to send now."""
        self.counters["received"] += 1
        admitted = self.scope.admit(ifindex, src, tos)
        if isinstance(admitted, str):
            return self._drop(admitted)
        from_devices = admitted.role == DEVICES
        if from_devices and src not in self.scope.devices:
            return self._drop("not_loxone")
        refused = self.limiter.allow(src, now)
        if refused:
            return self._drop(refused)
        try:
            start, headers = read_head(data)
        except (ValueError, UnicodeDecodeError):
            return self._drop("malformed")
        method = start.split(" ", 1)[0].upper()
        if proxy:
            if not from_devices or not start.upper().startswith("HTTP/1.1 200"):
                return self._drop("not_an_answer")
            return self._answer(src, headers, data, now)
        if method == "M-SEARCH" and not from_devices:
            return self._search(src, sport, headers, data, now)
        if method == "NOTIFY" and from_devices:
            return self._notify(src, headers, data, now)
        return self._drop("search_from_devices" if method == "M-SEARCH" else
                          "notify_from_clients" if method == "NOTIFY" else "not_ssdp")

    def _drop(self, reason: str) -> list[Transmit]:
        self.counters[f"dropped_{reason}"] += 1
        return []

    def _search(self, asker: IPv4Address, port: int, headers: dict[str, str], data: bytes,
                now: float) -> list[Transmit]:
        target = headers.get("st", "").lower()
        if headers.get("man", "").strip('"').lower() != "ssdp:discover" or not target:
            return self._drop("not_a_search")
        mx = headers.get("mx", "1")
        wait = min(MAX_MX, int(mx)) if mx.isdigit() else 1
        self._pending = [s for s in self._pending if s.until > now][-(MAX_PENDING - 1):]
        self._pending.append(Search(asker, port, target, now + wait + 1))
        self.counters["searches_reflected"] += 1
        return [Transmit(i.index, SSDP_GROUP, SSDP_PORT, data, "ssdp-proxy") for i in self.scope.egress[DEVICES]]

    def _answer(self, device: IPv4Address, headers: dict[str, str], data: bytes, now: float) -> list[Transmit]:
        port = location_port(headers.get("location", ""), device)
        if port is None:
            return self._drop("location_not_the_device")
        target = headers.get("st", "").lower()
        askers = dict.fromkeys((s.asker, s.port) for s in self._pending
                               if s.until > now and s.target in (target, "ssdp:all"))
        if not askers:
            return self._drop("no_asker_waiting")
        self.ledger.put(device, "tcp", port, headers.get("usn", "").lower().encode(), now + max_age(headers), now)
        self.counters["answers_reflected"] += 1
        return [Transmit(0, asker, asker_port, data, "ssdp-proxy") for asker, asker_port in askers]

    def _notify(self, device: IPv4Address, headers: dict[str, str], data: bytes, now: float) -> list[Transmit]:
        kind = headers.get("nts", "").lower()
        usn = headers.get("usn", "").lower().encode()
        if kind == "ssdp:byebye":
            self.ledger.goodbye(device, usn, now)
        elif kind in ("ssdp:alive", "ssdp:update"):
            port = location_port(headers.get("location", ""), device)
            if port is None:
                return self._drop("location_not_the_device")
            self.ledger.put(device, "tcp", port, usn, now + max_age(headers), now)
        else:
            return self._drop("not_a_notify")
        self.counters["notifies_reflected"] += 1
        return [Transmit(i.index, SSDP_GROUP, SSDP_PORT, data, "ssdp") for i in self.scope.egress[CLIENTS]]

    def forget(self, devices: frozenset[IPv4Address]) -> None:
        if devices:
            self.ledger.forget(devices)

    def get_timer(self) -> float | None:
        return self.ledger.next_expiry()

    def handle_timer(self, now: float) -> None:
        self.ledger.expire(now)

    def status(self, now: float) -> dict[str, object]:
        return {"searches_waiting": sum(1 for s in self._pending if s.until > now),
                "ports": self.ledger.status(now), "counters": dict(self.counters + self.ledger.counters)}
