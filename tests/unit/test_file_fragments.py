"""``file`` with ``fragments`` (mgmt's field, issue 17): the content is the
concatenation of files and of the files of directories (one level, by name);
refused where mgmt refuses it, watched, ordered after what writes the fragments,
and refused on collected files unless the rule allows reading local files."""

from __future__ import annotations

import os

import pytest

from mgmtd.cluster.exported import Export
from mgmtd.engine.collect import select
from mgmtd.engine.watch import FileWatcher
from mgmtd.resources.base import FieldError, ResourceError
from mgmtd.resources.file import FileResource
from mgmtd.resources.fragments import read_fragments
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import CollectRule, load_text
from tests.harness import wait_for


def make(name: str = "f", **params) -> FileResource:
    res = FileResource(name, params)
    res.validate()
    return res


@pytest.fixture
def frags(tmp_path):
    """A header file and a fragment directory with two files, a subdirectory
    (skipped) and names that sort differently as text and as bytes."""
    (tmp_path / "head").write_text("head\n")
    d = tmp_path / "d"
    d.mkdir()
    (d / "20-b").write_text("b\n")
    (d / "10-a").write_text("a\n")
    (d / "B-upper").write_text("B\n")   # by bytes: after the digits
    (d / "sub").mkdir()
    (d / "sub" / "00-never").write_text("never\n")
    return tmp_path


def test_content_is_the_files_then_the_directory_entries_by_name(frags):
    out = frags / "out"
    res = make(path=str(out), fragments=[str(frags / "head"), f"{frags}/d/"])
    assert res.check_apply(True) is False
    assert out.read_text() == "head\n" + "a\n" + "b\n" + "B\n"
    assert res.check_apply(True) is True


def test_directory_entries_sort_by_bytes_as_go_readdir(tmp_path):
    for name in ("b", "A", "_", "a", "Z"):
        (tmp_path / name).write_text(name)
    assert read_fragments([f"{tmp_path}/"]) == b"AZ_ab"


def test_a_fragment_edited_or_added_is_followed(frags):
    out = frags / "out"
    res = make(path=str(out), fragments=[f"{frags}/d/"])
    res.check_apply(True)
    (frags / "d" / "10-a").write_text("A!\n")
    assert res.check_apply(False) is False
    assert res.check_apply(True) is False
    assert out.read_text() == "A!\nb\nB\n"
    (frags / "d" / "15-new").write_text("new\n")
    assert res.check_apply(True) is False
    assert out.read_text() == "A!\nnew\nb\nB\n"
    assert res.check_apply(True) is True


def test_noop_reports_the_diff_and_writes_nothing(frags):
    out = frags / "out"
    out.write_text("old\n")
    res = make(path=str(out), fragments=[str(frags / "head")])
    seen = []
    res.ctx.report = lambda level, msg: seen.append(msg)
    assert res.check_apply(False) is False
    assert out.read_text() == "old\n"
    assert any("+head" in m for m in seen)


def test_mode_applies_to_the_concatenation(frags):
    out = frags / "out"
    res = make(path=str(out), fragments=[str(frags / "head")], mode="0600")
    res.check_apply(True)
    assert os.stat(out).st_mode & 0o777 == 0o600


def test_missing_fragment_file_is_an_error_and_nothing_is_written(frags):
    out = frags / "out"
    res = make(path=str(out), fragments=[str(frags / "nope")])
    with pytest.raises(ResourceError, match=r"fragment .*/nope does not exist"):
        res.check_apply(True)
    assert not out.exists()


def test_missing_fragment_directory_is_an_error(frags):
    res = make(path=str(frags / "out"), fragments=[f"{frags}/nodir/"])
    with pytest.raises(ResourceError, match=r"cannot read fragment directory .*/nodir/"):
        res.check_apply(True)


def test_a_directory_named_without_slash_is_an_error_that_says_so(frags):
    res = make(path=str(frags / "out"), fragments=[str(frags / "d")])
    with pytest.raises(ResourceError, match=r"is a directory \(a fragment directory ends with '/'\)"):
        res.check_apply(True)


def test_a_fifo_in_a_fragment_directory_is_refused_not_read(frags):
    os.mkfifo(frags / "d" / "30-fifo")
    res = make(path=str(frags / "out"), fragments=[f"{frags}/d/"])
    with pytest.raises(ResourceError, match=r"30-fifo is not a regular file"):
        res.check_apply(True)


