"""Issue 17's language items through `mgmtd run` against its real etcd: several
kv resources on one key with skiplessthan end at the greatest value, and an
ignored top-level `remote:` is loaded with one located warning."""

from __future__ import annotations

from tests.harness import etcdctl, wait_for

STAGES = """\
graph: stages
comment: three stages of one counter, applied highest first
resources:
  kv:
  - name: stage30
    key: stage
    value: 30
    skiplessthan: true
  - name: stage20
    key: stage
    value: "20"
    skiplessthan: true
  - name: stage10
    key: stage
    value: 10
    skiplessthan: true
edges:
- from: {kind: kv, name: stage30}
  to: {kind: kv, name: stage20}
- from: {kind: kv, name: stage20}
  to: {kind: kv, name: stage10}
remote: "ssh://root@elsewhere:22"
"""


def stored(node, key: str) -> str | None:
    out = etcdctl(node.client_url, "get", "--print-value-only", key)
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def test_kv_stages_on_one_key_end_at_the_greatest(make_node, workdir):
    graph = workdir / "stages.yaml"
    graph.write_text(STAGES)
    node = make_node()
    node.start(["yaml", str(graph)])
    try:
        # the highest stage runs first: the two lower ones must leave it alone
        wait_for(lambda: "converged status is: true" in node.log(), 90, "the graph to converge")
        assert stored(node, "/mgmtd/kv/stage") == "30", node.log()
        log = node.log()
        assert "manages the same object" not in log
        # the warning names the place of `remote:`, once for the one load
        line = STAGES.splitlines().index('remote: "ssh://root@elsewhere:22"') + 1
        assert log.count(f"{graph}:{line}:1: warning: top-level key 'remote' is ignored") == 1, log
        # a lower value written by hand is raised back to the greatest
        assert etcdctl(node.client_url, "put", "/mgmtd/kv/stage", "5").returncode == 0
        wait_for(lambda: stored(node, "/mgmtd/kv/stage") == "30", 60, "the key to be raised back to 30")
    finally:
        node.stop()
