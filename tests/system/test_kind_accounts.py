"""The ``user`` and ``group`` kinds through ``mgmtd run`` inside a machine
(its /etc is its own): the real useradd/usermod/userdel and groupadd/groupmod/
groupdel, checked with getent and id, which read the account database through
NSS, apart from the kinds' own parsing. Every test uses names of its own: they
share the machine (the ``sandbox`` fixture comes from conftest.py)."""

from __future__ import annotations

import re
import time

from tests.harness import wait_for


def getent(box, database: str, name: str) -> list[str] | None:
    """The entry's fields, or None when there is none."""
    done = box.run("getent", database, name, check=False)
    return done.stdout.strip().split(":") if done.returncode == 0 else None


def group_names(box, user: str) -> set[str]:
    return set(box.run("id", "-nG", user).stdout.split())


def applied(log: str, subject: str) -> int:
    return log.count(f"{subject}: applied")


def position(log: str, text: str) -> int:
    assert text in log, f"no {text!r} in:\n{log}"
    return log.index(text)


# --- mgmt's examples ----------------------------------------------------------------

MGMT_USER1_GROUP1 = """\
graph: mygraph
resources:
  group:
  - name: testgroup
    state: exists
    gid: 10000
  user:
  - name: testuser
    uid: 1002
    gid: 100
    state: exists
"""


def test_mgmt_user1_and_group1_are_created_then_left_alone(sandbox):
    done = sandbox.apply(MGMT_USER1_GROUP1)
    assert done.returncode == 0, done.log
    assert getent(sandbox, "group", "testgroup")[2] == "10000"
    entry = getent(sandbox, "passwd", "testuser")
    assert entry[2:4] == ["1002", "100"]
    assert "user[testuser]: created user testuser (uid 1002, gid 100)" in done.log
    assert applied(done.log, "group[testgroup]") == 1
    again = sandbox.apply(MGMT_USER1_GROUP1)
    assert again.returncode == 0, again.log
    assert "applied" not in again.log and "would" not in again.log, again.log
    assert "Traceback" not in done.log + again.log


AUTOEDGES4 = """\
graph: autoedges4
resources:
  user:
  - name: edgeuser
    state: absent
    gid: 10401
  - name: edgeuser2
    state: exists
    group: edgegroup
    groups: [edgegroup2, edgegroup3]
    homedir: /home/edgeuser2/
  group:
  - name: edgegroup
    state: exists
    gid: 10400
  - name: edgegroup2
    state: exists
  - name: edgegroup3
    state: exists
  - name: edgeoldgroup
    state: absent
    gid: 10401
  file:
  - name: home
    path: /home/edgeuser2/
    owner: edgeuser2
    group: edgegroup
    mode: "0750"
  - name: profile
    path: /home/edgeuser2/.profile
    owner: edgeuser2
    content: "umask 027\\n"
"""


def test_mgmt_autoedges4_shape_runs_in_one_pass_in_order(sandbox):
    """mgmt's autoedges4 (gids of our own), plus what its reversed edge is for:
    a group to delete that is still the primary group of the user to delete
    (groupdel before userdel fails), and a home made by file resources owned
    by the new user. No explicit edge."""
    sandbox.run("groupadd", "--gid", "10401", "edgeoldgroup")
    sandbox.run("useradd", "--gid", "edgeoldgroup", "edgeuser")
    done = sandbox.apply(AUTOEDGES4)
    log = done.log
    assert done.returncode == 0, log
    troubles = [line for line in log.splitlines() if any(kind in line for kind in ("user[", "group[", "file["))
                and any(word in line for word in ("cannot", "failed", "retrying", "blocked"))]
    assert not troubles, log
    for subject in ("user[edgeuser]", "user[edgeuser2]", "group[edgegroup]", "group[edgegroup2]",
                    "group[edgegroup3]", "group[edgeoldgroup]", "file[home]", "file[profile]"):
        assert applied(log, subject) == 1, f"{subject} not applied exactly once:\n{log}"
    user2 = position(log, "user[edgeuser2]: applied")
    for group in ("edgegroup", "edgegroup2", "edgegroup3"):
        assert position(log, f"group[{group}]: applied") < user2
    assert position(log, "user[edgeuser]: applied") < position(log, "group[edgeoldgroup]: applied")
    assert user2 < position(log, "file[home]: applied") < position(log, "file[profile]: applied")

    assert getent(sandbox, "passwd", "edgeuser") is None
    assert getent(sandbox, "group", "edgeoldgroup") is None
    assert getent(sandbox, "passwd", "edgeuser2")[3] == "10400"
    assert group_names(sandbox, "edgeuser2") == {"edgegroup", "edgegroup2", "edgegroup3"}
    owner = sandbox.run("stat", "-c", "%U:%G %a", "/home/edgeuser2", "/home/edgeuser2/.profile").stdout
    assert owner.split("\n")[:2] == ["edgeuser2:edgegroup 750", "edgeuser2:root 644"]
    again = sandbox.apply(AUTOEDGES4)
    assert again.returncode == 0 and "applied" not in again.log, again.log


