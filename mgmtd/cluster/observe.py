"""``observe(...) -> Snapshot``: the raw facts of one round, gathered from etcd
(the member list, each member's status, probed in parallel) and the store
(leader, this node's nomination, ideal size, volunteers, nominations). I/O
only: what the facts mean is ``assess``'s business. A cluster that cannot be
read is a fact too (``reachable=False``), never an exception."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from mgmtd.backoff import first_line
from mgmtd.cluster import etcdapi
from mgmtd.cluster.access import is_permission_denied
from mgmtd.cluster.etcdapi import EtcdApi
from mgmtd.cluster.model import Snapshot
from mgmtd.cluster.store import Store


def member_list_from(api: EtcdApi, endpoints: Sequence[str],
                     timeout: float = 1.5) -> tuple[str, int, list[etcdapi.MemberInfo]]:
    """The member list from the first endpoint that answers: that endpoint, the
    cluster id and the members."""
    errors = []
    for endpoint in endpoints:
        try:
            cluster_id, members = api.member_list(endpoint, timeout=timeout)
            return endpoint, cluster_id, members
        except etcdapi.EtcdApiError as err:
            errors.append(str(err))
    raise etcdapi.EtcdApiError("no endpoint answered the member list: " + "; ".join(errors))


def probe(api: EtcdApi, member: etcdapi.MemberInfo) -> etcdapi.EndpointStatus | None:
    if not member.name:
        return None
    for url in member.client_urls:
        try:
            return api.status(url, timeout=0.8)
        except etcdapi.EtcdApiError:
            continue
    return None


def probe_all(api: EtcdApi, members: Sequence[etcdapi.MemberInfo]) -> tuple[etcdapi.EndpointStatus | None, ...]:
    if not members:
        return ()
    with ThreadPoolExecutor(max_workers=min(8, len(members))) as pool:
        return tuple(pool.map(lambda member: probe(api, member), members))


def observe(api: EtcdApi, store: Store | None, endpoints: Sequence[str], self_host: str,
            now: float) -> Snapshot:
    """One round's facts. The leader (the holder of the leader key) probes
    every member; so does a node that cannot read the store (is quorum lost?)."""
    try:
        endpoint, _, listed = member_list_from(api, endpoints)
    except etcdapi.EtcdApiError as err:
        return Snapshot(now, self_host, reachable=False, error=first_line(err))
    members = tuple(listed)
    try:
        if store is None:
            raise ConnectionError("no client")
        leader = store.leader()
        nomination = store.nomination(self_host)
        ideal = store.ideal_size()
        leading = leader == self_host
        volunteers = store.volunteers() if leading else ()
        nominations = store.nominations() if leading else ()
    except Exception as err:  # no quorum, no user yet, or moving: say so, with what the probes say
        denied = is_permission_denied(err)
        return Snapshot(now, self_host, reachable=False, error=first_line(err), permission_denied=denied,
                        endpoint=endpoint, members=members,
                        statuses=None if denied else probe_all(api, members))
    return Snapshot(now, self_host, endpoint=endpoint, members=members,
                    statuses=probe_all(api, members) if leading else None, leader=leader,
                    nomination=nomination, ideal=ideal, volunteers=volunteers, nominations=nominations)
