"""The graph file's reload (issue 19): a finished write reloads at once, a
write under way waits for its close (or for quiet), and a read that the next
change overtook is known as such. ``Settle`` is pure; the reloader is run on
a real directory with a reload callback that records what it read."""

from __future__ import annotations

import os
import threading

import pytest
from inotify_simple import flags as F

from mgmtd.engine.reload import QUIET_S, GraphReloader, Settle
from tests.harness import wait_for


# --- Settle: the decision ------------------------------------------------------------------
def test_nothing_happened_nothing_to_do():
    assert Settle().due_in(5.0) is None


@pytest.mark.parametrize("finish", [F.CLOSE_WRITE, F.MOVED_TO])
def test_a_finished_write_reloads_at_once(finish):
    settle = Settle(quiet=1.0)
    settle.event(F.MODIFY, 10.0)
    settle.event(finish, 10.001)
    assert settle.due_in(10.001) == 0.0


def test_a_write_under_way_waits_for_quiet_then_reloads():
    settle = Settle(quiet=1.0)
    settle.event(F.MODIFY, 10.0)
    assert settle.due_in(10.25) == pytest.approx(0.75)
    settle.event(F.MODIFY, 10.5)              # still writing: the wait starts again
    assert settle.due_in(10.75) == pytest.approx(0.75)
    assert settle.due_in(11.5) == 0.0         # a writer that keeps the file open: read it anyway


def test_vim_renames_the_file_away_then_writes_a_new_one():
    settle = Settle(quiet=1.0)
    for mask in (F.MOVED_FROM, F.CREATE, F.MODIFY):
        settle.event(mask, 10.0)
        assert settle.due_in(10.0) == pytest.approx(1.0)   # the file is missing or half there
    settle.event(F.CLOSE_WRITE, 10.01)
    assert settle.due_in(10.01) == 0.0


def test_a_deleted_file_is_read_only_after_quiet():
    settle = Settle(quiet=1.0)
    settle.event(F.DELETE, 10.0)
    assert settle.due_in(10.5) == pytest.approx(0.5)
    assert settle.due_in(11.0) == 0.0


def test_touch_alone_reloads_at_once_but_not_during_a_write():
    settle = Settle(quiet=1.0)
    settle.event(F.ATTRIB, 10.0)
    assert settle.due_in(10.0) == 0.0
    settle.take()
    settle.event(F.MODIFY, 11.0)
    settle.event(F.ATTRIB, 11.1)              # chmod in the middle of a write: still under way
    assert settle.due_in(11.1) == pytest.approx(1.0)   # (and any event starts the quiet again)


def test_a_request_reloads_at_once_unless_a_write_is_under_way_but_forced_always():
    settle = Settle(quiet=1.0)
    settle.request()
    assert settle.due_in(0.0) == 0.0
    settle.take()
    settle.event(F.MODIFY, 10.0)
    settle.request()
    assert settle.due_in(10.0) == pytest.approx(1.0)
    settle.request(forced=True)               # SIGHUP: the operator asked, now
    assert settle.due_in(10.0) == 0.0
    assert settle.take() == (True, 1)
    assert settle.due_in(10.0) is None


def test_take_clears_and_its_token_tells_later_changes():
    settle = Settle(quiet=1.0)
    settle.event(F.CLOSE_WRITE, 1.0)
    forced, token = settle.take()
    assert not forced
    assert settle.due_in(1.0) is None
    assert not settle.changed_since(token)
    settle.event(F.MODIFY, 2.0)
    assert settle.changed_since(token)


# --- GraphReloader on a real directory -----------------------------------------------------
class Recorder:
    """The reload callback: records what it read and what ``changed`` said."""

    def __init__(self, path, during=None) -> None:
        self.path = path
        self.during = during        # called between the read and the question
        self.reads: list[tuple[bytes, bool]] = []
        self.lock = threading.Lock()

    def __call__(self, forced: bool, changed) -> None:
        data = self.path.read_bytes()
        if self.during is not None:
            self.during(len(self.reads))
        overtaken = changed(False)
        with self.lock:
            self.reads.append((data, overtaken))

    def contents(self) -> list[bytes]:
        with self.lock:
            return [data for data, _ in self.reads]


@pytest.fixture
def reloader_for(tmp_path):
    started = []

    def make(recorder: Recorder, quiet: float = QUIET_S) -> GraphReloader:
        reloader = GraphReloader(str(recorder.path), recorder, quiet=quiet)
        reloader.start()
        started.append(reloader)
        return reloader

    yield make
    for reloader in started:
        reloader.stop()
        assert reloader.thread is not None and not reloader.thread.is_alive()


def test_a_half_written_file_is_not_read_until_its_writer_closes_it(tmp_path, reloader_for):
    graph = tmp_path / "g.yaml"
    graph.write_bytes(b"old\n")
    recorder = Recorder(graph)
    reloader_for(recorder, quiet=60.0)     # only the close may start the read: quiet never comes
    with open(graph, "wb") as handle:
        handle.write(b"first half ")
        handle.flush()
        os.fsync(handle.fileno())
        handle.write(b"second half\n")
    wait_for(lambda: b"first half second half\n" in recorder.contents(), 10, "the finished write read")
    assert all(data == b"first half second half\n" for data in recorder.contents())


def test_a_rename_into_place_is_read_and_other_files_are_not_watched(tmp_path, reloader_for):
    graph = tmp_path / "g.yaml"
    graph.write_bytes(b"v0\n")
    recorder = Recorder(graph)
    reloader_for(recorder)
    (tmp_path / "other").write_bytes(b"not the graph\n")
    temp = tmp_path / ".g.yaml.tmp"
    temp.write_bytes(b"v1\n")
    os.replace(temp, graph)
    wait_for(lambda: b"v1\n" in recorder.contents(), 10, "the renamed file read")


def test_a_change_during_the_read_is_reported_and_read_again(tmp_path, reloader_for):
    graph = tmp_path / "g.yaml"
    graph.write_bytes(b"v0\n")

    def overtake(reads_so_far: int) -> None:
        if reads_so_far == 0:
            graph.write_bytes(b"v2\n")      # the next write lands while v1 is being loaded

    recorder = Recorder(graph, during=overtake)
    reloader_for(recorder)
    graph.write_bytes(b"v1\n")
    wait_for(lambda: len(recorder.reads) >= 2 and recorder.reads[-1][0] == b"v2\n", 10,
             "the newer content read again")
    assert recorder.reads[0] == (b"v1\n", True)    # the first read knew it was overtaken
    assert recorder.reads[-1][1] is False


def test_a_forced_request_reloads_an_unchanged_file(tmp_path, reloader_for):
    graph = tmp_path / "g.yaml"
    graph.write_bytes(b"same\n")
    recorder = Recorder(graph)
    reloader = reloader_for(recorder)
    reloader.request(forced=True)
    wait_for(lambda: recorder.contents() == [b"same\n"], 10, "the requested reload")


def test_without_a_file_watch_only_requests_reload(tmp_path, reloader_for):
    graph = tmp_path / "g.yaml"
    graph.write_bytes(b"v0\n")
    recorder = Recorder(graph)
    reloader = GraphReloader(str(graph), recorder)
    reloader.start(watch_file=False)
    try:
        reloader.request()
        wait_for(lambda: recorder.contents() == [b"v0\n"], 10, "the requested reload")
        assert recorder.reads[0][1] is False   # nothing can overtake a read it does not watch
    finally:
        reloader.stop()
    assert not reloader.thread.is_alive()
