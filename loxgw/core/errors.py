"""One error hierarchy; each class says whose fault a failure is.

ConfigError is the user's (it names file and line), RemoteDataError the peer's
(drop, count, move on), KernelError the kernel's (it carries errno).
"""

from __future__ import annotations

from typing import NamedTuple


class LoxgwError(Exception):
    """Base of every error loxgw raises on purpose."""


class ConfigProblem(NamedTuple):
    """One problem in a config file, located by file and line (a NamedTuple: a dataclass import would
    cost `loxgw status`, which imports this module, 14 ms)."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class ConfigError(LoxgwError):
    """The configuration is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in problems))


class RemoteDataError(LoxgwError):
    """A peer sent data we cannot use; the caller drops it and counts `reason`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class KernelError(LoxgwError):
    """The kernel (netlink, nftables, sockets) refused a request."""

    def __init__(self, what: str, errno: int | None, detail: str = "") -> None:
        self.what = what
        self.errno = errno
        text = what if errno is None else f"{what} (errno {errno})"
        super().__init__(f"{text}: {detail}" if detail else text)
