"""The meta params of issue 17 beyond the gates: ``retryreset``, ``reset``,
``rewatch``, ``hidden``, ``export``, ``dollar``, an explicit ``autogroup:
true``, and the global ``--sema N`` (mgmt's ``engine/metaparams.go``,
``engine/graph/actions.go``, ``lib/main.go``)."""

from __future__ import annotations

import json
import threading

import pytest

from mgmtd.cluster.exported import encode, export_of, parse_export
from mgmtd.cluster.keys import Keys
from mgmtd.engine.collect import select
from mgmtd.engine.main import overridden_meta
from mgmtd.engine.scheduler import BLOCKED, FAILED, OK
from mgmtd.resources.base import Field, FieldError, Meta, Resource, ResourceError
from mgmtd.resources.noop import NoopResource
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import CollectRule, load_text
from tests.harness import wait_for
from tests.unit.test_scheduler import GUARD, POLL, Background, graph_of, run


class Scripted(Resource):
    """Each call takes the next outcome of ``script`` ("fail" or "ok"); past the
    end it is in state. Counts its calls."""

    kind = "scripted"
    FIELDS = {"version": Field((int,), 0)}

    def __init__(self, name: str, script: list[str], version: int = 0, meta: Meta | None = None) -> None:
        super().__init__(name, {"version": version}, meta)
        self.script = list(script)
        self.calls = 0
        self.lock = threading.Lock()

    def check_apply(self, apply: bool) -> bool:
        with self.lock:
            self.calls += 1
            outcome = self.script.pop(0) if self.script else "ok"
        if outcome == "fail":
            raise ResourceError(f"{self.name} told to fail")
        return True


def settle(bg: Background, res: Resource, calls: int, state: str) -> None:
    wait_for(lambda: res.calls >= calls and bg.sched.status[res.key].state == state
             and bg.sched.status[res.key].running is None and bg.sched.status[res.key].retry_at is None,
             GUARD, f"{res} after {calls} calls: {state}", POLL)


# --- retryreset -----------------------------------------------------------------------

@pytest.mark.parametrize("retryreset", [False, True])
def test_a_success_gives_the_retry_budget_back_only_with_retryreset(retryreset):
    """retry 1: a failure (retried), a success, a failure again. mgmt counts
    the retries for the resource's lifetime: the second failure is final,
    unless retryreset gave the budget back at the success."""
    res = Scripted("s", ["fail", "ok", "fail"], meta=Meta(retry=1, delay=0, retryreset=retryreset))
    bg = Background(graph_of([res]))
    try:
        settle(bg, res, 2, OK)
        bg.sched.poke(res.key)     # drift: it runs again, and fails
        if retryreset:
            settle(bg, res, 4, OK)  # the failure was retried, and the retry succeeded
        else:
            settle(bg, res, 3, FAILED)
            assert bg.sched.status[res.key].error == "s told to fail"
    finally:
        bg.stop()
    assert res.calls == (4 if retryreset else 3)


def test_without_retryreset_every_failure_counts():
    res = Scripted("s", ["fail", "ok"], meta=Meta(retry=3, delay=0))
    rc, sched = run(graph_of([res]))
    assert rc == 0
    assert sched.status[res.key].attempts == 1
    res = Scripted("s", ["fail", "ok"], meta=Meta(retry=3, delay=0, retryreset=True))
    rc, sched = run(graph_of([res]))
    assert rc == 0 and sched.status[res.key].attempts == 0


# --- reset ------------------------------------------------------------------------------

@pytest.mark.parametrize("reset", [False, True])
def test_a_changed_resource_keeps_its_retry_count_unless_reset(reset):
    """mgmt's MetaState: the retry count belongs to kind+name and survives a
    graph swap that changes the resource's params, unless meta.reset."""
    old = Scripted("s", ["fail", "ok"], meta=Meta(retry=1, delay=0, reset=reset))
    bg = Background(graph_of([old]))
    try:
        settle(bg, old, 2, OK)          # one retry spent
        new = Scripted("s", ["fail", "ok"], version=1, meta=Meta(retry=1, delay=0, reset=reset))
        bg.sched.swap(graph_of([new]))
        if reset:
            settle(bg, new, 2, OK)      # a fresh budget: the failure is retried
        else:
            settle(bg, new, 1, FAILED)  # the budget was spent before the swap
    finally:
        bg.stop()
    assert new.calls == (2 if reset else 1)


