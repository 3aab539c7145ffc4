"""apt as the pkg kind uses it: what ``apt-cache policy`` says about candidates
and where they come from, the one ``apt-get install`` command line of a
transaction, what its error output means, and running both.

The parsing and building are pure functions; ``Apt`` runs the commands
(never two of ours at once, ``apt-get update`` at most once per
``UPDATE_INTERVAL``), always in the C locale and without prompts.

A transaction (``apt-get install``) must never be killed halfway: dpkg
stopped mid-unpack leaves packages half-configured. When systemd runs this
machine, it runs as a transient unit of its own (``systemd-run --wait``),
outside mgmtd's cgroup, so stopping or killing mgmtd (or its unit) only stops
the waiting; the next engine waits for dpkg's lock. Output goes to a
temporary file, not a pipe: a daemon started by a maintainer script may keep
its inherited stdout open long after apt-get exited."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

LOCK_TIMEOUT = 60.0        # seconds apt-get waits for another holder of dpkg's lock
LOCK_TIMEOUT_ENV = "MGMTD_DPKG_LOCK_TIMEOUT"   # overrides LOCK_TIMEOUT (tests)
UPDATE_INTERVAL = 300.0    # at most one `apt-get update` of ours per this many seconds
NETWORK_TIMEOUT = 30       # seconds: apt's connect/read timeout for one download
RUN_TIMEOUT = 3600.0       # seconds: we stop waiting for a transaction (never kill it)
SYSTEMD_DIR = "/run/systemd/system"   # exists when systemd is the running init
UNIT_PREFIX = "mgmtd-apt-"

ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "APT_LISTCHANGES_FRONTEND": "none",
    "NEEDRESTART_MODE": "a",
    "LC_ALL": "C",
    "LANG": "C",
}
# how apt reaches its repositories, passed on to a transaction's unit
PROXY_ENV = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy",
             "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")

# components whose packages are not free software (PackageKit's 'free' filter
# excludes contrib and non-free; the later splits count the same)
NONFREE_COMPONENTS = frozenset({"contrib", "non-free", "non-free-firmware", "restricted", "multiverse"})
# what PackageKit's apt backend calls supported: the distribution's own archive, main part
SUPPORTED_ORIGINS = frozenset({"Debian", "Ubuntu"})
SUPPORTED_COMPONENTS = frozenset({"main", "restricted"})


class AptError(Exception):
    """An apt command failed; the message is one line."""


def lock_timeout() -> float:
    value = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return max(0.0, float(value)) if value else LOCK_TIMEOUT
    except ValueError:
        return LOCK_TIMEOUT


# --- apt-cache policy --------------------------------------------------------

@dataclass(frozen=True)
class Release:
    """What a package index's Release file says (``release o=...,c=...``)."""

    origin: str = ""
    component: str = ""


@dataclass
class Policy:
    """``apt-cache policy NAME``: the installed version, the candidate and
    every known version with the indexes that offer it."""

    installed: str | None = None
    candidate: str | None = None
    versions: dict[str, list[str]] = field(default_factory=dict)   # version -> sources

    def offered(self, version: str) -> bool:
        """True when some index (not just dpkg's status) offers ``version``."""
        return any(not s.startswith("/") for s in self.versions.get(version, ()))


def _none(value: str) -> str | None:
    return None if value in ("", "(none)") else value


def parse_policy(text: str) -> dict[str, Policy]:
    """Per package name (as apt prints it) its Policy. A name apt does not know
    is missing from the result."""
    result: dict[str, Policy] = {}
    current: Policy | None = None
    version: str | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            if line.endswith(":") and line != "Package files:" and line != "Pinned packages:":
                current = result[line[:-1]] = Policy()
                version = None
            else:
                current = None
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("Installed:"):
            current.installed = _none(stripped.partition(":")[2].strip())
        elif stripped.startswith("Candidate:"):
            current.candidate = _none(stripped.partition(":")[2].strip())
        elif stripped == "Version table:":
            continue
        else:
            words = stripped.split()
            indent = len(line) - len(line.lstrip())
            # version lines ("VERSION PRIORITY", the installed one marked ***) are
            # indented less than the source lines under them ("PRIORITY SOURCE...")
            if words[0] == "***" or indent < 8:
                words = words[1:] if words[0] == "***" else words
                version = words[0]
                current.versions[version] = []
            elif version is not None and len(words) > 1:
                current.versions[version].append(" ".join(words[1:]))
    return result


