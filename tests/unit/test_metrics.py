"""/metrics (issue 18): the engine's counters (check/apply, failures, repair
latency) as the scheduler keeps them, their trip to the supervisor as a stats
line, the supervisor's registry (cluster, restarts, backups, the engine's
counters across engine restarts) read back with prometheus_client's own
parser, and the --prometheus flags."""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mgmtd import cli, protocol
from mgmtd.cluster.model import (
    AddLearner,
    Assessment,
    Decision,
    Member,
    Outcome,
    Promote,
    Quorum,
    RemovalCause,
    RemoveMember,
    Result,
)
from mgmtd.engine.stats import EngineStats, Histogram
from mgmtd.resources.base import Meta
from mgmtd.supervisor.metrics import Metrics
from mgmtd.urls import parse_listen
from tests.harness import wait_for
from tests.unit.test_scheduler import Background, Probe, Recorder, graph_of, run


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    """Every sample as a scraper sees it: (name, sorted labels) -> value."""
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: Metrics, name: str, **labels) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def checkapply(stats: protocol.EngineStats) -> dict[tuple, int]:
    return {row[:4]: row[4] for row in stats.checkapply}


# --- the engine's side ----------------------------------------------------------------------

def test_scheduler_counts_check_applies_with_mgmts_labels_and_failures():
    rec = Recorder()
    flaky = Probe("flaky", rec, fail=1, meta=Meta(retry=1, delay=10))
    broken = Probe("broken", rec, fail=5, meta=Meta(retry=0))
    quiet = Probe("quiet", rec, changes=0)
    rc, sched = run(graph_of([flaky, broken, quiet]))
    assert rc == 1
    stats = sched.stats.snapshot()
    counts = checkapply(stats)
    # flaky: failed once (soft), then changed; broken: failed with no retry (hard); quiet: in state
    assert counts[("probe", True, True, True)] == 2
    assert counts[("probe", True, True, False)] == 1
    assert counts[("probe", True, False, False)] == 1
    assert sum(counts.values()) == 4
    assert {row[:2]: row[2] for row in stats.failures} == {("probe", "soft"): 1, ("probe", "hard"): 1}
    assert stats.failing == (("probe", "hard", 1),)   # flaky recovered, broken did not


def test_noop_counts_as_mgmt_does_apply_false():
    rec = Recorder()
    _, sched = run(graph_of([Probe("quiet", rec, meta=Meta(noop=True))]))
    assert checkapply(sched.stats.snapshot()) == {("probe", False, True, False): 1}


def test_a_repaired_drift_is_one_repair_latency_and_an_own_event_is_none():
    rec = Recorder()
    probe = Probe("p", rec)
    bg = Background(graph_of([probe]))
    try:
        wait_for(lambda: len(rec.applied("p")) == 1, 5, "the first apply")
        wait_for(lambda: bg.summaries and bg.summaries[-1].pending == 0 and bg.sched.in_flight == 0, 5,
                 "settled")
        # an event that finds the resource in state (e.g. its own write) is no repair
        bg.sched.poke(probe.key)
        wait_for(lambda: len(rec.of("p")) == 2, 5, "the check after the event")
        assert bg.sched.stats.snapshot().repair.counts == protocol.Buckets().counts
        probe.changes = 1   # drift by hand
        bg.sched.poke(probe.key)
        wait_for(lambda: sum(bg.sched.stats.snapshot().repair.counts) == 1, 5, "the repair counted")
        repair = bg.sched.stats.snapshot().repair
        assert 0 < repair.sum < 5
    finally:
        bg.stop()


def test_histogram_buckets_are_less_or_equal():
    hist = Histogram()
    for seconds in (0.001, 0.0011, 100.0):
        hist.observe(seconds)
    counts = hist.frozen().counts
    assert counts[0] == 1 and counts[1] == 1 and counts[-1] == 1
    assert hist.frozen().sum == pytest.approx(100.0021)


def test_stats_line_round_trip():
    stats = EngineStats()
    stats.checked("file", True, True, False)
    stats.failed(("file", "a"), "file", "soft")
    stats.repaired(0.02)
    stats.graph_started(["file", "file", "exec"])
    stats.exports_published(2)
    stats.exports_synced(0.003)
    stats.collect_taken(4, 0.01)
    sent = stats.snapshot()
    assert protocol.parse_line(sent.to_line()) == sent
    assert sent.resources == (("exec", 1), ("file", 2))
    assert protocol.parse_line('{"type": "stats", "checkapply": 3}') is None
    assert protocol.parse_line('{"type": "stats", "repair": {"counts": [1], "sum": 0}}') is None


