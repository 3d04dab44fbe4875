"""The `loxgw` command: run, check, catalog, render, status, doctor, explain."""

from __future__ import annotations

import sys
import types

# Commands import what they need when they run: `loxgw status` must not pay for asyncio and
# the daemon's modules (the CLI took ~500 ms with 250 devices for a 2-18 ms daemon answer), nor
# the config model and catalogue (35 ms): it reads the status socket's path from the UCI file.
# Nor for importing and building the whole argument parser (9-11 ms with the locale and shutil
# imports it triggers): plain `status` and `run` command lines are read by _plain_args. Nor for
# json and typing (~15 ms): the daemon renders what `status` prints (edges.status.printable).
from loxgw.core.defaults import DEFAULT_PATH, DEFAULT_STATUS_SOCKET
from loxgw.core.errors import ConfigError, KernelError, LoxgwError
from loxgw.edges import status

TYPE_CHECKING = False  # mypy reads this name as True
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from loxgw.core.config import Config
    from loxgw.core.doctor import Facts

    Arguments = argparse.Namespace | types.SimpleNamespace  # the parser's, or _plain_args'


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="loxgw",
        description="Loxone gateway: DNS-driven nftables sets, exact pinholes, discovery relay.",
    )
    parser.add_argument(
        "-c", "--config", default=DEFAULT_PATH, metavar="PATH",
        help=f"UCI config file (default {DEFAULT_PATH})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the daemon in the foreground (for procd and systemd)",
                   description="Run the daemon in the foreground until SIGTERM; SIGHUP reloads.")
    parser.add_argument("--log-streams", action="store_true",
                        help="info and debug to stdout, warnings and errors to stderr (procd)")
    sub.add_parser("check", help="validate the config; prints PATH:LINE: message per problem",
                   description="Validate the config file. Exit 0 if valid, 1 with one "
                               "PATH:LINE: message per problem otherwise.")
    cat = sub.add_parser("catalog", help="print the Loxone service catalogue",
                         description="Print every port, host and broadcast Loxone products use.")
    cat.add_argument("--json", action="store_true", help="print a JSON array of entries")
    render = sub.add_parser(
        "render", help="print the nftables ruleset the daemon would install",
        description="Print the complete ruleset the daemon would install (nft -c -f - accepts it).",
    )
    render.add_argument("--firewall", choices=("fw4", "standalone"),
                        help="render for this firewall instead of the configured one")
    render.add_argument("--queue", choices=("off", "nft", "xtables"), default="off",
                        help="include the DNS chains as the daemon installs them with a native nft queue "
                             "(OpenWrt) or the iptables-nft fallback (default: off, without them)")
    st = sub.add_parser("status", help="ask the running daemon for its status",
                        description="Ask the running daemon over its Unix socket.")
    st.add_argument("--json", action="store_true", help="print the raw JSON snapshot")
    st.add_argument("--full", action="store_true",
                    help="every DNS entry and every pinhole (default: counts per device)")
    st.add_argument("--socket", metavar="PATH",
                    help="status socket (default: the config's status_socket)")
    doc = sub.add_parser("doctor", help="check the environment and each device's functions",
                         description="Say what is wrong and how to fix it: firewall, kernel features, DNS, "
                                     "interfaces, devices and the state of each of their functions. "
                                     "Exit 0 when all is well, 1 when not.")
    ex = sub.add_parser("explain", help="would a flow pass now, and what decides it",
                        description="Would DEVICE's new flow to HOST PORT pass loxgw now, and which grant, "
                                    "pinhole or rule decides it (or which missing piece blocks it). "
                                    "Exit 0 if it passes, 1 if not.")
    ex.add_argument("device", help="name, MAC or address of the sender")
    ex.add_argument("host", help="name or address of the destination")
    ex.add_argument("port", metavar="PORT[/PROTO]", help="e.g. 443, 7700/udp, icmp")
    for diag in (doc, ex):
        diag.add_argument("--json", action="store_true", help="print JSON")
        diag.add_argument("--socket", metavar="PATH", help="status socket (default: the config's status_socket)")
    return parser


def _load(path: str) -> Config:
    from loxgw.core.config import load_config

    return load_config(path)


def cmd_check(args: Arguments) -> int:
    try:
        config = _load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"{config.path}: ok ({len(config.zones)} zones, {len(config.devices)} devices, "
          f"{len(config.relays)} relays, {len(config.upnp)} upnp)")
    return 0


