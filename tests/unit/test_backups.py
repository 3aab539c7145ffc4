"""The pure parts of backups and restore (issue 18): retention, the
generation guard's decision, the backup directory's atomic writes and
checks, the restore's refusal and loss report, the mgmtctl-supervisor
request files, and the backup hook before membership changes."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgmtd.cluster import control
from mgmtd.cluster.act import act
from mgmtd.cluster.backups import BackupDir, BackupRecord, backup_id, check_file, parse_record
from mgmtd.cluster.etcdapi import EndpointStatus, EtcdApiError, MemberInfo
from mgmtd.cluster.generation import Mark, Sighting, newer_cluster, parse_generation, rivals
from mgmtd.cluster.model import AddLearner, Assessment, Result, Unnominate
from mgmtd.cluster.retention import Policy, parse_policy, to_delete, to_keep
from mgmtd.supervisor.preflight import lock_prefix
from mgmtd.supervisor.restore import (
    RestoreError,
    lost_writes,
    quorum_in_reach,
    quorum_within_reach,
    refusal,
    resolve,
)

HOUR, DAY = 3600.0, 86400.0


# --- retention ----------------------------------------------------------------------------
def test_policy_parsing():
    assert parse_policy("last=4,hourly=24,daily=7") == Policy(4, 24, 7, 0)
    assert parse_policy(" last=1 , weekly=2 ") == Policy(1, 0, 0, 2)
    assert parse_policy("last=2").describe() == "last=2"
    assert parse_policy("hourly=3") == Policy(1, 3, 0, 0)   # the newest is always kept
    for bad, message in [("last=0", "at least 1"), ("monthly=3", "RULE one of"),
                         ("last=x", "whole number"), ("last=-1", "negative"), ("last", "RULE=N")]:
        with pytest.raises(ValueError, match=message):
            parse_policy(bad)


def test_hourly_keeps_the_newest_of_each_hour_with_a_backup():
    base = 1_000 * DAY
    backups = [(f"b{i}", base + i * 15 * 60) for i in range(12)]   # every 15 min for 3 h
    kept = to_keep(backups, Policy(last=1, hourly=2, daily=0))
    assert kept == {"b11", "b7"}   # the newest, and the newest of the hour before it
    assert to_delete(backups, Policy(last=1, hourly=2, daily=0)) == {f"b{i}" for i in range(12)} - kept


def test_a_cluster_down_for_a_week_keeps_its_last_backups():
    backups = [(f"old{i}", 10 * DAY + i * HOUR) for i in range(30)]
    assert len(to_keep(backups, Policy(last=4, hourly=24, daily=7))) == 24  # hours with a backup, not clock hours


BACKUPS = st.lists(st.tuples(st.integers(0, 10**6).map(lambda i: f"id{i}"),
                             st.floats(0, 60 * DAY, allow_nan=False)), max_size=60,
                   unique_by=lambda b: b[0])
POLICIES = st.builds(Policy, st.integers(1, 5), st.integers(0, 30), st.integers(0, 10), st.integers(0, 5))


@settings(max_examples=300)
@given(BACKUPS, POLICIES)
def test_retention_properties(backups, policy):
    kept, deleted = to_keep(backups, policy), to_delete(backups, policy)
    ids = {b for b, _ in backups}
    assert kept | deleted == ids and not kept & deleted
    if backups:
        newest = max(backups, key=lambda b: (b[1], b[0]))[0]
        assert newest in kept
    assert len(kept) <= policy.last + policy.hourly + policy.daily + policy.weekly
    assert len(kept) >= min(len(ids), policy.last)
    if backups:   # with the clock at or after the newest backup, ``now`` changes nothing
        assert to_delete(backups, policy, max(b[1] for b in backups)) == deleted
    # applying the policy again to what it kept deletes nothing more
    assert to_delete([b for b in backups if b[0] in kept], policy) == set()


# --- the generation guard --------------------------------------------------------------------
def test_a_newer_cluster_supersedes_old_member_data():
    mine = Mark(cluster_id=0xA, generation=0)
    restored = Sighting("http://r:2379", 0xB, 1)
    assert newer_cluster(mine, [restored]) == restored
    assert newer_cluster(mine, [Sighting("http://o:2379", 0xA, 0)]) is None      # my own cluster
    assert newer_cluster(Mark(0xB, 1), [Sighting("http://o:2379", 0xA, 0)]) is None  # the old one, seen by the new
    assert newer_cluster(mine, [Sighting("http://x:2379", 0xC, 0)]) is None      # same generation: never guessed
    assert rivals(mine, [Sighting("http://x:2379", 0xC, 0)]) == [Sighting("http://x:2379", 0xC, 0)]
    # a node that never recorded its cluster id still compares generations
    assert newer_cluster(Mark(0, 0), [restored]) == restored
    # the highest generation wins
    later = Sighting("http://s:2379", 0xD, 2)
    assert newer_cluster(mine, [restored, later]) == later


def test_generation_parsing():
    assert [parse_generation(v) for v in (None, b"3", "12\n", b"x", b"-1", "٣")] == [0, 3, 12, 0, 0, 0]


# --- the backup directory ---------------------------------------------------------------------
def record_for(directory: BackupDir, name: str, size: int, digest: str, when: float = 1.0) -> BackupRecord:
    return BackupRecord(id=name, time=when, revision=7, size=size, sha256=digest, host="h1", cluster_id="ab",
                        members=3, generation=0, reason="schedule")


def test_a_backup_is_listed_only_once_whole(tmp_path):
    directory = BackupDir(str(tmp_path / "b"))
    name = backup_id(1_800_000_000.25, "h1")
    assert name == "20270115T080000250Z-h1"
    size, digest = directory.write_snapshot(name, lambda out: out.write(b"x" * 1000))
    assert size == 1000 and len(digest) == 64
    assert directory.list() == []                      # the file alone is not a backup yet
    record = record_for(directory, name, size, digest)
    directory.publish(record)
    assert directory.list() == [record] and directory.find(name) == record
    assert parse_record(record.encode()) == record
    assert check_file(directory.file(name), record) == ""
    with open(directory.file(name), "r+b") as handle:
        handle.write(b"y")
    assert "damaged" in check_file(directory.file(name), record)
    directory.delete(name)
    assert directory.list() == [] and not os.listdir(directory.path)


def test_a_snapshot_cut_short_leaves_nothing_listed(tmp_path):
    directory = BackupDir(str(tmp_path / "b"))

    def broken(out):
        out.write(b"half")
        raise OSError("connection reset")

    with pytest.raises(OSError):
        directory.write_snapshot("20260101T000000000Z-h1", broken)
    assert os.listdir(directory.path) == []
    # what a crash (no exception handler ran) leaves is removed at the next start
    (tmp_path / "b" / ".20260101T000000000Z-h1.db.tmp").write_bytes(b"half")
    # in a --backup-dir shared by several nodes, another node's backup being written is not touched
    (tmp_path / "b" / ".20260101T000000000Z-h2.db.tmp").write_bytes(b"being written")
    assert directory.remove_temporaries("h1") == [".20260101T000000000Z-h1.db.tmp"]
    assert os.listdir(directory.path) == [".20260101T000000000Z-h2.db.tmp"]
    assert directory.list() == []


def test_resolve_by_id_or_path(tmp_path):
    directory = BackupDir(str(tmp_path / "b"))
    name = "20260101T000000000Z-h1"
    size, digest = directory.write_snapshot(name, lambda out: out.write(b"data"))
    directory.publish(record_for(directory, name, size, digest))
    assert resolve(name, directory.path) == (directory.file(name), directory.find(name))
    assert resolve(directory.file(name), "/nowhere") == (directory.file(name), directory.find(name))
    plain = tmp_path / "saved.db"
    plain.write_bytes(b"x")
    assert resolve(str(plain), "/nowhere") == (str(plain), None)
    with pytest.raises(RestoreError, match="no backup 'nope'"):
        resolve("nope", directory.path)


# --- restore's decisions ---------------------------------------------------------------------------
def test_restore_is_refused_with_quorum_unless_forced():
    assert "the cluster has quorum" in refusal(quorum_present=True, force=False)
    assert refusal(quorum_present=True, force=True) == ""
    assert refusal(quorum_present=False, force=False) == ""


def test_lost_writes_are_reported_by_revision():
    assert lost_writes(98, 120) == ("writes acknowledged after revision 98 are possibly lost: this node had "
                                    "seen up to revision 120 (22 revisions are not in the snapshot; members "
                                    "that are gone may have had more)")
    assert "no write this node knew of is missing" in lost_writes(98, 98)
    assert lost_writes(98, 0) == "the snapshot holds revision 98"


# --- mgmtctl restore -> the supervisor ----------------------------------------------------------------
def test_restore_request_files(tmp_path):
    prefix = str(tmp_path)
    assert control.supervisor_pid(prefix) is None
    fd = lock_prefix(prefix)
    try:
        assert control.supervisor_pid(prefix) == os.getpid()
    finally:
        os.close(fd)
    assert control.supervisor_pid(prefix) is None
    request = control.write_request(prefix, "20260101T000000000Z-h1", force=True)
    taken = control.take_request(prefix)
    assert taken == {"id": request, "snapshot": "20260101T000000000Z-h1", "force": True}
    assert control.take_request(prefix) is None            # done once
    control.say(prefix, request, "done: ok")
    with open(control.progress_path(prefix, request)) as handle:
        assert handle.read().startswith(control.FINAL[0])


# --- the backup before a membership change ------------------------------------------------------------
class FakeApi:
    def __init__(self, calls):
        self.calls = calls

    def member_add(self, endpoint, peer_urls, learner):
        self.calls.append("member_add")

        class Added:
            id = 0x1
        return Added()


class FakeStore:
    def __init__(self, calls):
        self.calls = calls

    def nominate(self, nomination):
        self.calls.append("nominate")

    def unnominate(self, host):
        self.calls.append("unnominate")


def test_act_backs_up_before_each_membership_change_only():
    calls: list[str] = []
    assessment = Assessment(now=1.0, self_host="h1", ideal_size=3, members=(), volunteers=(), nominations=(),
                            failed_hosts=frozenset(), grace_period=10, learner_deadline=30, endpoint="http://e")
    outcomes = act(FakeApi(calls), FakeStore(calls), assessment,
                   (Unnominate("h9", "stale"), AddLearner("h2", ("http://h2:2380",))),
                   before_change=lambda action, store: calls.append(f"backup before {type(action).__name__}"))
    assert calls == ["unnominate", "backup before AddLearner", "member_add", "nominate"]
    assert [o.result for o in outcomes] == [Result.DONE, Result.DONE]


# --- is quorum lost for good? (review of issue 18) ------------------------------------------------------

def test_quorum_within_reach_counts_voters_that_answer_and_this_nodes_own_data():
    assert not quorum_within_reach(3, 1, own_waiting=False)     # the survivor alone: restore
    assert quorum_within_reach(3, 2, own_waiting=False)         # an election, or no leader for a moment
    assert quorum_within_reach(3, 1, own_waiting=True)          # starting this node gives quorum back
    assert quorum_within_reach(1, 0, own_waiting=True)          # a one-voter cluster, merely stopped
    assert not quorum_within_reach(3, 0, own_waiting=True)


class ProbeApi:
    """Member list and status as three voters a, b, c answer them (``up``)."""

    def __init__(self, up: set[str], leader: int = 0):
        self.up, self.leader = up, leader
        self.members = [MemberInfo(i, n, (f"http://{n}:2380",), (f"http://{n}:2379",))
                        for i, n in enumerate("abc", 1)]

    def _check(self, endpoint):
        if endpoint.split("//")[1].split(":")[0] not in self.up:
            raise EtcdApiError(f"{endpoint}: unavailable")

    def member_list(self, endpoint, timeout=1.0):
        self._check(endpoint)
        return 0xA, self.members

    def status(self, url, timeout=1.0):
        self._check(url)
        return EndpointStatus(url, 1, self.leader, 10, 2, "3.4")


URLS = [f"http://{n}:2379" for n in "abc"]


def test_quorum_in_reach_asks_the_members_now():
    own = ["http://a:2379"]
    # the lost-quorum case: only this node's etcd answers, without a leader
    assert not quorum_in_reach(ProbeApi({"a"}), URLS, own, True, URLS)
    # an election in progress (no leader yet) is not a lost quorum
    assert quorum_in_reach(ProbeApi({"a", "b", "c"}, leader=0), URLS, own, True, URLS)
    # mgmtd stopped here, one other voter up: starting this node gives quorum back
    assert quorum_in_reach(ProbeApi({"b"}), URLS, own, True, URLS)
    assert not quorum_in_reach(ProbeApi({"b"}), URLS, own, False, URLS)
    # nobody answers: the voters this node last knew; a one-voter cluster with its data is not lost
    assert quorum_in_reach(ProbeApi(set()), own, own, True, own)
    assert not quorum_in_reach(ProbeApi(set()), URLS, own, True, URLS)


def test_a_running_restore_asks_again_when_the_last_round_failed():
    """A round that could not read etcd (one timeout, a leader election) is no
    proof that quorum is lost: the restore asks the members itself, and a
    healthy cluster is not thrown away without --force."""
    from mgmtd.supervisor.recovery import Recovery

    recovery = Recovery.__new__(Recovery)
    recovery.sup = SimpleNamespace(
        config=SimpleNamespace(no_server=False, advertised_clients=["http://a:2379"]),
        last_round=SimpleNamespace(assessment=SimpleNamespace(reachable=False)),
        api=ProbeApi({"a", "b", "c"}, leader=1), state=SimpleNamespace(endpoints=URLS),
        loop=SimpleNamespace(endpoints=URLS), local=SimpleNamespace(has_member_data=lambda: True))
    with pytest.raises(RestoreError, match="refused: the cluster has quorum"):
        recovery.restore("20260101T000000000Z-a", False, lambda line: None)


def test_the_supervisor_takes_sigusr1_before_it_holds_the_prefix():
    """mgmtctl restore signals the pid that holds the prefix's lock: from the
    moment the lock is taken (in preflight), SIGUSR1 must be a request, never
    its default action (which ends the process)."""
    import signal

    from mgmtd.supervisor.node import Supervisor
    from mgmtd.supervisor.preflight import StartupError

    sup = Supervisor(SimpleNamespace(namespace="/mgmtd", tls=None))
    seen = {}

    def preflight():
        seen["usr1"] = signal.getsignal(signal.SIGUSR1)
        raise StartupError("stop here")

    sup.preflight = preflight
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)}
    try:
        with pytest.raises(StartupError):
            sup.run()
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
        sup.metrics.close()
    assert callable(seen["usr1"])


def test_an_offline_restore_is_not_ended_by_sigusr1(tmp_path):
    """``mgmtd restore`` holds the prefix's lock (and writes its pid there):
    a 'mgmtctl restore' meanwhile must not kill it half way."""
    import signal

    from mgmtd.supervisor.offline import restore_offline

    saved = signal.getsignal(signal.SIGUSR1)
    seen = []
    (tmp_path / "node.json").write_text("{}")
    try:
        restore_offline(str(tmp_path), "x", True, False, lambda q: True,
                        lambda line: seen.append((line, signal.getsignal(signal.SIGUSR1))))
    finally:
        signal.signal(signal.SIGUSR1, saved)
    assert seen and all(handler == signal.SIG_IGN for _, handler in seen), seen


class WatchedNotifier:
    def __init__(self):
        import threading
        self.pinged = threading.Event()

    def watchdog(self):
        self.pinged.set()


def test_systemds_watchdog_is_fed_while_a_backup_or_a_restore_blocks_the_loop(tmp_path):
    """A snapshot of a large database, its check, or a restore can hold the
    supervisor's loop longer than WatchdogSec (30 s): systemd must not kill
    the node for it (and kill it again at each restart: a due backup is taken
    first thing)."""
    from mgmtd.supervisor.recovery import Recovery

    recovery = Recovery.__new__(Recovery)
    notifier = WatchedNotifier()
    recovery.sup = SimpleNamespace(notifier=notifier, local=SimpleNamespace(serving=False),
                                   config=SimpleNamespace(prefix=str(tmp_path)), last_round=None,
                                   state=SimpleNamespace(generation=0))
    waited = []

    def blocking(*_args):
        waited.append(notifier.pinged.wait(10))
        notifier.pinged.clear()

    recovery.backups = SimpleNamespace(round=blocking, before_change=blocking)
    recovery.restore = lambda spec, force, say: blocking() or "restored"
    recovery.after_round(SimpleNamespace(assessment=SimpleNamespace(reachable=False)))
    recovery.sup.local = SimpleNamespace(serving=True, process=SimpleNamespace(client_url="http://a:2379"))
    recovery.before_change(AddLearner("h2", ("http://h2:2380",)), None)
    control.write_request(str(tmp_path), "x", False)
    recovery.restore_from_request()
    assert waited == [True, True, True]


# --- the schedule and the wall clock ---------------------------------------------------------------------
class FailingApi:
    def __init__(self):
        self.calls = 0

    def status(self, url, timeout=1.0):
        self.calls += 1
        raise EtcdApiError(f"{url}: deadline exceeded")


class NoRequests:
    def backup_request(self):
        return ""

    def backups(self):
        return []


def backups_at(tmp_path, api):
    from mgmtd.supervisor.backups import Backups
    return Backups(str(tmp_path / "b"), "h1", api, 900.0, Policy(last=1, hourly=0, daily=0))


def test_a_failed_scheduled_backup_is_not_tried_again_every_round(tmp_path):
    api = FailingApi()
    backups = backups_at(tmp_path, api)
    now = time.time()
    for tick in range(10):   # rounds every half second
        backups.round(now + tick / 2, True, "http://a:2379", NoRequests(), 3, 0)
    assert api.calls == 1 and backups.last_error
    backups.round(now + 61, True, "http://a:2379", NoRequests(), 3, 0)
    assert api.calls == 2   # tried again a minute later
    # nor before each membership change: one failed try stands for them for a while
    backups.before_change("adding h2", "http://a:2379", None, 3, 0)
    assert api.calls == 2


def test_a_clock_set_back_neither_stops_the_schedule_nor_deletes_new_backups(tmp_path):
    now = 1_800_000_000.0
    directory = BackupDir(str(tmp_path / "b"))
    ahead = backup_id(now + 10 * DAY, "h1")          # taken while the clock was ten days ahead
    size, digest = directory.write_snapshot(ahead, lambda out: out.write(b"old"))
    directory.publish(BackupRecord(id=ahead, time=now + 10 * DAY, revision=5, size=size, sha256=digest,
                                   host="h1", cluster_id="ab", members=3, generation=0, reason="schedule"))
    backups = backups_at(tmp_path, FailingApi())
    backups.start()
    assert backups.due(now)                           # not in ten days
    assert to_delete([(ahead, now + 10 * DAY), ("new", now)], Policy(last=1, hourly=0, daily=0), now) == set()
    assert to_delete([("older", now - 1), ("new", now)], Policy(last=1, hourly=0, daily=0), now) == {"older"}


# --- mgmtctl status: which backup to restore -------------------------------------------------------------
def lost_summary(**extra) -> dict:
    base = {"cluster_id": "ab", "leader": "", "healthy_voters": 0, "voters": 3, "ideal_size": 3,
            "ideal_problem": "", "leader_ideal_problem": "", "leader_ideal_size": None, "learners": 0,
            "clients": 0, "engines": {}, "readable": False, "waiting": "", "unhealthy": True,
            "reachable": ["n1"], "no_leader": ["n1"], "unreachable": ["n2", "n3"], "quorum": False}
    return {**base, **extra}


def test_status_names_a_backup_on_a_node_that_answers():
    """Quorum lost: the newest backup may be on a node that is gone (it led
    until it died); the restore line names the newest one a surviving node
    holds, and says where the newest is."""
    from mgmtd.cluster.backup_ctl import pick_backups
    from mgmtd.ctl import render_status

    records = [BackupRecord(id=f"b{i}", time=float(i), revision=i, size=10, sha256="0" * 64, host=h,
                            cluster_id="ab", members=3, generation=0, reason="schedule")
               for i, h in enumerate(["n1", "n2", "n1", "n3"])]
    newest, usable = pick_backups(records, ["n1"])
    assert (newest["id"], usable["id"]) == ("b3", "b2")
    assert pick_backups([], ["n1"]) == (None, None)
    text = render_status(lost_summary(newest_backup=newest, restorable_backup=usable))
    assert "restore   on n1: mgmtctl restore b2" in text, text
    assert "b3" in text and "n3, which does not answer" in text, text
    # none on a surviving node: the newest, and what to do about its host
    text = render_status(lost_summary(newest_backup=newest, restorable_backup=None))
    assert "restore   on n3: mgmtctl restore b3" in text and "does not answer" in text, text


def test_a_restore_raises_the_generation_above_every_one_it_can_see():
    """A plain snapshot file (no record) restored on a node that never served
    the latest cluster would otherwise get the old cluster's generation: its
    old members, back from a partition, would be rivals, not stand down."""
    from mgmtd.supervisor.restore import next_generation

    assert next_generation(0, 0, []) == 1
    assert next_generation(2, 1, []) == 3
    assert next_generation(0, 0, [Sighting("http://b:2379", 0xA, 1), Sighting("http://c:2379", 0xA, 3)]) == 4


def test_a_restored_node_does_not_stand_down_before_its_generation_is_written(monkeypatch):
    """Right after a restore the node's own etcd holds the snapshot's
    generation (the new one is written at its first reachable round). A
    forced restore of an older backup, old members still up at a higher
    generation: the guard must compare with the generation the restore
    gave, or the restored node moves its fresh data aside and rejoins the
    cluster it was meant to replace."""
    from mgmtd.supervisor import recovery as module

    class OwnApi:
        def status(self, url, timeout=1.0):
            return EndpointStatus(url, 1, 1, 10, 2, "3.4", cluster_id=0xB, revision=40)

        def get(self, url, key, timeout=1.0):
            return b"0"   # the snapshot's generation

    state = SimpleNamespace(cluster_id=0, generation=0, revision=0, restored_generation=3, save=lambda: None)
    rec = module.Recovery.__new__(module.Recovery)
    rec.sup = SimpleNamespace(local=SimpleNamespace(process=SimpleNamespace(client_url="http://a:2379")),
                              api=OwnApi(), keys=SimpleNamespace(generation="/mgmtd/cluster/generation"),
                              state=state, config=SimpleNamespace(advertised_clients=["http://a:2379"], seeds=[]),
                              last_round=None)
    rec.last_look, rec.rivals_said = 0.0, set()
    stood_down = []
    monkeypatch.setattr(module, "look_around", lambda api, urls, keys: [Sighting("http://b:2379", 0xA, 2)])
    monkeypatch.setattr(rec, "_stand_down", lambda *args, **kwargs: stood_down.append(args))
    state.endpoints = ["http://b:2379"]
    rec._guard()
    assert stood_down == []

    # the same at the next start, after 'mgmtd restore' with mgmtd stopped
    state.generation, state.cluster_id = 0, 0
    assert rec.superseded_at_start() is False and stood_down == []


def test_the_confirmation_question_ends_in_one_line_on_end_of_input(tmp_path, monkeypatch, capsys):
    """A terminal that sends end-of-file (Ctrl-D) instead of an answer: 'not
    restored', not a traceback; nothing is asked of the supervisor."""
    import io
    import sys

    from mgmtd.cluster import backup_ctl

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Tty(""))
    monkeypatch.setattr(control, "supervisor_pid", lambda prefix: 12345)
    assert backup_ctl.restore(str(tmp_path), "b1", yes=False, force=False, timeout=1) == 1
    assert "not restored" in capsys.readouterr().err
    assert not os.path.exists(control.request_path(str(tmp_path)))


