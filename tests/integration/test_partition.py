"""A network partition, with real network namespaces: four hosts on a bridge,
one voter cut off. The majority keeps serving and repairs; the minority changes
nothing; after healing there is one cluster and no acknowledged write is lost.

Addresses live only inside namespaces this test creates (a private bridge in
its own namespace); nothing leaves the machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from tests.harness import Node, etcdctl, members_view, start_cluster, voter_names, wait_for

SUBNET = "10.231.77"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=check)


class Net:
    def __init__(self, hosts: int) -> None:
        tag = f"{os.getpid() % 100000}"
        self.hub = f"mgh{tag}"
        self.names = [f"mgn{i}x{tag}" for i in range(1, hosts + 1)]
        self.hub_ends = [f"vh{i}x{tag}" for i in range(1, hosts + 1)]
        self.created: list[str] = []

    def up(self) -> None:
        sh("ip", "netns", "add", self.hub)
        self.created.append(self.hub)
        self.exec_hub("ip", "link", "set", "lo", "up")
        self.exec_hub("ip", "link", "add", "br0", "type", "bridge")
        self.exec_hub("ip", "link", "set", "br0", "up")
        for i, (ns, hub_end) in enumerate(zip(self.names, self.hub_ends, strict=True), start=1):
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            host_end = f"vn{i}{hub_end[3:]}"
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", hub_end)
            sh("ip", "link", "set", host_end, "netns", ns)
            sh("ip", "link", "set", hub_end, "netns", self.hub)
            self.exec_in(ns, "ip", "link", "set", "lo", "up")
            self.exec_in(ns, "ip", "addr", "add", f"{SUBNET}.{i}/24", "dev", host_end)
            self.exec_in(ns, "ip", "link", "set", host_end, "up")
            self.exec_hub("ip", "link", "set", hub_end, "master", "br0")
            self.exec_hub("ip", "link", "set", hub_end, "up")

    def exec_in(self, ns: str, *args: str) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, *args)

    def exec_hub(self, *args: str) -> subprocess.CompletedProcess:
        return self.exec_in(self.hub, *args)

    def cut(self, index: int) -> None:
        self.exec_hub("ip", "link", "set", self.hub_ends[index], "down")

    def heal(self, index: int) -> None:
        self.exec_hub("ip", "link", "set", self.hub_ends[index], "up")

    def down(self) -> None:
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)


class NetNode(Node):
    namespace: str = ""

    def command(self, frontend, *args):
        return ["ip", "netns", "exec", self.namespace, *super().command(frontend, *args)]


def can_make_namespaces() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    probe = f"mgprobe{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


pytestmark = pytest.mark.skipif(not can_make_namespaces(), reason="needs root and ip netns")


def inside(ns: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns)


def healthy_voters(ns: str, endpoints: list[str]) -> set[str]:
    """The healthy voters mgmtctl sees from inside the namespace."""
    return voter_names(members_view(endpoints, wrap=inside(ns)), healthy=True)


def etcdctl_in(ns: str, endpoints: list[str], *args: str, timeout: float = 5) -> subprocess.CompletedProcess:
    return etcdctl(",".join(endpoints), "--dial-timeout", "1s", "--command-timeout", f"{int(timeout)}s",
                   *args, timeout=timeout + 10, wrap=inside(ns))


def test_partitioned_voter_is_replaced_and_nothing_acknowledged_is_lost(workdir):
    net = Net(4)
    nodes: list[NetNode] = []
    writer_stop = threading.Event()
    try:
        net.up()
        for i in range(4):
            prefix = workdir / f"p{i + 1}" / "prefix"
            prefix.parent.mkdir(parents=True)
            node = NetNode(f"p{i + 1}", prefix, 2379, 2380, address=f"{SUBNET}.{i + 1}")
            node.namespace = net.names[i]
            nodes.append(node)
        start_cluster(nodes, "--grace-period", "3", "--learner-deadline", "10")
        urls = [n.client_url for n in nodes]
        wait_for(lambda: len(healthy_voters(net.names[0], urls)) == 3, 90, "3 voters")
        view = members_view(urls, wrap=inside(net.names[0]))
        victim = next(n for n in nodes if n.name in voter_names(view, healthy=True) and n.name != view["leader"])
        majority = [n for n in nodes if n is not victim]
        majority_ns = majority[0].namespace
        majority_urls = [n.client_url for n in majority]

        acked: list[str] = []

        def writer():
            i = 0
            while not writer_stop.is_set():
                i += 1
                out = etcdctl_in(majority_ns, majority_urls, "put", f"/acked/{i:06d}", str(i), timeout=3)
                if out.returncode == 0:
                    acked.append(f"/acked/{i:06d}")
                time.sleep(0.02)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        wait_for(lambda: len(acked) >= 5, 30, "writes flowing")

        net.cut(nodes.index(victim))
        # the majority repairs: the cut-off voter is replaced by the spare
        wait_for(lambda: victim.name not in (v := healthy_voters(majority_ns, majority_urls)) and len(v) == 3,
                 90, "the majority back at 3 voters without the cut-off one")
        acked_during = len(acked)
        # the minority changes nothing: it cannot even write
        lonely = etcdctl_in(victim.namespace, [victim.client_url], "put", "/minority", "x", timeout=2)
        assert lonely.returncode != 0
        assert "added" not in victim.log() and "removed member" not in victim.log()

        net.heal(nodes.index(victim))
        wait_for(lambda: "no longer a member of the cluster" in victim.log(), 60,
                 "the healed node to learn it was removed")
        wait_for(lambda: len(acked) > acked_during + 5, 30, "writes still flowing after healing")
        writer_stop.set()
        thread.join(timeout=30)

        # one cluster: every node, the healed one included, sees the same members
        first_seen = healthy_voters(nodes[0].namespace, urls)
        wait_for(lambda: all(healthy_voters(n.namespace, urls) == first_seen for n in nodes), 30,
                 "all nodes agreeing")
        ids = etcdctl_in(victim.namespace, urls, "member", "list", "-w", "json")
        assert ids.returncode == 0
        names = sorted(m["name"] for m in json.loads(ids.stdout)["members"] if not m.get("isLearner"))
        assert set(names) == first_seen and len(names) == len(first_seen) and victim.name not in names
        got = etcdctl_in(majority_ns, majority_urls, "get", "--prefix", "/acked/", "--keys-only")
        found = {line for line in got.stdout.splitlines() if line}
        missing = [k for k in acked if k not in found]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        assert len(acked) > 20
    finally:
        writer_stop.set()
        for node in nodes:
            node.stop()
        net.down()