# --- the supervisor's registry ---------------------------------------------------------------

def member(name: str, learner: bool = False) -> Member:
    return Member(hash(name) & 0xFFFF, name, (), (), learner, True, None, True)


def assessment(leader: str = "a", is_leader: bool = True, reachable: bool = True, healthy: int = 3,
               learners: int = 0) -> Assessment:
    members = tuple(member(n) for n in "abc") + tuple(member(f"l{i}", True) for i in range(learners))
    return Assessment(now=0.0, self_host="a", ideal_size=3, members=members, volunteers=(), nominations=(),
                      failed_hosts=frozenset(), grace_period=10, learner_deadline=30, reachable=reachable,
                      leader=leader, is_leader=is_leader, quorum=Quorum(3, healthy, healthy))


def test_cluster_gauges_leader_changes_and_membership_changes_by_kind():
    metrics = Metrics()
    metrics.cluster_round(assessment(learners=1), Decision(), serving=True)
    assert value(metrics, "mgmtd_cluster_voters") == 3
    assert value(metrics, "mgmtd_cluster_learners") == 1
    assert value(metrics, "mgmtd_cluster_ideal_size") == 3
    assert value(metrics, "mgmtd_cluster_is_leader") == 1
    assert value(metrics, "mgmtd_cluster_quorum_ok") == 1
    assert value(metrics, "mgmtd_cluster_leader_changes_total") == 1
    done = Decision(outcomes=(
        Outcome(AddLearner("d", ()), Result.DONE), Outcome(Promote(1, "d"), Result.NOT_YET),
        Outcome(RemoveMember(2, "c", RemovalCause.DEAD), Result.DONE)))
    metrics.cluster_round(assessment(healthy=1), done, serving=True)
    assert value(metrics, "mgmtd_cluster_leader_changes_total") == 1   # same leader
    assert value(metrics, "mgmtd_cluster_quorum_ok") == 0
    assert value(metrics, "mgmtd_cluster_membership_changes_total", kind="add_learner") == 1
    assert value(metrics, "mgmtd_cluster_membership_changes_total", kind="promote") == 0
    assert value(metrics, "mgmtd_cluster_membership_changes_total", kind="remove") == 1
    follower = dataclasses.replace(assessment(leader="b", is_leader=False), quorum=None)  # not probed
    metrics.cluster_round(follower, Decision(), serving=False)
    assert value(metrics, "mgmtd_cluster_quorum_ok") == 1   # its linearizable reads were answered
    assert value(metrics, "mgmtd_cluster_leader_changes_total") == 2
    assert value(metrics, "mgmtd_cluster_is_leader") == 0
    assert value(metrics, "mgmtd_etcd_serving") == 0
    cut_off = dataclasses.replace(assessment(reachable=False, leader="", is_leader=False), quorum=None)
    metrics.cluster_round(cut_off, Decision(), serving=False)
    assert value(metrics, "mgmtd_cluster_reachable") == 0
    assert value(metrics, "mgmtd_cluster_quorum_ok") == 0
    assert value(metrics, "mgmtd_cluster_voters") == 3   # the last known, not 0


def test_backup_metrics_before_and_after_the_first_backup():
    now = [1000.0]
    metrics = Metrics(wall=lambda: now[0])
    assert value(metrics, "mgmtd_backup_age_seconds") == math.inf
    assert value(metrics, "mgmtd_backup_size_bytes") == 0
    assert value(metrics, "mgmtd_backup_last_timestamp_seconds") == 0
    metrics.backup_taken(4096, 990.0)
    assert value(metrics, "mgmtd_backup_age_seconds") == 10
    assert value(metrics, "mgmtd_backup_size_bytes") == 4096
    assert value(metrics, "mgmtd_backup_last_timestamp_seconds") == 990
    now[0] = 1500.0
    assert value(metrics, "mgmtd_backup_age_seconds") == 510
    metrics.backup_taken(8192, 1499.0)   # a new backup resets the age
    assert value(metrics, "mgmtd_backup_age_seconds") == 1


def engine_stats(applied: int, repairs: int, kinds=("file",)) -> protocol.EngineStats:
    stats = EngineStats()
    for _ in range(applied):
        stats.checked("file", True, True, False)
    for _ in range(repairs):
        stats.repaired(0.03)
    stats.graph_started(kinds)
    return stats.snapshot()


