"""``file`` with ``symlink: true`` (mgmt's field, issue 17): the path is a
link to ``source``; made and repaired by renaming a new link over the name,
read with readlink only; a file or directory is replaced only with ``force``;
refused where mgmt refuses it, and for collected files."""

from __future__ import annotations

import os

import pytest

from mgmtd.cluster.exported import Export
from mgmtd.engine.collect import select
from mgmtd.resources.base import FieldError, ResourceError
from mgmtd.resources.file import TEMP_PREFIX, FileResource
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import CollectRule, load_text


def make(name: str = "l", **params) -> FileResource:
    res = FileResource(name, {"symlink": True, **params})
    res.validate()
    return res


def reports(res: FileResource) -> list[str]:
    got: list[str] = []
    res.ctx.report = lambda level, msg: got.append(msg)
    return got


def no_temp_left(directory) -> bool:
    return not [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize("source", ["/nonexistent/target", "relative/target", "../up"])
def test_creates_a_link_to_source_that_need_not_exist(tmp_path, source):
    link = tmp_path / "ln"
    res = make(path=str(link), source=source)
    assert res.check_apply(True) is False
    assert os.readlink(link) == source
    assert res.check_apply(True) is True
    assert no_temp_left(tmp_path)


def test_a_link_pointing_elsewhere_is_replaced_atomically_without_force(tmp_path):
    link = tmp_path / "ln"
    os.symlink("/wrong", link)
    res = make(path=str(link), source="/right")
    got = reports(res)
    assert res.check_apply(False) is False
    assert os.readlink(link) == "/wrong"
    assert any("would point" in m and "/right" in m and "/wrong" in m for m in got)
    assert res.check_apply(True) is False
    assert os.readlink(link) == "/right"


def test_the_link_is_never_followed(tmp_path):
    target = tmp_path / "target"
    target.write_text("mine\n")
    os.chmod(target, 0o600)
    link = tmp_path / "ln"
    res = make(path=str(link), source=str(target))
    res.check_apply(True)
    assert res.check_apply(True) is True
    assert target.read_text() == "mine\n" and os.stat(target).st_mode & 0o777 == 0o600


def test_a_regular_file_needs_force(tmp_path):
    link = tmp_path / "ln"
    link.write_text("a file\n")
    res = make(path=str(link), source="/target")
    with pytest.raises(ResourceError, match=r"ln is a regular file: set force: true to replace it by a"):
        res.check_apply(True)
    assert link.read_text() == "a file\n"


def test_with_force_a_regular_file_is_replaced(tmp_path):
    link = tmp_path / "ln"
    link.write_text("a file\n")
    res = make(path=str(link), source="/target", force=True)
    got = reports(res)
    assert res.check_apply(False) is False and any("would replace" in m for m in got)
    assert not os.path.islink(link)
    assert res.check_apply(True) is False
    assert os.readlink(link) == "/target"
    assert res.check_apply(True) is True


def test_with_force_an_empty_directory_is_replaced_but_never_a_tree(tmp_path):
    link = tmp_path / "ln"
    link.mkdir()
    (link / "keep").write_text("precious\n")
    res = make(path=str(link), source="/target", force=True)
    with pytest.raises(ResourceError, match="is a directory that is not empty"):
        res.check_apply(True)
    assert (link / "keep").read_text() == "precious\n"
    (link / "keep").unlink()
    assert res.check_apply(True) is False
    assert os.readlink(link) == "/target"


def test_missing_parent_is_an_error(tmp_path):
    res = make(path=str(tmp_path / "no" / "ln"), source="/target")
    with pytest.raises(ResourceError, match="parent directory .*/no/ does not exist"):
        res.check_apply(True)


def test_owner_and_group_are_set_on_the_link_itself(tmp_path):
    target = tmp_path / "target"
    target.write_text("x")
    link = tmp_path / "ln"
    uid, gid = os.getuid(), os.getgid()
    res = make(path=str(link), source=str(target), owner=uid, group=gid)
    assert res.check_apply(True) is False
    st = os.lstat(link)
    assert (st.st_uid, st.st_gid) == (uid, gid)
    assert res.check_apply(True) is True


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another owner needs root")
def test_owner_drift_on_the_link_is_repaired_with_lchown(tmp_path):
    target = tmp_path / "target"
    target.write_text("x")
    link = tmp_path / "ln"
    res = make(path=str(link), source=str(target), owner=0, group=0)
    res.check_apply(True)
    os.chown(link, 1, 1, follow_symlinks=False)
    assert res.check_apply(True) is False
    assert (os.lstat(link).st_uid, os.lstat(link).st_gid) == (0, 0)
    assert (os.stat(target).st_uid, os.stat(target).st_gid) == (0, 0)   # never followed


# --- state: absent ------------------------------------------------------------------

def test_absent_removes_the_link_not_its_target(tmp_path):
    target = tmp_path / "target"
    target.write_text("x")
    link = tmp_path / "ln"
    os.symlink(target, link)
    res = make(path=str(link), state="absent")
    assert res.check_apply(True) is False
    assert not os.path.lexists(link) and target.exists()
    assert res.check_apply(True) is True


def test_absent_on_a_regular_file_needs_force(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    with pytest.raises(ResourceError, match="is a regular file, not a symbolic link: set force: true"):
        make(path=str(path), state="absent").check_apply(True)
    assert path.exists()
    assert make(path=str(path), state="absent", force=True).check_apply(True) is False
    assert not path.exists()


# --- refused combinations -----------------------------------------------------------

@pytest.mark.parametrize(("params", "field", "message"), [
    ({}, "source", "symlink: true needs source"),
    ({"source": ""}, "source", "symlink: true needs source"),
    ({"source": "/t", "content": "x"}, "symlink", "cannot have content or fragments"),
    ({"source": "/t", "recurse": True}, "symlink", "cannot have recurse or purge"),
    ({"source": "/t", "purge": True}, "symlink", "cannot have recurse or purge"),
    ({"source": "/t", "mode": "0777"}, "mode", "a symbolic link has no mode of its own"),
    ({"source": "/t", "state": "absent"}, "source", "state: absent removes the link"),
    ({"path": "/srv/d/", "source": "/t"}, "symlink", "no trailing '/'"),
])
def test_refused_combinations(params, field, message):
    with pytest.raises(FieldError, match=message) as caught:
        make(**{"path": "/srv/ln", **params})
    assert caught.value.field == field


def test_graph_errors_are_located():
    text = "resources:\n  file:\n  - name: l\n    path: /srv/ln\n    symlink: true\n"
    with pytest.raises(GraphError, match=r"<graph>:\d+:\d+: .*symlink: true needs source"):
        load_text(text)


def test_a_relative_source_is_accepted_for_a_link_only():
    load_text("resources:\n  file:\n  - name: l\n    path: /srv/ln\n    symlink: true\n    source: ../t\n")
    with pytest.raises(GraphError, match="source must be an absolute path"):
        load_text("resources:\n  file:\n  - name: f\n    path: /srv/f\n    source: ../t\n")


def test_a_link_does_not_watch_its_target():
    assert make(path="/srv/ln", source="/etc/shadow").watch_paths() == ["/srv/ln"]


# --- collected ----------------------------------------------------------------------

def test_a_collected_symlink_is_refused_even_when_source_is_allowed():
    rule = CollectRule("file", "/srv/in/", allow=frozenset({"source", "owner", "setid"}))
    export = Export("h2", "file", "l", {"state": "exists", "path": "/srv/in/l", "symlink": True,
                                        "source": "/etc/shadow"}, {})
    chosen = select([rule], [export], "me", [])
    assert chosen.resources == []
    assert "symlink is refused for collected files" in chosen.rejected[0]
