"""Check memos kept across engine runs (mgmtd.engine.memos) and the file
kind's use of them: what is recalled, and when an lstat is enough."""

from __future__ import annotations

import os
import time

from mgmtd.engine.memos import MemoStore, decode, encode
from mgmtd.resources.base import DEFAULT_META
from mgmtd.resources.file import FileResource
from mgmtd.resources.filesig import NS
from mgmtd.statefile import replacing


def file_res(path, content="wanted\n", **params) -> FileResource:
    res = FileResource("f", {"path": str(path), "content": content, **params}, DEFAULT_META)
    res.validate()
    return res


def settle(path) -> None:
    """Moves the file's ctime back out of reach of 'too recent' (a write of
    the same content, then the clock is what it is): waits past the bound."""
    st = os.lstat(path)
    deadline = st.st_ctime_ns + NS + NS // 10
    while time.time_ns() < deadline:
        time.sleep(0.02)


def proved(tmp_path, **params):
    """A file written by its resource, its ctime settled, proved and saved:
    (path, resource, store)."""
    path = tmp_path / "f"
    res = file_res(path, **params)
    res.check_apply(True)
    settle(path)
    res.confirm()
    store = MemoStore(str(tmp_path / "s"))
    store.save([res])
    return path, res, store


def test_encode_decode_and_damage(tmp_path) -> None:
    memos = {"file:/a": b"x" * 68, "file:/b": b"y", "file:/\udcff-not-utf8": b""}
    with replacing(str(tmp_path / "checked")) as out:
        for piece in encode(memos.items()):
            out.write(piece)
    data = (tmp_path / "checked").read_bytes()
    assert decode(data) == memos
    assert decode(data[:-1]) == {}
    assert decode(data[:20] + b"!" + data[21:]) == {}
    assert decode(b"") == {}


def test_a_written_file_is_confirmed_then_one_lstat_proves_it(tmp_path) -> None:
    path = tmp_path / "f"
    res = file_res(path)
    assert res.check_apply(True) is False            # written now
    assert not res.quick_check()                     # believed, not proved
    settle(path)
    assert res.confirm() is False and res.quick_check()
    store = MemoStore(str(tmp_path / "state"))
    store.save([res])
    assert (tmp_path / "state" / "cache" / "checked").exists()

    again = file_res(path)                           # the next run
    assert not again.quick_check()
    assert MemoStore(str(tmp_path / "state")).recall([again]) == 1
    assert again.quick_check()


def test_a_memo_of_another_content_is_not_taken(tmp_path) -> None:
    path, _, _ = proved(tmp_path)
    other = file_res(path, content="something else\n")
    assert MemoStore(str(tmp_path / "s")).recall([other]) == 0
    assert not other.quick_check()


def test_an_edit_that_puts_back_size_and_mtime_is_still_seen(tmp_path) -> None:
    path, _, _ = proved(tmp_path)
    before = os.lstat(path)
    with open(path, "r+b") as handle:
        handle.write(b"WANTED")                       # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = file_res(path)
    MemoStore(str(tmp_path / "s")).recall([again])
    assert not again.quick_check()
    assert again.check_apply(True) is False          # read, found wrong, rewritten
    assert path.read_bytes() == b"wanted\n"


def test_a_memo_file_others_could_write_is_ignored(tmp_path) -> None:
    path, _, store = proved(tmp_path)
    os.chmod(store.path, 0o666)
    assert MemoStore(str(tmp_path / "s")).recall([file_res(path)]) == 0


def test_quick_check_of_directories_and_absent_files(tmp_path) -> None:
    directory = FileResource("d", {"path": f"{tmp_path}/d/", "mode": "0750"}, DEFAULT_META)
    directory.validate()
    assert not directory.quick_check()
    directory.check_apply(True)
    assert directory.quick_check()
    os.chmod(tmp_path / "d", 0o755)
    assert not directory.quick_check()
    gone = FileResource("g", {"path": f"{tmp_path}/gone", "state": "absent"}, DEFAULT_META)
    gone.validate()
    assert gone.quick_check()
    (tmp_path / "gone").write_text("here")
    assert not gone.quick_check()


def test_save_is_skipped_when_nothing_changed(tmp_path) -> None:
    _, res, store = proved(tmp_path)
    written = os.stat(store.path).st_mtime_ns
    class Counted(list):
        iterated = 0

        def __iter__(self):
            Counted.iterated += 1
            return super().__iter__()

    store.save(Counted([res]))
    assert Counted.iterated == 0 and os.stat(store.path).st_mtime_ns == written
    res._forget()                                   # a memo changed: saved again
    store.save(Counted([res]))
    assert Counted.iterated == 1
