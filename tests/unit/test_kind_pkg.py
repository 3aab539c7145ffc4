"""The ``pkg`` kind's parts that need no package manager: Debian version
order, dpkg status parsing and its cache, apt-cache policy parsing, the
apt-get command line, error classification, the decisions, validation, and
group transactions against a fake apt that edits a fake dpkg status file."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mgmtd.resources import apt as aptmod
from mgmtd.resources import debversion
from mgmtd.resources.apt import (
    Apt,
    Change,
    Failure,
    Release,
    classify,
    install_command,
    parse_policy,
    parse_sources,
)
from mgmtd.resources.base import Context, Meta, ResourceError
from mgmtd.resources.dpkgdb import DpkgStatus, Installed, parse_status
from mgmtd.resources.pkg import (
    IN_STATE,
    Allowed,
    Backend,
    Decision,
    PkgResource,
    decide,
    decide_locally,
    policy_for,
    time_no_change_check,
)
from mgmtd.yamlgraph.loader import load_text

# --- Debian versions ---------------------------------------------------------------

ORDERED = ["0.9~~", "0.9~", "0.9", "1.0~rc1", "1.0~rc1-1", "1.0", "1.0-0", "1.0-1~bpo1", "1.0-1",
           "1.0-1+b8", "1.0-1+b13", "1.0a", "1.0+b1", "1.0.1", "2.0", "9", "10", "1:0.9"]


def test_versions_sort_as_dpkg_sorts_them():
    for i, a in enumerate(ORDERED):
        for j, b in enumerate(ORDERED):
            expected = (i > j) - (i < j)
            if {a, b} == {"1.0", "1.0-0"}:
                expected = 0   # a missing revision is "0"... and "0" equals "" numerically
            assert debversion.compare(a, b) == expected, (a, b)


def test_version_syntax():
    assert debversion.is_valid("1:2.3-4+b1")
    assert debversion.is_valid("2.14-1+b2")
    assert not debversion.is_valid("latest")
    assert not debversion.is_valid("1.0 beta")
    assert not debversion.is_valid("a:1.0")


# --- dpkg's status ------------------------------------------------------------------

def stanza(name: str, version: str, arch: str = "amd64", state: str = "installed") -> str:
    return (f"Package: {name}\nStatus: install ok {state}\nPriority: optional\nArchitecture: {arch}\n"
            f"Version: {version}\nDescription: {name}\n a long\n description: with colons\n")


def status_text(*stanzas: str) -> str:
    return "\n".join(stanzas)


BASE = (stanza("dpkg", "1.21.22"), stanza("libc6", "2.36-9", "amd64"), stanza("libc6", "2.36-9", "i386"),
        stanza("old", "1.0", state="config-files"), stanza("tzdata", "2024a-0", "all"),
        stanza("foreign", "3.0", "arm64"))


def test_status_parse_states_and_architectures():
    db = parse_status(status_text(*BASE))
    assert db.native_arch == "amd64"
    assert db.lookup("libc6") == Installed("libc6", "amd64", "2.36-9", "installed")
    assert db.lookup("libc6:i386").arch == "i386"
    assert db.lookup("tzdata").version == "2024a-0"
    assert db.lookup("old") is None              # removed, config files kept: not installed
    assert db.lookup("foreign") is None          # only a foreign architecture: not what `foreign` means
    assert db.lookup("foreign:arm64") is not None
    assert db.lookup("nothing") is None


def test_packages_left_halfway_are_present_but_not_installed():
    db = parse_status(status_text(stanza("dpkg", "1"), stanza("half", "1.0", state="half-configured"),
                                  stanza("unpacked", "1.0", state="unpacked"),
                                  stanza("broken", "1.0", state="half-installed"),
                                  stanza("trig", "1.0", state="triggers-pending"),
                                  stanza("await", "1.0", state="triggers-awaited"),
                                  stanza("never", "1.0", state="not-installed")))
    for name in ("half", "unpacked", "broken"):
        assert db.lookup(name) is not None and not db.lookup(name).is_installed, name
        # its files are on disk: uninstalled must remove it, installed must finish it
        assert decide_locally("uninstalled", name, db.lookup(name)).says == f"remove {name} (1.0)"
        assert decide_locally("installed", name, db.lookup(name)) is None
        assert decide_locally("1.0", name, db.lookup(name)) is None
    for name in ("trig", "await"):
        assert db.lookup(name).is_installed
        assert decide_locally("installed", name, db.lookup(name)) is IN_STATE
        assert decide_locally("1.0", name, db.lookup(name)) is IN_STATE
    assert db.lookup("never") is None
    assert decide_locally("uninstalled", "never", db.lookup("never")) is IN_STATE


def test_a_half_configured_package_is_configured_by_apt_get_install(tmp_path):
    write_status(tmp_path / "status", stanza("dpkg", "1"), stanza("half", "1.0", state="half-configured"))
    fake = FakeApt(tmp_path / "status", {"half": ["1.0"]})
    backend = fake_backend(tmp_path, fake)
    REPORTS.clear()
    assert pkg(backend, "half").check_apply(True) is False
    assert fake.transactions == [["half=1.0"]]
    assert "configured half (1.0, half-configured)" in [msg for _, _, msg in REPORTS]
    assert pkg(backend, "half").check_apply(True) is True


def write_status(path: Path, *stanzas: str) -> None:
    tmp = path.with_name("status-new")
    tmp.write_text(status_text(*stanzas))
    tmp.rename(path)   # as dpkg does


def test_status_is_parsed_once_per_version_of_the_file(tmp_path, monkeypatch):
    path = tmp_path / "status"
    write_status(path, *BASE)
    parses = []
    real = parse_status
    monkeypatch.setattr("mgmtd.resources.dpkgdb.parse_status", lambda text: parses.append(1) or real(text))
    dpkg = DpkgStatus(str(path))
    first = dpkg.snapshot()
    assert dpkg.snapshot() is first and len(parses) == 1
    write_status(path, *BASE, stanza("new", "1"))
    assert dpkg.snapshot().lookup("new") is not None and len(parses) == 2


def test_status_cache_is_shared_safely_by_threads(tmp_path):
    path = tmp_path / "status"
    write_status(path, *BASE)
    dpkg = DpkgStatus(str(path))
    seen, errors = [], []

    def reader() -> None:
        try:
            for _ in range(200):
                seen.append(dpkg.snapshot().lookup("dpkg") is not None)
        except Exception as err:  # noqa: BLE001 - any error fails the test below
            errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for version in range(30):
        write_status(path, *BASE, stanza("churn", f"{version}.0"))
    for thread in threads:
        thread.join()
    assert not errors and all(seen) and len(seen) == 800


def test_checks_of_50_installed_packages_start_no_process_and_are_fast(tmp_path, monkeypatch):
    path = tmp_path / "status"
    write_status(path, stanza("dpkg", "1"), *(stanza(f"p{i}", "1.0") for i in range(50)))

    def no_process(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    seconds, count = time_no_change_check(50, str(path))
    assert count == 50
    assert seconds < 0.1


def test_the_bench_function_on_this_hosts_status():
    seconds, count = time_no_change_check(50)
    assert count == 50 and seconds < 0.1


# --- autoedges ------------------------------------------------------------------------

def fake_backend(tmp_path: Path, apt=None) -> Backend:
    info = tmp_path / "info"
    info.mkdir(exist_ok=True)
    return Backend(DpkgStatus(str(tmp_path / "status"), str(info)), apt or Apt(), str(tmp_path))


def pkg(backend: Backend, name: str, meta: Meta | None = None, **params) -> PkgResource:
    res = PkgResource(name, params, meta)
    res.validate()
    res.backend = backend
    res.ctx = Context(report=lambda level, msg, r=res: REPORTS.append((str(r), level, msg)))
    return res


REPORTS: list[tuple[str, str, str]] = []


def test_installed_package_provides_its_files_as_pkgfile_tokens(tmp_path):
    backend = fake_backend(tmp_path)
    write_status(tmp_path / "status", *BASE, stanza("nginx", "1.22"), stanza("libfoo", "1", "amd64"))
    (tmp_path / "info" / "nginx.list").write_text("/.\n/etc\n/etc/nginx\n/etc/nginx/nginx.conf\n")
    (tmp_path / "info" / "libfoo:amd64.list").write_text("/usr/lib/libfoo.so.1\n")
    assert pkg(backend, "nginx").autoedge_provides() == [
        "pkgfile:/etc", "pkgfile:/etc/nginx", "pkgfile:/etc/nginx/nginx.conf"]
    assert pkg(backend, "libfoo").autoedge_provides() == ["pkgfile:/usr/lib/libfoo.so.1"]
    assert pkg(backend, "nginx", state="uninstalled").autoedge_provides() == []
    assert pkg(backend, "absent-one").autoedge_provides() == []   # files unknown until installed
    assert pkg(backend, "nginx").watch_paths() == [str(tmp_path / "status")]


# --- apt-cache policy ----------------------------------------------------------------

POLICY = """\
hello:
  Installed: 1.0-1
  Candidate: 2.0-1
  Version table:
     2.0-1 500
        500 file:/srv/repo stable/main amd64 Packages
 *** 1.0-1 100
        100 /var/lib/dpkg/status
     0.5-1 500
        500 file:/srv/repo stable/main amd64 Packages