def test_a_resource_removed_and_added_again_starts_afresh():
    first = Scripted("s", ["fail", "ok"], meta=Meta(retry=1, delay=0))
    other = Scripted("o", [])
    bg = Background(graph_of([first]))
    try:
        settle(bg, first, 2, OK)
        bg.sched.swap(graph_of([other]))
        settle(bg, other, 1, OK)
        again = Scripted("s", ["fail", "ok"], meta=Meta(retry=1, delay=0))
        bg.sched.swap(graph_of([other, again]))
        settle(bg, again, 2, OK)
    finally:
        bg.stop()


# --- rewatch ----------------------------------------------------------------------------

@pytest.mark.parametrize("rewatch", [False, True])
def test_a_swap_restarts_a_resource_failed_for_good_only_with_rewatch(rewatch):
    failing = Scripted("f", ["fail"], meta=Meta(rewatch=rewatch))
    bg = Background(graph_of([failing]))
    try:
        settle(bg, failing, 1, FAILED)
        same = Scripted("f", [], meta=Meta(rewatch=rewatch))      # unchanged: same_as
        marker = Scripted("marker", [])
        bg.sched.swap(graph_of([same, marker]))
        settle(bg, marker, 1, OK)   # the swap has been dealt with
        if rewatch:
            settle(bg, same, 1, OK)                     # restarted: it ran, and recovered
            assert bg.sched.graph.resources[same.key] is same
        else:
            assert bg.sched.graph.resources[failing.key] is failing   # kept, as it was
            assert bg.sched.status[failing.key].state == FAILED
            assert same.calls == 0
    finally:
        bg.stop()


def test_rewatch_leaves_a_resource_that_did_not_fail_alone():
    res = Scripted("r", [], meta=Meta(rewatch=True))
    bg = Background(graph_of([res]))
    try:
        settle(bg, res, 1, OK)
        marker = Scripted("marker", [])
        bg.sched.swap(graph_of([Scripted("r", [], meta=Meta(rewatch=True)), marker]))
        settle(bg, marker, 1, OK)
        assert bg.sched.graph.resources[res.key] is res and res.calls == 1
    finally:
        bg.stop()


# --- hidden -----------------------------------------------------------------------------

def test_a_hidden_resource_never_runs_but_orders_its_dependants():
    before = Scripted("before", [])
    hidden = Scripted("hidden", ["fail"], meta=Meta(hidden=True))
    after = Scripted("after", [])
    rc, sched = run(graph_of([before, hidden, after], [("before", "hidden"), ("hidden", "after")]))
    assert rc == 0
    assert hidden.calls == 0 and before.calls == 1 and after.calls == 1
    assert sched.status[hidden.key].state == OK
    assert sched.stops.get(hidden.key) is None


def test_a_hidden_resource_after_a_failed_one_is_blocked_and_blocks():
    bad = Scripted("bad", ["fail"])
    hidden = Scripted("hidden", [], meta=Meta(hidden=True))
    after = Scripted("after", [])
    rc, sched = run(graph_of([bad, hidden, after], [("bad", "hidden"), ("hidden", "after")]))
    assert rc == 1
    assert sched.status[hidden.key].state == BLOCKED and sched.status[after.key].state == BLOCKED
    assert hidden.calls == 0 and after.calls == 0


# --- the graph file: dollar, autogroup, export, hidden -------------------------------------

def error_of(text: str) -> str:
    with pytest.raises(GraphError) as err:
        load_text(text, "g.yaml")
    return str(err.value)


