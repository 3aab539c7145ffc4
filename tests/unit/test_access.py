"""RBAC decisions (mgmtd/cluster/access.py) and the hand-declared gRPC messages
(mgmtd/cluster/etcdapi.py) against python3-etcd3's generated ones."""

from __future__ import annotations

import etcd3.etcdrpc.auth_pb2 as their_auth
import etcd3.etcdrpc.rpc_pb2 as theirs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgmtd import certs, tls
from mgmtd.cluster import etcdapi
from mgmtd.cluster.access import (
    Permission,
    allowed,
    host_permissions,
    join_password,
    join_permissions,
    prefix_end,
    root_changes,
)
from mgmtd.cluster.etcdapi import READ, READWRITE, WRITE
from mgmtd.cluster.keys import Keys

KEYS = Keys("/mgmtd")
HOSTS = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="/"),
                min_size=1, max_size=12)


def test_a_host_writes_its_own_keys_and_the_shared_kv():
    mine = host_permissions(KEYS, "h1")
    for key in ("/mgmtd/exported/h1/file/x", "/mgmtd/exported/h1/exec/y", "/mgmtd/hosts/h1",
                "/mgmtd/volunteers/h1", "/mgmtd/kv/anything", "/mgmtd/graph/h1"):
        assert allowed(mine, key, WRITE) and allowed(mine, key, READ), key


def test_a_host_writes_nothing_else():
    mine = host_permissions(KEYS, "h1")
    for key in ("/mgmtd/exported/h2/file/x", "/mgmtd/exported/h10/file/x", "/mgmtd/exported/h1",
                "/mgmtd/hosts/h10", "/mgmtd/hosts/h2", "/mgmtd/volunteers/h1x", "/mgmtd/cluster/leader",
                "/mgmtd/cluster/ideal-size", "/mgmtd/nominated/h1", "/mgmtd/join/h1", "/other",
                "/mgmtd/graph/h2", "/mgmtd/graph/h10", "/mgmtd/graph/h1/x", "/mgmtd/graph/",
                "/mgmtdx/exported/h1/file/x"):
        assert not allowed(mine, key, WRITE), key


def test_a_host_reads_its_namespace_only():
    mine = host_permissions(KEYS, "h1")
    assert allowed(mine, "/mgmtd/exported/h2/file/x", READ)
    assert allowed(mine, "/mgmtd/graph/h2", READ)   # mgmtctl graph h2, with h1's certificate
    assert allowed(mine, "/mgmtd/cluster/leader", READ)
    assert not allowed(mine, "/mgmtdx", READ) and not allowed(mine, "/other/key", READ)


def test_the_join_user_may_only_ask():
    join = join_permissions(KEYS)
    assert allowed(join, "/mgmtd/join/h9", WRITE)
    assert not allowed(join, "/mgmtd/join/h9", READ)
    assert not allowed(join, "/mgmtd/hosts/h9", WRITE) and not allowed(join, "/mgmtd/exported/h9/x", WRITE)


@given(HOSTS, HOSTS, st.text(max_size=20))
def test_no_host_may_write_another_hosts_keys(mine, other, suffix):
    if mine == other:
        return
    permissions = host_permissions(KEYS, mine)
    for key in (KEYS.exports_of(other) + suffix, KEYS.host(other), KEYS.volunteer(other), KEYS.graph(other)):
        assert not allowed(permissions, key, WRITE), key


@given(st.binary(min_size=1, max_size=6), st.binary(max_size=6), st.binary(max_size=8))
def test_prefix_end_bounds_exactly_the_keys_with_the_prefix(prefix, suffix, other):
    end = prefix_end(prefix)
    if end == b"\0":  # etcd's "to the end of the keyspace": the prefix was all 0xff
        assert set(prefix) == {0xFF}
        return
    assert prefix <= prefix + suffix < end
    assert other.startswith(prefix) or not prefix <= other < end


def test_prefix_end_carries_past_0xff():
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"  # etcd's "every key"
    assert prefix_end(b"/mgmtd/") == b"/mgmtd0"


def test_root_is_held_by_exactly_the_servers_and_etcds_root():
    grant, revoke = root_changes({"root", "h1", "h4"}, {"h1", "h2", "h3"})
    assert grant == {"h2", "h3"} and revoke == {"h4"}
    assert root_changes({"root", "h1"}, {"h1"}) == (set(), set())


def test_reserved_and_malformed_host_names_are_refused(tmp_path):
    for name in ("root", "mgmtd-join", "a/b", "", " h1"):
        with pytest.raises(ValueError):
            tls.check_host_name(name)
    certs.init_ca(str(tmp_path))
    with pytest.raises(ValueError, match="reserved"):
        certs.issue(str(tmp_path), "root", [], [])


