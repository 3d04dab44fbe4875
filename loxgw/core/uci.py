"""A parser for OpenWrt UCI files, faithful to libuci's syntax.

Why by hand: libuci has no maintained Python binding on PyPI, and loxgw must
also run on plain Linux routers without libuci. The grammar is small: lines of
`package`, `config TYPE [NAME]`, `option NAME VALUE`, `list NAME VALUE`;
`#` comments; single quotes are literal, double quotes and bare words take
backslash escapes; a quoted value may span lines; adjacent quoted and bare
parts join into one word (as in libuci's file.c). Only `\\n` ends a line, as
libuci reads lines with fgets: `str.splitlines` would also split at VT, FF,
FS, GS, RS, NEL, LS and PS and so shift every later line number. Between
words, C's isspace() characters (space, TAB, VT, FF, CR) are whitespace.
"""

from __future__ import annotations

import os
import stat

from loxgw.core.errors import ConfigError, ConfigProblem

# No re and no typing here: `loxgw status` reads the status socket's path with this module, and
# they cost it ~17 ms of imports (re, enum, typing) on a 40 ms budget.
_SPACE = " \t\v\f\r\n"
_SPECIAL = frozenset(_SPACE + "'\"\\")  # what ends a plain run: whitespace, quotes, backslash
SHOWN = 40  # characters of a value a message repeats
MAX_PROBLEMS = 100  # problems one ConfigError lists; a 1 MiB file of bad lines would list 500,000


def quote(text: str) -> str:
    """A value as a message shows it: repr, cut to SHOWN characters (with its length) if longer.

    A config value is the user's text of any length; a 10 MB value must not
    make a 10 MB message (in `check` output and in the reload log alike).
    """
    if len(text) <= SHOWN:
        return repr(text)
    return f"{text[:SHOWN] + '…'!r} ({len(text)} characters)"


def config_error(problems: list[ConfigProblem]) -> ConfigError:
    """A ConfigError with the first MAX_PROBLEMS problems and, past them, one whole-file line counting the rest."""
    if len(problems) <= MAX_PROBLEMS:
        return ConfigError(problems)
    more = len(problems) - MAX_PROBLEMS
    return ConfigError([*problems[:MAX_PROBLEMS], ConfigProblem(problems[0].path, 0, f"and {more} more problems")])


