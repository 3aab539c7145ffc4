"""/metrics through the real CLI (issue 18): a 3-node cluster scraped with
prometheus_client's own parser while things happen to it (a drift repaired,
an etcd child killed), TLS that asks for a client certificate of the
cluster's CA, and a listen address in use refused in one line."""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import (
    FAST,
    GROW,
    etcd_processes_under,
    free_port,
    new_nodes,
    one_file_graph,
    send_signal,
    start_cluster,
    stop_all,
    wait_for,
    wait_settled,
)
from tests.integration.test_restore import backup_now
from tests.integration.test_tls import certs, start_tls

Samples = dict[tuple[str, tuple], float]
FILE_APPLIED = {"kind": "file", "apply": "true", "eventful": "true", "errorful": "false"}


def scrape(url: str, context: ssl.SSLContext | None = None) -> Samples:
    with urllib.request.urlopen(url, timeout=5, context=context) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape_or_none(url: str, context: ssl.SSLContext | None = None) -> Samples | None:
    try:
        return scrape(url, context)
    except (OSError, http.client.HTTPException):
        return None


def get(samples: Samples | None, name: str, **labels) -> float | None:
    return None if samples is None else samples.get((name, tuple(sorted(labels.items()))))


def wait_metric(url: str, check, what: str, timeout: float = 30, context=None) -> Samples:
    last: dict = {}

    def probe():
        last["samples"] = scrape_or_none(url, context)
        return last["samples"] if last["samples"] is not None and check(last["samples"]) else None

    try:
        return wait_for(probe, timeout, what, interval=0.2)
    except AssertionError as err:
        shown = {k: v for k, v in (last.get("samples") or {}).items() if not k[0].endswith("_created")}
        raise AssertionError(f"{err}\nlast scrape of {url}: {shown}") from None


def test_three_nodes_metrics_move_with_the_cluster(make_node, workdir):
    nodes = new_nodes(make_node, 3, "m")
    urls = []
    for node in nodes:
        port = free_port()
        node.extra = ["--prometheus", "--prometheus-listen", f"127.0.0.1:{port}"]
        urls.append(f"http://127.0.0.1:{port}/metrics")
    target = workdir / "managed"
    graph = one_file_graph(workdir / "g.yaml", target, "wanted")
    start_cluster(nodes, *FAST, ideal=3, graphs=[graph])
    wait_settled(nodes, 3, GROW)

    for url in urls:
        wait_metric(url, lambda s: get(s, "mgmtd_cluster_voters") == 3 and get(s, "mgmtd_cluster_learners") == 0
                    and get(s, "mgmtd_cluster_ideal_size") == 3 and get(s, "mgmtd_cluster_quorum_ok") == 1
                    and get(s, "mgmtd_etcd_serving") == 1, f"3 voters, ideal 3, quorum on {url}")
    wait_for(lambda: sum(get(scrape_or_none(u), "mgmtd_cluster_is_leader") or 0 for u in urls) == 1, 30,
             "exactly one node saying it is the leader")
    # growing 1 -> 3 took two learners added and promoted, by whoever led then
    changes = [scrape(u) for u in urls]
    for kind in ("add_learner", "promote"):
        assert sum(get(s, "mgmtd_cluster_membership_changes_total", kind=kind) for s in changes) >= 2, kind
    assert all(get(s, "mgmtd_cluster_leader_changes_total") >= 1 for s in changes)

    # the graph's node: its engine's counters, mgmt's names with our prefix
    wait_for(lambda: target.exists() and target.read_text() == "wanted", 30, "the graph applied")
    before = wait_metric(urls[0], lambda s: get(s, "mgmtd_resources", kind="file") == 1
                         and get(s, "mgmtd_engine_converged") == 1
                         and get(s, "mgmtd_checkapply_total", **FILE_APPLIED) >= 1
                         and get(s, "mgmtd_graph_start_time_seconds") > 0, "the engine's counters")
    assert get(before, "mgmtd_failures_total", kind="file", failure="hard") == 0
    target.write_text("changed by hand")
    wait_for(lambda: target.read_text() == "wanted", 30, "the drift repaired")
    repairs, applies = (get(before, "mgmtd_repair_seconds_count"),
                        get(before, "mgmtd_checkapply_total", **FILE_APPLIED))
    after = wait_metric(urls[0], lambda s: get(s, "mgmtd_repair_seconds_count") > repairs
                        and get(s, "mgmtd_checkapply_total", **FILE_APPLIED) > applies, "the repair counted")
    assert get(after, "mgmtd_repair_seconds_sum") > get(before, "mgmtd_repair_seconds_sum")
    assert get(after, "mgmtd_repair_seconds_bucket", le="+Inf") == get(after, "mgmtd_repair_seconds_count")

    # a voter's etcd child killed: its supervisor restarts it and counts it
    victim = nodes[1]
    assert get(scrape(urls[1]), "mgmtd_etcd_restarts_total") == 0
    (etcd,) = etcd_processes_under(str(victim.prefix))
    assert send_signal(etcd, signal.SIGKILL)
    wait_metric(urls[1], lambda s: get(s, "mgmtd_etcd_restarts_total") >= 1, "the etcd restart counted")
    # a backup taken on request resets the age on the node that took it (the leader)
    before = {url: get(scrape(url), "mgmtd_backup_last_timestamp_seconds") for url in urls}
    taken = backup_now(",".join(node.client_url for node in nodes))
    taker = next(node for node in nodes if taken.endswith(f"Z-{node.name}"))
    url = urls[nodes.index(taker)]
    after = wait_metric(url, lambda s: get(s, "mgmtd_backup_last_timestamp_seconds") > before[url]
                        and get(s, "mgmtd_backup_size_bytes") > 0, f"the backup {taken} counted")
    assert 0 <= get(after, "mgmtd_backup_age_seconds") < 120
    stop_all(nodes)
    for node in nodes:
        assert "Traceback" not in node.log()


