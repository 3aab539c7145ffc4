"""The ``user`` kind and the account files it reads, on this host without
changing it: passwd and group files written under tmp_path, the shadow tools
replaced by a recorder (useradd never runs here; tests/system runs it inside
machines). Parsing, validation (located errors), decisions, noop lines,
autoedges and the one-line errors made of the tools' exit codes."""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from mgmtd import graph as graphs
from mgmtd.resources.accounts import AccountFiles, failure, name_problem, parse_group, parse_passwd
from mgmtd.resources.base import Context, FieldError, ResourceError
from mgmtd.resources.user import UserResource, UserSpec, clean_home, plan
from mgmtd.yamlgraph.errors import GraphError
from mgmtd.yamlgraph.loader import load_text

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
bob:x:1001:100::/home/bob/:/bin/sh
"""
GROUP = """\
root:x:0:
users:x:100:
alice:x:1000:
audio:x:29:alice
video:x:44:alice,bob
staff:x:50:
"""


class Tools:
    """Stands in for the shadow tools: records each argv, answers ``result``."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess:
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, self.returncode, "", self.stderr)


def etc(tmp_path, passwd: str = PASSWD, group: str = GROUP) -> AccountFiles:
    (tmp_path / "passwd").write_text(passwd)
    (tmp_path / "group").write_text(group)
    return AccountFiles(str(tmp_path))


def user(tmp_path, name: str = "carol", tools: Tools | None = None, **params):
    res = UserResource(name, params)
    res.validate()
    res.files = etc(tmp_path) if not (tmp_path / "passwd").exists() else AccountFiles(str(tmp_path))
    res.runner = tools or Tools()
    reports: list[str] = []
    res.ctx = Context(report=lambda level, msg: reports.append(msg))
    return res, reports


def load_error(text: str) -> str:
    with pytest.raises(GraphError) as err:
        load_text(textwrap.dedent(text), "g.yaml")
    return str(err.value)


# --- parsing ------------------------------------------------------------------------

def test_passwd_parsing_keeps_the_first_of_a_name_and_skips_what_is_no_local_account():
    users = parse_passwd(PASSWD + "alice:x:2000:2000::/x:/bin/sh\n+nisuser::::::\n#c:x:1:1::/:/x\n"
                         "short:x:5\nbad:x:notanumber:1::/:/bin/sh\n\n")
    assert set(users) == {"root", "daemon", "alice", "bob"}
    assert users["alice"].uid == 1000 and users["alice"].home == "/home/alice"
    assert users["bob"].gid == 100 and users["bob"].shell == "/bin/sh"


def test_group_parsing_reads_members():
    groups = parse_group(GROUP + "-nis:x:3:\nempty:x:7: , \n")
    assert groups["video"].members == ("alice", "bob")
    assert groups["staff"].members == ()
    assert groups["empty"].members == ()
    assert "-nis" not in groups


def test_supplementary_groups_leave_out_the_primary_gid(tmp_path):
    accounts = etc(tmp_path, group=GROUP + "alice2:x:1000:alice\n").snapshot()
    assert accounts.supplementary("alice", 1000) == {"audio", "video"}
    assert accounts.supplementary("bob", 100) == {"video"}


def test_files_are_parsed_once_per_version_and_again_when_replaced(tmp_path):
    files = etc(tmp_path)
    first = files.snapshot()
    assert files.snapshot().users is first.users  # same file version: the cached table
    # the shadow tools write a new file and rename it over the old one
    (tmp_path / "passwd+").write_text(PASSWD + "carol:x:1002:100::/home/carol:/bin/sh\n")
    os.rename(tmp_path / "passwd+", tmp_path / "passwd")
    assert "carol" in files.snapshot().users
    assert files.snapshot().groups is first.groups


