"""Lab fixtures: real namespaces, nft and dnsmasq; skipped with a reason where impossible."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.lab.netlab import PREFIX, Lab, missing_tools, sh

REASON: str | None = None
if os.geteuid() != 0:
    REASON = "lab tests need root (network namespaces, nftables)"
elif missing_tools():
    REASON = f"lab tests need {', '.join(missing_tools())} (run `make test` to install them)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)
            if REASON:
                item.add_marker(pytest.mark.skip(reason=REASON))


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab per test, torn down even when the test fails."""
    with Lab() as instance:
        yield instance


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty network namespace of its own (no lab), deleted after the test."""
    name = f"{PREFIX}-{os.getpid()}-{request.module.__name__.rsplit('_', 1)[-1][:8]}"
    try:
        sh("ip", "netns", "add", name)
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)
