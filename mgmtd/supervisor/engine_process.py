"""The engine child: started with the graph, fed membership on stdin, read
for state and stats on stdout. Its stderr is the supervisor's (the same journal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from mgmtd import log, protocol
from mgmtd.supervisor import child

LOG = log.get("supervisor")

ENGINE_STRIPPED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class EngineProcess:
    def __init__(self, args: list[str], on_state: Callable[[protocol.EngineState], None],
                 on_stats: Callable[[int, protocol.EngineStats], None] = lambda run, stats: None) -> None:
        self.args = args
        self.on_state = on_state
        self.on_stats = on_stats          # (which start of the engine, its counters)
        self.runs = 0
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.last_membership: protocol.Membership | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ENGINE_STRIPPED_ENV}
        # -P: not the working directory first on sys.path, so a "mgmtd" folder
        # where the supervisor was started is never imported instead of this code
        command = [sys.executable, "-P", "-m", "mgmtd.cli", "engine", *self.args]
        self.proc = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1,
        )
        self.runs += 1
        threading.Thread(target=self._read_state, args=(self.proc, self.runs), name="engine-state",
                         daemon=True).start()
        LOG.info("started engine (pid %d)", self.proc.pid)
        if self.last_membership is not None:
            self.send(self.last_membership)

    def _read_state(self, proc: subprocess.Popen, run: int) -> None:
        for line in proc.stdout:
            message = protocol.parse_line(line)
            if isinstance(message, protocol.EngineState):
                self.on_state(message)
            elif isinstance(message, protocol.EngineStats):
                self.on_stats(run, message)
        proc.stdout.close()

    def send(self, membership: protocol.Membership) -> None:
        with self.lock:
            self.last_membership = membership
            if self.proc is None or self.proc.poll() is not None:
                return
            try:
                self.proc.stdin.write(membership.to_line())
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # it died; the supervisor loop restarts it and we resend then

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def reload(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            child.stop(self.proc, "engine", timeout, LOG)
        with self.lock:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
