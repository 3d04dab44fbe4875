"""The daemon skeleton in a real lab: ruleset, standalone policy, status, SIGHUP, SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.loxgwproc import REPO, Loxgw
from tests.lab.netlab import Lab, wait_for


def tcp_ok(lab: Lab, ns: str, addr: str, port: int, timeout: float = 0.5) -> bool:
    proc = lab.run(ns, sys.executable, "-m", "tests.lab.peer", "connect-tcp", addr, str(port),
                   str(timeout), check=False)
    return proc.returncode == 0


def start_listener(lab: Lab, ns: str, addr: str, *ports: int) -> None:
    import subprocess

    proc = lab.popen(ns, [sys.executable, "-m", "tests.lab.peer", "listen-tcp", addr,
                          *map(str, ports)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"


def table_exists(lab: Lab, table: str = "loxgw") -> bool:
    return lab.run(lab.ns_router, "nft", "list", "table", "inet", table, check=False).returncode == 0


def test_render_is_loadable_by_nft(lab: Lab) -> None:
    gw = Loxgw(lab)
    script = gw.cli("render").stdout
    checked = lab.run(lab.ns_router, "sh", "-c", f"printf '%s' '{script}' | nft -c -f -",
                      check=False)
    assert checked.returncode == 0, checked.stderr
    assert not table_exists(lab)  # -c checks only


def test_native_queue_ruleset_is_loadable_but_for_the_queue_expression(lab: Lab) -> None:
    """The OpenWrt (native nft) DNS chains, copies and hold chain included, in both firewall modes."""
    gw = Loxgw(lab)
    for firewall in ("standalone", "fw4"):
        script = gw.cli("render", "--queue", "nft", "--firewall", firewall).stdout
        assert "log prefix" in script and "queue num" in script and "chain hold" in script
        # This kernel has no nft queue expression (OpenWrt has it): check everything else.
        script = re.sub(r"queue num \d+ bypass", "accept", script)
        checked = subprocess.run(["ip", "netns", "exec", lab.ns_router, "nft", "-c", "-f", "-"], input=script,
                                 capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr


def test_standalone_policy_and_lifecycle(lab: Lab) -> None:
    # Not a Loxone MAC: this test is about the policy without pinholes.
    ms = lab.add_host("ms", "iot", 10, mac="02:00:00:a0:00:01")
    phone = lab.add_host("phone", "lan", 20)
    start_listener(lab, lab.ns_wan, "203.0.113.80", 80)
    start_listener(lab, ms.ns, ms.ip, 443)
    # Without loxgw everything is open.
    assert tcp_ok(lab, ms.ns, "203.0.113.80", 80)
    assert tcp_ok(lab, phone.ns, ms.ip, 443)

    gw = Loxgw(lab).start()
    assert table_exists(lab)
    # Devices zone to the internet, clients into the devices zone: dropped (nothing allowed yet).
    assert not tcp_ok(lab, ms.ns, "203.0.113.80", 80)
    assert not tcp_ok(lab, phone.ns, ms.ip, 443)
    # Other traffic is left alone, and so is traffic within one VLAN (bridged; this machine has
    # br_netfilter, which shows bridged packets to the forward hook).
    assert tcp_ok(lab, phone.ns, "203.0.113.80", 80)
    neighbour = lab.add_host("neighbour", "iot", 11)
    start_listener(lab, neighbour.ns, neighbour.ip, 8081)
    assert tcp_ok(lab, ms.ns, neighbour.ip, 8081)
    # The router's resolver still answers the devices zone (input, not forward).
    resolved = lab.run(ms.ns, sys.executable, "-c",
                       "import socket; print(socket.gethostbyname('a7.remcov3.loxonecloud.com'))")
    assert resolved.stdout.strip() == "203.0.113.7"

    status = gw.status()
    assert (status["firewall"], status["installed"], status["table"]) == (
        "standalone", True, "loxgw",
    )
    assert [z["name"] for z in status["zones"]] == ["iot", "lan"]
    human = gw.cli("status").stdout
    assert "firewall: standalone (table inet loxgw" in human

    # An invalid config on SIGHUP is refused, the running one kept.
    with open(gw.config_path, "a", encoding="utf-8") as handle:
        handle.write("\nconfig zone 'broken'\n\toption role 'sideways'\n")
    gw.signal(signal.SIGHUP)
    wait_for(lambda: gw.status()["counters"].get("reloads_rejected") == 1, 5, "rejected reload")
    assert table_exists(lab)
    assert "reload rejected" in gw.log()

    # A valid new config is applied: move lan out of clients, so the phone gets through.
    gw.write_config()
    with open(gw.config_path, encoding="utf-8") as handle:
        text = handle.read()
    with open(gw.config_path, "w", encoding="utf-8") as handle:
        handle.write(text.replace("config zone 'lan'\n\toption role 'clients'\n\tlist interface 'br-lan'",
                                  "config zone 'lan'\n\toption role 'clients'\n\tlist interface 'br-other'"))
    gw.signal(signal.SIGHUP)
    wait_for(lambda: gw.status()["counters"].get("reloads") == 1, 5, "reload")
    assert tcp_ok(lab, phone.ns, ms.ip, 443)

    # Someone deletes the table: it is back within a second.
    lab.run(lab.ns_router, "nft", "delete", "table", "inet", "loxgw")
    started = time.monotonic()
    wait_for(lambda: table_exists(lab), 1.5, "table restore")
    assert time.monotonic() - started < 1.0
    assert not tcp_ok(lab, ms.ns, "203.0.113.80", 80)

    # SIGTERM: exit 0, nothing of loxgw left in the kernel.
    assert gw.stop() == 0
    assert not table_exists(lab)
    assert tcp_ok(lab, ms.ns, "203.0.113.80", 80)
    assert gw.cli("status", check=False).returncode == 1


# The daemon's command with one change: asyncio's loop-making signals the process first (SIGTERM, or the
# signal named in LAB_SIGNAL), so the signal lands exactly where the timed test below found a SIGTERM once
# in CI (a half-built loop, "never awaited").
SIGNAL_WHILE_THE_LOOP_IS_MADE = """
import asyncio.events, os, signal, sys
make = asyncio.events.new_event_loop
def signalled_then_made():
    os.kill(os.getpid(), getattr(signal, os.environ.get("LAB_SIGNAL", "SIGTERM")))
    return make()