def parse_sources(text: str) -> dict[str, Release]:
    """``apt-cache policy`` without names: each index (as the version table
    names it) and its Release data."""
    result: dict[str, Release] = {}
    source: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        words = stripped.split(None, 1)
        if len(words) == 2 and words[0].lstrip("-").isdigit() and line.startswith(" ") \
                and not line.startswith("     "):
            source = words[1]
            result[source] = Release()
        elif source is not None and stripped.startswith("release "):
            fields = dict(part.partition("=")[::2] for part in stripped[len("release "):].split(","))
            result[source] = Release(fields.get("o", ""), fields.get("c", ""))
        elif not line.startswith(" "):
            source = None
    return result


def releases(policy: Policy, version: str, sources: dict[str, Release]) -> list[Release]:
    return [sources.get(s, Release()) for s in policy.versions.get(version, ()) if not s.startswith("/")]


def is_free(found: list[Release]) -> bool:
    """Free unless every index offering the version is a non-free component
    (an index without components, e.g. a flat repository, counts as main)."""
    return not found or any((r.component or "main") not in NONFREE_COMPONENTS for r in found)


def is_supported(found: list[Release]) -> bool:
    """Supported when some index offering the version is the distribution's
    own (origin Debian or Ubuntu) main (or restricted) part."""
    return any(r.origin in SUPPORTED_ORIGINS and (r.component or "main") in SUPPORTED_COMPONENTS
               for r in found)


