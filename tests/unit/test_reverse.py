"""meta.reverse: what file and pkg record before their first change, the
plan a graph makes of the records, the store on disk, and the scheduler
running a reversal once and letting it go."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from mgmtd.engine.reversal import (
    Record,
    Reversals,
    ReversalStore,
    build_reversal,
    decode,
    encode,
    make_record,
    plan,
    record_id,
)
from mgmtd.engine.scheduler import Scheduler
from mgmtd.graph import build
from mgmtd.resources.apt import Policy
from mgmtd.resources.base import Context, Meta, ResourceError
from mgmtd.resources.exec import ExecResource
from mgmtd.resources.file import Confinement, FileResource
from mgmtd.resources.pkg import reversed_state
from tests.harness import wait_for
from tests.unit.test_kind_pkg import FakeApt, fake_backend, pkg, stanza, write_status


def file(path: Path | str, reverse: bool = True, **params) -> FileResource:
    res = FileResource(str(params.pop("name", path)), {"path": str(path), **params}, Meta(reverse=reverse))
    res.validate()
    return res


# --- what file records ------------------------------------------------------------------

def test_a_file_that_was_not_there_is_reversed_to_absent(tmp_path):
    assert file(tmp_path / "new", content="x").reversal() == {"path": str(tmp_path / "new"), "state": "absent"}
    assert file(tmp_path / "no/such/dir/f", content="x").reversal()["state"] == "absent"


def test_a_changed_file_is_reversed_to_what_it_managed_of_it(tmp_path):
    target = tmp_path / "f"
    target.write_text("old\n")
    os.chmod(target, 0o600)
    st = target.stat()
    assert file(target, content="new\n", mode="0644").reversal() == {
        "path": str(target), "state": "exists", "content": "old\n", "mode": "0600"}
    # content not managed: not kept (it is not changed either)
    assert file(target, mode="0644").reversal() == {"path": str(target), "state": "exists", "mode": "0600"}
    assert file(target, owner=str(st.st_uid)).reversal()["owner"] == str(st.st_uid)
    # removed: all of it is kept, to be put back whole
    assert file(target, state="absent").reversal() == {
        "path": str(target), "state": "exists", "content": "old\n", "mode": "0600",
        "owner": str(st.st_uid), "group": str(st.st_gid)}


def test_what_cannot_be_put_back_is_an_error(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ResourceError, match="is a symbolic link, only a regular file"):
        file(tmp_path / "link", content="x").reversal()
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(ResourceError, match="not UTF-8"):
        file(tmp_path / "bin", content="x").reversal()
    assert "directory cannot be reversed" in file(f"{tmp_path}/d/").reverse_problem()
    assert "source cannot be reversed" in file(tmp_path / "s", source="/etc/hostname").reverse_problem()
    assert file(tmp_path / "f", content="x").reverse_problem() == ""
    res = ExecResource("e", {"cmd": "true"}, Meta(reverse=True))
    assert "kind exec cannot be reversed" in res.reverse_problem()
    with pytest.raises(ResourceError):
        res.reversal()


# --- what pkg records ---------------------------------------------------------------------

def test_pkg_reversed_state():
    from mgmtd.resources.dpkgdb import Installed

    there = Installed("p", "amd64", "1.0", "installed")
    offered = Policy("1.0", "2.0", {"1.0": ["file:/srv stable/main", "/var/lib/dpkg/status"],
                                    "2.0": ["file:/srv stable/main"]})
    gone = Policy("1.0", "2.0", {"1.0": ["/var/lib/dpkg/status"], "2.0": ["file:/srv stable/main"]})
    assert reversed_state(None, None) == "uninstalled"
    assert reversed_state(there, offered) == "1.0"
    assert reversed_state(there, gone) == "installed"   # its old version is offered no more
    assert reversed_state(there, None) == "installed"


def test_pkg_reversal_params(tmp_path):
    write_status(tmp_path / "status", stanza("dpkg", "1"), stanza("old", "1.0"))
    backend = fake_backend(tmp_path, FakeApt(tmp_path / "status", {"old": ["1.0", "2.0"], "new": ["1.0"]}))
    assert pkg(backend, "new", allownonfree=True).reversal() == {
        "state": "uninstalled", "allowdowngrade": False, "allowuntrusted": False,
        "allownonfree": True, "allowunsupported": False}
    assert pkg(backend, "old", state="2.0").reversal()["state"] == "1.0"
    assert pkg(backend, "old", state="2.0").reversal()["allowdowngrade"] is True


# --- records and plans ----------------------------------------------------------------------

def test_records_round_trip_and_keep_meta_but_not_reverse(tmp_path):
    res = file(tmp_path / "f", content="x")
    res.meta = Meta(reverse=True, retry=3, delay=100, sema=("a:2",))
    record = make_record(res, res.reversal())
    assert record.meta == {"retry": 3, "delay": 100, "sema": ["a:2"]}
    assert decode(encode(record)) == record
    assert record.id == record_id(("file", str(tmp_path / "f")))
    built = build_reversal(record, set())
    assert built.key == ("file", str(tmp_path / "f")) and built.state == "absent"
    assert built.meta == Meta(retry=3, delay=100, sema=("a:2",))
    assert built.reversal_of == record.id
    # a graph that uses the name for another path: the reversal takes another name
    assert build_reversal(record, {built.key}).name.endswith(" (reversal)")
    collected = file(tmp_path / "c", content="x")
    collected.confinement = Confinement(str(tmp_path), frozenset({"setid"}))
    again = build_reversal(decode(encode(make_record(collected, collected.reversal()))), set())
    assert again.confinement == collected.confinement
    for bad in (b"{}", b"[]", b'{"format": 1, "kind": "file"}', b"not json"):
        with pytest.raises(ValueError):
            decode(bad)
    with pytest.raises(ValueError, match="another object"):
        build_reversal(Record("file", "f", ("file", "/elsewhere"), {"path": "/x", "state": "absent"}), set())
    with pytest.raises(ValueError, match="no reversal"):
        build_reversal(Record("exec", "e", ("exec", "e"), {"cmd": "true"}), set())


def test_plan_runs_what_left_keeps_what_stays_and_drops_what_lost_reverse(tmp_path):
    a, b, c = (make_record(file(tmp_path / n), {"path": str(tmp_path / n), "state": "absent"})
               for n in ("a", "b", "c"))
    graph = [file(tmp_path / "b", reverse=True, name="renamed"), file(tmp_path / "c", reverse=False)]
    decided = plan([a, b, c], graph)
    assert decided.pending == [a]
    assert decided.dropped == [c]


# --- the store ------------------------------------------------------------------------------

def test_store_writes_atomically_0600_and_reports_bad_records(tmp_path):
    store = ReversalStore(str(tmp_path))
    assert store.load() == {}
    record = make_record(file(tmp_path / "f"), {"path": str(tmp_path / "f"), "state": "absent"})
    store.write(record)
    assert stat.S_IMODE(os.stat(store.path(record.id)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    (Path(store.directory) / ".x.tmp").write_text("half")           # an interrupted write
    (Path(store.directory) / "bad.json").write_text("{")
    loaded = store.load()
    assert loaded[record.id] == record
    assert isinstance(loaded["bad"], str) and set(loaded) == {record.id, "bad"}
    store.delete(record.id)
    store.delete(record.id)   # gone already: fine
    assert record.id not in store.load()


def test_before_apply_records_once_and_never_overwrites(tmp_path):
    target = tmp_path / "f"
    target.write_text("theirs")
    reversals = Reversals(ReversalStore(str(tmp_path / "prefix")))
    first = file(target, content="ours")
    reversals.before_apply(first)
    target.write_text("ours")
    reversals.before_apply(file(target, content="ours again"))   # a new instance: the record stays
    (record,) = reversals.store.load().values()
    assert record.params["content"] == "theirs"
    reversals.before_apply(file(target, reverse=False))           # nothing to record
    assert len(reversals.store.load()) == 1
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ResourceError, match="cannot record its reversal"):
        reversals.before_apply(file(tmp_path / "link", content="x"))


def test_compose_builds_pending_reversals_and_drops_records(tmp_path):
    reversals = Reversals(ReversalStore(str(tmp_path / "prefix")))
    for name in ("gone", "plain"):
        reversals.before_apply(file(tmp_path / name, content="x"))
    built = reversals.compose([file(tmp_path / "plain", reverse=False)], set())
    assert [res.full_path for res in built] == [str(tmp_path / "gone")]
    assert len(reversals.store.load()) == 1   # plain's dropped


# --- the scheduler --------------------------------------------------------------------------

def test_scheduler_runs_a_reversal_once_then_lets_it_go(tmp_path):
    target = tmp_path / "f"
    reversals = Reversals(ReversalStore(str(tmp_path / "prefix")))
    reversals.before_apply(file(target, content="x"))
    target.write_text("made")
    (reversal,) = reversals.compose([], set())
    sched = Scheduler(Context(), workers=2, reversals=reversals)
    sched.swap(build([reversal], []))
    thread = threading.Thread(target=sched.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: not target.exists(), 5, "the reversal")
        wait_for(lambda: not sched.graph.resources and not sched.status, 5, "the reversal gone from the graph")
        assert reversals.store.load() == {}
    finally:
        sched.stop()
        thread.join(5)


def test_a_reversal_in_noop_changes_nothing_and_keeps_its_record(tmp_path):
    target = tmp_path / "f"
    reversals = Reversals(ReversalStore(str(tmp_path / "prefix")), noop=True)
    reversals.before_apply(file(target, content="x"))
    target.write_text("made")
    (reversal,) = reversals.compose([], set())
    sched = Scheduler(Context(noop=True), workers=2, reversals=reversals)
    sched.swap(build([reversal], []))
    assert sched.run(converged_timeout=0.2) == 0
    assert target.read_text() == "made"
    assert len(reversals.store.load()) == 1


def test_a_file_made_of_fragments_keeps_the_content_it_replaces(tmp_path):
    # mgmt's Reversed(): content is saved "whether we specified content with
    # Content or w/ Fragments"; without it the old content would be lost
    (tmp_path / "part").write_text("new\n")
    target = tmp_path / "f"
    target.write_text("old\n")
    res = file(target, fragments=[str(tmp_path / "part")])
    assert res.reversal() == {"path": str(target), "state": "exists", "content": "old\n"}


def test_two_engines_on_one_prefix_never_run_each_others_reversals(tmp_path):
    # a `mgmtd engine` run alone takes the default prefix, the service's: it
    # would otherwise see the service's records as objects that left its graph
    # and put them all back
    import subprocess
    import sys
    prefix = str(tmp_path / "prefix")
    service = Reversals(ReversalStore(prefix))
    service.before_apply(file(tmp_path / "theirs", content="x"))
    (tmp_path / "theirs").write_text("x")
    other = subprocess.run(
        [sys.executable, "-c", "import sys; from mgmtd.engine.reversal import Reversals, ReversalStore\n"
         "print(len(Reversals(ReversalStore(sys.argv[1])).compose([], set())))", prefix],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "0"
    assert "in use by another engine" in other.stderr
    # nor does it record into them
    mine = Reversals(ReversalStore(prefix))
    with pytest.raises(ResourceError, match="in use by another engine"):
        # a second store in this process is another open file: as another engine
        mine.before_apply(file(tmp_path / "mine", content="x"))
    assert [r.identity for r in service.store.load().values()] == [("file", str(tmp_path / "theirs"))]
    service.store.release()
    assert len(mine.compose([], set())) == 1   # the first engine is gone: the records are the next's


def test_workers_recording_at_once_share_the_engines_claim(tmp_path):
    reversals = Reversals(ReversalStore(str(tmp_path / "prefix")))
    errors: list[Exception] = []
    start = threading.Barrier(8)

    def record(n: int) -> None:
        start.wait()
        try:
            reversals.before_apply(file(tmp_path / f"f{n}", content="x"))
        except ResourceError as err:
            errors.append(err)

    threads = [threading.Thread(target=record, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == [] and len(reversals.store.load()) == 8


def test_a_collected_files_reversal_stays_confined_and_drops_setid_bits(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    target = srv / "tool"
    target.write_text("#!/bin/sh\n")
    os.chmod(target, 0o4755)
    collected = file(target, state="absent")
    collected.confinement = Confinement(str(tmp_path), frozenset())
    reversal = build_reversal(make_record(collected, collected.reversal()), set())
    assert reversal.confinement == collected.confinement and reversal.mode == "4755"
    collected.check_apply(True)
    assert not target.exists()
    reversal.check_apply(True)
    assert target.read_text() == "#!/bin/sh\n" and stat.S_IMODE(target.stat().st_mode) == 0o755
    # a link swapped in below the anchor is not written through
    target.unlink()
    os.rename(srv, tmp_path / "real")
    srv.symlink_to(tmp_path / "real")
    with pytest.raises(ResourceError):
        reversal.check_apply(True)
    assert not (tmp_path / "real" / "tool").exists()
