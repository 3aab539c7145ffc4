"""The harness's process helpers (tests/harness.py) must
tolerate processes that are gone: a child listed a moment ago may have exited
by the time it is signalled (the churn test died of NoSuchProcess that way)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests import harness
from tests.harness import (
    children_of,
    gone,
    kill_leftovers,
    kill_tree,
    send_signal,
    signal_tree,
    wait_for,
)

_marks = itertools.count(1)


@pytest.fixture
def mark():
    """A `sleep` duration no other process on the machine (or other test) uses;
    whatever still sleeps it at the end is killed."""
    value = f"300.{os.getpid()}{next(_marks):03d}"
    yield value
    for left in survivors(value):
        send_signal(left, signal.SIGKILL)


def reaped_pid() -> int:
    """The pid of a process that has exited and been reaped: nothing has it now."""
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=10)
    return proc.pid


def stale_handle() -> psutil.Process:
    """A psutil handle taken while the process ran; the process is gone since."""
    proc = subprocess.Popen(["sleep", "30"])
    handle = psutil.Process(proc.pid)
    proc.kill()
    proc.wait(timeout=10)
    return handle


def survivors(mark: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if mark in (proc.info["cmdline"] or []) and not gone(proc):
            found.append(proc)
    return found


@pytest.fixture
def tree(mark):
    """A shell with two children, stopped at the end whatever happens."""
    proc = subprocess.Popen(["sh", "-c", f"sleep {mark} & sleep {mark} & wait"])
    wait_for(lambda: len(children_of(proc.pid)) == 2, 10, "the shell's two children")
    yield proc
    for child in children_of(proc.pid):
        send_signal(child, signal.SIGKILL)
    proc.kill()
    proc.wait(timeout=10)


def test_kill_tree_when_a_listed_child_has_already_exited(tree, mark, monkeypatch):
    # what happened in the churn test: children() listed a process that exited
    # before it was signalled; the helper must kill the rest and not raise
    listed, exited = psutil.Process.children, stale_handle()

    def with_a_gone_child(self, recursive=False):
        return [*listed(self, recursive=recursive), exited]

    monkeypatch.setattr(psutil.Process, "children", with_a_gone_child)
    killed = kill_tree(tree.pid)
    monkeypatch.undo()
    assert tree.wait(timeout=10) == -signal.SIGKILL
    assert len(killed) == 3  # the shell and its two sleeps, not the one that was gone
    wait_for(lambda: not survivors(mark), 10, "the shell's children to be gone")


def test_kill_tree_races_a_child_that_exits_at_once(mark):
    # `sleep 0` exits while the tree is being listed and signalled
    for _ in range(20):
        proc = subprocess.Popen(["sh", "-c", f"sleep 0 & sleep 0 & sleep {mark}"])
        try:
            kill_tree(proc.pid)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            proc.kill()
            proc.wait(timeout=10)
    wait_for(lambda: not survivors(mark), 10, "every sleep to be gone")


def test_kill_tree_leaves_no_child_a_parent_respawns(mark):
    # a parent that starts a new child as soon as one dies (as the supervisor
    # restarts etcd) must not get to: the tree is frozen before it is killed
    proc = subprocess.Popen(["sh", "-c", f"while :; do sleep {mark}; done"])
    try:
        wait_for(lambda: children_of(proc.pid), 10, "the first child")
        kill_tree(proc.pid)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    wait_for(lambda: not survivors(mark), 10, "no respawned child")


def test_helpers_on_a_pid_that_is_gone():
    pid = reaped_pid()
    assert kill_tree(pid) == []
    assert signal_tree(pid, signal.SIGTERM) == []
    assert children_of(pid) == []
    assert gone(pid)
    handle = stale_handle()
    assert gone(handle)
    assert send_signal(handle, signal.SIGKILL) is False


def test_signal_tree_reaches_every_descendant(tree, mark):
    signalled = signal_tree(tree.pid, signal.SIGTERM)
    assert len(signalled) == 3
    assert tree.wait(timeout=10) is not None
    wait_for(lambda: not survivors(mark), 10, "the children to go on SIGTERM")


def test_kill_leftovers_tolerates_a_process_gone_since_it_was_listed(tmp_path, monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path)])
    try:
        listed = harness.processes_under
        monkeypatch.setattr(harness, "processes_under", lambda d: [stale_handle(), *listed(d)])
        leaked = kill_leftovers(str(tmp_path))
        assert len(leaked) == 1 and str(proc.pid) in leaked[0]
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_gone_counts_a_zombie_as_gone():
    proc = subprocess.Popen(["true"])
    handle = psutil.Process(proc.pid)
    # exited, not reaped yet
    wait_for(lambda: handle.status() == psutil.STATUS_ZOMBIE, 10, "true to exit")
    assert gone(handle) and gone(proc.pid)
    proc.wait(timeout=10)


# --- the one wait_for, start_cluster, stopping together ----------------------------------
def test_wait_for_returns_the_truthy_value_and_names_what_and_how_long_on_expiry():
    answers = iter([None, 0, "", ["found"]])
    assert wait_for(lambda: next(answers), 10, "an answer", interval=0) == ["found"]
    with pytest.raises(AssertionError, match=r"^timed out after 0\.05s waiting for nothing$"):
        wait_for(lambda: None, 0.05, "nothing", interval=0.01)


class RecordedNode(harness.Node):
    """Records how it would be started instead of starting."""

    def start(self, frontend, *args, env=None):
        self.started = (frontend, args)


def test_start_cluster_bootstraps_the_first_node_and_joins_the_others_through_it(tmp_path):
    nodes = [RecordedNode(f"n{i}", tmp_path / f"n{i}", 40000 + i, 41000 + i) for i in range(3)]
    assert harness.start_cluster(nodes, "--grace-period", "3", ideal=2, graphs=["a.yaml", None]) == nodes
    joining = ("--seeds", nodes[0].client_url, "--grace-period", "3")
    assert [n.started for n in nodes] == [
        (["yaml", "a.yaml"], ("--ideal-cluster-size", "2", "--grace-period", "3")),
        (["empty"], joining),
        (["empty"], joining),
    ]


def test_stop_together_returns_those_that_ignore_sigterm(mark):
    quick = subprocess.Popen(["sleep", mark])
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ignoring', flush=True); time.sleep(300)", mark], stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout.readline() == "ignoring\n"
        assert harness.stop_together([quick, stubborn], 1) == [stubborn]
        assert quick.returncode == -signal.SIGTERM
    finally:
        harness.stop_processes([stubborn], 1)
        stubborn.stdout.close()
    assert stubborn.returncode == -signal.SIGKILL
