"""The LuCI app in headless Chromium, fed by a real loxgw in the lab through the app's plugin logic.

The overview and the settings page are rendered by tests/lab/luci_harness (LuCI's
runtime calls the views use, from LuCI's documented API) at 1280 and 390 px. The
ubus endpoint answers `luci.loxgw` with the rpcd plugin's own logic module
(luci.uc, run by node) over the status file a real daemon writes, `loxgw check` and
`loxgw status --full` from the real CLI, and `uci` from a copy of the lab's config.
Every page must load without a console error; every table cell must carry its
mobile label; device-supplied text must stay text. Screenshots go to a temporary
directory (loxgw-luci-shots-*), whose path the run prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.lab.loxgwproc import REPO, Loxgw
from tests.lab.luci_harness import cdp
from tests.lab.luci_harness.server import HarnessServer, HttpFault, Reply, RpcFault, UcodeModule
from tests.lab.luci_harness.ucistore import UciStore
from tests.lab.netlab import Lab, wait_for

pytestmark = [
    pytest.mark.skipif(not os.access(cdp.CHROMIUM, os.X_OK),
                       reason=f"needs Debian's chromium ({cdp.CHROMIUM}): the Makefile's APT_PACKAGES should list it"),
    pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the rpcd plugin's logic module"),
]

PAYLOAD = "<img src=x onerror=window.__xss=1>"
WIDTHS = ((1280, 900, False), (390, 844, True))
CLOUD_NAMES = ("a7.remcov3.loxonecloud.com", "connect.loxonecloud.com", "x1.dyndns.loxonecloud.com",
               "weather.loxone.com", "update.loxone.com")

NETWORK_CONFIG = """
config interface 'loopback'
\toption device 'lo'
\toption proto 'static'

config interface 'lan'
\toption device 'br-lan'
\toption proto 'static'

config interface 'iot'
\toption device 'br-iot'
\toption proto 'static'

config interface 'guest'
\toption device 'br-guest'
\toption proto 'static'

config interface 'wan'
\toption device 'eth1'
\toption proto 'dhcp'
"""

# What netifd would report for the lab's two VLANs (the plugin maps device addresses to them).
INTERFACES = [
    {"interface": "lan", "l3_device": "br-lan", "up": True, "ipv4-address": [{"address": "192.168.10.1", "mask": 24}]},
    {"interface": "iot", "l3_device": "br-iot", "up": True, "ipv4-address": [{"address": "192.168.20.1", "mask": 24}]},
]

BROADCAST = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.sendto(b"\\x00", ("192.168.10.255", 7070))
"""

BROKEN_CONFIG = """config loxgw 'main'
\toption firewall 'bogus'

config zone 'iot'
\toption role 'devices'
"""

# Messages each failed-call scenario must show, in words.
FAILURES = {
    "denied": "Access denied",
    "ubus6": "Access denied (code 6)",
    "timeout": "Timed out (code 7)",
    "noplugin": "no luci.loxgw plugin loaded (object not found)",
    "oldplugin": "no luci.loxgw plugin loaded (code 3)",
    "http500": "HTTP error 500",
}