# --- create, change, delete -------------------------------------------------------------

def accounts_graph(user_fields: str, state: str = "exists") -> str:
    return f"""\
graph: accmod
resources:
  group:
  - name: acc-a
  - name: acc-b
  - name: acc-c
  user:
  - name: accmod
    state: {state}
{user_fields}"""


def test_create_change_each_field_and_delete(sandbox):
    first = accounts_graph("    uid: 1101\n    shell: /bin/sh\n    groups: [acc-a]\n    homedir: /home/accmod/\n")
    done = sandbox.apply(first)
    assert done.returncode == 0, done.log
    own_gid = getent(sandbox, "group", "accmod")[2]   # useradd's group of the user's own name
    assert getent(sandbox, "passwd", "accmod")[2:] == ["1101", own_gid, "", "/home/accmod", "/bin/sh"]
    assert group_names(sandbox, "accmod") == {"accmod", "acc-a"}

    second = accounts_graph("    uid: 1102\n    shell: /bin/bash\n    groups: [acc-b, acc-c]\n"
                            "    homedir: /srv/accmod/\n    group: acc-a\n")
    done = sandbox.apply(second)
    assert done.returncode == 0, done.log
    assert ("user[accmod]: changed uid 1101 -> 1102, group accmod -> acc-a, groups acc-a -> acc-b,acc-c, "
            "home /home/accmod -> /srv/accmod, shell /bin/sh -> /bin/bash") in done.log, done.log
    gid_a = getent(sandbox, "group", "acc-a")[2]
    assert getent(sandbox, "passwd", "accmod")[2:] == ["1102", gid_a, "", "/srv/accmod", "/bin/bash"]
    assert group_names(sandbox, "accmod") == {"acc-a", "acc-b", "acc-c"}

    done = sandbox.apply(accounts_graph("", state="absent"))
    assert done.returncode == 0, done.log
    assert "user[accmod]: deleted user accmod" in done.log
    assert getent(sandbox, "passwd", "accmod") is None
    assert "Traceback" not in done.log


def test_group_gid_change_and_delete(sandbox):
    graph = "resources:\n  group:\n  - name: accgrp\n    gid: {gid}\n    state: {state}\n"
    assert sandbox.apply(graph.format(gid=10200, state="exists")).returncode == 0
    done = sandbox.apply(graph.format(gid=10201, state="exists"))
    assert done.returncode == 0, done.log
    assert "group[accgrp]: changed gid 10200 -> 10201" in done.log
    assert getent(sandbox, "group", "accgrp")[2] == "10201"
    done = sandbox.apply(graph.format(gid=10201, state="absent"))
    assert done.returncode == 0, done.log
    assert getent(sandbox, "group", "accgrp") is None


# --- refusals and errors -------------------------------------------------------------------

def test_duplicate_uid_refused_unless_allowed(sandbox):
    assert sandbox.apply("resources:\n  user:\n  - name: accdup1\n    uid: 1201\n").returncode == 0
    graph = "resources:\n  user:\n  - name: accdup2\n    uid: 1201\n    allowduplicateuid: {allow}\n"
    done = sandbox.apply(graph.format(allow="false"))
    assert done.returncode == 1, done.log
    assert ("user[accdup2]: cannot create user accdup2: uid 1201 is already user accdup1's "
            "(allowduplicateuid: true lets users share it)") in done.log, done.log
    assert getent(sandbox, "passwd", "accdup2") is None
    done = sandbox.apply(graph.format(allow="true"))
    assert done.returncode == 0, done.log
    assert getent(sandbox, "passwd", "accdup2")[2] == "1201"
    assert getent(sandbox, "passwd", "accdup1")[2] == "1201"


def test_unknown_groups_are_one_line_errors(sandbox):
    done = sandbox.apply("resources:\n  user:\n  - name: accnogrp\n    group: accnosuch\n"
                         "    groups: [acc-none]\n")
    assert done.returncode == 1, done.log
    assert ("user[accnogrp]: cannot create user accnogrp: group accnosuch does not exist; "
            "group acc-none does not exist") in done.log, done.log
    assert getent(sandbox, "passwd", "accnogrp") is None
    assert "Traceback" not in done.log


def test_userdel_refused_while_the_user_runs_processes(sandbox):
    """The tool's own refusal (exit 8), as one line; deleted once it is free."""
    sandbox.run("useradd", "accbusy")
    sandbox.run("systemd-run", "--unit=accbusy-sleep", "--uid=accbusy", "sleep", "600")
    wait_for(lambda: sandbox.run("pgrep", "-u", "accbusy", check=False).returncode == 0, 30,
             "the user's process")
    graph = "resources:\n  user:\n  - name: accbusy\n    state: absent\n"
    done = sandbox.apply(graph)
    assert done.returncode == 1, done.log
    assert "user[accbusy]: userdel failed (user is logged in, exit 8): user accbusy is currently used by process" \
        in done.log, done.log
    sandbox.run("systemctl", "stop", "accbusy-sleep")
    done = sandbox.apply(graph)
    assert done.returncode == 0, done.log
    assert getent(sandbox, "passwd", "accbusy") is None


