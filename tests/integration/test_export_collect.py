"""Export and collect through a real etcd: filters that filter, explicit
overrides, conflicts, withdrawal, churn."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import (
    etcdctl,
    file_res,
    graph_with,
    mgmtctl,
    put_export,
    start_cluster,
    wait_for,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "yaml"


def engine_record(node) -> dict:
    """The engine's state as the node's supervisor published it in its host record."""
    got = etcdctl(node.client_url, "get", f"/mgmtd/hosts/{node.name}", "--print-value-only")
    try:
        record = json.loads(got.stdout)
    except ValueError:  # not there (yet), or etcd did not answer
        return {}
    return record.get("engine") or {}


def wait_applied(node, local: int, collected: str) -> dict:
    """Waits until the node's engine has run every resource of a graph that has
    ``collected`` among its collected resources: a published state whose counts
    are of that graph (``local`` resources of its own plus the collected ones),
    each in state or failed. The graph is built from everything exported up to
    the export it collected, so whatever was exported before has been considered."""
    last: dict = {}

    def done():
        last.update(rec := engine_record(node))
        names = rec.get("collected") or []
        return rec if (collected in names and rec.get("resources") == local + len(names)
                       and rec.get("ok", 0) + rec.get("failed", 0) == rec["resources"]) else None

    try:
        return wait_for(done, 60, f"{node.name} to run a graph with {collected} collected")
    except AssertionError as err:
        raise AssertionError(f"{err}; last published: {last}\n{node.log()[-3000:]}") from None


def listing(root: Path) -> dict[str, list[str]]:
    return {d.name: sorted(p.name for p in d.iterdir()) for d in sorted(root.iterdir()) if d.is_dir()}


def test_seed_examples_give_each_host_exactly_what_it_selects(make_node, workdir):
    root = workdir / "shared"
    root.mkdir()
    graphs = {}
    for host, letter in zip(("h1", "h2", "h3", "h4", "h5"), "abcde", strict=True):
        text = (EXAMPLES / f"etcd1{letter}.yaml").read_text().replace("/tmp/mgmt", f"{root}/mgmt")
        path = workdir / f"etcd1{letter}.yaml"
        path.write_text(text)
        graphs[host] = str(path)
    nodes = start_cluster([make_node(host) for host in graphs], ideal=1, graphs=list(graphs.values()))
    expected = {
        "mgmtA": ["fA", "fromB"],
        "mgmtB": ["fB"],
        "mgmtC": ["fA", "fB", "fC", "fD", "fE"],
        "mgmtD": [],
        "mgmtE": ["fE"],
    }
    wait_for(lambda: listing(root) == expected, 90, f"the collected files {expected}, have {listing(root)}")
    # exactly the exported content, at exactly the exported path (no rewrite) unless set: asked
    assert (root / "mgmtA" / "fA").read_text() == "i am fA, exported from host A\n"
    assert (root / "mgmtA" / "fromB").read_text() == "i was exported by host B for host A\n"
    assert (root / "mgmtC" / "fD").read_text() == "i am fD, exported from host D\n"
    # and each host applied only what its own rules select (a file is there a
    # moment before its "applied" line is in the log: wait for the lines)
    by_name = {node.name: node for node in nodes}
    for host, line in (("h1", "file[fileb-for-a@h2]: applied"), ("h2", "file[fileb@h2]: applied"),
                       ("h3", "file[filed@h4]"), ("h5", "file[filee@h5]: applied")):
        wait_for(lambda host=host, line=line: line in by_name[host].log(), 30, f"{line!r} in {host}'s log")
    logs = {node.name: node.log() for node in nodes}
    assert "file[fileb-for-a@h2]: applied" in logs["h1"]
    assert "file[fileb-for-a@h2]" not in logs["h2"] and "file[fileb@h2]: applied" in logs["h2"]
    assert "file[filed@h4]" in logs["h3"] and "file[filed@h4]" not in logs["h4"]
    assert "@h2]" not in logs["h4"] and "@h3]" not in logs["h4"]
    assert "@h1]" not in logs["h5"] and "file[filee@h5]: applied" in logs["h5"]


def test_several_directories_exported_one_collected_by_pattern(make_node, workdir):
    """The graph that failed for mgmt users: one host exports files in several
    directories; another collects one directory by pattern and gets exactly
    those files, at exactly their exported paths."""
    out = workdir / "out"
    exported = "".join(file_res(f"@@{d}-{i}", f"{out}/{d}/f{i}", f"{d} {i}")
                       for d in ("web", "db", "cache") for i in range(3))
    dirs = "".join(f'  - name: {d}\n    path: "{out}/{d}/"\n' for d in ("web", "db", "cache"))
    exporter = graph_with(workdir / "e.yaml", f'  - name: out\n    path: "{out}/"\n' + exported)
    collector = graph_with(workdir / "c.yaml", f'  - name: out\n    path: "{out}/"\n' + dirs,
                           f'collect:\n- kind: file\n  pattern: "{out}/db/"\n')
    h1, _ = start_cluster([make_node("h1"), make_node("h2")], ideal=1, graphs=[collector, exporter])
    wait_for(lambda: (out / "db").is_dir() and sorted(p.name for p in (out / "db").iterdir())
             == ["f0", "f1", "f2"], 60, "the db files")
    # once all nine are in etcd, a later export collected by h1 proves it has seen them
    wait_for(lambda: len(etcdctl(h1.client_url, "get", "--prefix", "--keys-only", "/mgmtd/exported/h2/")
                         .stdout.split()) == 9, 30, "h2's nine exports in etcd")
    put_export(h1.client_url, "h9", "file", "marker", {"path": f"{out}/db/marker", "content": "last"})
    record = wait_applied(h1, 4, "h9/file/marker")
    assert sorted(record["collected"]) == ["h2/file/db-0", "h2/file/db-1", "h2/file/db-2", "h9/file/marker"]
    assert sorted(p.name for p in (out / "db").iterdir()) == ["f0", "f1", "f2", "marker"]
    assert list((out / "web").iterdir()) == [] and list((out / "cache").iterdir()) == []
    assert (out / "db" / "f1").read_text() == "db 1"
    assert "file[db-0@h2]: applied" in h1.log()
    assert "web-0@h2" not in h1.log()


def test_change_withdraw_conflict_and_exporter_restart(make_node, workdir):
    out = workdir / "out"
    out.mkdir()
    collect_all = f'collect:\n- kind: file\n  pattern: "{out}/"\n'
    g1 = graph_with(workdir / "g1.yaml", file_res("@@x", f"{out}/x", "one"))
    g2 = graph_with(workdir / "g2.yaml", file_res("@@y", f"{out}/y", "why"))
    g3 = graph_with(workdir / "g3.yaml", "    []", collect_all)
    h1, h2, h3 = start_cluster([make_node(h) for h in ("h1", "h2", "h3")], ideal=1, graphs=[g3, g1, g2])
    wait_for(lambda: (out / "x").exists() and (out / "y").exists(), 60, "x and y collected by h1")
    assert (out / "x").read_text() == "one"

    # a changed export reaches the collector through the watch
    graph_with(workdir / "g1.yaml", file_res("@@x", f"{out}/x", "two"))
    wait_for(lambda: (out / "x").read_text() == "two", 20, "the changed export applied")

    # two exporters disagree on one path: a conflict, neither applied
    graph_with(workdir / "g2.yaml", file_res("@@y", f"{out}/y", "why") + file_res("@@x2", f"{out}/x", "other"))
    wait_for(lambda: "exported differently by h2, h3" in h1.log(), 20, "the conflict reported")
    (out / "x").write_text("tampered")
    graph_with(workdir / "g2.yaml", file_res("@@y", f"{out}/y", "why") + file_res("@@x2", f"{out}/x", "two"))
    wait_for(lambda: (out / "x").read_text() == "two", 20, "identical exports applied once")

    # withdrawn: no longer managed, left as it is
    graph_with(workdir / "g2.yaml", file_res("@@x2", f"{out}/x", "two"))
    wait_for(lambda: "withdrew export" in h3.log(), 20, "h3 withdrawing y")
    (out / "y").write_text("mine now")
    listed = lambda: json.loads(mgmtctl("--endpoints", h1.client_url, "exported", "-o", "json").stdout)  # noqa: E731
    wait_for(lambda: not any(e["name"] == "y" for e in listed()), 20, "y gone from mgmtctl exported")
    assert (out / "y").read_text() == "mine now"

    # the exporter goes down: its exports stay; it comes back: nothing flaps
    before = etcdctl(h1.client_url, "get", "--prefix", "/mgmtd/exported/h2/", "-w", "json").stdout
    revisions = {kv["key"]: kv["mod_revision"] for kv in json.loads(before)["kvs"]}
    assert h2.stop() == 0
    assert (out / "x").read_text() == "two"
    (out / "x").write_text("drift while h2 is down")
    wait_for(lambda: (out / "x").read_text() == "two", 10, "repair from the stored export")
    h2.start(["yaml", str(workdir / "g1.yaml")], "--seeds", h1.client_url)
    wait_for(lambda: "graph g loaded" in h2.log().split("stopped engine")[-1], 30, "h2 back")
    # one more export: once h2 says it wrote it, it has compared x with etcd too
    graph_with(workdir / "g1.yaml", file_res("@@x", f"{out}/x", "two") + file_res("@@z", f"{out}/z", "zed"))
    wait_for(lambda: "exported file/z" in h2.log(), 30, "h2 exporting z")
    after = etcdctl(h1.client_url, "get", "--prefix", "/mgmtd/exported/h2/", "-w", "json").stdout
    after_revisions = {kv["key"]: kv["mod_revision"] for kv in json.loads(after)["kvs"]}
    assert {k: v for k, v in after_revisions.items() if k in revisions} == revisions
    assert len(after_revisions) == len(revisions) + 1

    # forget: a dead host's exports go for good
    assert h2.stop() == 0
    forgot = mgmtctl("--endpoints", h1.client_url, "forget", "h2")
    assert forgot.returncode == 0, forgot.stderr
    assert not any(e["host"] == "h2" for e in listed())


def test_churn_of_200_exports(make_node, workdir):
    out = workdir / "out"
    out.mkdir()
    collector = graph_with(workdir / "c.yaml", "    []", f'collect:\n- kind: file\n  pattern: "{out}/"\n')

    def exporter_graph(round_: int, count: int) -> str:
        body = "".join(file_res(f"@@f{i}", f"{out}/f{i}", f"r{round_}-{i}") for i in range(count))
        return graph_with(workdir / "e.yaml", body)

    h1, h2 = start_cluster([make_node("h1"), make_node("h2")], ideal=1,
                           graphs=[collector, exporter_graph(0, 200)])
    for round_, count in ((1, 150), (2, 200), (3, 120), (4, 200)):
        exporter_graph(round_, count)
    final = {f"f{i}": f"r4-{i}" for i in range(200)}

    def state():
        try:  # the engine's temporary files come and go while it writes
            return {p.name: p.read_text() for p in out.iterdir() if not p.name.startswith(".")} == final
        except FileNotFoundError:
            return False

    wait_for(state, 120, "the last round's 200 files")
    assert "Traceback" not in h1.log() + h2.log()


def test_hostile_exports_are_refused_by_the_collector(make_node, workdir):
    """What a compromised host may write under its own key (which RBAC allows)
    still cannot make a collector run a command or write outside its rule."""
    root = workdir / "shared"
    inside, outside = root / "in", root / "out"
    inside.mkdir(parents=True)
    outside.mkdir()
    (inside / "link").symlink_to(outside)
    collector = graph_with(workdir / "c.yaml", f'  - name: in\n    path: "{inside}/"\n',
                           f'collect:\n- kind: file\n  pattern: "{inside}/"\n')
    (h1,) = start_cluster([make_node("h1")], ideal=1, graphs=[collector])
    wait_for(lambda: "engine is converged" in h1.log(), 60, "h1 converged")

    def export(kind: str, name: str, params: dict) -> None:
        put_export(h1.client_url, "h2", kind, name, params)

    export("exec", "evil", {"cmd": f"touch {outside}/pwned", "shell": "/bin/sh"})
    export("file", "dotdot", {"path": f"{inside}/../out/dotdot", "content": "escaped"})
    export("file", "symlink", {"path": f"{inside}/link/through-link", "content": "escaped"})
    export("file", "elsewhere", {"path": f"{outside}/plain", "content": "escaped"})
    export("file", "ok", {"path": f"{inside}/ok", "content": "collected"})  # the last one put
    record = wait_applied(h1, 1, "h2/file/ok")
    assert (inside / "ok").read_text() == "collected"
    assert sorted(p.name for p in outside.iterdir()) == [], "something escaped the collect rule"
    log = h1.log()
    assert "evil" not in log  # kind exec is named by no rule: never even built
    # collected, but refused where it would be written (13.2: no symlink below the anchor is followed)
    assert sorted(record["collected"]) == ["h2/file/ok", "h2/file/symlink"] and record["failed"] == 1
    assert f"{inside}/link is a symbolic link: mgmtd does not write through it" in log
    assert "collect: file[dotdot] from h2: path must not contain '..'" in log
    assert "elsewhere" not in log  # outside the pattern: the rule does not select it at all


def test_a_collected_user_or_pkg_keeps_the_name_that_is_its_object(make_node, workdir):
    """Under --noop (nothing on this machine changes): a collected pkg or user
    is the exporter's pkg or user, not NAME@HOST (an invalid name)."""
    collector = workdir / "g1.yaml"
    collector.write_text("graph: g\nresources: {}\ncollect:\n- kind: user\n- kind: pkg\n")
    (h1,) = start_cluster([make_node("h1")], "--noop", ideal=1, graphs=[str(collector)])
    put_export(h1.client_url, "h2", "user", "mgmtdtestcoll", {"state": "exists"})
    put_export(h1.client_url, "h2", "pkg", "mgmtd-test-no-such-pkg", {"state": "installed"})

    def collected() -> dict:
        got = mgmtctl("--endpoints", h1.client_url, "graph", "h1", "-o", "json")
        if got.returncode != 0:
            return {}
        return {(r["kind"], r["name"]): r["collected_from"] for r in json.loads(got.stdout)["resources"]}

    wait_for(lambda: collected() == {("user", "mgmtdtestcoll"): ["h2"], ("pkg", "mgmtd-test-no-such-pkg"): ["h2"]},
             60, "h1's graph with the user and the pkg collected under their own names")
    assert "collect: " not in h1.log()   # nothing refused


