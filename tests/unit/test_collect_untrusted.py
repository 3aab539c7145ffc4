"""Collected files are untrusted input (issue 13, items 2 and 6-9): selected by
the rule, then written without following any symlink below the rule's anchor,
with no source, no setuid/setgid/sticky bit and no foreign owner unless the
rule's ``allow:`` grants it."""

from __future__ import annotations

import os
import stat

import pytest

from mgmtd.cluster.exported import Export
from mgmtd.engine.collect import select
from mgmtd.resources.base import ResourceError
from mgmtd.resources.file import FileResource
from mgmtd.resources.fsplace import anchor_of
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import CollectRule, load_text


def file_export(name: str, **params) -> Export:
    return Export("h2", "file", name, {"state": "exists", **params}, {})


def collect(rule: CollectRule, *exports: Export) -> tuple[list[FileResource], list[str]]:
    chosen = select([rule], list(exports), "me", [])
    return chosen.resources, chosen.rejected


def apply_all(resources: list[FileResource]) -> None:
    # the engine runs a directory before what it contains (autoedges): do the same
    for res in sorted(resources, key=lambda r: r.target):
        res.check_apply(True)


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- item 2: a directory equal to a directory pattern -------------------------------

def test_directory_equal_to_the_pattern_is_collected_and_created_before_its_file(tmp_path):
    base = tmp_path / "mgmtA"          # does not exist yet, as on a fresh collector
    rule = CollectRule("file", f"{base}/")
    resources, rejected = collect(rule, file_export("dir_a", path=f"{base}/"),
                                  file_export("filea", path=f"{base}/fA", content="i am fA\n"))
    assert rejected == []
    assert sorted(r.full_path for r in resources) == [f"{base}/", f"{base}/fA"]
    apply_all(resources)
    assert (base / "fA").read_text() == "i am fA\n"
    assert all(r.check_apply(False) for r in resources)


def test_anchor_is_the_directory_above_the_fixed_part_of_the_pattern():
    assert anchor_of("/tmp/mgmtA/") == "/tmp"
    assert anchor_of("/tmp/mgmt?/f?") == "/tmp"
    assert anchor_of("/srv/files/*.conf") == "/srv"
    assert anchor_of("/etc/motd") == "/etc"
    assert anchor_of(None) == "/" and anchor_of("*") == "/"


# --- item 6: mode only, through a symlink ----------------------------------------------

def test_mode_only_file_never_chmods_through_a_symlink(tmp_path):
    base, victim = tmp_path / "in", tmp_path / "victim"
    base.mkdir()
    victim.write_text("secret\n")
    victim.chmod(0o600)
    (base / "f").symlink_to(victim)
    resources, rejected = collect(CollectRule("file", f"{base}/"), file_export("f", path=f"{base}/f", mode="0666"))
    assert rejected == []
    with pytest.raises(ResourceError, match="symbolic link"):
        resources[0].check_apply(True)
    assert mode_of(victim) == 0o600


