"""A collected file export whose path is not a string is rejected, never a crash."""

from mgmtd.cluster.exported import Export, subject_of
from mgmtd.engine.collect import select
from mgmtd.yamlgraph.loader import CollectRule


def test_a_path_that_is_not_a_string_matches_no_pattern_and_crashes_nothing() -> None:
    for path in (5, ["/srv/x"], {"a": 1}, True):
        export = Export("h2", "file", "x", {"path": path, "content": "hi"}, {})
        assert subject_of(export) == ""
        for pattern in ("/srv/", "/srv/*"):
            chosen = select([CollectRule("file", pattern)], [export], "h1", [])
            assert chosen.resources == []
        chosen = select([CollectRule("file")], [export], "h1", [])   # no pattern: validate() says why
        assert chosen.resources == [] and len(chosen.rejected) == 1