def cmd_catalog(args: Arguments) -> int:
    import json

    from loxgw.core import catalog

    entries = catalog.load()
    if args.json:
        print(json.dumps([e.as_json() for e in entries], indent=2))
    else:
        print(catalog.render_table(entries))
    return 0


def cmd_render(args: Arguments) -> int:
    from loxgw.core import dnspath, pinholes, ruleset
    from loxgw.core.devices import Inventory
    from loxgw.daemon.app import resolve_firewall
    from loxgw.edges import nft

    config = _load(args.config)
    firewall = args.firewall or resolve_firewall(config.main.firewall, nft.fw4_present())
    path = dnspath.choose(config.main.dns_mode, args.queue, True, config.main.dns_hold)
    devices = Inventory(config.devices).devices()
    _, elements = pinholes.desired(config, devices)
    sys.stdout.write(ruleset.render(config, firewall, args.queue, path, elements=elements).script)
    return 0


def _status_socket_of(config_path: str) -> str:
    """The status socket a config names, even if the rest of the file is invalid.

    A daemon keeps running on its old config when a reload is refused, so
    `status` must still find it while the file on disk is broken. Read from the
    UCI sections alone, as the schema would take it (an absolute path).
    """
    from loxgw.core import uci

    try:
        _, sections = uci.parse(uci.read_config_text(config_path), config_path)
    except ConfigError:
        return DEFAULT_STATUS_SOCKET
    for section in sections:
        option = section.options.get("status_socket")
        if section.type == "loxgw" and option and option.values[-1].startswith("/"):
            return option.values[-1]
    return DEFAULT_STATUS_SOCKET


def cmd_status(args: Arguments) -> int:
    path = args.socket or _status_socket_of(args.config)
    try:
        print(status.printable(path, full=args.full, form="json" if args.json else "text"))
    except status.NotRunning as exc:
        print(f"loxgw: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_doctor(args: Arguments) -> int:
    import json

    from loxgw.core import doctor
    from loxgw.edges import diagnose

    config: Config | None = None
    config_error = ""
    try:
        config = _load(args.config)
    except ConfigError as exc:
        config_error = "; ".join(str(p) for p in exc.problems[:3])
    answer: dict[str, object] | None = None
    daemon_error = ""
    try:
        found = diagnose.request(args.socket or _status_socket_of(args.config), ["doctor"]).get("doctor")
        answer = found if isinstance(found, dict) else None
        daemon_error = "" if answer is not None else "the daemon did not answer the doctor request"
    except LoxgwError as exc:
        daemon_error = str(exc)
    report = doctor.judge(_doctor_facts(config, answer, daemon_error, config_error))
    print(json.dumps(report.as_json(), indent=2) if args.json else doctor.format_report(report))
    return 0 if report.ok else 1


def _doctor_facts(config: Config | None, answer: dict[str, object] | None, daemon_error: str,
                  config_error: str) -> Facts:
    """What the command line reads itself, beside the daemon's answer (core.doctor.Facts)."""
    from loxgw.core import doctor
    from loxgw.daemon.app import resolve_firewall
    from loxgw.edges import netifd, nft, probe

    fw4_installed = nft.fw4_present()
    mode = (answer or {}).get("mode") or (resolve_firewall(config.main.firewall, fw4_installed)
                                          if config is not None else "")
    table = str((answer or {}).get("table") or (config.main.table if config is not None else "loxgw"))
    interfaces: list[tuple[str, str, str]] = []
    empty: list[str] = []
    if config is not None:
        resolved, _ = netifd.resolve_networks(config, netifd.ubus_status)
        for zone in resolved.zones:
            interfaces += [(zone.name, i, probe.interface_state(i)) for i in zone.interfaces]
            empty += [] if zone.interfaces else [zone.name]
    return doctor.Facts(
        daemon=answer, daemon_error=daemon_error, config_error=config_error, fw4_installed=fw4_installed,
        fw4_forward=probe.nft_chain("fw4", "forward") if mode == "fw4" else None,
        fw4_input=probe.nft_chain("fw4", "input") if mode == "fw4" else None,
        redirect_present=probe.redirect_present(table) if (answer or {}).get("redirect_wanted") else None,
        kernel=probe.kernel_features(), rebind=probe.rebind_facts(), interfaces=tuple(interfaces),
        empty_zones=tuple(empty), dns_hold=config.main.dns_hold if config is not None else "")


def cmd_explain(args: Arguments) -> int:
    import json

    from loxgw.core.question import format_answer
    from loxgw.edges import diagnose

    answer = diagnose.request(args.socket or _status_socket_of(args.config),
                              ["explain", args.device, args.host, args.port])
    verdict = answer.get("explain")
    if not isinstance(verdict, dict):
        print(f"loxgw: {answer.get('error', 'no answer')}", file=sys.stderr)
        return 2
    print(json.dumps(verdict, indent=2) if args.json else format_answer(verdict))
    return 0 if verdict.get("passes") else 1


def cmd_run(args: Arguments) -> int:
    from loxgw.daemon import gcpause

    gcpause.pause_start_up()  # until the daemon runs (Daemon.run): start-up makes little garbage
    config = _load(args.config)
    if config.main.enabled and config.main.dns_mode == "inline":
        from loxgw.edges import queue

        queue.check_native_queue_early()  # a wait on the kernel, beside the imports below
    # The daemon speaks no TLS, and OpenWrt's loxgw does not depend on python3-openssl, so there
    # asyncio runs without ssl. Elsewhere asyncio imports it when it can: 10-25 ms of start-up CPU
    # (libssl, libcrypto and ssl.py's enums), a tenth of a second or more on a router's CPU.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    import signal  # its enums would cost `loxgw status` 8 ms: imported here, not at the top

    from loxgw.daemon import boot, logs

    logs.setup_logging(config.main.log_level, split_streams=args.log_streams)
    # Until Daemon.run puts the loop's own handlers in, a signal is remembered, not acted on: a stop raised
    # at any bytecode once left a half-built event loop (a traceback, an unawaited Daemon.run) behind, and
    # SIGHUP's default action would end the process with the table in. Daemon.run then stops at its next
    # await that suspends (its way down takes back the declaration begun below), or reloads once running.
    asked: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: asked.append(signum))
    first = boot.Boot(config)
    try:
        first.begin()  # the kernel takes the first declaration while asyncio and the other services load
        import asyncio

        from loxgw.daemon import app as daemon

        running = daemon.Daemon(config, boot=first, early_signals=asked)
    except BaseException:
        first.firewall.close()  # nothing stays half-configured: the declaration is taken back
        raise
    try:
        code: int = asyncio.run(running.run())
    except BaseException:
        if not running.way_down_began:  # stopped before the daemon's own way down: take it back here
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # and let no signal cut that short
                signal.signal(sig, signal.SIG_IGN)
            first.firewall.close()
        raise
    return code


