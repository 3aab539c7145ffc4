"""The unit as operators use it on real systemd machines: enable, status, the
journal's priorities, reload, the watchdog (docs/operations.md)."""

from __future__ import annotations

import json
import re
import signal
import time

import psutil

from tests.harness import voter_names, wait_for

FAILING = """\
graph: failing
resources:
  exec:
  - name: fails
    cmd: /bin/false
"""


def graph_of_files(content: str, export: bool) -> str:
    shared = f"""
  - name: "@@shared"
    path: /tmp/fleet/shared.txt
    content: "{content}\\n"
""" if export else ""
    return f"""\
graph: files
resources:
  file:
  - name: dir
    path: /tmp/fleet/
    state: exists
  - name: own
    path: /tmp/fleet/own.txt
    content: "{content}\\n"
{shared}
collect:
- kind: file
  pattern: /tmp/fleet/
  hosts: [n1]
"""


def journal_entries(machine, *args: str) -> list[dict]:
    out = machine.journal("-u", "mgmtd", "-o", "json", *args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def mgmtd_messages(entries: list[dict]) -> list[dict]:
    """The entries mgmtd wrote (not systemd's own lines about the unit)."""
    return [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "mgmtd"]


def test_enable_now_on_three_machines_makes_three_voters(make_fleet):
    fleet = make_fleet(3).start()
    fleet.wait_settled(3, voters={"n1", "n2", "n3"})
    for machine in fleet.machines:
        # mgmtctl with its default endpoint (127.0.0.1, where each server listens too)
        wait_for(lambda m=machine: voter_names(fleet.members(m, all_endpoints=False), healthy=True)
                 == {"n1", "n2", "n3"}, 60, f"3 healthy voters through {machine.name}'s own etcd")
        assert machine.systemctl("is-enabled", "mgmtd").stdout.strip() == "enabled"
        status = wait_for(lambda m=machine: status_saying(m, "3/3 voters"), 60,
                          f"{machine.name}: 3/3 voters in its Status:")
        status_line = next(line for line in status.splitlines() if line.strip().startswith("Status:"))
        assert status_line.strip().startswith('Status: "server'), status
        table = machine.run("mgmtctl", "members", check=True).stdout
        assert "voters 3" in table and all(name in table for name in ("n1", "n2", "n3")), table


def status_saying(machine, text: str) -> str | None:
    out = machine.systemctl("status", "mgmtd", "--no-pager").stdout
    return out if text in out else None


def test_journal_priorities_come_from_the_prefixes(make_fleet):
    fleet = make_fleet(3)
    fleet.configure(fleet[0], FAILING)
    fleet.start()
    fleet.wait_settled(3)
    first = fleet[0]
    # an etcd warning: n3 goes away, n1's etcd loses its peer
    fleet[2].systemctl("stop", "mgmtd")

    def warnings():
        entries = journal_entries(first, "-p", "warning")
        ours = mgmtd_messages(entries)
        etcd = [e for e in ours if e["MESSAGE"].startswith("n1 etcd: ")]
        failed = [e for e in ours if e["MESSAGE"].startswith("n1 engine: exec[fails]: ")]
        return (entries, etcd, failed) if etcd and failed else None

    entries, etcd, failed = wait_for(warnings, 60, "an etcd warning and the failing resource in -p warning")
    assert all(int(e["PRIORITY"]) <= 4 for e in entries), [e for e in entries if int(e["PRIORITY"]) > 4]
    assert {int(e["PRIORITY"]) for e in etcd} == {4}, etcd
    assert {int(e["PRIORITY"]) for e in failed} == {3}, failed

    everything = mgmtd_messages(journal_entries(first, "-p", "info"))
    infos = [e for e in everything if int(e["PRIORITY"]) == 6]
    assert any(e["MESSAGE"].startswith("n1 supervisor: etcd is ready") for e in infos), everything[:20]
    assert len(everything) > len(mgmtd_messages(entries))
    # journald took the priority from the <N> prefix and stripped it
    assert not [e for e in everything if e["MESSAGE"][:1] == "<"]
    assert all(e["MESSAGE"].startswith("n1 ") for e in everything)


def test_reload_applies_the_edited_graph_and_keeps_it_when_broken(make_fleet):
    fleet = make_fleet(2, ideal=1)
    exporter, collector = fleet.machines
    fleet.configure(exporter, graph_of_files("v1", export=True))
    fleet.configure(collector, graph_of_files("c1", export=False))
    fleet.start()
    fleet.wait_settled(1)

    def file_is(machine, path, text):
        return lambda: machine.path(path).exists() and machine.path(path).read_text() == text

    wait_for(file_is(collector, "/tmp/fleet/shared.txt", "v1\n"), 60, "n1's export collected on n2")
    reloads = len([e for e in journal_entries(exporter) if "reloading the graph" in e["MESSAGE"]])
    exporter.write("/etc/mgmtd/graph.yaml", graph_of_files("v2", export=True))
    exporter.systemctl("reload", "mgmtd")
    wait_for(lambda: len([e for e in journal_entries(exporter) if "reloading the graph" in e["MESSAGE"]])
             > reloads, 30, "the supervisor reloading on systemctl reload")
    wait_for(file_is(exporter, "/tmp/fleet/own.txt", "v2\n"), 60, "the new graph applied on n1")
    wait_for(file_is(collector, "/tmp/fleet/shared.txt", "v2\n"), 60, "the new export collected on n2")

    exporter.write("/etc/mgmtd/graph.yaml", "graph: broken\nresources:\n  file:\n  - name: [\n")
    exporter.systemctl("reload", "mgmtd")
    why = wait_for(lambda: [e["MESSAGE"] for e in journal_entries(exporter, "-p", "err")
                            if "/etc/mgmtd/graph.yaml:" in e["MESSAGE"]], 30, "the reason in the journal")
    assert any(re.search(r"/etc/mgmtd/graph\.yaml:5:1: YAML syntax error", m) for m in why), why
    wait_for(lambda: any("the last good graph keeps running" in e["MESSAGE"]
                         for e in journal_entries(exporter, "-p", "err")), 30, "the old graph kept")
    assert exporter.systemctl("is-active", "mgmtd").stdout.strip() == "active"
    # the old graph still runs: a deleted file comes back
    exporter.path("/tmp/fleet/own.txt").unlink()
    wait_for(file_is(exporter, "/tmp/fleet/own.txt", "v2\n"), 60, "the old graph repairing its file")
    assert collector.path("/tmp/fleet/shared.txt").read_text() == "v2\n"


def test_watchdog_restarts_a_hung_supervisor(make_fleet):
    fleet = make_fleet(3)
    machine = fleet[1]
    # the unit's 30 s, shortened the way an operator would: a drop-in
    machine.write("/etc/systemd/system/mgmtd.service.d/watchdog.conf", "[Service]\nWatchdogSec=10s\n")
    fleet.start()
    fleet.wait_settled(3)
    watchdog = watchdog_seconds(machine)
    assert watchdog == 10
    hung = machine.main_pid()
    old_etcd = machine.processes("etcd")
    assert len(old_etcd) == 1
    stopped_at = time.monotonic()
    psutil.Process(hung).send_signal(signal.SIGSTOP)
    restarted = wait_for(lambda: (pid := machine.main_pid()) not in (0, hung) and pid, watchdog + 90,
                         "systemd restarting the hung supervisor")
    took = time.monotonic() - stopped_at
    log = machine.journal("-u", "mgmtd", "-o", "cat")
    assert "Watchdog timeout (limit 10s)" in log, log[-3000:]
    assert restarted != hung
    fleet.wait_settled(3, voters={"n1", "n2", "n3"})
    etcd = machine.processes("etcd")
    assert len(etcd) == 1 and etcd[0].pid != old_etcd[0].pid, (etcd, old_etcd, machine.journal(
        "-u", "mgmtd", "-n", "60", "-o", "short-monotonic"))
    print(f"watchdog: restarted {took:.1f} s after SIGSTOP (WatchdogSec={watchdog:.0f}s, RestartSec=2s)")


def watchdog_seconds(machine) -> float:
    usec = machine.systemctl("show", "-p", "WatchdogUSec", "--value", "mgmtd").stdout.strip()
    # systemctl prints a time span ("30s", "1min 30s")
    total = 0.0
    for part in usec.split():
        for suffix, scale in (("min", 60), ("ms", 0.001), ("s", 1)):
            if part.endswith(suffix):
                total += float(part.removesuffix(suffix)) * scale
                break
    return total
