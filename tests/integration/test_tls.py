"""Mutual TLS: certificates made by `mgmtd certs`, a 3-node cluster over
https, and clients without a certificate of the cluster's CA refused."""

from __future__ import annotations

import json
import re
import subprocess

from tests.harness import (
    MGMTCTL,
    MGMTD,
    etcdctl,
    members_view,
    one_file_graph,
    start_logged,
    voter_names,
    wait_for,
)


def certs(directory, *hosts: str) -> None:
    assert subprocess.run([MGMTD, "certs", "init", "--dir", str(directory)], capture_output=True,
                          timeout=60).returncode == 0
    for host in hosts:
        out = subprocess.run([MGMTD, "certs", "issue", host, "--dir", str(directory), "--address",
                              "127.0.0.1"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr


def tls_args(directory, host: str) -> list[str]:
    return ["--tls-ca", f"{directory}/ca.crt", "--tls-cert", f"{directory}/{host}.crt",
            "--tls-key", f"{directory}/{host}.key"]


def https_urls(node) -> tuple[str, str]:
    return f"https://127.0.0.1:{node.client_port}", f"https://127.0.0.1:{node.peer_port}"


def start_tls(node, ca, *args: str) -> None:
    client, peer = https_urls(node)
    cmd = [MGMTD, "run", "--hostname", node.name, "--prefix", str(node.prefix), "--client-urls",
           client, "--server-urls", peer, *tls_args(ca, node.name), *args]
    node.log_path = node.prefix.parent / f"{node.name}.log"
    node.proc = start_logged(cmd, node.log_path)


def as_host(ca, host: str) -> list[str]:
    """etcdctl flags that present ``host``'s certificate (etcd's user ``host``)."""
    return ["--cacert", f"{ca}/ca.crt", "--cert", f"{ca}/{host}.crt", "--key", f"{ca}/{host}.key",
            "--dial-timeout", "3s", "--command-timeout", "5s"]


def test_tls_cluster_forms_applies_and_refuses_strangers(make_node, workdir):
    ca, other = workdir / "ca", workdir / "other-ca"
    certs(ca, "s1", "s2", "s3")
    certs(other, "intruder")
    for key in ("ca.key", "s1.key", "s2.key"):
        assert (ca / key).stat().st_mode & 0o777 == 0o600
    again = subprocess.run([MGMTD, "certs", "init", "--dir", str(ca)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 1 and "not overwriting" in again.stderr

    nodes = [make_node(f"s{i}") for i in (1, 2, 3)]
    urls = {n.name: https_urls(n) for n in nodes}
    target = workdir / "applied"
    graph = one_file_graph(workdir / "g.yaml", target, "over tls")
    start_tls(nodes[0], ca, "--ideal-cluster-size", "3", "yaml", graph)
    for node in nodes[1:]:
        start_tls(node, ca, "--seeds", urls["s1"][0], "empty")
    client_urls = [u for u, _ in urls.values()]
    wait_for(lambda: voter_names(members_view(client_urls, *tls_args(ca, "s1")), healthy=True)
             == {"s1", "s2", "s3"}, 90, "3 voters over TLS")
    wait_for(lambda: target.exists() and target.read_text() == "over tls", 30, "the graph applied")
    for node in nodes:
        assert "without TLS" not in node.log()

    ok = etcdctl(urls["s2"][0], "--cacert", f"{ca}/ca.crt", "--cert", f"{ca}/s2.crt", "--key",
                 f"{ca}/s2.key", "member", "list", "-w", "json")
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["members"]) == 3
    no_cert = etcdctl(urls["s1"][0], "--cacert", f"{ca}/ca.crt", "--dial-timeout", "2s",
                      "--command-timeout", "3s", "member", "list")
    assert no_cert.returncode != 0
    stranger = etcdctl(urls["s1"][0], "--cacert", f"{ca}/ca.crt", "--cert", f"{other}/intruder.crt",
                       "--key", f"{other}/intruder.key", "--dial-timeout", "2s", "--command-timeout",
                       "3s", "put", "/mgmtd/exported/s1/file/evil", "{}")
    assert stranger.returncode != 0
    plain = subprocess.run([MGMTCTL, "--endpoints", urls["s1"][0], "members"], capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert "tls: client didn't provide a certificate" in nodes[0].log() or "bad certificate" in \
        nodes[0].log() or "unknown certificate authority" in nodes[0].log()

    for node in nodes:
        node.proc.send_signal(15)
    for node in nodes:
        assert node.proc.wait(timeout=60) == 0, node.log()[-2000:]


def test_plain_urls_with_tls_are_refused(make_node, workdir):
    ca = workdir / "ca"
    certs(ca, "p1")
    node = make_node("p1")
    out = subprocess.run(node.command(["empty"], *tls_args(ca, "p1")), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "every URL must be https://" in out.stderr and "Traceback" not in out.stderr


def test_rbac_each_node_writes_only_its_own_keys(make_node, workdir):
    """With TLS, etcd auth is on: a client node gets a user of its own by asking,
    may write its own exports and no one else's, cannot change the cluster;
    servers hold root, and a demoted server loses it."""
    ca = workdir / "ca"
    certs(ca, "r1", "r2", "r3", "r9")
    r1, r2, r3 = (make_node(name) for name in ("r1", "r2", "r3"))
    shared = workdir / "shared"
    collector = workdir / "collect.yaml"
    collector.write_text(f'graph: c\nresources: {{}}\ncollect:\n- kind: file\n  pattern: "{shared}/"\n')
    exporter = workdir / "export.yaml"
    exporter.write_text(f'graph: e\nresources:\n  file:\n  - name: "@@from-r3"\n    path: "{shared}/r3"\n'
                        f'    content: "exported by a client"\n')
    shared.mkdir()
    start_tls(r1, ca, "--ideal-cluster-size", "2", "yaml", str(collector))
    seed = https_urls(r1)[0]
    start_tls(r2, ca, "--seeds", seed, "empty")
    start_tls(r3, ca, "--seeds", seed, "--no-server", "yaml", str(exporter))
    endpoints = ",".join(https_urls(n)[0] for n in (r1, r2))

    def ctl(host, *args):
        return subprocess.run([MGMTCTL, "--endpoints", endpoints, *tls_args(ca, host), *args],
                              capture_output=True, text=True, timeout=60)

    def voters() -> set[str]:
        return voter_names(members_view([endpoints], *tls_args(ca, "r1")), healthy=True)

    wait_for(lambda: voters() == {"r1", "r2"}, 90, "2 voters over TLS")
    # r3 had no etcd user: it asked for one, and its export reached r1 through etcd
    wait_for(lambda: (shared / "r3").exists(), 60, "r3's export collected by r1")
    assert "asked the cluster's leader for one" in r3.log()
    # the first etcd got its users and auth on a private port, then listened where others could
    first = re.search(r"started etcd \(pid \d+\) serving (\S+)", r1.log())
    assert first and first.group(1) != seed, r1.log()[-2000:]
    assert "created the etcd user of r3" in r1.log() + r2.log()

    def put(host, key, endpoint=seed):
        return etcdctl(endpoint, *as_host(ca, host), "put", key, "{}")

    assert put("r3", "/mgmtd/exported/r3/noop/mine").returncode == 0
    # each engine publishes its own graph ({ns}/graph/HOST); any node's certificate reads any
    shown = wait_for(lambda: (r := ctl("r3", "graph", "r1")).returncode == 0 and r, 30, "r1's graph, read by r3")
    assert 'digraph "c"' in shown.stdout and "graph c on r1" in shown.stdout
    assert 'digraph "e"' in wait_for(lambda: (r := ctl("r1", "graph", "r3")).returncode == 0 and r, 30,
                                     "r3's graph, published by a client node").stdout
    for key in ("/mgmtd/exported/r1/file/evil", "/mgmtd/hosts/r1", "/mgmtd/volunteers/r1", "/mgmtd/graph/r1",
                "/mgmtd/cluster/ideal-size", "/mgmtd/cluster/leader", "/mgmtd/nominated/r3", "/elsewhere"):
        refused = put("r3", key)
        assert refused.returncode != 0 and "permission denied" in refused.stderr, (key, refused.stderr)
    # a certificate of the cluster whose name etcd has no user for reads nothing
    stranger = etcdctl(seed, *as_host(ca, "r9"), "get", "--prefix", "/mgmtd/")
    assert stranger.returncode != 0 and "permission denied" in stranger.stderr
    # changing the cluster takes a server's certificate, with a one-line answer otherwise
    refused = ctl("r3", "set", "ideal-cluster-size", "1")
    assert refused.returncode == 1 and "permission denied" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert ctl("r3", "members").returncode == 0
    assert put("r2", "/mgmtd/exported/r1/noop/root-may").returncode == 0

    # shrink to one voter: the demoted server loses root and becomes an ordinary client
    assert ctl("r1", "set", "ideal-cluster-size", "1").returncode == 0
    wait_for(lambda: len(voters()) == 1, 60, "one voter")
    (kept,) = voters()
    demoted = "r2" if kept == "r1" else "r1"
    kept_url = https_urls(r1 if kept == "r1" else r2)[0]
    wait_for(lambda: put(demoted, f"/mgmtd/exported/{kept}/noop/x", kept_url).returncode != 0, 30,
             f"{demoted} losing root")
    assert put(demoted, f"/mgmtd/exported/{demoted}/noop/own", kept_url).returncode == 0
    assert "revoked the root role of " + demoted in r1.log() + r2.log()

    for node in (r1, r2, r3):
        node.proc.send_signal(15)
    for node in (r1, r2, r3):
        assert node.proc.wait(timeout=60) == 0, node.log()[-2000:]


def test_a_certificate_for_another_host_is_refused(make_node, workdir):
    ca = workdir / "ca"
    certs(ca, "p1", "p2")
    node = make_node("p1")
    client, peer = https_urls(node)
    cmd = [MGMTD, "run", "--hostname", "p1", "--prefix", str(node.prefix), "--client-urls", client,
           "--server-urls", peer, "--tls-ca", f"{ca}/ca.crt", "--tls-cert", f"{ca}/p2.crt", "--tls-key",
           f"{ca}/p2.key", "empty"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "is for 'p2', but --hostname is 'p1'" in out.stderr
    refused = subprocess.run([MGMTD, "certs", "issue", "mgmtd-join", "--dir", str(ca)], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1 and "reserved" in refused.stderr