def tls_context(ca, host: str | None, ca_file=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file or ca / "ca.crt"))
    if host is not None:
        context.load_cert_chain(str(ca / f"{host}.crt"), str(ca / f"{host}.key"))
    return context


def test_metrics_over_tls_ask_for_a_client_certificate_of_the_cluster(make_node, workdir):
    ca, other = workdir / "ca", workdir / "other-ca"
    certs(ca, "mt1", "mt2")
    certs(other, "stranger")
    secure, insecure = make_node("mt1"), make_node("mt2")
    port, plain_port = free_port(), free_port()
    start_tls(secure, ca, "--ideal-cluster-size", "1", "--prometheus", "--prometheus-listen",
              f"127.0.0.1:{port}", "empty")
    url = f"https://127.0.0.1:{port}/metrics"
    wait_metric(url, lambda s: get(s, "mgmtd_cluster_voters") == 1, "a scrape with the node's certificate",
                timeout=60, context=tls_context(ca, "mt1"))
    assert scrape(url, tls_context(ca, "mt2"))   # any certificate of the cluster's CA
    for refused in (tls_context(ca, None), tls_context(other, "stranger", ca_file=ca / "ca.crt")):
        with pytest.raises((OSError, http.client.HTTPException)):
            scrape(url, refused)
    with pytest.raises((OSError, http.client.HTTPException)):
        scrape(f"http://127.0.0.1:{port}/metrics")
    # the scrapes refused did not stall the server
    assert scrape(url, tls_context(ca, "mt1"))

    # --prometheus-insecure on loopback: plain http for a local scraper without certificates
    start_tls(insecure, ca, "--seeds", f"https://127.0.0.1:{secure.client_port}", "--no-server",
              "--prometheus", "--prometheus-insecure", "--prometheus-listen", f"127.0.0.1:{plain_port}", "empty")
    wait_metric(f"http://127.0.0.1:{plain_port}/metrics", lambda s: get(s, "mgmtd_cluster_voters") == 1,
                "a plain scrape of the insecure node", timeout=60)
    for node in (secure, insecure):
        node.proc.send_signal(signal.SIGTERM)
    for node in (secure, insecure):
        assert node.proc.wait(timeout=60) == 0, node.log()[-2000:]
        assert "Traceback" not in node.log()


def test_a_metrics_address_in_use_is_one_line(make_node, workdir):
    node = make_node()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(node.command(["empty"], "--prometheus", "--prometheus-listen", f"127.0.0.1:{port}"),
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"--prometheus-listen 127.0.0.1:{port}: cannot listen: Address already in use" in lines[0]
    assert not etcd_processes_under(str(node.prefix))