def test_join_password_is_the_same_for_every_holder_of_the_ca(tmp_path):
    ca, _ = certs.init_ca(str(tmp_path / "a"))
    other, _ = certs.init_ca(str(tmp_path / "b"))
    assert join_password(ca) == join_password(ca)
    assert join_password(ca) != join_password(other)
    cert, _ = certs.issue(str(tmp_path / "a"), "h1", [], [])
    assert tls.common_name(cert) == "h1"


# --- the messages speak etcd's wire format ----------------------------------------
def test_messages_match_etcds_field_numbers():
    perm = etcdapi.M["Permission"](permType=READWRITE, key=b"/a/", range_end=b"/a0")
    grant = etcdapi.M["RoleGrantPermissionRequest"](name="r", perm=perm)
    parsed = theirs.AuthRoleGrantPermissionRequest.FromString(grant.SerializeToString())
    assert parsed.name == "r" and parsed.perm.permType == their_auth.Permission.READWRITE
    assert parsed.perm.key == b"/a/" and parsed.perm.range_end == b"/a0"

    add = theirs.MemberAddRequest.FromString(
        etcdapi.M["MemberAddRequest"](peerURLs=["http://a:1"], isLearner=True).SerializeToString())
    assert list(add.peerURLs) == ["http://a:1"]

    status = theirs.StatusResponse(version="3.4.23", leader=7, raftIndex=9, raftTerm=2)
    status.header.member_id = 5
    mine = etcdapi.M["StatusResponse"].FromString(status.SerializeToString())
    assert (mine.version, mine.leader, mine.raftIndex, mine.raftTerm, mine.header.member_id) == \
        ("3.4.23", 7, 9, 2, 5)

    for name, theirs_type, fields in (
        ("UserGrantRoleRequest", theirs.AuthUserGrantRoleRequest, {"user": "u", "role": "r"}),
        ("UserRevokeRoleRequest", theirs.AuthUserRevokeRoleRequest, {"name": "u", "role": "r"}),
        ("AuthenticateRequest", theirs.AuthenticateRequest, {"name": "u", "password": "p"}),
        ("RoleGetRequest", theirs.AuthRoleGetRequest, {"role": "r"}),
        ("PutRequest", theirs.PutRequest, {"key": b"k", "value": b"v"}),
    ):
        parsed = theirs_type.FromString(etcdapi.M[name](**fields).SerializeToString())
        assert {k: getattr(parsed, k) for k in fields} == fields, name

    listed = theirs.AuthUserListResponse(users=["a", "b"]).SerializeToString()
    assert list(etcdapi.M["UserListResponse"].FromString(listed).users) == ["a", "b"]
    assert READ == their_auth.Permission.READ and WRITE == their_auth.Permission.WRITE


def test_permission_helpers_build_key_and_prefix_ranges():
    assert Permission.on_key(READ, "/k") == Permission(READ, b"/k", b"")
    assert Permission.on_prefix(WRITE, "/p/") == Permission(WRITE, b"/p/", b"/p0")


class FakeAuth:
    """etcd's auth API as Access.enable uses it: users, roles, permissions."""

    def __init__(self, roles: dict[str, set], users: dict[str, set]) -> None:
        self.roles, self.users, self.enabled = roles, users, False

    def call(self, endpoint, method, request=None, timeout=2.0, token=""):
        from types import SimpleNamespace as NS
        if method == "UserList":
            return NS(users=sorted(self.users))
        if method == "RoleList":
            return NS(roles=sorted(self.roles))
        if method == "RoleGet":
            return NS(perm=[NS(permType=p, key=k, range_end=e) for p, k, e in self.roles[request.role]])
        if method == "RoleAdd":
            self.roles[request.name] = set()
        elif method == "RoleGrantPermission":
            self.roles[request.name].add((request.perm.permType, request.perm.key, request.perm.range_end))
        elif method == "UserGet":
            return NS(roles=sorted(self.users[request.name]))
        elif method == "UserAdd":
            self.users[request.name] = set()
        elif method == "UserGrantRole":
            self.users[request.user].add(request.role)
        elif method == "AuthEnable":
            self.enabled = True
        else:
            raise AssertionError(method)
        return NS()


def test_a_new_leader_gives_older_roles_the_keys_added_since(tmp_path):
    from mgmtd.cluster.access import Access, host_role

    certs.init_ca(str(tmp_path))
    old = [p for p in host_permissions(KEYS, "h2") if not p.covers(KEYS.graph("h2"), WRITE)]
    fake = FakeAuth({host_role(KEYS, "h2"): {(p.perm, p.key, p.range_end) for p in old}},
                    {"h2": {host_role(KEYS, "h2")}})
    Access(KEYS, str(tmp_path / "ca.crt"), fake).enable("ep", "h1")
    h2 = [Permission(*perm) for perm in fake.roles[host_role(KEYS, "h2")]]
    assert allowed(h2, KEYS.graph("h2"), WRITE) and not allowed(h2, KEYS.graph("h1"), WRITE)
    assert fake.enabled and "h1" in fake.users
