"""Set elements over netlink, no subprocess: DNS grants (SetWriter) and pinhole diffs (ElementBatches).

SetWriter: the NFT_MSG_NEWSETELEM messages are encoded once, as templates,
to the bytes pyroute2's nft_set_elem_list_msg gives (tests/unit/edges/test_nftset.py
compares them). Encoded here: importing pyroute2's nftsocket took 33-41 ms
of the daemon's start-up CPU and its templates 8-11 ms per writer (here
0.6 ms), most of a second on a router's CPU. The batch is sent on a raw
NETLINK_NETFILTER socket. nfnetlink commits a batch synchronously inside
send(), so when send() returns the elements are live: the DNS answer can be
released and the device's first packet finds its element. Errors come back
as netlink error messages, read without blocking and counted.

ElementBatches: deletes and adds elements of the pinhole and address sets
in one batch, keys encoded by core.setkeys; the messages are the bytes nft
sends for the same elements (tests/unit/edges/test_nftset.py holds nft's).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from loxgw.core.dns import Grant, Profile
from loxgw.core.errors import KernelError
from loxgw.core.firewall import cloud_set_name
from loxgw.core.record import record
from loxgw.core.setkeys import KernelElement
from loxgw.edges.nft import (
    NETLINK_NETFILTER,
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWSETELEM,
    NFTA_DATA_VALUE,
    NFTA_LIST_ELEM,
    NFTA_SET_ELEM_EXPIRATION,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE,
    NFTA_SET_ELEM_TIMEOUT,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    NetfilterRequests,
    attr,
    batch_marker,
    message,
)
from loxgw.edges.nft import netlink_errors as netlink_errors  # tests/unit/edges/test_captures.py reads it here

NFT_MSG_DESTROYSETELEM = 30  # Linux 6.3+: delete an element, no error if it is absent


Element = tuple[str, bytes, int]  # set name, key as the kernel stores it, timeout in seconds
_KEY_SENTINEL_BYTE = 0xA5
_TIMEOUT_SENTINEL = 0x1122334455667788
_EXPIRATION_SENTINEL = 0x2233445566778899

# How a later answer refreshes an element that is already in the set:
# "expiration": the add carries an expiration, and the kernel updates it (recent kernels);
# "replace": destroy and add in one batch (Linux 6.3+; atomic, no packet sees a gap);
# "none": the kernel can do neither; the element keeps its first expiry (and is sent plainly).
RefreshMode = Literal["expiration", "replace", "none"]


@record
class _Template:
    """One encoded message with the offsets where per-answer values go."""

    data: bytes
    key_offset: int = -1
    key_length: int = 0
    timeout_offset: int = -1
    expiration_offset: int = -1


class SetWriter:
    """Adds grants as set elements with timeouts; one instance per daemon.

    Every message kind is encoded once, at start-up, with sentinel key and
    timeout; per answer only the key, timeout and sequence number bytes are
    patched in. Encoding through pyroute2 per answer cost ~150 µs, most of
    the inline path's added latency.
    """

    def __init__(self, table: str, profiles: tuple[Profile, ...], refresh: RefreshMode = "expiration") -> None:
        self.table = table
        self.refresh = refresh
        self.index = {profile: i for i, profile in enumerate(profiles)}
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.setblocking(False)
        self.seq = 0
        self.errors = 0
        self._begin = _Template(self._encode_marker(NFNL_MSG_BATCH_BEGIN))
        self._end = _Template(self._encode_marker(NFNL_MSG_BATCH_END))
        self._element: dict[tuple[str, int], _Template] = {}
        self._destroy: dict[tuple[str, int], _Template] = {}
        for i in range(len(profiles)):
            for family, key_length in ((4, 8), (6, 32)):
                self._template(cloud_set_name(i, family), key_length)

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def _encode_marker(kind: int) -> bytes:
        return batch_marker(kind, 0)

    def _encode_element(self, set_name: str, key_length: int, kind: int = NFT_MSG_NEWSETELEM) -> _Template:
        sentinel_key = bytes([_KEY_SENTINEL_BYTE]) * key_length
        # Nests without NLA_F_NESTED, as pyroute2 wrote them (the kernel takes both).
        fields = attr(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, sentinel_key))
        if kind == NFT_MSG_NEWSETELEM:
            fields += attr(NFTA_SET_ELEM_TIMEOUT, struct.pack(">Q", _TIMEOUT_SENTINEL))
            if self.refresh == "expiration":  # older kernels may refuse it; only sent where it works
                fields += attr(NFTA_SET_ELEM_EXPIRATION, struct.pack(">Q", _EXPIRATION_SENTINEL))
        body = (attr(NFTA_SET_ELEM_LIST_TABLE, self.table.encode() + b"\0")
                + attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
                + attr(NFTA_SET_ELEM_LIST_ELEMENTS, attr(NFTA_LIST_ELEM, fields)))
        # NLM_F_CREATE without EXCL: adding an element that exists is no error.
        data = message((NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_REQUEST | NLM_F_CREATE, 0, NFPROTO_INET, 0, body)
        key_offset = data.find(sentinel_key)
        if kind != NFT_MSG_NEWSETELEM:
            if key_offset < 0:
                raise KernelError("netlink template", None, "could not locate the key")
            return _Template(data, key_offset, key_length)
        timeout_offset = data.find(struct.pack(">Q", _TIMEOUT_SENTINEL))
        expiration_offset = data.find(struct.pack(">Q", _EXPIRATION_SENTINEL))
        if min(key_offset, timeout_offset) < 0 or (self.refresh == "expiration") != (expiration_offset >= 0):
            raise KernelError("netlink template", None, "could not locate key, timeout or expiration")
        return _Template(data, key_offset, key_length, timeout_offset, expiration_offset)

    def _with_seq(self, template: _Template) -> bytearray:
        self.seq = (self.seq + 1) & 0x7FFFFFFF
        data = bytearray(template.data)
        struct.pack_into("=I", data, 8, self.seq)
        return data

    def _template(self, set_name: str, key_length: int) -> _Template:
        template = self._element.get((set_name, key_length))
        if template is None:
            template = self._element[(set_name, key_length)] = self._encode_element(set_name, key_length)
        return template

    def _destroy_template(self, set_name: str, key_length: int) -> _Template:
        template = self._destroy.get((set_name, key_length))
        if template is None:
            template = self._destroy[(set_name, key_length)] = self._encode_element(
                set_name, key_length, NFT_MSG_DESTROYSETELEM)
        return template

    def grant_elements(self, grants: Iterable[Grant]) -> list[Element]:
        """(set, key, timeout) for each grant whose profile has a set."""
        elements = []
        for grant in grants:
            index = self.index.get(grant.profile)
            if index is not None:
                elements.append((cloud_set_name(index, grant.address.version),
                                 grant.device.packed + grant.address.packed, grant.timeout))
        return elements

    def encode_batch(self, elements: Iterable[Element], expires: int | None = None) -> tuple[bytes, int]:
        """The netlink batch that adds `elements`, and how many it holds.

        `expires` (seconds) sets the expiration apart from the timeout; only the refresh probe needs it.
        """
        batch = self._with_seq(self._begin)
        sent = 0
        for set_name, key, timeout in elements:
            if self.refresh == "replace":
                destroy = self._destroy_template(set_name, len(key))
                message = self._with_seq(destroy)
                message[destroy.key_offset : destroy.key_offset + destroy.key_length] = key
                batch += message
            template = self._template(set_name, len(key))
            message = self._with_seq(template)
            message[template.key_offset : template.key_offset + template.key_length] = key
            struct.pack_into(">Q", message, template.timeout_offset, timeout * 1000)
            if template.expiration_offset >= 0:
                struct.pack_into(">Q", message, template.expiration_offset, (expires or timeout) * 1000)
            batch += message
            sent += 1
        batch += self._with_seq(self._end)
        return bytes(batch), sent

    def add(self, grants: Iterable[Grant], drain: bool = True) -> int:
        """Insert the grants in one netlink batch; returns how many elements were sent."""
        return self.add_elements(self.grant_elements(grants), drain)

    def add_elements(self, elements: Iterable[Element], drain: bool = True, expires: int | None = None) -> int:
        """Insert (set, key, timeout seconds) elements in one batch; returns how many were sent.

        The kernel commits the batch inside send(). Errors come back as
        messages; with `drain` off they wait for a later drain_errors(), so
        a held DNS answer need not wait for the read.
        """
        batch, sent = self.encode_batch(elements, expires)
        if not sent:
            return 0
        try:
            self.sock.send(batch)
        except OSError as exc:
            raise KernelError("netlink set element batch", exc.errno, exc.strerror or "") from exc
        if drain:
            self.drain_errors()
        return sent

    def drain_errors(self) -> int:
        """Read pending netlink errors (unblocking); returns the last errno seen, 0 if none."""
        last = 0
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return last
            for code in netlink_errors(data):
                self.errors += 1
                last = code


NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY_END = 3, 10
# Elements per message: a netlink attribute's length is 16 bits, and the elements nest is one attribute
# (a pinhole element takes 48 bytes); nft splits its messages too.
ELEMENTS_PER_MESSAGE = 512
SO_SNDBUFFORCE = 32

KernelChanges = Mapping[str, Sequence[KernelElement]]  # set name -> kernel elements


def _data(kind: int, value: bytes) -> bytes:
    return attr(kind, attr(NFTA_DATA_VALUE, value), nested=True)


def encode_element(element: KernelElement) -> bytes:
    """One NFTA_LIST_ELEM: key, key end (concatenated intervals) and flags, as nft sends them."""
    inner = b""
    if element.flags:
        inner += attr(NFTA_SET_ELEM_FLAGS, struct.pack(">I", element.flags))
    inner += _data(NFTA_SET_ELEM_KEY, element.key)
    if element.key_end is not None:
        inner += _data(NFTA_SET_ELEM_KEY_END, element.key_end)
    return attr(NFTA_LIST_ELEM, inner, nested=True)


def encode_changes(table: str, delete: KernelChanges, add: KernelChanges, first_seq: int = 1) -> tuple[bytes, int]:
    """One nfnetlink batch that deletes, then adds, the given elements; and the next free sequence number.

    Adding an element that is there is no error (NLM_F_CREATE without EXCL),
    as with `nft add element`; deleting one that is not there is (ENOENT),
    and the kernel then applies nothing of the batch.
    """
    seq = first_seq
    parts = [batch_marker(NFNL_MSG_BATCH_BEGIN, seq)]
    for command, flags, changes in ((NFT_MSG_DELSETELEM, NLM_F_REQUEST, delete),
                                    (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE, add)):
        for set_name, found in changes.items():
            names = attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0") + \
                attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
            for start in range(0, len(found), ELEMENTS_PER_MESSAGE):
                nest = b"".join(encode_element(e) for e in found[start : start + ELEMENTS_PER_MESSAGE])
                seq += 1
                parts.append(message((NFNL_SUBSYS_NFTABLES << 8) | command, flags, seq, NFPROTO_INET, 0,
                                     names + attr(NFTA_SET_ELEM_LIST_ELEMENTS, nest, nested=True)))
    seq += 1
    parts.append(batch_marker(NFNL_MSG_BATCH_END, seq))
    return b"".join(parts), seq + 1


class ElementBatches:
    """Adds and deletes elements of loxgw's desired-state sets (pinholes, device addresses), one batch per diff.

    What `nft -f` with `delete element` / `add element` lines did, without a
    process: a pin_in4 diff through `nft -f` took 20-25 ms, most of it
    starting nft and nft reading the set back. The kernel commits the batch
    inside send() and queues its errors before send() returns, so one
    non-blocking read tells whether it was applied.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.setblocking(False)
        self.seq = 1
        self._sndbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    def close(self) -> None:
        self.sock.close()

    def apply(self, table: str, delete: KernelChanges, add: KernelChanges) -> None:
        """Send one batch; KernelError (with the kernel's errno) if the kernel refused it, and then nothing changed."""
        batch, self.seq = encode_changes(table, delete, add, self.seq)
        self.seq &= 0x7FFFFFFF
        if len(batch) + 64 > self._sndbuf:  # netlink refuses a message larger than the send buffer
            self._grow_send_buffer(len(batch) + 64)
        self._drain(before=True)  # a late reply of an earlier batch must not be read as this one's
        try:
            self.sock.send(batch)
        except OSError as exc:
            raise KernelError("netlink set element batch", exc.errno, exc.strerror or "") from exc
        errors = self._drain()
        if errors:
            raise KernelError("netlink set element batch", errors[0], os.strerror(errors[0]))

    def _grow_send_buffer(self, size: int) -> None:
        for option in (SO_SNDBUFFORCE, socket.SO_SNDBUF):  # FORCE: root may pass net.core.wmem_max
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, option, size)
        self._sndbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    def _drain(self, before: bool = False) -> list[int]:
        errors: list[int] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return errors
            except OSError as exc:  # ENOBUFS: replies were lost; nothing says the batch failed
                if before:  # earlier batches' replies: this batch is not sent yet, it is not concerned
                    return errors
                raise KernelError("netlink set element batch", exc.errno, "replies lost") from exc
            errors += netlink_errors(data)


