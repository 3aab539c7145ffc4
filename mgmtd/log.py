"""Logging: one line per event, ``host component: message``.

When stderr is the journal (``JOURNAL_STREAM`` names the device and inode of
fd 2), every line carries a ``<N>`` syslog priority prefix so that
``journalctl -p warning`` filters properly; otherwise lines get a timestamp and
a level name for a human at a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LEVELS = ("debug", "info", "warning", "error")

# syslog priorities, as sd-daemon(3) prefixes them
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def syslog_priority(levelno: int) -> int:
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def stderr_is_journal(environ: dict[str, str] | None = None, fd: int = 2) -> bool:
    value = (environ if environ is not None else os.environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":", 1))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class EventFormatter(logging.Formatter):
    """Formats ``host component: message``; the component is the logger name
    below ``mgmtd.``."""

    def __init__(self, host: str, journal: bool) -> None:
        super().__init__()
        self.host = host
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        component = record.name.removeprefix("mgmtd.")
        message = record.getMessage()
        if record.exc_info and logging.getLogger().isEnabledFor(logging.DEBUG):
            message += "\n" + self.formatException(record.exc_info)
        lines = message.splitlines() or [""]
        if self.journal:
            prefix = f"<{syslog_priority(record.levelno)}>{self.host} {component}: "
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            prefix = f"{stamp} {record.levelname:<7} {self.host} {component}: "
        return "\n".join(prefix + line for line in lines)


def setup(host: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EventFormatter(host, stderr_is_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # gRPC and urllib3 chatter is not ours to report
    for noisy in ("grpc", "urllib3", "etcd3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get(component: str) -> logging.Logger:
    return logging.getLogger(f"mgmtd.{component}")
