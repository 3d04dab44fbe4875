"""The upstream port mapping's lifecycle, as a table of states and pure transitions over `now`.

    absent -> requested -> active -> renewing -> active ...
                  |           |          |
                  v           v          v
                failed <------+----------+      (backoff, then requested again)
    active / failed -> removed (stop, config change) -> requested (enabled again)

A mapping another host holds ("ConflictInMappingEntry", or found held by
another internal client) is a failure with `conflict` set: reported, retried
with backoff, never taken over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["absent", "requested", "active", "renewing", "failed", "removed"]

TRANSITIONS: dict[State, frozenset[State]] = {
    "absent": frozenset({"requested", "removed"}),
    "requested": frozenset({"active", "failed", "removed"}),
    "active": frozenset({"renewing", "failed", "removed"}),
    "renewing": frozenset({"active", "failed", "removed"}),
    "failed": frozenset({"requested", "removed"}),
    "removed": frozenset({"requested"}),
}

BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0

Action = Literal["map", "renew", "wait"]


class BadTransition(ValueError):
    """A transition the table does not allow: a bug in the caller."""


@dataclass
class Mapping:
    """One upstream mapping: where it is in its lifecycle and when it acts next."""

    state: State = "absent"
    next_at: float = 0.0
    failures: int = 0
    last_error: str = ""
    conflict: str = ""  # who holds the port, when someone else does
    external_ip: str = ""
    since: float = 0.0

    def move(self, to: State, now: float) -> None:
        if to not in TRANSITIONS[self.state]:
            raise BadTransition(f"{self.state} -> {to}")
        self.state = to
        self.since = now


def renew_after(lease: int, check_interval: int) -> float:
    """Seconds until the next renewal: half the lease, but never longer than the check interval.

    The check also catches an upstream that lost its mappings (restart), and a
    lease of 0 (permanent) is only ever checked.
    """
    if lease <= 0:
        return float(check_interval)
    return float(min(max(1, lease // 2), check_interval))


def backoff(failures: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1)))


def next_action(mapping: Mapping, now: float) -> Action:
    """What to do now: ask for the mapping, renew it, or wait."""
    if now < mapping.next_at:
        return "wait"
    if mapping.state in ("absent", "failed", "removed"):
        return "map"
    if mapping.state == "active":
        return "renew"
    return "wait"  # a request or renewal is under way


def begin(mapping: Mapping, action: Action, now: float) -> None:
    """An add or renewal starts."""
    mapping.move("requested" if action == "map" else "renewing", now)


def succeeded(mapping: Mapping, now: float, external_ip: str, lease: int, check_interval: int) -> None:
    mapping.move("active", now)
    mapping.failures = 0
    mapping.last_error = mapping.conflict = ""
    mapping.external_ip = external_ip
    mapping.next_at = now + renew_after(lease, check_interval)


def failed(mapping: Mapping, now: float, error: str, conflict: str = "") -> None:
    mapping.move("failed", now)
    mapping.failures += 1
    mapping.last_error = error
    mapping.conflict = conflict
    mapping.next_at = now + backoff(mapping.failures)


def removed(mapping: Mapping, now: float) -> None:
    mapping.move("removed", now)
    mapping.next_at = float("inf")