COMMANDS = {
    "run": cmd_run,
    "check": cmd_check,
    "catalog": cmd_catalog,
    "render": cmd_render,
    "status": cmd_status,
    "doctor": cmd_doctor,
    "explain": cmd_explain,
}


def _plain_args(argv: Sequence[str]) -> types.SimpleNamespace | None:
    """The arguments of a `status` or `run` command line in its plain forms, as the parser would give them;
    None for anything else (help, errors, abbreviations, other commands: the parser answers those).

    `loxgw status` is what scripts and LuCI call every few seconds, and building the parser of
    every command cost more than the daemon's answer; `run` is what procd starts on a router
    whose CPU is 10-20 times slower than a PC's.
    """
    values: dict[str, object] = {"config": DEFAULT_PATH, "log_streams": False, "command": None}
    top = {"-c": "config", "--config": "config", "--log-streams": "log_streams"}
    sub = {"--json": "json", "--full": "full", "--socket": "socket"}
    words = list(argv)
    while words:
        word = words.pop(0)
        options = top if values["command"] is None else sub if values["command"] == "status" else {}
        name, has_value, value = word.partition("=")
        if values["command"] is None and word in ("status", "run"):
            values["command"] = word
            values |= {"json": False, "full": False, "socket": None} if word == "status" else {}
        elif name in options and options[name] in ("config", "socket"):
            if not has_value:
                if not words or words[0].startswith("-"):
                    return None
                value = words.pop(0)
            if not value:
                return None
            values[options[name]] = value
        elif word in options and not has_value:
            values[options[word]] = True
        else:
            return None
    return types.SimpleNamespace(**values) if values["command"] is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args: Arguments = _plain_args(words) or _parser().parse_args(words)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except KernelError as exc:
        print(f"loxgw: kernel refused: {exc}", file=sys.stderr)
        return 1
    except LoxgwError as exc:
        print(f"loxgw: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
