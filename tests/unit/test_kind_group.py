"""The ``group`` kind on this host without changing it: group and passwd files
under tmp_path, the shadow tools replaced by a recorder (groupadd runs only
inside machines, tests/system). Validation, decisions, noop lines, autoedges."""

from __future__ import annotations

import textwrap

import pytest

from mgmtd.resources.base import Context, ResourceError
from mgmtd.resources.group import GroupResource, plan_group
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_text
from tests.unit.test_kind_user import GROUP, Tools, etc


def group(tmp_path, name: str, tools: Tools | None = None, passwd: str | None = None, **params):
    res = GroupResource(name, params)
    res.validate()
    res.files = etc(tmp_path, **({"passwd": passwd} if passwd is not None else {}))
    res.runner = tools or Tools()
    reports: list[str] = []
    res.ctx = Context(report=lambda level, msg: reports.append(msg))
    return res, reports


def load_error(text: str) -> str:
    with pytest.raises(GraphError) as err:
        load_text(textwrap.dedent(text), "g.yaml")
    return str(err.value)


# --- validation -----------------------------------------------------------------------

@pytest.mark.parametrize("fields, where, says", [
    ("state: gone", "4:12", "state must be 'exists' or 'absent', not 'gone'"),
    ("gid: -5", "4:10", "field 'gid' must be an integer between 0 and 4294967294"),
    ("gid: '10'", "4:10", "field 'gid' must be integer, not '10'"),
])
def test_invalid_fields_are_located(fields, where, says):
    msg = load_error(f"resources:\n  group:\n  - name: g\n    {fields}\n")
    assert msg.startswith(f"g.yaml:{where}: group[g]: {says}"), msg


@pytest.mark.parametrize("name", ["1000", "-g", "a b", "a" * 33])
def test_bad_group_names_are_located(name):
    msg = load_error(f"resources:\n  group:\n  - name: '{name}'\n")
    assert msg.startswith(f"g.yaml:3:11: group[{name}]: group name "), msg


def test_mgmt_group1_loads():
    spec = load_text("resources:\n  group:\n  - name: testgroup\n    state: exists\n    gid: 10000\n")
    (res,) = spec.resources
    assert (res.name, res.state, res.gid) == ("testgroup", "exists", 10000)


# --- decisions --------------------------------------------------------------------------

def test_an_existing_group_without_gid_is_in_state(tmp_path):
    res, reports = group(tmp_path, "staff")
    assert res.check_apply(True) is True
    assert res.runner.calls == [] and reports == []


def test_create_with_and_without_gid(tmp_path):
    tools = Tools()
    res, reports = group(tmp_path, "testgroup", tools, gid=10000)
    assert res.check_apply(True) is False
    plain, _ = group(tmp_path, "other", tools)
    plain.check_apply(True)
    assert tools.calls == [["groupadd", "--gid", "10000", "testgroup"], ["groupadd", "other"]]
    assert reports == ["created group testgroup (gid 10000)"]


def test_noop_create_change_delete(tmp_path):
    lines = []
    for name, params in (("testgroup", {"gid": 10000}), ("staff", {"gid": 51}), ("audio", {"state": "absent"})):
        res, reports = group(tmp_path, name, **params)
        assert res.check_apply(False) is False
        assert res.runner.calls == []
        lines += reports
    assert lines == ["would create group testgroup (gid 10000)", "would change gid 50 -> 51",
                     "would delete group audio"]


def test_renumber_runs_groupmod(tmp_path):
    tools = Tools()
    res, reports = group(tmp_path, "staff", tools, gid=51)
    res.check_apply(True)
    assert tools.calls == [["groupmod", "--gid", "51", "staff"]]
    assert reports == ["changed gid 50 -> 51"]


def test_a_gid_of_another_group_is_refused(tmp_path):
    tools = Tools()
    res, reports = group(tmp_path, "testgroup", tools, gid=44)
    with pytest.raises(ResourceError, match="^cannot create group testgroup: gid 44 is already group video's$"):
        res.check_apply(True)
    res.check_apply(False)
    assert reports == ["would create group testgroup (gid 44); now gid 44 is already group video's"]
    assert tools.calls == []


def test_delete_and_absent(tmp_path):
    tools = Tools()
    res, reports = group(tmp_path, "staff", tools, state="absent")
    assert res.check_apply(True) is False
    assert tools.calls == [["groupdel", "staff"]]
    gone, _ = group(tmp_path, "nosuch", tools, state="absent")
    assert gone.check_apply(True) is True


def test_a_primary_group_is_not_deleted_and_the_error_names_its_users(tmp_path):
    tools = Tools()
    res, _ = group(tmp_path, "users", tools, state="absent")
    with pytest.raises(ResourceError, match="^cannot delete group users: it is the primary group of bob$"):
        res.check_apply(True)
    assert tools.calls == []


def test_tool_failure_is_one_line(tmp_path):
    res, _ = group(tmp_path, "testgroup", Tools(4, "groupadd: GID '10000' already exists\n"), gid=10000)
    with pytest.raises(ResourceError, match=r"^groupadd failed \(gid already in use, exit 4\): "
                       "GID '10000' already exists$"):
        res.check_apply(True)


def test_plan_is_pure(tmp_path):
    accounts = etc(tmp_path, group=GROUP).snapshot()
    assert plan_group("staff", "exists", 50, accounts) is None
    assert plan_group("staff", "exists", None, accounts) is None
    assert plan_group("nosuch", "absent", None, accounts) is None


# --- watches and autoedges ---------------------------------------------------------------

def test_watches_the_group_file():
    assert GroupResource("g", {}).watch_paths() == ["/etc/group"]


def test_autoedge_tokens():
    res = GroupResource("g", {"gid": 10})
    assert res.autoedge_provides() == ["group:g", "gid:10"]
    assert res.autoedge_requires() == ["userdel:group:g", "userdel:gid:10"]
    assert GroupResource("g", {}).autoedge_provides() == ["group:g"]
    assert GroupResource("g", {"state": "absent", "gid": 10}).autoedge_provides() == []