# --- apt-get install -----------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """One package of a transaction: install (``version`` pinned or None for
    the candidate) or remove."""

    name: str
    remove: bool = False
    version: str | None = None

    def argument(self) -> str:
        if self.remove:
            return f"{self.name}-"
        return f"{self.name}={self.version}" if self.version else self.name


def install_command(changes: list[Change], *, downgrade: bool = False, untrusted: bool = False,
                    lock_wait: float = LOCK_TIMEOUT) -> list[str]:
    """The one apt-get run that makes all ``changes`` (``apt-get install a
    b=1.2 c-`` installs a, pins b and removes c). Config files: keep the
    local one when changed, take the new one otherwise; never ask."""
    argv = ["apt-get", "install", "-y", "-q",
            "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
            "-o", f"DPkg::Lock::Timeout={int(lock_wait)}",
            "-o", f"Acquire::http::Timeout={NETWORK_TIMEOUT}",
            "-o", f"Acquire::https::Timeout={NETWORK_TIMEOUT}",
            "-o", "Acquire::Retries=1"]
    if downgrade:
        argv.append("--allow-downgrades")
    if untrusted:
        argv.append("--allow-unauthenticated")
    argv.append("--")
    argv.extend(change.argument() for change in changes)
    return argv


def update_command(lock_wait: float = LOCK_TIMEOUT) -> list[str]:
    return ["apt-get", "update", "-q", "-o", f"DPkg::Lock::Timeout={int(lock_wait)}",
            "-o", f"Acquire::http::Timeout={NETWORK_TIMEOUT}",
            "-o", f"Acquire::https::Timeout={NETWORK_TIMEOUT}", "-o", "Acquire::Retries=1"]


@dataclass(frozen=True)
class Failure:
    """What went wrong in an apt-get run: one line, and the package it names
    when it names one (so a group's error goes to the right member)."""

    message: str
    package: str | None = None
    stopped: bool = False     # we stopped waiting (mgmtd is stopping): no retry


_LOCKED = re.compile(r"Could not get lock (\S+?)\.? It is held by process (\d+)(?: \(([^)]*)\))?")
_LOCKED_NO_PID = re.compile(r"Could not get lock (\S+)")
_UNKNOWN = re.compile(r"Unable to locate package (\S+)")
_NO_VERSION = re.compile(r"Version '([^']*)' for '([^']*)' was not found")
_BROKEN = re.compile(r"^\s+\S+ : (Pre)?Depends:|^\s+\S+ : (Conflicts|Breaks):")
_NETWORK = re.compile(r"(Temporary failure resolving|Could not resolve|Failed to fetch|Could not connect|"
                      r"Connection timed out|Network is unreachable)")


def classify(output: str) -> Failure:
    """The one-line reason of a failed apt-get run, from its (C locale) output."""
    if match := _LOCKED.search(output):
        who = f"pid {match.group(2)}" + (f", {match.group(3)}" if match.group(3) else "")
        return Failure(f"dpkg is locked by another process ({who}): waited {lock_timeout():g} s "
                       f"for {match.group(1)}")
    if match := _LOCKED_NO_PID.search(output):
        return Failure(f"dpkg is locked by another process: waited {lock_timeout():g} s for {match.group(1)}")
    if match := _UNKNOWN.search(output):
        name = match.group(1)
        return Failure(f"no package {name} in the configured repositories; run apt-get update?", name)
    if match := _NO_VERSION.search(output):
        version, name = match.groups()
        return Failure(f"no version {version} of {name} in the configured repositories", name)
    if "-y was used without --allow-downgrades" in output:
        return Failure("a package would be downgraded: set allowdowngrade: true to allow it")
    if "-y was used without --allow-unauthenticated" in output or "cannot be authenticated" in output:
        return Failure("a package is not from a trusted (signed) repository: "
                       "set allowuntrusted: true to install it anyway")
    if "-y was used without --allow-remove-essential" in output:
        return Failure("refusing to remove an essential package")
    if match := _NETWORK.search(output):
        line = next((ln for ln in output.splitlines() if match.group(1) in ln), match.group(1))
        return Failure(f"cannot download: {line.strip().removeprefix('E: ').removeprefix('W: ')}")
    errors = [ln[3:].strip() for ln in output.splitlines() if ln.startswith("E: ")]
    broken = [ln.strip() for ln in output.splitlines() if _BROKEN.match(ln)]
    if broken:
        name = broken[0].split(" : ", 1)[0]
        return Failure(f"{broken[0]} ({errors[-1] if errors else 'unmet dependencies'})", name)
    if errors:
        return Failure(errors[-1])
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return Failure(lines[-1] if lines else "apt-get failed without output")


# --- running -----------------------------------------------------------------------

def transaction_env(environ: dict[str, str]) -> dict[str, str]:
    """The environment a transaction needs: ours (no prompts, C locale) and the proxies."""
    return {**{name: environ[name] for name in PROXY_ENV if name in environ}, **ENV}


def unit_name() -> str:
    """A transient unit name no other transaction (of this or an earlier engine) has."""
    return f"{UNIT_PREFIX}{uuid.uuid4().hex[:16]}"


def transient_command(argv: list[str], unit: str, env: dict[str, str]) -> list[str]:
    """``argv`` as a transient service ``unit`` that ``systemd-run`` waits for:
    its exit status is the service's, our stdin/stdout/stderr are its own
    (``--pipe``), and killing systemd-run leaves the unit running."""
    return ["systemd-run", f"--unit={unit}", "--collect", "--wait", "--pipe", "--quiet",
            "--description=mgmtd pkg: apt-get transaction",
            *(f"--setenv={name}={value}" for name, value in sorted(env.items())), "--", *argv]


def _read(out) -> str:
    out.seek(0)
    return out.read().decode(errors="replace")


class Apt:
    """Runs apt for every pkg resource of the process: one apt command of ours
    at a time (a second would only wait for dpkg's lock, and could time out
    on it), ``apt-get update`` rate-limited."""

    def __init__(self, clock=time.monotonic, systemd: bool | None = None) -> None:
        self.clock = clock
        self.systemd = os.path.isdir(SYSTEMD_DIR) if systemd is None else systemd
        self._lock = threading.Lock()
        self._procs_lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()      # read-only commands and updates
        self._waiters: dict[subprocess.Popen, str] = {}   # systemd-run -> the transaction's unit
        self._stopping = False
        self._last_update: float | None = None

    def _start(self, argv: list[str], out, env: dict[str, str]) -> subprocess.Popen:
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **env}, start_new_session=True)
        except OSError as err:
            raise AptError(f"cannot start {argv[0]}: {err.strerror}") from None

    def _run(self, argv: list[str], timeout: float) -> tuple[int, str]:
        """A read-only command or an update: killed on timeout or interrupt."""
        with tempfile.TemporaryFile() as out:
            proc = self._start(argv, out, ENV)
            with self._procs_lock:
                self._procs.add(proc)
            try:
                status = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise AptError(f"{' '.join(argv[:2])} did not finish within {timeout:g} s: killed it") from None
            finally:
                with self._procs_lock:
                    self._procs.discard(proc)
            return status, _read(out)

    def _transaction(self, argv: list[str], timeout: float) -> tuple[int, str] | Failure:
        """Runs a transaction to its end, or stops waiting (timeout, interrupt)
        and says so; never kills it."""
        env = transaction_env(dict(os.environ))
        unit = unit_name() if self.systemd else None
        command = transient_command(argv, unit, env) if unit else argv
        where = f"in unit {unit}.service" if unit else "in mgmtd's process group"
        with tempfile.TemporaryFile() as out:
            with self._procs_lock:
                if self._stopping:
                    return Failure("not started: mgmtd is stopping", stopped=True)
                proc = self._start(command, out, env)
                if unit:
                    self._waiters[proc] = unit
            try:
                status = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if unit:
                    proc.kill()   # systemd-run only: the unit goes on
                    proc.wait()
                else:
                    threading.Thread(target=proc.wait, name="apt-reaper", daemon=True).start()
                return Failure(f"apt-get install still running after {timeout:g} s {where}: "
                               "left it running (dpkg's lock is held until it ends)")
            finally:
                with self._procs_lock:
                    self._waiters.pop(proc, None)
                    stopping = self._stopping
            if unit and stopping and status < 0:
                return Failure(f"stopped waiting for apt-get install (mgmtd is stopping): it goes on {where}",
                               stopped=True)
            return status, _read(out)

    def interrupt(self) -> None:
        """mgmtd is stopping: kills our read-only apt commands and updates, and
        stops waiting for a transaction that runs in its own unit (it goes
        on). A transaction in our own process group is left to finish: dpkg
        killed halfway leaves packages half-configured. No new transaction
        starts after this."""
        with self._procs_lock:
            self._stopping = True
            procs = list(self._procs)
            waiters = list(self._waiters)
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in waiters:
            proc.kill()

    def policy(self, names: list[str]) -> dict[str, Policy]:
        """One ``apt-cache policy`` for all ``names`` (read-only, no lock)."""
        status, out = self._run(["apt-cache", "policy", "--", *names], timeout=120)
        if status != 0:
            raise AptError(f"apt-cache policy failed: {classify(out).message}")
        return parse_policy(out)

    def sources(self) -> dict[str, Release]:
        status, out = self._run(["apt-cache", "policy"], timeout=120)
        if status != 0:
            raise AptError(f"apt-cache policy failed: {classify(out).message}")
        return parse_sources(out)

    def update_allowed(self) -> bool:
        return self._last_update is None or self.clock() - self._last_update >= UPDATE_INTERVAL

    def update(self) -> bool:
        """``apt-get update`` unless one of ours ran less than UPDATE_INTERVAL
        ago; True when it ran. Raises AptError when it failed."""
        with self._lock:
            if not self.update_allowed():
                return False
            self._last_update = self.clock()
            status, out = self._run(update_command(lock_timeout()), timeout=RUN_TIMEOUT)
        failed = status != 0 or any(ln.startswith(("E: ", "W: Failed to fetch")) for ln in out.splitlines())
        if failed:
            raise AptError(f"apt-get update failed: {classify(out).message}")
        return True

    def install(self, changes: list[Change], *, downgrade: bool, untrusted: bool) -> Failure | None:
        """Runs one transaction; None when apt-get succeeded."""
        argv = install_command(changes, downgrade=downgrade, untrusted=untrusted, lock_wait=lock_timeout())
        with self._lock:
            done = self._transaction(argv, RUN_TIMEOUT)
        if isinstance(done, Failure):
            return done
        status, out = done
        return None if status == 0 else classify(out)
