"""DNS entries across restarts and rebuilt tables: the state file, and entries put back in verified batches.

Why batches: nfnetlink takes a whole batch in one sendmsg and refuses it
with EMSGSIZE beyond the socket's send buffer (net.core.wmem_default,
208 KiB on Linux and OpenWrt). One element message is ~100 bytes with an
IPv4 key, ~130 with an IPv6 key, and twice that where a refresh is a
destroy and an add (edges.nftset "replace"): one batch of 3,036 grants was
refused, so every entry of a restart was lost. BATCH grants make at most
~66 KB.

Why per batch is verified: a batch is one transaction, taken whole or not
at all, and nfnetlink runs in the sender's context, so the kernel's errors
for it are on the socket when send() returns. Reading them right after each
batch (under the DNS lock, so the DNS thread's own errors are not mistaken
for the batch's) says exactly which grants went in; only those enter the
ledger, and the state file goes only once all of it is back.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from loxgw.core import dns
from loxgw.core.config import IPAddress
from loxgw.core.dnsledger import GrantLedger
from loxgw.core.errors import KernelError
from loxgw.core.record import record

log = logging.getLogger("loxgw")

BATCH = 256  # grants per netlink batch (see above)
STATE_VERSION = 1
# 65,536 records of ~170 bytes: ~11 MB. A bigger file is not one loxgw wrote.
MAX_STATE_BYTES = 32 << 20


class SetWriter(Protocol):
    """edges.nftset.SetWriter, as the DNS service uses it."""

    @property
    def errors(self) -> int: ...

    def add(self, grants: list[dns.Grant], drain: bool = True) -> int: ...
    def add_elements(self, elements: Iterable[tuple[str, bytes, int]], drain: bool = True,
                     expires: int | None = None) -> int: ...
    def drain_errors(self) -> int: ...
    def close(self) -> None: ...


class BatchedWriter:
    """A set writer that sends at most BATCH grants per netlink batch.

    DNS copies read together go in as one add(): a burst of answers (16
    addresses each) made one batch of thousands of grants, refused whole
    with EMSGSIZE (measured: 7,936 of 10,000 entries lost at ~250 answers/s).
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    @property
    def errors(self) -> int:
        count: int = self.writer.errors
        return count

    def add(self, grants: list[dns.Grant], drain: bool = True) -> int:
        sent = 0
        for start in range(0, len(grants), BATCH):
            sent += self.writer.add(grants[start:start + BATCH], drain)
        return sent

    def add_elements(self, elements: Iterable[tuple[str, bytes, int]], drain: bool = True,
                     expires: int | None = None) -> int:
        items = list(elements)
        sent = 0
        for start in range(0, len(items), BATCH):
            sent += self.writer.add_elements(items[start:start + BATCH], drain, expires)
        return sent

    def drain_errors(self) -> int:
        code: int = self.writer.drain_errors()
        return code

    def close(self) -> None:
        self.writer.close()


@record
class PutBack:
    """How one putting back of entries went: what was wanted, what the kernel took, and its last refusal."""

    source: str  # "state file" or "rebuilt table"
    wanted: int
    restored: int
    seconds: float
    error: str = ""

    @property
    def refused(self) -> int:
        return self.wanted - self.restored

    def status(self) -> dict[str, object]:
        return {"source": self.source, "wanted": self.wanted, "restored": self.restored,
                "refused": self.refused, "seconds": round(self.seconds, 3), "error": self.error or None}


def put_back(writer: SetWriter, grants: list[dns.Grant], ledger: GrantLedger, lock: threading.Lock,
             clock: Callable[[], float], source: str, live: bool = False) -> PutBack:
    """Put grants into the kernel BATCH at a time; each batch the kernel took goes into the ledger.

    `live`: the grants are a copy of the ledger taken while the DNS thread
    runs; each batch is brought up to date under the lock, so an answer
    that came meanwhile keeps its later expiry.
    """
    started = clock()
    offered = restored = 0
    error = ""
    for start in range(0, len(grants), BATCH):
        batch = grants[start:start + BATCH]
        with lock:
            if live:
                batch = ledger.as_now(batch, clock())
            offered += len(batch)
            try:
                with contextlib.suppress(OSError):  # lost replies of the DNS thread's: not this batch's
                    writer.drain_errors()  # the DNS thread's, not this batch's (counted in writer.errors)
                writer.add(batch, drain=False)
                code = writer.drain_errors()
            except (KernelError, OSError) as exc:  # OSError: ENOBUFS, errors were lost
                code = getattr(exc, "errno", None) or -1
            if code == 0:
                ledger.record(batch, clock())
                restored += len(batch)
                continue
        error = os.strerror(code) if code > 0 else "unknown"
    return PutBack(source, offered, restored, clock() - started, error)


def kernel_grants(listing: dict[str, list[tuple[list[str], int]]],
                  profiles: tuple[dns.Profile, ...]) -> list[dns.Grant]:
    """The grants a listing of the cloud sets holds (what a loxgw that was killed left), as the ledger keeps them."""
    grants = []
    parsed: dict[str, IPAddress] = {}  # devices (and often addresses) repeat: parse each once
    for name, elements in listing.items():
        try:
            profile = profiles[int(name.split("_", 1)[1])]
        except (IndexError, ValueError):
            continue
        for fields, expires in elements:
            try:
                device, address = (parsed.get(f) or parsed.setdefault(f, ipaddress.ip_address(f)) for f in fields)
            except ValueError:
                continue
            grants.append(dns.Grant(device, address, profile, expires, "(adopted)"))
    return grants


def read_state(path: str, profiles: tuple[dns.Profile, ...], wall: float, max_timeout: int) -> list[dns.Grant] | None:
    """The grants saved in `path`, with the time left now (`wall`: wall-clock seconds).

    None when there is no file, or none that loxgw wrote (then it is left alone, and logged).
    Wall clock, not monotonic: the saved time must mean something after a reboot.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_STATE_BYTES:
                log.warning("ignoring %s: not a regular file of at most %d bytes", path, MAX_STATE_BYTES)
                return None
            saved = json.loads(handle.read(MAX_STATE_BYTES + 1))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    records, elapsed = saved, 0.0
    if isinstance(saved, dict):  # {"version", "saved_at", "entries"}; a bare list is an older loxgw's
        records = saved.get("entries")
        saved_at = saved.get("saved_at")
        if isinstance(saved_at, (int, float)):
            elapsed = max(0.0, wall - saved_at)
    return GrantLedger.parse_dump(records, profiles, elapsed, max_timeout=max_timeout)


def write_state(path: str, records: list[dict[str, object]], wall: float) -> None:
    """Write the records for the next start, readable by root only (every device's names and addresses)."""
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # O_EXCL below: a file left there keeps its own mode, a link its target
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        # dumps, not dump: json.dump encodes in Python (50,000 records: 1.2 s against 0.3 s)
        handle.write(json.dumps({"version": STATE_VERSION, "saved_at": wall, "entries": records}))
    os.replace(tmp, path)


def remove_state(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
