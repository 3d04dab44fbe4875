"""The media table: sessions in (conntrack reports and `now`), elements, refreshes and flushes out."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from loxgw.core import catalog, intercom
from loxgw.core.intercom import (
    ELEMENT_TIMEOUT,
    END_TIMEOUT,
    FLUSH_MARGIN,
    MAX_PAIRS,
    MAX_SESSIONS,
    MAX_SESSIONS_PER_APP,
    RECHECK,
    REFRESH,
    MediaTable,
)

IP = ipaddress.IPv4Address
APP, OTHER_APP, ROGUE = IP("192.168.10.20"), IP("192.168.10.21"), IP("192.168.30.5")
DOOR, GEN1, MINISERVER = IP("192.168.20.30"), IP("192.168.20.31"), IP("192.168.20.10")
SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, TIME_WAIT, CLOSE = 1, 2, 3, 4, 5, 7, 8


def table(can_shorten: bool = True, now: float = 0.0) -> MediaTable:
    t = MediaTable(can_shorten=can_shorten)
    t.set_intercoms([(DOOR, "intercom"), (GEN1, "intercom_gen1"), (MINISERVER, "miniserver")], now)
    t.set_clients([ipaddress.ip_network("192.168.10.0/24"), ipaddress.ip_network("2001:db8:10::/64")], now)
    return t


def establish(t: MediaTable, session: intercom.Session, now: float) -> bool:
    t.observe(session, SYN_SENT, False, now)
    t.observe(session, SYN_RECV, False, now)
    return t.observe(session, ESTABLISHED, False, now)


def test_signalling_ports_come_from_the_catalogue() -> None:
    ports = intercom.signalling_ports(catalog.load())
    assert ports == {"intercom": frozenset({80, 7091, 5060}), "intercom_gen1": frozenset({80})}
    by_id = {e.id: e for e in catalog.load()}
    assert all(by_id[i].seed is False for i in ("ic-http", "ic-sip-tcp"))


def test_only_established_counts_and_every_close_ends() -> None:
    assert [intercom.phase(s, False) for s in range(10)] == [
        "opening", "opening", "opening", "live", "ended", "ended", "ended", "ended", "ended", "opening"]
    assert (intercom.phase(None, False), intercom.phase(None, True), intercom.phase(ESTABLISHED, True)) == (
        None, "ended", "ended")


def test_a_session_opens_its_pair_refreshes_and_closes_within_seconds() -> None:
    t = table()
    session = (APP, 50000, DOOR, 80)
    assert t.observe(session, SYN_SENT, False, 10.0) is False  # a SYN alone opens nothing
    assert t.to_write(10.0) == []
    assert t.observe(session, ESTABLISHED, False, 10.1) is True
    assert t.to_write(10.1) == [((APP, DOOR), ELEMENT_TIMEOUT)]
    assert intercom.element_key((APP, DOOR)).hex() == "c0a80a14c0a8141e"
    t.written([((APP, DOOR), ELEMENT_TIMEOUT)], 10.1)
    assert t.to_write(10.1 + REFRESH - 0.01) == []
    assert t.next_deadline() == 10.1 + REFRESH
    assert t.to_write(11.1) == [((APP, DOOR), ELEMENT_TIMEOUT)]
    t.written(t.to_write(11.1), 11.1)
    assert t.observe(session, None, False, 11.5) is False  # a status change carries no TCP state
    assert t.observe(session, FIN_WAIT, False, 12.0) is True  # ended: shorten its element now
    assert t.next_deadline() == 0.0
    assert t.to_write(12.0) == [((APP, DOOR), END_TIMEOUT)]
    t.written(t.to_write(12.0), 12.0)
    assert t.to_flush(12.0 + END_TIMEOUT + FLUSH_MARGIN - 0.01) == []
    assert t.next_deadline() == 12.0 + END_TIMEOUT + FLUSH_MARGIN
    assert t.to_flush(13.5) == [(APP, DOOR)]
    assert (t.pairs, t.sessions, dict(t.per_app), t.next_deadline()) == ({}, {}, {}, None)
    assert t.observe(session, TIME_WAIT, False, 14.0) is False  # later reports of it change nothing
    assert t.observe(session, None, True, 130.0) is False


def test_without_shortening_the_element_runs_out_on_its_own() -> None:
    t = table(can_shorten=False)
    session = (APP, 50000, DOOR, 7091)
    establish(t, session, 0.0)
    t.written(t.to_write(0.0), 0.0)
    assert t.observe(session, None, True, 0.5) is False  # DESTROY
    assert t.to_write(0.5) == []
    assert t.to_flush(ELEMENT_TIMEOUT + FLUSH_MARGIN - 0.01) == []
    assert t.to_flush(ELEMENT_TIMEOUT + FLUSH_MARGIN) == [(APP, DOOR)]


def test_a_pair_stays_open_while_any_of_its_sessions_lives() -> None:
    t = table()
    first, second = (APP, 50000, DOOR, 80), (APP, 50001, DOOR, 7091)
    assert establish(t, first, 0.0) is True
    t.written(t.to_write(0.0), 0.0)
    assert establish(t, second, 0.5) is False  # the pair is open already
    assert t.observe(first, CLOSE, False, 1.0) is False
    assert t.to_write(1.0) == [((APP, DOOR), ELEMENT_TIMEOUT)]  # refresh, not shortened
    assert t.observe(second, CLOSE_WAIT, False, 2.0) is True
    assert t.to_write(2.0) == [((APP, DOOR), END_TIMEOUT)]


def test_a_session_that_returns_before_the_flush_reopens_at_once() -> None:
    t = table()
    establish(t, (APP, 50000, DOOR, 80), 0.0)
    t.written(t.to_write(0.0), 0.0)
    t.observe((APP, 50000, DOOR, 80), FIN_WAIT, False, 1.0)
    t.written(t.to_write(1.0), 1.0)
    assert establish(t, (APP, 50002, DOOR, 80), 1.2) is True
    assert t.to_write(1.2) == [((APP, DOOR), ELEMENT_TIMEOUT)]
    assert t.to_flush(5.0) == []


def test_only_clients_hosts_to_an_intercoms_signalling_port_count() -> None:
    t = table()
    assert establish(t, (ROGUE, 50000, DOOR, 80), 0.0) is False  # not in a clients zone
    assert establish(t, (APP, 50000, MINISERVER, 80), 0.0) is False  # not an intercom
    assert establish(t, (APP, 50000, DOOR, 443), 0.0) is False  # not a signalling port
    assert establish(t, (APP, 50000, GEN1, 5060), 0.0) is False  # Gen. 1 signals on 80 only
    assert establish(t, (APP, 50001, GEN1, 80), 0.0) is True
    assert establish(t, (APP, 50002, DOOR, 5060), 0.0) is True
    assert sorted(p for p, _ in t.to_write(0.0)) == [(APP, DOOR), (APP, GEN1)]


def test_an_intercom_or_a_subnet_that_goes_ends_its_sessions() -> None:
    t = table()
    establish(t, (APP, 50000, DOOR, 80), 0.0)
    establish(t, (APP, 50001, GEN1, 80), 0.0)
    t.written(t.to_write(0.0), 0.0)
    assert t.set_intercoms([(GEN1, "intercom_gen1")], 1.0) is False  # nothing added
    assert [(p, s.sessions) for p, s in t.pairs.items()] == [((APP, DOOR), 0), ((APP, GEN1), 1)]
    assert t.set_intercoms([(GEN1, "intercom_gen1"), (DOOR, "intercom")], 1.0) is True
    assert t.set_clients([ipaddress.ip_network("192.168.11.0/24")], 2.0) is True
    assert t.sessions == {}
    assert t.set_clients([ipaddress.ip_network("192.168.11.0/24")], 2.0) is False


def test_caps_per_app_host_and_in_total() -> None:
    t = table()
    for port in range(MAX_SESSIONS_PER_APP + 5):
        establish(t, (APP, 40000 + port, DOOR, 80), 0.0)
    assert (t.per_app[APP], t.counters["sessions_refused_app_cap"]) == (MAX_SESSIONS_PER_APP, 5)
    t = table()
    t.set_clients([ipaddress.ip_network("10.0.0.0/8")], 0.0)
    hosts = [IP(0x0A000000 + i) for i in range(MAX_SESSIONS // MAX_SESSIONS_PER_APP + 2)]
    for host in hosts:
        for port in range(MAX_SESSIONS_PER_APP):
            establish(t, (host, 40000 + port, DOOR, 80), 0.0)
    assert len(t.sessions) == MAX_SESSIONS
    assert t.counters["sessions_refused_total_cap"] == 2 * MAX_SESSIONS_PER_APP


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**16 - 1), st.integers(1, 65535), st.integers(0, 9), st.booleans()),
                min_size=1, max_size=300))
def test_a_flood_of_reports_stays_bounded_and_consistent(reports: list[tuple[int, int, int, bool]]) -> None:
    t = table()
    t.set_clients([ipaddress.ip_network("10.0.0.0/8")], 0.0)
    doors = [(IP(0x0B000000 + i), "intercom") for i in range(4000)]
    t.set_intercoms(doors, 0.0)  # type: ignore[arg-type]
    now = 0.0
    for host, port, state, gone in reports:
        now += 0.01
        t.observe((IP(0x0A000000 + host % 64), port, IP(0x0B000000 + host), 80), state, gone, now)
        t.written(t.to_write(now), now)
        t.to_flush(now)
    assert len(t.sessions) <= MAX_SESSIONS and len(t.pairs) <= MAX_PAIRS
    assert sum(s.sessions for s in t.pairs.values()) == len(t.sessions) == sum(t.per_app.values())


def test_a_flood_of_distinct_sessions_costs_bounded_memory() -> None:
    t = table()
    t.set_clients([ipaddress.ip_network("10.0.0.0/8")], 0.0)
    t.set_intercoms([(IP(0x0B000000 + i), "intercom") for i in range(MAX_PAIRS * 2)], 0.0)
    for i in range(50_000):
        t.observe((IP(0x0A000000 + i), 40000, IP(0x0B000000 + i % (MAX_PAIRS * 2)), 80), ESTABLISHED, False, 0.0)
    assert (len(t.sessions), len(t.pairs)) == (MAX_SESSIONS, MAX_SESSIONS)
    assert t.counters["sessions_refused_total_cap"] == 50_000 - MAX_SESSIONS


def test_a_resync_adds_what_events_missed_and_ends_what_is_gone() -> None:
    t = table()
    kept, gone, fresh, late = (APP, 1, DOOR, 80), (APP, 2, DOOR, 80), (OTHER_APP, 3, DOOR, 7091), (APP, 4, DOOR, 80)
    establish(t, kept, 0.0)
    establish(t, gone, 0.0)
    t.written(t.to_write(0.0), 0.0)
    establish(t, late, 5.0)  # reported while the dump ran: the dump may predate it
    assert t.resync([(kept, ESTABLISHED), (fresh, ESTABLISHED), ((APP, 9, DOOR, 80), TIME_WAIT)], 4.0, 6.0) is True
    assert sorted(t.sessions) == sorted([kept, fresh, late])
    assert (t.sessions[kept].confirmed, t.sessions[fresh].confirmed) == (True, False)
    assert t.needs_recheck(6.0 + RECHECK - 1) is False
    t.written(t.to_write(6.0), 6.0)
    assert t.next_deadline() == 6.0 + REFRESH
    assert t.needs_recheck(6.0 + RECHECK) is True  # the kernel may never report its end
    t.observe(fresh, None, False, 7.0)  # an event about it: the kernel does report it
    assert t.needs_recheck(6.0 + RECHECK) is False
    # Ended while events were lost (kept), or missing from the dump (late, fresh): all end.
    assert t.resync([(kept, CLOSE_WAIT)], 8.0, 9.0) is True
    assert (t.sessions, t.to_write(9.0)) == ({}, [((APP, DOOR), END_TIMEOUT), ((OTHER_APP, DOOR), END_TIMEOUT)])


def test_status_lists_pairs_bounded() -> None:
    t = table()
    establish(t, (APP, 1, DOOR, 80), 0.0)
    t.written(t.to_write(0.0), 0.0)
    t.observe((APP, 1, DOOR, 80), CLOSE, False, 1.0)
    status = t.status(2.0)
    assert status["open"] == [{"app": str(APP), "intercom": str(DOOR), "sessions": 0, "state": "closing",
                               "since_end": 1.0}]
    assert (status["sessions"], status["pairs"], status["clients_networks"]) == (0, 1, ["192.168.10.0/24"])