def test_a_name_starting_with_dollar_is_refused_unless_meta_dollar():
    msg = error_of("resources:\n  noop:\n  - name: $foo\n")
    assert msg.startswith("g.yaml:3:11: noop: name '$foo' starts with '$'") and "meta.dollar" in msg
    spec = load_text("resources:\n  noop:\n  - name: $foo\n    meta:\n      dollar: true\n")
    assert [r.name for r in spec.resources] == ["$foo"]
    assert "starts with '$'" in error_of("resources:\n  noop:\n  - name: '@@$x'\n")


def test_autogroup_true_is_refused_on_a_kind_that_cannot_group():
    msg = error_of("resources:\n  file:\n  - name: f\n    path: /tmp/x\n    meta:\n      autogroup: true\n")
    assert msg.startswith("g.yaml:6:18: file[f]: meta.autogroup: kind file cannot be grouped "
                          "(kinds that can: pkg)")
    load_text("resources:\n  file:\n  - name: f\n    path: /tmp/x\n    meta:\n      autogroup: false\n")
    load_text("resources:\n  pkg:\n  - name: powertop\n    state: installed\n    meta:\n      autogroup: true\n")


@pytest.mark.parametrize("value,where,words", [
    ("['']", "6:15", "an entry is empty"),
    ("[3]", "6:15", "host names or \"*\", not 3"),
    ("['a b']", "6:15", "'a b' is not a host name"),
    ("b", "6:15", "must be list"),
])
def test_export_entries_are_checked_with_their_location(value, where, words):
    msg = error_of(f"resources:\n  noop:\n  - name: n\n    meta:\n      hidden: false\n      export: {value}\n")
    assert msg.startswith(f"g.yaml:{where}: noop[n]: ") and words in msg, msg


def test_export_and_hidden_place_a_resource_in_the_graph_and_in_the_exports():
    spec = load_text("""resources:
  noop:
  - name: "@@all"
  - name: both
    meta: {export: [b]}
  - name: away
    meta: {export: [b, c], hidden: true}
  - name: plain
""")
    assert sorted(r.name for r in spec.resources) == ["away", "both", "plain"]    # '@@' is not in the graph
    exports = {r.name: r.meta for r in spec.exports}
    assert exports["all"].export == ("*",) and exports["all"].hidden
    assert exports["both"].export == ("b",) and not exports["both"].hidden
    assert exports["away"].export == ("b", "c") and exports["away"].hidden


def test_a_hidden_resource_manages_nothing_here_and_can_be_an_edge_end():
    spec = load_text("""resources:
  file:
  - name: real
    path: /tmp/mgmtd-meta-x
    content: a
  - name: shadow
    path: /tmp/mgmtd-meta-x
    content: b
    meta: {hidden: true}
edges:
- from: {kind: file, name: shadow}
  to: {kind: file, name: real}
""")
    assert len(spec.resources) == 2 and len(spec.edges) == 1


def test_the_same_export_twice_is_refused():
    msg = error_of("resources:\n  noop:\n  - name: '@@x'\n  - name: x\n    meta: {export: ['*']}\n")
    assert msg.startswith("g.yaml:4:5: noop[x]: exported twice: noop/x is also exported at line 3")


def test_meta_no_longer_says_ignored_except_for_reverse():
    ignored = [k for k, f in Meta.FIELDS.items() if "ignored" in f.doc]
    assert ignored in ([], ["reverse"])


def test_meta_export_from_json_is_checked_too():
    with pytest.raises(FieldError):
        Meta(export=("",))
    assert Meta(export=["a"]).export == ("a",)


# --- the export record and collect -------------------------------------------------------

KEYS = Keys("/mgmtd")


def record(res: Resource, host: str = "a") -> str:
    return encode(export_of(res, host))