def test_the_new_generation_is_on_disk_before_the_restored_data_is(tmp_path, monkeypatch):
    """A crash right after the restored data is swapped in must not leave a
    node that starts it without the new generation to write (old members
    would then be rivals, not stand down): node.json says it first; a
    restore that fails takes it back."""
    import json

    from mgmtd.supervisor import offline
    from mgmtd.supervisor.preflight import NodeState
    from mgmtd.supervisor.restore import Snapshot

    prefix = str(tmp_path)
    state = NodeState(prefix)
    state.node = {"host": "a", "peer_urls": ["http://a:2380"], "client_urls": ["http://a:2379"]}
    state.endpoints = ["http://a:2379", "http://b:2379", "http://c:2379"]
    state.save()
    monkeypatch.setattr(offline, "quorum_in_reach", lambda *args: False)
    monkeypatch.setattr(offline, "check", lambda *args: Snapshot("/x.db", None, 5))
    monkeypatch.setattr(offline, "look_around", lambda *args: [])
    on_disk = []

    def swap(*args):
        with open(os.path.join(prefix, "node.json")) as handle:
            on_disk.append(json.load(handle)["restored_generation"])

    monkeypatch.setattr(offline, "restore_data", swap)
    assert offline.restore_offline(prefix, "x", True, False, lambda q: True, lambda line: None) == 0
    assert on_disk == [1]

    def fails(*args):
        raise RestoreError("etcdctl snapshot restore failed: no space left on device")

    monkeypatch.setattr(offline, "restore_data", fails)
    assert offline.restore_offline(prefix, "x", True, False, lambda q: True, lambda line: None) == 1
    assert NodeState(prefix).restored_generation == 1   # the first restore's, still to be written