def test_a_graph_watches_exports_only_while_it_collects(make_node, workdir):
    out = workdir / "out"
    out.mkdir()
    collect_all = f'collect:\n- kind: file\n  pattern: "{out}/"\n'
    local = file_res("here", f"{workdir}/here", "local")
    graph = workdir / "g.yaml"
    graph_with(graph, local)
    (h1,) = start_cluster([make_node("h1")], ideal=1, graphs=[str(graph)])
    put_export(h1.client_url, "h9", "file", "x", {"path": f"{out}/x", "content": "one"})
    wait_for(lambda: (workdir / "here").exists(), 60, "the local file applied")
    assert "watching the cluster's exports" not in h1.log()   # the graph was loaded: no watch

    # a collect rule added by a reload: the watch starts with a read of every export
    graph_with(graph, local, collect_all)
    wait_applied(h1, 1, "h9/file/x")
    assert (out / "x").read_text() == "one"

    # the rule gone: the watch stops; an export changed meanwhile is read when it comes back
    graph_with(graph, local)
    wait_for(lambda: "collects nothing: not watching" in h1.log(), 20, "the watch stopped")
    put_export(h1.client_url, "h9", "file", "x", {"path": f"{out}/x", "content": "two"})
    graph_with(graph, local, collect_all)
    wait_for(lambda: (out / "x").read_text() == "two", 20, "the change made while unwatched applied")

    # and again, with nothing changed meanwhile: collected again all the same
    graph_with(graph, local)
    wait_for(lambda: h1.log().count("collects nothing: not watching") == 2, 20, "the watch stopped again")
    wait_for(lambda: not engine_record(h1).get("collected"), 20, "x no longer collected")
    graph_with(graph, local, collect_all)
    wait_for(lambda: h1.log().count("the graph collects: watching") == 3, 20, "the watch started again")
    wait_applied(h1, 1, "h9/file/x")
