"""What dpkg says is installed, read from its own files: the status database
(``/var/lib/dpkg/status``) and the per-package file lists
(``/var/lib/dpkg/info/<name>[:<arch>].list``). No process is started.

The status file is parsed once per version of the file: ``DpkgStatus`` keeps
the last parse keyed by the file's (inode, mtime, size), so the checks of many
pkg resources between two dpkg runs cost one ``stat`` each."""

from __future__ import annotations

import glob
import os
import threading
from dataclasses import dataclass, field

STATUS_PATH = "/var/lib/dpkg/status"
INFO_DIR = "/var/lib/dpkg/info"
ABSENT_STATES = frozenset({"", "not-installed", "config-files"})
CONFIGURED_STATES = frozenset({"installed", "triggers-awaited", "triggers-pending"})


@dataclass(frozen=True)
class Installed:
    """One package instance dpkg knows about. ``state`` is the last word of
    its Status field: ``installed``, ``config-files``, ``half-configured``..."""

    name: str
    arch: str
    version: str
    state: str

    @property
    def is_present(self) -> bool:
        """Some of its files are on disk: anything but never installed or
        removed with only its config files kept (half-installed, unpacked,
        half-configured count: mgmt, through PackageKit, counts them too)."""
        return self.state not in ABSENT_STATES

    @property
    def is_installed(self) -> bool:
        """Installed and configured; triggers that have yet to run (another
        package's) do not make it less installed: apt-get would do nothing."""
        return self.state in CONFIGURED_STATES


@dataclass(frozen=True)
class StatusDb:
    """One parse of the status file."""

    packages: dict[str, tuple[Installed, ...]] = field(default_factory=dict)
    native_arch: str = ""

    def lookup(self, name: str) -> Installed | None:
        """The instance a pkg resource named ``name`` means, when present
        (installed or left halfway, see ``Installed.is_present``): with an
        ``:arch`` suffix that architecture; without, the native one or
        ``all`` (as apt-get reads a bare name). None when absent."""
        base, _, arch = name.partition(":")
        for inst in self.packages.get(base, ()):
            if not inst.is_present:
                continue
            if arch:
                if inst.arch == arch:
                    return inst
            elif inst.arch in (self.native_arch, "all") or not self.native_arch:
                return inst
        return None


def parse_status(text: str) -> StatusDb:
    """Parses dpkg's status file (RFC822-like stanzas separated by blank lines)."""
    packages: dict[str, list[Installed]] = {}
    native = ""
    for stanza in text.split("\n\n"):
        name = arch = version = status = ""
        for line in stanza.split("\n"):
            # continuation lines (descriptions, conffiles) start with a space
            if not line or line[0] in " \t":
                continue
            key, _, value = line.partition(":")
            if key == "Package":
                name = value.strip()
            elif key == "Status":
                status = value.strip()
            elif key == "Version":
                version = value.strip()
            elif key == "Architecture":
                arch = value.strip()
        if not name:
            continue
        state = status.rsplit(" ", 1)[-1] if status else ""
        packages.setdefault(name, []).append(Installed(name, arch, version, state))
        if name == "dpkg" and state == "installed":
            native = arch   # dpkg itself is always of the native architecture
    return StatusDb({name: tuple(found) for name, found in packages.items()}, native)


def file_list(info_dir: str, name: str) -> list[str]:
    """The paths dpkg lists for the package ``name`` (``pkg`` or ``pkg:arch``)
    in its .list file, without the ``/.`` entry; [] when there is no list
    (the package was never unpacked, or was purged)."""
    base, _, arch = name.partition(":")
    candidates = [f"{base}:{arch}", base] if arch else [base] + sorted(
        entry[:-len(".list")] for entry in glob.glob(f"{glob.escape(base)}:*.list", root_dir=info_dir))
    for base in candidates:
        try:
            with open(os.path.join(info_dir, base + ".list"), encoding="utf-8",
                      errors="surrogateescape") as listed:
                return [line.rstrip("\n") for line in listed if line.startswith("/") and line != "/.\n"]
        except FileNotFoundError:
            continue
    return []


class DpkgStatus:
    """The current ``StatusDb``, re-read only when the file changed; safe to
    share between threads."""

    def __init__(self, path: str = STATUS_PATH, info_dir: str = INFO_DIR) -> None:
        self.path = path
        self.info_dir = info_dir
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._db = StatusDb()

    def snapshot(self) -> StatusDb:
        """The database as the file is now. Raises OSError when it cannot be read."""
        st = os.stat(self.path)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key == self._key:
                return self._db
            # the key of what was read: the file may be replaced after the stat
            with open(self.path, encoding="utf-8", errors="surrogateescape") as status:
                st = os.fstat(status.fileno())
                text = status.read()
            self._db = parse_status(text)
            self._key = (st.st_ino, st.st_mtime_ns, st.st_size)
            return self._db

    def files(self, name: str) -> list[str]:
        return file_list(self.info_dir, name)
