"""Backups and the one-command restore (issue 18), through the real CLI:
``mgmtctl backup now``, ``mgmtctl backups``, ``mgmtctl status`` naming the
newest backup, ``mgmtctl restore`` (and ``mgmtd restore`` with the supervisor
stopped), and the generation guard that keeps old members out."""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.harness import (
    FAST,
    GROW,
    MGMTD,
    Node,
    endpoints,
    etcdctl,
    freeze_tree,
    kill_node,
    mgmtctl,
    new_nodes,
    send_signal,
    start_cluster,
    stop_all,
    tail,
    wait_for,
    wait_settled,
)

NO_SCHEDULE = ("--backup-interval", "0")   # only before changes and on request: the test knows each one
# after a restore etcd 3.4 takes about 7 s to let each new member in (its first publish
# times out while the restored leader catches it up): the production deadline, not FAST's
AFTER_RESTORE = (*FAST, "--learner-deadline", "30", *NO_SCHEDULE)


def put(urls: str, key: str, value: str) -> int:
    """One acknowledged write; its revision."""
    out = etcdctl(urls, "put", key, value, "-w", "json")
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout)["header"]["revision"])


def values(url: str, prefix: str) -> dict[str, str]:
    out = etcdctl(url, "get", "--prefix", prefix, "-w", "json")
    assert out.returncode == 0, out.stderr
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode()
            for kv in json.loads(out.stdout).get("kvs", [])}


def backup_now(urls: str) -> str:
    out = mgmtctl("--endpoints", urls, "backup", "now", timeout=150)
    assert out.returncode == 0, out.stdout + out.stderr
    match = re.match(r"backup (\S+): revision (\d+), (\d+) bytes, on (\S+)", out.stdout)
    assert match, out.stdout
    return match.group(1)