@dataclass
class Backend:
    """The ubus objects behind the harness: luci.loxgw (plugin logic over the lab daemon) and uci."""

    gw: Loxgw
    ucode: UcodeModule
    store: UciStore
    status_file: str
    check_config: str
    scenario: str = "running"
    mutate: Callable[[dict[str, Any]], None] | None = None
    mutate_dns: Callable[[list[dict[str, Any]]], None] | None = None
    replies: dict[str, int] = field(default_factory=dict)  # method -> size of the last answer (bytes of JSON)
    controls: list[str] = field(default_factory=list)

    def __call__(self, obj: str, method: str, args: dict[str, Any]) -> Reply:
        if obj == "uci":
            return self.store.handle(method, args)
        if obj != "luci.loxgw":
            raise RpcFault(-32000, "Object not found")
        if method != "check":
            self.fail_if_asked()
        reply: Reply = getattr(self, method)(args)
        self.replies[method] = len(json.dumps(reply.data))
        return reply

    def fail_if_asked(self) -> None:
        if self.scenario == "denied":
            raise RpcFault(-32002, "Access denied")
        if self.scenario == "noplugin":  # uhttpd looks the object up first, as in real LuCI
            raise RpcFault(-32000, "Object not found")
        if self.scenario == "http500":
            raise HttpFault(500)

    def status(self, args: dict[str, Any]) -> Reply:
        codes = {"ubus6": 6, "timeout": 7, "oldplugin": 3}
        if self.scenario in codes:
            return Reply(code=codes[self.scenario])
        with open(self.status_file, encoding="utf-8") as handle:
            status = json.load(handle)
        now = time.time()
        service: dict[str, Any] = {"loxgw": {"instances": {"loxgw": {"running": True, "pid": status["pid"]}}}}
        text: str | None = None
        if self.scenario == "stopped":
            service = {}
        elif self.scenario == "crashed":
            service = {"loxgw": {"instances": {"loxgw": {"running": False, "exit_code": 1}}}}
        else:
            if self.scenario == "stale":
                status["written_at"] = now - 60
            if self.mutate:
                self.mutate(status)
            text = json.dumps(status)
        result = self.ucode.call("overview", {
            "now": now, "file": self.status_file, "text": text, "read_error": None, "service": service,
            "enabled": "1", "interfaces": INTERFACES})
        if self.scenario == "fw4-include-missing":
            # What the plugin adds in fw4 mode when fw4's chains lack loxgw's include rule.
            result["status"]["firewall"], result["fw4_include"] = "fw4", False
        return Reply(result)

    def dns(self, args: dict[str, Any]) -> Reply:
        full = self.gw.status()
        entries = full["dns_entries"]
        if self.mutate_dns:
            self.mutate_dns(entries)
        result = self.ucode.call("dnsGroups", entries)
        result["now"] = time.time()
        return Reply(result)

    def check(self, args: dict[str, Any]) -> Reply:
        proc = subprocess.run([sys.executable, "-m", "loxgw", "-c", self.check_config, "check"],
                              capture_output=True, text=True, cwd=REPO, check=False)
        return Reply(self.ucode.call("checkReport", proc.stdout + proc.stderr, proc.returncode))

    def control(self, args: dict[str, Any]) -> Reply:
        self.controls.append(args.get("action", ""))
        return Reply({"action": args.get("action"), "code": 0})


@dataclass
class Env:
    lab: Lab
    backend: Backend
    server: HarnessServer
    page: cdp.Page
    shots: str
    config_copy: str

    def open(self, view: str, width: int, height: int, mobile: bool) -> None:
        self.page.errors.clear()
        self.page.dialogs.clear()
        self.page.viewport(width, height, mobile)
        self.page.navigate(self.server.page(view))
        self.page.wait_for("window.__harness && window.__harness.rendered", 10, f"{view} to render")

    def shot(self, name: str) -> None:
        self.page.screenshot(os.path.join(self.shots, f"{name}.png"))


