"""The UPnP mapping lifecycle: the transition table, renewals, backoff, and the daemon's step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from loxgw.core import upnp
from loxgw.core.config import load_config
from loxgw.core.errors import LoxgwError
from loxgw.core.upnp import Mapping
from loxgw.daemon import app as daemon


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


class FakeIgd:
    def __init__(self, error: LoxgwError | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, int, str]] = []

    def ensure(self, port: int, proto: str, lease: int) -> object:
        self.calls.append(("ensure", port, proto))
        if self.error:
            raise self.error
        from loxgw.edges.upnpc import Gateway

        return Gateway("11.22.33.1", "198.51.100.2")

    def remove(self, port: int, proto: str) -> None:
        self.calls.append(("remove", port, proto))


CONFIG = """
config loxgw 'main'
\toption firewall 'standalone'
\toption status_socket '{sock}'
config device 'ms'
\toption type 'miniserver'
\toption ip '192.168.20.10'
config upnp 'remote'
\toption enabled '1'
\toption device 'ms'
\toption external_port '44300'
"""


def make(tmp_path: Path, igd: FakeIgd) -> tuple[daemon.Daemon, list[str]]:
    path = tmp_path / "cfg"
    path.write_text(CONFIG.format(sock=tmp_path / "s.sock"))
    scripts: list[str] = []
    ports = daemon.KernelPorts(apply_script=scripts.append, table_exists=lambda t: True, fw4_present=lambda: False,
                               choose_queue=lambda m: "off", watch_ruleset=lambda: None, detect=False,
                               list_set_elements=lambda t, p: {}, probe_set_refresh=lambda: "expiration",
                               lookup_network=lambda n: None, upnp_client=igd)
    return daemon.Daemon(load_config(str(path)), ports), scripts


def test_daemon_maps_forwards_and_removes(tmp_path: Path) -> None:
    igd = FakeIgd()
    d, scripts = make(tmp_path, igd)
    asyncio.run(d.upnp_step())
    assert igd.calls == [("ensure", 44300, "tcp")]
    assert "ip daddr 198.51.100.2 tcp dport 44300 dnat ip to 192.168.20.10:443" in scripts[-1]
    (status,) = d._upnp_status()
    assert (status["state"], status["external_ip"]) == ("active", "11.22.33.1")
    asyncio.run(d.remove_mappings(d.config.upnp))
    assert igd.calls[-1] == ("remove", 44300, "tcp")


def test_daemon_reports_a_conflict_and_backs_off(tmp_path: Path) -> None:
    from loxgw.edges.upnpc import UpnpError

    igd = FakeIgd(UpnpError("port 44300/tcp is mapped to 198.51.100.9:44300", conflict="198.51.100.9"))
    d, scripts = make(tmp_path, igd)
    asyncio.run(d.upnp_step())
    asyncio.run(d.upnp_step())  # backing off: no second call yet
    assert igd.calls == [("ensure", 44300, "tcp")]
    (status,) = d._upnp_status()
    assert (status["state"], status["conflict"], status["failures"]) == ("failed", "198.51.100.9", 1)
    assert scripts == []  # nothing forwarded for a mapping we do not hold
