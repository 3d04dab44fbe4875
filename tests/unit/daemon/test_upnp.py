"""The UPnP service: maps, forwards, backs off and removes against a fake IGD."""

from __future__ import annotations

import asyncio
from pathlib import Path

from loxgw.core.config import load_config
from loxgw.core.errors import LoxgwError
from loxgw.daemon import app as daemon


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
                               lookup_network=lambda n: None, upnp_client=igd,
                               open_xtables=lambda: None)  # type: ignore[arg-type, return-value]
    return daemon.Daemon(load_config(str(path)), ports), scripts


def test_daemon_maps_forwards_and_removes(tmp_path: Path) -> None:
    igd = FakeIgd()
    d, scripts = make(tmp_path, igd)
    asyncio.run(d.upnp.step())
    assert igd.calls == [("ensure", 44300, "tcp")]
    d.firewall._pass()  # what the firewall worker does with the new forward
    assert "ip daddr 198.51.100.2 tcp dport 44300 dnat ip to 192.168.20.10:443" in scripts[-1]
    (status,) = d.upnp.status()
    assert (status["state"], status["external_ip"]) == ("active", "11.22.33.1")
    asyncio.run(d.upnp.remove_mappings(d.config.upnp))
    assert igd.calls[-1] == ("remove", 44300, "tcp")


def test_daemon_reports_a_conflict_and_backs_off(tmp_path: Path) -> None:
    from loxgw.edges.upnpc import UpnpError

    igd = FakeIgd(UpnpError("port 44300/tcp is mapped to 198.51.100.9:44300", conflict="198.51.100.9"))
    d, scripts = make(tmp_path, igd)
    asyncio.run(d.upnp.step())
    asyncio.run(d.upnp.step())  # backing off: no second call yet
    assert igd.calls == [("ensure", 44300, "tcp")]
    (status,) = d.upnp.status()
    assert (status["state"], status["conflict"], status["failures"]) == ("failed", "198.51.100.9", 1)
    assert scripts == []  # nothing forwarded for a mapping we do not hold
