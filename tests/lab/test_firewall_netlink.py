"""Element diffs over netlink leave every set exactly as `nft -f` leaves it (real kernel, real nft)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from loxgw.core import firewall, pinholes, ruleset
from loxgw.core.config import parse_config
from loxgw.core.devices import Device
from tests.lab.loxgwproc import REPO
from tests.lab.netlab import PREFIX, sh

CONFIG = parse_config("""
config loxgw 'main'
\toption firewall 'standalone'

config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'

config zone 'lan'
\toption role 'clients'
\tlist interface 'br-lan'
""", "/etc/config/loxgw")

# Run in a namespace: reads {"table", "delete", "add", "layouts"} (elements in nft syntax) on stdin,
# sends one batch, prints "applied" or the errno the kernel refused it with.
APPLY = """
import json, sys
from loxgw.core import setkeys
from loxgw.core.errors import KernelError
from loxgw.edges.nftset import ElementBatches
spec = json.load(sys.stdin)
layouts = dict(setkeys.DESIRED_LAYOUTS)
layouts.update((name, setkeys.KeyLayout.parse(t, i)) for name, (t, i) in spec["layouts"].items())
writer = ElementBatches()
try:
    writer.apply(spec["table"], setkeys.kernel_changes(spec["delete"], layouts),
                 setkeys.kernel_changes(spec["add"], layouts))
    print("applied")
except KernelError as exc:
    print(exc.errno)
"""


def device(n: int, product: str | None, port: int = 80) -> Device:
    mac = f"50:4f:94:00:00:{n:02x}"
    return Device(mac, mac, ipaddress.IPv4Address(f"192.168.20.{n}"), product, http_port=port)  # type: ignore[arg-type]


BEFORE = (device(11, "miniserver"), device(12, "audioserver"), device(13, "intercom"), device(14, None),
          device(15, "miniserver", 8080))
# One gone (12), one changed product (13), one changed port (15), two new (16, 17).
AFTER = (device(11, "miniserver"), device(13, "audioserver"), device(14, None), device(15, "miniserver", 8081),
         device(16, "intercom"), device(17, "miniserver"))


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two empty network namespaces, removed whatever happens."""
    names = (f"{PREFIX}-{os.getpid()}-nla", f"{PREFIX}-{os.getpid()}-nlb")
    try:
        for name in names:
            sh("ip", "netns", "add", name)
        yield names
    finally:
        for name in names:
            sh("ip", "netns", "del", name, check=False)


def nft(ns: str, *args: str, script: str | None = None) -> str:
    """Run nft in a namespace (with a script on stdin if given); its output."""
    command = ["ip", "netns", "exec", ns, "nft", *args, *(["-f", "-"] if script is not None else [])]
    proc = subprocess.run(command, input=script, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def apply_netlink(ns: str, table: str, delete: pinholes.Elements, add: pinholes.Elements,
                  layouts: dict[str, tuple[str, bool]] | None = None) -> str:
    spec = {"table": table, "delete": {k: sorted(v) for k, v in delete.items()},
            "add": {k: sorted(v) for k, v in add.items()}, "layouts": layouts or {}}
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", APPLY], input=json.dumps(spec),
                          capture_output=True, text=True, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    return proc.stdout.strip()


def listed(ns: str, table: str, name: str) -> object:
    """A set as `nft -j list set` shows it, without the handle (which the declaring order decides)."""
    (entry,) = [item["set"] for item in json.loads(nft(ns, "-j", "list", "set", "inet", table, name))["nftables"]
                if "set" in item]
    entry.pop("handle", None)
    return entry


def test_a_netlink_diff_leaves_the_sets_as_nft_leaves_them(namespaces: tuple[str, str]) -> None:
    by_nft, by_netlink = namespaces
    _, before = pinholes.desired(CONFIG, BEFORE)
    _, after = pinholes.desired(CONFIG, AFTER)
    script = ruleset.render(CONFIG, "standalone", elements=before).script
    for ns in namespaces:
        nft(ns, script=script)
    delete, add = pinholes.changes(before, after)
    assert delete and add
    nft(by_nft, script=ruleset.render_element_changes("loxgw", delete, add))
    assert apply_netlink(by_netlink, "loxgw", delete, add) == "applied"
    compared = 0
    for name in firewall.DESIRED_SETS:
        assert listed(by_netlink, "loxgw", name) == listed(by_nft, "loxgw", name), name
        compared += bool(after[name])
    assert compared >= 5  # pin_port4, router_ping4 and the products' address sets all held something
    # And both hold what a fresh declaration of AFTER holds (listed in another order: the order of insertion).
    nft(by_nft, script=ruleset.render(CONFIG, "standalone", elements=after).script)
    for name in firewall.DESIRED_SETS:
        assert elements(listed(by_netlink, "loxgw", name)) == elements(listed(by_nft, "loxgw", name)), name


def elements(entry: object) -> list[str]:
    assert isinstance(entry, dict)
    return sorted(json.dumps(e, sort_keys=True) for e in entry.get("elem", []))


def test_a_refused_batch_changes_nothing_and_names_the_errno(namespaces: tuple[str, str]) -> None:
    ns = namespaces[0]
    _, before = pinholes.desired(CONFIG, BEFORE)
    nft(ns, script=ruleset.render(CONFIG, "standalone", elements=before).script)
    listing = {name: listed(ns, "loxgw", name) for name in firewall.DESIRED_SETS}
    absent = {firewall.PIN_PORT: frozenset({"192.168.20.99 . tcp . 80"})}
    added = {firewall.PIN_PORT: frozenset({"192.168.20.98 . tcp . 80"})}
    assert apply_netlink(ns, "loxgw", absent, added) == "2"  # ENOENT: the delete of what is not there
    assert {name: listed(ns, "loxgw", name) for name in firewall.DESIRED_SETS} == listing
    assert apply_netlink(ns, "nosuchtable", {}, added) == "2"


def test_single_field_intervals_match_nft(namespaces: tuple[str, str]) -> None:
    """No loxgw set is a single-field interval set today; the encoding is held to nft's all the same."""
    declare = "table inet scratch {\n\tset iv {\n\t\ttype inet_service\n\t\tflags interval\n\t}\n}\n"
    for ns in namespaces:
        nft(ns, script=declare)
    first = {"iv": frozenset({"80", "7070-7071", "65000-65535"})}
    then_delete, then_add = {"iv": frozenset({"7070-7071"})}, {"iv": frozenset({"443", "1000-2000"})}
    nft(namespaces[0], script=ruleset.render_element_changes("scratch", {}, first))
    nft(namespaces[0], script=ruleset.render_element_changes("scratch", then_delete, then_add))
    layouts = {"iv": ("inet_service", True)}
    assert apply_netlink(namespaces[1], "scratch", {}, first, layouts) == "applied"
    assert apply_netlink(namespaces[1], "scratch", then_delete, then_add, layouts) == "applied"
    assert listed(namespaces[1], "scratch", "iv") == listed(namespaces[0], "scratch", "iv")
