"""Telling systemd how the node is doing (sd_notify): READY once etcd answers
and the engine has loaded its graph, STATUS when it changes, WATCHDOG pings
from the main loop, RELOADING around a reload, STOPPING on the way out.
Nothing is sent when not started by systemd (no NOTIFY_SOCKET)."""

from __future__ import annotations

import os
import time

import sdnotify


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between pings: half of WATCHDOG_USEC, when the watchdog is meant for us."""
    env = environ if environ is not None else os.environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.systemd = sdnotify.SystemdNotifier() if self.enabled else None
        self.interval = watchdog_interval() if self.enabled else None
        self.last_ping = 0.0
        self.last_status = ""
        self.ready_sent = False

    def _send(self, message: str) -> None:
        if self.systemd is not None:
            self.systemd.notify(message)

    def ready(self) -> None:
        if not self.ready_sent:
            self.ready_sent = True
            self._send("READY=1")

    def status(self, text: str) -> None:
        line = " ".join(text.split())  # one line, always
        if line != self.last_status:
            self.last_status = line
            self._send(f"STATUS={line}")

    def watchdog(self) -> None:
        if self.interval is None:
            return
        now = time.monotonic()
        if now - self.last_ping >= self.interval:
            self.last_ping = now
            self._send("WATCHDOG=1")

    def tick(self, default: float) -> float:
        """How long the main loop may sleep without missing a ping."""
        return default if self.interval is None else min(default, self.interval)

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def reloaded(self) -> None:
        self._send("READY=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")
