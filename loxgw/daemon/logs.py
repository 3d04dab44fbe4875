"""Logging for the daemon: level names as in the config, syslog-friendly streams, each failure once.

Attackers choose what goes wrong (a crafted packet can fail a parser the
same way a million times), so a failure is logged once per distinct
(where, type, message), with its traceback, and the memory of what was
logged is bounded; repeats are only counted.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict

log = logging.getLogger("loxgw")

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": NOTICE,
          "warning": logging.WARNING, "error": logging.ERROR}
MAX_REMEMBERED = 256  # distinct failures remembered; the oldest is forgotten (and may log again)
MAX_MESSAGE = 200  # characters of an exception's text kept in the key and the log line

_seen: OrderedDict[tuple[str, str, str], int] = OrderedDict()


def log_failure(logger: logging.Logger, where: str, exc: BaseException) -> int:
    """Log `exc` with its traceback the first time this failure is seen; returns how often it was seen."""
    key = (where, type(exc).__name__, str(exc)[:MAX_MESSAGE])
    count = _seen.pop(key, 0) + 1
    _seen[key] = count
    while len(_seen) > MAX_REMEMBERED:
        _seen.popitem(last=False)
    if count == 1:
        logger.error("%s: %s (logged once; repeats are counted)", where, key[2], exc_info=exc)
    return count


def failures() -> dict[str, int]:
    """Distinct failures seen and how often, for status."""
    return {f"{where}: {kind}: {message}": count for (where, kind, message), count in _seen.items()}


def set_log_level(name: str) -> None:
    """Apply a config log level to the loxgw logger."""
    log.setLevel(LEVELS.get(name, logging.INFO))


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging(level: str, split_streams: bool = False) -> None:
    """Log lines with their level; with split_streams, info/debug to stdout, the rest to stderr.

    procd logs a service's stdout at daemon.info and its stderr at daemon.err,
    so splitting keeps syslog priorities right on OpenWrt.
    """
    formatter = logging.Formatter("loxgw: %(levelname)s: %(message)s")
    errors = logging.StreamHandler(sys.stderr)
    errors.setFormatter(formatter)
    handlers: list[logging.Handler] = [errors]
    if split_streams:
        errors.setLevel(logging.WARNING)
        info = logging.StreamHandler(sys.stdout)
        info.setFormatter(formatter)
        info.addFilter(_Below(logging.WARNING))
        handlers.append(info)
    log.handlers[:] = handlers
    log.propagate = False
    set_log_level(level)