def test_a_primary_group_is_not_deleted(sandbox):
    sandbox.run("groupadd", "accprim")
    sandbox.run("useradd", "--gid", "accprim", "accprimuser")
    done = sandbox.apply("resources:\n  group:\n  - name: accprim\n    state: absent\n")
    assert done.returncode == 1, done.log
    assert "group[accprim]: cannot delete group accprim: it is the primary group of accprimuser" in done.log
    assert getent(sandbox, "group", "accprim") is not None


def test_invalid_name_is_refused_with_its_location(sandbox):
    done = sandbox.apply("resources:\n  user:\n  - name: '-x'\n")
    assert done.returncode != 0
    assert ":3:11: user[-x]: user name '-x' must not start with '-'" in done.log, done.log


# --- noop ----------------------------------------------------------------------------------

def test_noop_says_what_would_change_and_changes_nothing(sandbox):
    group = "resources:\n  group:\n  - name: accnoop\n    gid: 10300\n"
    graph = group + "  user:\n  - name: accnoopuser\n    group: accnoop\n    shell: {shell}\n"
    done = sandbox.apply(graph.format(shell="/bin/sh"), "--noop")
    assert done.returncode == 0, done.log
    assert "group[accnoop]: would create group accnoop (gid 10300)" in done.log, done.log
    assert getent(sandbox, "group", "accnoop") is None
    assert getent(sandbox, "passwd", "accnoopuser") is None

    assert sandbox.apply(group).returncode == 0
    done = sandbox.apply(graph.format(shell="/bin/sh"), "--noop")
    assert ("user[accnoopuser]: would create user accnoopuser (group accnoop, shell /bin/sh)\n"
            in done.log), done.log
    assert getent(sandbox, "passwd", "accnoopuser") is None

    assert sandbox.apply(graph.format(shell="/bin/sh")).returncode == 0
    done = sandbox.apply(graph.format(shell="/bin/bash"), "--noop")
    assert "user[accnoopuser]: would change shell /bin/sh -> /bin/bash\n" in done.log, done.log
    assert getent(sandbox, "passwd", "accnoopuser")[6] == "/bin/sh"
    done = sandbox.apply(graph.format(shell="/bin/sh").replace("accnoop\n    shell", "accnoop\n    state: absent\n"
                                                               "    shell"), "--noop")
    assert "user[accnoopuser]: would delete user accnoopuser\n" in done.log, done.log
    assert getent(sandbox, "passwd", "accnoopuser") is not None


# --- drift, repaired by a running agent ------------------------------------------------------

DRIFT = """\
graph: drift
resources:
  group:
  - name: accdrift-g
  user:
  - name: accdrift
    uid: 1301
    shell: /bin/sh
    groups: [accdrift-g]
"""


def test_drift_is_repaired_by_events(sandbox):
    agent = sandbox.start(DRIFT)
    agent.wait_log("converged status is: true")

    def repaired(action: tuple[str, ...], subject: str, check) -> float:
        before = len(agent.log())
        start = time.monotonic()
        sandbox.run(*action)
        wait_for(check, 60, f"{subject} repaired after {' '.join(action)}")
        took = time.monotonic() - start
        agent.wait_log(f"{subject}: applied", after=before)
        # quiet again before the next change by hand: a check of the agent's own
        # last write still in flight would see that change half-made and fail once
        agent.wait_log("engine is converged", after=before)
        return took

    def intact() -> bool:
        entry = getent(sandbox, "passwd", "accdrift")
        return (entry is not None and entry[2] == "1301" and entry[6] == "/bin/sh"
                and "accdrift-g" in group_names(sandbox, "accdrift"))

    took = repaired(("userdel", "accdrift"), "user[accdrift]", intact)
    repaired(("usermod", "--shell", "/bin/bash", "accdrift"), "user[accdrift]", intact)
    # membership lives in /etc/group only
    repaired(("gpasswd", "--delete", "accdrift", "accdrift-g"), "user[accdrift]", intact)
    # the group goes (and the membership with it): both come back, group first
    before = len(agent.log())
    repaired(("groupdel", "accdrift-g"), "group[accdrift-g]", intact)
    log = agent.wait_log("user[accdrift]: applied", after=before)
    assert position(log[before:], "group[accdrift-g]: applied") < position(log[before:], "user[accdrift]: applied")
    log = agent.stop()
    assert "Traceback" not in log, log
    # a change by hand that lands while a check is under way can be seen half-made (a
    # groupdel during the user's check): that check fails, and the user must recover
    for failure in re.finditer(r"user\[accdrift\]: cannot", log):
        assert "user[accdrift]: recovered" in log[failure.end():], log
    print(f"userdel by hand -> user back in {took:.2f} s")
