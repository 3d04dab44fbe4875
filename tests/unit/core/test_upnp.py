"""The UPnP mapping lifecycle: the transition table, renewals, backoff."""

from __future__ import annotations

import pytest

from loxgw.core import upnp
from loxgw.core.upnp import Mapping


def test_every_state_is_in_the_table_and_reachable() -> None:
    states = set(upnp.TRANSITIONS)
    assert states == {"absent", "requested", "active", "renewing", "failed", "removed"}
    reachable = {"absent"}
    for _ in states:
        reachable |= {t for s in reachable for t in upnp.TRANSITIONS[s]}
    assert reachable == states


def test_disallowed_transition_raises() -> None:
    with pytest.raises(upnp.BadTransition):
        Mapping().move("active", 0.0)  # absent -> active skips the request


def test_map_renew_fail_backoff_remove() -> None:
    m = Mapping()
    assert upnp.next_action(m, 0.0) == "map"
    upnp.begin(m, "map", 0.0)
    assert (m.state, upnp.next_action(m, 0.0)) == ("requested", "wait")
    upnp.succeeded(m, 1.0, "11.22.33.1", lease=600, check_interval=60)
    assert (m.state, m.next_at) == ("active", 61.0)  # the check interval is shorter than lease/2
    assert upnp.next_action(m, 60.9) == "wait"
    assert upnp.next_action(m, 61.0) == "renew"
    upnp.begin(m, "renew", 61.0)
    upnp.failed(m, 62.0, "IGD gone")
    assert (m.state, m.failures, m.next_at) == ("failed", 1, 67.0)
    upnp.begin(m, "map", 67.0)
    upnp.failed(m, 68.0, "IGD gone")
    assert m.next_at == 78.0  # 5 s, then 10 s, ...
    upnp.removed(m, 70.0)
    assert (m.state, upnp.next_action(m, 1e9)) == ("removed", "wait")


@pytest.mark.parametrize("lease,check,expected", [(6, 60, 3.0), (3600, 60, 60.0), (0, 30, 30.0), (1, 60, 1.0)])
def test_renew_after(lease: int, check: int, expected: float) -> None:
    assert upnp.renew_after(lease, check) == expected


def test_backoff_is_capped() -> None:
    assert [upnp.backoff(n) for n in (1, 2, 3, 4, 10, 100)] == [5.0, 10.0, 20.0, 40.0, 300.0, 300.0]
