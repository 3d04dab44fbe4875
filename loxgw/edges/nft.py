"""Adapter to nftables: the nft command for scripts, netlink for the few small requests.

Whole-ruleset changes are rare (start, reload, firewall restart), so they go
through `nft -f -`, which applies a script atomically; kernel errors carry
errno. Per-answer set element updates take a netlink path instead (see the
DNS feature). Questions a start-up asks (does a table exist, what does a
set hold) and the scratch table of the set-refresh probe go over netlink
too (NetfilterRequests): each `nft` run costs a process (about 7 ms of CPU
here, 10-20 times that on a router), and start-up ran nine.
"""

from __future__ import annotations

import errno as errno_module
import json
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from loxgw.core import nftwatch
from loxgw.core.errors import KernelError
from loxgw.edges import socketfilter

if TYPE_CHECKING:
    import asyncio

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
    """Whether `table inet NAME` exists in the current network namespace (one netlink request, no process)."""
    with NetfilterRequests() as requests:
        return requests.table_exists(table)


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
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
NFPROTO_INET, NFPROTO_NETDEV = 1, 5
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWSET = 3, 6, 9
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 12, 13, 14
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE, NFTA_SET_KEY_LEN, NFTA_SET_ID = 1, 2, 3, 4, 5, 10
NFT_SET_TIMEOUT = 0x10
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION = 1, 4, 5
NFTA_DATA_VALUE = 1
NFT_MSG_GETOBJ = 19
NFTA_OBJ_TABLE, NFTA_OBJ_NAME, NFTA_OBJ_TYPE, NFTA_OBJ_DATA = 1, 2, 3, 4
NFT_OBJECT_COUNTER = 1
NFTA_COUNTER_PACKETS = 2
MAX_REPLY_BYTES = 1 << 20  # one netlink read; a dump answers in parts of a page or so


def attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    header = struct.pack("=HH", 4 + len(payload), kind | (NLA_F_NESTED if nested else 0))
    return header + payload + b"\0" * (-len(payload) % 4)


