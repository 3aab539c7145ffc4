"""Faults and bad input through the real CLI: a killed engine, a crash in the
middle of writing, a duplicate hostname, seeds nobody answers."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from concurrent import futures

import grpc
import psutil

from tests.harness import (
    MGMTD,
    children_of,
    cmdline_of,
    etcdctl,
    mgmtctl,
    one_file_graph,
    send_signal,
    wait_for,
    wait_full_rounds,
)


def engine_child(node) -> psutil.Process | None:
    return next((c for c in children_of(node.proc.pid, recursive=False) if "engine" in cmdline_of(c)), None)


def test_killed_engine_is_restarted_and_reapplies(make_node, workdir):
    target = workdir / "f"
    graph = one_file_graph(workdir / "g.yaml", target, "wanted")
    node = make_node()
    node.start(["yaml", graph])
    wait_for(lambda: target.exists() and target.read_text() == "wanted", 60, "first apply")
    first = wait_for(lambda: engine_child(node), 10, "the engine child")
    assert send_signal(first, signal.SIGKILL), f"the engine exited on its own\n{node.log()}"
    target.write_text("changed while the engine was dead")
    wait_for(lambda: (e := engine_child(node)) is not None and e.pid != first.pid, 30, "a new engine")
    wait_for(lambda: target.read_text() == "wanted", 30, "the graph applied again")
    assert "engine exited with status -9" in node.log()
    assert etcdctl(node.client_url, "endpoint", "health").returncode == 0  # etcd untouched
    assert node.stop() == 0


def test_crash_while_writing_leaves_whole_files(workdir):
    """SIGKILL the engine in the middle of rewriting 1000 files: each file holds
    its old or its new content, never a part."""
    root = workdir / "atomic"
    root.mkdir()
    count = 1000
    old = {i: f"old {i} " * 400 for i in range(count)}
    new = {i: f"NEW {i} " * 500 for i in range(count)}
    for i, text in old.items():
        (root / f"f{i}").write_text(text)
    lines = ["graph: atomic", "resources:", "  file:"]
    for i in range(count):
        lines += [f"  - name: f{i}", f'    path: "{root}/f{i}"', f'    content: "{new[i]}"']
    graph = workdir / "g.yaml"
    graph.write_text("\n".join(lines) + "\n")
    rng = random.Random(7)
    for attempt in range(3):
        proc = subprocess.Popen([MGMTD, "engine", "--hostname", "t", "--log-level", "warning", "yaml",
                                 str(graph)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # kill it once it has started writing but (most likely) before it is done
            wait_for(lambda: any((root / f"f{i}").read_text() == new[i] for i in range(count)), 60,
                     "the first new file", interval=0.001)
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            proc.kill()
            proc.wait(timeout=10)
        contents = {i: (root / f"f{i}").read_text() for i in range(count)}
        torn = [i for i, text in contents.items() if text not in (old[i], new[i])]
        assert not torn, f"attempt {attempt}: partial files {torn[:5]}"
        done = sum(1 for i, text in contents.items() if text == new[i])
        if done < count:
            break  # caught it in the middle: that is the case under test
        for i, text in old.items():  # all done already: start over, kill sooner
            (root / f"f{i}").write_text(text)
    assert 0 < done < count, f"never caught the engine mid-way ({done} of {count} written)"


def test_duplicate_hostname_is_refused(make_node, workdir):
    first = make_node("twin")
    first.start(["empty"], "--ideal-cluster-size", "1")
    wait_for(lambda: mgmtctl("--endpoints", first.client_url, "members").returncode == 0, 60,
             "the first node")
    wait_for(lambda: "twin" in mgmtctl("--endpoints", first.client_url, "members").stdout, 30,
             "twin registered")
    second = make_node("other")
    second.name = "twin"
    out = subprocess.run(second.command(["empty"], "--seeds", first.client_url), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "hostname 'twin' is already registered by a running node" in out.stderr
    assert "Traceback" not in out.stderr
    # the first node keeps its place
    view = mgmtctl("--endpoints", first.client_url, "members").stdout
    assert first.peer_url in view
    assert first.stop() == 0


def test_a_prefix_in_use_is_refused(make_node, workdir):
    first = make_node()
    first.start(["empty"])
    wait_for(lambda: etcdctl(first.client_url, "endpoint", "health").returncode == 0, 60, "the first")
    second = make_node()
    second.prefix = first.prefix
    out = subprocess.run(second.command(["empty"]), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"prefix {first.prefix} is in use by another mgmtd (pid {first.proc.pid})" in out.stderr
    assert etcdctl(first.client_url, "endpoint", "health").returncode == 0  # untouched
    assert first.stop() == 0


def test_unreachable_seeds_say_so_and_local_graph_still_applies(make_node, workdir):
    target = workdir / "f"
    graph = one_file_graph(workdir / "g.yaml", target, "local")
    node = make_node()
    node.start(["yaml", graph], "--seeds", "http://127.0.0.1:9")
    wait_for(lambda: target.exists(), 30, "the local graph applied without a cluster")
    wait_for(lambda: "cannot reach the cluster at http://127.0.0.1:9" in node.log(), 30, "the warning")
    assert node.proc.poll() is None
    wait_full_rounds(node)  # another round, again without the cluster: not said again
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=30) == 0
    assert node.log().count("cannot reach the cluster") == 1  # said once, not every round


def test_a_stop_during_a_round_against_silent_seeds_ends_the_round(make_node, workdir):
    # seeds that take every call and never answer it (as an etcd without quorum
    # answers no read): each call of a round waits for its timeout, one endpoint
    # after the other (20 member lists of 1.5 s: a round of 30 s)
    release = threading.Event()

    class Silent(grpc.GenericRpcHandler):
        def service(self, details):
            def hang(request, context):
                release.wait(120)
                context.abort(grpc.StatusCode.UNAVAILABLE, "the test is over")
            return grpc.unary_unary_rpc_method_handler(hang)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), handlers=[Silent()])
    ports = [server.add_insecure_port("127.0.0.1:0") for _ in range(20)]
    server.start()
    try:
        node = make_node()
        node.start(["empty"], "--seeds", ",".join(f"http://127.0.0.1:{p}" for p in ports),
                   "--log-level", "debug")
        wait_for(lambda: "started engine" in node.log(), 30, "the node's first round under way")
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=60) == 0, node.log()[-3000:]
        # stopped at the round's next call: the round never ended (its closing line)
        assert "round: " not in node.log(), node.log()[-3000:]
    finally:
        release.set()
        server.stop(grace=None)


def test_bad_cli_arguments_are_one_clear_line(workdir):
    cases = [
        (["run", "--client-urls", "127.0.0.1:2379", "empty"], "is not a URL"),
        (["run", "--ideal-cluster-size", "0", "empty"], "at least 1"),
        (["run", "--no-server", "--prefix", str(workdir / "p"), "empty"], "--no-server needs --seeds"),
        (["run", "--converged-timeout", "soon", "empty"], "not a number of seconds"),
        (["run", "--prefix", str(workdir / "p")], "FRONTEND"),
        (["validate", str(workdir / "missing.yaml")], "cannot read graph"),
    ]
    for args, fragment in cases:
        out = subprocess.run([MGMTD, *args], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0, args
        assert fragment in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_lost_quorum_is_stated_plainly_and_nothing_is_changed(make_node, workdir):
    first, second = make_node(), make_node()
    grace = 2
    first.start(["empty"], "--ideal-cluster-size", "2", "--grace-period", str(grace))
    second.start(["empty"], "--seeds", first.client_url, "--grace-period", str(grace))
    urls = f"{first.client_url},{second.client_url}"

    def two_voters():
        out = mgmtctl("--endpoints", urls, "status", "-o", "json")
        return out.returncode == 0 and json.loads(out.stdout)["healthy_voters"] == 2

    wait_for(two_voters, 90, "two healthy voters")
    assert second.stop() == 0  # one of two voters left: no quorum
    lost_at = time.monotonic()
    wait_for(lambda: "quorum lost: 1 of 2 voters reachable, 0 with a leader" in first.log(), 30,
             "the supervisor saying so")
    status = mgmtctl("--endpoints", urls, "status")
    assert status.returncode == 2, status.stdout + status.stderr
    assert "LOST: 0 of 2 voters healthy" in status.stdout and "mgmtctl restore BACKUP" in status.stdout
    # a whole round after the grace period has run out still changes nothing (the
    # sleep only lets the grace period pass; the round is the event waited for)
    time.sleep(max(0.0, lost_at + grace + 1 - time.monotonic()))
    wait_full_rounds(first)
    assert "removed member" not in first.log()
    listed = etcdctl(first.client_url, "member", "list", "-w", "json")
    assert len(json.loads(listed.stdout)["members"]) == 2
    assert first.stop() == 0


def test_full_disk_prefix_is_one_clear_error(make_node, workdir):
    mount = workdir / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        import pytest
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        node = make_node()
        node.prefix = mount / "prefix"
        out = subprocess.run(node.command(["empty"]), capture_output=True, text=True, timeout=60)
        assert out.returncode == 1
        errors = [line for line in out.stderr.splitlines() if " ERROR " in line or " CRITICAL " in line]
        assert any("no space left on device" in line for line in errors), out.stderr
        assert "goroutine" not in out.stderr  # etcd's panic dump stays at debug level
        assert "Traceback" not in out.stderr
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
