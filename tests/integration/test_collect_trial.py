"""What an outside trial broke in export/collect (issue 13): exports lost in a
storm of edits, SIGHUP that did not repair them, a directory equal to its
pattern refused, and hostile exports that could reach root on a collector."""

from __future__ import annotations

import base64
import json
import signal
import stat

from tests.harness import etcdctl, graph_with, put_export, wait_for, write_atomically

EXPORTS = 60


def storm_graph(generation: int) -> str:
    lines = ["graph: storm", "resources:", "  noop:", "  - name: here", "  file:"]
    for index in range(EXPORTS):
        lines += [f"  - name: \"@@e{index}\"", f"    path: \"/srv/never/e{index}\"",
                  f"    content: \"generation {generation}\\n\""]
    return "\n".join(lines) + "\n"


def exported(node, host: str) -> dict[str, str] | None:
    """The contents ``host`` exports, as etcd holds them; None when etcdctl
    could not read them in time (a loaded machine): the callers wait and ask again."""
    got = etcdctl(node.client_url, "get", "--prefix", f"/mgmtd/exported/{host}/", "-w", "json")
    if got.returncode != 0:
        return None
    kvs = json.loads(got.stdout).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"]))["params"]["content"]
            for kv in kvs}


def test_a_storm_of_edits_leaves_etcd_with_the_final_exports_and_sighup_repairs(make_node, workdir):
    graph = workdir / "storm.yaml"
    graph.write_text(storm_graph(0))
    node = make_node("h1")
    node.start(["yaml", str(graph)], "--ideal-cluster-size", "1")
    wait_for(lambda: set((exported(node, "h1") or {"": ""}).values()) == {"generation 0\n"}, 60,
             "the first exports")
    for storm in range(3):
        final = 50 * (storm + 1)
        for generation in range(final - 49, final + 1):   # 50 quick edits, no pause
            write_atomically(graph, storm_graph(generation))
        want = {f"/mgmtd/exported/h1/file/e{i}": f"generation {final}\n" for i in range(EXPORTS)}
        wait_for(lambda want=want: exported(node, "h1") == want, 60, f"etcd to hold generation {final}")

    # lost behind the engine's back (a restore, a slip of etcdctl): SIGHUP puts it back
    assert etcdctl(node.client_url, "del", "/mgmtd/exported/h1/file/e7").returncode == 0
    assert etcdctl(node.client_url, "put", "/mgmtd/exported/h1/file/e8",
                   json.dumps({"kind": "file", "name": "e8", "host": "h1",
                               "params": {"path": "/srv/never/e8", "content": "tampered\n"}})).returncode == 0
    node.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: exported(node, "h1") == want, 60, "SIGHUP to re-publish the exports")
    assert "exports re-published" in node.log()


def test_a_directory_equal_to_its_pattern_is_collected_before_its_file(make_node, workdir):
    base = workdir / "mgmtA"     # absent: the collected directory creates it
    graph = graph_with(workdir / "a.yaml",
                       f'  - name: "@@dir_a"\n    path: "{base}/"\n    state: exists\n'
                       f'  - name: "@@filea"\n    path: "{base}/fA"\n    content: "i am fA\\n"\n',
                       f'collect:\n- kind: file\n  pattern: "{base}/"\n')
    node = make_node("h1")
    node.start(["yaml", graph], "--ideal-cluster-size", "1", "--converged-timeout", "2")
    assert node.proc.wait(timeout=90) == 0, node.log()
    assert (base / "fA").read_text() == "i am fA\n"
    log = node.log()
    assert "file[dir_a@h1]: applied" in log and "file[filea@h1]: applied" in log
    assert log.index("file[dir_a@h1]: applied") < log.index("file[filea@h1]: applied")
    assert "collect:" not in log   # nothing refused


def test_hostile_exports_cannot_reach_root_on_the_collector(make_node, workdir):
    """Items 6-9: what a compromised host may write under its own key (RBAC
    allows that) must not chmod through a link, copy the collector's own files,
    plant a setuid file, or write through a link swapped in after selection."""
    inside, outside = workdir / "in", workdir / "out"
    (inside / "sub").mkdir(parents=True)
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("the collector's secret\n")
    victim.chmod(0o600)
    (inside / "link").symlink_to(victim)
    collector = graph_with(workdir / "c.yaml", f'  - name: in\n    path: "{inside}/"\n',
                           f'collect:\n- kind: file\n  pattern: "{inside}/"\n')
    node = make_node("h1")
    node.start(["yaml", collector], "--ideal-cluster-size", "1")
    wait_for(lambda: "engine is converged" in node.log(), 60, "h1 converged")

    def export(name: str, params: dict) -> None:
        put_export(node.client_url, "h2", "file", name, params)

    export("chmod-link", {"path": f"{inside}/link", "mode": "0666"})                    # 6
    export("steal", {"path": f"{inside}/stolen", "source": str(victim), "mode": "0644"})  # 7
    export("suid", {"path": f"{inside}/suid", "content": "#!/bin/sh\n", "mode": "4755"})  # 8
    export("owner", {"path": f"{inside}/owned", "content": "x", "owner": "root", "group": "root"})
    export("f", {"path": f"{inside}/sub/f", "content": "first\n"})                      # 9
    wait_for(lambda: (inside / "sub" / "f").exists(), 30, "the legitimate export applied")
    wait_for(lambda: "file[chmod-link@h2]" in node.log() and "symbolic link" in node.log(), 30,
             "the chmod through a link refused")
    log = node.log()
    assert "collect: file[steal] from h2: source (a file of this host) is refused" in log
    assert "collect: file[suid] from h2: mode 4755 has setuid" in log
    assert "collect: file[owner] from h2: owner is refused" in log
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not (inside / "stolen").exists() and not (inside / "suid").exists()
    assert not (inside / "owned").exists()

    # 9: selected while sub/ was a directory; sub becomes a link to outside, then the export changes
    (inside / "sub").rename(workdir / "old-sub")
    (inside / "sub").symlink_to(outside)
    export("f", {"path": f"{inside}/sub/f", "content": "second\n"})
    wait_for(lambda: f"{inside}/sub is a symbolic link" in node.log(), 30, "the write through a link refused")
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert victim.read_text() == "the collector's secret\n"
