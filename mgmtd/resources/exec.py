"""``exec``: runs a command (mgmt's exec), with guards.

When the command runs (mgmt's CheckApply, in its order):

- ``mtimes``: when one of these files changed after the last successful
  run (or there was none yet in this engine run), the command runs whatever
  the guards below say.
- guards, evaluated at every check, so a guard *is* the state: ``ifcmd``
  must exit 0 (and its output must not equal ``ifequals`` /
  ``ifequals_stdout``), ``nifcmd`` must not exit 0, ``creates`` must not
  exist. An exec whose guards say "run" runs again at every check.
- without a guard: once per engine run (per loaded resource). After one
  successful run it is in state until an event says otherwise: a line of
  ``watchcmd``, a change to ``watchfiles``/``mtimes``/``creates``, its
  ``pollint``, or a refresh over a ``notify`` edge.
- ``refresh_only: true`` (mgmtd's own field): only when refreshed.

After a successful run, ``donecmd`` runs; its failure is the exec's failure.
A refresh reruns the command, but a guard still has the last word."""

from __future__ import annotations

import os
import re
import signal
import subprocess
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
from mgmtd.resources.execproc import (
    Output,
    clip,
    collect_output,
    credential,
    environment,
    kill_group,
    last_line,
    resolve_program,
    signal_number,
    split_command,
    terminate_group,
)
from mgmtd.resources.execwatch import ExecWatch

# the commands an exec may run besides cmd: (field, its shell field, its cwd field)
COMMANDS = (("ifcmd", "ifshell", "ifcwd"), ("nifcmd", "nifshell", "nifcwd"),
            ("watchcmd", "watchshell", "watchcwd"), ("donecmd", "doneshell", "donecwd"))
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SEND_RECV = "it is a value for mgmt's send/recv (sent into another resource's field), which mgmtd does not have"


def _plain(value: object) -> bool:
    """A string, or a finite number (an argument or variable written as a number)."""
    return isinstance(value, str) or is_finite_number(value)


def _failure(status: int) -> str:
    if status >= 0:
        return f"exit status {status}"
    try:
        return f"killed by signal {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


