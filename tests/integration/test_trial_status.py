"""Issue 13, what an outside trial broke: a bad or missing ideal size must not
shrink the cluster (13.3), and ``mgmtctl status`` without quorum must tell the
member that answers from the ones that do not (13.5)."""

from __future__ import annotations

import json

from tests.harness import (
    FAST,
    GROW,
    endpoints,
    etcdctl,
    mgmtctl,
    new_nodes,
    start_cluster,
    stop_all,
    tail,
    voter_names,
    wait_for,
    wait_settled,
)

KEY = "/mgmtd/cluster/ideal-size"


def status_json(urls: str) -> dict | None:
    out = mgmtctl("--endpoints", urls, "status", "-o", "json")
    return json.loads(out.stdout) if out.returncode in (0, 2) and out.stdout else None


def wait_status(urls: str, check, timeout: float, what: str, nodes) -> dict:
    seen: dict = {}

    def probe():
        summary = status_json(urls)
        seen["last"] = summary
        return summary if summary is not None and check(summary) else None

    try:
        return wait_for(probe, timeout, what, interval=0.3)
    except AssertionError as err:
        logs = "\n".join(tail(n) for n in nodes)
        raise AssertionError(f"{err}\nlast status: {seen.get('last')}\n{logs}") from None


def member_ids(urls: str) -> dict[str, tuple[int, bool]]:
    listed = etcdctl(urls, "member", "list", "-w", "json")
    assert listed.returncode == 0, listed.stderr
    members = json.loads(listed.stdout)["members"]
    return {m.get("name", ""): (int(m["ID"]), bool(m.get("isLearner"))) for m in members}


def test_bad_or_missing_ideal_size_changes_no_membership(make_node):
    nodes = start_cluster(new_nodes(make_node, 3), *FAST)
    wait_settled(nodes, 3, GROW, voters={n.name for n in nodes})
    urls = endpoints(nodes)
    before = member_ids(urls)
    assert len(before) == 3

    for change, fragment in ((("put", KEY, "banana"), "'banana'"), (("del", KEY), "is missing"),
                             (("put", KEY, "0"), "'0'")):
        done = etcdctl(urls, *change)
        assert done.returncode == 0, done.stderr
        # the leader publishes what it found after the round that planned with it: once
        # the problem shows, that round is over and any change it made would be visible
        summary = wait_status(urls, lambda s, f=fragment: f in s.get("leader_ideal_problem", ""), 20,
                              f"the leader to report the ideal size {fragment}", nodes)
        assert summary["leader_ideal_size"] == 3, summary
        assert member_ids(urls) == before, f"membership changed after {change}"
        text = mgmtctl("--endpoints", urls, "status")
        assert text.returncode == 0, text.stdout + text.stderr
        assert "ideal     PROBLEM:" in text.stdout and fragment in text.stdout, text.stdout
        assert "keeps its last valid size, 3" in text.stdout, text.stdout
        assert any(fragment in n.log() and "keeping the last valid size 3" in n.log() for n in nodes)

    # mgmtctl refuses what the leader would refuse, with one line
    refused = mgmtctl("--endpoints", urls, "set", "ideal-cluster-size", "3.0")
    assert refused.returncode == 2 and "whole number from 1 to 9" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr

    # a valid value is followed again
    out = mgmtctl("--endpoints", urls, "set", "ideal-cluster-size", "2")
    assert out.returncode == 0, out.stderr
    view = wait_settled(nodes, 2, GROW)
    summary = wait_status(urls, lambda s: not s["leader_ideal_problem"] and not s["ideal_problem"], 20,
                          "the problem to clear", nodes)
    assert summary["ideal_size"] == 2 and summary["leader_ideal_size"] == 2
    assert "PROBLEM" not in mgmtctl("--endpoints", urls, "status").stdout
    assert voter_names(view) < {n.name for n in nodes}
    stop_all(nodes)


def test_status_without_quorum_names_the_member_that_answers(make_node):
    nodes = start_cluster(new_nodes(make_node, 3), *FAST)
    wait_settled(nodes, 3, GROW, voters={n.name for n in nodes})
    survivor, *stopped = nodes
    stop_all(stopped)   # together, so the cluster cannot shrink in between: quorum is lost
    down = {n.name for n in stopped}
    urls = endpoints(nodes)
    # the survivor's etcd still answers, but knows no raft leader once an election timeout has passed
    summary = wait_status(urls, lambda s: s.get("no_leader") == [survivor.name], 20,
                          f"{survivor.name} reported as answering without a leader", nodes)
    assert summary["reachable"] == [survivor.name], summary
    assert set(summary["unreachable"]) == down, summary
    assert not summary["quorum"] and summary["healthy_voters"] == 0, summary

    out = mgmtctl("--endpoints", urls, "status")
    assert out.returncode == 2, out.stdout + out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert survivor.name in lines["reachable"] and "no raft leader" in lines["reachable"], out.stdout
    assert all(name in lines["down"] for name in down), out.stdout
    assert survivor.name not in lines["down"], out.stdout
    assert "LOST: 0 of 3 voters healthy" in out.stdout, out.stdout

    members = mgmtctl("--endpoints", urls, "members", "-o", "json")
    health = {n["name"]: n["health"] for n in json.loads(members.stdout)["nodes"]}
    assert health == {survivor.name: "no-leader", **dict.fromkeys(down, "unreachable")}, health
    stop_all([survivor])
