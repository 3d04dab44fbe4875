"""The status client against a real Unix socket: the answer as sent, and each failure named."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from loxgw import cli
from loxgw.core.errors import LoxgwError
from loxgw.daemon.status import print_form, render
from loxgw.edges import status

SNAPSHOT = {"version": "0.1.0", "pid": 42, "uptime": 3725, "config": "/etc/config/loxgw",
            "firewall": "standalone", "table": "loxgw", "ruleset_applies": 2, "dns_mode": "inline",
            "queue_mode": "nft", "dns_path": "copies", "set_refresh": "expiration",
            "zones": [{"name": "iot", "role": "devices", "interfaces": ["br-iot"], "cloud": True}],
            "devices": [{"name": "ms", "product": "miniserver", "mac": "50:4f:94:a0:00:01", "ip": "192.168.20.11",
                         "source": "neighbours", "last_seen": 4, "pinhole_count": 3, "dns_entry_count": 1,
                         "egress": "catalog"}],
            "dns_entries_total": 1, "counters": {"dns_answers": 7}}


class Daemon:
    """Answers each connection with `answer` (after reading its request line), in a thread; a request
    for a printed form gets what the real daemon renders (daemon.status.render)."""

    def __init__(self, path: Path, answer: bytes) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.answer = answer
        self.answer_forms = True  # False: answer as a daemon from before the printed forms
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(1024)
                self.requests.append(request)
                form = print_form(request) if self.answer_forms else ""
                conn.sendall(render(json.loads(self.answer), form) if form and self.answer else self.answer)

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, Daemon]]:
    path = tmp_path / "status.sock"
    served = Daemon(path, json.dumps(SNAPSHOT).encode())
    yield path, served
    served.close()


def test_query_returns_the_snapshot_and_sends_the_request_line(daemon: tuple[Path, Daemon]) -> None:
    path, served = daemon
    assert status.query(str(path)) == SNAPSHOT
    assert status.query(str(path), full=True) == SNAPSHOT
    assert status.query(str(path), line=b"doctor\n") == SNAPSHOT
    assert served.requests == [b"status\n", b"status full\n", b"doctor\n"]


def test_cli_prints_the_snapshot_as_text_and_as_json(daemon: tuple[Path, Daemon], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, served = daemon
    config = tmp_path / "loxgw"
    config.write_text(f"config loxgw 'main'\n\toption status_socket '{path}'\n")
    assert cli.main(["-c", str(config), "status"]) == 0
    assert capsys.readouterr().out == status.format_human(SNAPSHOT) + "\n"
    assert cli.main(["status", "--json", "--socket", str(path)]) == 0
    assert capsys.readouterr().out == json.dumps(SNAPSHOT, indent=2, sort_keys=True) + "\n"
    assert cli.main(["status", "--full", "--json", "--socket", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == SNAPSHOT
    assert served.requests == [b"status text\n", b"status json\n", b"status full json\n"]


def test_the_printed_forms_are_asked_for_by_status_requests_only() -> None:
    assert [print_form(line) for line in (b"status text\n", b"status full json\n", b"status\n",
                                          b"explain ms 1.2.3.4 80 text\n", b"status full\n", b"text\n")] == \
        ["text", "json", "", "", "", ""]
    # Keys the daemon holds as numbers print as the JSON reader saw them: strings, sorted.
    assert render({"counters": {2: 1, "b": 2}}, "json") == b'{\n  "counters": {\n    "2": 1,\n    "b": 2\n  }\n}\n'


def test_a_daemon_older_than_the_command_still_gets_its_status_printed_as_text(tmp_path: Path) -> None:
    """Before an upgrade's restart the running daemon answers every status request with JSON."""
    path = tmp_path / "status.sock"
    served = Daemon(path, json.dumps(SNAPSHOT).encode())
    served.answer_forms = False
    try:
        assert status.printable(str(path)) == status.format_human(SNAPSHOT)
    finally:
        served.close()


def test_an_empty_answer_to_a_printed_form_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    served = Daemon(path, b"")
    try:
        with pytest.raises(LoxgwError, match="gave no answer"):
            status.printable(str(path))
    finally:
        served.close()


def test_no_daemon_is_not_running(tmp_path: Path) -> None:
    missing_path = tmp_path / "none.sock"
    with pytest.raises(status.NotRunning) as missing:
        status.query(str(missing_path))
    assert str(missing.value) == f"loxgw is not running (no daemon at {missing_path}: No such file or directory)"
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()  # bound, never listening: what a killed daemon leaves
    with pytest.raises(status.NotRunning) as refused:
        status.query(str(stale))
    assert str(refused.value) == f"loxgw is not running (no daemon at {stale}: Connection refused)"


def test_a_silent_daemon_times_out(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    try:
        with pytest.raises(status.NotRunning) as silent:
            status.query(str(path), timeout=0.05)
    finally:
        server.close()
    assert str(silent.value) == f"loxgw at {path} did not answer within 0.05s"


@pytest.mark.parametrize(("answer", "message"), [
    (b"not json", "the daemon's answer is not JSON"),
    (b"[1, 2]", "status answer is not a JSON object"),
])
def test_a_garbled_answer_is_named(tmp_path: Path, answer: bytes, message: str) -> None:
    served = Daemon(tmp_path / "odd.sock", answer)
    try:
        with pytest.raises(LoxgwError) as garbled:
            status.query(str(tmp_path / "odd.sock"))
    finally:
        served.close()
    assert str(garbled.value) == message