class ExecResource(Resource):
    kind = "exec"
    FIELDS = {
        "cmd": Field((str,), None, doc="the command; split like a shell would (no expansion, no pipes) "
                     "unless shell is set; default: the resource name"),
        "args": Field((list,), None, doc="arguments appended to cmd (a single program, no shell)"),
        "shell": Field((str,), None, doc="run cmd as `SHELL -c CMD`, e.g. /bin/bash; '' = no shell"),
        "cwd": Field((str,), None, doc="absolute working directory of cmd; default: mgmtd's; orders "
                     "the exec after the file resource managing it"),
        "env": Field((dict,), None, doc="the commands' whole environment (nothing of mgmtd's own, "
                     "as in mgmt); unset = empty"),
        "sig": Field((str,), None, doc="signal that stops a running command (meta.timeout, mgmtd "
                     "stopping), sent to its process group; SIGKILL follows after 2s; default SIGTERM"),
        "user": Field((str, int), None, doc="run the commands as this user (needs root unless it is "
                      "mgmtd's own)", min=0, max=ID_MAX),
        "group": Field((str, int), None, doc="run the commands as this group (needs root unless it is "
                       "mgmtd's own)", min=0, max=ID_MAX),
        "creates": Field((str,), None, doc="absolute path; while it exists cmd does not run; watched"),
        "ifcmd": Field((str,), None, doc="guard, run at every check: cmd runs only if this exits 0"),
        "ifshell": Field((str,), None, doc="shell for ifcmd, like shell"),
        "ifcwd": Field((str,), None, doc="working directory for ifcmd; default: mgmtd's"),
        "ifequals": Field((str,), None, doc="cmd does not run when ifcmd exits 0 and its output "
                          "(stdout and stderr as they came) equals this exactly (mind the newline)"),
        "ifequals_stdout": Field((str,), None, doc="like ifequals, compared with ifcmd's stdout only"),
        "nifcmd": Field((str,), None, doc="guard, run at every check: cmd does not run if this exits 0"),
        "nifshell": Field((str,), None, doc="shell for nifcmd, like shell"),
        "nifcwd": Field((str,), None, doc="working directory for nifcmd; default: mgmtd's"),
        "mtimes": Field((list,), None, doc="absolute paths, watched; when one changed after the last "
                        "successful run, cmd runs even if a guard says not to; a missing one is an error"),
        "watchfiles": Field((list,), None, doc="absolute paths (a trailing / = the directory and all "
                            "under it); a change puts the exec out of state (cmd runs again)"),
        "watchcmd": Field((str,), None, doc="long-running command; every line it prints puts the exec "
                          "out of state (cmd runs again); restarted with backoff if it ends"),
        "watchshell": Field((str,), None, doc="shell for watchcmd, like shell"),
        "watchcwd": Field((str,), None, doc="working directory for watchcmd; default: mgmtd's"),
        "donecmd": Field((str,), None, doc="runs after cmd succeeded; its failure is the exec's failure"),
        "doneshell": Field((str,), None, doc="shell for donecmd, like shell"),
        "donecwd": Field((str,), None, doc="working directory for donecmd; default: mgmtd's"),
        "timeout": Field((int, float), 0, doc="(old mgmt field) seconds before cmd, ifcmd, nifcmd and "
                         "donecmd are stopped, an error; 0 = no limit", min=0, max=YEAR),
        "pollint": Field((int, float), 0, doc="(old mgmt field) if > 0: every pollint seconds the exec "
                         "is put out of state (cmd runs again), as if watchcmd had printed a line",
                         min=0, max=YEAR),
        "refresh_only": Field((bool,), False, doc="(mgmtd) run only when refreshed over a notify edge"),
        "state": Field((str,), None, doc="(old mgmt field) 'present' or '', nothing else"),
    }
    UNSUPPORTED = {name: SEND_RECV for name in ("send_output", "send_stdout", "send_stderr")}
    LEGACY_FIELDS = {
        "state": "mgmt HEAD has no such field and ignores it; an exec has no state to set, so mgmtd "
                 "ignores it too (only 'present' or '' is accepted)",
        "timeout": "mgmt HEAD has no such field and ignores it; mgmtd still stops the commands after "
                   "this many seconds (mgmt's way: meta.timeout, in milliseconds; 0 = no limit)",
        "pollint": "mgmt HEAD has no such field and ignores it; mgmtd still runs cmd again every "
                   "pollint seconds (mgmt's way: meta.poll, seconds between checks instead of events)",
    }

    def __init__(self, name: str, params: dict[str, Any], meta: Meta | None = None) -> None:
        super().__init__(name, params, meta)
        self._lock = threading.Lock()
        # watch events bump the generation; the exec is in state when it last
        # ran successfully in the current generation
        self._generation = 0
        self._ran_generation = -1
        self._ran_at: float | None = None   # wall clock of the last successful run, for mtimes
        self._running: set[subprocess.Popen] = set()
        self._interrupted = False
        # the check_apply under way, and the one a cancel was for: a command
        # that starts after the cancel (donecmd after cmd) is stopped too
        self._active: object | None = None
        self._cancelled: object | None = None

    # --- parameters -----------------------------------------------------------
    @property
    def command(self) -> str:
        return self.cmd or self.name

    def argv(self) -> list[str]:
        return split_command(self.command, self.shell, "cmd", self.args)

    def argv_of(self, field_name: str) -> list[str]:
        shell = {cmd: sh for cmd, sh, _ in COMMANDS}[field_name]
        return split_command(getattr(self, field_name), getattr(self, shell), field_name)

    def watch_argv(self) -> list[str]:
        return self.argv_of("watchcmd")

    def stop_signal(self) -> int:
        return signal_number(self.sig)

    def guarded(self) -> bool:
        return bool(self.ifcmd or self.nifcmd or self.creates)

    def validate(self) -> None:
        if self.args and self.shell:
            raise FieldError("args", "args cannot be used with a shell: put them in cmd")
        if self.args and len(split_command(self.command, None, "cmd")) > 1:
            raise FieldError("args", "args cannot be used when cmd has arguments of its own")
        for arg in self.args or ():
            if not _plain(arg):
                raise FieldError("args", f"args must be strings (or finite numbers), not {shown(arg)}")
        self.argv()
        for name, _, _ in COMMANDS:
            if getattr(self, name):
                self.argv_of(name)
        for name in ("ifequals", "ifequals_stdout"):
            if getattr(self, name) is not None and not self.ifcmd:
                raise FieldError(name, f"{name} compares the output of ifcmd, and there is no ifcmd")
        self.stop_signal()
        for name in ("cwd", "ifcwd", "nifcwd", "watchcwd", "donecwd", "creates"):
            value = getattr(self, name)
            if value and not os.path.isabs(value):
                raise FieldError(name, f"{name} must be an absolute path: {shown(value)}")
        for name in ("mtimes", "watchfiles"):
            for path in getattr(self, name) or ():
                if not isinstance(path, str) or not os.path.isabs(path):
                    raise FieldError(name, f"{name} holds absolute paths, not {shown(path)}")
        for key, value in (self.env or {}).items():
            if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
                # mgmt's isNameValid: letters, digits and '_', not starting with a digit
                raise FieldError("env", f"bad environment variable name: {shown(key)}")
            if not _plain(value):
                raise FieldError("env", f"env {shown(key)}: value must be a string (or a finite number), "
                                 f"not {shown(value)}")
        if self.state not in (None, "", "present"):
            raise FieldError("state", f"exec state must be 'present' (or left out), not {shown(self.state)}")

    # --- autoedges ------------------------------------------------------------
    def autoedge_requires(self) -> list[str]:
        paths: list[str] = []
        dirs = [d for d in (self.cwd, self.ifcwd, self.nifcwd, self.watchcwd, self.donecwd) if d]
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
    def popen(self, argv: list[str], cwd: str | None, **streams: Any) -> subprocess.Popen:
        ids = credential(self.user, self.group)
        try:
            # its own session: a timeout or stop can kill all it started, and
            # signals sent to mgmtd's terminal group do not reach it
            return subprocess.Popen(resolve_program(argv), cwd=cwd or None, env=environment(self.env),
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    **(ids.popen_args() if ids else {}), **streams)
        except (OSError, ValueError, KeyError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            where = f" in {cwd}" if cwd else ""
            raise ResourceError(f"cannot start {shown(argv[0])}{where}: {reason}") from None

    def _stopped(self) -> str:
        """Why no command may run now, or "" (under the lock)."""
        if self._interrupted:
            return "interrupted: mgmtd is stopping"
        if self._cancelled is not None and self._cancelled is self._active:
            return "cancelled (meta.timeout): stopped it and all it started"
        return ""

    def _run(self, argv: list[str], cwd: str | None, what: str) -> Output:
        """Runs one command to its end, its output captured."""
        with self._lock:
            stopped = self._stopped()
        if stopped:
            raise ResourceError(stopped)
        proc = self.popen(argv, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self._lock:
            self._running.add(proc)
            doomed = self._stopped()   # a stop that came while it started did not see it
        if doomed:
            terminate_group(proc, self.stop_signal())
        try:
            try:
                deadline = time.monotonic() + self.timeout if self.timeout else None
                result = collect_output(proc, deadline)
            except subprocess.TimeoutExpired:
                terminate_group(proc, self.stop_signal())
                raise ResourceError(f"{what} timed out after {self.timeout}s: stopped it and all it "
                                    "started") from None
        finally:
            with self._lock:
                self._running.discard(proc)
            if proc.poll() is None:
                kill_group(proc, signal.SIGKILL)
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if doomed or self._interrupted:
            raise ResourceError(doomed or "interrupted: mgmtd is stopping")
        self._report_output(what, result.combined)
        return result

    def _report_output(self, what: str, text: str) -> None:
        if text.strip():
            self.ctx.report("debug", f"{self}: output of {what}:\n{clip(text.rstrip())}")

    def interrupt(self) -> None:
        """Stops a command that is running now (mgmtd is stopping); check_apply
        then raises ResourceError. Nothing else runs afterwards."""
        self._interrupted = True
        self.cancel()

    def cancel(self) -> None:
        """meta.timeout passed: stops the command running now with ``sig``
        (check_apply then fails); later runs work as before."""
        with self._lock:
            self._cancelled = self._active
            running = list(self._running)
        for proc in running:
            terminate_group(proc, self.stop_signal())

    # --- check/apply ----------------------------------------------------------
    def _invalidate(self) -> None:
        with self._lock:
            self._generation += 1

    def _mtimes_changed(self) -> bool:
        """mgmt's forceRun: one of ``mtimes`` was modified after the last
        successful run (always true before the first one)."""
        newest = 0.0
        for path in self.mtimes or ():
            try:
                newest = max(newest, os.stat(path).st_mtime)
            except OSError as err:
                raise ResourceError(f"mtimes: cannot stat {path}: {err.strerror}") from None
        with self._lock:
            ran_at = self._ran_at
        return bool(self.mtimes) and (ran_at is None or newest > ran_at)

    def _guard(self, name: str, cwd: str | None) -> Output:
        out = self._run(self.argv_of(name), cwd, name)
        if out.status < 0:   # mgmt: a guard killed by a signal is an error, not an answer
            raise ResourceError(f"{name} {shown(getattr(self, name))} failed: {_failure(out.status)}")
        return out

    def _guards_block(self) -> str:
        """Why the guards keep cmd from running, or "" when they let it run."""
        if self.ifcmd:
            out = self._guard("ifcmd", self.ifcwd)
            if out.status != 0:
                return f"ifcmd {_failure(out.status)}"
            if self.ifequals is not None and out.combined == self.ifequals:
                return "the output of ifcmd equals ifequals"
            if self.ifequals_stdout is not None and out.stdout == self.ifequals_stdout:
                return "the stdout of ifcmd equals ifequals_stdout"
        if self.nifcmd:
            out = self._guard("nifcmd", self.nifcwd)
            if out.status == 0:
                return "nifcmd exited with status 0"
        if self.creates and os.path.exists(self.creates):
            return f"{self.creates} exists"
        return ""

    def check_apply(self, apply: bool) -> bool:
        run = object()
        with self._lock:
            self._active = run
        try:
            return self._check_apply(apply)
        finally:
            with self._lock:
                self._active = None

    def _check_apply(self, apply: bool) -> bool:
        if self.refresh_only and not self.refresh:
            return True
        with self._lock:
            generation = self._generation
            ran = self._ran_generation == generation
        if self._mtimes_changed():
            self.ctx.report("debug", f"{self}: one of mtimes changed since the last run")
        else:
            if ran and not self.refresh and not self.guarded():
                return True
            blocked = self._guards_block()
            if blocked:
                self.ctx.report("debug", f"{self}: {blocked}, not running")
                return True
        if not apply:
            why = " (refresh)" if self.refresh else ""
            self.ctx.report("info", f"{self}: would run{why}: {self.command}")
            return False
        for what, argv, cwd in (("cmd", self.argv(), self.cwd),
                                ("donecmd", self.argv_of("donecmd") if self.donecmd else None, self.donecwd)):
            if argv is None:
                continue
            out = self._run(argv, cwd, what)
            if out.status != 0:
                detail = last_line(out.stderr) or last_line(out.stdout) or "no output"
                shown_cmd = self.command if what == "cmd" else self.donecmd
                raise ResourceError(f"{'command' if what == 'cmd' else what} {shown(shown_cmd)} failed: "
                                    f"{_failure(out.status)}: {detail}")
        with self._lock:
            self._ran_generation = generation
            self._ran_at = time.time()
        return False

    # --- events -----------------------------------------------------------------
    def watched_files(self) -> list[str]:
        return [*(self.mtimes or ()), *(self.watchfiles or ()), *([self.creates] if self.creates else [])]

    def start_watch(self, poke: Callable[[], None]) -> Callable[[], None] | None:
        files = self.watched_files()
        if not self.watchcmd and not (self.pollint and self.pollint > 0) and not files:
            return None

        def fire() -> None:
            self._invalidate()
            poke()

        watch = ExecWatch(self, fire, files)
        watch.start()
        return watch.stop
