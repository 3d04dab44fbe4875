"""The reconciler: element diffs over netlink in one batch, `nft -f` where the kernel refuses it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import threading

import pytest

from loxgw.core import firewall, pinholes, ruleset, setkeys
from loxgw.core.config import parse_config
from loxgw.core.devices import Device
from loxgw.core.dnspath import COPIES, OFF
from loxgw.core.errors import KernelError
from loxgw.core.setkeys import KernelElement
from loxgw.daemon.firewall import Applied, Desired, FirewallService, settle
from loxgw.daemon.queuerules import alongside

CONFIG = parse_config("""
config loxgw 'main'
\toption firewall 'standalone'

config zone 'iot'
\toption role 'devices'
\tlist interface 'br-iot'

config zone 'lan'
\toption role 'clients'
\tlist interface 'br-lan'
""", "/etc/config/loxgw")
MINISERVER = Device("50:4f:94:00:00:01", "50:4f:94:00:00:01", ipaddress.IPv4Address("192.168.20.11"), "miniserver")
INTERCOM = Device("50:4f:94:00:00:02", "50:4f:94:00:00:02", ipaddress.IPv4Address("192.168.20.12"), "intercom")


class Scripts:
    """The nft side: records scripts, refuses those holding `refuse`."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.refuse: str | None = None

    def apply_script(self, script: str) -> None:
        if self.refuse is not None and self.refuse in script:
            raise KernelError("nft -f", errno.ENOENT, "No such file or directory")
        self.scripts.append(script)

    def table_exists(self, table: str) -> bool:
        return True


class Batches:
    """The netlink side: records batches, refuses them all with `refuse` (an errno)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, dict[str, list[KernelElement]], dict[str, list[KernelElement]]]] = []
        self.refuse: int | None = None
        self.opened = 0
        self.closed = 0

    def open(self) -> Batches:
        self.opened += 1
        return self

    def apply(self, table: str, delete: dict[str, list[KernelElement]], add: dict[str, list[KernelElement]]) -> None:
        if self.refuse is not None:
            raise KernelError("netlink set element batch", self.refuse, "refused")
        self.batches.append((table, delete, add))

    def close(self) -> None:
        self.closed += 1


def desired(*devices: Device) -> Desired:
    return Desired(CONFIG, "standalone", "off", OFF, devices)


def started(batches: Batches | None, clock: list[float] | None = None) -> tuple[FirewallService, Scripts]:
    """A service (worker not started: passes run when asked) with the table declared for MINISERVER."""
    scripts = Scripts()
    service = FirewallService(scripts, open_elements=batches.open if batches else None,
                              clock=(lambda: clock[0]) if clock else lambda: 0.0)
    asyncio.run(service.apply(desired(MINISERVER)))
    return service, scripts


def test_a_new_device_is_one_netlink_batch_and_no_nft_run() -> None:
    batches = Batches()
    service, scripts = started(batches)
    declared = len(scripts.scripts)
    before = service.applied.elements
    service.request(desired(MINISERVER, INTERCOM))
    service._pass()
    _, after = pinholes.desired(CONFIG, (MINISERVER, INTERCOM))
    delete, add = pinholes.changes(before, after)
    assert (len(scripts.scripts), delete) == (declared, {})
    assert batches.batches == [("loxgw", {}, setkeys.kernel_changes(add))]
    assert service.applied.elements == after
    assert (service.counters["netlink_diffs"], service.counters["diffs"]) == (1, 1)
    assert add[firewall.products_set("intercom")] == frozenset({"192.168.20.12"})


def test_a_device_leaving_deletes_its_elements() -> None:
    batches = Batches()
    service, _ = started(batches)
    service.request(desired())
    service._pass()
    (table, delete, add), = batches.batches
    assert (table, add) == ("loxgw", {})
    assert delete[firewall.products_set("miniserver")] == [KernelElement(bytes([192, 168, 20, 11]))]


def test_a_refused_batch_goes_through_nft_and_netlink_is_left_for_good() -> None:
    batches = Batches()
    batches.refuse = errno.EINVAL
    service, scripts = started(batches)
    before = service.applied.elements
    service.request(desired(MINISERVER, INTERCOM))
    service._pass()
    delete, add = pinholes.changes(before, service.applied.elements)
    assert scripts.scripts[-1] == ruleset.render_element_changes("loxgw", delete, add)
    assert (service.counters["netlink_refusals"], batches.closed, service.elements) == (1, 1, None)
    batches.refuse = None
    service.request(desired(MINISERVER))
    service._pass()
    assert (batches.batches, batches.opened) == ([], 1)
    assert "delete element inet loxgw" in scripts.scripts[-1]


def test_refused_both_ways_the_table_is_declared_again() -> None:
    batches = Batches()
    batches.refuse = errno.ENOENT
    service, scripts = started(batches)
    declare = scripts.apply_script

    def refuse_diffs(script: str) -> None:  # the element diff is refused, a whole declaration is not
        if not script.startswith("# loxgw ruleset"):
            raise KernelError("nft -f", errno.ENOENT, "No such file or directory")
        declare(script)

    scripts.apply_script = refuse_diffs  # type: ignore[method-assign]
    service.request(desired(MINISERVER, INTERCOM))
    service._pass()
    assert service.counters["declares"] == 2
    assert scripts.scripts[-1].startswith("# loxgw ruleset")
    assert service.elements is not None  # nft failed too: the change was wrong, not the bytes


def test_without_netlink_every_diff_is_an_nft_script() -> None:
    service, scripts = started(None)
    service.request(desired(MINISERVER, INTERCOM))
    service._pass()
    assert scripts.scripts[-1].startswith("add element inet loxgw ")
    assert service.counters["netlink_diffs"] == 0


def test_where_a_diffs_time_went_is_counted() -> None:
    clock = [10.0]
    batches = Batches()
    service, _ = started(batches, clock)
    service.request(desired(MINISERVER, INTERCOM))  # asked at 10.0
    clock[0] = 10.004  # the pass starts 4 ms later; the fake clock stands still through it
    service._pass()
    assert {k: v for k, v in service.counters.items() if k.startswith("pass_")} == {
        "pass_wait_us": 4000, "pass_plan_us": 0, "pass_diff_us": 0, "pass_kernel_us": 0}


def test_a_leftover_table_that_refuses_the_declaration_is_replaced() -> None:
    scripts = Scripts()
    scripts.refuse = "type ifname . ipv4_addr . inet_service"  # as if a set of that name had another type
    original = scripts.apply_script

    def refuse_until_removed(script: str) -> None:
        if script.startswith(ruleset.render_removal("loxgw")):
            scripts.refuse = None
        original(script)

    scripts.apply_script = refuse_until_removed  # type: ignore[method-assign]
    service = FirewallService(scripts, open_elements=None, clock=lambda: 0.0)
    asyncio.run(service.apply(desired(MINISERVER)))
    assert [s.startswith(ruleset.render_removal("loxgw")) for s in scripts.scripts] == [True, False]
    assert service.applied.table == "loxgw"


def test_a_transient_refusal_goes_through_nft_once_and_netlink_stays() -> None:
    batches = Batches()
    batches.refuse = errno.ENOBUFS  # replies lost: says nothing about the bytes
    service, scripts = started(batches)
    service.request(desired(MINISERVER, INTERCOM))
    service._pass()
    assert "add element inet loxgw" in scripts.scripts[-1]
    assert (service.counters["netlink_refusals"], batches.closed, service.elements is batches) == (1, 0, True)
    batches.refuse = None
    service.request(desired(MINISERVER))
    service._pass()
    assert [table for table, _, _ in batches.batches] == ["loxgw"]


def test_a_refused_declaration_of_our_own_table_is_not_replaced() -> None:
    service, scripts = started(None)
    service.applied = Applied()  # as after a failed diff: the next pass declares from scratch
    scripts.refuse = "# loxgw ruleset"
    with pytest.raises(KernelError):
        asyncio.run(service.apply(desired(MINISERVER)))
    assert not any(s.startswith(ruleset.render_removal("loxgw")) for s in scripts.scripts)


def test_the_declaration_and_the_queue_rules_run_at_once_and_the_declarations_error_wins() -> None:
    started = threading.Event()
    order: list[str] = []

    def declare() -> None:  # returns only once the other has started: they overlap
        assert started.wait(5)
        order.append("declared")

    def queue_rules() -> None:
        started.set()
        order.append("queue rules")

    alongside(declare, queue_rules)
    assert sorted(order) == ["declared", "queue rules"]

    def refused() -> None:
        raise KernelError("nft -f", errno.EPERM, "Operation not permitted")

    def also_refused() -> None:
        raise KernelError("iptables-nft-restore --noflush", None, "iptables: No chain")

    with pytest.raises(KernelError, match="nft -f"):
        alongside(refused, also_refused)
    with pytest.raises(KernelError, match="iptables-nft-restore"):
        alongside(lambda: None, also_refused)


class RefusedQueueRules:
    """iptables-nft-restore refusing loxgw's DNS rules; records what was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def install(self, rules: list[object], hold: list[str] | None = None) -> None:
        self.calls.append("install")
        raise KernelError("iptables-nft-restore --noflush", None, "iptables-restore: line 3 failed")

    def remove(self) -> None:
        self.calls.append("remove")

    def present(self) -> bool:
        return False


