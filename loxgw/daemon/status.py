"""The status service: the snapshot, the status socket, and the status file beside it.

The snapshot is built from the services' own state in O(devices + names),
never under the DNS lock; `full` adds every DNS entry (taken under the lock)
and every pinhole. Protocol on the Unix socket: one request line (`status`,
`status full`, or a request another service handles), one JSON answer; with
a last word `text` or `json`, a status request is answered with what
`loxgw status` prints (edges.status.printable), rendered here.

The summary is also kept in a file beside the socket, for readers that should
not speak the socket protocol or start a process: the LuCI app's rpcd plugin
reads it every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from loxgw import __version__
from loxgw.daemon import logs
from loxgw.edges import clock
from loxgw.edges.status import format_human

if TYPE_CHECKING:
    from loxgw.daemon.app import Daemon

log = logging.getLogger("loxgw")

READ_TIMEOUT = 2.0
MAX_REQUEST = 512  # bytes of a request line
FILE_EVERY = 5.0  # seconds between rewrites of the status file
LARGE = 64  # devices beyond which even the summary is encoded in a thread

# A request word's handler: its answer, or (work that must not hold the loop) a coroutine of it.
Handler = Callable[[list[str]], dict[str, Any] | Awaitable[dict[str, Any]]]
PRINT_FORMS = ("text", "json")


def render(answer: dict[str, Any], form: str = "") -> bytes:
    """One JSON line, or what `loxgw status` prints: indented JSON (form "json") or format_human's text."""
    data = json.dumps(answer)
    if not form:
        return data.encode() + b"\n"
    printed = json.loads(data)  # what a client reading the JSON would see: keys are strings
    if form == "json":
        return json.dumps(printed, indent=2, sort_keys=True).encode() + b"\n"
    return format_human(printed).encode() + b"\n"


def print_form(request: bytes) -> str:
    """"text" or "json" for a status request that asks for what `loxgw status` prints, else ""."""
    words = request[:MAX_REQUEST].decode("ascii", "replace").split()
    return words[-1] if len(words) > 1 and words[0] == "status" and words[-1] in PRINT_FORMS else ""


