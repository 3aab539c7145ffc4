"""``exec``: runs a command (mgmt's exec), with guards.

When the command runs:

- with ``creates``: never while that path exists; with ``ifcmd``: only when
  ifcmd exits 0. A guard is evaluated on every check, so it *is* the state:
  an exec whose guard says "run" runs again at every check.
- without a guard: once per engine run (per loaded resource). After one
  successful run it is in state until its ``watchcmd`` prints a line, its
  ``pollint`` elapses, or it is refreshed over a ``notify`` edge, like mgmt,
  which treats an exec as in state until an event says otherwise.
- ``refresh_only: true`` (mgmtd's own field): only when refreshed.

A refresh reruns the command, but a guard still has the last word."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from mgmtd.resources.base import (
    ID_MAX,
    YEAR,
    Field,
    FieldError,
    Meta,
    Resource,
    ResourceError,
    is_finite_number,
    shown,
)

KILL_GRACE = 2.0           # seconds between SIGTERM and SIGKILL for a stopped command
WATCH_BACKOFF_MAX = 60.0   # longest wait before restarting a watch command that ended
OUTPUT_LIMIT = 4000        # characters of command output kept for the debug report


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Signals the command and everything it started (it leads its own group)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_group(proc: subprocess.Popen, grace: float = KILL_GRACE) -> None:
    kill_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # also reaches children that outlived a leader which obeyed SIGTERM
    kill_group(proc, signal.SIGKILL)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def clip(text: str) -> str:
    return text if len(text) <= OUTPUT_LIMIT else "..." + text[-OUTPUT_LIMIT:]


def _plain(value: object) -> bool:
    """A string, or a finite number (an argument or variable written as a number)."""
    return isinstance(value, str) or is_finite_number(value)


def _unset_if_empty(value: str | int | None) -> str | int | None:
    return None if value == "" else value   # mgmt graphs spell "not set" as ''


def split_command(command: str, shell: str | None, field_name: str, args: list | None = None) -> list[str]:
    if shell:
        return [shell, "-c", command]
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise FieldError(field_name, f"cannot split {field_name} {shown(command)}: {err}") from None
    if not argv:
        raise FieldError(field_name, f"{field_name} is empty")
    return argv + [str(arg) for arg in args or ()]


class ExecResource(Resource):
    kind = "exec"
    FIELDS = {
        "cmd": Field((str,), None, doc="the command; split like a shell would (no expansion, no pipes) "
                     "unless shell is set; default: the resource name"),
        "args": Field((list,), None, doc="arguments appended to cmd (a single program, no shell)"),
        "shell": Field((str,), None, doc="run cmd as `SHELL -c CMD`, e.g. /bin/bash; '' = no shell"),
        "cwd": Field((str,), None, doc="absolute working directory; orders the exec after the file "
                     "resource managing it"),
        "env": Field((dict,), None, doc="environment variables added to mgmtd's own"),
        "timeout": Field((int, float), 0, doc="seconds before cmd (and ifcmd) and all it started are "
                         "killed, an error; 0 = no limit", min=0, max=YEAR),
        "user": Field((str, int), None, doc="run the commands as this user (needs root)", min=0, max=ID_MAX),
        "group": Field((str, int), None, doc="run the commands as this group (needs root)",
                       min=0, max=ID_MAX),
        "creates": Field((str,), None, doc="absolute path; while it exists the exec is in state"),
        "ifcmd": Field((str,), None, doc="guard, run at every check: cmd runs only if this exits 0"),
        "ifshell": Field((str,), None, doc="shell for ifcmd, like shell"),
        "ifcwd": Field((str,), None, doc="working directory for ifcmd; default: cwd"),
        "watchcmd": Field((str,), None, doc="long-running command; every line it prints puts the exec "
                          "out of state (cmd runs again); restarted with backoff if it ends"),
        "watchshell": Field((str,), None, doc="shell for watchcmd, like shell"),
        "watchcwd": Field((str,), None, doc="working directory for watchcmd; default: cwd"),
        "pollint": Field((int, float), 0, doc="if > 0: every pollint seconds the exec is put out of state "
                         "(cmd runs again), as if watchcmd had printed a line. meta.poll, by contrast, "
                         "only re-evaluates the guards", min=0, max=YEAR),
        "refresh_only": Field((bool,), False, doc="(mgmtd) run only when refreshed over a notify edge"),
        "state": Field((str,), None, doc="(mgmt compatibility) 'present' or '', nothing else"),
    }

    def __init__(self, name: str, params: dict[str, Any], meta: Meta | None = None) -> None:
        super().__init__(name, params, meta)
        self._lock = threading.Lock()
        # watch events bump the generation; the exec is in state when it last
        # ran successfully in the current generation
        self._generation = 0
        self._ran_generation = -1
        self._running: set[subprocess.Popen] = set()
        self._interrupted = False

    # --- parameters -----------------------------------------------------------
    @property
    def command(self) -> str:
        return self.cmd or self.name

    def argv(self) -> list[str]:
        return split_command(self.command, self.shell, "cmd", self.args)

    def if_argv(self) -> list[str]:
        return split_command(self.ifcmd, self.ifshell, "ifcmd")

    def watch_argv(self) -> list[str]:
        return split_command(self.watchcmd, self.watchshell, "watchcmd")

    def environment(self) -> dict[str, str] | None:
        if not self.env:
            return None
        return {**os.environ, **{key: str(value) for key, value in self.env.items()}}

    def validate(self) -> None:
        if self.args and self.shell:
            raise FieldError("args", "args cannot be used with a shell: put them in cmd")
        if self.args and len(split_command(self.command, None, "cmd")) > 1:
            raise FieldError("args", "args cannot be used when cmd has arguments of its own")
        for arg in self.args or ():
            if not _plain(arg):
                raise FieldError("args", f"args must be strings (or finite numbers), not {shown(arg)}")
        self.argv()
        if self.ifcmd:
            self.if_argv()
        if self.watchcmd:
            self.watch_argv()
        for name in ("cwd", "ifcwd", "watchcwd", "creates"):
            value = getattr(self, name)
            if value and not os.path.isabs(value):
                raise FieldError(name, f"{name} must be an absolute path: {shown(value)}")
        for key, value in (self.env or {}).items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise FieldError("env", f"bad environment variable name: {shown(key)}")
            if not _plain(value):
                raise FieldError("env", f"env {shown(key)}: value must be a string (or a finite number), "
                                 f"not {shown(value)}")
        if self.state not in (None, "", "present"):
            raise FieldError("state", f"exec state must be 'present' (or left out), not {shown(self.state)}")

    # --- autoedges ------------------------------------------------------------
    def autoedge_requires(self) -> list[str]:
        paths: list[str] = []
        dirs = [d for d in (self.cwd, self.ifcwd, self.watchcwd) if d]
        if self.creates:
            dirs.append(os.path.dirname(self.creates.rstrip("/")))
        for directory in dirs:
            path = os.path.normpath(directory)
            while path and path != "/":
                if path not in paths:
                    paths.append(path)
                path = os.path.dirname(path)
        return paths

    # --- running commands -------------------------------------------------------
    def _popen(self, argv: list[str], cwd: str | None, **streams: Any) -> subprocess.Popen:
        try:
            # its own session: a timeout or stop can kill all it started, and
            # signals sent to mgmtd's terminal group do not reach it
            return subprocess.Popen(argv, cwd=cwd or None, env=self.environment(), stdin=subprocess.DEVNULL,
                                    start_new_session=True, user=_unset_if_empty(self.user),
                                    group=_unset_if_empty(self.group), **streams)
        except (OSError, ValueError, KeyError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            where = f" in {cwd}" if cwd else ""
            raise ResourceError(f"cannot start {shown(argv[0])}{where}: {reason}") from None

    def _run(self, argv: list[str], cwd: str | None, what: str) -> tuple[int, str, str]:
        """Runs one command to its end; returns (status, stdout, stderr)."""
        if self._interrupted:
            raise ResourceError("interrupted: mgmtd is stopping")
        proc = self._popen(argv, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self._lock:
            self._running.add(proc)
        try:
            try:
                out, err = proc.communicate(timeout=self.timeout or None)
            except subprocess.TimeoutExpired:
                kill_group(proc, signal.SIGKILL)
                raise ResourceError(f"{what} timed out after {self.timeout}s: killed it and all it "
                                    "started") from None
        finally:
            with self._lock:
                self._running.discard(proc)
            if proc.poll() is None:
                kill_group(proc, signal.SIGKILL)
                try:
                    proc.communicate(timeout=KILL_GRACE)
                except subprocess.TimeoutExpired:
                    # a process that left the group still holds the pipes
                    proc.kill()
                    proc.wait()
        if self._interrupted:
            raise ResourceError("interrupted: mgmtd is stopping")
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def _report_output(self, what: str, out: str, err: str) -> None:
        text = "\n".join(part.rstrip("\n") for part in (out, err) if part.strip())
        if text:
            self.ctx.report("debug", f"{self}: output of {what}:\n{clip(text)}")

    def interrupt(self) -> None:
        """Stops a command that is running now (mgmtd is stopping); check_apply
        then raises ResourceError. Nothing else runs afterwards."""
        self._interrupted = True
        with self._lock:
            running = list(self._running)
        for proc in running:
            terminate_group(proc)

    def cancel(self) -> None:
        """meta.timeout passed: stops the command running now (check_apply then
        fails); later runs work as before."""
        with self._lock:
            running = list(self._running)
        for proc in running:
            terminate_group(proc)

    # --- check/apply ----------------------------------------------------------
    def _invalidate(self) -> None:
        with self._lock:
            self._generation += 1

    def check_apply(self, apply: bool) -> bool:
        if self.creates and os.path.lexists(self.creates):
            self.ctx.report("debug", f"{self}: {self.creates} exists, not running")
            return True
        if self.refresh_only and not self.refresh:
            return True
        with self._lock:
            generation = self._generation
            ran = self._ran_generation == generation
        if ran and not self.refresh and not (self.ifcmd or self.creates):
            return True
        if self.ifcmd:
            status, out, err = self._run(self.if_argv(), self.ifcwd or self.cwd, "ifcmd")
            self._report_output("ifcmd", out, err)
            if status != 0:
                self.ctx.report("debug", f"{self}: ifcmd exited with status {status}, not running")
                return True
        if not apply:
            why = " (refresh)" if self.refresh else ""
            self.ctx.report("info", f"{self}: would run{why}: {self.command}")
            return False
        status, out, err = self._run(self.argv(), self.cwd, "cmd")
        self._report_output("cmd", out, err)
        if status != 0:
            if status < 0:
                try:
                    failure = f"killed by signal {signal.Signals(-status).name}"
                except ValueError:
                    failure = f"killed by signal {-status}"
            else:
                failure = f"exit status {status}"
            detail = last_line(err) or last_line(out) or "no output"
            raise ResourceError(f"command {shown(self.command)} failed: {failure}: {detail}")
        with self._lock:
            self._ran_generation = generation
        return False

    # --- events -----------------------------------------------------------------
    def start_watch(self, poke: Callable[[], None]) -> Callable[[], None] | None:
        if not self.watchcmd and not (self.pollint and self.pollint > 0):
            return None

        def fire() -> None:
            self._invalidate()
            poke()

        watch = _Watch(self, fire)
        watch.start()
        return watch.stop


class _Watch:
    """The exec's event sources: the watch command (restarted with backoff
    when it ends, since an event source that silently died would hide drift)
    and the pollint ticker."""

    def __init__(self, res: ExecResource, fire: Callable[[], None]) -> None:
        self.res = res
        self.fire = fire
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        if self.res.watchcmd:
            self.threads.append(threading.Thread(target=self._watch_loop, name=f"watch-{self.res}",
                                                 daemon=True))
        if self.res.pollint and self.res.pollint > 0:
            self.threads.append(threading.Thread(target=self._poll_loop, name=f"poll-{self.res}",
                                                 daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            proc = self.proc
        if proc is not None:
            terminate_group(proc)
        for thread in self.threads:
            thread.join(timeout=KILL_GRACE + 3)

    def _poll_loop(self) -> None:
        while not self.stopping.wait(self.res.pollint):
            self.fire()

    def _watch_loop(self) -> None:
        res = self.res
        delay = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            clean, how = self._watch_once()
            if self.stopping.is_set():
                return
            if time.monotonic() - started > WATCH_BACKOFF_MAX:
                delay = 1.0
            res.ctx.report("info" if clean else "warning", f"{res}: {how}; restarting it in {delay:g}s")
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, WATCH_BACKOFF_MAX)

    def _watch_once(self) -> tuple[bool, str]:
        """Runs the watch command until it ends; returns (ended with status 0, how it ended)."""
        res = self.res
        with tempfile.TemporaryFile() as errors:
            with self.lock:
                if self.stopping.is_set():
                    return True, "stopped"
                try:
                    proc = res._popen(res.watch_argv(), res.watchcwd or res.cwd,
                                      stdout=subprocess.PIPE, stderr=errors)
                except ResourceError as err:
                    return False, f"watchcmd: {err}"
                self.proc = proc
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    if line.strip():
                        res.ctx.report("debug", f"{res}: watchcmd: {clip(line)}")
                        self.fire()
            finally:
                proc.stdout.close()
                status = proc.wait()
                with self.lock:
                    self.proc = None
            errors.seek(0)
            detail = last_line(errors.read()[-OUTPUT_LIMIT:].decode(errors="replace"))
        how = f"watchcmd exited with status {status}"
        return status == 0, f"{how}: {detail}" if detail else how
