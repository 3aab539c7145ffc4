"""Selecting exports with collect rules (pure)."""

from __future__ import annotations

import json

from mgmtd.cluster.exported import Export, parse_export
from mgmtd.cluster.keys import Keys
from mgmtd.engine.collect import matched, pattern_matches, select
from mgmtd.resources.file import FileResource
from mgmtd.yamlgraph.loader import CollectRule


def export(host: str, name: str, path: str, content: str = "x", kind: str = "file") -> Export:
    params = {"path": path, "content": content, "state": "exists"} if kind == "file" else {}
    return Export(host, kind, name, params, {})


def test_pattern_semantics():
    assert pattern_matches("/a/", "/a/b") and pattern_matches("/a/", "/a/b/c") and pattern_matches("/a/", "/a/")
    assert not pattern_matches("/a/", "/ab/c")
    assert pattern_matches("/tmp/mgmt?/f?", "/tmp/mgmtA/fA")
    assert not pattern_matches("/tmp/mgmt?/f?", "/tmp/mgmtA/fromB")
    assert pattern_matches(None, "/anything")


def test_filters_by_kind_pattern_and_host():
    exports = [export("h1", "a", "/srv/web/a"), export("h1", "b", "/srv/db/b"),
               export("h2", "c", "/srv/web/c"), export("h2", "n", "", kind="noop")]
    rules = [CollectRule("file", "/srv/web/", hosts=("h1",))]
    chosen = select(rules, exports, "me", [])
    assert [r.full_path for r in chosen.resources] == ["/srv/web/a"]
    assert chosen.sources == {("file", "a@h1"): ["h1/file/a"]}


def test_matched_is_all_that_select_looks_at():
    rules = [CollectRule("file", "/srv/web/", hosts=("h1",))]
    base = [export("h1", "a", "/srv/web/a"), export("h2", "c", "/srv/web/c"), export("h1", "b", "/srv/db/b")]
    assert [e.name for e in matched(rules, base)] == ["a"]
    # a change no rule matches: the same matched exports, so the same selection
    elsewhere = [base[0], export("h2", "c", "/srv/web/c", "changed"), export("h1", "b", "/srv/db/b", "changed"),
                 export("h3", "new", "/srv/web/new")]
    assert matched(rules, elsewhere) == matched(rules, base)
    assert select(rules, elsewhere, "me", []).sources == select(rules, base, "me", []).sources
    # a change it matches (content) or a new match: different
    assert matched(rules, [export("h1", "a", "/srv/web/a", "changed"), *base[1:]]) != matched(rules, base)
    assert matched(rules, [*base, export("h1", "d", "/srv/web/d")]) != matched(rules, base)
    assert matched([], base) == []
    # key order, whatever order the exports came in
    assert matched([CollectRule("file", "/srv/")], base[::-1]) == sorted(base, key=lambda e: e.key)


def test_set_overrides_explicitly_and_cannot_leave_the_pattern():
    exports = [export("h1", "a", "/srv/b/a")]
    inside = select([CollectRule("file", "/srv/", set=(("dirname", "/srv/mine/"),))], exports, "me", [])
    assert [r.full_path for r in inside.resources] == ["/srv/mine/a"]
    outside = select([CollectRule("file", "/srv/b/", set=(("dirname", "/etc/"),))], exports, "me", [])
    assert outside.resources == [] and "outside the pattern" in outside.rejected[0]


def test_identical_exports_once_different_ones_conflict_local_wins():
    same = [export("h1", "a", "/srv/x", "same"), export("h2", "b", "/srv/x", "same")]
    chosen = select([CollectRule("file", "/srv/")], same, "me", [])
    assert len(chosen.resources) == 1 and chosen.sources[chosen.resources[0].key] == ["h1/file/a", "h2/file/b"]
    differ = [export("h1", "a", "/srv/x", "one"), export("h2", "b", "/srv/x", "two"), export("h2", "c", "/srv/y")]
    chosen = select([CollectRule("file", "/srv/")], differ, "me", [])
    assert [r.full_path for r in chosen.resources] == ["/srv/y"]
    assert "exported differently by h1, h2" in chosen.conflicts[0]
    local = FileResource("mine", {"path": "/srv/y", "content": "local"})
    local.validate()
    chosen = select([CollectRule("file", "/srv/")], [export("h2", "c", "/srv/y")], "me", [local])
    assert chosen.resources == [] and "local resource wins" in chosen.rejected[0]


