"""Stopping a child process: ask with signals, wait, then kill."""

from __future__ import annotations

import logging
import signal
import subprocess


def stop(proc: subprocess.Popen, what: str, timeout: float, log: logging.Logger,
         signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> None:
    """Stops a running child; one that has not exited ``timeout`` seconds
    after ``signals`` is killed."""
    for signum in signals:
        proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0fs: killing it", what, timeout)
        proc.kill()
        proc.wait(timeout=5)
    log.info("stopped %s", what)
