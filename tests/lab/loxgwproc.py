"""Run the real loxgw daemon inside a lab's router namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

from tests.lab.netlab import Lab, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Every lab daemon watches its event loop (loxgw.daemon.loopguard): a callback that holds it
# longer than this fails the test that stops the daemon. Not 20 ms: on this VM stalls of 40-70 ms
# happen with every thread of the daemon idle and the loop waiting in epoll (LOXGW_LOOP_DEBUG=1
# shows each thread's stack), and /proc/stat counts steal time; run-queue waits are already taken
# off. 100 ms still catches what the guard was built for (nft runs, a big status on the loop).
LOOP_GUARD_MS = "100"

LAB_CONFIG = """
config loxgw 'main'
\toption firewall 'standalone'
\toption log_level 'debug'
\toption status_socket '{socket}'
{main_extra}
config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'
\toption cloud '1'
\toption other_hosts '1'

config zone 'lan'
\toption role 'clients'
\tlist interface 'br-lan'
\toption cloud '1'
{extra}
"""


# The DNS tests' hosts carry no Loxone MAC (they test the DNS path, not who is a device), so the
# lab's IoT zone lets other hosts have the devices' entries; tests/lab/test_egress.py drops it.
class Loxgw:
    """A loxgw daemon process in the lab router; stop() or lab.down() ends it."""

    def __init__(self, lab: Lab, extra: str = "", main_extra: str = "", *, ns: str | None = None,
                 config_text: str | None = None, name: str = "loxgw") -> None:
        """`config_text` replaces the lab config ({socket} is filled in); `ns` defaults to the router."""
        self.lab = lab
        self.ns = ns or lab.ns_router
        self.config_path = lab.path(f"{name}.config")
        self.socket = lab.path(f"{name}.sock")
        self.log_path = lab.path(f"{name}.log")
        self.config_text = config_text
        self.write_config(extra, main_extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, extra: str = "", main_extra: str = "") -> None:
        with open(self.config_path, "w", encoding="utf-8") as handle:
            if self.config_text is not None:
                handle.write(self.config_text.replace("{socket}", self.socket))
            else:
                handle.write(LAB_CONFIG.format(socket=self.socket, extra=extra, main_extra=main_extra))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.ns, sys.executable, "-m", "loxgw",
                            "-c", self.config_path, *args, check=check)

    def start(self) -> Loxgw:
        self.launch()
        wait_for(self._ready, 10, "loxgw status socket")
        return self

    def launch(self) -> Loxgw:
        """Exec `loxgw run` and return at once (start() also waits for its status socket)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1", LOXGW_LOOP_GUARD_MS=LOOP_GUARD_MS)
        self.proc = self.lab.popen(
            self.ns,
            [sys.executable, "-m", "loxgw", "-c", self.config_path, "run"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"loxgw exited with {self.proc.returncode}:\n{self.log()}")
        return os.path.exists(self.socket)

    def status(self) -> dict[str, Any]:
        out = self.cli("status", "--json", "--full").stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def relay_on_path(self, path: str, timeout: float = 10) -> dict[str, Any]:
        """The relay's status once its copies run on `path` (the kernel takes them over after start-up)."""
        found: dict[str, Any] = {}

        def on_path() -> bool:
            found.update(self.status()["relay"])
            return bool(found.get("path") == path)

        wait_for(on_path, timeout, f"the relay's {path} path", interval=0.05)
        return found

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        blocked = [line for line in self.log().splitlines() if "event loop blocked" in line]
        assert blocked == [], f"the daemon's event loop was blocked: {blocked[:5]}"
        return code

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