asyncio.events.new_event_loop = signalled_then_made
from loxgw.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_asyncio_makes_the_loop_is_a_clean_stop(lab: Lab) -> None:
    """Before the daemon's loop has its own handlers, a stop is remembered, not raised inside asyncio:
    exit 0, no traceback or unawaited coroutine, and the declaration begun is taken back."""
    gw = Loxgw(lab)
    done = lab.run(lab.ns_router, "env", f"PYTHONPATH={REPO}", sys.executable, "-c", SIGNAL_WHILE_THE_LOOP_IS_MADE,
                   "-c", gw.config_path, "run", check=False, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "never awaited" not in done.stderr, done.stderr
    assert not table_exists(lab)
    assert "LOXGW" not in lab.run(lab.ns_router, "iptables-nft-save", "-t", "mangle").stdout


def test_sighup_during_start_up_is_one_reload_once_running_not_an_end(lab: Lab) -> None:
    """procd sends SIGHUP when a zone's network comes up, as at boot while loxgw starts. Its default action
    ended the daemon with its table in the kernel; now the daemon runs on and reloads once running."""
    gw = Loxgw(lab)
    with open(gw.log_path, "ab") as log:
        gw.proc = lab.popen(lab.ns_router, ["env", f"PYTHONPATH={REPO}", "LAB_SIGNAL=SIGHUP", sys.executable,
                                            "-c", SIGNAL_WHILE_THE_LOOP_IS_MADE, "-c", gw.config_path, "run"],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: gw.proc is not None and (gw.proc.poll() is not None or Path(gw.socket).exists()), 10,
             "the status socket")
    assert gw.proc.poll() is None, gw.log()
    wait_for(lambda: gw.status()["counters"].get("reloads") == 1, 10, "the reload after start-up")
    assert gw.stop() == 0
    assert not table_exists(lab)
    assert "Traceback" not in gw.log()


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08])
def test_sigterm_during_start_up_leaves_nothing_in_the_kernel(lab: Lab, delay: float) -> None:
    """Stopped moments after its table appeared (the declaration begun, services starting or not yet):
    exit 0 (not a hang: a signal handler that raised inside an event-loop callback once left a waiter
    unresolved, about one start in fifty), and neither the table, the relay's netdev table nor the
    xtables DNS rules stay. Three starts per delay."""
    relay = "\nconfig relay\n\tlist zone 'iot'\n\tlist zone 'lan'\n"
    for attempt in range(3):
        gw = Loxgw(lab, extra=relay, name=f"loxgw{attempt}").launch()
        assert gw.proc is not None
        wait_for(lambda: table_exists(lab), 10, "the first declaration", interval=0.002)
        time.sleep(delay)
        gw.proc.send_signal(signal.SIGTERM)
        try:
            code = gw.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            pytest.fail(f"loxgw did not stop within 20 s of SIGTERM:\n{gw.log()}")
        assert code == 0, gw.log()
        assert "Traceback" not in gw.log()  # every service closed cleanly, however far it had started
        tables = lab.run(lab.ns_router, "nft", "list", "tables").stdout
        assert "loxgw" not in tables, (tables, gw.log())
        mangle = lab.run(lab.ns_router, "iptables-nft-save", "-t", "mangle").stdout
        assert "LOXGW" not in mangle, mangle


