"""One node end to end: `mgmtd run` starts a real etcd child and an engine
child, applies a graph, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

from tests.harness import (
    MGMTD,
    etcd_processes_under,
    etcdctl,
    gone,
    mgmtctl,
    send_signal,
    wait_for,
)


def write_graph(path, root) -> str:
    path.write_text(f"""
graph: it
resources:
  file:
  - name: root
    path: "{root}/"
    state: exists
  - name: a
    path: "{root}/a.txt"
    content: "alpha\\n"
    mode: "0640"
    state: exists
  - name: b
    path: "{root}/sub/"
    state: exists
  - name: c
    path: "{root}/sub/c.txt"
    content: "gamma\\n"
    state: exists
  - name: gone
    path: "{root}/gone.txt"
    state: absent
edges:
- name: e1
  from: {{kind: file, name: a}}
  to: {{kind: file, name: c}}
""")
    return str(path)


def test_converged_timeout_applies_and_exits_zero(make_node, workdir):
    root = workdir / "managed"
    (workdir / "managed").mkdir()
    (root / "gone.txt").write_text("remove me")
    graph = write_graph(workdir / "g.yaml", root)
    node = make_node()
    node.start(["yaml", graph], "--converged-timeout", "1")
    assert node.proc.wait(timeout=60) == 0, node.log()
    assert (root / "a.txt").read_text() == "alpha\n"
    assert oct((root / "a.txt").stat().st_mode & 0o777) == "0o640"
    assert (root / "sub" / "c.txt").read_text() == "gamma\n"
    assert not (root / "gone.txt").exists()
    assert not etcd_processes_under(str(workdir)), "etcd outlived mgmtd"
    assert "Traceback" not in node.log()
    # state is private: the prefix and etcd's data dir
    assert node.prefix.stat().st_mode & 0o777 == 0o700
    assert (node.prefix / "etcd").stat().st_mode & 0o777 == 0o700
    assert "without TLS" not in node.log()  # loopback only: nothing to warn about


def test_member_seen_by_etcdctl_and_mgmtctl_and_sigterm_cleans_up(make_node, workdir):
    root = workdir / "managed"
    graph = write_graph(workdir / "g.yaml", root)
    node = make_node("alpha")
    node.start(["yaml", graph])
    wait_for(lambda: (root / "sub" / "c.txt").exists(), 60, "the graph to be applied")

    listed = etcdctl(node.client_url, "member", "list", "-w", "json")
    assert listed.returncode == 0, listed.stderr
    members = json.loads(listed.stdout)["members"]
    assert [m["name"] for m in members] == ["alpha"]
    assert members[0]["clientURLs"] == [node.client_url]

    def engine_converged():
        out = mgmtctl("--endpoints", node.client_url, "members", "-o", "json")
        return out.returncode == 0 and json.loads(out.stdout)["nodes"][0]["engine"] == "converged"

    wait_for(engine_converged, 30, "mgmtctl to report the engine converged")
    table = mgmtctl("--endpoints", node.client_url, "members")
    assert table.returncode == 0, table.stderr
    for word in ("NAME", "ROLE", "PEER URLS", "CLIENT URLS", "alpha", "leader", node.peer_url,
                 node.client_url, "healthy", "converged"):
        assert word in table.stdout, table.stdout
    view = json.loads(mgmtctl("--endpoints", node.client_url, "members", "-o", "json").stdout)
    assert view["nodes"][0]["role"] == "leader"
    assert int(view["nodes"][0]["id"], 16) == int(members[0]["ID"])

    # drift is repaired while it runs
    (root / "a.txt").write_text("tampered")
    wait_for(lambda: (root / "a.txt").read_text() == "alpha\n", 5, "the tampered file to be repaired")

    etcds = etcd_processes_under(str(workdir))
    assert len(etcds) == 1
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=60) == 0, node.log()
    assert gone(etcds[0])  # psutil's handle: not fooled by a reused pid
    assert not etcd_processes_under(str(workdir))


def test_etcd_child_killed_is_restarted_with_its_data(make_node, workdir):
    graph = write_graph(workdir / "g.yaml", workdir / "managed")
    node = make_node()
    node.start(["yaml", graph])
    wait_for(lambda: etcd_processes_under(str(workdir)), 30, "etcd to start")
    wait_for(lambda: etcdctl(node.client_url, "put", "/probe", "kept").returncode == 0, 30, "etcd")
    first = etcd_processes_under(str(workdir))[0]
    send_signal(first, signal.SIGKILL)
    wait_for(lambda: [p for p in etcd_processes_under(str(workdir)) if p.pid != first.pid], 30,
             "a new etcd")
    got = wait_for(lambda: etcdctl(node.client_url, "get", "/probe", "--print-value-only").stdout,
                   30, "etcd to serve again")
    assert got.strip() == "kept"
    assert "etcd exited" in node.log()
    assert node.stop() == 0


def run_and_expect_error(node, *args, frontend=("empty",)) -> str:
    proc = subprocess.run(node.command(list(frontend), *args), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_port_in_use_is_one_clear_line(make_node, workdir):
    node = make_node()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", node.client_port))
        busy.listen()
        err = run_and_expect_error(node)
    assert f"127.0.0.1:{node.client_port} is already in use" in err
    assert len(err.strip().splitlines()) == 1, err


def test_missing_etcd_binary(make_node, workdir):
    err = run_and_expect_error(make_node(), "--etcd-binary", str(workdir / "no-such-etcd"))
    assert "not found" in err and "etcd-server" in err
    assert len(err.strip().splitlines()) == 1, err


def test_unwritable_prefix(make_node, workdir):
    node = make_node()
    blocker = workdir / "a-file"
    blocker.write_text("")
    node.prefix = blocker / "prefix"
    err = run_and_expect_error(node)
    assert f"cannot use prefix {node.prefix}" in err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_graph_reported_with_location_before_anything_starts(make_node, workdir):
    graph = workdir / "bad.yaml"
    graph.write_text("graph: g\nresources:\n  file:\n  - name: x\n    path: relative/path\n")
    err = run_and_expect_error(make_node(), frontend=("yaml", str(graph)))
    assert f"{graph}:5:11: file[x]: path must be absolute" in err, err
    assert not etcd_processes_under(str(workdir))


def test_missing_parent_directory_is_named(make_node, workdir):
    graph = workdir / "g.yaml"
    graph.write_text(f"""graph: g
