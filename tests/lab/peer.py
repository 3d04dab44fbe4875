"""Tiny network peers for lab hosts (stdlib only, run inside a namespace).

    python -m tests.lab.peer listen-tcp ADDR PORT [PORT ...]   accept and close, forever
    python -m tests.lab.peer connect-tcp ADDR PORT [TIMEOUT]   exit 0 if the connection opens
"""

from __future__ import annotations

import selectors
import socket
import sys


def listen_tcp(addr: str, ports: list[int]) -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    selector = selectors.DefaultSelector()
    for port in ports:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(512)
        selector.register(sock, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
            conn.close()


def connect_tcp(addr: str, port: int, timeout: float) -> int:
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return 0
    except OSError:
        return 1


def main(argv: list[str]) -> int:
    if argv[0] == "listen-tcp":
        listen_tcp(argv[1], [int(p) for p in argv[2:]])
        return 0
    if argv[0] == "connect-tcp":
        return connect_tcp(argv[1], int(argv[2]), float(argv[3]) if len(argv) > 3 else 1.0)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
