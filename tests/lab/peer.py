"""Tiny network peers for lab hosts (stdlib only, run inside a namespace).

    python -m tests.lab.peer listen-tcp ADDR PORT [PORT ...]   accept and close, forever
    python -m tests.lab.peer connect-tcp ADDR PORT [TIMEOUT]   exit 0 if the connection opens
    python -m tests.lab.peer scan-tcp ADDR PORT[,PORT...] [WAIT]  print the ports that accept
    python -m tests.lab.peer loxlive NAME IP:PORT SERIAL        answer searches on 7070, forever
"""

from __future__ import annotations

import resource
import selectors
import socket
import sys
import time


def listen_tcp(addr: str, ports: list[int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
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


def scan_tcp(addr: str, ports: list[int], wait: float) -> list[int]:
    """Connect to every port at once (non-blocking); the ones connected after `wait` are open."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    selector = selectors.DefaultSelector()
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((addr, port))
        selector.register(sock, selectors.EVENT_WRITE, port)
    open_ports = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and selector.get_map():
        for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                open_ports.append(key.data)
            selector.unregister(sock)
            sock.close()
    return sorted(open_ports)


def loxlive(name: str, where: str, serial: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", 7070))
    print("ready", flush=True)
    while True:
        _, addr = sock.recvfrom(2048)
        sock.sendto(f"LoxLIVE: {name} {where} {serial} 15.1.10.2 Prog:2025-01-01".encode(), (addr[0], 7071))


def main(argv: list[str]) -> int:
    if argv[0] == "listen-tcp":
        listen_tcp(argv[1], [int(p) for p in argv[2:]])
        return 0
    if argv[0] == "connect-tcp":
        return connect_tcp(argv[1], int(argv[2]), float(argv[3]) if len(argv) > 3 else 1.0)
    if argv[0] == "scan-tcp":
        found = scan_tcp(argv[1], [int(p) for p in argv[2].split(",")], float(argv[3]) if len(argv) > 3 else 1.0)
        print(",".join(map(str, found)))
        return 0
    if argv[0] == "loxlive":
        loxlive(argv[1], argv[2], argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