def test_kinds_not_named_in_a_rule_are_never_applied():
    exports = [Export("h1", "exec", "rm", {"cmd": "rm -rf /"}, {}), export("h1", "a", "/srv/a")]
    chosen = select([CollectRule("file", None)], exports, "me", [])
    assert [r.kind for r in chosen.resources] == ["file"]


def test_an_export_must_name_its_own_host():
    keys = Keys("/mgmtd")
    good = json.dumps({"host": "h1", "kind": "file", "name": "a", "params": {"path": "/a"}})
    forged = json.dumps({"host": "h2", "kind": "file", "name": "a", "params": {"path": "/a"}})
    assert parse_export("/mgmtd/exported/h1/file/a", good, keys) is not None
    assert parse_export("/mgmtd/exported/h1/file/a", forged, keys) is None
    assert parse_export("/mgmtd/exported/h1/file", good, keys) is None
    assert parse_export("/mgmtd/exported/h1/file/a", "not json", keys) is None


def test_an_export_nested_too_deep_for_json_is_ignored_not_fatal():
    """json.loads raises RecursionError, not ValueError: it once stopped all collection."""
    keys = Keys("/mgmtd")
    deep = '{"kind": "file", "host": "h1", "params": ' + "[" * 100000 + "]" * 100000 + "}"
    assert parse_export("/mgmtd/exported/h1/file/x", deep, keys) is None


def test_kinds_whose_name_is_their_object_keep_the_exporters_name():
    """A collected pkg, svc, user or group manages what its name says: renamed
    NAME@HOST it was refused ('cowsay@h2' is no package) or, for svc, managed
    the template instance cowsay@h2.service."""
    from mgmtd.cluster.exported import Export
    from mgmtd.engine.collect import select
    from mgmtd.resources.pkg import PkgResource
    from mgmtd.resources.svc import SvcResource
    from mgmtd.yamlgraph.loader import CollectRule

    exports = [Export("h2", "pkg", "cowsay", {"state": "installed"}, {}),
               Export("h2", "svc", "nginx", {"state": "running"}, {}),
               Export("h2", "user", "bob", {"state": "exists"}, {}),
               Export("h2", "group", "staff2", {"state": "exists"}, {}),
               Export("h2", "file", "f", {"path": "/tmp/f", "content": "x"}, {})]
    rules = [CollectRule(kind) for kind in ("pkg", "svc", "user", "group", "file")]
    chosen = select(rules, exports, "h1", [])
    assert chosen.rejected == []
    assert sorted(r.key for r in chosen.resources) == [
        ("file", "f@h2"), ("group", "staff2"), ("pkg", "cowsay"), ("svc", "nginx"), ("user", "bob")]
    assert [r.identity() for r in chosen.resources if r.kind == "svc"] == [("svc", False, "nginx.service")]
    # a local resource of that name wins, even one that manages another object (a session unit)
    session = SvcResource("nginx", {"state": "running", "session": True})
    local = [PkgResource("cowsay", {"state": "uninstalled"}), session]
    assert session.identity() != ("svc", False, "nginx.service")
    chosen = select(rules, exports, "h1", local)
    assert sorted(r.key for r in chosen.resources) == [("file", "f@h2"), ("group", "staff2"), ("user", "bob")]
    assert sorted(chosen.rejected) == ["pkg[cowsay] collides with local pkg[cowsay]: the local resource wins",
                                       "svc[nginx] collides with local svc[nginx]: the local resource wins"]
