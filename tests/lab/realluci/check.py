"""Open luci-app-loxgw in a real LuCI (see README.md), fed by a real loxgw in the lab, in headless Chromium.

Run as root from the repo, after build.sh:  .venv/bin/python -m tests.lab.realluci.check OUT
It prints one line per check and leaves screenshots in OUT/shots. Not a pytest module: CI
has no LuCI; tests/lab/test_luci.py runs the same views against the harness there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

from tests.lab.loxgwproc import REPO, Loxgw
from tests.lab.luci_harness import cdp
from tests.lab.netlab import Lab, wait_for
from tests.lab.realluci import stack
from tests.lab.test_luci import (
    BROADCAST,
    BROKEN_CONFIG,
    CELLS_UNLABELLED,
    CLOUD_NAMES,
    NETWORK_CONFIG,
    choose_network,
    status_has,
)

PORT = 8090
WIDTHS = ((1280, 900, False), (390, 844, True))
LAB_EXTRA = """
config device 'ms'
\toption type 'miniserver'
\toption mac '{mac}'
\toption name 'Miniserver Living Room'

config relay
\tlist zone 'iot'
\tlist zone 'lan'

config upnp 'remote'
\toption enabled '1'
\toption device 'ms'
\toption external_port '8443'
"""
# LuCI swaps the view's spinner for what render() returned.
RENDERED = "!!document.querySelector('#view') && !document.querySelector('#view > .spinning') && {marker}"


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


class Check:
    def __init__(self, page: cdp.Page, url: str, shots: str, root: str) -> None:
        self.page, self.url, self.shots, self.root = page, url, shots, root
        self.results: list[tuple[str, str]] = []

    def run(self, name: str, body: Callable[[], None]) -> None:
        self.page.errors.clear()
        try:
            body()
            errors = [e for e in self.page.errors if "favicon" not in e]
            assert errors == [], errors
            self.results.append((name, "ok"))
        except Exception as exc:  # every failure is reported, the next check still runs
            traceback.print_exc()
            self.results.append((name, f"FAILED: {exc}"))
        print(f"{self.results[-1][1]:>8}  {name}", flush=True)

    def login(self) -> None:
        self.page.navigate(self.url + "cgi-bin/luci/")
        self.page.wait_for("!!document.querySelector('input[name=luci_password]')", 10, "the login form")
        self.page.evaluate(f"""document.querySelector('input[name=luci_username]').value = 'root';
            document.querySelector('input[name=luci_password]').value = {json.dumps(stack.PASSWORD)};
            document.querySelector('input[name=luci_password]').form.submit()""")
        self.page.wait_for("!!document.querySelector('a[href$=\"/admin/logout\"]')", 10, "the login to pass")
        # The login form itself arrives with 403; the browser logs that.
        self.page.errors[:] = [e for e in self.page.errors if "status of 403" not in e]

    def open(self, view: str, width: int, height: int, mobile: bool, marker: str) -> None:
        self.page.viewport(width, height, mobile)
        self.page.navigate(f"{self.url}cgi-bin/luci/admin/services/loxgw/{view}")
        self.page.wait_for(RENDERED.format(marker=marker), 15, f"{view} to render")
        self.page.pump(0.3)

    def shot(self, name: str) -> None:
        self.page.screenshot(os.path.join(self.shots, f"{name}.png"))

    def text(self, selector: str) -> str:
        return str(self.page.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"))

    def labelled(self, mobile: bool) -> None:
        assert self.page.evaluate(CELLS_UNLABELLED) == []
        if mobile:
            labels = self.page.evaluate("""
                Array.from(document.querySelectorAll('#view .td[data-title]')).filter(td => td.offsetParent)
                    .map(td => [getComputedStyle(td, '::before').content, td.getAttribute('data-title')])""")
            assert labels and all(content == json.dumps(title) for content, title in labels), labels[:3]


def overview(c: Check) -> None:
    for width, height, mobile in WIDTHS:
        c.open("overview", width, height, mobile, "!!document.querySelector('[data-state]')")
        state = c.page.evaluate("document.querySelector('[data-state]').getAttribute('data-state')")
        assert state == "running", (state, c.text("#view"))
        c.page.wait_for("document.querySelector('#loxgw-devices').innerText.includes('Remote Connect')", 15,
                        "cloud functions from the DNS allowances")
        devices = c.text("#loxgw-devices")
        for expected in ("Miniserver Living Room", "192.168.20.10", "iot", "reachable", "updates", "weather"):
            assert expected in devices, (expected, devices)
        problems = c.text("#loxgw-problems")
        assert 'UPnP mapping "remote"' in problems, problems
        c.page.evaluate("document.querySelectorAll('#loxgw-details details').forEach(d => d.open = true)")
        c.page.wait_for("document.querySelector('[data-details=dns]').innerText.includes('loxonecloud.com')",
                        10, "the DNS allowances table")
        details = c.text("#loxgw-details")
        assert "Firewall updates: time in the kernel" in details and "Pass kernel us" not in details
        c.labelled(mobile)
        c.shot(f"overview-{width}")


def menu(c: Check) -> None:
    c.open("overview", 1280, 900, False, "!!document.querySelector('[data-state]')")
    entries = c.page.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.textContent.trim())")
    for title in ("Loxone gateway", "Overview", "Settings"):
        assert title in entries, entries


def controls(c: Check) -> None:
    c.open("overview", 1280, 900, False, "!!document.querySelector('[data-state]')")
    log = os.path.join(c.root, "tmp", "loxgw-init.log")
    c.page.evaluate("document.querySelector('button[data-action=restart]').click()")
    c.page.pump(0.5)
    if c.page.evaluate("!!document.querySelector('.modal .cbi-button-negative, .modal .cbi-button-action')"):
        c.page.evaluate("(document.querySelector('.modal .cbi-button-negative')"
                        " || document.querySelector('.modal .cbi-button-action')).click()")
    wait_for(lambda: "restart" in read(log), 10,
             "rpcd's rc to run /etc/init.d/loxgw restart")


def settings(c: Check) -> None:
    for width, height, mobile in WIDTHS:
        c.open("settings", width, height, mobile, "!!document.querySelector('.cbi-map')")
        view = c.text("#view")
        for title in ("General", "Zones", "Devices", "Discovery relay", "Remote access (UPnP)"):
            assert title in view, (title, view[:500])
        assert "Loxone devices" in c.text("#cbi-loxgw-zone") and "Miniserver" in c.text("#cbi-loxgw-device")
        assert c.page.evaluate("!!document.querySelector('[data-check=invalid]')") is False
        c.labelled(mobile)
        c.shot(f"settings-{width}")


def settings_save(c: Check) -> None:
    page = c.page
    config = os.path.join(c.root, "etc", "config", "loxgw")
    c.open("settings", 1280, 900, False, "!!document.querySelector('.cbi-map')")
    page.evaluate("document.querySelector('#cbi-loxgw-iot .cbi-button-edit').click()")
    page.wait_for("document.body.classList.contains('modal-overlay-active')", 5, "the zone dialog")
    field = "document.getElementById('widget.cbid.loxgw.iot.interface')"
    page.evaluate(f"{field}.value = 'bad name!'; {field}.dispatchEvent(new Event('keyup'))")
    assert page.evaluate(f"{field}.classList.contains('cbi-input-invalid')")
    c.shot("settings-invalid-interface")
    page.evaluate(f"{field}.value = ''; {field}.dispatchEvent(new Event('keyup'))")
    choose_network(page, "iot")
    page.evaluate("document.querySelector('.modal .cbi-button-positive').click()")
    page.wait_for("!document.body.classList.contains('modal-overlay-active')", 5, "the dialog to close")
    page.evaluate("document.querySelector('.cbi-page-actions .cbi-button-apply').click()")
    wait_for(lambda: "list network 'iot'" in read(config), 30,
             "the change committed to the root's /etc/config/loxgw")
    c.shot("settings-applying")
    saved = read(config)
    assert "list interface 'br-iot'" in saved, saved
    check = subprocess.run([sys.executable, "-m", "loxgw", "-c", config, "check"],
                           capture_output=True, text=True, cwd=REPO, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    events = os.path.join(c.root, "tmp", "service-events.log")
    wait_for(lambda: "loxgw" in read(events), 30,
             "rpcd to tell procd that the loxgw config changed")
    page.pump(6)  # LuCI confirms the apply and reloads the page
    c.shot("settings-after-apply")


def settings_invalid(c: Check) -> None:
    config = os.path.join(c.root, "etc", "config", "loxgw")
    good = read(config)
    try:
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(BROKEN_CONFIG)
        c.open("settings", 390, 844, True, "!!document.querySelector('.cbi-map')")
        c.page.wait_for("!!document.querySelector('[data-check=invalid]')", 10, "loxgw check's messages")
        notice = c.text("[data-check=invalid]")
        assert f"{config}:2:" in notice and "bogus" in notice, notice
        c.shot("settings-invalid-config-390")
        c.open("overview", 390, 844, True, "!!document.querySelector('[data-state]')")
        c.shot("overview-invalid-config-390")
    finally:
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(good)


def stopped(c: Check, gw: Loxgw) -> None:
    gw.stop()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.splitext(gw.socket)[0] + ".json")
    c.open("overview", 390, 844, True, "!!document.querySelector('[data-state]')")
    state = c.page.evaluate("document.querySelector('[data-state]').getAttribute('data-state')")
    assert state == "stopped", (state, c.text("#view"))
    c.shot("overview-stopped-390")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="build.sh's OUT directory (its root/ is used and changed)")
    parser.add_argument("--hold", type=float, default=0, help="keep the stack up this many seconds afterwards")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    out = os.path.abspath(args.out)
    root, shots = os.path.join(out, "root"), os.path.join(out, "shots")
    shutil.rmtree(shots, ignore_errors=True)
    os.makedirs(shots)
    with Lab() as lab:
        ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
        odd = lab.add_host("odd", "iot", 11, mac="50:4f:94:c0:00:03")
        phone = lab.add_host("phone", "lan", 20)
        gw = Loxgw(lab, extra=LAB_EXTRA.format(mac=ms.mac), main_extra="\toption probe_interval '1'\n").start()
        for host in (ms, odd):
            lab.run(host.ns, "ping", "-c1", "-W1", "192.168.20.1")
        for name in CLOUD_NAMES:
            lab.run(ms.ns, sys.executable, "-c", f"import socket; socket.gethostbyname({name!r})")
        lab.run(phone.ns, sys.executable, "-c", BROADCAST)
        status_file = os.path.splitext(gw.socket)[0] + ".json"
        wait_for(lambda: status_has(status_file, lambda s: len(s["devices"]) == 2), 12, "both devices")
        with open(gw.config_path, encoding="utf-8") as handle:
            config = handle.read()
        stack.prepare(root, loxgw_config=config, network_config=NETWORK_CONFIG, status_file=status_file, port=PORT)
        with stack.running(root, lab_dir=lab.workdir, port=PORT, log_path=os.path.join(out, "stack.log")) as url, \
                cdp.browser() as page:
            print(f"LuCI at {url} (root / {stack.PASSWORD}); screenshots in {shots}", flush=True)
            c = Check(page, url, shots, root)
            c.run("log in", c.login)
            c.run("menu entries", lambda: menu(c))
            c.run("overview at 1280 and 390 px", lambda: overview(c))
            c.run("settings at 1280 and 390 px", lambda: settings(c))
            c.run("settings: validation, save and apply", lambda: settings_save(c))
            c.run("settings: loxgw check's messages", lambda: settings_invalid(c))
            c.run("overview: restart through rpcd's rc", lambda: controls(c))
            if args.hold:
                time.sleep(args.hold)
            c.run("overview: loxgw stopped", lambda: stopped(c, gw))
    failed = [name for name, result in c.results if result != "ok"]
    print(f"{len(c.results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