PROBE_TABLE = "loxgw_probe"
_PROBE_KEY = bytes([192, 0, 2, 1, 192, 0, 2, 2])
_PROBE_KEY_TYPE = 7 << 6 | 7  # ipv4_addr . ipv4_addr, as nft encodes a concatenation, for `nft list`


def probe_refresh() -> RefreshMode:
    """Find out, in a scratch table, how this kernel lets a later answer extend an element's timeout.

    Asked of the kernel rather than read from its version: distributions
    backport netfilter changes. "expiration": an element added to expire in
    100 s and added again to expire in 1000 s keeps the later expiry.
    "replace": an element of 100 s destroyed and added for 1000 s in one
    batch is there with 1000 s. All over netlink: through nft this took four
    processes at every start.
    """
    with NetfilterRequests() as requests:
        def kept() -> int:
            found = requests.set_expirations(PROBE_TABLE, "s")
            return found[0][1] // 1000 if found else 0

        requests.delete_table(PROBE_TABLE)  # a killed probe's
        requests.create_timeout_set(PROBE_TABLE, "s", _PROBE_KEY_TYPE, len(_PROBE_KEY))
        try:
            writer = SetWriter(PROBE_TABLE, (), "expiration")
            try:
                writer.add_elements([("s", _PROBE_KEY, 1000)], expires=100)
                honoured = 0 < kept() <= 100
                writer.add_elements([("s", _PROBE_KEY, 1000)])
            finally:
                writer.close()
            if honoured and kept() > 500:
                return "expiration"
            requests.flush_set(PROBE_TABLE, "s")
            attempts: tuple[tuple[RefreshMode, int], ...] = (("none", 100), ("replace", 1000))
            for mode, timeout in attempts:
                writer = SetWriter(PROBE_TABLE, (), mode)
                try:
                    writer.add_elements([("s", _PROBE_KEY, timeout)])
                finally:
                    writer.close()
            return "replace" if kept() > 500 else "none"
        finally:
            requests.delete_table(PROBE_TABLE)