def status_has(path: str, predicate: Callable[[dict[str, Any]], bool]) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return predicate(json.load(handle))
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    shots = tempfile.mkdtemp(prefix="loxgw-luci-shots-")
    with Lab() as lab:
        ms = lab.add_host("ms", "iot", 10, mac="50:4f:94:a0:00:01")
        odd = lab.add_host("odd", "iot", 11, mac="50:4f:94:c0:00:03")  # Loxone OUI, product unknown
        phone = lab.add_host("phone", "lan", 20)
        extra = f"""
config device 'ms'
\toption type 'miniserver'
\toption mac '{ms.mac}'
\toption name 'Miniserver Living Room'

config relay
\tlist zone 'iot'
\tlist zone 'lan'

config upnp 'remote'
\toption enabled '1'
\toption device 'ms'
\toption external_port '8443'
"""
        gw = Loxgw(lab, extra=extra, main_extra="\toption probe_interval '1'\n").start()
        for host in (ms, odd):
            lab.run(host.ns, "ping", "-c1", "-W1", "192.168.20.1")
        for name in CLOUD_NAMES:
            lab.run(ms.ns, sys.executable, "-c", f"import socket; socket.gethostbyname({name!r})")
        # The App's discovery broadcast, for the relay's counters.
        lab.run(phone.ns, sys.executable, "-c", BROADCAST)
        status_file = os.path.splitext(gw.socket)[0] + ".json"
        wait_for(lambda: status_has(status_file, lambda s: len(s["devices"]) == 2 and any(
            d["dns_entry_count"] for d in s["devices"]) and "br-iot:7070:relayed" in s["relay"]["counters"]),
            12, "a status file with both devices, DNS entries and a relayed broadcast")

        config_copy = lab.path("luci-loxgw.config")
        shutil.copy(gw.config_path, config_copy)
        network = lab.path("luci-network.config")
        with open(network, "w", encoding="utf-8") as handle:
            handle.write(NETWORK_CONFIG)
        ucode = UcodeModule()
        backend = Backend(gw, ucode, UciStore({"loxgw": config_copy, "network": network}), status_file,
                          check_config=config_copy)
        try:
            with HarnessServer(backend) as server, cdp.browser() as page:
                yield Env(lab, backend, server, page, shots, config_copy)
        finally:
            ucode.close()
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            capture = request.config.pluginmanager.get_plugin("capturemanager")
            if reporter is not None and capture is not None:
                with capture.global_and_fixture_disabled():
                    reporter.write_line(f"\nLuCI screenshots: {shots}")


# LuCI's own cells need no label: row actions, the placeholder of an empty table, and the
# section name a named TableSection puts first in each row (on phones a full-width heading).
CELLS_UNLABELLED = """
Array.from(document.querySelectorAll('#view .td')).filter(td =>
    !td.closest('.cbi-section-actions') && !td.closest('.placeholder') && !td.classList.contains('cbi-section-actions')
    && !td.classList.contains('cbi-section-table-titles')
    && !(td.getAttribute('data-title') || '').trim()).map(td => td.outerHTML.slice(0, 120))
"""


def assert_labelled(env: Env, mobile: bool) -> None:
    page = env.page
    assert page.evaluate("document.querySelectorAll('#view .td').length") > 0
    assert page.evaluate(CELLS_UNLABELLED) == []
    if mobile:
        # The theme's narrow layout: no header row, each cell shows its label before its value.
        assert page.evaluate("""
            Array.from(document.querySelectorAll('#view .tr.table-titles, #view .tr.cbi-section-table-titles'))
                .every(tr => getComputedStyle(tr).display == 'none')""")
        labels = page.evaluate("""
            Array.from(document.querySelectorAll('#view .td[data-title]')).filter(td => td.offsetParent)
                .map(td => [getComputedStyle(td, '::before').content, td.getAttribute('data-title')])""")
        assert labels and all(content == json.dumps(title) for content, title in labels), labels[:3]