class StatusService:
    """Serves the snapshot on the socket and keeps the file."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.handlers: dict[str, Handler] = {}  # request word -> handler (e.g. "explain")
        self.client_errors = 0
        self._server: asyncio.AbstractServer | None = None
        self._file_task: asyncio.Task[None] | None = None
        self._path = ""
        self._requests: set[asyncio.Task[Any]] = set()  # clients being answered (doctor's may wait)

    @property
    def file_path(self) -> str:
        return os.path.splitext(self._path or self.daemon.config.main.status_socket)[0] + ".json"

    async def start(self, path: str) -> None:
        self._path = path
        self._server = await asyncio.start_unix_server(self._serve, path=path)
        os.chmod(path, 0o660)
        self._file_task = asyncio.get_running_loop().create_task(self._keep_file())

    async def close(self) -> None:
        """Stop serving: requests being answered are cancelled (the daemon closes this service first, so
        that no answer resumes in services already closed), the socket and the file removed."""
        requests = list(self._requests)
        for request in requests:
            request.cancel()
        await asyncio.gather(*requests, return_exceptions=True)  # gone before the next service closes
        if self._file_task is not None:
            self._file_task.cancel()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.file_path)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)

    def snapshot(self, full: bool = False) -> dict[str, Any]:
        """Everything `loxgw status` shows, as JSON-able data."""
        d = self.daemon
        cfg = d.config
        applied = d.firewall.applied
        dns = d.dns.status(full)
        counters: Counter[str] = Counter(d.counters)
        counters.update(d.devices.counters)
        if d.devices.detector is not None:
            counters.update(d.devices.detector.counters)
        counters.update(d.firewall.counters)
        counters["ruleset_applies"] = d.firewall.counters["declares"] + d.firewall.counters["diffs"]
        counters["status_client_errors"] = self.client_errors
        devices = d.devices.status(applied.holes_per_device, dns.pop("dns_entries_per_device"))
        if full:
            holes: dict[str, list[str]] = {}
            for hole in applied.holes:
                for end in {hole.src, hole.dst}:
                    if end is not None:
                        holes.setdefault(str(end), []).append(hole.describe())
            for device in devices:
                device["pinholes"] = holes.get(device["ip"] or "", [])
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(clock.now() - d.started, 1),
            "config": cfg.path,
            "enabled": cfg.main.enabled,
            "firewall": d.mode,
            "table": applied.table or cfg.main.table,
            "installed": applied.table is not None,
            **{k: v for k, v in dns.items() if k != "counters"},
            "ruleset_applies": counters["ruleset_applies"],
            "zones": [{"name": z.name, "role": z.role, "interfaces": list(z.interfaces),
                       "networks": list(z.networks), "cloud": z.cloud} for z in cfg.zones],
            "devices": devices,
            "relays": [asdict(r) | {"ports": [str(p) for p in r.ports]} for r in cfg.relays],
            "upnp": d.upnp.status(),
            "relay": d.relay.status(),
            "intercom": d.intercom.status(),
            "reflector": d.reflector.status(),
            "knx": d.knx.status(),
            "blocked": d.diagnose.status(),
            "devices_refused_cap": d.devices.inventory.refused,
            "devices_refused": dict(d.devices.inventory.refusals),
            "counters": dict(counters) | dns["counters"],
            "failures": logs.failures(),
            "last_error": d.last_error or d.firewall.last_error or d.relay.last_error,
        }

    def answer(self, request: bytes) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """The answer to one request line (`status full` still holds copied DNS entries: see encode),
        or a coroutine of it (a handler's)."""
        words = request[:MAX_REQUEST].decode("ascii", "replace").split()
        handler = self.handlers.get(words[0]) if words else None
        if handler is not None:
            return handler(words[1:])
        return self.snapshot(full=words[1:2] == ["full"])

    def encode(self, answer: dict[str, Any], form: str = "") -> bytes:
        """The answer as one JSON line, or as `loxgw status` prints it (`form`: see print_form); copied DNS
        entries are described here (in a thread when many)."""
        if "dns_entries" in answer:
            answer["dns_entries"] = self.daemon.dns.describe_entries(answer["dns_entries"])
        return render(answer, form)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._requests.add(task)
        try:
            request = b""
            with contextlib.suppress(asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
                request = await asyncio.wait_for(reader.readline(), timeout=READ_TIMEOUT)
            answer = self.answer(request)
            if inspect.isawaitable(answer):
                answer = await answer
            # A full answer with 20,000 DNS entries takes hundreds of milliseconds to describe and
            # encode: never on the event loop (the summary takes ~2 ms and stays here).
            full = "dns_entries" in answer or len(answer.get("devices", ())) > LARGE
            form = print_form(request)
            data = await asyncio.to_thread(self.encode, answer, form) if full else self.encode(answer, form)
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError):
            self.client_errors += 1
        finally:
            self._requests.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def write_file(self, summary: dict[str, Any]) -> None:
        """The summary as JSON (mode 0640), replaced atomically; `written_at` tells readers its age."""
        path = self.file_path
        tmp = path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                # dumps, not dump: json.dump encodes in Python (200 devices: 5 ms a write against 2 ms)
                handle.write(json.dumps(summary | {"written_at": round(time.time())}))
            os.replace(tmp, path)
        except OSError as exc:
            logs.log_failure(log, f"writing {path}", exc)

    async def _keep_file(self) -> None:
        while True:
            # The snapshot is taken on the loop (services' state is the loop's); encoding and the
            # write go to a thread.
            await asyncio.to_thread(self.write_file, self.snapshot())
            await asyncio.sleep(FILE_EVERY)
