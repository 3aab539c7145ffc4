"""etcd 3.4's gRPC API where python3-etcd3's generated code predates it:
learners (add as learner, promote, the learner flag in the member list), the
per-endpoint status, and auth (users, roles, permissions, password-less users).

The messages are declared here, field numbers as in etcd's rpc.proto and
auth.proto, in a private descriptor pool so they never clash with
python3-etcd3's. This replaced etcd's JSON gateway: with client-certificate
auth on, the gateway refuses every request ("CommonName of client sending a
request against gateway will be ignored"), so RBAC needs gRPC."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import BinaryIO

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from mgmtd.cluster.client import parse_endpoint
from mgmtd.tls import TLSFiles, grpc_credentials, ssl_context


class EtcdApiError(Exception):
    """An endpoint could not be reached or refused the request."""

    def __init__(self, text: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(text)
        self.code = code

    @property
    def permission_denied(self) -> bool:
        return self.code == grpc.StatusCode.PERMISSION_DENIED


@dataclass(frozen=True)
class MemberInfo:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True)
class EndpointStatus:
    endpoint: str
    member_id: int
    leader_id: int
    raft_index: int
    raft_term: int
    version: str
    errors: tuple[str, ...] = field(default=())
    cluster_id: int = 0
    revision: int = 0            # the member's own applied revision (answered without quorum)


# --- the messages -------------------------------------------------------------------
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"uint64": _F.TYPE_UINT64, "int64": _F.TYPE_INT64, "string": _F.TYPE_STRING,
            "bool": _F.TYPE_BOOL, "bytes": _F.TYPE_BYTES, "enum": _F.TYPE_ENUM}

# name: [(field, number, type, repeated)]; a type starting with "." is a message
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "Empty": [],
    "ResponseHeader": [("cluster_id", 1, "uint64", False), ("member_id", 2, "uint64", False),
                       ("revision", 3, "int64", False), ("raft_term", 4, "uint64", False)],
    "Member": [("ID", 1, "uint64", False), ("name", 2, "string", False),
               ("peerURLs", 3, "string", True), ("clientURLs", 4, "string", True),
               ("isLearner", 5, "bool", False)],
    "MemberAddRequest": [("peerURLs", 1, "string", True), ("isLearner", 2, "bool", False)],
    "MemberAddResponse": [("header", 1, ".ResponseHeader", False), ("member", 2, ".Member", False),
                          ("members", 3, ".Member", True)],
    "MemberIdRequest": [("ID", 1, "uint64", False)],            # remove and promote
    "MembersResponse": [("header", 1, ".ResponseHeader", False), ("members", 2, ".Member", True)],
    "StatusResponse": [("header", 1, ".ResponseHeader", False), ("version", 2, "string", False),
                       ("dbSize", 3, "int64", False), ("leader", 4, "uint64", False),
                       ("raftIndex", 5, "uint64", False), ("raftTerm", 6, "uint64", False),
                       ("raftAppliedIndex", 7, "uint64", False), ("errors", 8, "string", True)],
    "HeaderResponse": [("header", 1, ".ResponseHeader", False)],
    "NameRequest": [("name", 1, "string", False)],              # user get/delete, role add
    "AuthenticateRequest": [("name", 1, "string", False), ("password", 2, "string", False)],
    "AuthenticateResponse": [("header", 1, ".ResponseHeader", False), ("token", 2, "string", False)],
    "UserAddOptions": [("no_password", 1, "bool", False)],
    "UserAddRequest": [("name", 1, "string", False), ("password", 2, "string", False),
                       ("options", 3, ".UserAddOptions", False)],
    "UserGetResponse": [("header", 1, ".ResponseHeader", False), ("roles", 2, "string", True)],
    "UserListResponse": [("header", 1, ".ResponseHeader", False), ("users", 2, "string", True)],
    "RoleListResponse": [("header", 1, ".ResponseHeader", False), ("roles", 2, "string", True)],
    "UserGrantRoleRequest": [("user", 1, "string", False), ("role", 2, "string", False)],
    "UserRevokeRoleRequest": [("name", 1, "string", False), ("role", 2, "string", False)],
    "RoleGetRequest": [("role", 1, "string", False)],
    "Permission": [("permType", 1, "int64", False), ("key", 2, "bytes", False),
                   ("range_end", 3, "bytes", False)],
    "RoleGetResponse": [("header", 1, ".ResponseHeader", False), ("perm", 2, ".Permission", True)],
    "RoleGrantPermissionRequest": [("name", 1, "string", False), ("perm", 2, ".Permission", False)],
    "PutRequest": [("key", 1, "bytes", False), ("value", 2, "bytes", False)],
    # backups (Maintenance/Snapshot, a server stream) and reads that need no quorum
    # (a serializable Range is answered by the member itself)
    "SnapshotResponse": [("header", 1, ".ResponseHeader", False), ("remaining_bytes", 2, "uint64", False),
                         ("blob", 3, "bytes", False)],
    "RangeRequest": [("key", 1, "bytes", False), ("range_end", 2, "bytes", False),
                     ("serializable", 7, "bool", False)],
    "KeyValue": [("key", 1, "bytes", False), ("create_revision", 2, "int64", False),
                 ("mod_revision", 3, "int64", False), ("version", 4, "int64", False),
                 ("value", 5, "bytes", False), ("lease", 6, "int64", False)],
    "RangeResponse": [("header", 1, ".ResponseHeader", False), ("kvs", 2, ".KeyValue", True),
                      ("more", 3, "bool", False), ("count", 4, "int64", False)],
}
# etcd's Permission.Type is an enum; on the wire an enum is a varint like int64
READ, WRITE, READWRITE = 0, 1, 2


def _build() -> dict[str, type]:
    package = "mgmtd.etcdapi"
    proto = descriptor_pb2.FileDescriptorProto(name="mgmtd_etcdapi.proto", package=package,
                                               syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, repeated in fields:
            spec = message.field.add(name=field_name, number=number,
                                     label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if kind.startswith("."):
                spec.type, spec.type_name = _F.TYPE_MESSAGE, f".{package}{kind}"
            else:
                spec.type = _SCALARS[kind]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
            for name in _MESSAGES}


M = _build()

# method: (service, request, response)
_METHODS = {
    "MemberAdd": ("Cluster", "MemberAddRequest", "MemberAddResponse"),
    "MemberRemove": ("Cluster", "MemberIdRequest", "MembersResponse"),
    "MemberList": ("Cluster", "Empty", "MembersResponse"),
    "MemberPromote": ("Cluster", "MemberIdRequest", "MembersResponse"),
    "Status": ("Maintenance", "Empty", "StatusResponse"),
    "AuthEnable": ("Auth", "Empty", "HeaderResponse"),
    "Authenticate": ("Auth", "AuthenticateRequest", "AuthenticateResponse"),
    "UserAdd": ("Auth", "UserAddRequest", "HeaderResponse"),
    "UserGet": ("Auth", "NameRequest", "UserGetResponse"),
    "UserList": ("Auth", "Empty", "UserListResponse"),
    "UserGrantRole": ("Auth", "UserGrantRoleRequest", "HeaderResponse"),
    "UserRevokeRole": ("Auth", "UserRevokeRoleRequest", "HeaderResponse"),
    "RoleList": ("Auth", "Empty", "RoleListResponse"),
    "RoleAdd": ("Auth", "NameRequest", "HeaderResponse"),
    "RoleGet": ("Auth", "RoleGetRequest", "RoleGetResponse"),
    "RoleGrantPermission": ("Auth", "RoleGrantPermissionRequest", "HeaderResponse"),
    "Put": ("KV", "PutRequest", "HeaderResponse"),
    "Range": ("KV", "RangeRequest", "RangeResponse"),
    "Snapshot": ("Maintenance", "Empty", "SnapshotResponse"),   # a server stream: see snapshot()
}


# --- the API -----------------------------------------------------------------------
# grpc's default reconnect back-off grows to two minutes: a member that was down
# that long would look dead for up to two more after it came back
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000)]
_MAX_CHANNELS = 64


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with prefix" (the prefix with
    its last byte below 0xff plus one)."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


def _member(raw) -> MemberInfo:
    return MemberInfo(id=raw.ID, name=raw.name, peer_urls=tuple(raw.peerURLs),
                      client_urls=tuple(raw.clientURLs), is_learner=raw.isLearner)


class EtcdApi:
    """etcd's member, status, health and auth calls, made with one set of TLS
    files (None: plain http). Each process makes one from its flags and hands
    it to whatever talks to etcd. It keeps one gRPC channel per endpoint, made
    with its own files: two EtcdApi with different files never share one."""

    def __init__(self, tls: TLSFiles | None) -> None:
        self.tls = tls
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                if len(self._channels) >= _MAX_CHANNELS:  # members come and go over months
                    self._close_channels()
                host, port = parse_endpoint(endpoint)
                creds = grpc_credentials(self.tls)
                target = f"{host}:{port}"
                channel = (grpc.secure_channel(target, creds, _CHANNEL_OPTIONS) if creds is not None
                           else grpc.insecure_channel(target, _CHANNEL_OPTIONS))
                self._channels[endpoint] = channel
            return channel

    def _close_channels(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def close(self) -> None:
        with self._lock:
            self._close_channels()

    def call(self, endpoint: str, method: str, request=None, timeout: float = 2.0, token: str = ""):
        """One unary call; grpc's errors become EtcdApiError with the etcd message."""
        service, request_type, response_type = _METHODS[method]
        stub = self._channel(endpoint).unary_unary(
            f"/etcdserverpb.{service}/{method}", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=M[response_type].FromString)
        try:
            return stub(request if request is not None else M[request_type](), timeout=timeout,
                        metadata=(("token", token),) if token else None)
        except grpc.RpcError as err:
            detail = err.details() if hasattr(err, "details") else str(err)
            raise EtcdApiError(f"{endpoint}: {detail}", err.code() if hasattr(err, "code") else None) from None

    # --- cluster --------------------------------------------------------------------
    def member_list(self, endpoint: str, timeout: float = 2.0) -> tuple[int, list[MemberInfo]]:
        """Returns the cluster id and its members (learners flagged)."""
        reply = self.call(endpoint, "MemberList", timeout=timeout)
        return reply.header.cluster_id, [_member(m) for m in reply.members]

    def member_add(self, endpoint: str, peer_urls: list[str], learner: bool, timeout: float = 5.0) -> MemberInfo:
        reply = self.call(endpoint, "MemberAdd",
                          M["MemberAddRequest"](peerURLs=peer_urls, isLearner=learner), timeout)
        return _member(reply.member)

    def member_promote(self, endpoint: str, member_id: int, timeout: float = 5.0) -> None:
        self.call(endpoint, "MemberPromote", M["MemberIdRequest"](ID=member_id), timeout)

    def member_remove(self, endpoint: str, member_id: int, timeout: float = 5.0) -> None:
        self.call(endpoint, "MemberRemove", M["MemberIdRequest"](ID=member_id), timeout)

    def status(self, endpoint: str, timeout: float = 1.0) -> EndpointStatus:
        reply = self.call(endpoint, "Status", timeout=timeout)
        return EndpointStatus(endpoint=endpoint, member_id=reply.header.member_id, leader_id=reply.leader,
                              raft_index=reply.raftIndex, raft_term=reply.raftTerm, version=reply.version,
                              errors=tuple(reply.errors), cluster_id=reply.header.cluster_id,
                              revision=reply.header.revision)

    def get_prefix(self, endpoint: str, prefix: str, serializable: bool = True,
                   timeout: float = 2.0) -> list[tuple[str, bytes]]:
        """Keys and values under ``prefix``. Serializable: the member answers from
        its own data, so this works without quorum (what a lost cluster knew)."""
        raw = prefix.encode()
        reply = self.call(endpoint, "Range", M["RangeRequest"](key=raw, range_end=prefix_end(raw),
                                                               serializable=serializable), timeout)
        return [(kv.key.decode(errors="replace"), kv.value) for kv in reply.kvs]

    def get(self, endpoint: str, key: str, serializable: bool = True, timeout: float = 2.0) -> bytes | None:
        reply = self.call(endpoint, "Range", M["RangeRequest"](key=key.encode(), serializable=serializable),
                          timeout)
        return reply.kvs[0].value if reply.kvs else None

    def snapshot(self, endpoint: str, out: BinaryIO, timeout: float = 60.0) -> int:
        """Streams the member's backend (etcd's snapshot, its own hash appended)
        into ``out``; returns the number of bytes. etcd sends the whole database
        from one read transaction: a consistent point in time."""
        stub = self._channel(endpoint).unary_stream(
            "/etcdserverpb.Maintenance/Snapshot", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=M["SnapshotResponse"].FromString)
        size = 0
        try:
            for chunk in stub(M["Empty"](), timeout=timeout):
                out.write(chunk.blob)
                size += len(chunk.blob)
        except grpc.RpcError as err:
            detail = err.details() if hasattr(err, "details") else str(err)
            raise EtcdApiError(f"{endpoint}: {detail}", err.code() if hasattr(err, "code") else None) from None
        return size

    def healthy(self, endpoint: str, timeout: float = 1.0) -> bool:
        """True when the endpoint answers /health with health=true (it has a leader
        and can serve). Plain HTTPS: /health is not part of the etcdapi."""
        try:
            with urllib.request.urlopen(endpoint.rstrip("/") + "/health", timeout=timeout,
                                        context=ssl_context(self.tls)) as response:
                return json.loads(response.read()).get("health") in (True, "true")
        except (urllib.error.URLError, OSError, ValueError):
            return False
