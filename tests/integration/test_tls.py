"""Mutual TLS: certificates made by `mgmtd certs`, a 3-node cluster over
https, and clients without a certificate of the cluster's CA refused."""

from __future__ import annotations

import json
import subprocess

from tests.integration.cluster import MGMTCTL, MGMTD, etcdctl, one_file_graph, wait_for


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
    for node in nodes:
        node.extra = tls_args(ca, node.name)
    urls = {n.name: (f"https://127.0.0.1:{n.client_port}", f"https://127.0.0.1:{n.peer_port}")
            for n in nodes}

    def start(node, *args):
        client, peer = urls[node.name]
        cmd = [MGMTD, "run", "--hostname", node.name, "--prefix", str(node.prefix), "--client-urls",
               client, "--server-urls", peer, *node.extra, *args]
        node.log_path = node.prefix.parent / f"{node.name}.log"
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(cmd, stdout=log, stderr=log)

    target = workdir / "applied"
    graph = one_file_graph(workdir / "g.yaml", target, "over tls")
    start(nodes[0], "--ideal-cluster-size", "3", "yaml", graph)
    for node in nodes[1:]:
        start(node, "--seeds", urls["s1"][0], "empty")
    endpoints = ",".join(u for u, _ in urls.values())
    ctl = [MGMTCTL, "--endpoints", endpoints, *tls_args(ca, "s1")]

    def voters():
        out = subprocess.run([*ctl, "members", "-o", "json"], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return []
        return sorted(n["name"] for n in json.loads(out.stdout)["nodes"]
                      if n["role"] in ("leader", "voter") and n["health"] == "healthy")

    wait_for(lambda: voters() == ["s1", "s2", "s3"], 90, "3 voters over TLS")
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
