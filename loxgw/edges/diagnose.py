"""The status socket's diagnose requests: `doctor` and `explain DEVICE HOST PORT[/PROTO]`.

Same protocol as `loxgw status` (edges.status): one request line, one JSON
document back, then the daemon closes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from loxgw.core.errors import LoxgwError
from loxgw.edges.status import MAX_STATUS_BYTES, NotRunning

MAX_REQUEST = 512  # bytes of a request line the daemon reads (daemon.status.MAX_REQUEST)


def request(path: str, words: Sequence[str], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request (words joined by spaces) to the daemon at `path`; its JSON answer."""
    # Percent-encoded: a device's name may hold spaces and any character; the line stays one ASCII line.
    line = (" ".join(quote(w, safe="") for w in words) + "\n").encode("ascii")
    if len(line) > MAX_REQUEST:
        raise LoxgwError("request too long")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(f"loxgw is not running (no daemon at {path}: {exc.strerror})") from exc
        sock.sendall(line)
        size = 0
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_STATUS_BYTES:
                raise LoxgwError("answer too large")
    except TimeoutError as exc:
        raise NotRunning(f"loxgw at {path} did not answer within {timeout:g}s") from exc
    finally:
        sock.close()
    try:
        result = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise LoxgwError("the daemon's answer is not JSON") from exc
    if not isinstance(result, dict):
        raise LoxgwError("the daemon's answer is not a JSON object")
    return result
