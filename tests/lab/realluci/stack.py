"""A real LuCI stack (ubusd, rpcd, uhttpd, LuCI's ucode dispatcher) in a chroot, with luci-app-loxgw installed.

The root comes from build.sh. The stack runs in its own mount namespace: the chroot sees
the host's /dev and /proc, the host's / at /host (so /usr/bin/loxgw can run the repo's
real `loxgw check`), and the lab's directory at the same path (so the status file and
socket named in the copied config resolve inside the chroot as outside). What an
OpenWrt router has but this stack does not build is stood in: procd's `service` and
netifd's objects come from standin.uc (which logs the config changes rpcd reports to
procd), and /etc/init.d/loxgw logs what rpcd's `rc` asked it to do.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
APP = os.path.join(REPO, "openwrt", "luci", "luci-app-loxgw")
PASSWORD = "loxgw-local-check"
PYTHON = os.path.join(REPO, ".venv", "bin", "python")

RPCD_CONFIG = """config rpcd
\toption socket /var/run/ubus/ubus.sock
\toption timeout 30

config login
\toption username 'root'
\toption password '{hash}'
\tlist read '*'
\tlist write '*'
"""

LUCI_CONFIG = """config core 'main'
\toption lang 'en'
\toption mediaurlbase '/luci-static/bootstrap'
\toption resourcebase '/luci-static/resources'
\toption ubuspath '/ubus/'
\toption pollinterval '5'

config internal 'languages'

config internal 'sauth'
\toption sessionpath '/tmp/luci-sessions'
\toption sessiontime '3600'

config internal 'ccache'
\toption enable '0'

config internal 'themes'
\toption Bootstrap '/luci-static/bootstrap'

config internal 'apply'
\toption rollback '90'
\toption holdoff '4'
\toption timeout '5'
\toption display '1.5'
"""

# procd would run the init script; here it only records the action.
INIT_SCRIPT = """#!/bin/sh
echo "$1" >> /tmp/loxgw-init.log
"""

# `loxgw` in the chroot is the repo's real CLI, run on the host's side of the chroot. Only
# `-c /etc/config/loxgw` is rewritten: the messages then name the root's file by its host path.
LOXGW_WRAPPER = """#!/bin/sh
for a in "$@"; do
\tshift
\t[ "$a" = /etc/config/loxgw ] && a={root}/etc/config/loxgw
\tset -- "$@" "$a"
done
exec /usr/sbin/chroot /host /usr/bin/env PYTHONPATH={repo} {python} -m loxgw "$@"
"""

START = """#!/bin/sh
/usr/sbin/ubusd &
while [ ! -S /var/run/ubus/ubus.sock ]; do /bin/sleep 0.1; done
/usr/sbin/rpcd &
/usr/bin/ucode /etc/realluci/standin.uc {status_file} &
exec /usr/bin/uhttpd -f -h /www -p 127.0.0.1:{port} -t 60 -u /ubus -x /cgi-bin \\
\t-o /cgi-bin/luci -O /usr/share/ucode/luci/uhttpd.uc
"""


def install_app(root: str) -> None:
    """Lay out luci-app-loxgw as luci.mk would: htdocs under /www, root/ as it is."""
    shutil.copytree(os.path.join(APP, "htdocs"), os.path.join(root, "www"), dirs_exist_ok=True)
    shutil.copytree(os.path.join(APP, "root"), root, dirs_exist_ok=True)


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def prepare(root: str, *, loxgw_config: str, network_config: str, status_file: str, port: int) -> None:
    """Install the app and the configs, init script and stand-ins the stack runs with."""
    install_app(root)
    hashed = subprocess.run(["openssl", "passwd", "-5", PASSWORD], capture_output=True, text=True,
                            check=True).stdout.strip()
    etc = os.path.join(root, "etc")
    # ubusd refuses a client whose uid has no passwd entry.
    _write(os.path.join(etc, "passwd"), "root:x:0:0:root:/root:/bin/sh\n")
    _write(os.path.join(etc, "group"), "root:x:0:\n")
    _write(os.path.join(etc, "config", "rpcd"), RPCD_CONFIG.format(hash=hashed))
    _write(os.path.join(etc, "config", "luci"), LUCI_CONFIG)
    _write(os.path.join(etc, "config", "network"), network_config)
    _write(os.path.join(etc, "config", "loxgw"), loxgw_config)
    _write(os.path.join(etc, "config", "ucitrack"), "")
    _write(os.path.join(etc, "init.d", "loxgw"), INIT_SCRIPT, 0o755)
    _write(os.path.join(root, "usr", "bin", "loxgw"),
           LOXGW_WRAPPER.format(root=root, repo=REPO, python=PYTHON), 0o755)
    _write(os.path.join(etc, "realluci", "start.sh"), START.format(status_file=status_file, port=port), 0o755)
    shutil.copy(os.path.join(HERE, "standin.uc"), os.path.join(etc, "realluci", "standin.uc"))
    for tool in ("/usr/bin/sleep", "/usr/sbin/chroot"):
        shutil.copy(tool, os.path.join(root, tool.lstrip("/").replace("usr/bin/", "bin/")))
    for stale in glob.glob(os.path.join(root, "tmp", "lxgw-*")):  # mount points of earlier labs
        with contextlib.suppress(OSError):
            os.rmdir(stale)
    for path in ("var/run/ubus", "tmp", "host", "dev", "proc", status_file.lstrip("/").rsplit("/", 1)[0]):
        os.makedirs(os.path.join(root, path), exist_ok=True)
    for stale in ("tmp/loxgw-init.log", "tmp/service-events.log"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(root, stale))


@contextlib.contextmanager
def running(root: str, *, lab_dir: str, port: int, log_path: str) -> Iterator[str]:
    """The stack, serving http://127.0.0.1:port/ until the block ends; yields that URL."""
    mounts = "; ".join([
        f"mount --bind /dev {root}/dev", f"mount -t proc proc {root}/proc",
        f"mount --bind / {root}/host", f"mount --bind {lab_dir} {root}{lab_dir}",
        f"exec chroot {root} /bin/sh /etc/realluci/start.sh",
    ])
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-ec", mounts],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the LuCI stack exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(url + "cgi-bin/luci/", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # 403 to an anonymous visitor: uhttpd and the dispatcher answer
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"uhttpd did not answer on {url}; see {log_path}") from None
                time.sleep(0.1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
