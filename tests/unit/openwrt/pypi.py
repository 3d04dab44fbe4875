"""Files from PyPI's simple index (PEP 503), cached under /tmp/loxgw-wheel-cache; tests skip without PyPI."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from functools import cache
from pathlib import Path

import pytest

CACHE = Path("/tmp/loxgw-wheel-cache")
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


@cache
def unreachable() -> str | None:
    try:
        urllib.request.urlopen(f"{INDEX}/pip/", timeout=10).close()
    except (OSError, urllib.error.URLError) as exc:
        return f"PyPI ({INDEX}) unreachable: {exc}"
    return None


def need_pypi() -> None:
    reason = unreachable()
    if reason:
        pytest.skip(reason)


def fetch(project: str, filename: str, sha256: str | None = None) -> Path:
    """One release file of a project, checked against `sha256` (else the index's own hash)."""
    cached = CACHE / "files" / filename
    if cached.is_file() and (sha256 is None or hashlib.sha256(cached.read_bytes()).hexdigest() == sha256):
        return cached
    need_pypi()
    page_url = f"{INDEX}/{re.sub(r'[-_.]+', '-', project).lower()}/"
    page = urllib.request.urlopen(page_url, timeout=30).read().decode()
    links = [urllib.parse.urljoin(page_url, href) for href in re.findall(r'href="([^"]+)"', page)]
    (url,) = [link for link in links if urllib.parse.urlsplit(link).path.rsplit("/", 1)[-1] == filename]
    expected = sha256 or urllib.parse.urlsplit(url).fragment.removeprefix("sha256=")
    data = urllib.request.urlopen(url, timeout=60).read()
    assert hashlib.sha256(data).hexdigest() == expected, f"{filename}: sha256 differs from {expected}"
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f".{filename}.{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(cached)
    return cached