def test_engine_counters_add_up_across_engine_restarts_and_late_lines_are_dropped():
    metrics = Metrics()
    labels = {"kind": "file", "apply": "true", "eventful": "true", "errorful": "false"}
    assert value(metrics, "mgmtd_repair_seconds_count") == 0
    metrics.engine_stats(1, engine_stats(3, 1))
    assert value(metrics, "mgmtd_checkapply_total", **labels) == 3
    # mgmt's InitKindMetrics: every label combination of a kind is there from the start
    assert value(metrics, "mgmtd_checkapply_total", **{**labels, "errorful": "true"}) == 0
    assert value(metrics, "mgmtd_failures_total", kind="file", failure="hard") == 0
    metrics.engine_stats(2, engine_stats(2, 1, kinds=("file", "exec")))  # a restarted engine counts from 0
    metrics.engine_stats(1, engine_stats(9, 9))                          # a late line of the old one
    assert value(metrics, "mgmtd_checkapply_total", **labels) == 5
    assert value(metrics, "mgmtd_repair_seconds_count") == 2
    assert value(metrics, "mgmtd_repair_seconds_bucket", le="0.05") == 2
    assert value(metrics, "mgmtd_repair_seconds_bucket", le="0.025") == 0
    assert value(metrics, "mgmtd_repair_seconds_sum") == pytest.approx(0.06)
    assert value(metrics, "mgmtd_resources", kind="exec") == 1   # gauges: the running engine's
    metrics.engine_stats(2, engine_stats(4, 1))
    assert value(metrics, "mgmtd_checkapply_total", **labels) == 7


def test_converged_and_restart_counters():
    metrics = Metrics()
    metrics.engine_state("converged")
    metrics.etcd_restarted()
    metrics.engine_restarted()
    assert value(metrics, "mgmtd_engine_converged") == 1
    assert value(metrics, "mgmtd_etcd_restarts_total") == 1
    assert value(metrics, "mgmtd_engine_restarts_total") == 1
    metrics.engine_state("converging")
    assert value(metrics, "mgmtd_engine_converged") == 0


def test_two_registries_do_not_share_anything():
    a, b = Metrics(), Metrics()
    a.etcd_restarted()
    assert value(a, "mgmtd_etcd_restarts_total") == 1 and value(b, "mgmtd_etcd_restarts_total") == 0


# --- flags ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9233", ("127.0.0.1", 9233)), (":9233", ("0.0.0.0", 9233)), ("[::1]:80", ("::1", 80)),
    ("localhost:1", ("localhost", 1)),
])
def test_listen_addresses(text, expected):
    assert parse_listen("--prometheus-listen", text) == expected


@pytest.mark.parametrize("text,problem", [
    ("9233", "no port"), ("127.0.0.1:x", "not a number"), ("127.0.0.1:70000", "not a number from 1"),
    ("example.com:9233", "IP address (or localhost)"), ("::1:9233", "goes in brackets"),
])
def test_bad_listen_addresses(text, problem):
    with pytest.raises(ValueError, match="--prometheus-listen") as err:
        parse_listen("--prometheus-listen", text)
    assert problem in str(err.value)


def run_args(*flags: str) -> argparse.Namespace:
    args = cli.build_parser().parse_args(["run", "--hostname", "h1", *flags, "empty"])
    cli.check_input(args, "h1")
    return args


def test_prometheus_flags(monkeypatch, tmp_path):
    for name in ("MGMTD_PROMETHEUS", "MGMTD_PROMETHEUS_LISTEN", "MGMTD_PROMETHEUS_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    assert run_args("--prometheus").prometheus_listen == ("127.0.0.1", 9233)   # mgmt's default
    assert run_args("--prometheus", "--prometheus-listen", "[::1]:9000").prometheus_listen == ("::1", 9000)
    with pytest.raises(ValueError, match="--prometheus-listen: needs --prometheus"):
        run_args("--prometheus-listen", "127.0.0.1:9000")
    with pytest.raises(ValueError, match="--prometheus-insecure: only with --tls"):
        run_args("--prometheus", "--prometheus-insecure")
    tls = []
    for name in ("ca", "cert", "key"):
        (tmp_path / name).write_text("x")
        tls += [f"--tls-{name}", str(tmp_path / name)]
    with pytest.raises(ValueError, match="only on a loopback --prometheus-listen"):
        run_args("--prometheus", "--prometheus-insecure", "--prometheus-listen", "0.0.0.0:9000", *tls)
    assert run_args("--prometheus", "--prometheus-insecure", *tls).prometheus_insecure


def test_a_bad_listen_address_is_argparses_usage_and_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--prometheus", "--prometheus-listen", "nope", "empty"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "argument --prometheus-listen: 'nope': there is no port" in err[-1]
