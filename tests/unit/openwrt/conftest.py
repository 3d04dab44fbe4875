"""The OpenWrt feed's tests; the `sdk` ones download from PyPI (cached under /tmp/loxgw-wheel-cache)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sdk: reproduces the OpenWrt SDK's wheel build with each branch's host tools (needs PyPI)")