def test_mgmtctl_restore_without_the_rights_is_one_line(tmp_path, monkeypatch, capsys):
    """An operator without root on /var/lib/mgmtd (the lock, control/, the
    signal): one line that says so, not a traceback."""
    from mgmtd.cluster import backup_ctl

    def denied(prefix):
        raise PermissionError(13, "Permission denied", f"{prefix}/lock")

    monkeypatch.setattr(control, "supervisor_pid", denied)
    assert backup_ctl.restore(str(tmp_path), "b1", yes=True, force=False, timeout=1) == 1
    err = capsys.readouterr().err
    assert err.startswith("mgmtctl: ") and "Permission denied" in err and len(err.splitlines()) == 1, err

    monkeypatch.setattr(control, "supervisor_pid", lambda prefix: 2 ** 22 + 12345)   # no such process
    assert backup_ctl.restore(str(tmp_path), "b1", yes=True, force=False, timeout=1) == 1
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_mgmtd_restore_without_the_rights_is_one_line(tmp_path, monkeypatch):
    from mgmtd.supervisor import offline

    def denied(prefix):
        raise PermissionError(13, "Permission denied", f"{prefix}/lock")

    (tmp_path / "node.json").write_text("{}")
    monkeypatch.setattr(offline, "lock_prefix", denied)
    said = []
    assert offline.restore_offline(str(tmp_path), "x", True, False, lambda q: True, said.append) == 1
    assert said == [f"failed: [Errno 13] Permission denied: '{tmp_path}/lock'"]
