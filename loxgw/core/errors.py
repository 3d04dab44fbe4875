"""One error hierarchy; each class says whose fault a failure is.

ConfigError is the user's (it names file and line), RemoteDataError the peer's
(drop, count, move on), KernelError the kernel's (it carries errno).
"""

from __future__ import annotations


class LoxgwError(Exception):
    """Base of every error loxgw raises on purpose."""


class ConfigProblem:
    """One problem in a config file, located by file and line.

    Written by hand, not a dataclass nor a NamedTuple: `loxgw status` imports this module, and
    dataclasses would cost it 14 ms, typing (NamedTuple's module, which imports re) 8-13 ms.
    """

    __slots__ = ("line", "message", "path")

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"

    def __repr__(self) -> str:
        return f"ConfigProblem({self.path!r}, {self.line!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigProblem):
            return NotImplemented
        return (self.path, self.line, self.message) == (other.path, other.line, other.message)

    def __hash__(self) -> int:
        return hash((self.path, self.line, self.message))


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
