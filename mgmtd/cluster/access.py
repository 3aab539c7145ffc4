"""Who may write what (etcd RBAC, on whenever TLS is).

etcd takes a client's user from its certificate's common name, which
``mgmtd certs issue`` sets to the hostname. Each host's user gets one role:
read the namespace, write its own exports, host and volunteer keys, and the
shared kv store. Servers (etcd members and nominees) also hold ``root``: etcd
requires it for member changes, which the leader makes and any server may
become leader at once; a member holds the whole database anyway.

A node the cluster has never seen has no user, so etcd refuses it everything.
It asks for one through the join user, whose only right is to write
``{ns}/join/HOST``; the leader answers by creating HOST's user with HOST's
role. The join password is derived from the CA certificate, so it is no
secret beyond it: what keeps strangers out is the certificate etcd demands
before anything else, and all a join request gets is an account that only the
holder of a CA-signed certificate for that name can use.

The decisions (which permissions, who holds root) are pure functions; the
``Access`` class carries them out over gRPC."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc

from mgmtd import log
from mgmtd.cluster import etcdapi
from mgmtd.cluster.etcdapi import READ, READWRITE, WRITE, EtcdApi, EtcdApiError, prefix_end
from mgmtd.cluster.keys import Keys
from mgmtd.tls import JOIN_USER, ROOT_USER, check_host_name

LOG = log.get("cluster")



_NEEDS = {READ: {READ}, WRITE: {WRITE}, READWRITE: {READ, WRITE}}


@dataclass(frozen=True)
class Permission:
    perm: int             # etcdapi.READ | WRITE | READWRITE
    key: bytes
    range_end: bytes = b""  # b"" = the key alone

    @classmethod
    def on_key(cls, perm: int, key: str) -> Permission:
        return cls(perm, key.encode())

    @classmethod
    def on_prefix(cls, perm: int, prefix: str) -> Permission:
        return cls(perm, prefix.encode(), prefix_end(prefix.encode()))

    def covers(self, key: str, perm: int) -> bool:
        """Would etcd allow ``perm`` on ``key`` by this permission alone?"""
        if not _NEEDS[perm] <= _NEEDS[self.perm]:
            return False
        raw = key.encode()
        if not self.range_end:
            return raw == self.key
        return self.key <= raw < self.range_end


def host_role(keys: Keys, host: str) -> str:
    return f"{keys.namespace}:host:{host}"


def join_role(keys: Keys) -> str:
    return f"{keys.namespace}:join"


def host_permissions(keys: Keys, host: str) -> list[Permission]:
    return [
        Permission.on_prefix(READ, keys.namespace + "/"),
        Permission.on_prefix(READWRITE, keys.exports_of(host)),
        Permission.on_key(READWRITE, keys.host(host)),
        Permission.on_key(READWRITE, keys.volunteer(host)),
        Permission.on_key(READWRITE, keys.graph(host)),
        Permission.on_prefix(READWRITE, keys.kv),
    ]


def join_permissions(keys: Keys) -> list[Permission]:
    return [Permission.on_prefix(WRITE, keys.join_requests)]


def allowed(permissions: Iterable[Permission], key: str, perm: int) -> bool:
    return any(p.covers(key, perm) for p in permissions)


def root_changes(root_holders: set[str], servers: set[str]) -> tuple[set[str], set[str]]:
    """Who gains and who loses the root role: exactly the servers hold it (and
    etcd's own ``root`` user, which auth needs)."""
    return servers - root_holders, root_holders - servers - {ROOT_USER}


def join_password(ca_file: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    with open(ca_file, "rb") as handle:
        certificate = x509.load_pem_x509_certificate(handle.read())
    return "mgmtd-join:" + certificate.fingerprint(hashes.SHA256()).hex()


def is_permission_denied(err: BaseException) -> bool:
    if isinstance(err, EtcdApiError):
        return err.permission_denied
    return isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.PERMISSION_DENIED


class Access:
    """Carries out the RBAC decisions against one endpoint (the leader's, or
    the bootstrapping node's own etcd), through ``api`` (which holds this
    node's TLS files)."""

    def __init__(self, keys: Keys, ca_file: str, api: EtcdApi) -> None:
        self.keys = keys
        self.ca_file = ca_file
        self.api = api

    # --- roles and users --------------------------------------------------------
    # Each step reads first and writes only what is missing: every new leader runs
    # them, and etcd logs each refused or ignored write as a warning.
    def _names(self, endpoint: str, what: str) -> set[str]:
        reply = self.api.call(endpoint, what)
        return set(reply.users if what == "UserList" else reply.roles)

    def _role(self, endpoint: str, name: str, permissions: list[Permission], roles: set[str]) -> bool:
        """Returns True when something had to be written."""
        if name in roles:
            have = {(p.permType, p.key, p.range_end) for p in
                    self.api.call(endpoint, "RoleGet", etcdapi.M["RoleGetRequest"](role=name)).perm}
        else:
            self.api.call(endpoint, "RoleAdd", etcdapi.M["NameRequest"](name=name))
            have = set()
        missing = [p for p in permissions if (p.perm, p.key, p.range_end) not in have]
        for p in missing:
            perm = etcdapi.M["Permission"](permType=p.perm, key=p.key, range_end=p.range_end)
            self.api.call(endpoint, "RoleGrantPermission",
                          etcdapi.M["RoleGrantPermissionRequest"](name=name, perm=perm))
        return name not in roles or bool(missing)

    def _user(self, endpoint: str, name: str, roles: list[str], users: set[str],
              password: str = "") -> bool:
        """Returns True when something had to be written."""
        if name in users:
            have = set(self.api.call(endpoint, "UserGet", etcdapi.M["NameRequest"](name=name)).roles)
        else:
            request = etcdapi.M["UserAddRequest"](name=name, password=password)
            request.options.no_password = not password
            self.api.call(endpoint, "UserAdd", request, timeout=5.0)
            have = set()
        missing = [role for role in roles if role not in have]
        for role in missing:
            self.api.call(endpoint, "UserGrantRole", etcdapi.M["UserGrantRoleRequest"](user=name, role=role))
        return name not in users or bool(missing)

    def set_root(self, endpoint: str, host: str, root: bool) -> None:
        if root:
            self.provision(endpoint, host, root=True)
            return
        try:
            self.api.call(endpoint, "UserRevokeRole",
                          etcdapi.M["UserRevokeRoleRequest"](name=host, role=ROOT_USER))
        except EtcdApiError as err:
            if "role is not granted" not in str(err) and "user name not found" not in str(err):
                raise

    def provision(self, endpoint: str, host: str, root: bool = False,
                  known: tuple[set[str], set[str]] | None = None) -> bool:
        """Gives ``host`` its user and role (and root); returns False when it had
        them. ``known``: the users and roles, when the caller has just listed them."""
        users, roles = known or (self._names(endpoint, "UserList"), self._names(endpoint, "RoleList"))
        role = host_role(self.keys, host)
        changed = self._role(endpoint, role, host_permissions(self.keys, host), roles)
        return self._user(endpoint, host, [role, ROOT_USER] if root else [role], users) or changed

    def enable(self, endpoint: str, self_host: str) -> None:
        """Sets up the users and roles and turns auth on. Idempotent: the
        bootstrapping node and every new leader run it (a TLS cluster made
        before RBAC existed gets it from its next leader)."""
        users, roles = self._names(endpoint, "UserList"), self._names(endpoint, "RoleList")
        self._role(endpoint, join_role(self.keys), join_permissions(self.keys), roles)
        self._user(endpoint, JOIN_USER, [join_role(self.keys)], users, join_password(self.ca_file))
        self._user(endpoint, ROOT_USER, [ROOT_USER], users)
        self.provision(endpoint, self_host, root=True, known=(users, roles))
        # a role made by an older mgmtd lacks the keys added since (e.g. {ns}/graph/HOST)
        for user in sorted(users - {self_host, ROOT_USER, JOIN_USER}):
            if host_role(self.keys, user) in roles:
                self._role(endpoint, host_role(self.keys, user), host_permissions(self.keys, user), roles)
        self.api.call(endpoint, "AuthEnable", timeout=5.0)

    def root_holders(self, endpoint: str) -> set[str]:
        users = self.api.call(endpoint, "UserList").users
        return {u for u in users
                if ROOT_USER in self.api.call(endpoint, "UserGet", etcdapi.M["NameRequest"](name=u)).roles}

    # --- a node without a user --------------------------------------------------------
    def request_join(self, endpoints: Sequence[str], host: str) -> None:
        """Asks the cluster for this node's user, as the join user."""
        password = join_password(self.ca_file)
        errors = []
        for endpoint in endpoints:
            try:
                token = self.api.call(endpoint, "Authenticate", etcdapi.M["AuthenticateRequest"](
                    name=JOIN_USER, password=password), timeout=5.0).token
                self.api.call(endpoint, "Put", etcdapi.M["PutRequest"](
                    key=self.keys.join_request(host).encode(), value=str(time.time()).encode()),
                    token=token)
                return
            except EtcdApiError as err:
                errors.append(str(err))
        raise EtcdApiError("cannot ask for an etcd user: " + "; ".join(errors))


class AccessKeeper:
    """The leader's share of RBAC, once per round: auth on (once per term),
    users for the nodes that asked, root for exactly the servers."""

    RECHECK = 60.0   # seconds: root holders are read again at least this often

    def __init__(self, access: Access, self_host: str) -> None:
        self.access = access
        self.self_host = self_host
        self.enabled = False
        self.servers: set[str] | None = None
        self.checked_at = 0.0

    def lost_leadership(self) -> None:
        self.enabled = False
        self.servers = None

    def round(self, client, endpoint: str, servers: set[str], now: float) -> None:
        keys = self.access.keys
        if not self.enabled:
            self.access.enable(endpoint, self.self_host)
            self.enabled = True
        for _, meta in client.get_prefix(keys.join_requests):
            host = meta.key.decode().removeprefix(keys.join_requests)
            try:
                check_host_name(host)
            except ValueError as err:
                LOG.warning("ignored a request for an etcd user: %s", err)
            else:
                if self.access.provision(endpoint, host):
                    LOG.info("created the etcd user of %s (it may write only its own keys)", host)
            client.delete(meta.key)
        if servers == self.servers and now - self.checked_at < self.RECHECK:
            return
        grant, revoke = root_changes(self.access.root_holders(endpoint), servers)
        for host in sorted(grant):
            self.access.set_root(endpoint, host, True)
            LOG.info("granted %s the root role (it serves etcd)", host)
        for host in sorted(revoke):
            self.access.set_root(endpoint, host, False)
            LOG.info("revoked the root role of %s (it no longer serves etcd)", host)
        self.servers, self.checked_at = set(servers), now
