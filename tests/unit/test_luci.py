"""The LuCI app without a router: its JavaScript parses, its rpcd plugin's logic keeps its JSON
contract (run under node with ucode's builtins), and its menu, ACL and views fit together."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loxgw import cli
from loxgw.core import configschema, configsections

ROOT = Path(__file__).parents[2]
APP = ROOT / "openwrt" / "luci" / "luci-app-loxgw"
VIEWS = APP / "htdocs" / "luci-static" / "resources" / "view" / "loxgw"
MODULE = APP / "root" / "usr" / "share" / "ucode" / "loxgw" / "luci.uc"
PLUGIN = APP / "root" / "usr" / "share" / "rpcd" / "ucode" / "luci.loxgw"
MENU = APP / "root" / "usr" / "share" / "luci" / "menu.d" / "luci-app-loxgw.json"
ACL = APP / "root" / "usr" / "share" / "rpcd" / "acl.d" / "luci-app-loxgw.json"
UCITRACK = APP / "root" / "usr" / "share" / "ucitrack" / "luci-app-loxgw.json"
HARNESS = ROOT / "tests" / "lab" / "luci_harness"
JS_FILES = sorted([*VIEWS.glob("*.js"), *HARNESS.rglob("*.js"), *HARNESS.glob("*.mjs")])

# The ucode builtins the logic module may call: those the node shim provides, all of them ucode core functions.
UCODE_BUILTINS = {"type", "length", "push", "keys", "sort", "slice", "substr", "index", "rindex", "split", "join",
                  "trim", "lc", "int", "match", "json", "min", "max"}
JS_KEYWORDS = {"if", "for", "while", "switch", "return", "function", "catch", "typeof"}

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

NOW = 1_800_000_000
RUNNING = {"loxgw": {"instances": {"loxgw": {"running": True, "pid": 4242, "command": ["/usr/bin/loxgw"]}}}}
INTERFACES = [
    {"interface": "iot", "l3_device": "br-iot", "ipv4-address": [{"address": "192.168.20.1", "mask": 24}]},
    {"interface": "lan", "l3_device": "br-lan", "ipv4-address": [{"address": "192.168.10.1", "mask": 24}]},
    {"interface": "guest", "device": "br-guest", "ipv4-address": [{"address": "10.7.0.1", "mask": 16}]},
]


def device(n: int, **fields: Any) -> dict[str, Any]:
    return {"name": f"Miniserver {n}", "product": "miniserver", "product_known": True,
            "mac": f"50:4f:94:a0:{n // 256:02x}:{n % 256:02x}", "ip": f"192.168.20.{n % 250 + 2}",
            "source": "neighbour,static", "last_seen": 1.5, "present": True, "serial": f"504F94A0{n:04X}",
            "firmware": "15.1.10.2", "pinhole_count": 8, "dns_entry_count": 3} | fields


def snapshot(devices: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """A status summary shaped as the daemon writes it (see loxgw/daemon/app.py snapshot())."""
    return {
        "version": "0.1.0", "pid": 4242, "uptime": 12.5, "config": "/etc/config/loxgw", "enabled": True,
        "firewall": "fw4", "table": "loxgw", "installed": True, "dns_mode": "inline", "queue_mode": "nft",
        "dns_path": "copies", "set_refresh": "expiration", "dns_entries_total": 3, "ruleset_applies": 2,
        "zones": [{"name": "iot", "role": "devices", "interfaces": ["br-iot"], "networks": [], "cloud": True},
                  {"name": "guest", "role": "clients", "interfaces": [], "networks": ["guest"], "cloud": False}],
        "devices": devices if devices is not None else [device(1)],
        "relays": [{"name": "relay4", "enabled": True, "ports": ["7070-7077", "7079"], "interfaces": [],
                    "zones": ["iot", "guest"], "rate_limit": 20, "global_rate": 2000, "allow_upstream": False}],
        "upnp": [{"name": "remote", "enabled": True, "device": "ms", "internal_port": 443, "external_port": 8443,
                  "lease": 3600, "proto": "tcp", "check_interval": 60, "state": "failed", "external_ip": None,
                  "last_error": "no IGD found", "conflict": None, "failures": 2, "next_in": 30.0}],
        "relay": {"interfaces": ["br-iot", "br-guest"],
                  "counters": {"br-iot:7070:received": 5, "br-iot:7071:received": 2, "br-guest:7070:relayed": 7,
                               "br-iot:7070:dropped_rate_source": 1, "interface_refreshes": 1}},
        "devices_refused_cap": 0, "counters": {"device_changes": 1, "declares": 1},
        "failures": {"rare": 1, "often": 9}, "last_error": None, "written_at": NOW - 3,
    } | fields


class Module:
    """luci.uc under node (tests/lab/luci_harness/plugin.mjs): fn(*args) -> its JSON result."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["node", str(HARNESS / "plugin.mjs"), str(MODULE)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def __call__(self, fn: str, *args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"fn": fn, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert "error" not in answer, answer["error"]
        return answer["result"]

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=5)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def uc() -> Iterator[Module]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    module = Module()
    yield module
    module.close()


