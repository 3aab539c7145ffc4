"""The cluster round publishes why it waits (issue 14): the leader's last
decision is in its host record, and ``mgmtctl status`` says it plainly."""

from __future__ import annotations

import json

from tests.harness import mgmtctl, wait_for


def status(url: str, *flags: str) -> str:
    out = mgmtctl("--endpoints", url, "status", *flags)
    return out.stdout if out.returncode == 0 else ""


def test_status_says_why_the_cluster_waits(make_node):
    node = make_node("w1")
    node.start(["empty"], "--ideal-cluster-size", "3")
    wait_for(lambda: "planner   waiting: 1/3 voters and no eligible volunteer" in status(node.client_url),
             60, "mgmtctl status to say why the cluster does not grow")
    summary = json.loads(status(node.client_url, "-o", "json"))
    assert summary["waiting"] == "1/3 voters and no eligible volunteer"
    assert node.stop() == 0
