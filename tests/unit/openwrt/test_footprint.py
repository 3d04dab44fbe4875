"""bench/footprint.py's arithmetic on a small tree: what counts, as which bytes, compressed how."""

from __future__ import annotations

import importlib.util
import lzma
import marshal
import zlib
from pathlib import Path

from bench import footprint
from bench.footprint import Closure, Interpreter, Size

SO = ".cpython-311-x86_64-linux-gnu.so"


def write(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_source_counts_as_its_pyc_and_anything_else_as_it_is(tmp_path: Path) -> None:
    source = b'"""Docstrings stay: the SDK compiles without -O."""\nANSWER = 42\n'
    module = write(tmp_path, "m.py", source)
    code = compile(source, str(module), "exec", dont_inherit=True)
    assert footprint.shipped_bytes(module) == importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)
    assert len(footprint.shipped_bytes(module)) == 16 + len(marshal.dumps(code))

    data = write(tmp_path, "catalog.json", b'{"a": 1}')
    assert footprint.shipped_bytes(data) == b'{"a": 1}'
    broken = write(tmp_path, "py2.py", b"print 'old'\n")
    assert footprint.shipped_bytes(broken) == b"print 'old'\n"


def test_compression_is_per_squashfs_block_and_per_jffs2_page() -> None:
    data = bytes(range(256)) * 1200  # 300 KiB: two squashfs blocks, 75 jffs2 pages
    size = footprint.compressed(data)
    blocks = [data[:262144], data[262144:]]
    xz = sum(len(lzma.compress(b, format=lzma.FORMAT_RAW, filters=footprint.XZ_FILTERS)) for b in blocks)
    pages = sum(len(zlib.compress(data[i:i + 4096])) for i in range(0, len(data), 4096))
    assert (size.files, size.raw, size.squashfs, size.jffs2) == (1, 307200, xz, pages)
    # A page that does not compress is stored as it is.
    noise = bytes((i * 7919 + 13) % 251 ^ (i >> 3) % 256 for i in range(4096))
    assert footprint.compressed(noise).jffs2 <= 4096


def test_walk_ships_no_tests_caches_or_stale_bytecode(tmp_path: Path) -> None:
    write(tmp_path, "pkg/__init__.py", b"")
    write(tmp_path, "pkg/__init__.pyc", b"stale")
    write(tmp_path, "pkg/orphan.pyc", b"kept: no source beside it")
    write(tmp_path, "pkg/test/test_x.py", b"")
    write(tmp_path, "pkg/tests/test_y.py", b"")
    write(tmp_path, "pkg/__pycache__/x.cpython-311.pyc", b"")
    write(tmp_path, "pkg/data.txt", b"x" * 10)
    found = [p.relative_to(tmp_path).as_posix() for p in footprint.walk([tmp_path / "pkg"])]
    assert found == ["pkg/__init__.py", "pkg/data.txt", "pkg/orphan.pyc"]
    parts = [footprint.compressed(footprint.shipped_bytes(tmp_path / p)) for p in found]
    assert footprint.total([tmp_path / "pkg"]) == sum(parts, Size())


def fake_stdlib(root: Path) -> Path:
    stdlib = root / "lib" / "python3.11"
    for rel in ("json/__init__.py", "os.py", "asyncio/__init__.py", "asyncio/events.py", "idlelib/idle.py",
                "unittest/test/test_case.py", "unittest/case.py", "config-3.11-x86_64-linux-gnu/Makefile",
                "ensurepip/__init__.py", "site-packages/README.txt", f"lib-dynload/math{SO}",
                f"lib-dynload/_ctypes{SO}", f"lib-dynload/_testcapi{SO}", f"lib-dynload/xxlimited{SO}",
                "ctypes/__init__.py"):
        write(stdlib, rel, b"x = 1\n" if rel.endswith(".py") else b"data")
    return stdlib


def test_python3_light_is_the_stdlib_less_its_subpackages_and_removals(tmp_path: Path) -> None:
    stdlib = fake_stdlib(tmp_path)
    light = [p.relative_to(stdlib).as_posix() for p in footprint.python3_light_paths("24.10", stdlib)]
    assert light == ["json/__init__.py", f"lib-dynload/math{SO}", "os.py"]
    ctypes = footprint.stdlib_paths(stdlib, footprint.stdlib_split()["24.10"]["subpackage"]["python3-ctypes"]["files"])
    assert sorted(p.relative_to(stdlib).as_posix() for p in ctypes) == ["ctypes", f"lib-dynload/_ctypes{SO}"]
    asyncio = Closure("24.10", Interpreter(tmp_path / "python3.11", stdlib, None, "3.11.7")).files("python3-asyncio")
    assert [p.relative_to(stdlib).as_posix() for p in asyncio[0]] == ["asyncio"]


def test_the_closure_follows_depends_through_both_feeds(tmp_path: Path) -> None:
    python = Interpreter(tmp_path / "python3.11", fake_stdlib(tmp_path), None, "3.11.7")
    closure = Closure("24.10", python)
    # Our feed's package, the packages feed's python3-light under it, and the libraries under both.
    assert sorted(closure.resolve(["python3-netfilterqueue"])) == [
        "libbz2", "libmnl", "libnetfilter-queue", "libnfnetlink", "libpython3", "python3-base", "python3-light",
        "python3-netfilterqueue", "zlib"]
    packages = set(closure.packages)
    assert {"python3-email", "libpython3", "libnfnetlink", "python3-miniupnpc"} <= packages
    assert {"python3-openssl", "libopenssl", "python3-sqlite3", "python3-unittest", "python3"} & packages == set()
    assert {"python3-ctypes", "libffi"} & packages == set()  # the socket filters need no ctypes
    master = set(Closure("master", python).packages)
    assert "libzstd" in master and "libzstd" not in packages
    assert "python3-email" not in master  # part of master's python3-urllib, no package of its own


def test_summary_splits_the_runtime_from_the_rest() -> None:
    rows: list[dict[str, object]] = [
        {"package": "libpython3", "files": 1, "raw": 100, "squashfs": 40, "jffs2": 50},
        {"package": "python3-light", "files": 2, "raw": 10, "squashfs": 4, "jffs2": 5},
        {"package": "loxgw", "files": 3, "raw": 7, "squashfs": 2, "jffs2": 3},
    ]
    figures = footprint.summary(rows)
    assert figures["total"] == Size(6, 117, 46, 58)
    assert figures["python runtime"] == Size(3, 110, 44, 55)
    assert figures["beyond python3-light"] == Size(3, 7, 2, 3)