def listed(urls: str) -> dict[str, dict]:
    out = mgmtctl("--endpoints", urls, "backups", "-o", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    return {row["id"]: row for row in json.loads(out.stdout)}


def cluster_id(url: str) -> str:
    out = mgmtctl("--endpoints", url, "status", "-o", "json")
    return json.loads(out.stdout)["cluster_id"] if out.stdout.strip().startswith("{") else ""


def test_restore_after_losing_two_of_three_voters(make_node, workdir):
    """3 voters, writes counted; SIGKILL two and lose their member data; status
    names the newest backup; one mgmtctl restore on the survivor; back at 3
    voters with every write acknowledged before the backup, the later ones
    reported as possibly lost; the voter that comes back with old data stands
    down instead of starting its old member."""
    nodes = start_cluster(new_nodes(make_node, 3), *AFTER_RESTORE, ideal=3)
    urls = endpoints(nodes)
    wait_settled(nodes, 3, GROW)
    before_id = cluster_id(urls)
    acked = {f"/test/k{i:03d}": put(urls, f"/test/k{i:03d}", f"v{i}") for i in range(40)}
    backup = backup_now(urls)
    after = {f"/test/late{i:03d}": put(urls, f"/test/late{i:03d}", f"v{i}") for i in range(20)}
    backups = listed(urls)
    row = backups[backup]
    assert any(r["reason"].startswith("before adding") for r in backups.values()), backups
    assert row["members"] == 3 and row["size"] > 0 and len(row["sha256"]) == 64
    revision = row["revision"]
    assert all(r <= revision for r in acked.values()) and all(r > revision for r in after.values())
    survivor = next(n for n in nodes if n.name == row["host"])
    wiped, returning = [n for n in nodes if n is not survivor]
    assert (Path(survivor.prefix) / "backups" / f"{backup}.db").is_file()

    # two voters gone: one for good (its member data deleted), one that comes back later on its old data
    for node in (wiped, returning):
        kill_node(node)
    shutil.rmtree(Path(wiped.prefix) / "etcd")
    status = wait_for(lambda: (s := mgmtctl("--endpoints", urls, "status")).returncode == 2 and s, 60,
                      "mgmtctl status to say quorum is lost")
    assert "LOST" in status.stdout and f"newest {backup}" in status.stdout, status.stdout
    assert f"on {survivor.name}: mgmtctl restore {backup}" in status.stdout, status.stdout
    assert "on the node that holds it with 'mgmtctl restore BACKUP'" in status.stdout

    started = time.monotonic()
    out = mgmtctl("restore", backup, "--yes", "--prefix", str(survivor.prefix), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr + tail(survivor)
    assert "done:" in out.stdout and "one-member cluster" in out.stdout, out.stdout
    lost = re.search(r"writes acknowledged after revision (\d+) are possibly lost: this node had seen up to "
                     r"revision (\d+)", out.stdout)
    assert lost, out.stdout
    assert int(lost.group(1)) == revision
    assert all(r <= int(lost.group(2)) for r in after.values()), (after, out.stdout)
    assert list((Path(survivor.prefix) / "stale").iterdir()), "the old member data is kept aside"

    seen_before = returning.log().count("found etcd member data: rejoining as a server")
    for node in (wiped, returning):
        node.start(["empty"], "--seeds", survivor.client_url, *AFTER_RESTORE)
    view = wait_settled(nodes, 3, GROW * 2)
    restored_in = time.monotonic() - started
    print(f"restore to 3 healthy voters: {restored_in:.1f}s")
    assert view["cluster_id"] != before_id
    assert "belongs to cluster" in returning.log() and "without starting the old member" in returning.log()
    assert returning.log().count("found etcd member data: rejoining as a server") == seen_before
    assert list((Path(returning.prefix) / "stale").glob("*-generation-0/etcd/member"))
    data = values(survivor.client_url, "/test/")
    assert {k: data.get(k) for k in acked} == {k: f"v{int(k[-3:])}" for k in acked}
    assert not set(after) & set(data)
    gen = etcdctl(survivor.client_url, "get", "/mgmtd/cluster/generation", "--print-value-only")
    assert gen.stdout.strip() == "1"
    stop_all(nodes)


def test_restore_is_refused_with_quorum_unless_forced_and_works_offline(make_node, workdir):
    """One voter (it has quorum): mgmtctl restore is refused without --force;
    with it, the cluster is back at the backup. Then, mgmtd stopped, mgmtd
    restore does the same for the next start (refused too without --force: the
    stopped node's own data would give the cluster its quorum back)."""
    node: Node = make_node()
    node.start(["empty"], "--ideal-cluster-size", "1", *NO_SCHEDULE)
    url = node.client_url
    wait_settled([node], 1, GROW)
    put(url, "/test/before", "1")
    backup = backup_now(url)
    put(url, "/test/after", "1")
    refused = mgmtctl("restore", backup, "--yes", "--prefix", str(node.prefix), timeout=120)
    assert refused.returncode == 1 and "refused: the cluster has quorum" in refused.stdout, refused.stdout
    assert values(url, "/test/") == {"/test/before": "1", "/test/after": "1"}

    forced = mgmtctl("restore", backup, "--yes", "--force", "--prefix", str(node.prefix), timeout=300)
    assert forced.returncode == 0, forced.stdout + forced.stderr + tail(node)
    wait_settled([node], 1, GROW)
    assert values(url, "/test/") == {"/test/before": "1"}

    put(url, "/test/second", "1")
    second = backup_now(url)
    put(url, "/test/third", "1")
    stop_all([node])
    running = mgmtctl("restore", second, "--yes", "--prefix", str(node.prefix), timeout=60)
    assert running.returncode == 1 and "mgmtd restore --prefix" in running.stderr
    # stopped is not lost: this node's own member data is the whole quorum of a one-voter cluster
    kept = subprocess.run([MGMTD, "restore", "--prefix", str(node.prefix), "--yes", second],
                          capture_output=True, text=True, timeout=300)
    assert kept.returncode == 1 and "refused: the cluster has quorum" in kept.stdout, kept.stdout + kept.stderr
    offline = subprocess.run([MGMTD, "restore", "--prefix", str(node.prefix), "--yes", "--force", second],
                             capture_output=True, text=True, timeout=300)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "generation 2" in offline.stdout, offline.stdout
    assert re.search(r"writes acknowledged after revision \d+ are possibly lost", offline.stdout), offline.stdout
    node.start(["empty"], *NO_SCHEDULE)
    wait_settled([node], 1, GROW)
    assert values(url, "/test/") == {"/test/before": "1", "/test/second": "1"}
    gen = wait_for(lambda: etcdctl(url, "get", "/mgmtd/cluster/generation", "--print-value-only").stdout.strip()
                   == "2", 30, "the new generation written")
    assert gen
    stop_all([node])


def test_backups_and_restore_over_tls(make_node, workdir):
    """With mutual TLS and etcd auth on, the snapshot goes over the node's TLS
    connection; mgmtctl with a server's certificate asks for one, lists it, and
    a forced restore brings the cluster back to it, auth still on."""
    from tests.integration.test_tls import as_host, certs, https_urls, start_tls, tls_args

    ca = workdir / "ca"
    node: Node = make_node("s1")
    certs(ca, "s1")
    start_tls(node, ca, "--ideal-cluster-size", "1", *NO_SCHEDULE, "empty")
    url = https_urls(node)[0]
    ctl = ["--endpoints", url, *tls_args(ca, "s1")]
    wait_for(lambda: mgmtctl(*ctl, "status").returncode == 0, 90, "the TLS node")
    wait_for(lambda: etcdctl(url, *as_host(ca, "s1"), "put", "/mgmtd/kv/before", "1").returncode == 0, 30,
             "a write as s1")
    out = mgmtctl(*ctl, "backup", "now", timeout=150)
    assert out.returncode == 0, out.stdout + out.stderr + tail(node)
    backup = out.stdout.split()[1].rstrip(":")
    rows = json.loads(mgmtctl(*ctl, "backups", "-o", "json").stdout)
    assert [r["id"] for r in rows][-1] == backup
    assert f"newest {backup}" in mgmtctl(*ctl, "status").stdout
    assert etcdctl(url, *as_host(ca, "s1"), "put", "/mgmtd/kv/after", "1").returncode == 0
    forced = mgmtctl("restore", backup, "--yes", "--force", "--prefix", str(node.prefix), timeout=300)
    assert forced.returncode == 0, forced.stdout + forced.stderr + tail(node)
    keys = wait_for(lambda: (g := etcdctl(url, *as_host(ca, "s1"), "get", "--prefix", "/mgmtd/kv/",
                                          "--keys-only")).returncode == 0 and g.stdout, 60, "reads after restore")
    assert "/mgmtd/kv/before" in keys and "/mgmtd/kv/after" not in keys
    stranger = etcdctl(url, "--cacert", f"{ca}/ca.crt", "get", "/mgmtd/kv/before")
    assert stranger.returncode != 0   # still no way in without a certificate of the CA
    stop_all([node])


def test_an_old_voter_that_was_cut_off_stands_down_when_it_returns(make_node, workdir):
    """A voter frozen (SIGSTOP: cut off, still running) while quorum is lost and
    the survivor restores comes back running its old member: it finds the
    restored cluster at a URL it knows, stops its old etcd, keeps the data
    aside and joins the new cluster, which is back at 3 voters."""
    nodes = start_cluster(new_nodes(make_node, 3), *AFTER_RESTORE, ideal=3)
    urls = endpoints(nodes)
    wait_settled(nodes, 3, GROW)
    backup = backup_now(urls)
    survivor = next(n for n in nodes if backup.endswith(f"-{n.name}"))
    gone, frozen = [n for n in nodes if n is not survivor]
    kill_node(gone)
    shutil.rmtree(Path(gone.prefix) / "etcd")
    stopped = freeze_tree(frozen.proc.pid)
    try:
        wait_for(lambda: mgmtctl("--endpoints", survivor.client_url, "status").returncode == 2, 60,
                 "quorum lost")
        out = mgmtctl("restore", backup, "--yes", "--prefix", str(survivor.prefix), timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr + tail(survivor)
        wait_for(lambda: etcdctl(survivor.client_url, "get", "/mgmtd/cluster/generation",
                                 "--print-value-only").stdout.strip() == "1", 30, "generation 1 written")
    finally:
        for proc in stopped:
            send_signal(proc, signal.SIGCONT)
    wait_for(lambda: "old member data kept in" in frozen.log(), 60, f"{frozen.name} to stand down")
    assert "stopping etcd, moving the data aside and rejoining as a volunteer" in frozen.log()
    assert list((Path(frozen.prefix) / "stale").glob("*-generation-0/etcd/member"))
    gone.start(["empty"], "--seeds", survivor.client_url, *AFTER_RESTORE)
    view = wait_settled(nodes, 3, GROW * 2)
    assert {n["name"] for n in view["nodes"] if n["role"] in ("leader", "voter")} == {n.name for n in nodes}
    stop_all(nodes)
