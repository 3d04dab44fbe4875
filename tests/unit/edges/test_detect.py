"""The detector's answer path: solicitation, neighbour evidence, rate limits, bounded description fetches.

No sockets: answers are handed in as another service would hand them, the
neighbour table, the description fetch and the clock are injected.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable

from loxgw.core import discovery, ssdp
from loxgw.core.devices import LoxLive
from loxgw.core.errors import RemoteDataError
from loxgw.edges.detect import MAX_FETCHES, Detector, NeighbourEntry

IP = ipaddress.IPv4Address
MS_IP, MS_MAC = IP("192.168.20.10"), "50:4f:94:a0:00:01"
ANSWER = b"LoxLIVE: Haus 192.168.20.10:80 504F94A00001 15.1.10.2 Prog:x"
DESCRIPTION = (b"<root><device><manufacturer>Loxone Electronics GmbH</manufacturer>"
               b"<modelName>Loxone Audioserver</modelName><friendlyName>Audio</friendlyName></device></root>")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ssdp_answer(ip: IP) -> bytes:
    return f"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: http://{ip}:80/upnp.xml\r\n\r\n".encode()


def detector(answers: list[discovery.Answer], table: list[NeighbourEntry] | None = None,
             clock: Clock | None = None, **kwargs: object) -> Detector:
    def dump(interfaces: Iterable[str]) -> list[NeighbourEntry]:
        return list(table or [])

    return Detector(("br-iot",), "/nonexistent", 60, lambda n: None, lambda m, i, n: None,
                    lambda s, p: None, on_answer=answers.append, dump=dump, now=clock or Clock(),
                    **kwargs)  # type: ignore[arg-type]


def test_unsolicited_answers_go_out_marked_as_such_at_once() -> None:
    answers: list[discovery.Answer] = []

    async def main() -> None:
        detector(answers).on_discovery_answer(MS_IP, ANSWER, "br-iot")

    asyncio.run(main())
    assert [(a.src, a.solicited, a.neighbour_mac, a.segment) for a in answers] == [(MS_IP, False, None, "br-iot")]
    assert answers[0].record == LoxLive("Haus", MS_IP, 80, "504F94A00001", "15.1.10.2")


def test_a_solicited_answer_from_a_new_host_waits_for_the_neighbour_table() -> None:
    answers: list[discovery.Answer] = []
    clock = Clock()

    async def main() -> None:
        found = detector(answers, [(MS_MAC, MS_IP, 0)], clock)
        found.solicitations.record("br-iot", clock.now)
        clock.now += 1.0
        found.on_discovery_answer(MS_IP, ANSWER, "br-iot")
        assert answers == []
        await asyncio.sleep(0.2)  # the settle delay and a thread hop: lets the loop run, not logic time
        clock.now += 10.0  # later answers fall outside the window
        found.on_discovery_answer(MS_IP, ANSWER, "br-iot")
        found.on_discovery_answer(MS_IP, ANSWER, "br-lan")

    asyncio.run(main())
    assert [(a.solicited, a.neighbour_mac, a.segment) for a in answers] == [
        (True, MS_MAC, "br-iot"), (False, MS_MAC, "br-iot"), (False, MS_MAC, "br-lan")]


def test_discovery_input_is_rate_limited_per_source() -> None:
    answers: list[discovery.Answer] = []
    refusals: dict[str, int] = {}

    async def main() -> None:
        found = detector(answers)
        for _ in range(8):
            found.on_discovery_answer(MS_IP, ANSWER)
        found.on_discovery_answer(IP("192.168.20.11"), b"garbage")
        refusals.update(found.refusals)

    asyncio.run(main())
    assert (len(answers), refusals["refused_rate_source"], refusals["loxlive_bad_malformed"]) == (5, 3, 1)


def test_without_on_answer_the_raw_callback_gets_the_datagram() -> None:
    raw: list[tuple[IP, bytes]] = []
    found = Detector(("br-iot",), "/nonexistent", 60, lambda n: None, lambda m, i, n: None,
                     lambda s, p: raw.append((s, p)))
    found.on_discovery_answer(MS_IP, ANSWER)
    assert raw == [(MS_IP, ANSWER)]


def test_description_fetches_are_bounded_per_host_and_overall() -> None:
    answers: list[discovery.Answer] = []
    running: set[str] = set()
    most = 0
    release = asyncio.Event()

    async def slow(location: str) -> bytes:
        nonlocal most
        running.add(location)
        most = max(most, len(running))
        await release.wait()
        running.discard(location)
        if "192.168.20.13" in location:
            raise RemoteDataError("redirect")
        return DESCRIPTION

    hosts = [IP(f"192.168.20.{10 + i}") for i in range(10)]
    counters: dict[str, int] = {}

    async def main() -> None:
        found = detector(answers, [(f"50:4f:94:00:00:{i:02x}", ip, 0) for i, ip in enumerate(hosts)],
                         get_description=slow)
        found.solicitations.record("br-iot", 100.0)
        for ip in hosts:
            found.on_ssdp_answer(ip, ssdp_answer(ip), "br-iot")
        found.on_ssdp_answer(hosts[0], ssdp_answer(hosts[0]), "br-iot")  # one fetch per host at a time
        found.on_ssdp_answer(hosts[1], ssdp_answer(IP("192.168.10.20")), "br-iot")  # LOCATION elsewhere
        await asyncio.sleep(0.05)
        assert len(running) == MAX_FETCHES
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(answers) == 9:
                break
        counters.update(found.counters)

    asyncio.run(main())
    assert most == MAX_FETCHES
    assert (counters["ssdp_fetch_busy"], counters["ssdp_bad_location_elsewhere"], counters["ssdp_bad_redirect"],
            counters["ssdp_descriptions"]) == (1, 1, 1, 9)
    assert sorted(str(a.src) for a in answers) == sorted(str(ip) for ip in hosts if ip != IP("192.168.20.13"))
    assert {(a.solicited, a.record) for a in answers} == {
        (True, ssdp.Description("Loxone Electronics GmbH", "Loxone Audioserver", "", "Audio"))}
