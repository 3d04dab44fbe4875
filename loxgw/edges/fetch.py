"""Adapter: one HTTP GET of a UPnP description, on asyncio streams, within one deadline.

Why not urllib: it follows redirects, and its timeout is per socket read, so
a server dripping one byte every 1.5 s held the probe loop for minutes. Here
the deadline covers connect, request and the whole answer; when it passes,
the connection is aborted. What the bytes mean (status, framing, caps) is
decided by core.ssdp.
"""

from __future__ import annotations

import asyncio

from loxgw.core import ssdp
from loxgw.core.errors import RemoteDataError

DEADLINE = 3.0  # seconds for the whole fetch
READ_SIZE = 4096


async def get_description(location: str, deadline: float = DEADLINE) -> bytes:
    """The body at `location` (as ssdp.parse_answer accepted it); RemoteDataError or OSError otherwise.

    No redirects (a 3xx is RemoteDataError("redirect")), no proxy, at most
    ssdp.MAX_DESCRIPTION_BYTES of body, `deadline` seconds in all
    (RemoteDataError("deadline")).
    """
    host, port, request = ssdp.description_request(location)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(deadline):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
            return await _read_answer(reader)
    except TimeoutError:
        raise RemoteDataError("deadline") from None
    finally:
        if writer is not None:
            writer.transport.abort()  # nothing left to say; never wait for a slow peer to close


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    data = b""
    head: ssdp.Head | None = None
    while True:
        chunk = await reader.read(READ_SIZE)
        eof = not chunk
        data += chunk
        if head is None:
            split = ssdp.split_head(data)
            if split is None:
                if eof:
                    raise RemoteDataError("malformed", "no HTTP head")
                continue
            head, data = ssdp.parse_head(split[0]), split[1]
        body = ssdp.body_of(head, data, eof)
        if body is not None:
            return body
        if eof:
            raise RemoteDataError("malformed", "no body")
