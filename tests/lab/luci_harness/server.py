"""The harness's web server: LuCI's page, the app's views, and a ubus JSON-RPC endpoint.

Paths are laid out as on a router: /luci-static/resources/<class>.js (the harness
runtime in resources/), /luci-static/resources/view/loxgw/*.js (the app's views, from
the feed), and POST /ubus/ (JSON-RPC "call", as uhttpd-mod-ubus answers it). Each
ubus call goes to a handler function; what it returns or raises becomes the reply:

    Reply(data)            result [0, data]
    Reply(code=7)          result [7]          (a ubus status: the call failed)
    RpcFault(-32002, ...)  error {code, message} (rpcd's "Access denied")
    HttpFault(500)         an HTTP error status
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
APP = os.path.join(REPO, "openwrt", "luci", "luci-app-loxgw")
VIEWS = os.path.join(APP, "htdocs", "luci-static", "resources", "view")
UCODE_MODULE = os.path.join(APP, "root", "usr", "share", "ucode", "loxgw", "luci.uc")
RESOURCES = os.path.join(HERE, "resources")
STATIC = os.path.join(HERE, "static")


@dataclass
class Reply:
    data: dict[str, Any] | None = None
    code: int = 0


class RpcFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HttpFault(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


Handler = Callable[[str, str, dict[str, Any]], Reply]


class UcodeModule:
    """The rpcd plugin's logic module (luci.uc), run by node with ucode's builtins."""

    def __init__(self, path: str = UCODE_MODULE) -> None:
        self.proc = subprocess.Popen(["node", os.path.join(HERE, "plugin.mjs"), path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.lock = threading.Lock()

    def call(self, fn: str, *args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write(json.dumps({"fn": fn, "args": list(args)}) + "\n")
            self.proc.stdin.flush()
            answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"luci.uc {fn}: {answer['error']}")
        return answer["result"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _route(path: str) -> str | None:
    """The file a GET path serves, or None."""
    path = path.split("?", 1)[0]
    if path.startswith("/harness/"):
        base, rest = STATIC, path[len("/harness/"):]
    elif path.startswith("/luci-static/resources/view/"):
        base, rest = VIEWS, path[len("/luci-static/resources/view/"):]
    elif path.startswith("/luci-static/resources/"):
        base, rest = RESOURCES, path[len("/luci-static/resources/"):]
    else:
        return None
    full = os.path.realpath(os.path.join(base, rest))
    if not full.startswith(os.path.realpath(base) + os.sep) or not os.path.isfile(full):
        return None
    return full


class HarnessServer:
    """A threaded HTTP server on 127.0.0.1; `calls` records every ubus call made."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        outer = self

        class RequestHandler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                full = _route(self.path)
                if full is None:
                    self.send_error(404)
                    return
                with open(full, "rb") as handle:
                    body = handle.read()
                self.send_response(200)
                self.send_header("Content-Type", mimetypes.guess_type(full)[0] or "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.reply_body(body)

            def do_POST(self) -> None:
                if self.path.split("?", 1)[0].rstrip("/") != "/ubus":
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length))
                try:
                    if isinstance(request, list):
                        answer: Any = [outer.dispatch(r) for r in request]
                    else:
                        answer = outer.dispatch(request)
                except HttpFault as fault:
                    self.send_error(fault.status)
                    return
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.reply_body(body)

            def reply_body(self, body: bytes) -> None:
                # The page may navigate away while a poll is in flight.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def page(self, view: str) -> str:
        return f"{self.url}/harness/index.html?view={view}"

    def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        ident = request.get("id")
        if request.get("method") != "call":
            return {"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": "Method not found"}}
        _sid, obj, method, args = request["params"]
        self.calls.append((obj, method, args))
        try:
            reply = self.handler(obj, method, args or {})
        except RpcFault as fault:
            return {"jsonrpc": "2.0", "id": ident, "error": {"code": fault.code, "message": fault.message}}
        result = [reply.code] if reply.data is None else [reply.code, reply.data]
        return {"jsonrpc": "2.0", "id": ident, "result": result}

    def __enter__(self) -> HarnessServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