def split_lines(text: str) -> list[str]:
    """Lines as libuci counts them: each ends at `\\n` (kept), and only there."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    return lines


# Plain classes, not dataclasses: `loxgw status` reads its socket path through this module, and
# importing dataclasses cost it 14 ms, a third of its import time.
class RawOption:
    """An option or list as written: its values and the line that set it last."""

    __slots__ = ("is_list", "line", "name", "values")

    def __init__(self, name: str, values: list[str], line: int, is_list: bool) -> None:
        self.name = name
        self.values = values
        self.line = line
        self.is_list = is_list

    def __repr__(self) -> str:
        return f"RawOption({self.name!r}, {self.values!r}, {self.line}, {self.is_list})"


class RawSection:
    """A `config` block as written, before any typing."""

    __slots__ = ("line", "name", "options", "type")

    def __init__(self, type: str, name: str | None, line: int) -> None:
        self.type = type
        self.name = name
        self.line = line
        self.options: dict[str, RawOption] = {}

    def __repr__(self) -> str:
        return f"RawSection({self.type!r}, {self.name!r}, {self.line}, {self.options!r})"

    @property
    def label(self) -> str:
        """How messages name this section."""
        return f"{self.type} {quote(self.name)}" if self.name else f"anonymous {self.type}"


def is_identifier(text: str) -> bool:
    """Whether `text` is a UCI identifier: one or more of A-Z, a-z, 0-9 and _ (libuci's uci_validate_name)."""
    return bool(text) and text.isascii() and text.replace("_", "a").isalnum()


def _plain_end(text: str, pos: int) -> int:
    """The end of the run of characters from `pos` that are neither whitespace nor special (at least one)."""
    end = pos + 1
    while end < len(text) and text[end] not in _SPECIAL:
        end += 1
    return end


class _Word:
    """One word of a logical line and the line it started on."""

    __slots__ = ("line", "text")

    def __init__(self, text: str, line: int) -> None:
        self.text = text
        self.line = line


def _at_line_end(text: str, pos: int) -> bool:
    """Whether only the line's end (`\\n`, or `\\r\\n` as libuci allows) is left at pos."""
    return text[pos:] in ("", "\n", "\r\n")


def _words(lines: list[str], index: int, path: str) -> tuple[list[_Word], int]:
    """Split the logical line starting at lines[index]; returns words and the next index.

    A quoted string or a trailing backslash continues onto the following line.
    """
    words: list[_Word] = []
    line_no = index + 1
    text = lines[index]
    pos = 0
    current: list[str] | None = None
    start_line = line_no
    index += 1

    def next_line() -> bool:
        nonlocal text, pos, index, line_no
        if index >= len(lines):
            return False
        text = lines[index]
        pos = 0
        index += 1
        line_no += 1
        return True

    while True:
        if pos >= len(text):
            break
        ch = text[pos]
        if ch in _SPACE:
            if current is not None:
                words.append(_Word("".join(current), start_line))
                current = None
            pos += 1
            continue
        if ch == "#" and current is None:
            break
        if current is None:
            current = []
            start_line = line_no
        if ch == "'":
            pos += 1
            while True:
                end = text.find("'", pos)
                if end >= 0:
                    current.append(text[pos:end])
                    pos = end + 1
                    break
                current.append(text[pos:])
                if not next_line():
                    raise ConfigError([ConfigProblem(path, start_line, "unterminated ' quote")])
        elif ch == '"':
            pos += 1
            while True:
                if pos >= len(text):
                    if not next_line():
                        raise ConfigError([ConfigProblem(path, start_line, 'unterminated " quote')])
                    continue
                c = text[pos]
                if c == '"':
                    pos += 1
                    break
                if c == "\\":
                    pos += 1
                    if _at_line_end(text, pos):
                        # Backslash at end of line joins the next line.
                        if not next_line():
                            raise ConfigError(
                                [ConfigProblem(path, start_line, 'unterminated " quote')]
                            )
                        continue
                    current.append(text[pos])
                    pos += 1
                    continue
                current.append(c)
                pos += 1
        elif ch == "\\":
            pos += 1
            if _at_line_end(text, pos):
                if not next_line():
                    break
                continue
            current.append(text[pos])
            pos += 1
        else:
            end = _plain_end(text, pos)
            current.append(text[pos:end])
            pos = end
    if current is not None:
        words.append(_Word("".join(current), start_line))
    return words, index


def parse(text: str, path: str) -> tuple[str | None, list[RawSection]]:
    """Parse UCI text into its package name and raw sections.

    Raises ConfigError listing every syntax problem (file:line each).
    """
    lines = split_lines(text)
    problems: list[ConfigProblem] = []
    sections: list[RawSection] = []
    package: str | None = None
    index = 0
    while index < len(lines):
        line_no = index + 1
        try:
            words, index = _words(lines, index, path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            break
        if not words:
            continue
        keyword, args = words[0].text, words[1:]
        if keyword == "package":
            if len(args) != 1:
                problems.append(ConfigProblem(path, line_no, "package takes exactly one name"))
            else:
                package = args[0].text
        elif keyword == "config":
            if not 1 <= len(args) <= 2:
                problems.append(ConfigProblem(path, line_no, "config takes a type and an optional name"))
                continue
            section_type = args[0].text
            name = args[1].text if len(args) == 2 else None
            if not is_identifier(section_type):
                problems.append(ConfigProblem(path, line_no, f"invalid section type {quote(section_type)}"))
            if name is not None and not is_identifier(name):
                problems.append(ConfigProblem(path, line_no, f"invalid section name {quote(name)}"))
            sections.append(RawSection(section_type, name, line_no))
        elif keyword in ("option", "list"):
            if not sections:
                problems.append(ConfigProblem(path, line_no, f"{keyword} outside of a config section"))
                continue
            if len(args) != 2:
                problems.append(
                    ConfigProblem(path, line_no, f"{keyword} takes a name and one value (quote spaces)")
                )
                continue
            name, value = args[0].text, args[1].text
            if not is_identifier(name):
                problems.append(ConfigProblem(path, line_no, f"invalid option name {quote(name)}"))
                continue
            options = sections[-1].options
            existing = options.get(name)
            if keyword == "option" or existing is None:
                options[name] = RawOption(name, [value], line_no, keyword == "list")
            else:
                # libuci turns an option followed by a list of the same name into a list.
                existing.values.append(value)
                existing.line = line_no
                existing.is_list = True
        else:
            problems.append(ConfigProblem(path, line_no, f"unknown keyword {quote(keyword)}"))
    if problems:
        raise config_error(problems)
    return package, sections


# --- the file ---------------------------------------------------------------------

MAX_BYTES = 1 << 20  # a config file's size cap; the sample configs are about 1 KB

_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_config_text(path: str) -> str:
    """A config file's text: a regular file of at most MAX_BYTES of UTF-8, else a one-line ConfigError.

    Opened with O_NONBLOCK and checked with fstat before any read: a FIFO
    would block `check`, `run` and `status` for good, and /dev/zero would grow
    memory without end.
    """

    def fail(message: str, line: int = 0) -> ConfigError:
        return ConfigError([ConfigProblem(path, line, message)])

    chunks: list[bytes] = []
    total = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from exc
    except ValueError as exc:  # a NUL in the path
        raise fail(f"cannot read: {exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((kind for test, kind in _FILE_TYPES if test(info.st_mode)), "a special file")
            raise fail(f"not a regular file but {kind}; loxgw reads its config only from a regular file")
        if info.st_size > MAX_BYTES:
            raise fail(f"{info.st_size} bytes, more than the {MAX_BYTES}-byte limit of a config file")
        while total <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_BYTES:  # it grew after fstat
        raise fail(f"more than the {MAX_BYTES}-byte limit of a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise fail(f"not UTF-8 text: {exc.reason} at byte {exc.start}", line) from exc
