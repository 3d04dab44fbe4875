"""Entries put back in verified batches, and the state file: its mode, its bounds, the time that passed."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import stat
import threading
from pathlib import Path

from loxgw.core import catalog, dns
from loxgw.core.catalog import PortRange
from loxgw.core.dns import Grant, Profile
from loxgw.core.dnsledger import GrantLedger
from loxgw.daemon import dnsentries
from loxgw.daemon.dnsentries import BATCH, BatchedWriter, put_back, read_state, write_state

PROFILES = dns.all_profiles(catalog.load())
TCP22 = Profile("tcp", (PortRange(22, 22),))
REFUSED_DEVICE = ipaddress.ip_address("192.168.20.66")


def grants(count: int, device: str = "192.168.20.10", timeout: int = 600) -> list[Grant]:
    return [Grant(ipaddress.ip_address(device), ipaddress.ip_address(f"198.18.{i // 256}.{i % 256}"), TCP22,
                  timeout, "r.remcov3.loxonecloud.com") for i in range(count)]


class FakeWriter:
    """Takes batches as the kernel does: whole, or (with a grant of REFUSED_DEVICE in it) not at all."""

    def __init__(self, stale_errors: int = 0) -> None:
        self.errors = 0
        self.batches: list[list[Grant]] = []
        self.kernel: list[Grant] = []
        self.pending = [errno.ENOENT] * stale_errors  # left by the DNS thread's inserts

    def add(self, batch: list[Grant], drain: bool = True) -> int:
        self.batches.append(batch)
        if any(g.device == REFUSED_DEVICE for g in batch):
            self.pending.append(errno.ENFILE)
        else:
            self.kernel += batch
        if drain:
            self.drain_errors()
        return len(batch)

    def add_elements(self, elements: object, drain: bool = True, expires: int | None = None) -> int:
        raise AssertionError("not used")

    def drain_errors(self) -> int:
        last = self.pending[-1] if self.pending else 0
        self.errors += len(self.pending)
        self.pending.clear()
        return last

    def close(self) -> None:
        pass


def test_every_batch_is_verified_and_only_what_the_kernel_took_is_in_the_ledger() -> None:
    wanted = grants(BATCH) + grants(10, str(REFUSED_DEVICE)) + grants(BATCH + 1, "192.168.20.11")
    writer, ledger = FakeWriter(stale_errors=3), GrantLedger()
    done = put_back(writer, wanted, ledger, threading.Lock(), lambda: 5.0, "state file")
    # The batch with the refused grants goes whole (the kernel's transaction); the others all go in.
    assert [len(b) for b in writer.batches] == [BATCH, BATCH, 11]
    assert (done.wanted, done.restored, done.refused) == (len(wanted), len(writer.kernel), 256)
    assert done.status() == {"source": "state file", "wanted": 523, "restored": 267, "refused": 256,
                             "seconds": 0.0, "error": os.strerror(errno.ENFILE)}
    assert (len(ledger), writer.errors) == (len(writer.kernel), 4)  # the DNS thread's 3 stay counted


def test_all_taken_is_no_error() -> None:
    writer, ledger = FakeWriter(stale_errors=1), GrantLedger()
    done = put_back(writer, grants(700), ledger, threading.Lock(), lambda: 0.0, "rebuilt table")
    assert (done.restored, done.refused, done.error, len(ledger)) == (700, 0, "", 700)


def test_a_burst_goes_in_batches_the_socket_takes() -> None:
    inner = FakeWriter()
    writer = BatchedWriter(inner)
    assert writer.add(grants(BATCH * 2 + 3), drain=False) == BATCH * 2 + 3
    assert [len(b) for b in inner.batches] == [BATCH, BATCH, 3]


def test_state_file_is_root_only_even_over_a_leftover(tmp_path: Path) -> None:
    path = str(tmp_path / "loxgw-dns-entries.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:  # a leftover, world-readable
        handle.write("x")
    os.chmod(path + ".tmp", 0o644)
    write_state(path, [], 1000.0)
    assert (stat.S_IMODE(os.stat(path).st_mode), os.path.exists(path + ".tmp")) == (0o600, False)


def test_state_file_round_trip_takes_off_the_time_since_the_save(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    ledger = GrantLedger()
    ledger.record(grants(3, timeout=600), 0.0)
    write_state(path, ledger.dump(0.0), 1000.0)
    assert [g.timeout for g in read_state(path, PROFILES, 1100.4, 86400) or []] == [499, 499, 499]
    assert read_state(path, PROFILES, 2000.0, 86400) == []  # all expired meanwhile
    assert read_state(str(tmp_path / "none.json"), PROFILES, 0.0, 86400) is None


def test_an_older_loxgw_file_is_read_as_saved_just_now(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    ledger = GrantLedger()
    ledger.record(grants(2, timeout=60), 0.0)
    path.write_text(json.dumps(ledger.dump(0.0)))
    assert [g.timeout for g in read_state(str(path), PROFILES, 5000.0, 86400) or []] == [60, 60]


def test_what_no_loxgw_wrote_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_state(str(fifo), PROFILES, 0.0, 86400) is None  # no hang
    big = tmp_path / "big"
    with open(big, "wb") as handle:
        handle.truncate(dnsentries.MAX_STATE_BYTES + 1)
    assert read_state(str(big), PROFILES, 0.0, 86400) is None
    (tmp_path / "bad").write_text("{not json")
    assert read_state(str(tmp_path / "bad"), PROFILES, 0.0, 86400) is None
    os.symlink(tmp_path / "bad", tmp_path / "link")
    assert read_state(str(tmp_path / "link"), PROFILES, 0.0, 86400) is None


def test_a_live_put_back_keeps_what_the_dns_thread_did_meanwhile() -> None:
    ledger = GrantLedger()
    first, second = grants(2, timeout=600)
    ledger.record([first, second], 0.0)
    copy = GrantLedger.grants_of(ledger.raw(), 0.0)  # taken when the table was rebuilt
    ledger.record([first._replace(timeout=1000)], 10.0)  # a later answer, while the copy was built
    ledger.forget([second])  # ... and one the kernel refused
    writer = FakeWriter()
    done = put_back(writer, copy, ledger, threading.Lock(), lambda: 20.0, "rebuilt table", live=True)
    assert (writer.kernel, done.wanted, done.refused) == ([first._replace(timeout=990)], 1, 0)
