"""Tiny network peers for lab hosts (stdlib only, run inside a namespace).

    python -m tests.lab.peer listen-tcp ADDR PORT [PORT ...]   accept and close, forever
    python -m tests.lab.peer connect-tcp ADDR PORT [TIMEOUT]   exit 0 if the connection opens
    python -m tests.lab.peer scan-tcp ADDR PORT[,PORT...] [WAIT]  print the ports that accept
    python -m tests.lab.peer loxlive NAME IP:PORT SERIAL        answer searches on 7070, forever
    python -m tests.lab.peer ssdp IP MODEL SERIAL [MANUFACTURER]  a UPnP root device: SSDP + description
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


DESCRIPTION = """<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:Basic:1</deviceType><friendlyName>{model}</friendlyName>
<manufacturer>{manufacturer}</manufacturer><modelName>{model}</modelName><serialNumber>{serial}</serialNumber>
<UDN>uuid:aaaaaaaa-bbbb-cccc-dddd-{serial}</UDN></device></root>"""


def ssdp(ip: str, model: str, serial: str, manufacturer: str) -> None:
    import http.server
    import struct
    import threading

    body = DESCRIPTION.format(model=model, serial=serial, manufacturer=manufacturer).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer((ip, 2869), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", 1900))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton(ip)))
    print("ready", flush=True)
    while True:
        data, addr = sock.recvfrom(2048)
        if data.startswith(b"M-SEARCH"):
            answer = (f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: upnp:rootdevice\r\n"
                      f"USN: uuid:aaaaaaaa-bbbb-cccc-dddd-{serial}::upnp:rootdevice\r\nEXT:\r\n"
                      f"LOCATION: http://{ip}:2869/desc.xml\r\nSERVER: Linux UPnP/1.0\r\n\r\n")
            sock.sendto(answer.encode(), addr)


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
    if argv[0] == "ssdp":
        ssdp(argv[1], argv[2], argv[3], argv[4] if len(argv) > 4 else "Loxone Electronics GmbH")
        return 0
    if argv[0] == "loxlive":
        loxlive(argv[1], argv[2], argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
