"""The element writer: written at once (before the packet that needs it), repeats within half a timeout skipped."""

from __future__ import annotations

from loxgw.daemon.elements import ElementWriter


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[tuple[str, bytes, int]]] = []
        self.closed = False

    def add_elements(self, elements: list[tuple[str, bytes, int]], drain: bool = True) -> int:
        self.batches.append(list(elements))
        return len(elements)

    def close(self) -> None:
        self.closed = True


def test_elements_are_written_at_once_and_repeats_skipped() -> None:
    recorder = Recorder()
    now = [100.0]
    writer = ElementWriter(lambda: recorder, clock=lambda: now[0])
    assert writer.add_elements([("relay_answers4", b"a", 10), ("relay_answers4", b"a", 10)]) == 1
    assert recorder.batches == [[("relay_answers4", b"a", 10)]]  # in the kernel before the call returns
    now[0] = 104.0
    assert writer.add_elements([("relay_answers4", b"a", 10), ("relay_answers4", b"b", 10)]) == 1
    now[0] = 106.0
    assert writer.add_elements([("relay_answers4", b"a", 10)]) == 1  # past half its timeout: refreshed
    assert (writer.written, writer.skipped) == (3, 1)
    writer.close()
    assert recorder.closed
