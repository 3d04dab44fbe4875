"""`loxgw doctor`: what is wrong and how to fix it, judged from facts gathered elsewhere.

Pure: the daemon answers with what it knows (mode, DNS path, devices and the
state of each of their functions, see core.functions), the command line adds what
it can read from the system (fw4's chains, kernel features, dnsmasq's rebind
setting, interface states), and `judge` turns the Facts into findings: ok, info,
warn or fail. Exit 1 when any finding fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import field
from typing import Any, Literal

from loxgw.core.blocked import format_attempts
from loxgw.core.firewall import FW4_MARK
from loxgw.core.record import record

REBIND_NAME = "dyndns.loxonecloud.com"

Level = Literal["ok", "info", "warn", "fail"]


# --- system facts, parsed ------------------------------------------------------------


def include_active(listing: str | None) -> bool:
    """Whether an `nft list chain inet fw4 ...` listing holds loxgw's include rule (accept on FW4_MARK)."""
    mark = f"{FW4_MARK:#010x}"
    return listing is not None and any(f"meta mark & {mark} == {mark}" in line and "accept" in line
                                       for line in listing.splitlines())


def rebind_from_options(options: Iterable[str]) -> tuple[bool, tuple[str, ...]]:
    """dnsmasq options (`stop-dns-rebind`, `rebind-domain-ok=/a/b/`, no dashes): (protection on, domains)."""
    protection = False
    domains: list[str] = []
    for option in options:
        key, _, value = option.partition("=")
        key = key.strip().lstrip("-")
        if key == "stop-dns-rebind":
            protection = True
        elif key == "rebind-domain-ok":
            domains += split_domains(value)
    return protection, tuple(domains)


def split_domains(value: str) -> list[str]:
    return [d.strip().strip(".").lower() for d in value.strip().split("/") if d.strip().strip(".")]


def domain_covered(domains: Iterable[str], name: str = REBIND_NAME) -> bool:
    return any(name == d or name.endswith("." + d) for d in domains)


# --- the facts and the judgement --------------------------------------------------------


@record
class Rebind:
    """The resolver's DNS rebind protection: who (openwrt, dnsmasq, none), whether on, which domains pass."""

    resolver: str = "unknown"
    protection: bool | None = None
    domains: tuple[str, ...] = ()
    source: str = ""


@record
class Facts:
    """What doctor judges: the daemon's answer (`daemon`, JSON) and what the command line read itself."""

    daemon: Mapping[str, Any] | None  # None: no daemon answered (`daemon_error` says why)
    daemon_error: str = ""
    config_error: str = ""
    fw4_installed: bool = False
    fw4_forward: str | None = None  # `nft list chain inet fw4 forward`, None if there is none
    fw4_input: str | None = None
    redirect_present: bool | None = None
    kernel: Mapping[str, bool | None] = field(default_factory=dict)  # nft_queue, nflog, xt_string, xt_hashlimit
    rebind: Rebind = Rebind()
    interfaces: tuple[tuple[str, str, str], ...] = ()  # (zone, interface, state: up, down, no carrier, missing)
    empty_zones: tuple[str, ...] = ()
    dns_hold: str = ""  # the config's, "" without one


@record
class Finding:
    check: str
    level: Level
    message: str
    fix: str = ""


