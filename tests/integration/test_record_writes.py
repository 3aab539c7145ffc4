"""What mgmtd's own keys cost etcd when exports change (docs/clustering.md
"Scale"): an export that no collect rule of a host matches leaves that host's
record alone, and a change of the record is one write, never a re-put of the
volunteer offer."""

from __future__ import annotations

import base64
import json

from tests.harness import etcdctl, file_res, graph_with, put_export, start_cluster, wait_for


def key_info(node, key: str) -> dict:
    """The key's value (JSON) and version, as etcd reports them ({} when missing)."""
    got = etcdctl(node.client_url, "get", key, "-w", "json")
    try:
        kvs = json.loads(got.stdout).get("kvs") or []
    except ValueError:
        return {}
    if not kvs:
        return {}
    return {"value": json.loads(base64.b64decode(kvs[0]["value"])), "version": int(kvs[0]["version"])}


def engine_state(node) -> dict:
    return (key_info(node, f"/mgmtd/hosts/{node.name}").get("value") or {}).get("engine") or {}


def test_exports_no_rule_matches_leave_the_host_record_alone(make_node, workdir):
    wanted, other = workdir / "wanted", workdir / "other"
    wanted.mkdir()
    graph = graph_with(workdir / "g.yaml", file_res("local", str(workdir / "local"), "here\\n"),
                       collect=f'collect:\n- kind: file\n  pattern: "{wanted}/"\n')
    (node,) = start_cluster([make_node("h1")], "--log-level", "debug", ideal=1, graphs=[graph])
    wait_for(lambda: engine_state(node).get("state") == "converged", 60, "h1 converged")
    record = key_info(node, "/mgmtd/hosts/h1")
    volunteer = key_info(node, "/mgmtd/volunteers/h1")

    for k in range(3):   # exports elsewhere: seen by the collector, composed into nothing
        skipped = node.log().count("none that this graph collects")
        put_export(node.client_url, "h9", "file", f"x{k}", {"path": f"{other}/x{k}", "content": "no\n"})
        wait_for(lambda skipped=skipped: node.log().count("none that this graph collects") > skipped, 30,
                 f"h1's engine to see export x{k} and keep its graph")
    assert key_info(node, "/mgmtd/hosts/h1")["version"] == record["version"], engine_state(node)

    # one it collects: the record changes (collected, converging, converged), the offer does not
    put_export(node.client_url, "h9", "file", "w", {"path": f"{wanted}/w", "content": "yes\n"})
    wait_for(lambda: (wanted / "w").exists(), 30, "the matching export collected")
    wait_for(lambda: engine_state(node).get("state") == "converged"
             and "h9/file/w" in engine_state(node).get("collected", []), 60, "h1 converged with w")
    assert key_info(node, "/mgmtd/hosts/h1")["version"] > record["version"]
    assert key_info(node, "/mgmtd/volunteers/h1")["version"] == volunteer["version"]
    assert not (other / "x0").exists()
