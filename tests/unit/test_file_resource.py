"""The ``file`` resource (DESIGN.md section 5): check/apply against a real
directory (tmp_path), drift repair, noop reporting, atomic writes."""

from __future__ import annotations

import os
import stat

import pytest

from mgmtd.resources.base import FieldError, ResourceError
from mgmtd.resources.file import TEMP_PREFIX, FileResource


def make(name: str = "f", **params) -> FileResource:
    res = FileResource(name, params)
    res.validate()
    return res


def reports(res: FileResource) -> list[tuple[str, str]]:
    got: list[tuple[str, str]] = []
    res.ctx.report = lambda level, msg: got.append((level, msg))
    return got


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def temp_files(directory) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory):
        found += [os.path.join(root, n) for n in dirs + files if n.startswith(TEMP_PREFIX)]
    return found


# --- create / no change -------------------------------------------------------

def test_create_with_content_and_mode(tmp_path):
    path = tmp_path / "f"
    res = make(path=str(path), content="hello\n", mode="0640")
    assert res.check_apply(True) is False  # changed something
    assert path.read_text() == "hello\n"
    assert mode_of(path) == 0o640
    assert stat.S_ISREG(os.lstat(path).st_mode)


def test_integer_mode_from_yaml_octal(tmp_path):
    path = tmp_path / "f"
    res = make(path=str(path), content="x", mode=0o600)  # YAML 0600 is the integer 384
    res.check_apply(True)
    assert mode_of(path) == 0o600


def test_no_change_pass_returns_true_and_does_not_rewrite(tmp_path):
    path = tmp_path / "f"
    res = make(path=str(path), content="hello\n", mode="0640")
    res.check_apply(True)
    before = os.stat(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))  # an old mtime, to see a rewrite
    before = os.stat(path)
    assert res.check_apply(True) is True
    assert res.check_apply(False) is True
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_ino, before.st_mtime_ns, before.st_ctime_ns)


def test_unmanaged_content_is_left_alone(tmp_path):
    path = tmp_path / "f"
    path.write_text("mine\n")
    res = make(path=str(path), mode="0600")
    res.check_apply(True)
    assert path.read_text() == "mine\n"
    assert mode_of(path) == 0o600
    assert res.check_apply(True) is True


def test_create_empty_file_when_content_unmanaged(tmp_path):
    path = tmp_path / "f"
    assert make(path=str(path)).check_apply(True) is False
    assert path.read_bytes() == b""
    assert mode_of(path) == 0o644


# --- drift --------------------------------------------------------------------

@pytest.mark.parametrize("drifted", ["hello\nworld\n", "hellO\n", "", "hello\n\n"])
def test_content_drift_repaired(tmp_path, drifted):
    path = tmp_path / "f"
    res = make(path=str(path), content="hello\n", mode="0640")
    res.check_apply(True)
    path.write_text(drifted)  # same size or not
    assert res.check_apply(True) is False
    assert path.read_text() == "hello\n"
    assert mode_of(path) == 0o640
    assert res.check_apply(True) is True


