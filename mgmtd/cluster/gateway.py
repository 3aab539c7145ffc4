"""etcd's JSON gateway (``/v3/...`` over HTTP) for what python3-etcd3's stubs
lack: learners (add as learner, promote, list with the learner flag) and a
per-endpoint status probe. Standard library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from mgmtd import tls


class GatewayError(Exception):
    """An endpoint could not be reached or refused the request."""


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


def _post(endpoint: str, path: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(
        endpoint.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls.ssl_context()) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            detail = json.loads(err.read()).get("error") or err.reason
        except ValueError:
            detail = err.reason
        raise GatewayError(f"{endpoint}{path}: {detail}") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise GatewayError(f"{endpoint}: {reason}") from err


def _member(raw: dict) -> MemberInfo:
    return MemberInfo(
        id=int(raw.get("ID", 0)),
        name=raw.get("name", ""),
        peer_urls=tuple(raw.get("peerURLs", ())),
        client_urls=tuple(raw.get("clientURLs", ())),
        is_learner=bool(raw.get("isLearner", False)),
    )


def member_list(endpoint: str, timeout: float = 2.0) -> tuple[int, list[MemberInfo]]:
    """Returns the cluster id and its members (learners flagged)."""
    reply = _post(endpoint, "/v3/cluster/member/list", {}, timeout)
    cluster_id = int(reply.get("header", {}).get("cluster_id", 0))
    return cluster_id, [_member(m) for m in reply.get("members", ())]


def member_add(endpoint: str, peer_urls: list[str], learner: bool, timeout: float = 5.0) -> MemberInfo:
    reply = _post(
        endpoint, "/v3/cluster/member/add", {"peerURLs": peer_urls, "isLearner": learner}, timeout
    )
    return _member(reply["member"])


def member_promote(endpoint: str, member_id: int, timeout: float = 5.0) -> None:
    _post(endpoint, "/v3/cluster/member/promote", {"ID": str(member_id)}, timeout)


def member_remove(endpoint: str, member_id: int, timeout: float = 5.0) -> None:
    _post(endpoint, "/v3/cluster/member/remove", {"ID": str(member_id)}, timeout)


def status(endpoint: str, timeout: float = 1.0) -> EndpointStatus:
    reply = _post(endpoint, "/v3/maintenance/status", {}, timeout)
    header = reply.get("header", {})
    return EndpointStatus(
        endpoint=endpoint,
        member_id=int(header.get("member_id", 0)),
        leader_id=int(reply.get("leader", 0)),
        raft_index=int(reply.get("raftIndex", 0)),
        raft_term=int(reply.get("raftTerm", 0)),
        version=reply.get("version", ""),
        errors=tuple(reply.get("errors", ())),
    )


def healthy(endpoint: str, timeout: float = 1.0) -> bool:
    """True when the endpoint answers /health with health=true (it has a leader
    and can serve)."""
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + "/health", timeout=timeout,
                                    context=tls.ssl_context()) as response:
            return json.loads(response.read()).get("health") in (True, "true")
    except (urllib.error.URLError, OSError, ValueError):
        return False

