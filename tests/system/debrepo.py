"""Tiny Debian packages and a local apt repository inside a machine, for the
pkg kind's tests: no network, nothing installed on this host.

A package is built here with ``dpkg-deb --build`` (a control file and one file,
/usr/share/mgmtd-test/<name>, holding its version); the repository's indexes
(Packages, Release with the hashes apt checks) are written by this module
(``apt-ftparchive`` is not installed). ``isolate_apt`` removes the machine's
own sources so apt sees only the test repositories."""

from __future__ import annotations

import email.utils
import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.system.kinds import Sandbox

LIST_FILE = "/etc/apt/sources.list.d/mgmtd-test-{name}.list"
HISTORY = "/var/log/apt/history.log"


def native_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def build_deb(workdir: Path, name: str, version: str, depends: str = "", section: str = "misc",
              files: dict[str, tuple[str, int]] | None = None, scripts: dict[str, str] | None = None) -> Path:
    """A package of architecture ``all`` installing /usr/share/mgmtd-test/<name>,
    and ``files`` (path -> (content, mode); a path ending in '/' is a directory);
    ``scripts``: maintainer scripts (postinst, prerm...) by name."""
    root = workdir / f"{name}_{version}"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    for script, text in (scripts or {}).items():
        (root / "DEBIAN" / script).write_text(text)
        (root / "DEBIAN" / script).chmod(0o755)
    control = (f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: mgmtd tests <t@example.org>\n"
               f"Section: {section}\nPriority: optional\n")
    if depends:
        control += f"Depends: {depends}\n"
    control += f"Description: mgmtd test package {name}\n built by tests/system/debrepo.py\n"
    (root / "DEBIAN" / "control").write_text(control)
    shipped = root / "usr" / "share" / "mgmtd-test"
    shipped.mkdir(parents=True, exist_ok=True)
    (shipped / name).write_text(f"{name} {version}\n")
    for path, (content, mode) in (files or {}).items():
        target = root / path.strip("/")
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        target.chmod(mode)
    deb = workdir / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def isolate_apt(sandbox: Sandbox) -> None:
    """The machine's apt forgets its distribution's sources (inside the machine only)."""
    sandbox.run("sh", "-c", "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*")


@dataclass
class Repo:
    """A repository in the machine at ``root`` (dists/<suite>/<component>/binary-ARCH)."""

    sandbox: Sandbox
    workdir: Path
    name: str = "main"
    root: str = "/srv/mgmtd-repo"
    origin: str = "Debian"
    suite: str = "stable"
    components: tuple[str, ...] = ("main", "non-free")
    options: str = "trusted=yes"
    arch: str = field(default_factory=native_arch)
    packages: dict[str, list[str]] = field(default_factory=dict)   # component -> stanzas

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.packages = {component: [] for component in self.components}

    def publish(self, name: str, version: str, component: str = "main", depends: str = "",
                files: dict[str, tuple[str, int]] | None = None, scripts: dict[str, str] | None = None) -> None:
        """Adds a package to the repository (the machine's apt sees it after an update)."""
        section = "misc" if component == "main" else f"{component}/misc"
        deb = build_deb(self.workdir, name, version, depends, section=section, files=files, scripts=scripts)
        filename = f"pool/{component}/{deb.name}"
        target = self.sandbox.machine.path(f"{self.root}/{filename}")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = deb.read_bytes()
        target.write_bytes(data)
        stanza = (f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
                  f"Maintainer: mgmtd tests <t@example.org>\nSection: {section}\n"
                  f"Priority: optional\nFilename: {filename}\nSize: {len(data)}\n"
                  f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")
        if depends:
            stanza += f"Depends: {depends}\n"
        stanza += f"Description: mgmtd test package {name}\n"
        self.packages[component].append(stanza)
        self._write_indexes()

    def _write_indexes(self) -> None:
        dist = f"{self.root}/dists/{self.suite}"
        hashes = []
        for component, stanzas in self.packages.items():
            text = "\n".join(stanzas)
            relative = f"{component}/binary-{self.arch}/Packages"
            self.sandbox.write(f"{dist}/{relative}", text)
            data = text.encode()
            hashes.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {relative}")
        release = (f"Origin: {self.origin}\nLabel: mgmtd-test\nSuite: {self.suite}\nCodename: {self.suite}\n"
                   f"Date: {email.utils.formatdate(usegmt=True)}\nArchitectures: {self.arch}\n"
                   f"Components: {' '.join(self.components)}\nSHA256:\n" + "\n".join(hashes) + "\n")
        self.sandbox.write(f"{dist}/Release", release)

    def enable(self) -> None:
        """Points the machine's apt at this repository (then ``update``)."""
        self._write_indexes()
        self.sandbox.write(LIST_FILE.format(name=self.name),
                           f"deb [{self.options}] file:{self.root} {self.suite} {' '.join(self.components)}\n")


def apt_update(sandbox: Sandbox) -> None:
    done = sandbox.run("apt-get", "update", "-q", check=False, timeout=120)
    assert done.returncode == 0 and "\nE: " not in done.stdout + done.stderr, done.stdout + done.stderr


def installed_version(sandbox: Sandbox, name: str) -> str | None:
    """What dpkg says inside the machine (None: not installed)."""
    done = sandbox.run("dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", name, check=False)
    if done.returncode != 0:
        return None
    status, _, version = done.stdout.partition(" ")
    return version if status == "installed" else None


def dpkg_status(sandbox: Sandbox, name: str) -> str:
    """dpkg's Status field inside the machine ("install ok installed", "install ok
    half-configured"...), "" when dpkg does not know the package."""
    done = sandbox.run("dpkg-query", "-W", "-f", "${Status}", name, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def transactions(sandbox: Sandbox) -> int:
    """apt runs so far: one Start-Date block per run in apt's history."""
    path = sandbox.machine.path(HISTORY)
    return path.read_text().count("Start-Date:") if path.exists() else 0