def message(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    """One nfnetlink message: the netlink header, the nfgen header (version 0), the attributes."""
    header = struct.pack("=IHHII", 16 + 4 + len(body), kind, flags, seq, 0)
    return header + struct.pack("=BBH", family, 0, socket.htons(res_id)) + body


def nft_message(command: int, flags: int, seq: int, body: bytes, family: int = NFPROTO_INET) -> bytes:
    """An nf_tables message about a family (inet unless said)."""
    return message((NFNL_SUBSYS_NFTABLES << 8) | command, flags, seq, family, 0, body)


def batch_marker(kind: int, seq: int) -> bytes:
    """NFNL_MSG_BATCH_BEGIN or _END for nf_tables."""
    return message(kind, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, b"")


def attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute in `data`; a truncated one ends the walk (the kernel's bytes)."""
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > len(data):
            return
        yield kind & NLA_TYPE_MASK, data[offset + 4 : offset + length]
        offset += (length + 3) & ~3


def replies(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload after the netlink header) of each message in one netlink read."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _, seq = struct.unpack_from("=IHHI", data, offset)
        if length < 16 or offset + length > len(data):
            return
        yield kind, seq, data[offset + 16 : offset + length]
        offset += (length + 3) & ~3


def netlink_errors(data: bytes) -> list[int]:
    """The errnos of the NLMSG_ERROR messages in one netlink read (acknowledgements, code 0, left out)."""
    return [code for kind, _, payload in replies(data) if kind == NLMSG_ERROR and len(payload) >= 4
            and (code := -struct.unpack_from("=i", payload)[0])]


class NetfilterRequests:
    """Requests to nf_tables on a netlink socket of their own, each answered before the next.

    Blocking with a timeout: a request is answered inside the kernel's
    receive path, so the answer is queued when send() returns; the timeout
    only guards against a kernel that never answers.
    """

    def __init__(self, timeout: float = 2.0, sock: socket.socket | None = None) -> None:
        """`sock`: a bound NETLINK_NETFILTER socket (tests pass a double); by default one of its own."""
        if sock is None:
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            except OSError as exc:
                raise KernelError("netlink socket (NETLINK_NETFILTER)", exc.errno, exc.strerror or "") from exc
            sock.bind((0, 0))
        self.sock = sock
        self.sock.settimeout(timeout)
        self.seq = 0

    def __enter__(self) -> NetfilterRequests:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _exchange(self, data: bytes, what: str, first_seq: int, last_seq: int) -> list[bytes]:
        """Send `data`; read until the answer to `last_seq` is complete. The data messages' payloads;
        KernelError with the first errno the kernel answered. Replies to earlier requests are skipped."""
        found: list[bytes] = []
        try:
            self.sock.send(data)
            while True:
                for kind, seq, payload in replies(self.sock.recv(MAX_REPLY_BYTES)):
                    if not first_seq <= seq <= last_seq:
                        continue
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else errno_module.EPROTO
                        if code:
                            raise KernelError(what, code, os.strerror(code))
                        if seq == last_seq:
                            return found
                    elif kind == NLMSG_DONE:
                        return found
                    else:
                        found.append(payload)
        except OSError as exc:
            raise KernelError(what, exc.errno, exc.strerror or "") from exc

    def get(self, command: int, body: bytes, what: str, dump: bool = False, family: int = NFPROTO_INET) -> list[bytes]:
        """A GET request (or a dump of every match): the answers' payloads (nfgen header and attributes)."""
        seq = self._next_seq()
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        return self._exchange(nft_message(command, flags, seq, body, family), what, seq, seq)

    def transact(self, commands: Sequence[tuple[int, int, bytes]], what: str, check_only: bool = False) -> None:
        """(command, flags, attributes) messages in one batch, each acknowledged; KernelError if refused
        (and then the kernel applied none of them). `check_only`: without the batch's end, as `nft -c`
        sends it: the kernel validates every message, then aborts."""
        begin = self._next_seq()
        parts = [batch_marker(NFNL_MSG_BATCH_BEGIN, begin)]
        for command, flags, body in commands:
            parts.append(nft_message(command, flags | NLM_F_REQUEST | NLM_F_ACK, self._next_seq(), body))
        last = self.seq
        if not check_only:
            parts.append(batch_marker(NFNL_MSG_BATCH_END, self._next_seq()))
        self._exchange(b"".join(parts), what, begin, last)

    def table_exists(self, table: str) -> bool:
        """Whether `table inet NAME` exists."""
        try:
            self.get(NFT_MSG_GETTABLE, attr(NFTA_TABLE_NAME, table.encode() + b"\0"), "nft get table")
        except KernelError as exc:
            if exc.errno == errno_module.ENOENT:
                return False
            raise
        return True

    def create_timeout_set(self, table: str, set_name: str, key_type: int, key_length: int) -> None:
        """`table inet TABLE { set SET { type ...; flags timeout; } }` in one batch (`key_type`: nft's id)."""
        name = table.encode() + b"\0"
        nft_set = (attr(NFTA_SET_TABLE, name) + attr(NFTA_SET_NAME, set_name.encode() + b"\0")
                   + attr(NFTA_SET_FLAGS, struct.pack(">I", NFT_SET_TIMEOUT))
                   + attr(NFTA_SET_KEY_TYPE, struct.pack(">I", key_type))
                   + attr(NFTA_SET_KEY_LEN, struct.pack(">I", key_length)) + attr(NFTA_SET_ID, struct.pack(">I", 1)))
        self.transact([(NFT_MSG_NEWTABLE, NLM_F_CREATE, attr(NFTA_TABLE_NAME, name)),
                       (NFT_MSG_NEWSET, NLM_F_CREATE, nft_set)], f"creating table inet {table}")

    def flush_set(self, table: str, set_name: str) -> None:
        """Every element of a set deleted (a delete without elements flushes)."""
        names = attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0") + \
            attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
        self.transact([(NFT_MSG_DELSETELEM, 0, names)], f"flush set inet {table} {set_name}")

    def delete_table(self, table: str) -> None:
        """`delete table inet TABLE`; no error if it is not there."""
        try:
            self.transact([(NFT_MSG_DELTABLE, 0, attr(NFTA_TABLE_NAME, table.encode() + b"\0"))],
                          f"delete table inet {table}")
        except KernelError as exc:
            if exc.errno != errno_module.ENOENT:
                raise

    def set_expirations(self, table: str, set_name: str) -> list[tuple[bytes, int]]:
        """(key, milliseconds until it expires) of each element of a set; 0 where it has no timeout."""
        names = attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0") + \
            attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
        found = []
        for payload in self.get(NFT_MSG_GETSETELEM, names, f"nft list set {set_name}", dump=True):
            for kind, elements in attributes(payload[4:]):
                if kind != NFTA_SET_ELEM_LIST_ELEMENTS:
                    continue
                for _, element in attributes(elements):
                    fields = dict(attributes(element))
                    key = dict(attributes(fields.get(NFTA_SET_ELEM_KEY, b""))).get(NFTA_DATA_VALUE, b"")
                    expires = fields.get(NFTA_SET_ELEM_EXPIRATION, b"")
                    found.append((key, struct.unpack(">Q", expires)[0] if len(expires) == 8 else 0))
        return found

    def counters(self, table: str, family: int = NFPROTO_NETDEV) -> dict[str, int]:
        """Packets of each named counter of a table, as `nft list counters table` shows them."""
        body = attr(NFTA_OBJ_TABLE, table.encode() + b"\0") + attr(NFTA_OBJ_TYPE, struct.pack(">I", NFT_OBJECT_COUNTER))
        found = {}
        for payload in self.get(NFT_MSG_GETOBJ, body, f"nft list counters table {table}", dump=True, family=family):
            fields = dict(attributes(payload[4:]))
            if fields.get(NFTA_OBJ_TABLE, b"").rstrip(b"\0") != table.encode():
                continue
            data = dict(attributes(fields.get(NFTA_OBJ_DATA, b"")))
            packets = data.get(NFTA_COUNTER_PACKETS, b"")
            name = fields.get(NFTA_OBJ_NAME, b"").rstrip(b"\0").decode(errors="replace")
            if name and len(packets) == 8:
                found[name] = struct.unpack(">Q", packets)[0]
        return found


class RulesetWatch:
    """Kernel notifications of nftables changes (multicast group NFNLGRP_NFTABLES).

    Lets the daemon repair its firewall within milliseconds of a deletion
    without polling with subprocesses, whose forks stall the event loop.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        # Element and generation notifications never reach Python (core.nftwatch says why).
        socketfilter.attach(self.sock, nftwatch.notification_filter())
        self.sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        self.sock.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_deletion: Callable[[set[nftwatch.Table]], None] = lambda deleted: None

    def fileno(self) -> int:
        return self.sock.fileno()

    def start(self, loop: asyncio.AbstractEventLoop, on_deletion: Callable[[set[nftwatch.Table]], None]) -> None:
        """Call `on_deletion` on the loop with the tables of the deletions read (see drain).

        Every set element anyone writes is a notification too: 50,000 DNS
        entries put back after a flush are 50,000 messages, 50-100 ms of
        parsing. They are read in a thread, never on the loop; the reader is
        off meanwhile, and epoll is level-triggered, so nothing that arrives
        in between is missed.
        """
        self._loop, self._on_deletion = loop, on_deletion
        loop.add_reader(self.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        assert self._loop is not None
        self._loop.remove_reader(self.fileno())
        self._loop.run_in_executor(None, self.drain).add_done_callback(self._on_drained)

    def _on_drained(self, drained: asyncio.Future[set[nftwatch.Table]]) -> None:
        if not drained.cancelled() and drained.exception() is None and drained.result():
            self._on_deletion(drained.result())
        if self._loop is not None and self.sock.fileno() >= 0:  # not closed meanwhile
            self._loop.add_reader(self.fileno(), self._on_readable)

    def close(self) -> None:
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.fileno())
        self._loop = None
        self.sock.close()

    def drain(self) -> set[nftwatch.Table]:
        """Read every pending notification; the tables deletions were in (core.nftwatch.deleted_tables),
        empty if none was a deletion, ANY_TABLE among them if some were lost."""
        deleted: set[nftwatch.Table] = set()
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return deleted
            except OSError as exc:
                if exc.errno != errno_module.ENOBUFS:  # closed under a drain (daemon stopping)
                    return deleted
                deleted.add(nftwatch.ANY_TABLE)  # notifications were lost, so assume the worst
                continue
            deleted |= nftwatch.deleted_tables(data)