def test_local_mode_only_file_does_not_chmod_through_a_symlink_either(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("x")
    victim.chmod(0o600)
    (tmp_path / "f").symlink_to(victim)
    res = FileResource("f", {"path": str(tmp_path / "f"), "mode": "0644"})
    res.validate()
    with pytest.raises(ResourceError, match="symbolic link"):
        res.check_apply(True)
    assert mode_of(victim) == 0o600


def test_mode_only_file_with_another_hard_link_is_refused(tmp_path):
    base, victim = tmp_path / "in", tmp_path / "victim"
    base.mkdir()
    victim.write_text("x")
    victim.chmod(0o600)
    os.link(victim, base / "f")
    resources, _ = collect(CollectRule("file", f"{base}/"), file_export("f", path=f"{base}/f", mode="0666"))
    with pytest.raises(ResourceError, match="hard links"):
        resources[0].check_apply(True)
    assert mode_of(victim) == 0o600


# --- item 7: source --------------------------------------------------------------------

def test_source_is_refused_unless_the_rule_allows_it(tmp_path):
    secret = tmp_path / "key.pem"
    secret.write_text("PRIVATE KEY\n")
    base = tmp_path / "in"
    base.mkdir()
    hostile = file_export("k", path=f"{base}/k", source=str(secret), mode="0644")
    resources, rejected = collect(CollectRule("file", f"{base}/"), hostile)
    assert resources == [] and "source" in rejected[0] and "allow: [source]" in rejected[0]
    resources, rejected = collect(CollectRule("file", f"{base}/", allow=frozenset({"source"})), hostile)
    assert rejected == []
    apply_all(resources)
    assert (base / "k").read_text() == "PRIVATE KEY\n"


# --- item 8: setuid / setgid / sticky, owner -----------------------------------------------

@pytest.mark.parametrize("mode", ["4755", "2755", "1777", 0o6755])
def test_special_mode_bits_are_refused_unless_allowed(tmp_path, mode):
    base = tmp_path / "in"
    resources, rejected = collect(CollectRule("file", f"{base}/"),
                                  file_export("s", path=f"{base}/s", content="#!/bin/sh\n", mode=mode))
    assert resources == [] and "setuid" in rejected[0]
    resources, rejected = collect(CollectRule("file", f"{base}/", allow=frozenset({"setid"})),
                                  file_export("s", path=f"{base}/s", content="#!/bin/sh\n", mode=mode))
    assert rejected == [] and len(resources) == 1


@pytest.mark.parametrize("field", ["owner", "group"])
def test_owner_and_group_are_refused_unless_allowed(tmp_path, field):
    hostile = file_export("o", path=f"{tmp_path}/o", content="x", **{field: "root"})
    resources, rejected = collect(CollectRule("file", f"{tmp_path}/"), hostile)
    assert resources == [] and field in rejected[0] and "allow: [owner]" in rejected[0]
    resources, rejected = collect(CollectRule("file", f"{tmp_path}/", allow=frozenset({"owner"})), hostile)
    assert rejected == []


def test_the_rules_own_set_is_trusted(tmp_path):
    """What the collector's rule sets is its own word, not the exporter's."""
    rule = CollectRule("file", f"{tmp_path}/", set=(("mode", "0600"), ("owner", str(os.getuid()))))
    resources, rejected = collect(rule, file_export("s", path=f"{tmp_path}/s", content="x", mode="4755"))
    assert rejected == []
    apply_all(resources)
    assert mode_of(tmp_path / "s") == 0o600


def test_an_existing_setuid_file_loses_its_bits_when_collected_content_replaces_it(tmp_path):
    target = tmp_path / "tool"
    target.write_text("old\n")
    target.chmod(0o4755)
    resources, _ = collect(CollectRule("file", f"{tmp_path}/"),
                           file_export("t", path=str(target), content="new\n"))
    apply_all(resources)
    assert target.read_text() == "new\n"
    assert mode_of(target) == 0o755


def test_a_directory_tree_copied_from_an_allowed_source_loses_setuid_bits(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "tool").write_text("#!/bin/sh\n")
    (src / "tool").chmod(0o4755)
    base = tmp_path / "in"
    rule = CollectRule("file", f"{base}/", allow=frozenset({"source"}))
    resources, rejected = collect(rule, file_export("d", path=f"{base}/", source=f"{src}/"))
    assert rejected == []
    apply_all(resources)
    assert mode_of(base / "tool") == 0o755


# --- item 9: a symlink swapped in after selection ------------------------------------------

@pytest.mark.parametrize("content", [True, False])
def test_a_symlink_swapped_in_after_selection_is_not_written_through(tmp_path, content):
    base, outside = tmp_path / "in", tmp_path / "out"
    (base / "sub").mkdir(parents=True)
    outside.mkdir()
    params = {"content": "escaped\n"} if content else {"mode": "0600"}
    resources, rejected = collect(CollectRule("file", f"{base}/"),
                                  file_export("f", path=f"{base}/sub/f", **params))
    assert rejected == []
    # after selection, before the write: the directory becomes a link to elsewhere
    (base / "sub").rename(tmp_path / "old-sub")
    (base / "sub").symlink_to(outside)
    (outside / "f").write_text("theirs\n")
    (outside / "f").chmod(0o644)
    with pytest.raises(ResourceError, match="symbolic link"):
        resources[0].check_apply(True)
    assert sorted(p.name for p in outside.iterdir()) == ["f"]
    assert (outside / "f").read_text() == "theirs\n" and mode_of(outside / "f") == 0o644


def test_the_pattern_directory_itself_may_not_be_a_symlink(tmp_path):
    """/tmp/x/ as a pattern: a local user who plants /tmp/x -> /etc gains nothing."""
    outside = tmp_path / "out"
    outside.mkdir()
    (tmp_path / "x").symlink_to(outside)
    resources, _ = collect(CollectRule("file", f"{tmp_path}/x/"),
                           file_export("f", path=f"{tmp_path}/x/f", content="e"))
    with pytest.raises(ResourceError, match="symbolic link"):
        resources[0].check_apply(True)
    assert list(outside.iterdir()) == []


def test_absent_removes_the_link_not_what_it_points_at(tmp_path):
    outside = tmp_path / "out"
    outside.mkdir()
    (outside / "keep").write_text("k")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "l").symlink_to(outside)
    resources, _ = collect(CollectRule("file", f"{tmp_path}/in/"),
                           Export("h2", "file", "l", {"path": f"{tmp_path}/in/l/", "state": "absent",
                                                      "recurse": True}, {}))
    apply_all(resources)
    assert not os.path.lexists(tmp_path / "in" / "l")
    assert (outside / "keep").read_text() == "k"


# --- the rule's syntax ---------------------------------------------------------------------

def test_allow_is_parsed_and_unknown_rights_are_located_errors():
    spec = load_text("collect:\n- kind: file\n  pattern: /srv/\n  allow: [source, setid, owner]\n")
    assert spec.collect[0].allow == frozenset({"source", "setid", "owner"})
    with pytest.raises(GraphError, match=r"<graph>:4:11: allow: unknown right 'root'"):
        load_text("collect:\n- kind: file\n  pattern: /srv/\n  allow: [root]\n")


def test_meta_an_exporter_writes_by_hand_cannot_hide_re_export_or_unrefuse(tmp_path):
    """The export record is untrusted JSON: hidden (never applied, so never
    seen by the collector's own rules), export (passed on) and dollar are the
    exporter's graph's business and never reach the collected resource; a
    meta.reverse a kind cannot honour is refused, not ignored."""
    forged = Export("h2", "file", "f", {"path": f"{tmp_path}/f", "content": "x"},
                    {"hidden": True, "export": ["*"], "dollar": True, "realize": True, "retry": 2})
    (res,), rejected = collect(CollectRule("file", f"{tmp_path}/"), forged)
    assert rejected == []
    assert not res.meta.hidden and res.meta.export == () and not res.meta.dollar and res.meta.retry == 2
    directory = Export("h2", "file", "d", {"path": f"{tmp_path}/d/"}, {"reverse": True})
    assert collect(CollectRule("file", f"{tmp_path}/"), directory)[1] == [
        "file[d] from h2: meta.reverse: a directory cannot be reversed (as in mgmt); only a file"]
    bad = Export("h2", "file", "b", {"path": f"{tmp_path}/b"}, {"reverse": "yes"})
    (why,) = collect(CollectRule("file", f"{tmp_path}/"), bad)[1]
    assert "meta.reverse" in why