def test_content_drift_keeps_existing_mode_when_mode_unmanaged(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")
    os.chmod(path, 0o604)
    res = make(path=str(path), content="new")
    assert res.check_apply(True) is False
    assert path.read_text() == "new"
    assert mode_of(path) == 0o604


def test_mode_drift_repaired(tmp_path):
    path = tmp_path / "f"
    res = make(path=str(path), content="hello\n", mode="0640")
    res.check_apply(True)
    os.chmod(path, 0o666)
    inode = os.stat(path).st_ino
    assert res.check_apply(True) is False
    assert mode_of(path) == 0o640
    assert os.stat(path).st_ino == inode  # chmod, not a rewrite
    assert path.read_text() == "hello\n"
    assert res.check_apply(True) is True


def test_directory_mode_drift_repaired(tmp_path):
    path = tmp_path / "d"
    res = make(path=f"{path}/", mode="0750")
    assert res.check_apply(True) is False
    assert mode_of(path) == 0o750
    os.chmod(path, 0o700)
    assert res.check_apply(True) is False
    assert mode_of(path) == 0o750
    assert res.check_apply(True) is True


# --- absent / directories -------------------------------------------------------

def test_state_absent_removes_a_file(tmp_path):
    path = tmp_path / "f"
    path.write_text("bye")
    res = make(path=str(path), state="absent")
    assert res.check_apply(True) is False
    assert not path.exists()
    assert res.check_apply(True) is True


def test_state_absent_on_missing_file_is_in_state(tmp_path):
    res = make(path=str(tmp_path / "never"), state="absent")
    assert res.check_apply(True) is True


def test_state_absent_directory_needs_recurse_when_not_empty(tmp_path):
    path = tmp_path / "d"
    path.mkdir()
    (path / "x").write_text("x")
    with pytest.raises(ResourceError) as info:
        make(path=f"{path}/", state="absent").check_apply(True)
    assert "recurse" in str(info.value)
    assert (path / "x").exists()
    assert make(path=f"{path}/", state="absent", recurse=True).check_apply(True) is False
    assert not path.exists()


def test_directory_created(tmp_path):
    path = tmp_path / "d"
    res = make(path=f"{path}/")
    assert res.is_dir
    assert res.check_apply(True) is False
    assert path.is_dir()
    assert res.check_apply(True) is True


def test_missing_parent_directory_is_an_error_that_says_how_to_declare_it(tmp_path):
    parent = tmp_path / "missing"
    path = parent / "f"
    res = make(path=str(path), content="x")
    with pytest.raises(ResourceError) as info:
        res.check_apply(True)
    msg = str(info.value)
    assert str(parent) in msg
    assert f'path: "{parent}/"' in msg  # how to declare it
    assert "recurse: true" in msg
    assert not parent.exists()
    assert os.listdir(tmp_path) == []


def test_missing_parent_of_a_directory(tmp_path):
    res = make(path=f"{tmp_path}/a/b/")
    with pytest.raises(ResourceError) as info:
        res.check_apply(True)
    assert str(tmp_path / "a") in str(info.value)
    assert not (tmp_path / "a").exists()


def test_recurse_creates_parents(tmp_path):
    path = tmp_path / "a" / "b" / "c" / "f"
    res = make(path=str(path), content="deep\n", recurse=True)
    assert res.check_apply(True) is False
    assert path.read_text() == "deep\n"
    assert res.check_apply(True) is True

    directory = tmp_path / "x" / "y" / "z"
    assert make(path=f"{directory}/", recurse=True).check_apply(True) is False
    assert directory.is_dir()


# --- path parts -------------------------------------------------------------------

def test_dirname_overrides_the_directory_part(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    res = make(path=str(tmp_path / "a" / "f"), dirname=f"{tmp_path}/b/", content="moved")
    assert res.target == str(tmp_path / "b" / "f")
    res.check_apply(True)
    assert (tmp_path / "b" / "f").read_text() == "moved"
    assert not (tmp_path / "a" / "f").exists()


def test_basename_overrides_the_last_part(tmp_path):
    res = make(path=str(tmp_path / "f"), basename="g", content="renamed")
    assert res.target == str(tmp_path / "g")
    res.check_apply(True)
    assert (tmp_path / "g").read_text() == "renamed"
    assert not (tmp_path / "f").exists()


def test_dirname_and_basename_without_path(tmp_path):
    res = make(dirname=f"{tmp_path}/", basename="h", content="both")
    assert res.full_path == str(tmp_path / "h")
    res.check_apply(True)
    assert (tmp_path / "h").read_text() == "both"

    res = make(dirname=f"{tmp_path}/", basename="sub/")
    assert res.is_dir
    res.check_apply(True)
    assert (tmp_path / "sub").is_dir()


def test_dirname_on_a_directory_path_keeps_it_a_directory(tmp_path):
    res = make(path="/nowhere/d/", dirname=f"{tmp_path}/")
    assert res.full_path == f"{tmp_path}/d/"
    res.check_apply(True)
    assert (tmp_path / "d").is_dir()


# --- force ------------------------------------------------------------------------

def test_force_replaces_a_directory_by_a_file(tmp_path):
    path = tmp_path / "thing"
    path.mkdir()
    (path / "inside").write_text("x")
    res = make(path=str(path), content="now a file\n", force=True)
    assert res.check_apply(True) is False
    assert path.is_file() and path.read_text() == "now a file\n"
    assert res.check_apply(True) is True


def test_without_force_a_directory_is_not_replaced(tmp_path):
    path = tmp_path / "thing"
    path.mkdir()
    res = make(path=str(path), content="x")
    with pytest.raises(ResourceError) as info:
        res.check_apply(True)
    assert "force" in str(info.value)
    assert path.is_dir()


def test_force_replaces_a_file_by_a_directory(tmp_path):
    path = tmp_path / "thing"
    path.write_text("x")
    with pytest.raises(ResourceError):
        make(path=f"{path}/").check_apply(True)
    assert path.is_file()
    assert make(path=f"{path}/", force=True).check_apply(True) is False
    assert path.is_dir()


# --- apply=False (noop) ------------------------------------------------------------

def test_noop_on_missing_file_changes_nothing(tmp_path):
    path = tmp_path / "f"
    res = make(path=str(path), content="x")
    got = reports(res)
    assert res.check_apply(False) is False
    assert not path.exists()
    assert got and str(path) in got[0][1]


def test_noop_content_drift_reports_a_unified_diff(tmp_path):
    path = tmp_path / "f"
    path.write_text("one\ntwo\nthree\n")
    before = os.stat(path)
    res = make(path=str(path), content="one\nTWO\nthree\n")
    got = reports(res)
    assert res.check_apply(False) is False
    assert path.read_text() == "one\ntwo\nthree\n"
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    text = "\n".join(msg for _, msg in got)
    assert f"--- {path}" in text
    assert "+++ " in text
    assert "@@ " in text
    assert "\n-two" in text and "\n+TWO" in text
    assert " one" in text  # context line


def test_noop_mode_drift_changes_nothing(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, 0o666)
    res = make(path=str(path), content="x", mode="0600")
    got = reports(res)
    assert res.check_apply(False) is False
    assert mode_of(path) == 0o666
    assert got


def test_noop_absent_and_force_change_nothing(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    res = make(path=str(path), state="absent")
    reports(res)
    assert res.check_apply(False) is False
    assert path.exists()

    directory = tmp_path / "d"
    directory.mkdir()
    res = make(path=str(directory), content="x", force=True)
    reports(res)
    assert res.check_apply(False) is False
    assert directory.is_dir()

    res = make(path=f"{tmp_path}/newdir/")
    reports(res)
    assert res.check_apply(False) is False
    assert not (tmp_path / "newdir").exists()


def test_noop_in_state_returns_true_and_reports_nothing(tmp_path):
    path = tmp_path / "f"
    make(path=str(path), content="x", mode="0600").check_apply(True)
    res = make(path=str(path), content="x", mode="0600")
    got = reports(res)
    assert res.check_apply(False) is True
    assert got == []


# --- atomic writes --------------------------------------------------------------

def test_atomic_write_leaves_no_temp_files_and_replaces_the_inode(tmp_path):
    path = tmp_path / "f"
    res = make(path=str(path), content="first\n")
    res.check_apply(True)
    with open(path) as old:
        path.write_text("drift\n")
        for content in ("second\n", "third\n" * 1000):
            res = make(path=str(path), content=content)
            res.check_apply(True)
        # a reader holding the old file sees the old content, never a half-written new one
        assert old.read() == "drift\n"
    assert path.read_text() == "third\n" * 1000
    assert temp_files(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_failed_write_leaves_no_temp_file_and_keeps_the_old_content(tmp_path):
    path = tmp_path / "f"
    path.write_text("old\n")
    # an unknown user fails before anything is written
    res = make(path=str(path), content="new\n", owner="no-such-user-mgmtd-test")
    with pytest.raises(ResourceError):
        res.check_apply(True)
    assert path.read_text() == "old\n"
    assert temp_files(tmp_path) == []
    # a uid the kernel refuses fails after the temp file exists (fchown): it must be cleaned up
    res = make(path=str(path), content="new\n", owner=str(2**32))
    with pytest.raises(Exception):  # noqa: B017 - today OverflowError, see the report
        res.check_apply(True)
    assert path.read_text() == "old\n"
    assert temp_files(tmp_path) == []


# --- source ------------------------------------------------------------------------

def test_source_copies_a_file(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"binary\x00data\n")
    dest = tmp_path / "dest"
    res = make(path=str(dest), source=str(src))
    assert res.check_apply(True) is False
    assert dest.read_bytes() == b"binary\x00data\n"
    assert res.check_apply(True) is True
    src.write_bytes(b"changed\n")
    assert res.check_apply(True) is False
    assert dest.read_bytes() == b"changed\n"
    assert src.read_bytes() == b"changed\n"


def test_missing_source_is_a_resource_error(tmp_path):
    res = make(path=str(tmp_path / "dest"), source=str(tmp_path / "nope"))
    with pytest.raises(ResourceError) as info:
        res.check_apply(True)
    assert str(tmp_path / "nope") in str(info.value)
    assert not (tmp_path / "dest").exists()


def test_directory_source_syncs_a_tree(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("A")
    (src / "sub" / "b").write_text("B")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "extra").write_text("E")
    res = make(path=f"{dest}/", source=f"{src}/", purge=True)
    assert res.check_apply(True) is False
    assert (dest / "a").read_text() == "A"
    assert (dest / "sub" / "b").read_text() == "B"
    assert not (dest / "extra").exists()
    assert res.check_apply(True) is True


# --- validate -----------------------------------------------------------------------

@pytest.mark.parametrize("params, field", [
    ({"path": "relative/f"}, "path"),
    ({"path": "/a/../b"}, "path"),
    ({"path": "/a/f", "state": "present"}, "state"),
    ({"path": "/a/f", "mode": "9"}, "mode"),
    ({"path": "/a/f", "mode": 0o17777}, "mode"),
    ({"path": "/a/d/", "content": "x"}, "content"),
    ({"path": "/a/f", "content": "x", "source": "/b"}, "source"),
    ({"path": "/a/f", "source": "rel"}, "source"),
    ({"basename": "f"}, "path"),
])
def test_validate_rejects(params, field):
    with pytest.raises(FieldError) as info:
        FileResource("f", params).validate()
    assert info.value.field == field


def test_identity_ignores_the_directory_marker():
    assert make("a", path="/srv/x/").identity() == make("b", path="/srv/x").identity()
    assert make("a", path="/srv/x").identity() != make("b", path="/srv/y").identity()