def text_of(env: Env, selector: str) -> str:
    return str(env.page.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"))


def test_overview_shows_devices_functions_and_problems_at_both_widths(env: Env) -> None:
    env.backend.scenario = "running"
    for width, height, mobile in WIDTHS:
        env.open("loxgw/overview", width, height, mobile)
        page = env.page
        assert page.evaluate("document.querySelector('[data-state]').getAttribute('data-state')") == "running"
        assert "loxgw 0.1.0 is running" in text_of(env, "#loxgw-overview")
        # The DNS details arrive after the first render; the Cloud column then names the functions.
        page.wait_for("document.querySelector('#loxgw-devices').innerText.includes('Remote Connect')", 10,
                      "cloud functions from the DNS allowances")
        devices = text_of(env, "#loxgw-devices")
        for expected in ("Miniserver Living Room", "192.168.20.10", "iot", "reachable", "relayed to br-lan",
                         "updates", "weather", "Loxone device, product unknown"):
            assert expected in devices, expected
        problems = text_of(env, "#loxgw-problems")
        assert 'UPnP mapping "remote"' in problems and "failure" in problems
        assert "unknown product" in problems
        # Open every detail section: DNS grouped per device, relay counters in words.
        page.evaluate("document.querySelectorAll('#loxgw-details details').forEach(d => d.open = true)")
        page.wait_for("document.querySelector('[data-details=dns]').innerText.includes('a7.remcov3.loxonecloud.com')",
                      5, "the DNS allowances table")
        details = text_of(env, "#loxgw-details")
        assert "Miniserver Living Room (192.168.20.10)" in details and "tcp 22" in details
        assert "relayed between br-iot, br-lan" in details
        # Counters in words, the firewall's timing ones too (not "Pass kernel us").
        assert "Firewall updates: time in the kernel" in details and "Pass kernel us" not in details
        relay = page.evaluate("""Array.from(document.querySelectorAll('[data-details=relay] .td'))
            .map(td => td.getAttribute('data-title') + '=' + td.textContent)""")
        assert "Interface=br-lan" in relay and "Received=1" in relay and "Relayed=1" in relay, relay
        assert_labelled(env, mobile)
        assert page.errors == []
        env.shot(f"overview-{width}")
    # The poll is a file read: the status answer stays small.
    assert 0 < env.backend.replies["status"] < 50_000


def test_device_supplied_markup_renders_as_text(env: Env) -> None:
    def hostile(status: dict[str, Any]) -> None:
        status["devices"][0]["name"] = PAYLOAD
        status["devices"].append(dict(status["devices"][0], ip="192.168.20.99", present=False, name=PAYLOAD + " gone"))
        status["upnp"][0].update(state="failed", last_error=PAYLOAD)
        status["last_error"] = PAYLOAD
        status["failures"] = {PAYLOAD: 3}
        status["relay"]["counters"][f"{PAYLOAD}:7070:received"] = 1
        status["counters"][PAYLOAD] = 1

    def hostile_dns(entries: list[dict[str, Any]]) -> None:
        entries.append({"device": "192.168.20.10", "name": PAYLOAD, "address": PAYLOAD, "proto": "tcp",
                        "ports": "443", "expires_in": 60})

    env.backend.scenario = "running"
    env.backend.mutate, env.backend.mutate_dns = hostile, hostile_dns
    try:
        env.open("loxgw/overview", 1280, 900, False)
        page = env.page
        page.evaluate("document.querySelectorAll('#loxgw-details details').forEach(d => d.open = true)")
        page.wait_for(f"document.querySelector('[data-details=dns]').innerText.includes({json.dumps(PAYLOAD)})", 10,
                      "the hostile DNS name")
        page.pump(0.5)
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert page.evaluate("document.querySelectorAll('#view img').length") == 0
        shown = page.evaluate(f"document.getElementById('view').textContent.split({json.dumps(PAYLOAD)}).length - 1")
        assert shown >= 8
        assert not [h for h in page.evaluate("window.__harness.html") if "<img" in h]
        assert page.errors == []
        env.shot("overview-hostile-names")
    finally:
        env.backend.mutate = env.backend.mutate_dns = None


def test_not_running_states_say_why_and_offer_a_start(env: Env) -> None:
    with open(env.config_copy, encoding="utf-8") as handle:
        good = handle.read()
    try:
        with open(env.config_copy, "w", encoding="utf-8") as handle:
            handle.write(BROKEN_CONFIG)
        env.backend.scenario = "stopped"
        env.open("loxgw/overview", 390, 844, True)
        page = env.page
        assert page.evaluate("document.querySelector('[data-state]').getAttribute('data-state')") == "stopped"
        page.wait_for("!!document.querySelector('[data-check=invalid]')", 10, "the loxgw check messages")
        check = text_of(env, "[data-check=invalid]")
        assert f"{env.config_copy}:2:" in check and "bogus" in check
        page.evaluate("document.querySelector('button[data-action=start]').click()")
        wait_for(lambda: env.backend.controls[-1:] == ["start"], 5, "the start request")
        assert_labelled_or_empty(env)
        assert page.errors == []
        env.shot("overview-stopped-390")
    finally:
        with open(env.config_copy, "w", encoding="utf-8") as handle:
            handle.write(good)

    for scenario, state, words in (("crashed", "crashed", "exit code 1"), ("stale", "stale", "may hang")):
        env.backend.scenario = scenario
        env.open("loxgw/overview", 390, 844, True)
        assert env.page.evaluate("document.querySelector('[data-state]').getAttribute('data-state')") == state
        assert words in text_of(env, "[data-state]")
        assert env.page.errors == []
    env.backend.scenario = "running"


def assert_labelled_or_empty(env: Env) -> None:
    assert env.page.evaluate(CELLS_UNLABELLED) == []


def test_fw4_without_loxgws_include_is_a_problem(env: Env) -> None:
    env.backend.scenario = "fw4-include-missing"
    try:
        env.open("loxgw/overview", 1280, 900, False)
        assert "fw4 has not loaded loxgw's rules" in text_of(env, "#loxgw-problems")
        assert env.page.errors == []
    finally:
        env.backend.scenario = "running"


def test_failed_calls_show_their_reason(env: Env) -> None:
    try:
        for scenario, words in FAILURES.items():
            env.backend.scenario = scenario
            env.open("loxgw/overview", 390, 844, True)
            page = env.page
            assert page.evaluate("document.querySelector('[data-state]').getAttribute('data-state')") == "failed"
            message = text_of(env, "[data-state=failed]")
            assert "could not be read" in message and words in message, (scenario, message)
            assert "undefined" not in message
            # The browser logs the HTTP 500 itself; nothing else may complain.
            errors = [e for e in page.errors if not (scenario == "http500" and "status of 500" in e)]
            assert errors == [], (scenario, errors)
            env.shot(f"overview-failed-{scenario}")
    finally:
        env.backend.scenario = "running"


def choose_network(page: cdp.Page, name: str) -> None:
    """Tick a network in the zone dialog's NetworkSelect (LuCI's ui.Dropdown) as a user does: open, pick, close."""
    dropdown = "document.querySelector('.modal #cbi-loxgw-iot-network .cbi-dropdown')"
    page.evaluate(f"{dropdown}.click()")
    page.evaluate(f"{dropdown}.querySelector('li[data-value={name}]').click()")
    page.evaluate(f"{dropdown}.querySelector('span.open').click()")
    assert page.evaluate(f"{dropdown}.querySelector('li[data-value={name}]').hasAttribute('selected')")


# The fields of the single-section forms, each with its label (section type -> option -> label).
SINGLE_SECTION_FIELDS = {
    "knx": {"enabled": "Enabled", "zone": "Zones", "ttl": "TTL of the copies",
            "rate_limit": "Rate per sender (telegrams/s)"},
    "reflector": {"enabled": "Enabled", "mdns": "mDNS", "ssdp": "SSDP", "allow_host": "Other hosts",
                  "rate_limit": "Rate per sender (datagrams/s)"},
}


def section_id(env: Env, section_type: str) -> str:
    return str(env.page.evaluate(
        f"document.querySelector('#cbi-loxgw-{section_type} .cbi-section-node').getAttribute('data-section-id')"))


def toggle_choice(page: cdp.Page, dropdown: str, name: str) -> None:
    """Toggle one item of a LuCI ui.Dropdown (a MultiValue) as a user does: open, pick, close."""
    page.evaluate(f"{dropdown}.click()")
    page.evaluate(f"{dropdown}.querySelector('li[data-value={name}]').click()")
    page.evaluate(f"{dropdown}.querySelector('span.open').click()")


def saved_sections(path: str, section_type: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [block for block in handle.read().split("\n\n") if block.startswith(f"config {section_type}")]


def test_settings_page_has_the_knx_and_reflector_sections(env: Env) -> None:
    env.backend.scenario = "running"
    for width, height, mobile in WIDTHS:
        env.open("loxgw/settings", width, height, mobile)
        page = env.page
        assert "KNX-IP routing" in text_of(env, "#cbi-loxgw-knx h3")
        assert "Service discovery reflector" in text_of(env, "#cbi-loxgw-reflector h3")
        for section_type, fields in SINGLE_SECTION_FIELDS.items():
            shown = page.evaluate(f"""
                Object.fromEntries(Array.from(document.querySelectorAll('#cbi-loxgw-{section_type} .cbi-value'))
                    .filter(el => el.offsetParent)
                    .map(el => [el.getAttribute('data-name'), el.querySelector('label.cbi-value-title').innerText]))""")
            assert shown == fields, section_type
        # The defaults loxgw applies to an absent section: KNX off, the reflector on.
        knx, reflector = section_id(env, "knx"), section_id(env, "reflector")
        assert page.evaluate(f"document.getElementById('widget.cbid.loxgw.{knx}.enabled').checked") is False
        assert page.evaluate(f"""['enabled', 'mdns', 'ssdp'].map(o =>
            document.getElementById('widget.cbid.loxgw.{reflector}.' + o).checked)""") == [True, True, True]
        assert_labelled(env, mobile)
        assert page.errors == []
        env.shot(f"settings-knx-reflector-{width}")


def test_settings_page_saves_knx_routing_that_loxgw_check_accepts(env: Env) -> None:
    with open(env.config_copy, encoding="utf-8") as handle:
        good = handle.read()
    assert "config knx" not in good and "config reflector" not in good  # the form creates them
    env.backend.scenario = "running"
    page = env.page
    try:
        env.open("loxgw/settings", 1280, 900, False)
        knx = section_id(env, "knx")
        zones = f"document.getElementById('cbid.loxgw.{knx}.zone')"
        # Enabled with one zone is what loxgw check refuses; the form refuses it too.
        page.evaluate(f"document.getElementById('widget.cbid.loxgw.{knx}.enabled').click()")
        toggle_choice(page, zones, "iot")
        assert page.evaluate(f"{zones}.classList.contains('cbi-input-invalid')")
        page.evaluate("document.querySelector('.cbi-page-actions .cbi-button-apply').click()")
        page.wait_for("document.body.classList.contains('modal-overlay-active')", 5, "LuCI's Save error dialog")
        assert "Copying needs two zones or more" in text_of(env, ".modal")
        page.evaluate("document.querySelector('.modal .cbi-button').click()")
        # LuCI's Save & Apply leaves the rejected save unhandled; the browser reports it, nothing else may.
        errors = [e for e in page.errors if "contains an invalid input value" not in e]
        assert errors == [], errors
        page.errors.clear()
        # What the user chose stays in the form.
        assert page.evaluate(f"document.getElementById('widget.cbid.loxgw.{knx}.enabled').checked") is True
        toggle_choice(page, zones, "lan")
        assert page.evaluate(f"{zones}.classList.contains('cbi-input-invalid')") is False
        ttl = f"document.getElementById('widget.cbid.loxgw.{knx}.ttl')"
        page.evaluate(f"{ttl}.value = '256'; {ttl}.dispatchEvent(new Event('keyup'))")
        assert page.evaluate(f"{ttl}.classList.contains('cbi-input-invalid')")
        page.evaluate(f"{ttl}.value = '4'; {ttl}.dispatchEvent(new Event('keyup'))")
        assert page.evaluate(f"{ttl}.classList.contains('cbi-input-invalid')") is False
        env.backend.store.applied.clear()
        page.evaluate("window.__before_apply = true")
        page.evaluate("document.querySelector('.cbi-page-actions .cbi-button-apply').click()")
        wait_for(lambda: "loxgw" in env.backend.store.applied, 5, "uci apply")
        page.wait_for("!window.__before_apply && window.__harness && window.__harness.rendered", 10,
                      "the page to reload after apply")
        [saved] = saved_sections(env.config_copy, "knx")
        assert ("option enabled '1'" in saved, "list zone 'iot'" in saved, "list zone 'lan'" in saved,
                "option ttl '4'" in saved) == (True, True, True, True), saved
        [reflector] = saved_sections(env.config_copy, "reflector")
        assert ("option enabled '1'" in reflector, "option mdns '1'" in reflector) == (True, True), reflector
        check = subprocess.run([sys.executable, "-m", "loxgw", "-c", env.config_copy, "check"],
                               capture_output=True, text=True, cwd=REPO, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        # The reloaded page edits the saved section rather than adding a second one.
        knx = section_id(env, "knx")
        assert page.evaluate(f"document.getElementById('widget.cbid.loxgw.{knx}.ttl').value") == "4"
        assert page.evaluate("document.querySelectorAll('#cbi-loxgw-knx .cbi-section-node').length") == 1
        assert page.errors == []
        env.shot("settings-knx-after-apply")
    finally:
        with open(env.config_copy, "w", encoding="utf-8") as handle:
            handle.write(good)


def test_settings_page_edits_the_config_and_loxgw_check_accepts_it(env: Env) -> None:
    env.backend.scenario = "running"
    for width, height, mobile in WIDTHS:
        env.open("loxgw/settings", width, height, mobile)
        page = env.page
        for title in ("General", "Zones", "Devices", "Discovery relay", "Remote access (UPnP)"):
            assert title in text_of(env, "#view")
        # LuCI's grid shows a ListValue's raw value; the view shows the chosen label.
        assert "Loxone devices" in text_of(env, "#cbi-loxgw-zone")
        assert "Miniserver" in text_of(env, "#cbi-loxgw-device")
        assert page.evaluate("!!document.querySelector('[data-check=invalid]')") is False
        assert_labelled(env, mobile)
        assert page.errors == []
        env.shot(f"settings-{width}")

    page = env.page
    env.open("loxgw/settings", 1280, 900, False)
    # Edit zone 'iot': an interface name loxgw would refuse is refused here too.
    page.evaluate("document.querySelector('#cbi-loxgw-iot .cbi-button-edit').click()")
    page.wait_for("document.body.classList.contains('modal-overlay-active')", 5, "the zone dialog")
    field = "document.getElementById('widget.cbid.loxgw.iot.interface')"
    page.evaluate(f"{field}.value = 'bad name!'; {field}.dispatchEvent(new Event('keyup'))")
    assert page.evaluate(f"{field}.classList.contains('cbi-input-invalid')")
    page.evaluate("document.querySelector('.modal .cbi-button-positive').click()")
    page.pump(0.5)
    # LuCI's Edit dialog saves silently: an invalid field keeps it open, with no alert.
    assert page.dialogs == []
    assert page.evaluate("document.body.classList.contains('modal-overlay-active')")
    # Choose the router's 'iot' network instead, and save.
    page.evaluate(f"{field}.value = ''; {field}.dispatchEvent(new Event('keyup'))")
    choose_network(page, "iot")
    page.evaluate("document.querySelector('.modal .cbi-button-positive').click()")
    page.wait_for("!document.body.classList.contains('modal-overlay-active')", 5, "the dialog to close")
    page.evaluate("window.__before_apply = true")
    page.evaluate("document.querySelector('.cbi-page-actions .cbi-button-apply').click()")
    wait_for(lambda: "loxgw" in env.backend.store.applied, 5, "uci apply")
    # LuCI reloads the page once the changes are applied.
    page.wait_for("!window.__before_apply && window.__harness && window.__harness.rendered", 10,
                  "the page to reload after apply")
    with open(env.config_copy, encoding="utf-8") as handle:
        saved = handle.read()
    assert "list network 'iot'" in saved and "list interface 'br-iot'" in saved
    check = subprocess.run([sys.executable, "-m", "loxgw", "-c", env.config_copy, "check"],
                           capture_output=True, text=True, cwd=REPO, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert page.errors == []
    env.shot("settings-after-apply")

    # A file loxgw check refuses: its PATH:LINE messages head the page.
    with open(env.config_copy, "w", encoding="utf-8") as handle:
        handle.write(BROKEN_CONFIG)
    env.open("loxgw/settings", 390, 844, True)
    notice = text_of(env, "[data-check=invalid]")
    assert f"{env.config_copy}:2:" in notice and f"{env.config_copy}:4:" in notice
    assert page.errors == []
    env.shot("settings-invalid-config-390")