def overview(uc: Module, text: str | None, service: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The `status` answer, its devices turned from rows back into objects as the view does."""
    request = {"now": NOW, "file": "/var/run/loxgw/status.json", "text": text, "read_error": None,
               "service": RUNNING if service is None else service, "enabled": "1", "interfaces": INTERFACES}
    result: dict[str, Any] = uc("overview", request | extra)
    if result["status"]:
        table = result["status"]["devices"]
        result["status"]["devices"] = [dict(zip(table["fields"], row, strict=True)) for row in table["rows"]]
    return result


# --- JavaScript --------------------------------------------------------------------


@needs_node
@pytest.mark.parametrize("path", JS_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_javascript_parses(path: Path) -> None:
    proc = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@needs_node
def test_logic_module_parses_as_a_module() -> None:
    # ucode's module syntax (export function ...) is also an ES module.
    proc = subprocess.run(["node", "--input-type=module", "--check"], input=MODULE.read_text(),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_views_never_pass_markup() -> None:
    for view in VIEWS.glob("*.js"):
        js = view.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "dom.parse"):
            assert sink not in js, (view.name, sink)
        # E() with markup text ('<...') would be parsed as HTML.
        assert not re.search(r"""E\(\s*['"`]<""", js), view.name


# Each UCI section type the settings form edits, and its schema (core.configsections).
FORM_SECTIONS = {"loxgw": configsections.MainConfig, "zone": configsections.Zone,
                 "device": configsections.StaticDevice, "relay": configsections.Relay,
                 "upnp": configsections.Upnp, "knx": configsections.Knx, "reflector": configsections.Reflector}


def form_options(js: str) -> dict[str, set[str]]:
    """Per section type, the quoted names in the form's part for it (each `m.section(...)` up to the next)."""
    found: dict[str, set[str]] = {}
    parts = re.split(r"m\.section\(form\.\w+, '(\w+)'(?:, '(\w+)')?", js)
    for first, second, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        # s.option(form.X, 'name', ...), or a name first in a row of a table the section loops over.
        found.setdefault(second or first, set()).update(
            re.findall(r"s\.option\([\w.]+, '(\w+)'", body) + re.findall(r"\[ '(\w+)', _\(", body))
    return found


def test_the_settings_form_has_a_field_for_every_option_of_the_schema() -> None:
    options = form_options((VIEWS / "settings.js").read_text())
    missing = {kind: sorted({row.uci for row in configschema.rows(schema)} - options.get(kind, set()))
               for kind, schema in FORM_SECTIONS.items()}
    assert {kind: names for kind, names in missing.items() if names} == {}
    assert set(options) == set(FORM_SECTIONS)


def _strings(js: str) -> Iterator[tuple[int, str]]:
    """Single-quoted string literals with their offsets (the views quote text with '...')."""
    for m in re.finditer(r"'((?:[^'\\\n]|\\.)*)'", js):
        yield m.start(), m.group(1)


def test_view_text_is_ready_for_translation() -> None:
    """Every English phrase in a view is an argument of _() or N_() (LuCI's i18n scanner finds them there)."""
    untranslated = []
    for view in VIEWS.glob("*.js"):
        js = view.read_text()
        for start, text in _strings(js):
            phrase = re.search(r"[A-Za-z]{2,}[,.:;!?]?\s+[A-Za-z]{2,}", text)
            if not phrase or text.startswith(("use strict", "require ")):
                continue
            before = js[max(0, start - 40):start]
            if re.search(r"(?:\b_|\bN_)\(\s*$|N_\([^()]*,\s*(?:'[^']*',\s*)?$", before):
                continue
            if re.search(r"'(class|style)':\s*$|'(class|style)':\s*'[^']*'\s*\+\s*$", before):
                continue
            untranslated.append((view.name, text))
    assert untranslated == []


# --- the rpcd plugin's logic: JSON contract ---------------------------------------------


def test_status_file_is_the_socket_path_with_json(uc: Module) -> None:
    cases = {
        "/var/run/loxgw/status.sock": "/var/run/loxgw/status.json",
        "/run/a.b/status": "/run/a.b/status.json",
        "/tmp/.sock": "/tmp/.sock.json",
        "/tmp/x.y.sock": "/tmp/x.y.json",
        "": "/var/run/loxgw/status.json",
        None: "/var/run/loxgw/status.json",
    }
    assert {k: uc("statusFile", k) for k in cases} == cases


def test_running_daemon_summary(uc: Module) -> None:
    result = overview(uc, json.dumps(snapshot()))
    assert (result["state"], result["age"], result["service"]["pid"]) == ("running", 3, 4242)
    status = result["status"]
    (dev,) = status["devices"]
    assert (dev["name"], dev["ip"], dev["network"], dev["zone"]) == ("Miniserver 1", "192.168.20.3", "iot", "iot")
    assert "serial" not in dev
    assert status["relay"]["by_interface"] == {"br-iot": {"received": 7, "dropped_rate_source": 1},
                                               "br-guest": {"relayed": 7}}
    assert status["relay"]["other"] == {"interface_refreshes": 1}
    assert status["failures"] == [{"text": "often", "count": 9}, {"text": "rare", "count": 1}]
    assert status["upnp"][0]["last_error"] == "no IGD found" and status["upnp"][0]["failures"] == 2
    assert status["device_counts"] == {"total": 1, "gone": 0, "unknown": 0}


def test_vlan_by_network_name_and_device(uc: Module) -> None:
    devices = [device(1, ip="10.7.3.4"), device(2, ip="172.16.0.9"), device(3, ip=None)]
    status = overview(uc, json.dumps(snapshot(devices)))["status"]
    vlans = {d["name"]: (d["network"], d["zone"]) for d in status["devices"]}
    assert vlans == {"Miniserver 1": ("guest", "guest"), "Miniserver 2": (None, None), "Miniserver 3": (None, None)}


def test_devices_needing_attention_come_first(uc: Module) -> None:
    devices = [device(1, name="b"), device(2, name="a", present=False), device(3, name="c", product_known=False,
                                                                             product="unknown"), device(4, name="A")]
    status = overview(uc, json.dumps(snapshot(devices)))["status"]
    assert [d["name"] for d in status["devices"]] == ["a", "c", "A", "b"]
    assert status["device_counts"] == {"total": 4, "gone": 1, "unknown": 1}


def test_states_when_not_running_or_not_answering(uc: Module) -> None:
    fresh = json.dumps(snapshot())
    stale = json.dumps(snapshot(written_at=NOW - 16))
    crashed = {"loxgw": {"instances": {"loxgw": {"running": False, "exit_code": 1}}}}
    states = {
        "stale": overview(uc, stale),
        "starting": overview(uc, None),
        "unreadable": overview(uc, "{not json"),
        "stopped": overview(uc, fresh, service={}),
        "disabled": overview(uc, None, service={}, enabled="off"),
        "crashed": overview(uc, fresh, service=crashed),
    }
    assert {name: r["state"] for name, r in states.items()} == {name: name for name in states}
    assert states["stale"]["age"] == 16 and states["stale"]["status"]["version"] == "0.1.0"
    assert states["crashed"]["service"]["exit_code"] == 1 and states["crashed"]["status"] is None
    assert states["stopped"]["status"] is None
    assert states["unreadable"]["detail"] == "the status file is not valid JSON"
    assert overview(uc, "[1, 2]")["state"] == "unreadable"
    problem = "/var/run/loxgw/status.json is not a regular file"
    read_error = overview(uc, None, read_error=problem)
    assert (read_error["state"], read_error["detail"]) == ("unreadable", problem)


def test_untrusted_strings_are_bounded_not_altered(uc: Module) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    devices = [device(1, name=hostile), device(2, name="x" * 5000, mac=123, present="yes")]
    status = overview(uc, json.dumps(snapshot(devices, last_error="e" * 10_000)))["status"]
    names = [d["name"] for d in status["devices"]]
    assert hostile in names  # escaping is the view's job: it renders text nodes
    assert max(len(n) for n in names) == 160 and any(n.endswith("...") for n in names)
    assert len(status["last_error"]) == 400
    assert next(d for d in status["devices"] if d["name"] != hostile)["mac"] == "123"


def test_overview_stays_small_with_250_devices(uc: Module) -> None:
    devices = [device(n) for n in range(300)]
    result = overview(uc, json.dumps(snapshot(devices)))
    assert len(result["status"]["devices"]) == 250 and result["status"]["device_counts"]["total"] == 300
    request = {"now": NOW, "file": "/var/run/loxgw/status.json", "text": json.dumps(snapshot(devices[:250])),
               "read_error": None, "service": RUNNING, "enabled": "1", "interfaces": INTERFACES}
    assert len(json.dumps(uc("overview", request), separators=(",", ":"))) < 50_000


def test_dns_allowances_grouped_and_bounded(uc: Module) -> None:
    entries = [{"device": "192.168.20.10", "name": "x1.dyndns.loxonecloud.com", "address": f"203.0.113.{i}",
                "proto": "tcp", "ports": "20000-65000", "expires_in": 100 + i} for i in range(12)]
    entries.append({"device": "192.168.20.10", "name": "weather.loxone.com", "address": "203.0.113.12",
                    "proto": "tcp", "ports": "6066", "expires_in": 50})
    entries += [{"device": "192.168.20.11", "name": f"n{i}.dyndns.loxonecloud.com", "address": "203.0.113.20",
                 "proto": "tcp", "ports": "443", "expires_in": 5} for i in range(130)]
    entries.append({"device": None, "name": "broken"})
    result = uc("dnsGroups", entries)
    assert (result["total"], result["devices_total"]) == (143, 2)
    first, second = result["devices"]
    assert (first["device"], first["names_total"], first["entries"]) == ("192.168.20.10", 2, 13)
    assert [n["name"] for n in first["names"]] == ["weather.loxone.com", "x1.dyndns.loxonecloud.com"]
    (rule,) = first["names"][1]["rules"]
    assert (rule["proto"], rule["ports"], rule["addresses_total"], len(rule["addresses"]), rule["expires_in"]) == (
        "tcp", "20000-65000", 12, 8, 111)
    assert (second["names_total"], len(second["names"]), second["entries"]) == (130, 100, 130)
    assert uc("dnsGroups", None) == {"total": 0, "devices_total": 0, "devices": []}


def test_check_report_reads_loxgw_checks_own_output(uc: Module, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "loxgw"
    path.write_text("config loxgw 'main'\n\toption firewall 'bogus'\n\nconfig zone 'iot'\n\toption role 'devices'\n")
    code = cli.main(["-c", str(path), "check"])
    out, err = capsys.readouterr()
    report = uc("checkReport", out + err, code)
    assert (report["valid"], report["exit_code"]) == (False, 1)
    assert [(m["path"], m["line"]) for m in report["messages"]] == [(str(path), 2), (str(path), 4)]
    assert "bogus" in report["messages"][0]["message"]
    assert uc("checkReport", "", 0) == {"valid": True, "exit_code": 0, "messages": [], "messages_total": 0}
    many = uc("checkReport", "".join(f"/etc/config/loxgw:{i}: bad\n" for i in range(80)), 1)
    assert (len(many["messages"]), many["messages_total"]) == (50, 80)


def test_service_state_from_procd(uc: Module) -> None:
    assert uc("serviceState", {}) == {"registered": False, "instances": 0, "running": False, "pid": None,
                                      "exit_code": None}
    assert uc("serviceState", RUNNING)["pid"] == 4242
    assert uc("serviceState", {"loxgw": {}})["registered"] is True


# --- the ucode side: the module stays in the ucode/JavaScript common subset -----------


def _code(source: str) -> str:
    """Source without comments, strings and regex literals."""
    source = re.sub(r"//[^\n]*|/\*.*?\*/", "", source, flags=re.S)
    source = re.sub(r"'(?:[^'\\\n]|\\.)*'", "''", source)
    return re.sub(r"(?<=[(,=!&|?:])\s*/(?:[^/\\\n]|\\.)+/[gimsuy]*", " RE", source)


def test_logic_module_uses_only_ucode_builtins() -> None:
    code = _code(MODULE.read_text())
    defined = set(re.findall(r"\bfunction\s+(\w+)", code))
    called = set(re.findall(r"(?<![.\w])(\w+)\s*\(", code)) - defined - JS_KEYWORDS
    assert called <= UCODE_BUILTINS, called - UCODE_BUILTINS
    # No JavaScript-only forms: methods on values, .length, typeof/undefined, division (integer in ucode).
    assert not re.search(r"\.\s*(length|push|indexOf|map|filter|forEach|join|slice|split|substr|toLowerCase)\b", code)
    assert not re.search(r"\b(typeof|undefined|Math|JSON|Object|Array|Number|String)\b", code)
    assert not re.search(r"[^/*]/[^/*=]", code), "division"
    assert not re.search(r"for\s*\(\s*(let|const)\s+\w+\s+(in|of)\s", code.replace("in instances", "")), \
        "for-in over arrays differs between ucode and JavaScript"


def test_plugin_methods_imports_and_acl_agree() -> None:
    plugin = _code(PLUGIN.read_text())
    exported = set(re.findall(r"export\s+(?:function|const)\s+(\w+)", MODULE.read_text()))
    (imports,) = re.findall(r"import\s*\{([^}]*)\}\s*from\s*'loxgw\.luci'", PLUGIN.read_text())
    assert {name.strip() for name in imports.split(",")} <= exported
    methods = set(re.findall(r"^\t(\w+):\s*\{", plugin, re.M))
    assert methods == {"status", "dns", "check", "control"}
    assert re.search(r"return\s*\{\s*''\s*:\s*methods\s*\}", plugin)  # { 'luci.loxgw': methods }
    acl = json.loads(ACL.read_text())["luci-app-loxgw"]
    assert set(acl["read"]["ubus"]["luci.loxgw"]) | set(acl["write"]["ubus"]["luci.loxgw"]) == methods
    # Starting and stopping the service needs write access; reading the status does not.
    assert acl["write"]["ubus"]["luci.loxgw"] == ["control"]
    assert "loxgw" in acl["read"]["uci"] and "loxgw" in acl["write"]["uci"]


def test_views_call_only_what_the_acl_grants() -> None:
    acl = json.loads(ACL.read_text())["luci-app-loxgw"]
    granted = {(obj, m) for level in ("read", "write") for obj, ms in acl[level]["ubus"].items() for m in ms}
    for view in VIEWS.glob("*.js"):
        js = view.read_text()
        for obj, method in re.findall(r"object:\s*'([^']+)',\s*method:\s*'([^']+)'", js):
            assert (obj, method) in granted, (view.name, obj, method)
        for config in re.findall(r"(?:uci\.load|form\.Map)\(\s*'(\w+)'", js):
            assert config in acl["read"]["uci"] and config in acl["write"]["uci"], (view.name, config)


def test_menu_points_at_the_views_behind_the_acl() -> None:
    menu = json.loads(MENU.read_text())
    acl = json.loads(ACL.read_text())
    top = menu["admin/services/loxgw"]
    assert top["depends"]["acl"] == list(acl) and top["action"]["path"] in menu
    views = {entry["action"]["path"] for entry in menu.values() if entry["action"]["type"] == "view"}
    assert views == {"loxgw/overview", "loxgw/settings"}
    assert {p.stem for p in VIEWS.glob("*.js")} == {"overview", "settings"}
    assert json.loads(UCITRACK.read_text()) == {"config": "loxgw", "init": "loxgw"}


def test_package_has_the_ucode_runtime_and_no_exec_plugin() -> None:
    makefile = (APP / "Makefile").read_text()
    for needed in ("+luci-base", "+loxgw", "+rpcd-mod-ucode", "+ucode-mod-fs", "+ucode-mod-ubus", "+ucode-mod-uci"):
        assert needed in makefile
    assert "include $(TOPDIR)/feeds/luci/luci.mk" in makefile
    assert not (APP / "root" / "usr" / "libexec" / "rpcd").exists()  # a poll starts no process
    assert "popen" not in re.search(r"status:\s*\{.*?\n\t\},", PLUGIN.read_text(), re.S).group(0)  # type: ignore[union-attr]