@record
class Report:
    findings: tuple[Finding, ...]
    devices: tuple[Mapping[str, Any], ...]
    blocked: tuple[Mapping[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return all(f.level != "fail" for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "findings": [f.__dict__ for f in self.findings], "devices": list(self.devices),
                "blocked": list(self.blocked)}


def judge(facts: Facts) -> Report:
    """Every finding, in the order a user would fix them."""
    out: list[Finding] = []
    if facts.config_error:
        out.append(Finding("config", "fail", facts.config_error, "loxgw check shows every problem"))
    kernel = facts.kernel
    if facts.dns_hold == "auto" and kernel.get("nft_queue") is False and kernel.get("xt_hashlimit") is False:
        # From the config, not the daemon's answer: without the match loxgw's iptables rules (all of
        # them: a restore is one transaction per family) do not load, and the daemon does not run.
        out.append(Finding("kernel", "fail", "xt_hashlimit is missing: with dns_hold 'auto' and no nft queue, "
                           "loxgw's iptables DNS rules cannot load", "modprobe xt_hashlimit (OpenWrt: "
                           "iptables-mod-hashlimit, kmod-ipt-hashlimit), or dns_hold 'connection'"))
    d = facts.daemon
    if d is None:
        out.append(Finding("daemon", "fail", facts.daemon_error or "loxgw is not running",
                           "start it: /etc/init.d/loxgw start (OpenWrt) or systemctl start loxgw"))
    else:
        out += _firewall(facts, d)
        out += _dns(facts, d)
    out += _interfaces(facts)
    devices = tuple(d.get("devices", [])) if d is not None else ()
    if d is not None:
        out += _devices(devices, d)
        out += _upnp(d.get("upnp", []))
    return Report(tuple(out), devices, tuple(d.get("blocked", [])) if d is not None else ())


def _firewall(facts: Facts, d: Mapping[str, Any]) -> list[Finding]:
    out = []
    mode, table = d.get("mode"), d.get("table")
    if not d.get("enabled", True):
        return [Finding("firewall", "warn", "loxgw is disabled (option enabled '0'): it installs nothing")]
    if d.get("installed"):
        out.append(Finding("firewall", "ok", f"{mode}, table inet {table} installed"))
    else:
        out.append(Finding("firewall", "fail", f"table inet {table} is not installed", "see loxgw's log"))
    if mode == "fw4":
        for chain, listing in (("forward", facts.fw4_forward), ("input", facts.fw4_input)):
            if listing is None:
                out.append(Finding(f"fw4 {chain}", "fail", f"fw4 has no {chain} chain (table inet fw4 missing: "
                                   "is the firewall stopped?)", "/etc/init.d/firewall start"))
            elif include_active(listing):
                out.append(Finding(f"fw4 {chain}", "ok", f"loxgw's include is active in fw4's {chain} chain"))
            else:
                out.append(Finding(f"fw4 {chain}", "fail", f"loxgw's include is not in fw4's {chain} chain: fw4 "
                                   f"drops what loxgw allows" + (" into the router (relay, gateway ping)"
                                                                 if chain == "input" else ""),
                                   f"fw4 reload (reads /usr/share/nftables.d/chain-pre/{chain}/10-loxgw.nft; "
                                   "reinstall the loxgw package if it is missing)"))
    elif facts.fw4_installed:
        out.append(Finding("firewall", "warn", "fw4 is installed but loxgw runs standalone: fw4's zone policies "
                           "still drop what loxgw accepts", "option firewall 'auto' (or 'fw4')"))
    if d.get("blocked_log_error"):
        out.append(Finding("blocked attempts", "warn", f"no samples of blocked attempts: {d['blocked_log_error']}",
                           "another program (ulogd?) may hold the NFLOG group; or change queue_num"))
    return out


def _dns(facts: Facts, d: Mapping[str, Any]) -> list[Finding]:
    out = []
    dns_mode, queue, path = d.get("dns_mode"), d.get("queue_mode"), d.get("dns_path")
    kernel = facts.kernel
    if dns_mode == "off":
        out.append(Finding("dns", "warn", "dns_mode 'off': no DNS answer opens anything, no cloud function works"))
    elif queue == "passive" and dns_mode == "inline":
        out.append(Finding("dns", "warn", "no NFQUEUE (neither nft queue nor iptables NFQUEUE): DNS is read "
                           "passively and a first connection can race its grant",
                           "install kmod-nft-queue (OpenWrt) or load nfnetlink_queue"))
    elif path == "queued":
        out.append(Finding("dns", "warn", "no NFLOG copies: every DNS round trip of a cloud zone waits for loxgw",
                           "install kmod-nfnetlink-log, or stop the program holding loxgw's NFLOG group"))
    else:
        out.append(Finding("dns", "ok", f"{dns_mode}, queue {queue}, {path}"))
    if queue == "xtables" and kernel.get("xt_string") is False:
        out.append(Finding("kernel", "fail", "xt_string is missing: the DNS prefilter rules cannot load",
                           "modprobe xt_string (OpenWrt: kmod-ipt-string)"))
    if d.get("grants_synced") is False:
        out.append(Finding("dns", "info", "the DNS thread was busy: the functions' states use the DNS entries "
                           "loxgw looked at before", "run loxgw doctor again"))
    for feature, missing in (("nft_queue", "nft queue"), ("nflog", "NFLOG")):
        if kernel.get(feature) is False and dns_mode == "inline":
            out.append(Finding("kernel", "info", f"this kernel has no {missing}"))
    if d.get("redirect_wanted"):
        if facts.redirect_present is False:
            out.append(Finding("dns redirect", "fail", "devices zones' DNS is not redirected to the router: a "
                               "device with its own resolver gets no grants", "restart loxgw (it installs "
                               "chain dns_redirect)"))
        elif facts.redirect_present:
            out.append(Finding("dns redirect", "ok", "devices zones' DNS goes to the router's resolver"))
    out.append(_rebind(facts.rebind, bool(d.get("rebind_exception", True))))
    return out


def _rebind(rebind: Rebind, managed: bool) -> Finding:
    if rebind.resolver == "none":
        return Finding("rebind exception", "info", "no dnsmasq in this network namespace: make sure your resolver "
                       f"lets *.{REBIND_NAME} answer private addresses")
    if rebind.protection is None:
        return Finding("rebind exception", "info", "could not read the resolver's rebind setting")
    if not rebind.protection:
        return Finding("rebind exception", "ok", f"{rebind.resolver}: no rebind protection ({rebind.source})")
    if domain_covered(rebind.domains):
        return Finding("rebind exception", "ok", f"{rebind.resolver} lets {REBIND_NAME} answer private addresses")
    fix = (f"uci add_list dhcp.@dnsmasq[0].rebind_domain='{REBIND_NAME}'; uci commit dhcp; /etc/init.d/dnsmasq "
           "reload (or: /etc/init.d/loxgw rebind_exception add)" if rebind.resolver == "openwrt" else
           f"add rebind-domain-ok=/{REBIND_NAME}/ to dnsmasq's configuration and restart it")
    return Finding("rebind exception", "fail" if managed else "warn",
                   f"{rebind.resolver} drops private answers for *.{REBIND_NAME} (rebind protection, no exception): "
                   "the App's local TLS connection to the Miniserver fails", fix)


def _interfaces(facts: Facts) -> list[Finding]:
    out = [Finding("zone", "warn", f"zone {zone} has no interface now (is its network up?)")
           for zone in facts.empty_zones]
    for zone, interface, state in facts.interfaces:
        if state == "up":
            out.append(Finding("interface", "ok", f"{interface} (zone {zone}) is up"))
        elif state == "no carrier":
            out.append(Finding("interface", "warn", f"{interface} (zone {zone}) is up without carrier (no cable, "
                               "no port in the bridge)"))
        else:
            out.append(Finding("interface", "fail", f"{interface} (zone {zone}) is {state}",
                               f"ip link set {interface} up (or fix the zone's interface list)"))
    return out


def _devices(devices: Sequence[Mapping[str, Any]], d: Mapping[str, Any]) -> list[Finding]:
    out = []
    if not devices:
        out.append(Finding("devices", "warn", "no Loxone device detected", "add config device sections, or check "
                           "that the devices zones list the devices' VLANs"))
    else:
        out.append(Finding("devices", "ok", f"{len(devices)} Loxone devices ({sum(1 for x in devices if x.get('seen'))}"
                           " seen on the network)"))
    for dev in devices:
        label = dev.get("name") or dev.get("ip") or dev.get("mac")
        if dev.get("static") and not dev.get("seen"):
            out.append(Finding("device", "fail", f"config device {label} ({dev.get('ip') or dev.get('mac')}) has never "
                               "been seen", "is it on, in a devices zone, with the MAC/IP the config says?"))
        elif not dev.get("present", True):
            out.append(Finding("device", "warn", f"{label} went away (its pinholes stay for device_grace)"))
        if dev.get("product") in (None, "unknown"):
            out.append(Finding("device", "warn", f"{label}: product unknown, only TCP 80 and 443 are open to it",
                               "add a config device section with its type"))
        for function in dev.get("functions", []):
            if function.get("state") == "blocked":  # with fw4, loxgw did not allow it and fw4 decided
                out.append(Finding("function", "fail" if d.get("mode") == "standalone" else "warn",
                                   f"{label}: {function['function']} blocked: {function['detail']}"))
    if d.get("relay_missing"):
        out.append(Finding("discovery", "warn", "no relay between the devices and clients zones: the App finds "
                           "Miniservers only on their own VLAN", "add a config relay section listing both zones"))
    return out


def _upnp(mappings: Sequence[Mapping[str, Any]]) -> list[Finding]:
    out = []
    for m in mappings:
        name, state = m.get("name"), m.get("state")
        if state == "disabled":
            continue
        if state == "active":
            out.append(Finding("upnp", "ok", f"{name}: port {m.get('external_port')} mapped on "
                               f"{m.get('external_ip') or 'the upstream router'}"))
        elif state == "failed":
            why = f"held by {m['conflict']}" if m.get("conflict") else m.get("last_error") or "failed"
            out.append(Finding("upnp", "fail", f"{name}: mapping failed ({why})",
                               "is UPnP on in the upstream router? is the port free there?"))
        else:
            out.append(Finding("upnp", "info", f"{name}: {state}"))
    return out


def format_report(report: Report) -> str:
    """The report as text: findings (problems first), then each device's functions."""
    marks = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}
    problems = sum(1 for f in report.findings if f.level == "fail")
    lines = [f"loxgw doctor: {'all is well' if report.ok else f'{problems} problem' + 's' * (problems != 1)}"]
    order = {"fail": 0, "warn": 1, "info": 2, "ok": 3}
    for finding in sorted(report.findings, key=lambda f: order[f.level]):
        lines.append(f"  {marks[finding.level]}  {finding.check:<17} {finding.message}")
        if finding.fix and finding.level in ("fail", "warn"):
            lines.append(f"  {'':<4}  {'':<17} fix: {finding.fix}")
    for dev in report.devices:
        where = ", ".join(str(dev.get(k) or "-") for k in ("product", "ip", "mac"))
        lines.append(f"{dev.get('name') or '-'} ({where})")
        for function in dev.get("functions", []):
            lines.append(f"  {function['state']:<11} {function['function']:<26} {function['detail']}")
        lines += [f"  {'blocked':<11} {line.strip()}" for line in dev.get("other_blocked", [])]
    listed = {dev.get("ip") for dev in report.devices}
    others = [a for a in report.blocked if a.get("device") not in listed]
    if others:
        lines.append("blocked attempts of other hosts, most recent first:")
        lines += format_attempts(others)
    return "\n".join(lines)