def test_a_first_declaration_half_refused_leaves_neither_half_in_the_kernel() -> None:
    """nft took the table, iptables-nft refused the queue rules: start-up fails and takes the table back."""
    scripts, rules = Scripts(), RefusedQueueRules()
    svc = FirewallService(scripts, lambda: rules)
    queued = Desired(CONFIG, "standalone", "xtables", COPIES, ())
    with pytest.raises(KernelError, match="iptables-nft-restore"):
        asyncio.run(svc.apply(queued))
    assert rules.calls == ["install", "remove"]
    assert scripts.scripts[-1] == ruleset.render_removal("loxgw") and svc.applied.table is None
    # Once a declaration went in, a later refusal (a reload) leaves the running state alone.
    svc = FirewallService(scripts, lambda: rules)
    rules.calls.clear()
    asyncio.run(svc.apply(desired(MINISERVER)))  # no queue rules in this row: nothing installed
    scripts.refuse = "chain"
    with pytest.raises(KernelError):
        asyncio.run(svc.apply(Desired(CONFIG, "fw4", "off", OFF, (MINISERVER,))))
    assert rules.calls == [] and svc.applied.table == "loxgw"


def test_a_waiter_that_gave_up_is_skipped_and_the_others_answered() -> None:
    gone, waiting = concurrent.futures.Future[None](), concurrent.futures.Future[None]()
    gone.cancel()  # its caller was cancelled (SIGTERM during start-up) while the declaration went in
    settle([gone, waiting])
    assert gone.cancelled() and waiting.result(timeout=0) is None
    failed: concurrent.futures.Future[None] = concurrent.futures.Future()
    settle([gone, failed], KernelError("nft -f", errno.EPERM, "Operation not permitted"))
    assert isinstance(failed.exception(timeout=0), KernelError)
