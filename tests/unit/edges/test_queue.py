"""XtablesQueue: the iptables-nft processes it runs (one restore per family) and when it reads back."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from loxgw.core.errors import KernelError
from loxgw.edges import queue
from tests.unit.core.test_xtables import HOLD, RESTORE_V4, RULES, SAVE_EMPTY, SAVE_V4, SAVE_V6, without

# --- the calls XtablesQueue makes -------------------------------------------------------


class FakeTools:
    """Stands in for iptables-nft-restore/-save: records each run, answers with the given save texts."""

    def __init__(self, saves: dict[int, str]) -> None:
        self.saves = saves
        self.refuse = 0  # how many restores to refuse next
        self.calls: list[tuple[str, str]] = []

    def tools(self, family: int) -> queue.Tools:
        prefix = "ip" if family == 4 else "ip6"
        return queue.Tools(f"/usr/sbin/{prefix}tables-nft-restore", f"/usr/sbin/{prefix}tables-nft-save")

    def __call__(self, argv: Sequence[str], data: str) -> subprocess.CompletedProcess[str]:
        name = os.path.basename(argv[0])
        self.calls.append((name, data))
        if name.endswith("-save"):
            return subprocess.CompletedProcess(argv, 0, self.saves[4 if name.startswith("iptables") else 6], "")
        if self.refuse:
            self.refuse -= 1
            return subprocess.CompletedProcess(argv, 4, "", "line 2 failed: Chain already exists.")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def names(self) -> list[str]:
        calls, self.calls = self.calls, []
        return [name for name, _ in calls]

    def take(self) -> list[tuple[str, str]]:
        calls, self.calls = self.calls, []
        return calls


def make(saves: dict[int, str] | None = None) -> tuple[queue.XtablesQueue, FakeTools]:
    fake = FakeTools(saves or {4: SAVE_V4, 6: SAVE_V6})
    return queue.XtablesQueue(run=fake, tools=fake.tools), fake


def test_start_and_stop_take_one_restore_per_family_each() -> None:
    xt, fake = make()
    xt.install(RULES, HOLD)
    calls = fake.take()
    assert [name for name, _ in calls] == ["iptables-nft-restore", "ip6tables-nft-restore"]
    assert calls[0][1] == RESTORE_V4
    xt.remove()
    calls = fake.take()
    assert [name for name, _ in calls] == ["iptables-nft-restore", "ip6tables-nft-restore"]
    assert calls[0][1].startswith("*mangle\n-D INPUT -j LOXGW_DNS_IN\n-D OUTPUT -j LOXGW_DNS_OUT\n")
    xt.remove()
    assert fake.names() == []


def test_an_intact_install_is_kept_after_one_save_per_family() -> None:
    xt, fake = make()
    xt.install(RULES, HOLD)
    fake.take()
    xt.install(RULES, HOLD)
    assert fake.names() == ["iptables-nft-save", "ip6tables-nft-save"]
    assert xt.present()


def test_after_present_says_no_install_writes_from_that_read() -> None:
    xt, fake = make({4: without(SAVE_V4, "-A INPUT -j"), 6: SAVE_V6})
    xt.install(RULES, HOLD)
    fake.take()
    assert not xt.present()
    assert fake.names() == ["iptables-nft-save", "ip6tables-nft-save"]
    xt.install(RULES, HOLD)
    calls = fake.take()
    assert [name for name, _ in calls] == ["iptables-nft-restore", "ip6tables-nft-restore"]
    deletes = [line for line in calls[0][1].splitlines() if line.startswith("-D")]
    assert deletes == ["-D FORWARD -j LOXGW_DNS_FWD", "-D OUTPUT -j LOXGW_DNS_OUT"]


def test_a_leftover_of_an_earlier_run_is_read_and_written_over() -> None:
    xt, fake = make()
    fake.refuse = 1
    xt.install(RULES, HOLD)
    calls = fake.take()
    assert [name for name, _ in calls] == ["iptables-nft-restore", "iptables-nft-save", "iptables-nft-restore",
                                           "ip6tables-nft-restore"]
    assert "-D INPUT -j LOXGW_DNS_IN" in calls[2][1].splitlines()


def test_new_rules_are_written_after_a_read() -> None:
    xt, fake = make()
    xt.install(RULES, HOLD)
    fake.take()
    xt.install(RULES, None)
    assert fake.names() == ["iptables-nft-save", "ip6tables-nft-save", "iptables-nft-restore", "ip6tables-nft-restore"]


def test_a_restore_refused_twice_is_a_kernel_error() -> None:
    xt, fake = make()
    fake.refuse = 2
    with pytest.raises(KernelError, match="Chain already exists"):
        xt.install(RULES, HOLD)
    assert not xt.present()


def test_remove_reads_first_when_it_knows_nothing_and_never_raises() -> None:
    xt, fake = make({4: SAVE_EMPTY, 6: SAVE_EMPTY})
    xt.remove()
    assert fake.names() == ["iptables-nft-save", "ip6tables-nft-save"]
    xt, fake = make()
    fake.refuse = 4
    xt.remove()
    assert fake.names() == ["iptables-nft-save", "iptables-nft-restore"] * 2 + ["ip6tables-nft-save",
                                                                              "ip6tables-nft-restore"] * 2


def test_nothing_is_written_where_the_tools_are_missing() -> None:
    fake = FakeTools({4: SAVE_EMPTY, 6: SAVE_EMPTY})
    xt = queue.XtablesQueue(run=fake, tools=lambda family: fake.tools(4) if family == 4 else None)
    xt.install(RULES, HOLD)
    assert fake.names() == ["iptables-nft-restore"]


# --- the nft queue expression check ------------------------------------------------------

# The NFTA_LIST_ELEM `nft -c` sent for `queue num 1 bypass` (nftables 1.0.6, strace of its batch).
NFT_QUEUE_EXPRESSION = ("2c000180" "0a000100" "7175657565000000" "1c000280" "06000100" "00010000"
                        "06000200" "00010000" "06000300" "00010000")


def test_the_queue_check_sends_the_expression_nft_sends() -> None:
    assert queue.queue_expression().hex() == NFT_QUEUE_EXPRESSION


def test_the_queue_check_is_table_chain_and_rule_of_the_probe_table() -> None:
    (table, chain, rule) = queue.rule_check(b"EXPR")
    assert [command for command, _, _ in (table, chain, rule)] == [0, 3, 6]  # NEWTABLE, NEWCHAIN, NEWRULE
    assert table[2] == bytes.fromhex("10000100") + b"loxgw_probe\0"
    assert chain[2] == bytes.fromhex("10000100") + b"loxgw_probe\0" + bytes.fromhex("06000300") + b"c\0\0\0"
    assert rule[2].endswith(bytes.fromhex("08000480") + b"EXPR")


def test_an_early_native_queue_check_answers_the_next_choice_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def supported() -> bool:
        asked.append(threading.current_thread().name)
        return True

    monkeypatch.setattr(queue, "native_queue_supported", supported)
    queue.check_native_queue_early()
    queue.check_native_queue_early()  # one check in flight at a time
    assert queue.choose_mode("inline") == "nft"
    assert asked == ["loxgw-queue-check"]  # asked in its thread, before the choice needed it
    assert queue.choose_mode("inline") == "nft"  # a later choice (a reload) asks again, here
    assert asked == ["loxgw-queue-check", "MainThread"]
    assert queue.choose_mode("passive") == "passive" and len(asked) == 2


def test_an_early_check_that_failed_fails_the_choice_as_the_check_would() -> None:
    def broken() -> bool:
        raise PermissionError(1, "Operation not permitted")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queue, "native_queue_supported", broken)
        queue.check_native_queue_early()
        with pytest.raises(PermissionError):
            queue.choose_mode("inline")


def test_rules_written_by_legacy_iptables_are_not_notified(tmp_path: Path) -> None:
    legacy, multi = tmp_path / "xtables-legacy-multi", tmp_path / "xtables-nft-multi"
    for binary in (legacy, multi):
        binary.touch()
    for name, target in (("iptables-restore", legacy), ("ip6tables-restore", multi)):
        (tmp_path / name).symlink_to(target)

    def tools(restore: str) -> Callable[[int], queue.Tools]:
        return lambda family: queue.Tools(str(tmp_path / restore.format("ip" if family == 4 else "ip6")), "")

    assert queue.XtablesQueue(tools=tools("/usr/sbin/{}tables-nft-restore")).notified()
    assert not queue.XtablesQueue(tools=tools("{}tables-restore")).notified()  # v4 through the legacy multi
    (tmp_path / "iptables-restore").unlink()
    (tmp_path / "iptables-restore").symlink_to(multi)
    assert queue.XtablesQueue(tools=tools("{}tables-restore")).notified()  # both through xtables-nft-multi
