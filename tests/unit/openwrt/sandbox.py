"""Run the package's shell scripts on this host: OpenWrt's commands replaced by stubs that log.

Each stub appends one line per call to a log; the rc.common, functions.sh and procd.sh
functions the init script uses are shell functions doing the same. `uci` is
tests/unit/openwrt/fake_uci.py over a JSON file. Scripts run under /bin/sh (dash
here, busybox ash on the router; both POSIX with `local`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.unit.openwrt.feed import FEED

INIT = FEED / "net" / "loxgw" / "files" / "loxgw.init"

STUBS = {
    "logger": r"""
tag=; prio=user.notice
while [ $# -gt 0 ]; do
	case "$1" in -t) tag=$2; shift 2 ;; -p) prio=$2; shift 2 ;; *) break ;; esac
done
if [ $# -gt 0 ]; then
	echo "logger $tag $prio $*" >> "$T_LOG"
else
	while IFS= read -r line; do echo "logger $tag $prio $line" >> "$T_LOG"; done
fi
""",
    "nft": r"""
echo "nft $*" >> "$T_LOG"
[ "$1 $2 $3 $4" = "list chain inet fw4" ] && [ -f "$T_FW4/$5" ] && exec cat "$T_FW4/$5"
[ "$1 $2 $3 $4" = "list table inet fw4" ] && [ -d "$T_FW4" ] && exit 0
exit 1
""",
    "pidof": r"""
case " $T_RUNNING " in *" $1 "*) echo 1; exit 0 ;; esac
exit 1
""",
    "loxgw": r"""
echo "loxgw $*" >> "$T_LOG"
[ "$3" = check ] && [ -n "$T_CHECK_OUT" ] && printf '%s\n' "$T_CHECK_OUT" >&2
exit "${T_CHECK_RC:-0}"
""",
    **{name: f'echo "{name} $*" >> "$T_LOG"\n' for name in ("fw4", "ubus", "chown", "chgrp", "chmod", "dnsmasq")},
}

# rc.common, /lib/functions.sh and procd.sh, as far as the init script uses them.
HARNESS = r"""
procd_open_instance() { echo "procd_open_instance $*" >> "$T_LOG"; }
procd_set_param() { echo "procd_set_param $*" >> "$T_LOG"; }
procd_add_jail() { echo "procd_add_jail $*" >> "$T_LOG"; }
procd_close_instance() { echo "procd_close_instance" >> "$T_LOG"; }
user_exists() { [ "$T_USER_EXISTS" = 1 ]; }
uci_load_validate() {
	enabled="$T_ENABLED"; firewall="$T_FIREWALL"; status_socket="$T_SOCKET"
	"$4" "$3" "$T_VALIDATE_STATUS"
}
. "$T_INIT"
PROG="$T_BIN/loxgw"; CONFIG="$T_CONFIG"; UJAIL="$T_UJAIL"; DNSMASQ_INIT="$T_BIN/dnsmasq"
"$@"
"""


class Sandbox:
    """A directory with the stubs, a log, a UCI state and a runtime directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        for name, body in STUBS.items():
            (self.bin / name).write_text("#!/bin/sh\n" + body)
        fake_uci = Path(__file__).with_name("fake_uci.py")
        (self.bin / "uci").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{fake_uci}" "$@"\n')
        for stub in self.bin.iterdir():
            stub.chmod(0o755)
        (root / "harness.sh").write_text(HARNESS)
        self.ujail = root / "ujail"
        self.ujail.write_text("#!/bin/sh\n")
        self.ujail.chmod(0o755)
        self.config = root / "config" / "loxgw"
        self.config.parent.mkdir()
        self.config.write_text("config loxgw 'main'\n")
        self.log_path = root / "log"
        self.log_path.touch()
        self.uci_path = root / "uci.json"
        self.uci({"dhcp": [{"type": "dnsmasq", "name": None, "options": {}}],
                  "loxgw": [{"type": "loxgw", "name": "main", "options": {}}]})
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin", "T_LOG": str(self.log_path), "T_UCI": str(self.uci_path),
            "T_BIN": str(self.bin), "T_INIT": str(INIT), "T_CONFIG": str(self.config), "T_UJAIL": str(self.ujail),
            "T_FW4": str(root / "fw4"), "T_RUNNING": "dnsmasq", "T_USER_EXISTS": "1", "T_ENABLED": "1",
            "T_FIREWALL": "auto", "T_SOCKET": str(root / "run" / "loxgw" / "status.sock"), "T_VALIDATE_STATUS": "0",
        }

    def uci(self, state: dict[str, Any] | None = None) -> dict[str, Any]:
        """The UCI state; replaced first when given."""
        if state is not None:
            self.uci_path.write_text(json.dumps(state))
        loaded: dict[str, Any] = json.loads(self.uci_path.read_text())
        return loaded

    def fw4_chains(self, **chains: str) -> None:
        """fw4 running, with these rules in its chains (`nft list chain inet fw4 NAME` prints them)."""
        (self.root / "fw4").mkdir(exist_ok=True)
        for name, rules in chains.items():
            (self.root / "fw4" / name).write_text(f"table inet fw4 {{\n\tchain {name} {{\n{rules}\n\t}}\n}}\n")

    def init(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Call a function of the init script (start_service, rebind_exception ...)."""
        return self.run(["/bin/sh", str(self.root / "harness.sh"), *args], env)

    def script(self, text: str, **env: str) -> subprocess.CompletedProcess[str]:
        path = self.root / "script.sh"
        path.write_text(text)
        return self.run(["/bin/sh", str(path)], env)

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        self.log_path.write_text("")
        return subprocess.run(argv, env={**self.env, **env}, capture_output=True, text=True, timeout=30,
                              check=False, cwd=self.root)

    def log(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def calls(self, command: str) -> list[str]:
        return [line for line in self.log() if line.split(" ", 1)[0] == command]
