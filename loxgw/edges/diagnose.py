"""The status socket's diagnose requests: `doctor` and `explain DEVICE HOST PORT[/PROTO]`.

Same protocol as `loxgw status` (edges.status): one request line, one JSON
document back, then the daemon closes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from loxgw.core.errors import LoxgwError
from loxgw.edges import status

MAX_REQUEST = 512  # bytes of a request line the daemon reads (daemon.status.MAX_REQUEST)


def request(path: str, words: Sequence[str], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request (words joined by spaces) to the daemon at `path`; its JSON answer."""
    # Percent-encoded: a device's name may hold spaces and any character; the line stays one ASCII line.
    line = (" ".join(quote(w, safe="") for w in words) + "\n").encode("ascii")
    if len(line) > MAX_REQUEST:
        raise LoxgwError("request too long")
    return status.query(path, timeout, line=line)