fw:
  Installed: (none)
  Candidate: 7
  Version table:
     7 500
        500 http://deb.debian.org/debian bookworm/non-free-firmware amd64 Packages
virtual:
  Installed: (none)
  Candidate: (none)
  Version table:
"""

SOURCES = """\
Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 file:/srv/repo stable/main amd64 Packages
     release o=Debian,a=stable,n=stable,l=test,c=main,b=amd64
 500 http://deb.debian.org/debian bookworm/non-free-firmware amd64 Packages
     release v=12,o=Debian,a=stable,n=bookworm,l=Debian,c=non-free-firmware,b=amd64
     origin deb.debian.org
 500 file:/srv/other ./ Packages
     release c=
Pinned packages:
"""


def test_policy_and_sources_parse():
    policies = parse_policy(POLICY)
    assert set(policies) == {"hello", "fw", "virtual"}
    hello = policies["hello"]
    assert (hello.installed, hello.candidate) == ("1.0-1", "2.0-1")
    assert hello.offered("0.5-1") and not hello.offered("1.0-1") and not hello.offered("9")
    assert policies["virtual"].candidate is None
    sources = parse_sources(SOURCES)
    assert sources["file:/srv/repo stable/main amd64 Packages"] == Release("Debian", "main")
    assert sources["file:/srv/other ./ Packages"] == Release("", "")
    assert sources["http://deb.debian.org/debian bookworm/non-free-firmware amd64 Packages"].component \
        == "non-free-firmware"


# --- decisions ----------------------------------------------------------------------------

def installed(version: str) -> Installed:
    return Installed("hello", "amd64", version, "installed")


FREE = Allowed(nonfree=False, unsupported=False)


def test_local_decisions_need_no_apt():
    assert decide_locally("installed", "hello", installed("1")).in_state
    assert decide_locally("installed", "hello", None) is None
    assert decide_locally("uninstalled", "hello", None).in_state
    removal = decide_locally("uninstalled", "hello", installed("1"))
    assert removal.change == Change("hello", remove=True) and removal.says == "remove hello (1)"
    assert decide_locally("1.0-1", "hello", installed("1.0-1")).in_state
    assert decide_locally("2.0-1", "hello", installed("1.0-1")) is None
    assert decide_locally("newest", "hello", installed("1.0-1")) is None


def test_decisions_with_the_candidate():
    policies, sources = parse_policy(POLICY), parse_sources(SOURCES)
    hello = policies["hello"]
    newest = decide("newest", "hello", installed("1.0-1"), hello, sources, FREE)
    assert newest.change == Change("hello", version="2.0-1") and newest.says == "upgrade hello 1.0-1 -> 2.0-1"
    assert newest.done == "upgraded hello 1.0-1 -> 2.0-1"
    assert decide("newest", "hello", installed("2.0-1"), hello, sources, FREE).in_state
    fresh = decide("installed", "hello", None, hello, sources, FREE)
    assert fresh.says == "install hello (2.0-1)"
    # a pin below the installed version: refused unless allowed
    refused = decide("0.5-1", "hello", installed("1.0-1"), hello, sources, FREE)
    assert "allowdowngrade" in refused.error and refused.change is None
    allowed = decide("0.5-1", "hello", installed("1.0-1"), hello, sources, Allowed(downgrade=True))
    assert allowed.says == "downgrade hello 1.0-1 -> 0.5-1"
    assert allowed.change == Change("hello", version="0.5-1")
    missing = decide("3.0-1", "hello", installed("1.0-1"), hello, sources, FREE)
    assert missing.unknown and "no version 3.0-1 of hello" in missing.error and "2.0-1, 0.5-1" in missing.error
    unknown = decide("installed", "nope", None, None, sources, FREE)
    assert unknown.unknown
    assert unknown.error == "no package nope in the configured repositories; run apt-get update?"
    assert decide("installed", "virtual", None, policies["virtual"], sources, FREE).unknown


def test_nonfree_and_unsupported_are_refused_unless_allowed():
    policies, sources = parse_policy(POLICY), parse_sources(SOURCES)
    nonfree = decide("installed", "fw", None, policies["fw"], sources, FREE)
    assert "not free software (component non-free-firmware)" in nonfree.error and "allownonfree" in nonfree.error
    # PackageKit's "supported" is the main part of the archive only
    assert "allowunsupported" in decide("installed", "fw", None, policies["fw"], sources,
                                        Allowed(nonfree=True)).error
    assert decide("installed", "fw", None, policies["fw"], sources,
                  Allowed(nonfree=True, unsupported=True)).says == "install fw (7)"
    other = parse_policy("x:\n  Installed: (none)\n  Candidate: 1\n  Version table:\n     1 500\n"
                         "        500 file:/srv/other ./ Packages\n")["x"]
    unsupported = decide("installed", "x", None, other, sources, FREE)
    assert "not from the distribution's own archive (origin no origin)" in unsupported.error
    assert decide("installed", "x", None, other, sources, Allowed(unsupported=True)).change is not None


# --- the apt-get command line and its errors -----------------------------------------------

def test_one_command_installs_pins_and_removes():
    argv = install_command([Change("a"), Change("b", version="1.2"), Change("c", remove=True)],
                           lock_wait=7)
    assert argv[:4] == ["apt-get", "install", "-y", "-q"]
    assert argv[-4:] == ["--", "a", "b=1.2", "c-"]
    assert "DPkg::Lock::Timeout=7" in argv and "Dpkg::Options::=--force-confold" in argv
    assert "--allow-downgrades" not in argv and "--allow-unauthenticated" not in argv
    flagged = install_command([Change("a")], downgrade=True, untrusted=True)
    assert "--allow-downgrades" in flagged and "--allow-unauthenticated" in flagged


def test_lock_timeout_from_the_environment(monkeypatch):
    monkeypatch.setenv(aptmod.LOCK_TIMEOUT_ENV, "3")
    assert aptmod.lock_timeout() == 3
    monkeypatch.setenv(aptmod.LOCK_TIMEOUT_ENV, "nonsense")
    assert aptmod.lock_timeout() == aptmod.LOCK_TIMEOUT


@pytest.mark.parametrize(("output", "message", "package"), [
    ("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (flock)\n"
     "E: Unable to acquire the dpkg frontend lock", "dpkg is locked by another process (pid 4242, flock)", None),
    ("E: Unable to locate package nosuch", "no package nosuch in the configured repositories; run apt-get update?",
     "nosuch"),
    ("E: Version '9.9' for 'hello' was not found", "no version 9.9 of hello in the configured repositories",
     "hello"),
    ("E: Packages were downgraded and -y was used without --allow-downgrades.", "allowdowngrade", None),
    ("WARNING: The following packages cannot be authenticated!\n  x\n"
     "E: There were unauthenticated packages and -y was used without --allow-unauthenticated", "allowuntrusted",
     None),
    ("Err:1 http://deb.debian.org/debian bookworm/main amd64 x amd64 1\n  Temporary failure resolving "
     "'deb.debian.org'\nE: Failed to fetch http://deb.debian.org/x.deb", "cannot download", None),
    ("The following packages have unmet dependencies:\n b : Depends: missing but it is not installable\n"
     "E: Unable to correct problems, you have held broken packages.", "b : Depends: missing", "b"),
    ("E: Something else\n", "Something else", None),
])
def test_apt_errors_are_one_clear_line(output, message, package):
    failure = classify(output)
    assert message in failure.message and "\n" not in failure.message
    assert failure.package == package


# --- validation --------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "message"), [
    ("name: bad name", "'bad name' is not a Debian package name"),
    ("name: hello=1.0", "put the version in state"),
    ("name: hello\n    state: latest", "did you mean 'newest'"),
    ("name: hello\n    state: absent", "state must be installed, uninstalled, newest or a version"),
    ("name: hello\n    state: 1.0 beta", "not '1.0 beta'"),
    ("name: hello\n    allownonfree: 'yes'", "must be boolean"),
    ("name: hello\n    state: 1.10", "field 'state' must be string, not 1.1"),
])
def test_validation_errors_are_located(entry, message):
    text = f"graph: g\nresources:\n  pkg:\n  - {entry}\n"
    with pytest.raises(Exception) as caught:
        load_text(text, "g.yaml")
    assert message in str(caught.value)
    assert "g.yaml:4:" in str(caught.value) or "g.yaml:5:" in str(caught.value)


def test_mgmt_examples_shapes_load():
    text = ("graph: mygraph\nresources:\n  pkg:\n  - name: drbd-utils\n    meta:\n      autogroup: false\n"
            "    state: installed\n  - name: powertop\n    meta:\n      autogroup: true\n    state: installed\n"
            "edges: []\n")
    loaded = load_text(text, "autogroup1.yaml")
    resources = getattr(loaded, "resources", None) or loaded[0]
    assert len(resources) == 2


# --- group transactions against a fake apt ------------------------------------------------

class FakeApt(Apt):
    """apt whose transactions edit the fake status file (like dpkg would)."""

    def __init__(self, status: Path, repo: dict[str, list[str]], broken: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.status = status
        self.repo = repo            # name -> versions offered, newest last
        self.broken = broken        # packages whose installation fails
        self.transactions: list[list[str]] = []
        self.policy_calls = 0

    def _db(self) -> dict[str, str]:
        db = parse_status(self.status.read_text())
        return {name: found[0].version for name, found in db.packages.items() if found[0].is_installed}

    def policy(self, names):
        self.policy_calls += 1
        text = ""
        for name in names:
            if name not in self.repo:
                continue
            versions = self.repo[name]
            text += f"{name}:\n  Installed: {self._db().get(name, '(none)')}\n  Candidate: {versions[-1]}\n"
            text += "  Version table:\n" + "".join(
                f"     {v} 500\n        500 file:/srv/repo stable/main amd64 Packages\n" for v in versions)
        return parse_policy(text)

    def sources(self):
        return {"file:/srv/repo stable/main amd64 Packages": Release("Debian", "main")}

    def update(self) -> bool:
        return False

    def install(self, changes, *, downgrade, untrusted):
        self.transactions.append([c.argument() for c in changes])
        if any(c.name in self.broken for c in changes):
            bad = next(c.name for c in changes if c.name in self.broken)
            return Failure(f"{bad} : Depends: nothing but it is not installable", None)
        db = self._db()
        for change in changes:
            if change.remove:
                db.pop(change.name, None)
            else:
                db[change.name] = change.version or self.repo[change.name][-1]
        write_status(self.status, stanza("dpkg", "1"), *(stanza(n, v) for n, v in db.items() if n != "dpkg"))
        return None


def group_setup(tmp_path: Path, broken=frozenset()):
    write_status(tmp_path / "status", stanza("dpkg", "1"), stanza("gone", "1.0"), stanza("old", "1.0"))
    repo = {f"p{i}": ["1.0"] for i in range(5)} | {"old": ["1.0", "2.0"], "gone": ["1.0"]}
    fake = FakeApt(tmp_path / "status", repo, frozenset(broken))
    return fake_backend(tmp_path, fake), fake


def test_five_members_in_one_transaction(tmp_path):
    backend, fake = group_setup(tmp_path)
    members = [pkg(backend, f"p{i}") for i in range(5)] + [pkg(backend, "gone", state="uninstalled"),
                                                             pkg(backend, "old", state="newest")]
    assert PkgResource.check_apply_group(members, True) == [False] * 7
    assert fake.transactions == [["p0=1.0", "p1=1.0", "p2=1.0", "p3=1.0", "p4=1.0", "gone-", "old=2.0"]]
    assert fake.policy_calls == 1
    # all in state now: a second check asks dpkg's status only for the installed ones
    fake.policy_calls = 0
    assert PkgResource.check_apply_group(members[:6], True) == [True] * 6
    assert fake.policy_calls == 0 and len(fake.transactions) == 1


def test_noop_reports_and_changes_nothing(tmp_path):
    backend, fake = group_setup(tmp_path)
    REPORTS.clear()
    members = [pkg(backend, "p0"), pkg(backend, "gone", state="uninstalled"), pkg(backend, "old", state="2.0")]
    assert PkgResource.check_apply_group(members, False) == [False, False, False]
    assert fake.transactions == []
    assert [msg for _, _, msg in REPORTS] == ["would install p0 (1.0)", "would remove gone (1.0)",
                                              "would upgrade old 1.0 -> 2.0"]


def test_a_failed_transaction_blames_the_right_member(tmp_path):
    backend, fake = group_setup(tmp_path, broken={"p3"})
    members = [pkg(backend, f"p{i}") for i in range(5)] + [pkg(backend, "nosuch")]
    results = PkgResource.check_apply_group(members, True)
    assert isinstance(results[5], ResourceError) and "no package nosuch" in str(results[5])
    assert isinstance(results[3], ResourceError) and "p3 : Depends" in str(results[3])
    assert results[:3] + results[4:5] == [False] * 4
    # the group's transaction (without the unknown one), then each member alone
    assert fake.transactions[0] == ["p0=1.0", "p1=1.0", "p2=1.0", "p3=1.0", "p4=1.0"]
    assert sorted(map(tuple, fake.transactions[1:])) == [("p0=1.0",), ("p1=1.0",), ("p2=1.0",), ("p3=1.0",),
                                                         ("p4=1.0",)]


def test_single_check_apply_raises_the_error(tmp_path):
    backend, fake = group_setup(tmp_path)
    assert pkg(backend, "old", state="1.0").check_apply(True) is True
    write_status(tmp_path / "status", stanza("dpkg", "1"), stanza("old", "2.0"))
    with pytest.raises(ResourceError, match="old 2.0 is installed, newer than 1.0: set allowdowngrade"):
        pkg(backend, "old", state="1.0").check_apply(True)
    assert pkg(backend, "old", state="1.0", allowdowngrade=True).check_apply(True) is False
    assert fake.transactions == [["old=1.0"]]


def test_group_token_is_the_allow_flags(tmp_path):
    backend, _ = group_setup(tmp_path)
    assert pkg(backend, "aa").group_token() == pkg(backend, "bb", state="newest").group_token()
    assert pkg(backend, "aa").group_token() != pkg(backend, "bb", allownonfree=True).group_token()
    assert pkg(backend, "aa").group_token() != pkg(backend, "bb", allowuntrusted=True).group_token()
    assert pkg(backend, "aa").group_token() != pkg(backend, "bb", allowdowngrade=True).group_token()


def test_decision_words():
    assert Decision(verb="remove", what="x (1)").done == "removed x (1)"
    assert Decision(verb="install", what="x (1)").says == "install x (1)"


def test_a_failed_update_leaves_the_clear_error_and_others_alone(tmp_path):
    backend, fake = group_setup(tmp_path)
    calls = []

    def failing_update() -> bool:
        calls.append(1)
        raise aptmod.AptError("apt-get update failed: cannot download: Temporary failure resolving 'x'")

    fake.update = failing_update
    fake.update_allowed = lambda: not calls
    REPORTS.clear()
    results = PkgResource.check_apply_group([pkg(backend, "nosuch"), pkg(backend, "gone"), pkg(backend, "p0")],
                                            True)
    assert str(results[0]) == "no package nosuch in the configured repositories; run apt-get update?"
    assert results[1:] == [True, False] and calls == [1]
    assert any("apt-get update failed" in msg and level == "warning" for _, level, msg in REPORTS)


def test_update_is_rate_limited(monkeypatch):
    now = [1000.0]
    apt = Apt(clock=lambda: now[0])
    runs = []
    monkeypatch.setattr(apt, "_run", lambda argv, timeout, stoppable=True: runs.append(argv) or (0, ""))
    assert apt.update() is True
    now[0] += aptmod.UPDATE_INTERVAL - 1
    assert apt.update() is False
    now[0] += 2
    assert apt.update() is True
    assert len(runs) == 2 and runs[0][:2] == ["apt-get", "update"]


def test_new_index_pokes_newest_but_apt_bookkeeping_does_not(tmp_path):
    from mgmtd.resources.aptwatch import ListsWatch, is_index
    from tests.harness import wait_for

    assert is_index("deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4")
    assert not is_index("lock") and not is_index("partial") and not is_index("")
    pokes = []
    stop = ListsWatch(str(tmp_path)).subscribe(lambda: pokes.append(1))
    try:
        (tmp_path / "partial").mkdir()
        (tmp_path / "partial" / "x_Packages").write_text("new")
        (tmp_path / "partial" / "x_Packages").rename(tmp_path / "x_Packages")   # as apt does
        wait_for(lambda: pokes, timeout=5, what="a poke for the new index")
    finally:
        stop()


def lists_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("apt-lists-")]


def test_many_newest_packages_share_one_index_watch(tmp_path):
    from tests.harness import wait_for

    # more than fs.inotify.max_user_instances (128 by default): one instance each would fail
    backend = fake_backend(tmp_path)
    before = len(lists_threads())
    pokes: set[int] = set()
    stops = []
    for i in range(200):
        res = pkg(backend, f"p{i}", state="newest")
        stop = res.start_watch(lambda i=i: pokes.add(i))
        assert stop is not None
        stops.append(stop)
    try:
        assert len(lists_threads()) == before + 1
        (tmp_path / "x_Packages").write_text("new")
        wait_for(lambda: len(pokes) == 200, timeout=5, what="every newest package poked")
    finally:
        for stop in stops[:-1]:
            stop()
    assert backend.lists.watching          # one subscriber left
    stops[-1]()
    assert not backend.lists.watching
    wait_for(lambda: len(lists_threads()) == before, timeout=5, what="the watch thread gone")


def test_resources_of_one_engine_share_one_backend():
    shared: dict = {}
    first, second = PkgResource("aa", {}), PkgResource("bb", {})
    first.ctx, second.ctx = Context(shared=shared), Context(shared=shared)
    assert first.backend is second.backend
    other = PkgResource("cc", {})
    other.ctx = Context(shared={})
    assert other.backend is not first.backend


# --- names qualified with the native architecture -------------------------------------------

class NativeArchApt(FakeApt):
    """apt-cache as it is: ``foo:amd64`` on amd64 (and ``foo:all``) printed as ``foo:``."""

    def policy(self, names):
        bare = [name.removesuffix(":amd64").removesuffix(":all") for name in names]
        return super().policy(bare)


def test_a_name_qualified_with_the_native_arch_finds_its_candidate(tmp_path):
    write_status(tmp_path / "status", stanza("dpkg", "1"))
    fake = NativeArchApt(tmp_path / "status", {"libfoo": ["1.0", "2.0"]})
    backend = fake_backend(tmp_path, fake)
    REPORTS.clear()
    assert pkg(backend, "libfoo:amd64", state="newest").check_apply(False) is False
    assert "would install libfoo:amd64 (2.0)" in [msg for _, _, msg in REPORTS]
    policies = parse_policy("foo:\n  Installed: (none)\n  Candidate: 1.0\n"
                            "bar:i386:\n  Installed: (none)\n  Candidate: 2.0\n")
    assert policy_for(policies, "foo:amd64", "amd64").candidate == "1.0"
    assert policy_for(policies, "foo:all", "amd64").candidate == "1.0"
    assert policy_for(policies, "bar:i386", "amd64").candidate == "2.0"
    assert policy_for(policies, "foo:i386", "amd64") is None    # another architecture's is not foo's


# --- running apt: output, timeouts, stopping ------------------------------------------------------

def daemon_script(tmp_path: Path, status: int) -> list[str]:
    """A command that starts a daemon of its own session keeping the inherited
    stdout open (as a maintainer script starting a service may), then exits."""
    return ["sh", "-c", f"setsid sleep 60 & echo $! > {tmp_path}/daemon; echo out; exit {status}"]


def kill_daemon(tmp_path: Path) -> None:
    pid = (tmp_path / "daemon").read_text().strip() if (tmp_path / "daemon").exists() else ""
    if pid:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_daemon_keeping_stdout_open_does_not_hang_apt(tmp_path):
    apt = Apt(systemd=False)
    try:
        (status, out), seconds = timed(lambda: apt._run(daemon_script(tmp_path, 3), timeout=30))
        assert (status, out, seconds < 10) == (3, "out\n", True)
        kill_daemon(tmp_path)
        (status, out), seconds = timed(lambda: apt._transaction(daemon_script(tmp_path, 100), timeout=30))
        assert (status, out, seconds < 10) == (100, "out\n", True)
    finally:
        kill_daemon(tmp_path)


def test_a_transaction_runs_as_a_transient_unit_when_systemd_runs_here():
    argv = install_command([Change("a")])
    env = aptmod.transaction_env({"http_proxy": "http://p:3128", "HOME": "/root"})
    command = aptmod.transient_command(argv, "mgmtd-apt-x", env)
    assert command[:7] == ["systemd-run", "--unit=mgmtd-apt-x", "--collect", "--wait", "--pipe", "--quiet",
                           "--description=mgmtd pkg: apt-get transaction"]
    assert "--setenv=DEBIAN_FRONTEND=noninteractive" in command and "--setenv=LC_ALL=C" in command
    assert "--setenv=http_proxy=http://p:3128" in command and not any("HOME" in arg for arg in command)
    assert command[command.index("--") + 1:] == argv
    assert aptmod.unit_name() != aptmod.unit_name() and aptmod.unit_name().startswith("mgmtd-apt-")
    assert Apt(systemd=None).systemd == Path(aptmod.SYSTEMD_DIR).is_dir()


FAKE_SYSTEMD_RUN = """#!/bin/sh
# systemd-run --wait as far as the test goes: the command runs on its own
# (in another session, as a unit would), this process only waits for it
echo "$@" > {log}
while [ "$1" != "--" ]; do shift; done
shift
setsid "$@" &
child=$!
while kill -0 $child 2>/dev/null; do sleep 0.05; done
"""


def fake_systemd_run(tmp_path: Path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemd-run"
    script.write_text(FAKE_SYSTEMD_RUN.format(log=tmp_path / "args"))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path / "args"


def test_stopping_only_stops_waiting_for_a_transaction_in_its_unit(tmp_path, monkeypatch):
    from tests.harness import wait_for

    args = fake_systemd_run(tmp_path, monkeypatch)
    apt = Apt(systemd=True)
    marker, go = tmp_path / "finished", tmp_path / "go"
    result = []
    # the transaction finishes only once the test says so: no race with a loaded machine
    script = f"while [ ! -e {go} ]; do sleep 0.05; done; echo done > {marker}"
    waiter = threading.Thread(target=lambda: result.append(
        apt._transaction(["sh", "-c", script], timeout=60)))
    waiter.start()
    wait_for(lambda: apt._waiters, timeout=10, what="the transaction started")
    apt.interrupt()
    waiter.join(timeout=10)
    assert not waiter.is_alive() and not marker.exists()
    assert isinstance(result[0], Failure) and result[0].stopped
    assert "stopped waiting for apt-get install (mgmtd is stopping): it goes on in unit mgmtd-apt-" \
        in result[0].message
    assert "--unit=mgmtd-apt-" in args.read_text()
    go.touch()
    wait_for(marker.exists, timeout=10, what="the transaction finishing on its own")
    # and no new transaction starts once stopping
    assert apt.install([Change("a")], downgrade=False, untrusted=False).stopped


def test_a_transaction_past_its_deadline_is_left_running(tmp_path, monkeypatch):
    from tests.harness import wait_for

    fake_systemd_run(tmp_path, monkeypatch)
    marker = tmp_path / "finished"
    for systemd in (True, False):
        marker.unlink(missing_ok=True)
        done = Apt(systemd=systemd)._transaction(["sh", "-c", f"sleep 1; echo done > {marker}"], timeout=0.2)
        assert isinstance(done, Failure) and "still running after 0.2 s" in done.message, done
        assert "left it running" in done.message and not done.stopped
        wait_for(marker.exists, timeout=10, what="the transaction finishing on its own")
