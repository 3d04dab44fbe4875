"""The iptables-nft fallback against the real iptables-nft: verified as a whole, repaired, few processes.

The first tests drive XtablesQueue directly in a scratch namespace (its
runner prefixes `ip netns exec`, and counts); the last ones run the daemon
in the lab router and tamper with its rules the way an admin or a script
would.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Sequence

import pytest

from loxgw.core import dnspath, xtables
from loxgw.core.config import Config, parse_config
from loxgw.core.dnsrules import dns_queue_rules, hold_xtables_rule
from loxgw.edges import queue
from tests.lab.loxgwproc import Loxgw
from tests.lab.netlab import PREFIX, Lab, sh, wait_for
from tests.lab.test_dns import listen, resolve_and_connect

CONFIG = """
config loxgw 'main'
\tlist trusted_resolver '9.9.9.9'
\tlist trusted_resolver '149.112.112.112'
\tlist trusted_resolver '2620:fe::fe'

config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'
\toption cloud '1'

config zone 'lan'
\toption role 'clients'
\tlist interface 'br-lan'
\toption cloud '1'
"""
ROWS = (dnspath.COPIES, dnspath.COPIES_ANSWERS_HELD, dnspath.QUEUED)

if queue.xtables_tools(4) is None or queue.xtables_tools(6) is None:
    pytestmark = pytest.mark.skip(reason="needs iptables-nft-restore and ip6tables-nft-restore")


class Scratch:
    """A namespace of its own; `run` is an XtablesQueue runner that works in it and counts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []

    def run(self, argv: Sequence[str], data: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(os.path.basename(argv[0]))
        return queue.run_tool(["ip", "netns", "exec", self.name, *argv], data)

    def sh(self, *cmd: str) -> str:
        return sh("ip", "netns", "exec", self.name, *cmd).stdout

    def mangle(self, family: int = 4) -> str:
        """The table as iptables -S prints it (no comments, no time stamps)."""
        return self.sh("iptables-nft" if family == 4 else "ip6tables-nft", "-t", "mangle", "-S")


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    # Named like a lab's namespaces, so sweep_stale() deletes it if this run is killed.
    name = f"{PREFIX}-{os.getpid()}-xtables"
    sh("ip", "netns", "add", name)
    try:
        yield Scratch(name)
    finally:
        sh("ip", "netns", "del", name, check=False)


def config() -> Config:
    return parse_config(CONFIG, "test_xtables")


def rules(path: dnspath.DnsPath = dnspath.COPIES) -> tuple[list[queue.QueueRule], list[str] | None]:
    return dns_queue_rules(config(), path), hold_xtables_rule(config(), path)


@pytest.mark.parametrize("path", ROWS, ids=lambda p: p.label)
def test_install_and_remove_take_four_processes_and_read_back_as_installed(scratch: Scratch,
                                                                          path: dnspath.DnsPath) -> None:
    xt = queue.XtablesQueue(run=scratch.run)
    xt.install(*rules(path))
    assert scratch.calls == ["iptables-nft-restore", "ip6tables-nft-restore"]
    assert xt.present()
    for family in (4, 6):
        lines = scratch.mangle(family).splitlines()
        for hook in ("INPUT", "OUTPUT", "FORWARD"):
            chain = xtables.XT_CHAIN[hook.lower()]
            assert [line for line in lines if line.endswith(f"-j {chain}")] == [f"-A {hook} -j {chain}"]
    scratch.calls.clear()
    xt.remove()
    assert scratch.calls == ["iptables-nft-restore", "ip6tables-nft-restore"]
    assert "LOXGW" not in scratch.mangle(4) + scratch.mangle(6)


TAMPERS = {
    "INPUT jump deleted": ("iptables-nft", "-t", "mangle", "-D", "INPUT", "-j", "LOXGW_DNS_IN"),
    "FORWARD jump deleted": ("iptables-nft", "-t", "mangle", "-D", "FORWARD", "-j", "LOXGW_DNS_FWD"),
    "IPv6 OUTPUT jump deleted": ("ip6tables-nft", "-t", "mangle", "-D", "OUTPUT", "-j", "LOXGW_DNS_OUT"),
    "chain flushed": ("iptables-nft", "-t", "mangle", "-F", "LOXGW_DNS_OUT"),
    "IPv6 chain flushed": ("ip6tables-nft", "-t", "mangle", "-F", "LOXGW_DNS_IN"),
    "one rule deleted": ("iptables-nft", "-t", "mangle", "-D", "LOXGW_DNS_FWD", "3"),
    "a second jump": ("iptables-nft", "-t", "mangle", "-A", "INPUT", "-j", "LOXGW_DNS_IN"),
    "a rule replaced": ("iptables-nft", "-t", "mangle", "-R", "LOXGW_DNS_IN", "1", "-j", "ACCEPT"),
    "nft flush ruleset": ("nft", "flush", "ruleset"),
}


@pytest.mark.parametrize("tamper", TAMPERS.values(), ids=TAMPERS.keys())
def test_each_change_is_seen_and_install_repairs_it(scratch: Scratch, tamper: tuple[str, ...]) -> None:
    scratch.sh("iptables-nft", "-t", "mangle", "-A", "INPUT", "-j", "MARK", "--set-mark", "1")  # not loxgw's
    xt = queue.XtablesQueue(run=scratch.run)
    xt.install(*rules())
    installed = (scratch.mangle(4), scratch.mangle(6))
    assert xt.present()
    scratch.sh(*tamper)
    assert not xt.present()
    xt.install(*rules())
    assert xt.present()
    if tamper[1] != "flush":
        assert (scratch.mangle(4), scratch.mangle(6)) == installed
    assert scratch.mangle(4).count("-j LOXGW_DNS_IN") == 1


def test_a_killed_run_leaves_rules_the_next_one_adopts(scratch: Scratch) -> None:
    queue.XtablesQueue(run=scratch.run).install(*rules(dnspath.QUEUED))
    xt = queue.XtablesQueue(run=scratch.run)
    xt.install(*rules())
    assert xt.present()
    assert scratch.mangle(4).count("-A INPUT -j LOXGW_DNS_IN") == 1
    assert "NFLOG" in scratch.mangle(4)  # the new rules, not the leftover ones
    xt.remove()
    assert "LOXGW" not in scratch.mangle(4) + scratch.mangle(6)


def test_remove_is_quiet_where_already_gone(scratch: Scratch) -> None:
    xt = queue.XtablesQueue(run=scratch.run)
    xt.install(*rules())
    scratch.sh("iptables-nft", "-t", "mangle", "-D", "OUTPUT", "-j", "LOXGW_DNS_OUT")
    scratch.sh("ip6tables-nft", "-t", "mangle", "-D", "OUTPUT", "-j", "LOXGW_DNS_OUT")
    xt.remove()
    assert "LOXGW" not in scratch.mangle(4) + scratch.mangle(6)
    scratch.calls.clear()
    xt.remove()
    assert scratch.calls == []


# --- the daemon ------------------------------------------------------------------------


def jumps(lab: Lab) -> list[str]:
    """The jumps into loxgw's chains, both families, as iptables -S prints them."""
    out = []
    for binary in ("iptables-nft", "ip6tables-nft"):
        text = lab.run(lab.ns_router, binary, "-t", "mangle", "-S").stdout
        out += [f"{binary} {line}" for line in text.splitlines() if "-j LOXGW_DNS_" in line]
    return out


def chains(lab: Lab) -> str:
    return "".join(lab.run(lab.ns_router, binary, "-t", "mangle", "-S").stdout
                   for binary in ("iptables-nft", "ip6tables-nft"))


def test_the_daemon_repairs_any_change_within_a_second_and_grants_keep_working(lab: Lab) -> None:
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    listen(lab, "203.0.113.20", 30000)
    gw = Loxgw(lab).start()
    assert gw.status()["queue_mode"] == "xtables"
    installed = chains(lab)
    assert len(jumps(lab)) == 6
    tampers = [
        ("iptables-nft", "-t", "mangle", "-D", "INPUT", "-j", "LOXGW_DNS_IN"),
        ("iptables-nft", "-t", "mangle", "-D", "FORWARD", "-j", "LOXGW_DNS_FWD"),
        ("iptables-nft", "-t", "mangle", "-F", "LOXGW_DNS_OUT"),
        ("iptables-nft", "-t", "mangle", "-D", "LOXGW_DNS_IN", "1"),
    ]
    for number, tamper in enumerate(tampers):
        lab.run(lab.ns_router, *tamper)
        wait_for(lambda: chains(lab) == installed, 1.0, f"repair after {' '.join(tamper)}")
        assert resolve_and_connect(lab, ms.ns, f"t{number}.dyndns.loxonecloud.com", 30000) == "open"


def test_sighup_reasserts_what_no_notification_reported(lab: Lab) -> None:
    """A second jump is an addition, which the daemon does not watch; SIGHUP puts it right."""
    ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
    listen(lab, "203.0.113.20", 30000)
    gw = Loxgw(lab).start()
    installed = chains(lab)
    lab.run(lab.ns_router, "iptables-nft", "-t", "mangle", "-A", "OUTPUT", "-j", "LOXGW_DNS_OUT")
    assert len(jumps(lab)) == 7
    gw.signal(signal.SIGHUP)
    wait_for(lambda: gw.status()["counters"].get("reloads") == 1, 5, "reload")
    assert chains(lab) == installed
    assert resolve_and_connect(lab, ms.ns, "h1.dyndns.loxonecloud.com", 30000) == "open"


def test_only_deletions_that_could_touch_loxgw_are_checked(lab: Lab) -> None:
    """The relay's own netdev table (deleted and created in one transaction) and other tables' deletions
    start no check; a deletion in ip or ip6 mangle reads the iptables-nft rules back, one in loxgw's table
    asks for the table."""
    gw = Loxgw(lab, extra="config relay\n\tlist zone 'iot'\n\tlist zone 'lan'\n").start()

    def checks() -> tuple[int, int]:
        counters = gw.status()["counters"]
        return counters.get("table_checks", 0), counters.get("xtables_checks", 0)

    wait_for(lambda: lab.run(lab.ns_router, "nft", "list", "table", "netdev", "loxgw_relay", check=False)
             .returncode == 0, 5, "the relay's netdev table")
    for step in ("add table inet other", "add chain inet other c", "delete chain inet other c",
                 "delete table inet other", "add table ip6 mangle2", "delete table ip6 mangle2"):
        lab.run(lab.ns_router, "nft", step)
    lab.run(lab.ns_router, "iptables-nft", "-t", "filter", "-N", "ELSEWHERE")
    lab.run(lab.ns_router, "iptables-nft", "-t", "filter", "-X", "ELSEWHERE")
    # A deletion in mangle after all of them: once it is checked, everything before it was read.
    lab.run(lab.ns_router, "ip6tables-nft", "-t", "mangle", "-N", "SOMEONE")
    lab.run(lab.ns_router, "ip6tables-nft", "-t", "mangle", "-X", "SOMEONE")
    wait_for(lambda: checks()[1] >= 1, 2, "the check after a deletion in ip6 mangle")
    assert checks() == (0, 1)
    lab.run(lab.ns_router, "nft", "add", "chain", "inet", "loxgw", "somebodys")
    lab.run(lab.ns_router, "nft", "delete", "chain", "inet", "loxgw", "somebodys")
    wait_for(lambda: checks()[0] == 1, 2, "the check after a deletion in loxgw's table")
    assert checks() == (1, 1)
