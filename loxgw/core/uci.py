"""A parser for OpenWrt UCI files, faithful to libuci's syntax.

Why by hand: libuci has no maintained Python binding on PyPI, and loxgw must
also run on plain Linux routers without libuci. The grammar is small: lines of
`package`, `config TYPE [NAME]`, `option NAME VALUE`, `list NAME VALUE`;
`#` comments; single quotes are literal, double quotes and bare words take
backslash escapes; a quoted value may span lines; adjacent quoted and bare
parts join into one word (as in libuci's file.c).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from loxgw.core.errors import ConfigError, ConfigProblem

_IDENT = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass
class RawOption:
    """An option or list as written: its values and the line that set it last."""

    name: str
    values: list[str]
    line: int
    is_list: bool


@dataclass
class RawSection:
    """A `config` block as written, before any typing."""

    type: str
    name: str | None
    line: int
    options: dict[str, RawOption] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How messages name this section."""
        return f"{self.type} '{self.name}'" if self.name else f"anonymous {self.type}"


@dataclass(frozen=True)
class _Word:
    text: str
    line: int


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
        if ch in " \t\r\n":
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
                    if pos >= len(text) or text[pos] == "\n":
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
            if pos >= len(text) or text[pos] == "\n":
                if not next_line():
                    break
                continue
            current.append(text[pos])
            pos += 1
        else:
            current.append(ch)
            pos += 1
    if current is not None:
        words.append(_Word("".join(current), start_line))
    return words, index


def parse(text: str, path: str) -> tuple[str | None, list[RawSection]]:
    """Parse UCI text into its package name and raw sections.

    Raises ConfigError listing every syntax problem (file:line each).
    """
    lines = text.splitlines(keepends=True)
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
            if not _IDENT.match(section_type):
                problems.append(ConfigProblem(path, line_no, f"invalid section type {section_type!r}"))
            if name is not None and not _IDENT.match(name):
                problems.append(ConfigProblem(path, line_no, f"invalid section name {name!r}"))
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
            if not _IDENT.match(name):
                problems.append(ConfigProblem(path, line_no, f"invalid option name {name!r}"))
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
            problems.append(ConfigProblem(path, line_no, f"unknown keyword {keyword!r}"))
    if problems:
        raise ConfigError(problems)
    return package, sections
