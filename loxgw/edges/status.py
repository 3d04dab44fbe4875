"""The status channel: the daemon serves a JSON snapshot on a Unix socket.

Protocol: the client sends one line ("status\\n", "status full\\n"), the daemon
answers one JSON document and closes. Small and debuggable with socat. A last
word "text" or "json" asks for what `loxgw status` prints instead (the
daemon renders it, format_human or indented JSON), so the command line
imports neither json nor typing: ~15 ms of each `loxgw status`, which LuCI
runs every few seconds.
"""

from __future__ import annotations

import _socket  # socket.py's enums and selectors cost ~3 ms of each `loxgw status` (~40 ms in all)

from loxgw.core.errors import LoxgwError

TYPE_CHECKING = False  # typing itself costs `loxgw status` ~4 ms; mypy reads this name as True
if TYPE_CHECKING:
    from typing import Any

MAX_STATUS_BYTES = 16 * 1024 * 1024


class NotRunning(LoxgwError):
    """No daemon answers on the status socket."""


def query(path: str, timeout: float = 5.0, full: bool = False, line: bytes | None = None) -> dict[str, Any]:
    """Ask the daemon at `path` for its status (`full`: every DNS entry and pinhole, not counts), or send
    another request `line` (edges.diagnose) and return its JSON answer."""
    request = line if line is not None else b"status full\n" if full else b"status\n"
    return _json_object(_exchange(path, timeout, request))


def _json_object(data: bytes) -> dict[str, Any]:
    import json  # not at the top: `loxgw status` needs no JSON of its own (see printable)

    try:
        result = json.loads(data)
    except ValueError as exc:
        raise LoxgwError("the daemon's answer is not JSON") from exc
    if not isinstance(result, dict):
        raise LoxgwError("status answer is not a JSON object")
    return result


def printable(path: str, full: bool = False, form: str = "text", timeout: float = 5.0) -> str:
    """What `loxgw status` prints (`form`: "text", format_human's, or "json", indented), rendered by the daemon."""
    # Indented JSON is ~1.4 times the compact answer the cap was set for.
    data = _exchange(path, timeout, b"status" + (b" full " if full else b" ") + form.encode() + b"\n",
                     limit=2 * MAX_STATUS_BYTES)
    if not data.strip():
        raise LoxgwError(f"loxgw at {path} gave no answer")
    if data.startswith(b"{") and form == "text":  # a daemon older than this command answers JSON
        return format_human(_json_object(data))
    return data.decode("utf-8", "replace").rstrip("\n")


def _exchange(path: str, timeout: float, request: bytes, limit: int = MAX_STATUS_BYTES) -> bytes:
    """Send one request line, read the answer until the daemon closes (at most `limit` bytes)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(f"loxgw is not running (no daemon at {path}: {exc.strerror})") from exc
        sock.sendall(request)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise LoxgwError("status answer too large")
    except TimeoutError as exc:
        raise NotRunning(f"loxgw at {path} did not answer within {timeout:g}s") from exc
    finally:
        sock.close()
    return b"".join(chunks)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_human(status: dict[str, Any]) -> str:
    """A readable rendering of a status snapshot."""
    out = [
        f"loxgw {status.get('version', '?')}  pid {status.get('pid', '?')}  "
        f"up {_age(status.get('uptime'))}",
        f"config:   {status.get('config', '?')}",
        f"firewall: {status.get('firewall', '?')} (table inet {status.get('table', '?')}, "
        f"{status.get('ruleset_applies', 0)} applies)",
        f"dns:      {status.get('dns_mode', '?')} (queue: {status.get('queue_mode', '?')}, "
        f"dns: {status.get('dns_path', '?')}, entries refreshed by: {status.get('set_refresh', '?')})",
    ]
    zones = status.get("zones", [])
    if zones:
        out.append("zones:")
        for zone in zones:
            cloud = " cloud" if zone.get("cloud") else ""
            out.append(
                f"  {zone['name']:<12} {zone['role']:<8} {', '.join(zone['interfaces']) or '-'}{cloud}"
            )
    devices = status.get("devices", [])
    out.append(f"devices:  {len(devices)}")
    for dev in devices:
        flag = "" if dev.get("product_known", True) else "  (product unknown: default ports only)"
        gone = "" if dev.get("present", True) else "  (gone, in grace period)"
        out.append(
            f"  {dev.get('name') or '-':<16} {dev.get('product', '?'):<16} "
            f"{dev.get('mac') or '-':<17} {dev.get('ip') or '-':<15} via {dev.get('source', '?')}, "
            f"seen {_age(dev.get('last_seen'))} ago{flag}{gone}"
        )
        unknown = "" if dev.get("product_known", True) else " (the Miniserver's until identified)"
        out.append(f"      {dev.get('pinhole_count', 0)} pinholes, {dev.get('dns_entry_count', 0)} DNS entries, "
                   f"egress {dev.get('egress', '?')}{unknown}")
        for hole in dev.get("pinholes", []):
            out.append(f"      {hole}")
    entries = status.get("dns_entries", [])
    out.append(f"dns entries: {status.get('dns_entries_total', len(entries))}"
               + ("" if "dns_entries" in status else " (every entry: loxgw status --full)"))
    for entry in entries:
        out.append(
            f"  {entry['device']:<15} {entry['name']:<36} {entry['address']:<15} "
            f"{entry['proto']}/{entry['ports']}  expires in {_age(entry.get('expires_in'))}"
        )
    relay = status.get("relay", {})
    if relay.get("interfaces"):
        out.append(f"relay:    {', '.join(relay['interfaces'])}")
        for key, value in sorted(relay.get("counters", {}).items()):
            out.append(f"  {key:<40} {value}")
    counters = status.get("counters", {})
    if counters:
        out.append("counters:")
        for key in sorted(counters):
            out.append(f"  {key:<32} {counters[key]}")
    if status.get("last_error"):
        out.append(f"last error: {status['last_error']}")
    return "\n".join(out)