def test_a_replaced_file_of_the_same_size_and_mtime_is_read_again(tmp_path):
    files = etc(tmp_path)
    first = files.snapshot()
    assert files.snapshot() is first   # nothing changed: the very same snapshot
    st = os.stat(tmp_path / "passwd")
    (tmp_path / "passwd+").write_text(PASSWD.replace("alice", "alize"))
    os.utime(tmp_path / "passwd+", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(tmp_path / "passwd+", tmp_path / "passwd")
    assert "alize" in files.snapshot().users   # another inode


def test_a_missing_file_is_no_accounts(tmp_path):
    assert AccountFiles(str(tmp_path)).snapshot().users == {}


def test_an_unreadable_file_is_one_line(tmp_path):
    (tmp_path / "passwd").mkdir()
    with pytest.raises(ResourceError, match=r"cannot read .*/passwd: Is a directory"):
        AccountFiles(str(tmp_path)).snapshot()


# --- names and validation ------------------------------------------------------------

@pytest.mark.parametrize("name", ["alice", "A_b", "svc.web", "ab-c", "_x", "1a", "machine$", "a" * 32])
def test_names_shadow_utils_accepts(name):
    assert name_problem(name) == ""


@pytest.mark.parametrize("name, why", [
    ("", "empty"), ("-a", "must not start with '-'"), ("1234", "read as an id"),
    (".", "directory name"), ("..", "directory name"), ("a b", "not valid"), ("x:y", "not valid"),
    ("x,y", "not valid"), ("a$b", "not valid"), ("é", "not valid"), ("a" * 33, "longer than 32"),
])
def test_names_shadow_utils_refuses(name, why):
    assert why in name_problem(name)


def test_bad_user_name_is_located():
    msg = load_error("""\
        resources:
          user:
          - name: "bad name"
        """)
    assert msg.startswith("g.yaml:3:11: user[bad name]: user name 'bad name' is not valid")


@pytest.mark.parametrize("fields, where, says", [
    ("gid: 100\n    group: users", "5:12", "give gid or group, not both"),
    ("state: present", "4:12", "state must be 'exists' or 'absent'"),
    ("homedir: /home/carol", "4:14", "ends with '/'"),
    ("homedir: home/carol/", "4:14", "must be an absolute path"),
    ("shell: bash", "4:12", "shell must be an absolute path"),
    ("shell: '/bin/a:b'", "4:12", "must not contain ':'"),
    ("group: users\n    groups: [audio, users]", "5:13", "primary group users must not appear in groups"),
    ("groups: [audio, carol]", "4:13", "user name carol must not appear in groups"),
    ("groups: [audio, 7]", "4:13", "groups must be group names, not 7"),
    ("groups: ['-x']", "4:13", "group name '-x' must not start with '-'"),
    ("uid: -1", "4:10", "field 'uid' must be an integer between 0 and"),
    ("uid: 4294967295", "4:10", "field 'uid' must be an integer between 0 and"),
    ("allowduplicateuid: 'yes'", "4:24", "must be boolean"),
])
def test_invalid_fields_are_located(fields, where, says):
    msg = load_error(f"resources:\n  user:\n  - name: carol\n    {fields}\n")
    assert msg.startswith(f"g.yaml:{where}: user[carol]: "), msg
    assert says in msg


def test_mgmt_user1_loads_and_state_defaults_to_exists():
    spec = load_text("resources:\n  user:\n  - name: testuser\n    uid: 1002\n    gid: 100\n    state: exists\n"
                     "  - name: plain\n")
    plain = [r for r in spec.resources if r.name == "plain"][0]
    assert plain.state == "exists"


def test_home_is_compared_cleaned():
    assert clean_home("/home/bob/") == "/home/bob"
    assert clean_home("//srv//www/./x/") == "/srv/www/x"


# --- decisions -------------------------------------------------------------------------

def test_in_state_when_every_given_field_matches(tmp_path):
    res, reports = user(tmp_path, "bob", uid=1001, gid=100, groups=["video"], homedir="/home/bob/",
                        shell="/bin/sh")
    assert res.check_apply(True) is True
    assert res.runner.calls == [] and reports == []


def test_unmanaged_fields_are_left_alone(tmp_path):
    res, _ = user(tmp_path, "alice")
    assert res.check_apply(True) is True


def test_create_runs_useradd_with_the_given_fields_only(tmp_path):
    tools = Tools()
    res, reports = user(tmp_path, "carol", tools, uid=1002, group="users", groups=["audio", "video"],
                        homedir="/srv/carol/", shell="/bin/bash")
    assert res.check_apply(True) is False
    assert tools.calls == [["useradd", "--uid", "1002", "--gid", "users", "--groups", "audio,video",
                            "--home", "/srv/carol", "--shell", "/bin/bash", "carol"]]
    assert reports == ["created user carol (uid 1002, group users, groups audio,video, home /srv/carol, "
                       "shell /bin/bash)"]


def test_noop_says_what_it_would_create_and_runs_nothing(tmp_path):
    tools = Tools()
    res, reports = user(tmp_path, "edgeuser2", tools, group="users", groups=["audio", "staff"])
    assert res.check_apply(False) is False
    assert tools.calls == []
    assert reports == ["would create user edgeuser2 (group users, groups audio,staff)"]


def test_change_runs_usermod_with_what_differs(tmp_path):
    tools = Tools()
    res, reports = user(tmp_path, "alice", tools, uid=1000, shell="/bin/zsh", groups=["audio", "staff"])
    assert res.check_apply(True) is False
    assert tools.calls == [["usermod", "--groups", "audio,staff", "--shell", "/bin/zsh", "alice"]]
    assert reports == ["changed groups audio,video -> audio,staff, shell /bin/bash -> /bin/zsh"]


def test_noop_says_what_it_would_change(tmp_path):
    res, reports = user(tmp_path, "bob", uid=1005, gid=1000, homedir="/home/robert/", groups=[])
    assert res.check_apply(False) is False
    assert reports == ["would change uid 1001 -> 1005, gid 100 -> 1000, groups video -> (none), "
                       "home /home/bob/ -> /home/robert"]
    assert res.runner.calls == []


def test_primary_group_by_name_compares_gids(tmp_path):
    tools = Tools()
    res, reports = user(tmp_path, "bob", tools, group="alice")
    res.check_apply(True)
    assert tools.calls == [["usermod", "--gid", "alice", "bob"]]
    assert reports == ["changed group users -> alice"]


def test_membership_of_a_group_sharing_the_primary_gid_is_implied(tmp_path):
    # mgmt would never settle here: usermod -G adds bob to a group it then ignores
    res, _ = user(tmp_path, "bob", gid=100, groups=["users", "video"])
    assert res.check_apply(True) is True


def test_delete_runs_userdel(tmp_path):
    tools = Tools()
    res, reports = user(tmp_path, "bob", tools, state="absent")
    assert res.check_apply(True) is False
    assert tools.calls == [["userdel", "bob"]]
    assert reports == ["deleted user bob"]
    gone, _ = user(tmp_path, "nobody2", state="absent")
    assert gone.check_apply(True) is True


def test_a_taken_uid_is_refused_unless_duplicates_are_allowed(tmp_path):
    tools = Tools()
    res, reports = user(tmp_path, "carol", tools, uid=1000)
    with pytest.raises(ResourceError, match="^cannot create user carol: uid 1000 is already user alice's "
                       r"\(allowduplicateuid: true lets users share it\)$"):
        res.check_apply(True)
    assert tools.calls == []
    res.check_apply(False)
    assert reports == ["would create user carol (uid 1000); now uid 1000 is already user alice's "
                       "(allowduplicateuid: true lets users share it)"]
    shared, _ = user(tmp_path, "carol", tools, uid=1000, allowduplicateuid=True)
    shared.check_apply(True)
    assert tools.calls == [["useradd", "--non-unique", "--uid", "1000", "carol"]]


def test_changing_to_a_taken_uid_is_refused(tmp_path):
    res, _ = user(tmp_path, "bob", uid=1000)
    with pytest.raises(ResourceError, match="^cannot change user bob: uid 1000 is already user alice's"):
        res.check_apply(True)


def test_missing_groups_are_an_error_before_anything_runs(tmp_path):
    tools = Tools()
    res, _ = user(tmp_path, "carol", tools, group="nosuch", groups=["audio", "ghosts"])
    with pytest.raises(ResourceError, match="^cannot create user carol: group nosuch does not exist; "
                       "group ghosts does not exist$"):
        res.check_apply(True)
    numeric, _ = user(tmp_path, "carol", tools, gid=4242)
    with pytest.raises(ResourceError, match="no group has gid 4242"):
        numeric.check_apply(True)
    assert tools.calls == []


def test_a_primary_gid_without_group_line_does_not_block_other_changes(tmp_path):
    etc(tmp_path, passwd=PASSWD + "dave:x:1003:7777::/home/dave:/bin/sh\n")
    tools = Tools()
    res, _ = user(tmp_path, "dave", tools, gid=7777, shell="/bin/bash")
    res.check_apply(True)
    assert tools.calls == [["usermod", "--shell", "/bin/bash", "dave"]]


@pytest.mark.parametrize("argv, code, stderr, says", [
    (["useradd", "x"], 4, "useradd: UID 1001 is not unique\n",
     "useradd failed (uid already in use, exit 4): UID 1001 is not unique"),
    (["useradd", "x"], 6, "useradd: group 'nosuch' does not exist\n",
     "useradd failed (group does not exist, exit 6): group 'nosuch' does not exist"),
    (["useradd", "x"], 9, "useradd: group x exists - if you want to add this user to that group, use -g.\n",
     "useradd failed (name already in use, exit 9): group x exists"),
    (["userdel", "x"], 8, "userdel: user x is currently used by process 42\n",
     "userdel failed (user is logged in, exit 8): user x is currently used by process 42"),
    (["usermod", "x"], 6, "usermod: Warning: missing or non-executable shell '/bin/zsh'\n"
     "usermod: group 'g' does not exist\n",
     "usermod failed (user or group does not exist, exit 6): group 'g' does not exist"),
    (["usermod", "x"], 1, "", "usermod failed (cannot update /etc/passwd, exit 1)"),
    (["useradd", "x"], 77, "", "useradd failed (failed, exit 77)"),
])
def test_tool_failures_are_one_line(argv, code, stderr, says):
    assert failure(argv, code, stderr).startswith(says)


def test_a_failing_tool_is_a_resource_error(tmp_path):
    res, reports = user(tmp_path, "carol", Tools(4, "useradd: UID 1002 is not unique\n"), uid=1002)
    with pytest.raises(ResourceError, match=r"^useradd failed \(uid already in use, exit 4\): UID 1002"):
        res.check_apply(True)
    assert reports == []


def test_missing_tools_are_named(tmp_path):
    def absent(argv):
        raise FileNotFoundError(argv[0])
    res, _ = user(tmp_path, "carol")
    res.runner = absent
    with pytest.raises(ResourceError, match="useradd not found"):
        res.check_apply(True)


def test_spec_and_plan_are_pure(tmp_path):
    accounts = etc(tmp_path).snapshot()
    assert plan(UserSpec("alice", uid=1000), accounts) is None
    todo = plan(UserSpec("alice", uid=1010), accounts)
    assert todo is not None and todo.argv == ["usermod", "--uid", "1010", "alice"]


# --- watches and autoedges --------------------------------------------------------------

def test_the_resources_of_an_engine_share_one_reader_of_etc():
    shared: dict = {}
    one, two = UserResource("a", {}), UserResource("b", {})
    one.ctx, two.ctx = Context(shared=shared), Context(shared=shared)
    assert one.account_files() is two.account_files()
    assert one.account_files().directory == "/etc"
    assert UserResource("c", {}).account_files() is not one.account_files()   # another engine


def test_watches_the_files_it_reads(tmp_path):
    res, _ = user(tmp_path, "carol")
    assert res.watch_paths() == [str(tmp_path / "passwd"), str(tmp_path / "group")]
    assert UserResource("x", {}).watch_paths() == ["/etc/passwd", "/etc/group"]


def test_autoedge_tokens():
    res = UserResource("u", {"group": "g", "groups": ["a", "b"], "homedir": "/srv/u/", "shell": "/bin/zsh"})
    assert res.autoedge_provides() == ["user:u", "/srv/u"]
    assert res.autoedge_requires() == ["group:g", "group:a", "group:b", "pkgfile:/bin/zsh"]
    by_gid = UserResource("u", {"gid": 10})
    assert by_gid.autoedge_requires() == ["gid:10"]
    gone = UserResource("u", {"state": "absent", "gid": 10, "groups": ["a"]})
    assert gone.autoedge_provides() == ["userdel:gid:10", "userdel:group:a"]
    assert gone.autoedge_requires() == []


AUTOEDGES4 = """\
graph: accounts
resources:
  user:
  - name: edgeuser
    state: absent
    gid: 10000
  - name: edgeuser2
    state: exists
    group: edgegroup
    groups: [edgegroup2, edgegroup3]
  group:
  - name: edgegroup
    state: exists
    gid: 10000
  - name: edgegroup2
    state: exists
  - name: edgegroup3
    state: exists
  file:
  - name: profile
    path: /home/edgeuser2/.profile
    owner: edgeuser2
    content: "x"
"""


def test_mgmt_autoedges4_shape_orders_itself():
    spec = load_text(AUTOEDGES4)
    built = graphs.build(spec.resources, spec.edges)
    order = built.order()
    position = {key: order.index(key) for key in order}
    user2, user1 = ("user", "edgeuser2"), ("user", "edgeuser")
    for group in ("edgegroup", "edgegroup2", "edgegroup3"):
        assert position[("group", group)] < position[user2]
    # mgmt's reversed edge: the absent user goes before the group with its gid
    assert ("group", "edgegroup") in built.dependants[user1]
    assert user2 in built.requires[("file", "profile")]


def test_validation_errors_are_field_errors():
    res = UserResource("carol", {"homedir": "/x"})
    with pytest.raises(FieldError) as err:
        res.validate()
    assert err.value.field == "homedir"