@pytest.mark.parametrize(("params", "field", "message"), [
    ({"content": "x"}, "fragments", "give one of content, source and fragments"),
    ({"source": "/etc/hostname"}, "fragments", "give one of content, source and fragments"),
    ({"state": "absent"}, "fragments", "state: absent cannot have fragments"),
    ({"symlink": True, "source": "/x"}, "fragments", "give one of"),
    ({"fragments": ["relative/f"]}, "fragments", "must be an absolute path"),
    ({"fragments": [3]}, "fragments", "must be an absolute path"),
    ({"fragments": []}, "fragments", "non-empty list"),
    ({"fragments": ["/srv/../etc/shadow"]}, "fragments", "must not contain '..'"),
    ({"fragments": ["/srv/conf/"]}, "fragments", "inside its own fragment"),
    ({"fragments": ["/srv/conf/out"]}, "fragments", "inside its own fragment"),
])
def test_refused_combinations(params, field, message):
    base = {"path": "/srv/conf/out", "fragments": ["/srv/parts/"]}
    with pytest.raises(FieldError, match=message) as caught:
        make(**{**base, **params})
    assert caught.value.field == field


def test_a_directory_with_fragments_is_refused():
    with pytest.raises(FieldError, match="it has no fragments"):
        make(path="/srv/d/", fragments=["/srv/parts/"])


def test_graph_errors_are_located():
    text = ("resources:\n  file:\n  - name: f\n    path: /srv/out\n"
            "    content: x\n    fragments: [/srv/a]\n")
    with pytest.raises(GraphError, match=r"<graph>:\d+:\d+: .*give one of content, source and fragments"):
        load_text(text)


def test_selinux_is_refused_as_not_supported():
    text = "resources:\n  file:\n  - name: f\n    path: /srv/out\n    selinux: 'system_u:object_r:etc_t:s0'\n"
    with pytest.raises(GraphError, match=r"<graph>:5:5: .*file.selinux \(mgmt's field\) is not supported: "
                                         r"mgmtd does not manage SELinux contexts"):
        load_text(text)


# --- autoedges ----------------------------------------------------------------------

def test_runs_after_the_resources_managing_its_fragments():
    text = """resources:
  file:
  - name: out
    path: /srv/out
    fragments: [/srv/head, /srv/parts/]
  - name: head
    path: /srv/head
    content: "h\\n"
  - name: parts
    path: /srv/parts/
  - name: part1
    path: /srv/parts/10-one
    content: "1\\n"
  - name: elsewhere
    path: /srv/other/x
    content: "x\\n"
"""
    graph = load_text(text).build()
    before_out = graph.requires[("file", "out")]
    assert {("file", "head"), ("file", "parts"), ("file", "part1")} <= before_out
    assert ("file", "elsewhere") not in before_out


# --- watching -----------------------------------------------------------------------

def test_watch_paths_ask_for_the_directory_entries():
    res = make(path="/srv/out", fragments=["/srv/head", "/srv/parts/"])
    assert res.watch_paths() == ["/srv/out", "/srv/head", "/srv/parts/"]


def test_the_watcher_sees_a_file_added_to_and_changed_in_a_fragment_directory(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "a").write_text("a")
    calls: list[set] = []
    watcher = FileWatcher(calls.append)
    key = ("file", "out")
    try:
        watcher.watch(key, [str(tmp_path / "out"), f"{parts}/"])
        (parts / "b").write_text("b")                     # added
        wait_for(lambda: any(key in c for c in calls), 10, "a poke for the new entry")
        calls.clear()
        (parts / "a").write_text("A")                     # changed
        wait_for(lambda: any(key in c for c in calls), 10, "a poke for the changed entry")
        watcher.unwatch(key)
        assert not watcher.by_contents and not watcher.dir_wd
    finally:
        watcher.close()


def test_the_watcher_picks_up_a_fragment_directory_created_later(tmp_path):
    parts = tmp_path / "parts"
    calls: list[set] = []
    watcher = FileWatcher(calls.append)
    key = ("file", "out")
    try:
        watcher.watch(key, [f"{parts}/"])
        parts.mkdir()                                      # seen through the parent's watch
        wait_for(lambda: any(key in c for c in calls), 10, "a poke for the new directory")
        watcher.rearm(key)                                 # what the engine does after the run
        calls.clear()
        (parts / "a").write_text("a")
        wait_for(lambda: any(key in c for c in calls), 10, "a poke for an entry")
    finally:
        watcher.close()


# --- collected ----------------------------------------------------------------------

def _collect(rule: CollectRule, **params) -> tuple[list, list[str]]:
    export = Export("h2", "file", "f", {"state": "exists", "path": "/srv/in/f", **params}, {})
    chosen = select([rule], [export], "me", [])
    return chosen.resources, chosen.rejected


def test_collected_fragments_are_refused_like_source():
    resources, rejected = _collect(CollectRule("file", "/srv/in/"), fragments=["/etc/shadow"])
    assert resources == []
    assert "fragments (files of this host) are refused for collected files" in rejected[0]
    assert "allow: [source]" in rejected[0]


def test_collected_fragments_pass_when_the_rule_allows_source():
    rule = CollectRule("file", "/srv/in/", allow=frozenset({"source"}))
    resources, rejected = _collect(rule, fragments=["/srv/parts/"])
    assert rejected == [] and resources[0].fragments == ["/srv/parts/"]
