"""Adapter to the nft command: one transaction per call, kernel errors carry errno.

Whole-ruleset changes are rare (start, reload, firewall restart), so they go
through `nft -f -`, which applies a script atomically. Per-answer set element
updates take a netlink path instead (see the DNS feature).
"""

from __future__ import annotations

import errno as errno_module
import json
import os
import shutil
import socket
import struct
import subprocess

from loxgw.core.errors import KernelError

# nft reports kernel refusals as strerror text; map it back to the errno.
_STRERROR_TO_ERRNO = {os.strerror(code): code for code in sorted(errno_module.errorcode)}


def _errno_from_text(text: str) -> int | None:
    for message, code in _STRERROR_TO_ERRNO.items():
        if message and message in text:
            return code
    return None


def nft_binary() -> str:
    """Path of the nft command; KernelError if nftables is not installed."""
    found = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise KernelError("nft not found (install nftables)", errno_module.ENOENT)
    return found


def run_script(script: str, *, check_only: bool = False, what: str = "nft -f") -> None:
    """Apply (or with check_only, just validate) an nft script in one transaction."""
    args = [nft_binary(), "-c", "-f", "-"] if check_only else [nft_binary(), "-f", "-"]
    proc = subprocess.run(args, input=script, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.strip()
        raise KernelError(what, _errno_from_text(detail), detail)


def table_exists(table: str) -> bool:
    """Whether `table inet NAME` exists in the current network namespace.

    Lists table names only: listing the table itself would dump every set
    element, which grows with the DNS entries.
    """
    proc = subprocess.run(
        [nft_binary(), "list", "tables", "inet"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"table inet {table}" in proc.stdout.splitlines()


def list_set_elements(table: str, prefix: str) -> dict[str, list[tuple[list[str], int]]]:
    """Elements of the sets whose name starts with `prefix`: set -> [(key fields, seconds left)].

    One `nft -j` call at start-up, to adopt what a previous loxgw left in the kernel.
    """
    proc = subprocess.run([nft_binary(), "-j", "list", "table", "inet", table],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {}
    found: dict[str, list[tuple[list[str], int]]] = {}
    for item in json.loads(proc.stdout).get("nftables", []):
        nft_set = item.get("set")
        if not nft_set or not str(nft_set.get("name", "")).startswith(prefix):
            continue
        elements = found.setdefault(nft_set["name"], [])
        for elem in nft_set.get("elem", []):
            inner = elem.get("elem", {}) if isinstance(elem, dict) else {}
            value = inner.get("val", {})
            fields = value.get("concat") if isinstance(value, dict) else None
            if isinstance(fields, list) and "expires" in inner:
                elements.append(([str(f) for f in fields], int(inner["expires"])))
    return found


def fw4_present() -> bool:
    """Whether this router runs OpenWrt's firewall4."""
    return any(os.access(p, os.X_OK) for p in ("/sbin/fw4", "/usr/sbin/fw4"))


NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
# Deletions are what can take loxgw's objects away (fw4 restart, nft flush ruleset,
# iptables -D); additions, set elements above all, are ignored.
_DELETIONS = {2, 5, 8, 11}  # NFT_MSG_DELTABLE, DELCHAIN, DELRULE, DELSET


class RulesetWatch:
    """Kernel notifications of nftables changes (multicast group NFNLGRP_NFTABLES).

    Lets the daemon repair its firewall within milliseconds of a deletion
    without polling with subprocesses, whose forks stall the event loop.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def drain(self) -> bool:
        """Read every pending notification; True if one was a deletion (or some were lost)."""
        deleted = False
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return deleted
            except OSError:  # ENOBUFS: notifications were lost, so assume the worst
                deleted = True
                continue
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind >> 8 == NFNL_SUBSYS_NFTABLES and kind & 0xFF in _DELETIONS:
                    deleted = True
                offset += max((length + 3) & ~3, 16)
