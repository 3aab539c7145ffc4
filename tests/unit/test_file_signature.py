"""A ``file`` with content re-checked by one lstat: the content is read only
when the file's signature (inode, size, mtime, ctime, mode, owner) moved since
it was last found right, and a signature is trusted only once it is old
enough that a write in the same timestamp tick cannot hide behind it."""

from __future__ import annotations

import os

import pytest

from mgmtd.resources import file as filemod
from mgmtd.resources.file import FileResource
from mgmtd.resources.fsplace import Place


def make(path, content: str) -> FileResource:
    res = FileResource("f", {"path": str(path), "content": content})
    res.validate()
    return res


@pytest.fixture
def reads(monkeypatch):
    """Counts the reads of a file's content."""
    count = {"n": 0}
    real = Place.read

    def counting(self):
        count["n"] += 1
        return real(self)

    monkeypatch.setattr(Place, "read", counting)
    return count


@pytest.fixture
def later(monkeypatch):
    """The clock 10 s ahead: every ctime on disk is old enough to be trusted."""
    real = filemod.time.time_ns
    monkeypatch.setattr(filemod.time, "time_ns", lambda: real() + 10 * 10**9)


def test_second_check_is_one_stat(tmp_path, reads, later):
    path = tmp_path / "f"
    path.write_text("hello\n")
    res = make(path, "hello\n")
    assert res.check_apply(True) is True
    assert reads["n"] == 1
    assert res.check_apply(True) is True
    assert reads["n"] == 1   # same signature: not read again


def test_fresh_file_is_always_read(tmp_path, reads):
    path = tmp_path / "f"
    path.write_text("hello\n")
    res = make(path, "hello\n")
    assert res.check_apply(True) and res.check_apply(True)
    assert reads["n"] == 2   # written just now: the signature is not trusted yet


def test_same_size_edit_with_mtime_put_back_is_seen(tmp_path, reads, later):
    path = tmp_path / "f"
    path.write_text("hello\n")
    res = make(path, "hello\n")
    assert res.check_apply(True) is True
    before = os.stat(path)
    with open(path, "r+") as handle:   # in place: same inode, same size
        handle.write("HELLO\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))   # mtime put back; ctime moves
    assert res.check_apply(True) is False   # rewritten
    assert path.read_text() == "hello\n"


def test_file_replaced_by_rename_is_seen(tmp_path, reads, later):
    path = tmp_path / "f"
    path.write_text("hello\n")
    res = make(path, "hello\n")
    assert res.check_apply(True) is True
    other = tmp_path / "g"
    other.write_text("HELLO\n")
    os.rename(other, path)
    assert res.check_apply(True) is False
    assert path.read_text() == "hello\n"


def test_mode_drift_still_seen(tmp_path, reads, later):
    path = tmp_path / "f"
    path.write_text("hello\n")
    res = FileResource("f", {"path": str(path), "content": "hello\n", "mode": "0640"})
    res.validate()
    res.check_apply(True)
    os.chmod(path, 0o666)
    assert res.check_apply(True) is False
    assert os.stat(path).st_mode & 0o777 == 0o640
