"""The OpenWrt SDK's wheel build and install steps, run with the host tools each branch pins.

lang/python/python3-package.mk builds a feed's Python package with
`python -m build --no-isolation --wheel` (Py3Build/Compile/Default) and installs the
wheel with `python -m installer`, naming it by a shell glob,
$(PYTHON3_PKG_WHEEL_NAME)-$(PKG_VERSION)-*.whl (Py3Build/Install/Default). Here both
steps run for each of our feed's packages in a venv per branch that holds exactly the
setuptools, wheel, build, installer and Cython that branch pins
(tests/openwrt_data/host-tools.toml), on what the SDK builds: the PyPI sdist pypi.mk
names (checked against PKG_HASH), or this repository after loxgw's Build/Prepare.
Then the package's filespec is applied to the installed tree, as Py3Package does.

The interpreter is the one running the tests (the SDK uses the branch's own Python,
3.11 or 3.14): a wheel's name depends on the tools, not on it. The target's ar is a
wrapper around the host's, and a bare `ar` on PATH fails, as a cross build must not
use it. Venvs and sdists are cached in /tmp/loxgw-wheel-cache.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.openwrt.feed import (
    BRANCHES,
    LOXGW_MAKEFILE,
    PYTHON_MAKEFILES,
    ROOT,
    Makefile,
    apply_filespec,
    host_tools,
    read_makefile,
)
from tests.unit.openwrt.pypi import CACHE, fetch, need_pypi

pytestmark = pytest.mark.sdk

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
PYTHON3_PKG_DIR = f"/usr/lib/python{PY}/site-packages"
MAKEFILES = [*PYTHON_MAKEFILES, LOXGW_MAKEFILE]
# What Python3/DeleteSourceFiles leaves in place but the router has no use for.
NOT_FOR_FLASH = (".pyx", ".pxd", ".pyi", ".c", ".h", "py.typed")
# setuptools' own naming: why python-netfilterqueue's Makefile globs [Nn]etfilter[Qq]ueue.
NETFILTERQUEUE_WHEEL = {"23.05": "NetfilterQueue-1.1.0-", "24.10": "netfilterqueue-1.1.0-",
                        "master": "netfilterqueue-1.1.0-"}


def venv_for(branch: str) -> Path:
    """A venv holding the branch's pinned host tools; built once per set of pins, then reused."""
    pins = host_tools()[branch]["pins"]
    key = hashlib.sha256(json.dumps([pins, sys.version, getattr(sys, "_base_executable", "")],
                                    sort_keys=True).encode()).hexdigest()[:12]
    venv = CACHE / f"venv-{branch}-{key}"
    if not (venv / ".complete").is_file():
        need_pypi()
        # Built aside and renamed into place: a run that stops half-way leaves no half venv.
        building = CACHE / f".building-{branch}-{key}-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True)
        proc = subprocess.run(
            [str(building / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             *(f"{name}=={version}" for name, version in pins.items())],
            capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, f"pip could not install {branch}'s pins:\n{proc.stderr[-3000:]}"
        (building / ".complete").touch()
        shutil.rmtree(venv, ignore_errors=True)
        building.rename(venv)
    # Only `python -m` is used: a venv's python finds its packages wherever the venv lies.
    return venv / "bin" / "python"


def sdist(makefile: Makefile) -> Path:
    """The source archive pypi.mk names (PKG_SOURCE), checked against PKG_HASH."""
    v = makefile.variables
    source_name = v.get("PYPI_SOURCE_NAME") or v["PYPI_NAME"]
    filename = f"{source_name}-{v['PKG_VERSION']}.{v.get('PYPI_SOURCE_EXT', 'tar.gz')}"
    return fetch(v["PYPI_NAME"], filename, v["PKG_HASH"])


def prepare(makefile: Makefile, work: Path) -> Path:
    """PKG_BUILD_DIR as the SDK prepares it: the unpacked sdist, or loxgw's Build/Prepare."""
    v = makefile.variables
    if "PYPI_NAME" in v:
        with tarfile.open(sdist(makefile)) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(work, filter="data")
            else:
                archive.extractall(work)  # checked against PKG_HASH above
        # pypi.mk: PKG_BUILD_DIR:=$(BUILD_DIR)/pypi/$(PYPI_SOURCE_NAME)-$(PKG_VERSION)
        build_dir = work / f"{v.get('PYPI_SOURCE_NAME') or v['PYPI_NAME']}-{v['PKG_VERSION']}"
        assert build_dir.is_dir(), f"the sdist does not unpack to {build_dir.name}"
        return build_dir
    build_dir = work / f"{v['PKG_NAME']}-{v['PKG_VERSION']}"
    tools = {"CURDIR": str(makefile.path.parent), "PKG_BUILD_DIR": str(build_dir),
             "INSTALL_DIR": "install -d -m0755", "CP": "cp -fpR"}
    for line in makefile.defines["Build/Prepare"].splitlines():
        if line.strip():
            subprocess.run(["sh", "-c", makefile.expand(line.strip(), tools)], cwd=makefile.path.parent, check=True)
    return build_dir


@pytest.fixture
def target_ar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """$(TARGET_AR): a logging wrapper around the host's ar; a bare `ar` on PATH fails the build."""
    real = shutil.which("ar")
    if real is None:
        pytest.skip("binutils' ar not installed")
    log = tmp_path / "target-ar.log"
    tools = tmp_path / "tools"
    trap = tmp_path / "host-tools"
    tools.mkdir()
    trap.mkdir()
    wrapper = tools / "target-ar"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n')
    (trap / "ar").write_text('#!/bin/sh\necho "the host ar was called: $*" >&2\nexit 1\n')
    for script in (wrapper, trap / "ar"):
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{trap}:{os.environ['PATH']}")
    yield str(wrapper), log


def build_env(makefile: Makefile, target_ar: str) -> dict[str, str]:
    """The environment of Python3/Run: the caller's, plus PYTHON3_PKG_BUILD_VARS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    # The SDK passes the target's CFLAGS here (PYTHON3_VARS); names and contents of the
    # wheels are all this test looks at, so it compiles without optimising (half the time).
    env["CFLAGS"] = "-O0 -g0"
    build_vars = makefile.expand(makefile.variables.get("PYTHON3_PKG_BUILD_VARS", ""), {"TARGET_AR": target_ar})
    for word in shlex.split(build_vars):
        name, _, value = word.partition("=")
        env[name] = value
    return env


def flash_files(package_root: Path) -> list[str]:
    """Files of the package as the router gets them: sources compiled to .pyc, the .py removed."""
    return sorted(str(p.relative_to(package_root)) + ("c" if p.suffix == ".py" else "")
                  for p in package_root.rglob("*") if p.is_file())


CASES = [(branch, makefile) for branch in BRANCHES for makefile in MAKEFILES]


@pytest.mark.parametrize(("branch", "makefile_path"), CASES, ids=[f"{b}-{m.parent.name}" for b, m in CASES])
def test_sdk_builds_installs_and_packages_the_wheel(branch: str, makefile_path: Path, tmp_path: Path,
                                                    target_ar: tuple[str, Path]) -> None:
    makefile = read_makefile(makefile_path)
    python = venv_for(branch)
    build_dir = prepare(makefile, tmp_path / "build")
    wrapper, ar_log = target_ar

    settings = makefile.variables.get("PYTHON3_PKG_BUILD_CONFIG_SETTINGS", "").split()
    built = subprocess.run(
        [str(python), "-m", "build", "--no-isolation", "--outdir", f"{build_dir}/openwrt-build", "--wheel",
         *(f"--config-setting={s}" for s in settings), *makefile.variables.get("PYTHON3_PKG_BUILD_ARGS", "").split(),
         str(build_dir)],
        cwd=build_dir, env=build_env(makefile, wrapper), capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    (wheel,) = (build_dir / "openwrt-build").glob("*.whl")
    pattern = makefile.wheel_glob()
    assert fnmatch.fnmatchcase(wheel.name, pattern), f"{branch}: {pattern} does not match {wheel.name}"
    if makefile.variables.get("PYPI_NAME") == "NetfilterQueue":
        assert wheel.name.startswith(NETFILTERQUEUE_WHEEL[branch])

    # The install step as make runs it: the glob is left to the shell.
    destdir = tmp_path / "ipkg-install"
    args = [a.replace("{destdir}", str(destdir)) for a in host_tools()[branch]["installer_args"]]
    script = f'exec "$0" -m installer {shlex.join(args)} "$1"/openwrt-build/{pattern}'
    installed = subprocess.run(["sh", "-c", script, str(python), str(build_dir)], cwd=build_dir,
                               capture_output=True, text=True, timeout=120, check=False)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert (destdir / PYTHON3_PKG_DIR.lstrip("/")).is_dir()

    if "AR=" in makefile.variables.get("PYTHON3_PKG_BUILD_VARS", ""):
        assert ar_log.is_file() and ".a" in ar_log.read_text(), "the build did not archive with $(TARGET_AR)"

    pkg_vars = {"PYTHON3_PKG_DIR": PYTHON3_PKG_DIR, "PYTHON3_VERSION": PY}
    for package in makefile.packages:
        # Py3Package/NAME/install copies named files out of PKG_INSTALL_DIR: they must be there.
        install = makefile.defines.get(f"Py3Package/{package}/install", "")
        for name in re.findall(r"\$\(PKG_INSTALL_DIR\)/(\S+)", install):
            assert (destdir / name).is_file(), f"{package}: {name} is not installed"
        spec = makefile.defines.get(f"Py3Package/{package}/filespec", "+|$(PYTHON3_PKG_DIR)")
        root = tmp_path / "ipkg" / package
        apply_filespec(makefile.expand(spec, pkg_vars), destdir, root)
        shipped = flash_files(root)
        assert [f for f in shipped if f.endswith(NOT_FOR_FLASH)] == []
        assert any(f.endswith((".so", ".pyc")) for f in shipped)
        if package == "python3-netfilterqueue":
            module = sorted(re.sub(r"\..*\.so$", ".so", Path(f).name) for f in shipped if "/netfilterqueue/" in f)
            assert module == ["__init__.pyc", "_impl.so", "_version.pyc"]


def test_every_feed_makefile_is_built_here() -> None:
    built_by_sdk = {m.parent.name for m in MAKEFILES}
    assert built_by_sdk == {"python-netfilterqueue", "python-miniupnpc", "loxgw"}
    assert ROOT.joinpath("openwrt", "net", "loxgw", "Makefile") in MAKEFILES


def test_every_branch_pins_every_tool() -> None:
    for branch in BRANCHES:
        pins = host_tools()[branch]["pins"]
        assert sorted(pins) == ["Cython", "build", "installer", "packaging", "pyproject-hooks", "setuptools", "wheel"]
        assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in pins.values())
    assert [host_tools()[b]["pins"]["setuptools"] for b in BRANCHES] == ["68.2.2", "80.9.0", "84.0.0"]