def test_the_record_carries_the_hosts_and_not_hidden_or_export_in_meta():
    res = NoopResource("n", {}, Meta(hidden=True, export=("b", "c"), retry=2))
    raw = json.loads(record(res))
    assert raw["export"] == ["b", "c"]
    assert "export" not in raw["meta"] and "hidden" not in raw["meta"] and raw["meta"]["retry"] == 2
    parsed = parse_export(KEYS.export("a", "noop", "n"), record(res), KEYS)
    assert parsed is not None and parsed.to == ("b", "c")


def test_an_old_record_without_hosts_is_for_every_host_and_a_bad_list_is_no_export():
    key = KEYS.export("a", "noop", "n")
    old = {"host": "a", "kind": "noop", "name": "n", "params": {}, "meta": {}}
    assert parse_export(key, json.dumps(old), KEYS).to == ("*",)
    for bad in ([], [""], "b", [1], None):
        assert parse_export(key, json.dumps({**old, "export": bad}), KEYS) is None, bad


def test_a_collector_takes_only_exports_meant_for_it():
    rules = [CollectRule("noop")]
    exports = [parse_export(KEYS.export("a", "noop", n), record(NoopResource(n, {}, Meta(export=to))), KEYS)
               for n, to in (("star", ("*",)), ("forb", ("b",)), ("forc", ("c", "d")))]
    names = {host: sorted(r.name for r in select(rules, exports, host, []).resources) for host in "abcd"}
    assert names == {"a": ["star@a"], "b": ["forb@a", "star@a"], "c": ["forc@a", "star@a"],
                     "d": ["forc@a", "star@a"]}
    collected = select(rules, exports, "b", []).resources
    assert all(r.meta.export == () and not r.meta.hidden for r in collected)


def test_a_hidden_local_resource_does_not_shadow_a_collected_one():
    rules = [CollectRule("noop")]
    exported = parse_export(KEYS.export("a", "noop", "x"), record(NoopResource("x", {}, Meta())), KEYS)
    local_hidden = NoopResource("x@a", {}, Meta(hidden=True))
    local = NoopResource("x@a", {}, Meta())
    assert [r.name for r in select(rules, [exported], "b", [local_hidden]).resources] == ["x@a"]
    assert select(rules, [exported], "b", [local]).resources == []


# --- --sema N ---------------------------------------------------------------------------

def test_global_sema_appends_one_semaphore_of_n_slots_as_mgmt():
    meta = Meta(sema=("mylock",))
    assert overridden_meta(meta, False, False, 1).sema == ("mylock", ":1")
    assert overridden_meta(overridden_meta(meta, False, False, 3), False, False, 3).sema == ("mylock", ":3")
    assert overridden_meta(meta, False, False, 0) is meta
    assert overridden_meta(meta, False, False, -1) is meta


# --- poll: -1 -----------------------------------------------------------------------------

class Watched(Scripted):
    """Counts how often the engine starts its watch, and has a path to watch."""

    def __init__(self, name: str, meta: Meta | None = None) -> None:
        super().__init__(name, [], meta=meta)
        self.watches = 0

    def watch_paths(self) -> list[str]:
        return [f"/nonexistent-{self.name}/x"]

    def start_watch(self, poke):
        self.watches += 1
        return None


def test_poll_minus_one_checks_once_and_never_watches():
    once, watched = Watched("once", Meta(poll=-1)), Watched("watched")
    rc, sched = run(graph_of([once, watched]))
    assert rc == 0 and once.calls == 1 and watched.calls == 1
    assert (once.watches, watched.watches) == (0, 1)
    assert once.key not in sched.watcher.key_paths and watched.key in sched.watcher.key_paths


@pytest.mark.parametrize("poll, words", [("-2", "'meta.poll' must be"),
                                         ("-0.5", "meta.poll must be -1 (check once, never watch) or >= 0")])
def test_poll_below_zero_other_than_minus_one_is_refused_where_written(poll, words):
    assert words in error_of(
        f"graph: g\nresources:\n  noop:\n  - name: n\n    meta:\n      poll: {poll}\n")
    load_text("graph: g\nresources:\n  noop:\n  - name: n\n    meta:\n      poll: -1\n")
