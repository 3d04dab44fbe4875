"""The description GET against hostile loopback servers: no redirects, one deadline, a body cap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from loxgw.core import ssdp
from loxgw.core.errors import RemoteDataError
from loxgw.edges import fetch

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BODY = b"<root><device><manufacturer>Loxone Electronics GmbH</manufacturer></device></root>"


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def run(handler: Handler, deadline: float = 2.0) -> tuple[bytes | str, list[bytes], float]:
    """Fetch from a server running `handler`: (body or refusal reason, requests it saw, seconds taken)."""
    requests: list[bytes] = []

    async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    async def main() -> tuple[bytes | str, float]:
        server, port = await serve(recording)
        started = time.monotonic()
        try:
            result: bytes | str = await fetch.get_description(f"http://127.0.0.1:{port}/desc.xml", deadline)
        except RemoteDataError as exc:
            result = exc.reason
        elapsed = time.monotonic() - started
        server.close()
        return result, elapsed

    result, elapsed = asyncio.run(main())
    return result, requests, elapsed


def answer(raw: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return handler


def test_plain_answer() -> None:
    body, requests, _ = run(answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)))
    (request,) = requests
    assert (body, request.split(b"\r\n")[0], request.count(b"\r\n")) == (BODY, b"GET /desc.xml HTTP/1.0", 6)


def test_chunked_answer_and_a_server_that_keeps_the_connection() -> None:
    async def keep_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY))
        await writer.drain()
        await asyncio.sleep(5)

    body, _, elapsed = run(keep_open)
    assert body == BODY and elapsed < 1.0


def test_redirects_are_refused_and_not_followed() -> None:
    elsewhere: list[bytes] = []

    async def main() -> str:
        async def other(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            elsewhere.append(await reader.read(100))
            writer.close()

        other_server, other_port = await serve(other)

        async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/\r\nContent-Length: 0\r\n\r\n"
                         % other_port)
            await writer.drain()
            writer.close()

        server, port = await serve(redirect)
        try:
            await fetch.get_description(f"http://127.0.0.1:{port}/desc.xml")
        except RemoteDataError as exc:
            return exc.reason
        finally:
            server.close()
            other_server.close()
        return "fetched"

    assert (asyncio.run(main()), elsewhere) == ("redirect", [])


def test_a_dripping_server_meets_one_deadline() -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in b"HTTP/1.1 200 OK\r\n\r\n" + BODY:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    reason, _, elapsed = run(drip, deadline=0.3)
    assert reason == "deadline" and 0.3 <= elapsed < 0.6


@pytest.mark.parametrize("raw,reason", [
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (ssdp.MAX_DESCRIPTION_BYTES + 10), "oversized"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", "oversized"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: y\r\n" * 2000, "oversized"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "malformed"),
    (b"HTTP/1.1 404 Not Found\r\n\r\n", "http_status"),
    (b"", "malformed"),
])
def test_refused_answers(raw: bytes, reason: str) -> None:
    assert run(answer(raw))[0] == reason


def test_nothing_listening_is_an_os_error() -> None:
    async def main() -> None:
        server, port = await serve(answer(b""))
        server.close()
        await server.wait_closed()
        await fetch.get_description(f"http://127.0.0.1:{port}/")

    with pytest.raises(OSError):
        asyncio.run(main())