resources:
  file:
  - name: orphan
    path: "{workdir}/nowhere/f"
    content: "x"
""")
    node = make_node()
    node.start(["yaml", str(graph)], "--converged-timeout", "1")
    assert node.proc.wait(timeout=60) == 1
    log = node.log()
    assert f"parent directory {workdir}/nowhere/ does not exist" in log
    assert "declare it as a file resource" in log
    assert not os.path.exists(workdir / "nowhere")


def test_noop_changes_nothing_and_shows_a_diff(make_node, workdir):
    root = workdir / "managed"
    root.mkdir()
    (root / "a.txt").write_text("old\n")
    graph = workdir / "g.yaml"
    graph.write_text(f"""graph: g
resources:
  file:
  - name: a
    path: "{root}/a.txt"
    content: "alpha\\n"
""")
    node = make_node()
    node.start(["yaml", str(graph)], "--converged-timeout", "1", "--noop")
    assert node.proc.wait(timeout=60) == 0, node.log()
    assert (root / "a.txt").read_text() == "old\n"
    assert "-old" in node.log() and "+alpha" in node.log()


def test_help_explains_the_run_command():
    out = subprocess.run([MGMTD, "run", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for flag in ("--hostname", "--prefix", "--client-urls", "--server-urls", "--converged-timeout",
                 "--noop", "yaml", "empty"):
        assert flag in out.stdout


def test_mgmtctl_unreachable_is_one_line():
    out = mgmtctl("--endpoints", "http://127.0.0.1:1", "members", timeout=30)
    assert out.returncode == 1
    assert out.stderr.startswith("mgmtctl: ") and "Traceback" not in out.stderr
