"""The pkg kind through ``mgmtd run`` inside a machine, against a local apt
repository of tiny packages (tests/system/debrepo.py): install, remove,
newest, version pins, autogroup transactions counted in apt's history, drift
repair, the allow* flags, unknown packages, a held dpkg lock, noop.

The machine is shared by the module's tests: each uses its own package names."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness import wait_for
from tests.system.debrepo import Repo, apt_update, dpkg_status, installed_version, isolate_apt, transactions
from tests.system.kinds import sandbox  # noqa: F401

LOCK_HOLDER = ("import fcntl, time\n"
               "f = open('/var/lib/dpkg/lock-frontend', 'w')\n"
               "fcntl.lockf(f, fcntl.LOCK_EX)\n"
               "print('locked', flush=True)\n"
               "time.sleep(600)\n")


# a postinst that holds the transaction until the test releases it (at most two minutes)
GATED_POSTINST = ("#!/bin/sh\nset -e\n: > /run/mt-slow-started\n"
                  "for i in $(seq 1200); do [ -e /run/mt-slow-release ] && exit 0; sleep 0.1; done\n")


def graph(*entries: str) -> str:
    return "graph: pkgtest\nresources:\n  pkg:\n" + "".join(entries) + "edges: []\n"


def entry(name: str, state: str = "installed", extra: str = "") -> str:
    return f"  - name: {name}\n    state: \"{state}\"\n{extra}"


@pytest.fixture(scope="module")
def repo(sandbox, tmp_path_factory):  # noqa: F811
    isolate_apt(sandbox)
    main = Repo(sandbox, tmp_path_factory.mktemp("debs"))
    for name in ["mt-one", "mt-gone", "mt-new", "mt-drift", "mt-noop", "mt-lock",
                 *(f"mt-g{i}" for i in range(1, 6)), *(f"mt-h{i}" for i in range(1, 6)),
                 "powertop-t", "sl-t", "cowsay-t", "drbd-utils-t"]:
        main.publish(name, "1.0")
    main.publish("mt-pin", "1.0")
    main.publish("mt-pin", "2.0")
    main.publish("mt-fw", "1.0", component="non-free")
    main.publish("mt-slow", "1.0", scripts={"postinst": GATED_POSTINST})
    main.enable()
    extra = Repo(sandbox, tmp_path_factory.mktemp("extra"), name="extra", root="/srv/mgmtd-extra",
                 origin="mgmtd-test", components=("main",))
    extra.publish("mt-thirdparty", "1.0")
    extra.enable()
    # unsigned and not declared trusted: apt may read it, but its packages cannot be authenticated
    unsigned = Repo(sandbox, tmp_path_factory.mktemp("unsigned"), name="unsigned", root="/srv/mgmtd-unsigned",
                    components=("main",), options="allow-insecure=yes")
    unsigned.publish("mt-unsigned", "1.0")
    unsigned.enable()
    apt_update(sandbox)
    return main


def applied(sandbox, text: str, *flags: str):  # noqa: F811
    try:
        done = sandbox.apply(text, *flags)
    except subprocess.TimeoutExpired as timeout:
        # what was running and what apt last did, for the record of the failure
        ps = sandbox.run("ps", "-eo", "pid,etime,stat,args", check=False).stdout
        term = sandbox.run("tail", "-n", "30", "/var/log/apt/term.log", check=False).stdout
        log = (timeout.stderr or b"").decode(errors="replace")
        raise AssertionError(f"mgmtd run did not finish:\n{log}\n--- ps:\n{ps}\n--- apt term.log:\n{term}") \
            from None
    assert "Traceback" not in done.log, done.log
    return done


def test_install_then_uninstall_mgmt_pkg1_pkg2(sandbox, repo):  # noqa: F811
    done = applied(sandbox, graph(entry("mt-one")))
    assert done.returncode == 0, done.log
    assert "installed mt-one (1.0)" in done.log
    assert installed_version(sandbox, "mt-one") == "1.0"
    assert sandbox.read("/usr/share/mgmtd-test/mt-one") == "mt-one 1.0\n"
    again = applied(sandbox, graph(entry("mt-one")))
    assert again.returncode == 0 and "installed mt-one" not in again.log, again.log
    gone = applied(sandbox, graph(entry("mt-one", "uninstalled")))
    assert gone.returncode == 0, gone.log
    assert "removed mt-one (1.0)" in gone.log
    assert installed_version(sandbox, "mt-one") is None


def test_autogroup_is_one_transaction(sandbox, repo):  # noqa: F811
    before = transactions(sandbox)
    done = applied(sandbox, graph(*(entry(f"mt-g{i}") for i in range(1, 6))))
    assert done.returncode == 0, done.log
    assert all(installed_version(sandbox, f"mt-g{i}") == "1.0" for i in range(1, 6))
    assert transactions(sandbox) - before == 1, done.log

    before = transactions(sandbox)
    alone = "    meta:\n      autogroup: false\n"
    done = applied(sandbox, graph(*(entry(f"mt-h{i}", extra=alone) for i in range(1, 6))))
    assert done.returncode == 0, done.log
    assert all(installed_version(sandbox, f"mt-h{i}") == "1.0" for i in range(1, 6))
    assert transactions(sandbox) - before == 5, done.log


def test_mgmt_autogroup1_and_autogroup2_shapes(sandbox, repo):  # noqa: F811
    grouped = "    meta:\n      autogroup: true\n"
    before = transactions(sandbox)
    autogroup2 = graph(entry("powertop-t", extra=grouped), entry("sl-t", extra=grouped),
                       entry("cowsay-t", extra=grouped))
    done = applied(sandbox, autogroup2)
    assert done.returncode == 0, done.log
    assert transactions(sandbox) - before == 1
    for name in ("powertop-t", "sl-t", "cowsay-t"):
        sandbox.run("dpkg", "-r", name, check=True)
    before = transactions(sandbox)
    autogroup1 = graph(entry("drbd-utils-t", extra="    meta:\n      autogroup: false\n"),
                       entry("powertop-t", extra=grouped), entry("sl-t", extra=grouped),
                       entry("cowsay-t", extra=grouped))
    done = applied(sandbox, autogroup1)
    assert done.returncode == 0, done.log
    assert transactions(sandbox) - before == 2   # the one left out of the group, and the group
    assert installed_version(sandbox, "drbd-utils-t") == "1.0"


def test_version_pin_and_downgrade(sandbox, repo):  # noqa: F811
    assert applied(sandbox, graph(entry("mt-pin", "1.0"))).returncode == 0
    assert installed_version(sandbox, "mt-pin") == "1.0"
    up = applied(sandbox, graph(entry("mt-pin", "2.0")))
    assert up.returncode == 0 and "upgraded mt-pin 1.0 -> 2.0" in up.log, up.log
    refused = applied(sandbox, graph(entry("mt-pin", "1.0")))
    assert refused.returncode != 0
    assert "mt-pin 2.0 is installed, newer than 1.0: set allowdowngrade: true" in refused.log
    assert installed_version(sandbox, "mt-pin") == "2.0"
    down = applied(sandbox, graph(entry("mt-pin", "1.0", "    allowdowngrade: true\n")))
    assert down.returncode == 0 and "downgraded mt-pin 2.0 -> 1.0" in down.log, down.log
    assert installed_version(sandbox, "mt-pin") == "1.0"
    missing = applied(sandbox, graph(entry("mt-pin", "3.0")))
    assert missing.returncode != 0 and "no version 3.0 of mt-pin in the configured repositories" in missing.log


def test_unknown_package_is_a_clear_error(sandbox, repo):  # noqa: F811
    done = applied(sandbox, graph(entry("mt-nosuch")))
    assert done.returncode != 0
    assert "no package mt-nosuch in the configured repositories; run apt-get update?" in done.log


def test_nonfree_and_unsupported_need_their_flags(sandbox, repo):  # noqa: F811
    refused = applied(sandbox, graph(entry("mt-fw")))
    assert refused.returncode != 0 and "set allownonfree: true" in refused.log, refused.log
    # a non-free component is not the archive's supported main part either (as PackageKit has it)
    ok = applied(sandbox, graph(entry("mt-fw", extra="    allownonfree: true\n    allowunsupported: true\n")))
    assert ok.returncode == 0 and installed_version(sandbox, "mt-fw") == "1.0", ok.log
    third = applied(sandbox, graph(entry("mt-thirdparty")))
    assert third.returncode != 0 and "origin mgmtd-test" in third.log and "allowunsupported" in third.log
    ok = applied(sandbox, graph(entry("mt-thirdparty", extra="    allowunsupported: true\n")))
    assert ok.returncode == 0 and installed_version(sandbox, "mt-thirdparty") == "1.0", ok.log


def test_untrusted_needs_allowuntrusted(sandbox, repo):  # noqa: F811
    refused = applied(sandbox, graph(entry("mt-unsigned")))
    assert refused.returncode != 0 and "set allowuntrusted: true" in refused.log, refused.log
    assert installed_version(sandbox, "mt-unsigned") is None
    ok = applied(sandbox, graph(entry("mt-unsigned", extra="    allowuntrusted: true\n")))
    assert ok.returncode == 0 and installed_version(sandbox, "mt-unsigned") == "1.0", ok.log


def test_noop_says_what_it_would_do(sandbox, repo):  # noqa: F811
    done = applied(sandbox, graph(entry("mt-noop")), "--noop")
    assert "would install mt-noop (1.0)" in done.log, done.log
    assert installed_version(sandbox, "mt-noop") is None


def test_held_dpkg_lock_is_a_clear_error_after_the_deadline(sandbox, repo, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MGMTD_DPKG_LOCK_TIMEOUT", "2")   # `mgmtd run` inside inherits it
    sandbox.run("systemd-run", "--unit=mt-holdlock", "python3", "-c", LOCK_HOLDER, check=True)
    try:
        wait_for(lambda: "locked" in sandbox.machine.journal("-u", "mt-holdlock", "-o", "cat"),
                 timeout=30, what="the lock holder holding dpkg's frontend lock")
        done = applied(sandbox, graph(entry("mt-lock")))
    finally:
        sandbox.run("systemctl", "stop", "mt-holdlock", check=False)
    assert done.returncode != 0
    assert "dpkg is locked by another process (pid" in done.log and "python3" in done.log, done.log
    assert installed_version(sandbox, "mt-lock") is None


def test_agent_repairs_drift_and_follows_newest(sandbox, repo):  # noqa: F811
    agent = sandbox.start(graph(entry("mt-drift"), entry("mt-new", "newest")))
    agent.wait_log("converged status is: true", timeout=120)
    assert installed_version(sandbox, "mt-drift") == "1.0", agent.log()
    assert installed_version(sandbox, "mt-new") == "1.0", agent.log()
    before = len(agent.log())
    sandbox.run("dpkg", "-r", "mt-drift", check=True)
    agent.wait_log("installed mt-drift (1.0)", after=before, timeout=90)
    assert installed_version(sandbox, "mt-drift") == "1.0"

    before = len(agent.log())
    repo.publish("mt-new", "2.0")
    apt_update(sandbox)   # by hand, as an operator would: the new index is the event
    agent.wait_log("upgraded mt-new 1.0 -> 2.0", after=before, timeout=90)
    assert installed_version(sandbox, "mt-new") == "2.0"
    log = agent.stop()
    assert "Traceback" not in log


def test_stopping_the_agent_mid_install_lets_dpkg_finish(sandbox, repo):  # noqa: F811
    agent = sandbox.start(graph(entry("mt-slow")))
    wait_for(lambda: sandbox.machine.path("/run/mt-slow-started").exists(), timeout=120,
             what="mt-slow's postinst running")
    log = agent.stop()
    try:
        # the engine stopped waiting (no kill after 20 s) and left no traceback
        assert "stopped engine" in log and "did not stop within" not in log and "Traceback" not in log, log
        # the agent is gone; dpkg is still in the postinst, in the transaction's own unit
        assert not agent.active()
        assert dpkg_status(sandbox, "mt-slow") == "install ok half-configured"
        units = sandbox.run("systemctl", "list-units", "--no-legend", "--plain", "--state=active",
                            "mgmtd-apt-*").stdout
        assert "mgmtd-apt-" in units, units
    finally:
        sandbox.write("/run/mt-slow-release", "")
    wait_for(lambda: dpkg_status(sandbox, "mt-slow") == "install ok installed", timeout=60,
             what="dpkg finishing mt-slow after the agent stopped")
    assert installed_version(sandbox, "mt-slow") == "1.0"
    wait_for(lambda: "mgmtd-apt-" not in sandbox.run("systemctl", "list-units", "--no-legend", "--all",
                                                     "mgmtd-apt-*").stdout,
             timeout=30, what="the transaction's unit collected")