def test_golden_rulesets_load(lab: Lab) -> None:
    """Every pinned ruleset (tests/unit/core/golden) passes the kernel's check, queue statements aside."""
    golden = sorted((Path(REPO) / "tests" / "unit" / "core" / "golden").glob("*.nft"))
    assert len(golden) == 12
    for path in golden:
        # This kernel has no nft queue expression (OpenWrt has it): check everything else.
        script = re.sub(r"queue num \d+ bypass", "accept", path.read_text(encoding="utf-8"))
        checked = subprocess.run(["ip", "netns", "exec", lab.ns_router, "nft", "-c", "-f", "-"], input=script,
                                 capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"{path.name}: {checked.stderr}"


def test_a_declaration_without_dns_hold_auto_removes_its_buckets(lab: Lab) -> None:
    """`flush table` keeps sets and named limits: switching away from `auto` deletes its buckets, and a
    declaration that never had them loads all the same (declared, then deleted)."""
    golden = Path(REPO) / "tests" / "unit" / "core" / "golden"

    def load(name: str) -> str:
        script = re.sub(r"queue num \d+ bypass", "accept", (golden / name).read_text(encoding="utf-8"))
        loaded = subprocess.run(["ip", "netns", "exec", lab.ns_router, "nft", "-f", "-"], input=script,
                                capture_output=True, text=True, check=False)
        assert loaded.returncode == 0, f"{name}: {loaded.stderr}"
        return lab.run(lab.ns_router, "nft", "list", "table", "inet", "loxgw").stdout

    try:
        assert "dns_held_answers" not in load("lab-standalone-nft-connection.nft")
        auto = load("lab-standalone-nft-auto.nft")
        assert all(f"{kind} {name} {{" in auto for kind, name in (
            ("set", "dns_held_answers4"), ("set", "dns_held_answers6"), ("limit", "dns_held_answers"))), auto
        assert "update @dns_held_answers4" in auto
        assert "dns_held_answers" not in load("lab-standalone-nft-answer.nft")
    finally:
        lab.run(lab.ns_router, "nft", "delete", "table", "inet", "loxgw", check=False)
